//! `umbra serve` and `umbra server`: logging, signals, and running the daemons.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use umbra_daemon::config::Layered;

/// The WebRTC stack's crates (str0m, its ICE agent `is`, its DTLS
/// `dimpl`, SCTP): they write ICE candidates, that is members' addresses,
/// at debug level.
/// Also kept at warnings: openmls's SQLite storage's migration tool, which
/// says "no migrations to apply" each time a profile is opened, and the
/// PostgreSQL client, which writes every statement's parameters (usernames,
/// mailbox ids, envelopes) at debug level.
const QUIET_TARGETS: [&str; 6] = [
    "str0m",
    "is",
    "dimpl",
    "sctp_proto",
    "refinery_core",
    "tokio_postgres",
];

/// Logs go to stderr; `RUST_LOG` overrides `default`. The WebRTC stack
/// (and openmls's storage migrations) stay at warnings unless `RUST_LOG`
/// names their crate.
pub fn init_logging(default: &str) {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = match EnvFilter::try_new(&spec) {
        Ok(f) if !spec.is_empty() => f,
        _ => EnvFilter::new(default),
    };
    for target in QUIET_TARGETS {
        let named = spec
            .split(',')
            .any(|d| d.split('=').next().is_some_and(|t| t.trim() == target));
        if !named && let Ok(quiet) = format!("{target}=warn").parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// Flags of `umbra serve`: the messaging server's, plus where the relay listens.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    server: umbra_server::ServerArgs,
    /// Where the call relay listens for TURN over UDP and TCP [default: the
    /// server's listen IP, port 3478].
    #[arg(long, env = "UMBRA_SERVE_RELAY_LISTEN", value_name = "ADDR")]
    relay_listen: Option<SocketAddr>,
    /// Where the call relay listens for TURN over TLS [default: the server's
    /// listen IP, port 5349].
    #[arg(long, env = "UMBRA_SERVE_RELAY_TLS_LISTEN", value_name = "ADDR")]
    relay_tls_listen: Option<SocketAddr>,
    /// Prometheus metrics of the relay [default: 127.0.0.1:9701].
    #[arg(long, env = "UMBRA_SERVE_RELAY_METRICS_LISTEN", value_name = "ADDR")]
    relay_metrics_listen: Option<SocketAddr>,
    /// Where the group call forwarding unit listens, UDP and TCP [default:
    /// the server's listen IP, port 3479; a free port when the relay's is 0].
    #[arg(long, env = "UMBRA_SERVE_UNIT_LISTEN", value_name = "ADDR")]
    unit_listen: Option<SocketAddr>,
    /// Run the messaging server without the call relay.
    #[arg(long, env = "UMBRA_SERVE_NO_RELAY")]
    no_relay: bool,
}

/// The secret the messaging server and the relay share, created on first use.
fn relay_secret(data_dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = data_dir.join("relay.secret");
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)?;
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        writeln!(f, "{}", hex::encode(secret))?;
    }
    Ok(path)
}

fn print_invite(role: &str, server: &umbra_server::Server) -> anyhow::Result<()> {
    let invite = server.invite().to_string();
    say!("{role} listening on {}", server.local_addr()?);
    say!("Invite link (share it with your users; it names this server and pins its key):");
    say!("  {invite}");
    say!("Register with: umbra register --invite '{invite}' USERNAME");
    Ok(())
}

/// `umbra server`: the messaging server alone.
pub async fn serve(args: umbra_server::ServerArgs) -> anyhow::Result<()> {
    init_logging("info");
    let config = umbra_server::ServerConfig::load(&args)?;
    let server = umbra_server::Server::bind(config).await?;
    print_invite("Umbra messaging server", &server)?;
    server.run(shutdown_signal()).await
}

/// `umbra serve`: the messaging server and the call relay in one process.
pub async fn serve_all(args: ServeArgs) -> anyhow::Result<()> {
    init_logging("info");
    let mut config = umbra_server::ServerConfig::load(&args.server)?;
    if args.no_relay {
        let server = umbra_server::Server::bind(config).await?;
        print_invite("Umbra node", &server)?;
        return server.run(shutdown_signal()).await;
    }
    let secret = relay_secret(&config.data_dir)?;
    let ip = config.listen.ip();
    let udp = args.relay_listen.unwrap_or(SocketAddr::new(ip, 3478));
    let tls = args.relay_tls_listen.unwrap_or(SocketAddr::new(ip, 5349));
    let unit_port = if udp.port() == 0 { 0 } else { 3479 };
    let unit = args.unit_listen.unwrap_or(SocketAddr::new(ip, unit_port));
    let relay_config = umbra_relay::RelayConfig {
        udp_listen: udp,
        tcp_listen: Some(udp),
        tls_listen: Some(tls),
        auth_secret_file: Some(secret.clone()),
        unit_listen: Some(unit),
        unit_key_file: Some(config.data_dir.join("unit.key")),
        metrics_listen: args
            .relay_metrics_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9701))),
        ..umbra_relay::RelayConfig::default()
    };
    let relay = umbra_relay::Relay::bind(relay_config).await?;
    let host = config.invite_host();
    config.relay_secret_file = Some(secret);
    if config.unit.is_none() {
        config.unit = relay.unit_link(&host).map(|l| l.to_string());
    }
    if config.relay_urls.is_empty() {
        config.relay_urls = vec![
            format!("turn:{host}:{}?transport=udp", relay.udp_addr().port()),
            format!("turn:{host}:{}?transport=tcp", relay.tcp_addr().port()),
            format!("turns:{host}:{}?transport=tcp", relay.tls_addr().port()),
        ];
    }
    let server = umbra_server::Server::bind(config).await?;
    print_invite("Umbra node", &server)?;
    say!(
        "Call relay (TURN) on udp/tcp {} and tls {}",
        relay.udp_addr(),
        relay.tls_addr()
    );
    if let Some(addr) = relay.unit_addr() {
        say!("Group call forwarding unit on udp/tcp {addr}");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server_task = tokio::spawn(server.run(wait(stopped.clone())));
    let relay_task = tokio::spawn(relay.run(wait(stopped)));
    shutdown_signal().await;
    let _ = stop.send(true);
    server_task.await??;
    relay_task.await??;
    Ok(())
}

/// `umbra relay`: the call relay alone.
pub async fn relay(args: umbra_relay::RelayArgs) -> anyhow::Result<()> {
    init_logging("info");
    let config = umbra_relay::RelayConfig::load(&args)?;
    let relay = umbra_relay::Relay::bind(config).await?;
    say!("Umbra call relay (TURN) listening:");
    say!("  udp {}", relay.udp_addr());
    say!("  tcp {}", relay.tcp_addr());
    say!("  tls {}", relay.tls_addr());
    if let (Some(addr), Some(public)) = (relay.unit_addr(), relay.unit_public()) {
        let host = match public.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        say!("Group call forwarding unit listening on udp/tcp {addr}");
        if let Some(link) = relay.unit_link(&host) {
            say!("Give the messaging server: --unit '{link}'");
        }
    }
    say!("Metrics on http://{}/metrics", relay.metrics_addr());
    relay.run(shutdown_signal()).await
}

/// `umbra proxy` and `umbra proxy doctor`.
pub async fn proxy(cmd: crate::commands::ProxyCommand) -> anyhow::Result<()> {
    use crate::commands::ProxyCheck;
    if let Some(ProxyCheck::Doctor(args)) = cmd.check {
        init_logging("warn");
        // Not validated: the doctor runs its checks and reports, whatever is set.
        let config = umbra_proxy::ProxyConfig::merge(&args)?;
        let ok = umbra_proxy::doctor::run(&config).await?;
        if !ok {
            anyhow::bail!("some checks failed (see above)");
        }
        return Ok(());
    }
    init_logging("info");
    // An idle connection is a few small structures. With transparent huge
    // pages, the allocator's arena would be backed 2 MiB at a time, and a
    // few bytes touched in fresh heap would cost all of it.
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "transparent huge pages stay on");
    }
    let config = umbra_proxy::ProxyConfig::load(&cmd.args)?;
    let proxy = umbra_proxy::Proxy::bind(config).await?;
    for a in proxy.tls_addrs() {
        say!("Umbra proxy listening on {a} (TLS)");
    }
    for a in proxy.plain_addrs() {
        say!("Umbra proxy listening on {a} (plain)");
    }
    if let Some(fp) = proxy.certificate_fingerprint() {
        say!("TLS certificate SHA-256: {fp}");
    }
    say!("Proxy link (share it with the people you want to help):");
    say!("{}", umbra_proxy::link::show(proxy.link()));
    say!("Users run: umbra network proxy '{}'", proxy.link());
    proxy.run(shutdown_signal()).await
}

//! `umbra serve` and `umbra server`: logging, signals, and running the daemons.

use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Logs go to stderr; `RUST_LOG` overrides `default`.
pub fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
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

/// Runs the node: the messaging server (and, with `all_in_one`, whatever
/// else the node hosts).
pub async fn serve(args: umbra_server::ServerArgs, all_in_one: bool) -> anyhow::Result<()> {
    init_logging("info");
    let config = umbra_server::ServerConfig::load(&args)?;
    let server = umbra_server::Server::bind(config).await?;
    let invite = server.invite().to_string();
    let role = if all_in_one {
        "Umbra node"
    } else {
        "Umbra messaging server"
    };
    println!("{role} listening on {}", server.local_addr()?);
    println!("Invite link (share it with your users; it names this server and pins its key):");
    println!("  {invite}");
    println!("Register with: umbra register --invite '{invite}' USERNAME");
    server.run(shutdown_signal()).await
}

/// `umbra proxy` and `umbra proxy doctor`.
pub async fn proxy(cmd: crate::commands::ProxyCommand) -> anyhow::Result<()> {
    use crate::commands::ProxyCheck;
    if let Some(ProxyCheck::Doctor(args)) = cmd.check {
        init_logging("warn");
        let mut config = umbra_proxy::ProxyConfig::default().overlay(&args);
        if let Some(path) = &args.config {
            config = umbra_proxy::ProxyConfig::from_file(path)?.overlay(&args);
        }
        let ok = umbra_proxy::doctor::run(&config).await?;
        if !ok {
            anyhow::bail!("some checks failed (see above)");
        }
        return Ok(());
    }
    init_logging("info");
    let config = umbra_proxy::ProxyConfig::load(&cmd.args)?;
    let proxy = umbra_proxy::Proxy::bind(config).await?;
    for a in proxy.tls_addrs() {
        println!("Umbra proxy listening on {a} (TLS)");
    }
    for a in proxy.plain_addrs() {
        println!("Umbra proxy listening on {a} (plain)");
    }
    if let Some(fp) = proxy.certificate_fingerprint() {
        println!("TLS certificate SHA-256: {fp}");
    }
    println!("Proxy link (share it with the people you want to help):");
    println!("{}", umbra_proxy::link::show(proxy.link()));
    println!("Users run: umbra network proxy '{}'", proxy.link());
    proxy.run(shutdown_signal()).await
}

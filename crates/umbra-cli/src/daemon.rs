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

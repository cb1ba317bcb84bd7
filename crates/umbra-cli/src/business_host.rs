//! `umbra business serve` and `umbra business token ...`: the business
//! host's daemon and its API tokens; `umbra business receive-webhooks`: a
//! receiver as a business's system runs one. None takes the client flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use umbra_business::tokens::Tokens;

/// `umbra business token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an API token for a business this host runs; it is shown once
    /// (the host keeps only its hash).
    Create {
        /// The business's profile directory (as given to `serve`).
        #[arg(long, value_name = "DIR")]
        business: PathBuf,
        /// What the token is for, to tell it apart when listing.
        #[arg(long, default_value = "api")]
        label: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List the API tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke a token by the id `list` shows; it stops working at once.
    Revoke {
        /// The token's id, as listed.
        id: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// The host's data directory.
#[derive(Debug, clap::Args)]
pub struct DataDir {
    /// The host's data directory (as given to `serve`) [default: ./umbra-business].
    #[arg(long, env = "UMBRA_BUSINESS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    fn open(&self) -> anyhow::Result<Tokens> {
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./umbra-business"));
        Ok(Tokens::open(&dir)?)
    }
}

/// Runs a token command.
pub fn token(cmd: TokenCommand, out: crate::output::Output) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            business,
            label,
            dir,
        } => {
            let passphrase = crate::unlock::current(&business, None)?;
            let passphrase = passphrase.as_deref().map(|p| p.as_str());
            let client = umbra_client::Client::open(&business, passphrase).with_context(|| {
                format!("cannot open the business profile {}", business.display())
            })?;
            let username = client.username().to_string();
            let now = umbra_client::now_ms() / 1000;
            let token = dir.open()?.create(&username, &label, now)?;
            out.value(
                &serde_json::json!({ "business": username, "label": label, "token": token }),
                &format!(
                    "API token for `{username}` ({label}), shown this once:\n  {token}\n\
                     Send it as `Authorization: Bearer {token}`."
                ),
            );
        }
        TokenCommand::List { dir } => {
            let all = dir.open()?.list()?;
            let mut text = String::new();
            for t in &all {
                text.push_str(&format!("{}  {:<24} {}\n", t.id, t.business, t.label));
            }
            if all.is_empty() {
                text.push_str("no API tokens\n");
            }
            out.value(&all, text.trim_end());
        }
        TokenCommand::Revoke { id, dir } => {
            let n = dir.open()?.revoke(&id)?;
            if n == 0 {
                anyhow::bail!("no token has the id `{id}`: `umbra business token list` shows them");
            }
            out.value(
                &serde_json::json!({ "revoked": n }),
                &format!("revoked the token `{id}`"),
            );
        }
    }
    Ok(())
}

/// Runs the host until Ctrl-C or SIGTERM.
pub async fn serve(args: umbra_business::config::ServeArgs) -> anyhow::Result<()> {
    let config = umbra_business::config::HostConfig::load(&args)?;
    let host = umbra_business::serve::Host::bind(config).await?;
    say!(
        "Umbra business host: API on http://{} (OpenAPI document at /openapi.json), metrics on {}",
        host.api_addr()?,
        host.metrics_addr()?
    );
    for line in &host.summary {
        say!("{line}");
    }
    host.run(crate::daemon::shutdown_signal()).await
}

/// Flags of `umbra business receive-webhooks`.
#[derive(Debug, clap::Args)]
pub struct ReceiveArgs {
    /// Where to listen for the host's webhooks.
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// The webhook secret (the file the host named when it started).
    #[arg(long, value_name = "FILE")]
    secret_file: PathBuf,
}

/// Receives webhooks until Ctrl-C or SIGTERM, printing each event once.
pub async fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let secret = umbra_daemon::config::read_secret(&args.secret_file)
        .with_context(|| format!("cannot read the secret {}", args.secret_file.display()))?;
    let receiver = std::sync::Arc::new(umbra_business::receiver::Receiver::new(secret));
    let print: umbra_business::receiver::Out = std::sync::Arc::new(|event: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{event}");
        let _ = out.flush();
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tell!(
        "receiving webhooks on http://{} (each checked with the secret; Ctrl-C stops)",
        listener.local_addr()?
    );
    umbra_business::receiver::run(listener, receiver, print, crate::daemon::shutdown_signal())
        .await?;
    Ok(())
}

//! The operator's commands beside a server: `umbra server business ...`
//! (the verification of business accounts, on the server's own database and
//! signing key; run beside the running server, both backends let both
//! write), `umbra server doctor` (checks a node's settings) and `umbra
//! server backup` (a consistent copy of the embedded database while the
//! server runs).

use clap::Subcommand;
use umbra_server::business;

/// `umbra server`: run the messaging server, or one of its operator
/// commands.
#[derive(Debug, clap::Args)]
pub struct ServerCommand {
    /// Operator commands instead of running.
    #[command(subcommand)]
    pub admin: Option<ServerAdmin>,
    /// Settings of the server.
    #[command(flatten)]
    pub args: umbra_server::ServerArgs,
}

/// The server's operator commands.
#[derive(Debug, Subcommand)]
pub enum ServerAdmin {
    /// Business accounts: list them, verify one (a badge its customers'
    /// apps check against this server's signing key), or take a
    /// verification back.
    #[command(subcommand)]
    Business(BusinessAdmin),
    /// Check this node's settings: its keys, its database (reachable, its
    /// schema version), NATS and the cluster key, its clock against the
    /// database's. Exits 1 if anything is wrong; changes nothing.
    Doctor(umbra_server::ServerArgs),
    /// Copy the embedded SQLite database, consistently, while the server
    /// runs (one read transaction: the copy is the database at one moment).
    /// For PostgreSQL, use pg_dump.
    Backup {
        /// The new file to write.
        #[arg(long, value_name = "FILE")]
        to: std::path::PathBuf,
        #[command(flatten)]
        args: umbra_server::ServerArgs,
    },
}

/// Runs `umbra server doctor`; fails if anything is wrong.
pub async fn doctor(
    args: umbra_server::ServerArgs,
    out: crate::output::Output,
) -> anyhow::Result<()> {
    use umbra_daemon::config::Layered as _;
    // Checked as it stands, so that a setting out of range is a finding and
    // not the end of the check.
    let config = umbra_server::ServerConfig::merge(&args)?;
    let findings = umbra_server::doctor::check(&config).await;
    let bad = findings.iter().filter(|f| !f.ok).count();
    let text: String = findings
        .iter()
        .map(|f| format!("{} {}\n", if f.ok { "ok     " } else { "PROBLEM" }, f.what))
        .collect();
    out.value(&findings, text.trim_end());
    if bad > 0 {
        anyhow::bail!("{bad} problem(s) found");
    }
    Ok(())
}

/// Runs `umbra server backup`.
pub fn backup(to: &std::path::Path, args: &umbra_server::ServerArgs) -> anyhow::Result<()> {
    let config = umbra_server::ServerConfig::load(args)?;
    if config.database.is_some() {
        anyhow::bail!(
            "this server keeps its state in PostgreSQL: back it up with pg_dump (or the database's own tools)"
        );
    }
    let from = config.data_dir.join(umbra_server::database::DB_FILE);
    if !from.exists() {
        anyhow::bail!(
            "no server database at {}: point --data-dir at the server's data directory",
            from.display()
        );
    }
    umbra_server::database::backup(&from, to)?;
    say!(
        "copied {} to {} (the database as it was at one moment; the server's keys are beside it in {})",
        from.display(),
        to.display(),
        config.data_dir.display()
    );
    Ok(())
}

/// `umbra server business ...`
#[derive(Debug, Subcommand)]
pub enum BusinessAdmin {
    /// List the business accounts, their names and whether they are verified.
    List(umbra_server::ServerArgs),
    /// Verify USER as it presents itself now (its display name and key): a
    /// statement signed with this server's key. If it changes its name or
    /// key, the badge goes until it is verified again.
    Verify {
        /// The business account.
        user: String,
        #[command(flatten)]
        args: umbra_server::ServerArgs,
    },
    /// Take back the verification of USER. The server stops handing it out
    /// at once; a badge customers already hold runs out within a week (the
    /// server signs it afresh, for a week, at each listing).
    Unverify {
        /// The business account.
        user: String,
        #[command(flatten)]
        args: umbra_server::ServerArgs,
    },
}

fn open(
    args: &umbra_server::ServerArgs,
) -> anyhow::Result<(business::Database, std::path::PathBuf)> {
    let config = umbra_server::ServerConfig::load(args)?;
    Ok((
        business::open_store(&config.data_dir, config.database.as_ref())?,
        config.data_dir,
    ))
}

/// Runs one operator command.
pub fn run(cmd: BusinessAdmin) -> anyhow::Result<()> {
    match cmd {
        BusinessAdmin::List(args) => {
            let (mut store, _) = open(&args)?;
            let all = business::list(&mut *store)?;
            if all.is_empty() {
                say!("no business accounts");
            }
            for b in all {
                say!(
                    "{:<24} {:<32} {}",
                    b.username,
                    b.display_name,
                    if b.verified {
                        "verified"
                    } else {
                        "not verified"
                    }
                );
            }
        }
        BusinessAdmin::Verify { user, args } => {
            let (mut store, dir) = open(&args)?;
            let key = business::signing_key(&dir)?;
            let now = umbra_client::now_ms() / 1000;
            let name = business::verify_account(&mut *store, &key, &user, now)?;
            say!("verified `{user}` as \"{name}\"");
        }
        BusinessAdmin::Unverify { user, args } => {
            let (mut store, _) = open(&args)?;
            if business::unverify_account(&mut *store, &user)? {
                say!(
                    "`{user}` is no longer verified (a badge its customers already hold runs out within a week)"
                );
            } else {
                say!("`{user}` was not verified");
            }
        }
    }
    Ok(())
}

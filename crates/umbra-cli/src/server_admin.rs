//! `umbra server business ...`: the operator's verification of business
//! accounts, on the server's own database and signing key (run beside the
//! running server; SQLite lets both write).

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
                println!("no business accounts");
            }
            for b in all {
                println!(
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
            println!("verified `{user}` as \"{name}\"");
        }
        BusinessAdmin::Unverify { user, args } => {
            let (mut store, _) = open(&args)?;
            if business::unverify_account(&mut *store, &user)? {
                println!(
                    "`{user}` is no longer verified (a badge its customers already hold runs out within a week)"
                );
            } else {
                println!("`{user}` was not verified");
            }
        }
    }
    Ok(())
}

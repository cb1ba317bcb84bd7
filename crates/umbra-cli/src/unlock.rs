//! A profile's passphrase: where a command gets it, and `umbra passphrase`.
//!
//! The passphrase comes from `UMBRA_PASSPHRASE`, else from the file
//! descriptor `--passphrase-fd N` names (its first line), else it is asked on
//! the terminal without echo. A command asks only when the profile has one.
//! A new passphrase (`register`, `passphrase set`) comes from the same places
//! (`UMBRA_NEW_PASSPHRASE` and `--new-passphrase-fd` when changing one), and
//! on a terminal is asked twice.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use umbra_client::ClientError;
use umbra_client::profile_key::{self, Protection};
use zeroize::Zeroizing;

use crate::output::Output;

/// A new profile needs a passphrase and nothing gave one (a usage error).
#[derive(Debug, thiserror::Error)]
#[error(
    "a passphrase is needed to lock the profile: give it in {0} or on a file descriptor \
     (--passphrase-fd N), or run this on a terminal to be asked; `umbra register \
     --no-passphrase` keeps a profile without one"
)]
pub struct NoPassphraseGiven(String);

/// A passphrase, wiped when dropped.
pub type Secret = Zeroizing<String>;

/// `umbra passphrase ...`
#[derive(Debug, Subcommand)]
pub enum PassphraseCommand {
    /// Say how this profile is protected.
    Status,
    /// Lock the profile with a passphrase, or change it: asks for the
    /// current one (if any), then the new one twice. Other umbra commands
    /// running on the profile are not disturbed.
    Set {
        /// Read the new passphrase from this file descriptor's first line
        /// (scripts) [default: UMBRA_NEW_PASSPHRASE, else asked].
        #[arg(long, value_name = "N")]
        new_passphrase_fd: Option<i32>,
    },
    /// Keep the profile's key without a passphrase: anyone who copies the
    /// profile directory can then read it.
    Remove,
}

/// The passphrase the profile in `dir` is locked with, when it has one.
pub fn current(dir: &Path, fd: Option<i32>) -> anyhow::Result<Option<Secret>> {
    if profile_key::protection(dir)? != Some(Protection::Passphrase) {
        return Ok(None);
    }
    if let Some(p) = from_env("UMBRA_PASSPHRASE") {
        return Ok(Some(p));
    }
    if let Some(fd) = fd {
        return Ok(Some(read_fd(fd)?));
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(format!("passphrase for {}: ", dir.display()))
            .context("cannot read the passphrase from the terminal")?;
        return Ok(Some(Zeroizing::new(p)));
    }
    Err(ClientError::PassphraseNeeded(dir.to_path_buf()).into())
}

/// The passphrase for a new profile: `None` when `none` (`--no-passphrase`).
pub fn for_new_profile(dir: &Path, fd: Option<i32>, none: bool) -> anyhow::Result<Option<Secret>> {
    if none {
        return Ok(None);
    }
    if profile_key::protection(dir)?.is_some() {
        // Registering again on a profile begun before: its own passphrase.
        return current(dir, fd);
    }
    new_one("UMBRA_PASSPHRASE", fd).map(Some)
}

/// Runs `umbra passphrase ...`.
pub fn run(cmd: PassphraseCommand, dir: &Path, fd: Option<i32>, out: Output) -> anyhow::Result<()> {
    let protection = profile_key::protection(dir)?
        .ok_or_else(|| ClientError::NotRegistered(dir.to_path_buf()))?;
    if let PassphraseCommand::Status = cmd {
        let (word, text) = match protection {
            Protection::Passphrase => (
                "passphrase",
                "encrypted, locked with a passphrase: a copy of the directory is unreadable without it",
            ),
            Protection::NoPassphrase => (
                "no-passphrase",
                "encrypted, but the key is kept beside the data: anyone who copies the directory \
                 can read it (`umbra passphrase set` locks it)",
            ),
            Protection::Unencrypted => (
                "unencrypted",
                "not encrypted (made before profiles were): register a new profile to have one",
            ),
        };
        out.value(&serde_json::json!({ "protection": word }), text);
        return Ok(());
    }
    if protection == Protection::Unencrypted {
        bail!(
            "profile {} was made before profiles were encrypted, so it has no key to lock: \
             register a new profile to have one",
            dir.display()
        );
    }
    let old = current(dir, fd)?;
    let key = profile_key::unlock(dir, old.as_deref().map(|s| s.as_str()))?
        .ok_or_else(|| ClientError::NotRegistered(dir.to_path_buf()))?;
    let (new, text) = match cmd {
        PassphraseCommand::Set { new_passphrase_fd } => (
            Some(new_one("UMBRA_NEW_PASSPHRASE", new_passphrase_fd)?),
            "the profile is locked with the new passphrase",
        ),
        _ => (
            None,
            "the profile has no passphrase now: anyone who copies the directory can read it",
        ),
    };
    profile_key::keep(dir, &key, new.as_deref().map(|s| s.as_str()))?;
    out.value(&serde_json::json!({ "changed": true }), text);
    Ok(())
}

/// A new passphrase from `var`, else `fd`, else asked twice on a terminal.
fn new_one(var: &str, fd: Option<i32>) -> anyhow::Result<Secret> {
    let p = if let Some(p) = from_env(var) {
        p
    } else if let Some(fd) = fd {
        read_fd(fd)?
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password("choose a passphrase for this profile: ")
                .context("cannot read the passphrase from the terminal")?,
        );
        let again = Zeroizing::new(
            rpassword::prompt_password("the same again: ")
                .context("cannot read the passphrase from the terminal")?,
        );
        if first != again {
            bail!("the two passphrases differ: nothing was changed; try again");
        }
        first
    } else {
        return Err(NoPassphraseGiven(var.to_string()).into());
    };
    if p.is_empty() {
        bail!("an empty passphrase locks nothing: choose one, or use --no-passphrase");
    }
    Ok(p)
}

fn from_env(var: &str) -> Option<Secret> {
    std::env::var(var).ok().map(Zeroizing::new)
}

/// The first line read from file descriptor `fd` (without its newline).
fn read_fd(fd: i32) -> anyhow::Result<Secret> {
    if fd < 0 {
        bail!("--passphrase-fd {fd} is not a file descriptor");
    }
    // The descriptor is opened again by its name, which reads the same pipe
    // or file (and needs no unsafe code to adopt a raw descriptor).
    let file = std::fs::File::open(format!("/dev/fd/{fd}"))
        .with_context(|| format!("cannot read the passphrase from file descriptor {fd}"))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Zeroizing::new(String::new());
    reader
        .read_line(&mut line)
        .with_context(|| format!("cannot read the passphrase from file descriptor {fd}"))?;
    let trimmed = line.trim_end_matches(['\r', '\n']);
    Ok(Zeroizing::new(trimmed.to_string()))
}

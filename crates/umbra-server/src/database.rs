//! Which database the server keeps its state in: the embedded SQLite file
//! in its data directory (the default), or a PostgreSQL database several
//! nodes share (`database = "postgres://..."`).

use std::path::Path;

use anyhow::Context;
use umbra_store::{Limits, PgStore, SqliteStore, Store};

/// The file of the embedded database, in the data directory.
pub const DB_FILE: &str = "umbra.db";

/// A PostgreSQL URL, never shown whole (it may hold a password).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.shown())
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let u = Self(s.to_string());
        u.check()?;
        Ok(u)
    }
}

impl DatabaseUrl {
    /// Whether it names a PostgreSQL database.
    pub fn check(&self) -> Result<(), String> {
        if self.0.starts_with("postgres://") || self.0.starts_with("postgresql://") {
            Ok(())
        } else {
            Err("database is a postgres://user@host[:port]/dbname URL".into())
        }
    }

    /// The URL without its password, for logs and errors.
    pub fn shown(&self) -> String {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &self.0[scheme + 3..at];
                let user = creds.split(':').next().unwrap_or_default();
                format!("{}{user}{}", &self.0[..scheme + 3], &self.0[at..])
            }
            _ => self.0.clone(),
        }
    }
}

/// Writes a consistent copy of the SQLite database `from` to the new file
/// `to`, while the server may be writing it.
pub fn backup(from: &Path, to: &Path) -> anyhow::Result<()> {
    SqliteStore::backup(from, to).with_context(|| format!("backing up {}", from.display()))
}

/// Opens the server's database: PostgreSQL at `url` if given, else the
/// SQLite file in `data_dir` (made if `create`). Blocking.
pub fn open(
    data_dir: &Path,
    url: Option<&DatabaseUrl>,
    limits: Limits,
    create: bool,
) -> anyhow::Result<Box<dyn Store>> {
    match url {
        Some(u) => Ok(Box::new(PgStore::connect(&u.0, limits).with_context(
            || format!("opening the PostgreSQL database {}", u.shown()),
        )?)),
        None => {
            let path = data_dir.join(DB_FILE);
            if !create && !path.exists() {
                anyhow::bail!(
                    "no server database at {}: point --data-dir at the server's data directory",
                    path.display()
                );
            }
            Ok(Box::new(SqliteStore::open(&path, limits).with_context(
                || format!("opening database {}", path.display()),
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        let u: DatabaseUrl = "postgres://umbra:s3cret@db.example:5432/umbra"
            .parse()
            .expect("url");
        assert_eq!(u.shown(), "postgres://umbra@db.example:5432/umbra");
        assert!(!format!("{u:?}").contains("s3cret"));
        assert!("mysql://x".parse::<DatabaseUrl>().is_err());
    }
}

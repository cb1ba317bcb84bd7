//! Configuration files and flag overlays.
//!
//! Precedence in every daemon: defaults < TOML file < environment < flags.
//! clap merges environment and flags; [`read_toml`] supplies the file, and
//! [`set`] / [`set_opt`] lay what the flags carry over it. [`Layered`] is
//! that order, once, for every daemon's configuration.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

/// The configuration file could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FileError {
    /// It could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not valid TOML for this configuration (the message names the key).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: toml::de::Error,
    },
}

/// Reads a TOML configuration file.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| FileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// A daemon's configuration, built as defaults < file < environment < flags.
pub trait Layered: Default + DeserializeOwned {
    /// The flags (clap has merged the environment into them).
    type Args;

    /// The configuration file the flags name, if any.
    fn file(args: &Self::Args) -> Option<&Path>;

    /// Replaces every value that `args` carries.
    fn overlay(self, args: &Self::Args) -> Self;

    /// Defaults, then the file (unknown keys are refused), then the flags;
    /// not validated yet.
    fn merge(args: &Self::Args) -> Result<Self, FileError> {
        let base = match Self::file(args) {
            Some(path) => read_toml(path)?,
            None => Self::default(),
        };
        Ok(base.overlay(args))
    }
}

/// Reads a shared-secret file: its bytes without trailing whitespace; an
/// empty file is refused.
pub fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    let text = std::fs::read(path)?;
    let end = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the secret file is empty",
        ));
    }
    Ok(text[..end].to_vec())
}

/// Replaces `slot` with the flag's value, if the flag was given.
pub fn set<T: Clone>(slot: &mut T, flag: &Option<T>) {
    if let Some(v) = flag {
        *slot = v.clone();
    }
}

/// Replaces an optional setting with the flag's value, if the flag was given.
pub fn set_opt<T: Clone>(slot: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        *slot = flag.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Example {
        port: u16,
    }

    #[test]
    fn reads_and_names_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "port = 7\n").expect("write");
        assert_eq!(
            read_toml::<Example>(&path).expect("valid"),
            Example { port: 7 }
        );
        std::fs::write(&path, "port = 7\nextra = 1\n").expect("write");
        let err = read_toml::<Example>(&path).expect_err("unknown key");
        assert!(err.to_string().contains("extra"), "{err}");
        assert!(matches!(
            read_toml::<Example>(&dir.path().join("none")),
            Err(FileError::Read { .. })
        ));
        let mut slot = 1;
        set(&mut slot, &Some(2));
        set(&mut slot, &None);
        assert_eq!(slot, 2);
    }
}

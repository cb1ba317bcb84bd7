//! Small pieces every bench shares: the wall clock in seconds, random
//! tokens for credentials, and a scratch directory removed when dropped.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 16 random hex digits.
pub(crate) fn random_token() -> String {
    let mut t = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut t);
    t.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes a directory when dropped.
pub(crate) struct RemoveOnDrop(pub(crate) std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

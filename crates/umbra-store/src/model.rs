//! Records stored and returned by the store.

/// A device id: 16 random bytes.
pub type DeviceId = [u8; 16];
/// A mailbox id: 16 random bytes, unique per device.
pub type MailboxId = [u8; 16];

/// Everything needed to create an account with its first device.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Account name (validated by the server).
    pub username: String,
    /// Random device id chosen by the server.
    pub device_id: DeviceId,
    /// Random mailbox id chosen by the server.
    pub mailbox_id: MailboxId,
    /// Ed25519 public key.
    pub identity_key: [u8; 32],
    /// X25519 public key.
    pub sealing_key: [u8; 32],
    /// SHA-256 of the device's delivery token.
    pub delivery_token_hash: [u8; 32],
}

/// An account's latest device list, as its account key signed it: opaque
/// here (the server checks it before it stores it), kept with its version
/// so that an older list never replaces a newer one, whatever node stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDevices {
    /// The account key every list must be signed with.
    pub account_key: [u8; 32],
    /// The list's version.
    pub version: u64,
    /// The signed list, encoded.
    pub list: Vec<u8>,
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Device id.
    pub device_id: DeviceId,
    /// Owning account.
    pub username: String,
    /// Ed25519 public key.
    pub identity_key: [u8; 32],
    /// X25519 public key.
    pub sealing_key: [u8; 32],
    /// Where its envelopes go.
    pub mailbox_id: MailboxId,
    /// SHA-256 of its delivery token.
    pub delivery_token_hash: [u8; 32],
}

/// A device as handed out to someone looking up a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDevice {
    /// The device.
    pub device: DeviceRecord,
    /// A claimed key package, when claiming was asked for and one exists.
    pub key_package: Option<Vec<u8>>,
    /// Whether the claimed package is the (kept) last-resort one.
    pub key_package_is_last_resort: bool,
    /// The MLS ciphersuite of the claimed package (0 when none was).
    pub suite: u16,
}

impl UserDevice {
    /// The device without a key package.
    pub fn unclaimed(device: DeviceRecord) -> Self {
        Self {
            device,
            key_package: None,
            key_package_is_last_resort: false,
            suite: 0,
        }
    }

    /// The device with the package of `suite` just claimed for it.
    pub fn claimed(device: DeviceRecord, package: Vec<u8>, last_resort: bool, suite: u16) -> Self {
        Self {
            device,
            key_package: Some(package),
            key_package_is_last_resort: last_resort,
            suite,
        }
    }
}

/// The MLS ciphersuite of every key package stored before packages had
/// one (`MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519`), and the one
/// an older client means when it names none.
pub const LEGACY_SUITE: u16 = 0x0003;

/// What the server caches per mailbox to route envelopes without reading storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxEntry {
    /// The mailbox.
    pub mailbox_id: MailboxId,
    /// Its device.
    pub device_id: DeviceId,
    /// SHA-256 of the device's delivery token.
    pub delivery_token_hash: [u8; 32],
}

/// An envelope to store, one of several stored at once
/// ([`StoreTx::store_envelopes`](crate::StoreTx::store_envelopes)).
#[derive(Debug, Clone, Copy)]
pub struct NewEnvelope<'a> {
    /// The mailbox it goes to.
    pub mailbox_id: &'a MailboxId,
    /// Opaque sealed bytes.
    pub sealed: &'a [u8],
    /// Stored without a valid delivery token.
    pub introduction: bool,
}

/// An acknowledgement of envelopes, one of several applied at once
/// ([`StoreTx::acknowledge`](crate::StoreTx::acknowledge)).
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeAck<'a> {
    /// The acknowledging device's mailbox.
    pub mailbox_id: &'a MailboxId,
    /// The session that acknowledges: nothing is deleted unless it is the
    /// device's current main session.
    pub session: u64,
    /// The envelopes.
    pub ids: &'a [u64],
}

/// A stored envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Increasing within its mailbox, in the order envelopes were
    /// committed; never reused.
    pub id: u64,
    /// Opaque sealed bytes.
    pub sealed: Vec<u8>,
    /// Stored without a valid delivery token.
    pub introduction: bool,
}

/// An online-only envelope (call signalling) held for a device for a few
/// seconds, never durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEnvelope {
    /// Opaque sealed bytes.
    pub sealed: Vec<u8>,
    /// Sent without a valid delivery token.
    pub introduction: bool,
}

/// Caps the store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most envelopes one mailbox may hold.
    pub mailbox_cap: u64,
    /// Most key packages (last-resort excluded) one device may hold.
    pub key_package_cap: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            mailbox_cap: 10_000,
            key_package_cap: 200,
        }
    }
}

/// What claiming a group epoch came to ([`crate::StoreTx::claim_epoch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochClaim {
    /// This commit holds the epoch (the first claim, or the same commit
    /// claimed again).
    Won,
    /// Another commit holds it: here it is.
    Lost(Vec<u8>),
}

impl EpochClaim {
    /// What a claim of `commit` came to, given the commit the tag holds
    /// after it.
    pub fn of(commit: &[u8], holder: Vec<u8>) -> Self {
        if holder == commit {
            Self::Won
        } else {
            Self::Lost(holder)
        }
    }
}

/// A business account's card as stored: the business's signed profile and
/// the operator's signed verification, each opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCard {
    /// The account.
    pub username: String,
    /// The encoded profile and its signature (umbra.proto `SetBusinessCard`).
    pub card: Vec<u8>,
    /// The encoded verification and its signature, if verified.
    pub verification: Option<Vec<u8>>,
}

/// Collects envelopes in order until `max_bytes` of sealed data are
/// gathered (the one that crosses the bound included, so at least one comes
/// back when any is pending).
pub(crate) fn up_to_bytes<E>(
    rows: impl IntoIterator<Item = Result<StoredEnvelope, E>>,
    max_bytes: usize,
) -> Result<Vec<StoredEnvelope>, E> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for env in rows {
        let env = env?;
        bytes += env.sealed.len();
        out.push(env);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}

/// An introduction budget as stored: tokens left (`None`: full) as of
/// `at` (unix seconds). Returns whether one could be taken, and what to
/// store afterwards.
pub(crate) fn take_token(tokens: Option<f64>, at: u64, per_hour: u32, now: u64) -> (bool, f64) {
    let full = f64::from(per_hour);
    let left = match tokens {
        None => full,
        Some(t) => (t + now.saturating_sub(at) as f64 * full / 3600.0).min(full),
    };
    if left >= 1.0 {
        (true, left - 1.0)
    } else {
        (false, left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_spends_and_refills_by_the_hour() {
        assert_eq!(take_token(None, 0, 2, 100), (true, 1.0));
        assert_eq!(take_token(Some(1.0), 100, 2, 100), (true, 0.0));
        assert_eq!(take_token(Some(0.0), 100, 2, 100), (false, 0.0));
        // Half an hour later: one back.
        assert_eq!(take_token(Some(0.0), 100, 2, 1900), (true, 0.0));
        // Never more than the hour's worth.
        assert_eq!(take_token(Some(0.0), 0, 2, 1_000_000), (true, 1.0));
    }
}

//! End-to-end encryption of group-call media, frame by frame (SFrame,
//! RFC 9605), without I/O: what stands between the Opus encoder and the
//! RTP writer, so that the forwarding unit in between relays frames it
//! cannot read.
//!
//! Keys come from an MLS group of the call's participants, the way RFC 9605
//! §5.2 says: each epoch's base key is that group's exporter secret
//! ("SFrame 1.0 Base Key"), and each sender's key id (KID) is made of its
//! member index and the epoch's low bits ([`sframe::mls::MlsKeyId`]), so
//! every sender has a key of its own without anyone handing one out. A
//! membership change is a new epoch, hence new keys: a participant removed
//! has none for what is said after, one added none for what was said before.
//!
//! [`FrameKeys`] holds this device's sending key and counter and a
//! receiving key for every other member. Opening a frame checks its
//! counter against the sender's replay window without moving it,
//! authenticates it, and only then moves the window, so a forged frame can
//! neither play nor push real frames out. A frame that cannot be opened is
//! dropped and counted by reason ([`Dropped`]), never played. When a new
//! epoch starts, the receiving keys of the last few epochs stay for a short
//! grace ([`PREVIOUS_EPOCH_GRACE_MS`], time passed in) so that frames sent
//! just before the change still play (members move a few epochs at once
//! when several join together); then they are gone. The keys of members
//! the new epoch no longer has go at once, from every epoch kept. Frames
//! from a few epochs ahead wait, unopened, for this device to get there.
//!
//! Two rules, as RFC 9605 asks:
//! - A sending key is only ever made for an epoch this device has not
//!   sealed in before (its counter starts at zero): [`FrameKeys::advance`]
//!   refuses an epoch that is not newer, and a device that loses its
//!   state mid-call (a restart) joins anew, which is a new epoch.
//! - Every member of an epoch can derive every sender's key, so a frame
//!   proves it came from a member of the call, not which one: `sender` is
//!   the key id's claim (SFrame keyed from MLS authenticates the group,
//!   not the sender within it).

use std::collections::{HashMap, VecDeque};

use sframe::CipherSuite;
use sframe::frame::{
    EncryptedFrame, FrameValidation, MediaFrame, MonotonicCounter, ReplayAttackProtectionStore,
};
use sframe::header::KeyId;
use sframe::key::{DecryptionKey, EncryptionKey};
pub use sframe::mls::MlsExporter;
use sframe::mls::{MlsKeyId, MlsKeyIdBitRange};
use thiserror::Error;

/// The suite every Umbra group call uses: AES-128-GCM, a 16-byte tag.
pub const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
/// Low bits of the epoch in a KID. RFC 9605 asks that keys of an older
/// epoch with the same low bits be gone by then: with the grace below, 16
/// epochs is far more than a call can go through in a few seconds.
const EPOCH_BITS: u8 = 4;
/// Bits of the member index in a KID: up to 256 members.
const INDEX_BITS: u8 = 8;
/// The most members a call's group may have.
pub const MAX_MEMBERS: u32 = 1 << INDEX_BITS;
/// Frames that may arrive out of order per sender (about 2.5 s of 20 ms
/// Opus frames).
const REPLAY_WINDOW: u64 = 128;
/// How long an earlier epoch's receiving keys are kept after a new one
/// starts, in milliseconds.
pub const PREVIOUS_EPOCH_GRACE_MS: u64 = 2_000;
/// How long a frame under a later epoch's key waits for this device to
/// reach that epoch (the committer moves first; the others a signalling
/// round trip later), in milliseconds.
pub const EARLY_HOLD_MS: u64 = 500;
/// How many epochs ahead such a frame may be, and how many earlier epochs'
/// keys are kept for the grace.
pub const EPOCHS_AROUND: u64 = 3;
/// The most such frames held at once.
const EARLY_MAX: usize = 256;

fn bit_range() -> MlsKeyIdBitRange {
    MlsKeyIdBitRange::new(EPOCH_BITS, INDEX_BITS)
}

/// Why keys could not be made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The MLS group would not export the epoch's secret.
    #[error("the call's group did not give this epoch's key: {0}")]
    Export(String),
    /// This device's member index does not fit a key id.
    #[error("member index {0} is beyond the 256 members a call can have")]
    TooManyMembers(u32),
    /// The epoch is not newer than the one frames are sealed under: a
    /// sending key would be made twice, and its counter start again.
    #[error("epoch {new} is not newer than epoch {current}")]
    NotNewer {
        /// The epoch offered.
        new: u64,
        /// The epoch in use.
        current: u64,
    },
}

/// Why a frame was not sealed.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The cipher refused (it does not, for a well-formed key).
    #[error("the frame could not be encrypted")]
    Encrypt,
    /// The last move to a new epoch failed: nothing is sealed under the
    /// old key, which members who left may hold.
    #[error("no key for the call's current epoch")]
    NoKey,
}

/// Frames dropped since the keys were made, by reason: never played.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Not an SFrame frame (too short, a bad header).
    pub malformed: u64,
    /// A key id for which there is no key: a sender not (or no longer) in
    /// the call, or an epoch this device does not have.
    pub unknown_key: u64,
    /// A counter already seen, or too far behind.
    pub replayed: u64,
    /// The tag did not verify: a changed frame, or a wrong key.
    pub forged: u64,
}

impl Dropped {
    /// All frames dropped.
    pub fn total(&self) -> u64 {
        self.malformed + self.unknown_key + self.replayed + self.forged
    }
}

/// A frame opened: who sent it (member index) and what it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's member index in the call's group.
    pub sender: u32,
    /// The frame's SFrame counter. A sender seals exactly one frame per
    /// 20 ms and its counter runs on across epochs, so this is the
    /// sender's own clock, in frames (authenticated, unlike an RTP
    /// timestamp a forwarding unit rewrites).
    pub counter: u64,
    /// The Opus frame.
    pub payload: Vec<u8>,
}

/// An MLS epoch as the keys need it: its number, this device's index and
/// the other members' indices, and an exporter for its secret.
pub struct Epoch<'a, E: MlsExporter> {
    /// The epoch number.
    pub number: u64,
    /// This device's member index.
    pub own_index: u32,
    /// Every member's index, this device's included or not.
    pub members: &'a [u32],
    /// The group's exporter at this epoch.
    pub exporter: &'a E,
}

/// The label RFC 9605 §5.2 exports an epoch's SFrame base key under.
pub const BASE_KEY_LABEL: &str = "SFrame 1.0 Base Key";

/// An epoch as [`Epoch`] describes it, with its SFrame base key exported
/// once and owned: what the signalling side, which holds the MLS group,
/// hands to the task running the call when the group moves to a new epoch.
#[derive(Clone)]
pub struct EpochSecret {
    /// The epoch number.
    pub number: u64,
    /// This device's member index.
    pub own_index: u32,
    /// Every member's index.
    pub members: Vec<u32>,
    /// Wiped when dropped.
    base: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSecret")
            .field("number", &self.number)
            .field("own_index", &self.own_index)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// Asked an [`EpochSecret`] for anything but the base key it holds.
#[derive(Debug, Error)]
#[error("only the SFrame base key was exported")]
pub struct NotExported;

impl EpochSecret {
    /// Exports `epoch`'s base key from its MLS exporter.
    pub fn export(epoch: &Epoch<'_, impl MlsExporter>) -> Result<Self, KeyError> {
        let base = epoch
            .exporter
            .export_secret(BASE_KEY_LABEL, b"", SUITE.key_len())
            .map_err(|e| KeyError::Export(e.to_string()))?;
        Ok(Self {
            number: epoch.number,
            own_index: epoch.own_index,
            members: epoch.members.to_vec(),
            base: zeroize::Zeroizing::new(base.as_ref().to_vec()),
        })
    }

    /// The epoch, to make or move [`FrameKeys`] with.
    pub fn epoch(&self) -> Epoch<'_, Self> {
        Epoch {
            number: self.number,
            own_index: self.own_index,
            members: &self.members,
            exporter: self,
        }
    }
}

impl MlsExporter for EpochSecret {
    // Every copy of the base key is wiped when dropped.
    type BaseKey = zeroize::Zeroizing<Vec<u8>>;
    type Error = NotExported;

    fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        len: usize,
    ) -> Result<Self::BaseKey, NotExported> {
        if label == BASE_KEY_LABEL && context.is_empty() && len == self.base.len() {
            Ok(zeroize::Zeroizing::new(self.base.to_vec()))
        } else {
            Err(NotExported)
        }
    }
}

/// The receiving keys of one epoch.
struct EpochKeys {
    number: u64,
    keys: HashMap<KeyId, DecryptionKey>,
}

/// One device's frame keys in one call.
pub struct FrameKeys {
    /// None after a failed move to a new epoch.
    sending: Option<EncryptionKey>,
    counter: MonotonicCounter,
    current: EpochKeys,
    /// The last few epochs' keys, newest first, and when each goes (ms).
    previous: VecDeque<(EpochKeys, u64)>,
    replay: ReplayAttackProtectionStore,
    dropped: Dropped,
    /// Frames under the next epoch's key ids, unopened, with when they
    /// came (ms): opened once this device moves there, else dropped.
    early: VecDeque<(u64, Vec<u8>)>,
}

fn key_id(epoch: u64, index: u32) -> Result<KeyId, KeyError> {
    if index >= MAX_MEMBERS {
        return Err(KeyError::TooManyMembers(index));
    }
    Ok(MlsKeyId::new(0u64, epoch, index, bit_range()).into())
}

fn receiving(epoch: &Epoch<'_, impl MlsExporter>) -> Result<EpochKeys, KeyError> {
    let mut keys = HashMap::new();
    // A member beyond what a key id holds gets no key (its frames are
    // dropped as from an unknown key); the others still hear each other.
    let others = epoch
        .members
        .iter()
        .filter(|&&i| i != epoch.own_index && i < MAX_MEMBERS);
    for &index in others {
        let kid = MlsKeyId::from_key_id(key_id(epoch.number, index)?, bit_range());
        let key = DecryptionKey::derive_from_mls(SUITE, epoch.exporter, kid)
            .map_err(|e| KeyError::Export(e.to_string()))?;
        keys.insert(key.key_id(), key);
    }
    Ok(EpochKeys {
        number: epoch.number,
        keys,
    })
}

fn sending(epoch: &Epoch<'_, impl MlsExporter>) -> Result<EncryptionKey, KeyError> {
    let kid = MlsKeyId::from_key_id(key_id(epoch.number, epoch.own_index)?, bit_range());
    EncryptionKey::derive_from_mls(SUITE, epoch.exporter, kid)
        .map_err(|e| KeyError::Export(e.to_string()))
}

impl FrameKeys {
    /// Keys for `epoch`, the call's first as this device knows it.
    pub fn new(epoch: &Epoch<'_, impl MlsExporter>) -> Result<Self, KeyError> {
        Ok(Self {
            sending: Some(sending(epoch)?),
            counter: MonotonicCounter::default(),
            current: receiving(epoch)?,
            previous: VecDeque::new(),
            replay: ReplayAttackProtectionStore::with_tolerance(REPLAY_WINDOW),
            dropped: Dropped::default(),
            early: VecDeque::new(),
        })
    }

    /// Moves to `epoch` at `now_ms`: frames are sealed under its key from
    /// now on; the last [`EPOCHS_AROUND`] epochs' receiving keys are kept
    /// for [`PREVIOUS_EPOCH_GRACE_MS`] each, any older ones dropped.
    ///
    /// On failure nothing more is sealed (the old key may be held by
    /// members who left) until a later move succeeds.
    pub fn advance(
        &mut self,
        epoch: &Epoch<'_, impl MlsExporter>,
        now_ms: u64,
    ) -> Result<(), KeyError> {
        let current = self.current.number;
        if epoch.number <= current {
            return Err(KeyError::NotNewer {
                new: epoch.number,
                current,
            });
        }
        let made = sending(epoch).and_then(|s| Ok((s, receiving(epoch)?)));
        let (sending_key, next) = match made {
            Ok(keys) => keys,
            Err(e) => {
                self.sending = None;
                return Err(e);
            }
        };
        self.sending = Some(sending_key);
        // The counter runs on under the new key: a (key, counter) pair
        // never repeats either way, and receivers read the sender's frame
        // clock from it across the change.
        let old = std::mem::replace(&mut self.current, next);
        self.previous
            .push_front((old, now_ms + PREVIOUS_EPOCH_GRACE_MS));
        self.previous.truncate(EPOCHS_AROUND as usize);
        let current = &self.current.keys;
        // An epoch one of whose members the new epoch no longer has goes at
        // once, with no grace: who was removed holds its secret, so could
        // make a frame under any member's key in it. (Frames still in
        // flight under it are lost: a moment of audio on each removal.)
        self.previous.retain(|(old, _)| {
            old.keys.keys().all(|&kid| {
                let index = MlsKeyId::from_key_id(kid, bit_range()).member_index();
                epoch.members.iter().any(|&m| u64::from(m) == index)
            })
        });
        // Key ids repeat every 2^EPOCH_BITS epochs: old keys whose ids the
        // new epoch reuses go, and every new key id starts a fresh window.
        self.previous
            .retain(|(old, _)| !old.keys.keys().any(|kid| current.contains_key(kid)));
        for &kid in self.current.keys.keys() {
            self.replay.remove(kid);
        }
        self.forget_windows();
        self.forget_expired(now_ms);
        Ok(())
    }

    /// Drops earlier epochs' keys once their grace is over (checked on
    /// every frame, so cheap until it is), then the replay windows of keys
    /// no longer held.
    fn forget_expired(&mut self, now_ms: u64) {
        let before = self.previous.len();
        self.previous.retain(|&(_, until)| now_ms < until);
        if self.previous.len() != before {
            self.forget_windows();
        }
    }

    /// Drops the replay windows of keys no longer held (after the keys
    /// changed).
    fn forget_windows(&mut self) {
        let current = &self.current.keys;
        let previous = &self.previous;
        self.replay.retain(|kid| {
            current.contains_key(&kid) || previous.iter().any(|(p, _)| p.keys.contains_key(&kid))
        });
    }

    /// Encrypts one Opus frame for everyone in the call.
    pub fn seal(&mut self, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self.sending.as_ref().ok_or(SealError::NoKey)?;
        MediaFrame::new(&mut self.counter, payload)
            .encrypt(key)
            .map(|f| f.as_ref().to_vec())
            .map_err(|_| SealError::Encrypt)
    }

    /// Decrypts a frame received at `now_ms`, or drops it (counted). A
    /// frame under a key id of the epoch after ours is held, unopened, for
    /// [`EARLY_HOLD_MS`]: the committer seals under a new epoch as soon as
    /// it commits, and [`FrameKeys::take_early`] gives such frames back once
    /// this device has moved there too.
    pub fn open(&mut self, frame: &[u8], now_ms: u64) -> Option<Opened> {
        self.forget_expired(now_ms);
        while self
            .early
            .front()
            .is_some_and(|&(at, _)| now_ms.saturating_sub(at) > EARLY_HOLD_MS)
        {
            self.early.pop_front();
            self.dropped.unknown_key += 1;
        }
        let Ok(encrypted) = EncryptedFrame::try_new(frame) else {
            self.dropped.malformed += 1;
            return None;
        };
        let header = *encrypted.header();
        let kid = header.key_id();
        let keys = if self.current.keys.contains_key(&kid) {
            &self.current.keys
        } else {
            match self
                .previous
                .iter()
                .find(|(p, _)| p.keys.contains_key(&kid))
            {
                Some((p, _)) => &p.keys,
                None => {
                    let wrap = 1u64 << EPOCH_BITS;
                    let theirs = MlsKeyId::from_key_id(kid, bit_range()).epoch_lsb();
                    let ahead = (theirs + wrap - (self.current.number % wrap)) % wrap;
                    if (1..=EPOCHS_AROUND).contains(&ahead) && self.early.len() < EARLY_MAX {
                        self.early.push_back((now_ms, frame.to_vec()));
                    } else {
                        self.dropped.unknown_key += 1;
                    }
                    return None;
                }
            }
        };
        // Checked before, moved only after the tag verified.
        if self.replay.inspect(&header).is_err() {
            self.dropped.replayed += 1;
            return None;
        }
        let Ok(media) = encrypted.decrypt(keys) else {
            self.dropped.forged += 1;
            return None;
        };
        if self.replay.validate(&header).is_err() {
            self.dropped.replayed += 1;
            return None;
        }
        let sender = MlsKeyId::from_key_id(kid, bit_range()).member_index();
        Some(Opened {
            sender: u32::try_from(sender).unwrap_or(u32::MAX),
            counter: header.counter(),
            payload: media.payload().to_vec(),
        })
    }

    /// The frames held for the epoch after the one we were in, to open
    /// again now that we moved (see [`FrameKeys::open`]).
    pub fn take_early(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.early.drain(..).collect()
    }

    /// Frames dropped so far.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// The epoch frames are sealed under.
    pub fn epoch(&self) -> u64 {
        self.current.number
    }
}

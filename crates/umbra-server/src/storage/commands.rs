//! What connections ask of the storage thread ([`Command`]), what it
//! answers with, and how a store's errors read to the protocol layer
//! ([`Refused`]).

use tokio::sync::oneshot;
use umbra_store::{
    AccountDevices, DeviceId, EpochClaim, LiveEnvelope, MailboxEntry, MailboxId, NewDevice,
    StoreError, StoredCard, StoredEnvelope, UserDevice,
};
use umbra_wire::proto::BusinessProfile;

use super::{AckCommand, SendCommand};

/// A refused or failed storage operation, as the protocol layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// The username exists.
    UsernameTaken,
    /// A random id collided; retry with new ids.
    IdCollision,
    /// No such device.
    UnknownDevice,
    /// No such account.
    UnknownUser,
    /// No such mailbox.
    UnknownMailbox,
    /// The mailbox holds its maximum.
    MailboxFull,
    /// The device would hold too many key packages.
    TooManyKeyPackages,
    /// A device has no key package at all.
    NoKeyPackages,
    /// The mailbox's introduction budget is spent for now.
    IntroductionLimit,
    /// The session was superseded by a later login of the device (on this
    /// node or another): it may neither fetch nor acknowledge.
    Superseded,
    /// A device list no newer than the stored one.
    StaleDeviceList,
    /// Storage failed or is shutting down.
    Unavailable,
}

pub(crate) fn refused(e: StoreError) -> Refused {
    match e {
        StoreError::UsernameTaken => Refused::UsernameTaken,
        StoreError::IdCollision => Refused::IdCollision,
        StoreError::UnknownDevice => Refused::UnknownDevice,
        StoreError::UnknownUser => Refused::UnknownUser,
        StoreError::UnknownMailbox => Refused::UnknownMailbox,
        StoreError::MailboxFull => Refused::MailboxFull,
        StoreError::TooManyKeyPackages { .. } => Refused::TooManyKeyPackages,
        StoreError::NoKeyPackages => Refused::NoKeyPackages,
        StoreError::StaleDeviceList => Refused::StaleDeviceList,
        other => {
            tracing::error!(error = %other, "storage operation failed");
            Refused::Unavailable
        }
    }
}

/// Where a command's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, Refused>>;

/// What a login needs to know about a device.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    /// The device's account.
    pub username: String,
    /// Ed25519 key that must have signed the login.
    pub identity_key: [u8; 32],
    /// The device's mailbox.
    pub mailbox_id: MailboxId,
    /// Regular key packages left, per suite.
    pub key_packages_left: Vec<(u16, u32)>,
}

/// A user's devices as FetchDevices hands them out.
#[derive(Debug)]
pub struct Listing {
    /// The devices (with a claimed key package each, when claiming).
    pub devices: Vec<UserDevice>,
    /// A business account's card.
    pub card: Option<StoredCard>,
    /// The account's signed device list.
    pub list: Option<AccountDevices>,
}

/// One storage request.
#[non_exhaustive]
pub enum Command {
    /// Create an account and device.
    Register {
        /// The new device.
        device: NewDevice,
        /// The account's first device list.
        devices: AccountDevices,
        /// Answer.
        reply: Reply<()>,
    },
    /// An account's latest device list.
    AccountDevices {
        /// The account.
        username: String,
        /// Answer (`None`: no such account, or one without a key).
        reply: Reply<Option<AccountDevices>>,
    },
    /// Replace an account's device list, link a device, unlink the
    /// devices the list leaves out.
    UpdateDevices {
        /// The account.
        username: String,
        /// The new list (already checked against the account key).
        devices: AccountDevices,
        /// The device being linked.
        new_device: Option<NewDevice>,
        /// Identity keys of the devices the list names.
        keep: Vec<[u8; 32]>,
        /// Answer: the unlinked devices and their mailboxes.
        reply: Reply<Vec<(DeviceId, MailboxId)>>,
    },
    /// Look up a device for login.
    Login {
        /// The device.
        device_id: DeviceId,
        /// Answer (`None`: unknown device).
        reply: Reply<Option<LoginInfo>>,
    },
    /// Start a main session of a device whose login verified (a later one,
    /// on any node, supersedes it).
    StartSession {
        /// The device.
        device_id: DeviceId,
        /// Answer: the session's number.
        reply: Reply<u64>,
    },
    /// A user's devices, optionally claiming key packages.
    Devices {
        /// The user.
        username: String,
        /// Claim one key package per device, all of the first of these
        /// suites every device has (empty: claim none).
        claim: Vec<u16>,
        /// Answer (`None`: unknown user).
        reply: Reply<Option<Listing>>,
    },
    /// Make an account a business account, or replace its card.
    SetCard {
        /// The logged-in account.
        username: String,
        /// The encoded `BusinessCard` (profile and signature, checked).
        card: Vec<u8>,
        /// Its profile, decoded.
        profile: BusinessProfile,
        /// Answer: whether the card is still verified.
        reply: Reply<bool>,
    },
    /// Add key packages.
    Upload {
        /// The logged-in device.
        device_id: DeviceId,
        /// The packages' MLS ciphersuite.
        suite: u16,
        /// Regular packages.
        packages: Vec<Vec<u8>>,
        /// New last-resort package.
        last_resort: Option<Vec<u8>>,
        /// Withdraw every package of the suite the device had first.
        replace: bool,
        /// Answer: regular packages left.
        reply: Reply<u32>,
    },
    /// Replace a delivery-token hash.
    SetToken {
        /// The logged-in device.
        device_id: DeviceId,
        /// Its mailbox (to update the cache).
        mailbox_id: MailboxId,
        /// New hash.
        hash: [u8; 32],
        /// Answer.
        reply: Reply<()>,
    },
    /// Store an envelope.
    Send(SendCommand),
    /// Hold an online-only envelope for a device not connected to this
    /// node, for whichever node it is (or will be within the hold)
    /// connected to; the other nodes are told after commit.
    HoldLive {
        /// Target mailbox.
        mailbox_id: MailboxId,
        /// Sealed bytes.
        sealed: Vec<u8>,
        /// Sent without a valid token.
        introduction: bool,
        /// For an introduction: the mailbox's budget, an hour.
        per_hour: u32,
        /// Answer: held (`false`: the mailbox holds its most already).
        reply: Reply<bool>,
    },
    /// Leave data in a link slot (kept where online-only envelopes are).
    PutSlot {
        /// The slot's key.
        key: MailboxId,
        /// What is left there.
        data: Vec<u8>,
        /// Answer: `false` when the slot is taken.
        reply: Reply<bool>,
    },
    /// Take what waits in a link slot.
    TakeSlot {
        /// The slot's key.
        key: MailboxId,
        /// Answer.
        reply: Reply<Option<Vec<u8>>>,
    },
    /// Take the online-only envelopes held for a mailbox.
    TakeLive {
        /// The logged-in device's mailbox.
        mailbox_id: MailboxId,
        /// Answer, in the order they were held.
        reply: Reply<Vec<LiveEnvelope>>,
    },
    /// Which of these mailboxes have online-only envelopes held (the
    /// sweep), forgetting those past their hold.
    LiveWaiting {
        /// The mailboxes.
        mailboxes: Vec<MailboxId>,
        /// Answer.
        reply: Reply<Vec<MailboxId>>,
    },
    /// Read pending envelopes.
    Fetch {
        /// The logged-in device's mailbox.
        mailbox_id: MailboxId,
        /// The connection's main session (refused once superseded).
        session: u64,
        /// Only ids above this.
        after: u64,
        /// Most envelopes.
        limit: u32,
        /// Stop after this many sealed bytes.
        max_bytes: usize,
        /// Answer.
        reply: Reply<Vec<StoredEnvelope>>,
    },
    /// Delete acknowledged envelopes.
    Ack(AckCommand),
    /// A mailbox's routing entry (a mailbox registered on another node, or
    /// whose token changed there).
    Mailbox {
        /// The mailbox.
        mailbox_id: MailboxId,
        /// Answer.
        reply: Reply<Option<MailboxEntry>>,
    },
    /// The highest envelope id of each of these mailboxes that holds any
    /// (the sweep).
    Newest {
        /// The mailboxes.
        mailboxes: Vec<MailboxId>,
        /// Answer.
        reply: Reply<Vec<(MailboxId, u64)>>,
    },
    /// Claim a group epoch for a commit.
    ClaimEpoch {
        /// The epoch's tag.
        tag: [u8; 32],
        /// The commit.
        commit: Vec<u8>,
        /// Answer.
        reply: Reply<EpochClaim>,
    },
    /// The commit that won a group epoch.
    FetchEpoch {
        /// The epoch's tag.
        tag: [u8; 32],
        /// Answer.
        reply: Reply<Option<Vec<u8>>>,
    },
    /// Delete old envelopes (and claimed epochs as old).
    Expire {
        /// Age limit in days.
        max_age_days: u32,
    },
    /// Commit what is queued and end the thread.
    Stop,
}

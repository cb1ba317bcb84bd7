//! The storage interface the server is written against.

use crate::model::{
    AccountDevices, DeviceId, DeviceRecord, EnvelopeAck, EpochClaim, LiveEnvelope, MailboxEntry,
    MailboxId, NewDevice, NewEnvelope, StoredCard, StoredEnvelope, UserDevice,
};
use crate::{Day, StoreError};

/// A storage backend. Work happens in transactions so the server can group
/// many operations into one commit.
pub trait Store: Send {
    /// Starts a transaction. Dropping it without [`StoreTx::commit`] rolls back.
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError>;
}

/// One transaction. Every operation is atomic on its own: if it fails, none of
/// its changes remain and the transaction can go on with the next one.
pub trait StoreTx {
    /// Takes, in one fixed order, every device row this transaction will
    /// read under a lock or change: those of these mailboxes (their
    /// envelopes, counts, budgets and sessions) and of these devices (a
    /// login's session, a token), so that transactions on several nodes
    /// that touch the same devices never wait on each other in a circle;
    /// returns each locked row's mailbox and current main session (pushes
    /// go to that session alone).
    fn lock_mailboxes(
        &mut self,
        mailboxes: &[MailboxId],
        devices: &[DeviceId],
    ) -> Result<Vec<(MailboxId, u64)>, StoreError>;

    /// Starts a main session of the device: its number, above every one
    /// before it, wherever that one was (on another node, it is superseded).
    fn start_session(&mut self, device_id: &DeviceId) -> Result<u64, StoreError>;

    /// Whether `session` is still the current main session of the mailbox's
    /// device. A superseded session may neither fetch nor acknowledge (a
    /// login in progress elsewhere waits for this transaction).
    fn session_is_current(
        &mut self,
        mailbox_id: &MailboxId,
        session: u64,
    ) -> Result<bool, StoreError>;

    /// Takes one introduction (an envelope without a valid delivery token)
    /// from the mailbox's budget: `per_hour` an hour, saved up to `per_hour`,
    /// at `now_secs`. `false` when none is left.
    fn take_introduction(
        &mut self,
        mailbox_id: &MailboxId,
        per_hour: u32,
        now_secs: u64,
    ) -> Result<bool, StoreError>;

    /// For each of these mailboxes that holds envelopes, its highest id.
    fn newest_envelopes(
        &mut self,
        mailboxes: &[MailboxId],
    ) -> Result<Vec<(MailboxId, u64)>, StoreError>;

    /// Holds an online-only envelope for a device connected to another node
    /// (or not at all) until `until_secs`, for whichever node it connects to
    /// to take; `false` (nothing held) when the mailbox already holds `cap`
    /// still due at `now_secs`. Never durable: PostgreSQL keeps these in an unlogged
    /// table, SQLite in a temporary in-memory one.
    fn hold_live(
        &mut self,
        mailbox_id: &MailboxId,
        sealed: &[u8],
        introduction: bool,
        now_secs: u64,
        until_secs: u64,
        cap: u32,
    ) -> Result<bool, StoreError>;

    /// Takes (deletes and returns, in the order they were held) the
    /// online-only envelopes held for a mailbox that are still due at
    /// `now_secs`; each is taken by one caller only, whatever node asks.
    fn take_live(
        &mut self,
        mailbox_id: &MailboxId,
        now_secs: u64,
    ) -> Result<Vec<LiveEnvelope>, StoreError>;

    /// Which of these mailboxes have online-only envelopes waiting.
    fn live_waiting(
        &mut self,
        mailboxes: &[MailboxId],
        now_secs: u64,
    ) -> Result<Vec<MailboxId>, StoreError>;

    /// Forgets online-only envelopes whose hold ended before `now_secs`;
    /// returns how many.
    fn expire_live(&mut self, now_secs: u64) -> Result<u64, StoreError>;

    /// Creates an account with its first device and its first device list.
    /// [`StoreError::UsernameTaken`] if the name exists,
    /// [`StoreError::IdCollision`] if an id does.
    fn register(
        &mut self,
        device: &NewDevice,
        devices: &AccountDevices,
        today: Day,
    ) -> Result<(), StoreError>;

    /// The account's latest device list (`None`: no such account, or one
    /// made before accounts had keys).
    fn account_devices(&mut self, username: &str) -> Result<Option<AccountDevices>, StoreError>;

    /// Replaces the account's device list with `devices`, which must be
    /// newer than the stored one ([`StoreError::StaleDeviceList`]; of two
    /// nodes storing the same version at once, one wins), links
    /// `new_device`, and unlinks every device of the account whose identity
    /// key is not in `keep` (its key packages and envelopes go with it).
    /// Returns the unlinked devices and their mailboxes.
    fn update_devices(
        &mut self,
        username: &str,
        devices: &AccountDevices,
        new_device: Option<&NewDevice>,
        keep: &[[u8; 32]],
    ) -> Result<Vec<(DeviceId, MailboxId)>, StoreError>;

    /// The device with this id.
    fn device(&mut self, device_id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError>;

    /// The devices of a user (`None` if the user does not exist). With
    /// `claim` not empty (MLS ciphersuites, preferred first), atomically
    /// takes one key package per device, of the first suite that device
    /// has one of: a regular one if any is left (it is deleted), else the
    /// last-resort one (which is kept). [`StoreError::NoKeyPackages`] (and
    /// nothing taken) when a device has none of the suites. Each device is
    /// judged alone: the client decides what suite a conversation takes,
    /// from the devices it accepts (a device the server added on its own
    /// must not sway it).
    fn devices_for_user(
        &mut self,
        username: &str,
        claim: &[u16],
    ) -> Result<Option<Vec<UserDevice>>, StoreError>;

    /// The device and token hash behind a mailbox.
    fn mailbox(&mut self, mailbox_id: &MailboxId) -> Result<Option<MailboxEntry>, StoreError>;

    /// Every mailbox, to fill the server's routing cache at start.
    fn all_mailboxes(&mut self) -> Result<Vec<MailboxEntry>, StoreError>;

    /// Replaces a device's delivery-token hash.
    fn set_delivery_token_hash(
        &mut self,
        device_id: &DeviceId,
        hash: &[u8; 32],
    ) -> Result<(), StoreError>;

    /// Adds key packages of MLS ciphersuite `suite` (and replaces that
    /// suite's last-resort one when given); with `replace`, first withdraws
    /// every package of the suite the device had, the last-resort one too.
    /// All or nothing. Returns the regular packages of the suite left
    /// afterwards (the cap holds per suite).
    fn upload_key_packages(
        &mut self,
        device_id: &DeviceId,
        suite: u16,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        replace: bool,
    ) -> Result<u32, StoreError>;

    /// Regular (non-last-resort) key packages of `suite` left for a device.
    fn key_packages_left(&mut self, device_id: &DeviceId, suite: u16) -> Result<u32, StoreError>;

    /// Stores one envelope; returns its id. [`StoreError::UnknownMailbox`] or
    /// [`StoreError::MailboxFull`] when refused.
    fn store_envelope(
        &mut self,
        mailbox_id: &MailboxId,
        sealed: &[u8],
        introduction: bool,
        today: Day,
    ) -> Result<u64, StoreError>;

    /// Stores these envelopes in order, each exactly as
    /// [`StoreTx::store_envelope`] would (one refused, the rest are still
    /// stored), and returns each one's outcome. A backend that pays a round
    /// trip per statement stores them all in one; the outer error is a
    /// failure of the whole call.
    fn store_envelopes(
        &mut self,
        envelopes: &[NewEnvelope<'_>],
        today: Day,
    ) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        Ok(envelopes
            .iter()
            .map(|e| self.store_envelope(e.mailbox_id, e.sealed, e.introduction, today))
            .collect())
    }

    /// Up to `limit` envelopes of a mailbox with id greater than `after`, in
    /// id order (ids increase within a mailbox in the order the envelopes
    /// were committed), stopping early once `max_bytes` of sealed data are gathered
    /// (at least one envelope is returned if any is pending).
    fn fetch_envelopes(
        &mut self,
        mailbox_id: &MailboxId,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredEnvelope>, StoreError>;

    /// Deletes the listed envelopes, but only those in this mailbox. Returns
    /// how many were deleted.
    fn delete_envelopes(&mut self, mailbox_id: &MailboxId, ids: &[u64]) -> Result<u32, StoreError>;

    /// Applies these acknowledgements in order, each as
    /// [`StoreTx::session_is_current`] then [`StoreTx::delete_envelopes`]
    /// would: `None` for one whose session was superseded (nothing
    /// deleted), else how many it deleted. A backend that pays a round trip
    /// per statement applies them all in one; the outer error is a failure
    /// of the whole call.
    fn acknowledge(
        &mut self,
        acks: &[EnvelopeAck<'_>],
    ) -> Result<Vec<Result<Option<u32>, StoreError>>, StoreError> {
        Ok(acks
            .iter()
            .map(|a| {
                if !self.session_is_current(a.mailbox_id, a.session)? {
                    return Ok(None);
                }
                self.delete_envelopes(a.mailbox_id, a.ids).map(Some)
            })
            .collect())
    }

    /// Deletes envelopes stored more than `max_age_days` before `today`.
    fn expire_envelopes(&mut self, today: Day, max_age_days: u32) -> Result<u64, StoreError>;

    /// Number of stored envelopes.
    fn envelope_count(&mut self) -> Result<u64, StoreError>;

    /// Claims the group epoch named by `tag` (opaque: the members derive it
    /// from the epoch's secrets) for `commit`, which is kept from `today`:
    /// the first claim of a tag wins, the same commit claimed again wins
    /// again (a retry), any other loses and gets the winner. Claims of one
    /// tag from several transactions at once, on any node, have one winner.
    fn claim_epoch(
        &mut self,
        tag: &[u8; 32],
        commit: &[u8],
        today: Day,
    ) -> Result<EpochClaim, StoreError>;

    /// The commit that won the epoch named by `tag`, if one did.
    fn epoch_commit(&mut self, tag: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Forgets epochs claimed more than `max_age_days` before `today` (as
    /// envelopes expire); returns how many.
    fn expire_epochs(&mut self, today: Day, max_age_days: u32) -> Result<u64, StoreError>;

    /// Makes `username` a business account with `card`, or replaces its
    /// card; its verification stays only if `keep_verified`.
    fn set_business_card(
        &mut self,
        username: &str,
        card: &[u8],
        keep_verified: bool,
    ) -> Result<(), StoreError>;

    /// `username`'s card, if it is a business account.
    fn business_card(&mut self, username: &str) -> Result<Option<StoredCard>, StoreError>;

    /// Sets (or with `None` clears) the operator's verification of a
    /// business account; `false` if it is not one.
    fn set_business_verification(
        &mut self,
        username: &str,
        verification: Option<&[u8]>,
    ) -> Result<bool, StoreError>;

    /// Every business account's card.
    fn business_cards(&mut self) -> Result<Vec<StoredCard>, StoreError>;

    /// Makes every change of this transaction durable.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

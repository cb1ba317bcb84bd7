//! The storage thread: group commit for every connection.
//!
//! Connections send [`Command`]s through a bounded channel (back-pressure
//! when storage falls behind). One thread takes every command waiting, runs
//! them in one transaction, commits, and only then replies through each
//! command's oneshot, updates the mailbox cache, and pushes stored envelopes
//! to online devices (in id order, since one thread assigns and pushes them).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use umbra_store::{
    AccountDevices, Day, DeviceId, EpochClaim, LiveEnvelope, MailboxEntry, MailboxId, NewDevice,
    Store, StoreError, StoreTx, StoredCard, StoredEnvelope, UserDevice,
};
use umbra_wire::proto::{BusinessCard, BusinessProfile, Verification};

mod runs;

pub use runs::{AckCommand, SendCommand};
use runs::{Run, acknowledge, store_sends};

use crate::metrics::inc;
use crate::routing::{HOLD_FOR, HOLD_MAX_ITEMS};
use crate::shared::Shared;

/// Most commands in one transaction.
const MAX_BATCH: usize = 1024;
/// Commands waiting before senders are made to wait.
const QUEUE_DEPTH: usize = 16 * 1024;

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

fn refused(e: StoreError) -> Refused {
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
    /// Regular key packages left.
    pub key_packages_left: u32,
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
        /// Claim one key package per device.
        claim: bool,
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
        /// Regular packages.
        packages: Vec<Vec<u8>>,
        /// New last-resort package.
        last_resort: Option<Vec<u8>>,
        /// Withdraw every package the device had first.
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

/// A cloneable handle to the storage thread.
#[derive(Clone)]
pub struct StorageHandle {
    tx: mpsc::Sender<Command>,
}

impl StorageHandle {
    /// Queues a command; the receiver yields its answer after commit.
    pub async fn submit<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> oneshot::Receiver<Result<T, Refused>> {
        let (reply, rx) = oneshot::channel();
        // If the thread is gone the reply sender is dropped with the command,
        // and the receiver reports it.
        let _ = self.tx.send(make(reply)).await;
        rx
    }

    /// Queues a command and waits for its answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Refused> {
        self.submit(make)
            .await
            .await
            .unwrap_or(Err(Refused::Unavailable))
    }

    /// Queues a command that has no answer.
    pub async fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd).await;
    }
}

/// Starts the storage thread.
pub fn spawn(
    store: Box<dyn Store>,
    shared: Arc<Shared>,
) -> std::io::Result<(StorageHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let join = std::thread::Builder::new()
        .name("umbra-storage".into())
        .spawn(move || thread_main(store, rx, &shared))?;
    Ok((StorageHandle { tx }, join))
}

fn today() -> Day {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Day::from_unix_seconds(secs)
}

fn thread_main(mut store: Box<dyn Store>, mut rx: mpsc::Receiver<Command>, shared: &Shared) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        if run_batch(&mut *store, &mut batch, shared) {
            break;
        }
    }
    tracing::debug!("storage thread stopped");
}

type Finish = Box<dyn FnOnce(bool, &Shared)>;

/// One finish that runs several, in order.
fn together(finishes: Vec<Finish>) -> Finish {
    Box::new(move |ok, shared: &Shared| {
        for f in finishes {
            f(ok, shared);
        }
    })
}

fn answer<T: 'static>(reply: Reply<T>, r: Result<T, Refused>) -> Finish {
    Box::new(move |ok, _| {
        let _ = reply.send(if ok { r } else { Err(Refused::Unavailable) });
    })
}

/// Runs one batch in one transaction. Returns true on [`Command::Stop`].
fn run_batch(store: &mut dyn Store, batch: &mut Vec<Command>, shared: &Shared) -> bool {
    let day = today();
    let mut stop = false;
    // Mailboxes this batch stored into: the other nodes hear of them once
    // the batch is committed, never before.
    let mut stored_to: Vec<MailboxId> = Vec::new();
    let mut finishes: Vec<Finish> = Vec::with_capacity(batch.len());
    // The device rows this batch reads under a lock or changes, locked
    // first and in one order, so that nodes sharing a database never
    // deadlock on them.
    let mut touched: Vec<MailboxId> = Vec::new();
    let mut devices: Vec<DeviceId> = Vec::new();
    for c in batch.iter() {
        match c {
            Command::Send(send) => {
                touched.push(send.mailbox_id);
                stored_to.push(send.mailbox_id);
            }
            Command::Ack(ack) => touched.push(ack.mailbox_id),
            Command::Fetch { mailbox_id, .. } | Command::HoldLive { mailbox_id, .. } => {
                touched.push(*mailbox_id)
            }
            Command::StartSession { device_id, .. } | Command::SetToken { device_id, .. } => {
                devices.push(*device_id);
            }
            _ => {}
        }
    }
    touched.sort_unstable();
    touched.dedup();
    devices.sort_unstable();
    devices.dedup();
    let committed = match store.begin() {
        Ok(mut tx) => {
            // Each mailbox's current main session: pushes go to it alone.
            let sessions: HashMap<MailboxId, u64> = match tx.lock_mailboxes(&touched, &devices) {
                Ok(s) => s.into_iter().collect(),
                Err(e) => {
                    tracing::error!(error = %e, "storage could not lock a batch's rows");
                    HashMap::new()
                }
            };
            let now = unix_now();
            // Sends and acknowledgements between two other commands are
            // applied together (see `runs`); everything else in order.
            let mut run = Run::default();
            for cmd in batch.drain(..) {
                match run.take(cmd) {
                    None => {}
                    Some(Command::Stop) => {
                        finishes.extend(run.apply(&mut *tx, day, now, &sessions));
                        stop = true;
                    }
                    Some(cmd) => {
                        finishes.extend(run.apply(&mut *tx, day, now, &sessions));
                        finishes.push(execute(&mut *tx, cmd, day, now, &sessions));
                    }
                }
            }
            finishes.extend(run.apply(&mut *tx, day, now, &sessions));
            match tx.commit() {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "storage commit failed");
                    false
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "storage transaction could not start");
            stop = batch.iter().any(|c| matches!(c, Command::Stop));
            batch.clear();
            false
        }
    };
    if committed {
        inc(&shared.metrics.storage_batches);
        if let Some(bus) = shared.bus.get() {
            bus.stored(stored_to);
        }
    }
    for f in finishes {
        f(committed, shared);
    }
    stop
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `session` may still read and acknowledge `mailbox`.
fn fenced(tx: &mut dyn StoreTx, mailbox: &MailboxId, session: u64) -> Result<(), Refused> {
    match tx.session_is_current(mailbox, session) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refused::Superseded),
        Err(e) => Err(refused(e)),
    }
}

/// For an introduction, takes one from the mailbox's budget, kept in the
/// database (nothing for an envelope with a valid token).
fn spend_introduction(
    tx: &mut dyn StoreTx,
    introduction: bool,
    mailbox: &MailboxId,
    per_hour: u32,
    now: u64,
) -> Result<(), Refused> {
    if !introduction {
        return Ok(());
    }
    match tx.take_introduction(mailbox, per_hour, now) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refused::IntroductionLimit),
        Err(e) => Err(refused(e)),
    }
}

/// Links and unlinks as [`StoreTx::update_devices`], refusing to link a
/// second device with the key of one the account already has.
fn update_devices(
    tx: &mut dyn StoreTx,
    username: &str,
    devices: &AccountDevices,
    new_device: Option<&NewDevice>,
    keep: &[[u8; 32]],
) -> Result<Vec<(DeviceId, MailboxId)>, Refused> {
    if let Some(d) = new_device {
        let existing = tx
            .devices_for_user(username, false)
            .map_err(refused)?
            .ok_or(Refused::UnknownUser)?;
        if existing
            .iter()
            .any(|e| e.device.identity_key == d.identity_key)
        {
            return Err(Refused::StaleDeviceList);
        }
    }
    tx.update_devices(username, devices, new_device, keep)
        .map_err(refused)
}

fn execute(
    tx: &mut dyn StoreTx,
    cmd: Command,
    day: Day,
    now: u64,
    sessions: &HashMap<MailboxId, u64>,
) -> Finish {
    match cmd {
        Command::Register {
            device,
            devices,
            reply,
        } => {
            let r = tx.register(&device, &devices, day).map_err(refused);
            let entry = MailboxEntry {
                mailbox_id: device.mailbox_id,
                device_id: device.device_id,
                delivery_token_hash: device.delivery_token_hash,
            };
            Box::new(move |ok, shared: &Shared| {
                if ok && r.is_ok() {
                    shared.cache.insert(&entry);
                    inc(&shared.metrics.registrations);
                }
                let _ = reply.send(if ok { r } else { Err(Refused::Unavailable) });
            })
        }
        Command::Login { device_id, reply } => {
            let r = login_info(tx, &device_id).map_err(refused);
            answer(reply, r)
        }
        Command::StartSession { device_id, reply } => {
            answer(reply, tx.start_session(&device_id).map_err(refused))
        }
        Command::Devices {
            username,
            claim,
            reply,
        } => {
            let r = tx.devices_for_user(&username, claim).and_then(|d| match d {
                None => Ok(None),
                Some(devices) => Ok(Some(Listing {
                    devices,
                    card: tx.business_card(&username)?,
                    list: tx.account_devices(&username)?,
                })),
            });
            answer(reply, r.map_err(refused))
        }
        Command::AccountDevices { username, reply } => {
            answer(reply, tx.account_devices(&username).map_err(refused))
        }
        Command::UpdateDevices {
            username,
            devices,
            new_device,
            keep,
            reply,
        } => {
            let r = update_devices(tx, &username, &devices, new_device.as_ref(), &keep);
            let entry = new_device.map(|d| MailboxEntry {
                mailbox_id: d.mailbox_id,
                device_id: d.device_id,
                delivery_token_hash: d.delivery_token_hash,
            });
            Box::new(move |ok, shared: &Shared| {
                let r = if ok { r } else { Err(Refused::Unavailable) };
                if let Ok(gone) = &r {
                    if let Some(entry) = &entry {
                        shared.cache.insert(entry);
                        inc(&shared.metrics.devices_linked);
                    }
                    for (_, mailbox) in gone {
                        shared.cache.remove(mailbox);
                        shared.registry.disconnect(mailbox);
                        inc(&shared.metrics.devices_unlinked);
                    }
                }
                let _ = reply.send(r);
            })
        }
        Command::SetCard {
            username,
            card,
            profile,
            reply,
        } => {
            let r = tx.business_card(&username).and_then(|old| {
                let keep = old
                    .and_then(|c| c.verification)
                    .and_then(|v| BusinessCard::decode(v.as_slice()).ok())
                    .and_then(|c| Verification::decode(c.verification.as_slice()).ok())
                    .is_some_and(|v| umbra_wire::business::verification_matches(&v, &profile));
                tx.set_business_card(&username, &card, keep)?;
                Ok(keep)
            });
            answer(reply, r.map_err(refused))
        }
        Command::Upload {
            device_id,
            packages,
            last_resort,
            replace,
            reply,
        } => answer(
            reply,
            tx.upload_key_packages(&device_id, &packages, last_resort.as_deref(), replace)
                .map_err(refused),
        ),
        Command::SetToken {
            device_id,
            mailbox_id,
            hash,
            reply,
        } => {
            let r = tx
                .set_delivery_token_hash(&device_id, &hash)
                .map_err(refused);
            Box::new(move |ok, shared: &Shared| {
                if ok && r.is_ok() {
                    shared.cache.set_token_hash(&mailbox_id, hash);
                }
                let _ = reply.send(if ok { r } else { Err(Refused::Unavailable) });
            })
        }
        Command::Send(send) => together(store_sends(tx, vec![send], day, now, sessions)),
        Command::HoldLive {
            mailbox_id,
            sealed,
            introduction,
            per_hour,
            reply,
        } => {
            let budget = spend_introduction(tx, introduction, &mailbox_id, per_hour, now);
            let until = now + HOLD_FOR.as_secs();
            let cap = u32::try_from(HOLD_MAX_ITEMS).unwrap_or(u32::MAX);
            let r = budget.and_then(|()| {
                tx.hold_live(&mailbox_id, &sealed, introduction, now, until, cap)
                    .map_err(refused)
            });
            Box::new(move |ok, shared: &Shared| {
                let r = if ok { r } else { Err(Refused::Unavailable) };
                if r == Ok(true)
                    && let Some(bus) = shared.bus.get()
                {
                    bus.live(vec![mailbox_id]);
                }
                let _ = reply.send(r);
            })
        }
        Command::PutSlot { key, data, reply } => {
            let until = now + crate::devices::SLOT_HOLD.as_secs();
            let r = tx
                .expire_live(now)
                .and_then(|_| tx.hold_live(&key, &data, false, now, until, 1));
            answer(reply, r.map_err(refused))
        }
        Command::TakeSlot { key, reply } => {
            let r = tx
                .take_live(&key, now)
                .map(|held| held.into_iter().next().map(|e| e.sealed));
            answer(reply, r.map_err(refused))
        }
        Command::TakeLive { mailbox_id, reply } => {
            answer(reply, tx.take_live(&mailbox_id, now).map_err(refused))
        }
        Command::LiveWaiting { mailboxes, reply } => {
            let r = tx
                .expire_live(now)
                .and_then(|_| tx.live_waiting(&mailboxes, now));
            answer(reply, r.map_err(refused))
        }
        Command::Fetch {
            mailbox_id,
            session,
            after,
            limit,
            max_bytes,
            reply,
        } => answer(
            reply,
            fenced(tx, &mailbox_id, session).and_then(|()| {
                tx.fetch_envelopes(&mailbox_id, after, limit, max_bytes)
                    .map_err(refused)
            }),
        ),
        Command::Ack(ack) => together(acknowledge(tx, vec![ack])),
        Command::Mailbox { mailbox_id, reply } => {
            let r = tx.mailbox(&mailbox_id).map_err(refused);
            Box::new(move |ok, shared: &Shared| {
                let r = if ok { r } else { Err(Refused::Unavailable) };
                if let Ok(Some(entry)) = &r {
                    shared.cache.insert(entry);
                }
                let _ = reply.send(r);
            })
        }
        Command::Newest { mailboxes, reply } => {
            answer(reply, tx.newest_envelopes(&mailboxes).map_err(refused))
        }
        Command::ClaimEpoch { tag, commit, reply } => {
            let r = tx.claim_epoch(&tag, &commit, day).map_err(refused);
            Box::new(move |ok, shared: &Shared| {
                if ok && let Ok(claim) = &r {
                    inc(match claim {
                        EpochClaim::Won => &shared.metrics.epochs_won,
                        EpochClaim::Lost(_) => &shared.metrics.epochs_lost,
                    });
                }
                let _ = reply.send(if ok { r } else { Err(Refused::Unavailable) });
            })
        }
        Command::FetchEpoch { tag, reply } => answer(reply, tx.epoch_commit(&tag).map_err(refused)),
        Command::Expire { max_age_days } => {
            let r = tx
                .expire_envelopes(day, max_age_days)
                .and_then(|n| tx.expire_epochs(day, max_age_days).map(|_| n))
                .map_err(refused);
            Box::new(move |ok, shared: &Shared| {
                if ok && let Ok(n) = r {
                    let m = &shared.metrics;
                    m.envelopes_expired
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    m.envelopes_stored.fetch_sub(
                        i64::try_from(n).unwrap_or(i64::MAX),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    if n > 0 {
                        tracing::info!(count = n, "expired old envelopes");
                    }
                }
            })
        }
        Command::Stop => Box::new(|_, _| {}),
    }
}

fn login_info(tx: &mut dyn StoreTx, device_id: &DeviceId) -> Result<Option<LoginInfo>, StoreError> {
    let Some(d) = tx.device(device_id)? else {
        return Ok(None);
    };
    let left = tx.key_packages_left(device_id)?;
    Ok(Some(LoginInfo {
        username: d.username,
        identity_key: d.identity_key,
        mailbox_id: d.mailbox_id,
        key_packages_left: left,
    }))
}

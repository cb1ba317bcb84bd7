//! The storage thread: group commit for every connection.
//!
//! Connections send [`Command`]s through a bounded channel (back-pressure
//! when storage falls behind). One thread takes every command waiting, runs
//! them in one transaction, commits, and only then replies through each
//! command's oneshot, updates the mailbox cache, and pushes stored envelopes
//! to online devices (in id order, since one thread assigns and pushes them).
//! The commands and answers are in `commands`; how runs of sends and
//! acknowledgements are applied together, in `runs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use umbra_store::{
    AccountDevices, Day, DeviceId, EpochClaim, MailboxEntry, MailboxId, NewDevice, Store,
    StoreError, StoreTx,
};
use umbra_wire::proto::{BusinessCard, Verification};
use umbra_wire::suites;

mod commands;
mod runs;

pub(crate) use commands::refused;
pub use commands::{Command, Listing, LoginInfo, Refused, Reply};
pub use runs::{AckCommand, SendCommand};
use runs::{Run, acknowledge, store_sends};

use crate::metrics::inc;
use crate::routing::{HOLD_FOR, HOLD_MAX_ITEMS};
use crate::shared::Shared;

/// Most commands in one transaction.
const MAX_BATCH: usize = 1024;
/// Commands waiting before senders are made to wait.
const QUEUE_DEPTH: usize = 16 * 1024;

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

pub(crate) fn unix_now() -> u64 {
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
            .devices_for_user(username, &[])
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
            let r = tx
                .devices_for_user(&username, &claim)
                .and_then(|d| match d {
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
            suite,
            packages,
            last_resort,
            replace,
            reply,
        } => answer(
            reply,
            tx.upload_key_packages(
                &device_id,
                suite,
                &packages,
                last_resort.as_deref(),
                replace,
            )
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
    let mut left = Vec::with_capacity(suites::ALL.len());
    for suite in suites::ALL {
        left.push((suite, tx.key_packages_left(device_id, suite)?));
    }
    Ok(Some(LoginInfo {
        username: d.username,
        identity_key: d.identity_key,
        mailbox_id: d.mailbox_id,
        key_packages_left: left,
    }))
}

//! Where envelopes go: the mailbox cache and the registry of online devices.
//!
//! - [`MailboxCache`]: mailbox id -> (device id, token hash), filled from
//!   storage at start and updated by the storage thread after each commit, so
//!   `SendEnvelope` never reads SQLite.
//! - [`Registry`]: mailbox id -> the [`Inbox`] of the connection logged in as
//!   that device. The storage thread pushes committed envelopes into it in id
//!   order. An inbox is bounded: when a push does not fit (slow reader), it is
//!   dropped and the inbox is marked overflowed; the connection then re-reads
//!   its mailbox from storage, so nothing is lost and memory stays bounded.
//! - Online-only envelopes (call signalling) never reach storage: the
//!   registry hands them to the device's signalling session if one is open,
//!   else to its main session, else holds them in memory for [`HOLD_FOR`]
//!   (a device reconnecting right away still rings) and then forgets them.
//!   A full inbox drops a live push (there is no stored copy to re-read).
//!   With other nodes, an online-only envelope for a device not connected
//!   here is held in the shared database instead (`umbra-store`'s
//!   `hold_live`), and the connection that hears of it takes it
//!   ([`Inbox::wake_live`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use umbra_store::{DeviceId, MailboxEntry, MailboxId};

/// Routing data for one mailbox.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The device behind the mailbox.
    pub device_id: DeviceId,
    /// SHA-256 of its delivery token.
    pub token_hash: [u8; 32],
}

/// In-memory copy of every mailbox's routing data.
#[derive(Default)]
pub struct MailboxCache {
    map: RwLock<HashMap<MailboxId, Route>>,
}

impl MailboxCache {
    /// Sets (or replaces) one entry.
    pub fn insert(&self, e: &MailboxEntry) {
        if let Ok(mut m) = self.map.write() {
            m.insert(
                e.mailbox_id,
                Route {
                    device_id: e.device_id,
                    token_hash: e.delivery_token_hash,
                },
            );
        }
    }

    /// Replaces the token hash of a mailbox.
    pub fn set_token_hash(&self, mailbox: &MailboxId, hash: [u8; 32]) {
        if let Ok(mut m) = self.map.write()
            && let Some(r) = m.get_mut(mailbox)
        {
            r.token_hash = hash;
        }
    }

    /// Forgets a mailbox (its device was unlinked).
    pub fn remove(&self, mailbox: &MailboxId) {
        if let Ok(mut m) = self.map.write() {
            m.remove(mailbox);
        }
    }

    /// The route of a mailbox.
    pub fn get(&self, mailbox: &MailboxId) -> Option<Route> {
        self.map.read().ok().and_then(|m| m.get(mailbox).copied())
    }
}

/// A committed envelope on its way to an online device.
#[derive(Debug)]
pub struct Push {
    /// Envelope id.
    pub id: u64,
    /// Sealed bytes.
    pub sealed: Vec<u8>,
    /// Arrived without a valid token.
    pub introduction: bool,
    /// Online-only: never stored, not acknowledged (`id` is 0).
    pub live: bool,
}

/// How long an online-only envelope for a device that is not connected is
/// kept in memory before it is dropped.
pub const HOLD_FOR: Duration = Duration::from_secs(20);
/// Most online-only envelopes held for one mailbox.
pub const HOLD_MAX_ITEMS: usize = 64;
/// Most online-only bytes held over all mailboxes.
const HOLD_MAX_BYTES: usize = 16 << 20;

/// Most pushes an inbox holds before it overflows.
const INBOX_MAX_ITEMS: usize = 256;
/// Most sealed bytes an inbox holds before it overflows.
const INBOX_MAX_BYTES: usize = 1 << 20;

#[derive(Default)]
struct InboxState {
    queue: VecDeque<Push>,
    bytes: usize,
    overflowed: bool,
    replaced: bool,
    live: bool,
}

/// What a connection takes out of its inbox.
#[derive(Debug, Default)]
pub struct Taken {
    /// Pushes in id order.
    pub pushes: VecDeque<Push>,
    /// Some pushes were dropped: re-read the mailbox from storage.
    pub overflowed: bool,
    /// Another connection logged in as this device: close.
    pub replaced: bool,
    /// Online-only envelopes wait in the shared database: take them.
    pub live: bool,
}

/// The push queue of one logged-in connection.
#[derive(Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
    notify: Notify,
    /// The number of the device's main session this connection is (0 for a
    /// signalling session): stored envelopes are pushed to the current one
    /// alone.
    epoch: u64,
    /// The highest envelope id the connection delivered (for sweeps).
    cursor: std::sync::atomic::AtomicU64,
}

impl Inbox {
    /// Records the highest envelope id the connection delivered.
    pub fn delivered_up_to(&self, id: u64) {
        self.cursor
            .fetch_max(id, std::sync::atomic::Ordering::Relaxed);
    }

    /// The highest envelope id the connection delivered.
    pub fn cursor(&self) -> u64 {
        self.cursor.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tells the connection that a later login of its device took over.
    pub fn supersede(&self) {
        self.mark_replaced();
    }

    /// Asks the connection to read its mailbox from storage (something may
    /// have been stored that was not pushed to it).
    pub fn wake(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.overflowed = true;
        }
        self.notify.notify_one();
    }

    /// Asks the connection to take the online-only envelopes the shared
    /// database holds for its device.
    pub fn wake_live(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.live = true;
        }
        self.notify.notify_one();
    }

    /// Waits until there is something to take.
    pub async fn wait(&self) {
        loop {
            let mut notified = std::pin::pin!(self.notify.notified());
            // Registered before the check, so a put after it wakes us.
            notified.as_mut().enable();
            if self.has_work() {
                return;
            }
            notified.await;
        }
    }

    fn has_work(&self) -> bool {
        self.state
            .lock()
            .map(|s| !s.queue.is_empty() || s.overflowed || s.replaced || s.live)
            .unwrap_or(true)
    }

    /// Takes everything queued.
    pub fn take(&self) -> Taken {
        let Ok(mut s) = self.state.lock() else {
            return Taken {
                replaced: true,
                ..Taken::default()
            };
        };
        s.bytes = 0;
        Taken {
            pushes: std::mem::take(&mut s.queue),
            overflowed: std::mem::take(&mut s.overflowed),
            replaced: s.replaced,
            live: std::mem::take(&mut s.live),
        }
    }

    /// Queues a push; false when a live push was dropped for lack of room.
    fn put(&self, push: Push) -> bool {
        let mut kept = true;
        if let Ok(mut s) = self.state.lock() {
            if s.queue.len() < INBOX_MAX_ITEMS && s.bytes + push.sealed.len() <= INBOX_MAX_BYTES {
                s.bytes += push.sealed.len();
                s.queue.push_back(push);
            } else if push.live {
                kept = false;
            } else {
                s.overflowed = true;
            }
        }
        self.notify.notify_one();
        kept
    }

    fn mark_replaced(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.replaced = true;
            s.queue = VecDeque::new();
        }
        self.notify.notify_one();
    }
}

/// Online-only envelopes waiting briefly for their device to connect.
#[derive(Default)]
struct Held {
    by_mailbox: HashMap<MailboxId, VecDeque<(Instant, Push)>>,
    bytes: usize,
}

impl Held {
    /// Forgets everything older than [`HOLD_FOR`].
    fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        self.by_mailbox.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= HOLD_FOR)
            {
                if let Some((_, p)) = q.pop_front() {
                    freed += p.sealed.len();
                }
            }
            !q.is_empty()
        });
        self.bytes -= freed;
    }

    fn hold(&mut self, mailbox: &MailboxId, push: Push, now: Instant) -> bool {
        self.expire(now);
        let q = self.by_mailbox.entry(*mailbox).or_default();
        if q.len() >= HOLD_MAX_ITEMS || self.bytes + push.sealed.len() > HOLD_MAX_BYTES {
            return false;
        }
        self.bytes += push.sealed.len();
        q.push_back((now, push));
        true
    }

    fn take(&mut self, mailbox: &MailboxId, now: Instant) -> VecDeque<(Instant, Push)> {
        self.expire(now);
        let q = self.by_mailbox.remove(mailbox).unwrap_or_default();
        self.bytes -= q.iter().map(|(_, p)| p.sealed.len()).sum::<usize>();
        q
    }
}

/// Which of a device's sessions a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Receives stored and (without a signalling session) live envelopes.
    Main,
    /// A call in progress: receives only live envelopes.
    Signalling,
}

#[derive(Default)]
struct Online {
    main: HashMap<MailboxId, Arc<Inbox>>,
    signalling: HashMap<MailboxId, Arc<Inbox>>,
    held: Held,
}

fn live_outcome(kept: bool) -> LiveOutcome {
    if kept {
        LiveOutcome::Delivered
    } else {
        LiveOutcome::Dropped
    }
}

impl Online {
    /// The session that takes the device's online-only envelopes here.
    fn live_target(&self, mailbox: &MailboxId) -> Option<Arc<Inbox>> {
        self.signalling
            .get(mailbox)
            .or_else(|| self.main.get(mailbox))
            .cloned()
    }

    fn sessions(&mut self, session: Session) -> &mut HashMap<MailboxId, Arc<Inbox>> {
        match session {
            Session::Main => &mut self.main,
            Session::Signalling => &mut self.signalling,
        }
    }
}

/// Online devices by mailbox.
#[derive(Default)]
pub struct Registry {
    online: Mutex<Online>,
}

/// What became of an online-only envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveOutcome {
    /// Handed to a connected session.
    Delivered,
    /// The device is not connected: held for [`HOLD_FOR`].
    Held,
    /// No room: dropped.
    Dropped,
}

impl Registry {
    /// Makes a fresh inbox the online `session` of `mailbox` (an older
    /// connection of the same session is told to close). Online-only
    /// envelopes held for the device are handed to the new inbox.
    pub fn register(
        &self,
        mailbox: &MailboxId,
        session: Session,
        epoch: u64,
        now: Instant,
    ) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox {
            epoch,
            ..Inbox::default()
        });
        let (old, held) = match self.online.lock() {
            Ok(mut o) => {
                let old = o.sessions(session).insert(*mailbox, inbox.clone());
                (old, o.held.take(mailbox, now))
            }
            Err(_) => (None, VecDeque::new()),
        };
        if let Some(old) = old {
            old.mark_replaced();
        }
        for (_, push) in held {
            inbox.put(push);
        }
        inbox
    }

    /// Every main session online here, with its mailbox.
    pub fn main_sessions(&self) -> Vec<(MailboxId, Arc<Inbox>)> {
        self.online
            .lock()
            .map(|o| o.main.iter().map(|(m, i)| (*m, i.clone())).collect())
            .unwrap_or_default()
    }

    /// Asks every main session online here to read its mailbox (the bus
    /// came back: hints may have been lost meanwhile).
    pub fn wake_all(&self) {
        for (_, inbox) in self.main_sessions() {
            inbox.wake();
        }
    }

    /// Closes every session of `mailbox` here (its device was unlinked).
    pub fn disconnect(&self, mailbox: &MailboxId) {
        let gone = match self.online.lock() {
            Ok(mut o) => [o.main.remove(mailbox), o.signalling.remove(mailbox)],
            Err(_) => [None, None],
        };
        for inbox in gone.into_iter().flatten() {
            inbox.mark_replaced();
        }
    }

    /// Removes `inbox` if it is still the online `session` for `mailbox`.
    pub fn unregister(&self, mailbox: &MailboxId, session: Session, inbox: &Arc<Inbox>) {
        if let Ok(mut o) = self.online.lock() {
            let map = o.sessions(session);
            if map.get(mailbox).is_some_and(|cur| Arc::ptr_eq(cur, inbox)) {
                map.remove(mailbox);
            }
        }
    }

    /// Hands an online-only envelope to the device's signalling session,
    /// else its main session, else holds it briefly.
    pub fn push_live(
        &self,
        mailbox: &MailboxId,
        sealed: Vec<u8>,
        introduction: bool,
        now: Instant,
    ) -> LiveOutcome {
        let push = Push {
            id: 0,
            sealed,
            introduction,
            live: true,
        };
        let Ok(mut o) = self.online.lock() else {
            return LiveOutcome::Dropped;
        };
        match o.live_target(mailbox) {
            Some(inbox) => {
                drop(o);
                live_outcome(inbox.put(push))
            }
            None if o.held.hold(mailbox, push, now) => LiveOutcome::Held,
            None => LiveOutcome::Dropped,
        }
    }

    /// Hands an online-only envelope to the device's session here (as
    /// [`push_live`](Self::push_live)); when the device is not connected
    /// here, gives the envelope back.
    pub fn push_live_here(
        &self,
        mailbox: &MailboxId,
        sealed: Vec<u8>,
        introduction: bool,
    ) -> Result<LiveOutcome, Vec<u8>> {
        let target = self.online.lock().ok().and_then(|o| o.live_target(mailbox));
        let Some(inbox) = target else {
            return Err(sealed);
        };
        Ok(live_outcome(inbox.put(Push {
            id: 0,
            sealed,
            introduction,
            live: true,
        })))
    }

    /// Whether the device has a signalling session here (it, not the main
    /// session, takes the device's online-only envelopes).
    pub fn has_signalling(&self, mailbox: &MailboxId) -> bool {
        self.online
            .lock()
            .is_ok_and(|o| o.signalling.contains_key(mailbox))
    }

    /// For every device connected here, the session that takes its
    /// online-only envelopes (the signalling one, else the main one).
    pub fn live_targets(&self) -> Vec<(MailboxId, Arc<Inbox>)> {
        let Ok(o) = self.online.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(MailboxId, Arc<Inbox>)> =
            o.signalling.iter().map(|(m, i)| (*m, i.clone())).collect();
        out.extend(
            o.main
                .iter()
                .filter(|(m, _)| !o.signalling.contains_key(*m))
                .map(|(m, i)| (*m, i.clone())),
        );
        out
    }

    /// Hands a committed envelope to the device's main session, if online
    /// here and (when `current` says which) still the current one: a session
    /// superseded by a login on another node gets nothing more.
    pub fn push(&self, mailbox: &MailboxId, push: Push, current: Option<u64>) {
        let inbox = self
            .online
            .lock()
            .ok()
            .and_then(|o| o.main.get(mailbox).cloned());
        if let Some(inbox) = inbox
            && current.is_none_or(|c| c == inbox.epoch)
        {
            inbox.put(push);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: u64) -> Push {
        Push {
            id,
            sealed: vec![0; 4],
            introduction: false,
            live: false,
        }
    }

    #[test]
    fn overflow_drops_and_flags() {
        let reg = Registry::default();
        let now = Instant::now();
        let inbox = reg.register(&[1; 16], Session::Main, 1, now);
        for id in 0..(INBOX_MAX_ITEMS as u64 + 5) {
            reg.push(&[1; 16], stored(id), None);
        }
        let t = inbox.take();
        assert_eq!(t.pushes.len(), INBOX_MAX_ITEMS);
        assert!(t.overflowed);
        assert!(!inbox.take().overflowed);
        let newer = reg.register(&[1; 16], Session::Main, 2, now);
        assert!(inbox.take().replaced);
        reg.unregister(&[1; 16], Session::Main, &inbox);
        reg.push(&[1; 16], stored(1), None);
        assert_eq!(newer.take().pushes.len(), 1);
    }

    #[test]
    fn live_goes_to_signalling_session_then_main() {
        let reg = Registry::default();
        let now = Instant::now();
        let main = reg.register(&[2; 16], Session::Main, 1, now);
        let calls = reg.register(&[2; 16], Session::Signalling, 0, now);
        // A signalling session does not replace the main one.
        assert!(!main.take().replaced);
        let out = reg.push_live(&[2; 16], b"offer".to_vec(), false, now);
        assert_eq!(out, LiveOutcome::Delivered);
        reg.push(&[2; 16], stored(7), None);
        let t = calls.take();
        assert_eq!(t.pushes.len(), 1);
        assert!(t.pushes[0].live && t.pushes[0].id == 0);
        let t = main.take();
        assert_eq!(
            t.pushes.len(),
            1,
            "stored envelopes stay on the main session"
        );
        assert!(!t.pushes[0].live);
        reg.unregister(&[2; 16], Session::Signalling, &calls);
        reg.push_live(&[2; 16], b"answer".to_vec(), false, now);
        assert_eq!(main.take().pushes[0].sealed, b"answer");
    }

    #[test]
    fn live_for_an_offline_device_is_held_briefly_then_forgotten() {
        let reg = Registry::default();
        let t0 = Instant::now();
        assert_eq!(
            reg.push_live(&[3; 16], b"ring".to_vec(), true, t0),
            LiveOutcome::Held
        );
        // Connecting within the hold time still receives it.
        let inbox = reg.register(&[3; 16], Session::Main, 1, t0 + HOLD_FOR / 2);
        let t = inbox.take();
        assert_eq!(t.pushes.len(), 1);
        assert!(t.pushes[0].live && t.pushes[0].introduction);
        reg.unregister(&[3; 16], Session::Main, &inbox);
        // Too late: gone, and the memory is released.
        reg.push_live(&[3; 16], b"ring again".to_vec(), false, t0);
        let inbox = reg.register(&[3; 16], Session::Main, 1, t0 + HOLD_FOR);
        assert!(inbox.take().pushes.is_empty());
        assert_eq!(reg.online.lock().map(|o| o.held.bytes).unwrap_or(1), 0);
    }

    #[test]
    fn holding_is_bounded_and_a_full_inbox_drops_live_pushes() {
        let reg = Registry::default();
        let now = Instant::now();
        for _ in 0..HOLD_MAX_ITEMS {
            assert_eq!(
                reg.push_live(&[4; 16], vec![1; 8], false, now),
                LiveOutcome::Held
            );
        }
        assert_eq!(
            reg.push_live(&[4; 16], vec![1; 8], false, now),
            LiveOutcome::Dropped
        );
        let inbox = reg.register(&[5; 16], Session::Main, 1, now);
        for id in 0..INBOX_MAX_ITEMS as u64 {
            reg.push(&[5; 16], stored(id + 1), None);
        }
        assert_eq!(
            reg.push_live(&[5; 16], vec![1; 8], false, now),
            LiveOutcome::Dropped
        );
        let t = inbox.take();
        assert_eq!(t.pushes.len(), INBOX_MAX_ITEMS);
        assert!(
            !t.overflowed,
            "a dropped live push is not re-read from storage"
        );
    }
}

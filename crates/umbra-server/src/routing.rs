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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

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
}

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
}

/// The push queue of one logged-in connection.
#[derive(Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
    notify: Notify,
}

impl Inbox {
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
            .map(|s| !s.queue.is_empty() || s.overflowed || s.replaced)
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
        }
    }

    fn put(&self, push: Push) {
        if let Ok(mut s) = self.state.lock() {
            if s.queue.len() < INBOX_MAX_ITEMS && s.bytes + push.sealed.len() <= INBOX_MAX_BYTES {
                s.bytes += push.sealed.len();
                s.queue.push_back(push);
            } else {
                s.overflowed = true;
            }
        }
        self.notify.notify_one();
    }

    fn mark_replaced(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.replaced = true;
            s.queue = VecDeque::new();
        }
        self.notify.notify_one();
    }
}

/// Online devices by mailbox.
#[derive(Default)]
pub struct Registry {
    online: Mutex<HashMap<MailboxId, Arc<Inbox>>>,
}

impl Registry {
    /// Makes a fresh inbox the online one for `mailbox` (an older connection
    /// of the same device is told to close).
    pub fn register(&self, mailbox: &MailboxId) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::default());
        let old = self
            .online
            .lock()
            .ok()
            .and_then(|mut m| m.insert(*mailbox, inbox.clone()));
        if let Some(old) = old {
            old.mark_replaced();
        }
        inbox
    }

    /// Removes `inbox` if it is still the online one for `mailbox`.
    pub fn unregister(&self, mailbox: &MailboxId, inbox: &Arc<Inbox>) {
        if let Ok(mut m) = self.online.lock()
            && m.get(mailbox).is_some_and(|cur| Arc::ptr_eq(cur, inbox))
        {
            m.remove(mailbox);
        }
    }

    /// Hands a committed envelope to the online device, if any.
    pub fn push(&self, mailbox: &MailboxId, push: Push) {
        let inbox = self
            .online
            .lock()
            .ok()
            .and_then(|m| m.get(mailbox).cloned());
        if let Some(inbox) = inbox {
            inbox.put(push);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_and_flags() {
        let reg = Registry::default();
        let inbox = reg.register(&[1; 16]);
        for id in 0..(INBOX_MAX_ITEMS as u64 + 5) {
            reg.push(
                &[1; 16],
                Push {
                    id,
                    sealed: vec![0; 4],
                    introduction: false,
                },
            );
        }
        let t = inbox.take();
        assert_eq!(t.pushes.len(), INBOX_MAX_ITEMS);
        assert!(t.overflowed);
        assert!(!inbox.take().overflowed);
        let newer = reg.register(&[1; 16]);
        assert!(inbox.take().replaced);
        reg.unregister(&[1; 16], &inbox);
        reg.push(
            &[1; 16],
            Push {
                id: 1,
                sealed: vec![],
                introduction: false,
            },
        );
        assert_eq!(newer.take().pushes.len(), 1);
    }
}

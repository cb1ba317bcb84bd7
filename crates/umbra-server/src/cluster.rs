//! Several nodes sharing one PostgreSQL database: wake-ups over NATS.
//!
//! A node commits an envelope, then (never before) publishes a hint on the
//! subject of the recipient's mailbox; whichever node holds that device's
//! connection reads the mailbox from the database. A subject is derived from
//! the mailbox id by HMAC-SHA256 under the cluster's key (`cluster_key_file`,
//! the same on every node), so the bus never carries a mailbox id, an
//! envelope or a username: only `umbra.box.<32 hex digits>` and a payload of
//! one word. Three words exist: `w` (something was stored: read the
//! mailbox), `l` (an online-only envelope is held for the device in the
//! database: its signalling session, else its main one, takes it) and
//! `s <n>` (the device's main session `n` started on some node: an older
//! session anywhere closes).
//!
//! Hints can be lost (NATS down, a node restarting); mail cannot: a
//! connection reads its mailbox when it logs in, every connection of a node
//! reads again when the node's NATS connection comes back, and a sweep asks
//! the database every few seconds which of the node's connected mailboxes
//! hold envelopes past what was delivered, or online-only ones.

use std::sync::Arc;

use async_nats::Subscriber;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use umbra_store::MailboxId;

use crate::metrics::{Metrics, inc};

/// What goes out on the bus.
#[derive(Debug)]
enum Out {
    /// Envelopes were committed for these mailboxes.
    Stored(Vec<MailboxId>),
    /// Online-only envelopes are held for these mailboxes.
    Live(Vec<MailboxId>),
    /// A main session started for this mailbox's device.
    Session(MailboxId, u64),
}

/// What a connection hears on its mailbox's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Something was stored: read the mailbox.
    Stored,
    /// An online-only envelope is held: take it.
    Live,
    /// Main session `n` of the device started somewhere.
    Session(u64),
}

/// Reads a payload; `None` for anything else.
pub fn parse(payload: &[u8]) -> Option<Heard> {
    match payload {
        b"w" => Some(Heard::Stored),
        b"l" => Some(Heard::Live),
        _ => std::str::from_utf8(payload)
            .ok()?
            .strip_prefix("s ")?
            .parse()
            .ok()
            .map(Heard::Session),
    }
}

/// The subject of a mailbox under the cluster key.
pub fn subject(key: &[u8; 32], mailbox: &MailboxId) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"umbra-cluster-subject-v1");
    m.update(mailbox);
    let tag = m.finalize().into_bytes();
    format!("umbra.box.{}", hex::encode(&tag[..16]))
}

/// The node's connection to the bus.
pub struct Bus {
    client: async_nats::Client,
    key: [u8; 32],
    out: mpsc::UnboundedSender<Out>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects to NATS at `url`; `reconnected` runs each time the
    /// connection comes back after a loss.
    pub async fn connect(
        url: &str,
        key: [u8; 32],
        metrics: Arc<Metrics>,
        reconnected: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<Arc<Self>> {
        let reconnected = Arc::new(reconnected);
        let m = metrics.clone();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let (reconnected, m) = (reconnected.clone(), m.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            inc(&m.bus_reconnects);
                            reconnected();
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(
                                "lost the NATS connection; sweeps carry the mail meanwhile"
                            );
                        }
                        _ => {}
                    }
                }
            })
            .connect(url)
            .await?;
        let (out, mut rx) = mpsc::unbounded_channel::<Out>();
        let publisher = client.clone();
        tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                let (word, mailboxes) = match o {
                    Out::Stored(m) => ("w", m),
                    Out::Live(m) => ("l", m),
                    Out::Session(m, n) => {
                        let sent = publisher
                            .publish(subject(&key, &m), format!("s {n}").into())
                            .await
                            .is_ok();
                        if !sent {
                            inc(&metrics.bus_publish_failures);
                        }
                        continue;
                    }
                };
                let mut sent = true;
                for m in mailboxes {
                    sent &= publisher
                        .publish(subject(&key, &m), word.into())
                        .await
                        .is_ok();
                    inc(&metrics.bus_hints);
                }
                if !sent {
                    inc(&metrics.bus_publish_failures);
                }
            }
        });
        Ok(Arc::new(Self { client, key, out }))
    }

    /// Says that envelopes were committed for `mailboxes` (from any thread;
    /// never waits).
    pub fn stored(&self, mut mailboxes: Vec<MailboxId>) {
        mailboxes.sort_unstable();
        mailboxes.dedup();
        if !mailboxes.is_empty() {
            let _ = self.out.send(Out::Stored(mailboxes));
        }
    }

    /// Says that online-only envelopes are held for `mailboxes`.
    pub fn live(&self, mut mailboxes: Vec<MailboxId>) {
        mailboxes.sort_unstable();
        mailboxes.dedup();
        if !mailboxes.is_empty() {
            let _ = self.out.send(Out::Live(mailboxes));
        }
    }

    /// Says that main session `n` of `mailbox`'s device started here.
    pub fn session(&self, mailbox: MailboxId, n: u64) {
        let _ = self.out.send(Out::Session(mailbox, n));
    }

    /// Hears what is said of `mailbox`.
    pub async fn listen(&self, mailbox: &MailboxId) -> anyhow::Result<Subscriber> {
        Ok(self.client.subscribe(subject(&self.key, mailbox)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_hide_the_mailbox_and_differ_by_key() {
        let m = [7u8; 16];
        let a = subject(&[1; 32], &m);
        assert!(a.starts_with("umbra.box."));
        assert!(!a.contains(&hex::encode(m)));
        assert_ne!(a, subject(&[2; 32], &m));
        assert_ne!(a, subject(&[1; 32], &[8; 16]));
        assert_eq!(a, subject(&[1; 32], &m));
    }

    #[test]
    fn payloads() {
        assert_eq!(parse(b"w"), Some(Heard::Stored));
        assert_eq!(parse(b"l"), Some(Heard::Live));
        assert_eq!(parse(b"s 42"), Some(Heard::Session(42)));
        assert_eq!(parse(b"s x"), None);
        assert_eq!(parse(b"hello"), None);
    }
}

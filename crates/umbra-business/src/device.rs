//! A business's device in the host: the tasks that own its profile.
//!
//! Three [`Client`]s on the one profile (SQLite serialises their writes, and
//! MLS state is reloaded inside each transaction):
//! - the *sender* takes the API's messages in batches, one transaction each
//!   (so a batch costs one commit, and every message in it is durable
//!   before the API answers), opens conversations with new customers, and
//!   sends the outbox after each batch, when the receiver has queued
//!   something (the receipts it owes), and every quarter second while
//!   anything waits. It alone sends, so nothing goes out twice from here;
//! - the *receiver* runs `listen`: each envelope is applied (and journalled)
//!   in one transaction and acknowledged only after it;
//! - the *reader* answers the API's reads.
//!
//! The webhook task ([`crate::webhooks`]) reads the journal on a connection
//! of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use umbra_client::app::{AppConversation, AppMessage, Outgoing, Posted, To};
use umbra_client::{Client, ClientError};

use crate::metrics::Metrics;

/// A message the API wants sent, and where the answer goes.
pub struct SendJob {
    /// The message.
    pub item: Outgoing,
    /// Its outcome, once durable (or refused).
    pub reply: oneshot::Sender<Result<Posted, ClientError>>,
}

/// A read the API wants answered.
pub enum ReadJob {
    /// Conversations, oldest first.
    Conversations {
        /// Most to list.
        limit: usize,
        /// After this conversation id.
        after: Option<Vec<u8>>,
        /// The answer.
        reply: oneshot::Sender<Result<Vec<AppConversation>, ClientError>>,
    },
    /// A conversation's texts, newest first.
    Messages {
        /// The conversation id.
        conversation: Vec<u8>,
        /// Most to list.
        limit: usize,
        /// Before this place.
        before: Option<i64>,
        /// The answer (`None`: no such conversation).
        reply: oneshot::Sender<Result<Option<Vec<AppMessage>>, ClientError>>,
    },
    /// One message.
    Message {
        /// Its id.
        id: Vec<u8>,
        /// The answer.
        reply: oneshot::Sender<Result<Option<AppMessage>, ClientError>>,
    },
    /// The business has read a conversation: read receipts go back.
    MarkRead {
        /// The conversation id.
        conversation: Vec<u8>,
        /// Whether it exists.
        reply: oneshot::Sender<Result<bool, ClientError>>,
    },
}

/// What the API knows of one business's device.
pub struct Device {
    /// The business account.
    pub username: String,
    /// Its display name, from its card.
    pub name: String,
    /// Whether the operator's verification is on its card now.
    pub verified: bool,
    /// The host that runs it, when hosted.
    pub host: Option<String>,
    /// Where messages to send go.
    pub send: mpsc::Sender<SendJob>,
    /// Where reads go.
    pub read: mpsc::Sender<ReadJob>,
}

/// How long the sender waits between looks at the outbox while something
/// waits in it.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often the business's card (its verification) is fetched afresh.
const CARD_EVERY: Duration = Duration::from_secs(3600);

/// The sender: batches, conversations with new customers, the outbox.
pub async fn sender(
    mut client: Client,
    mut jobs: mpsc::Receiver<SendJob>,
    kick: Arc<Notify>,
    journal: Arc<Notify>,
    max_batch: usize,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut card_at = Instant::now();
    let mut unreachable_logged = false;
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            job = jobs.recv() => match job {
                Some(j) => batch.push(j),
                None => break,
            },
            _ = kick.notified() => {}
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            process(&mut client, batch, &metrics).await;
        }
        match client.outbox_pending() {
            Ok(0) => {}
            Ok(_) => match client.flush_outbox().await {
                Ok(_) => {
                    unreachable_logged = false;
                    // Statuses (`sent`) were journalled: webhooks go now.
                    journal.notify_one();
                }
                Err(e @ (ClientError::Unreachable { .. } | ClientError::Net(_))) => {
                    if !unreachable_logged {
                        tracing::warn!(error = %e, "cannot reach the messaging server; messages stay queued");
                        unreachable_logged = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sending the outbox failed; retrying"),
            },
            Err(e) => tracing::error!(error = %e, "reading the outbox failed"),
        }
        if card_at.elapsed() >= CARD_EVERY {
            card_at = Instant::now();
            if let Err(e) = client.keep_card_fresh().await {
                tracing::warn!(error = %e, "fetching the business card afresh failed");
            }
        }
    }
    // What is queued goes now if it can (bounded), else with the next start.
    let _ = tokio::time::timeout(Duration::from_secs(5), client.flush_outbox()).await;
}

/// One batch: repeats answered from their first answer, conversations
/// opened for customers new to the business, then every message committed
/// together.
async fn process(client: &mut Client, batch: Vec<SendJob>, metrics: &Metrics) {
    let mut ready = Vec::with_capacity(batch.len());
    for job in batch {
        if let Some(key) = &job.item.idempotency_key {
            match client.replayed(key, &job.item.to, &job.item.text) {
                Ok(None) => {}
                Ok(Some(first)) => {
                    let _ = job.reply.send(Ok(first));
                    continue;
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            }
        }
        if let To::User(u) = &job.item.to {
            let has = client.conversation_with(u);
            if !matches!(has, Ok(Some(_))) {
                match client.open_conversation(u).await {
                    Ok(_) => metrics.conversations_opened.inc(),
                    Err(e) => {
                        let _ = job.reply.send(Err(e));
                        continue;
                    }
                }
            }
        }
        ready.push(job);
    }
    if ready.is_empty() {
        return;
    }
    let items: Vec<Outgoing> = ready.iter().map(|j| j.item.clone()).collect();
    metrics.batches.inc();
    match client.post_batch(&items) {
        Ok(results) => {
            for (job, r) in ready.into_iter().zip(results) {
                if matches!(&r, Ok(p) if !p.replayed) {
                    metrics.messages_accepted.inc();
                }
                let _ = job.reply.send(r);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "a batch of messages could not be saved");
            for job in ready {
                let _ = job
                    .reply
                    .send(Err(ClientError::Protocol(format!("saving failed: {e}"))));
            }
        }
    }
}

/// The receiver: `listen` until shutdown, restarted after an error that is
/// not the network's (which `listen` rides out itself).
pub async fn receiver(
    mut client: Client,
    kick: Arc<Notify>,
    journal: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    client.flushes_in_listen(false);
    loop {
        let mut stop = shutdown.clone();
        let result = client
            .listen(
                |_| {
                    metrics.events_received.inc();
                    kick.notify_one();
                    journal.notify_one();
                },
                async move {
                    let _ = stop.changed().await;
                },
            )
            .await;
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, "receiving stopped; starting again in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// The reader: answers reads until the API goes.
pub async fn reader(client: Client, mut jobs: mpsc::Receiver<ReadJob>, kick: Arc<Notify>) {
    while let Some(job) = jobs.recv().await {
        match job {
            ReadJob::Conversations {
                limit,
                after,
                reply,
            } => {
                let _ = reply.send(client.app_conversations(limit, after.as_deref()));
            }
            ReadJob::Messages {
                conversation,
                limit,
                before,
                reply,
            } => {
                let r = match client.has_conversation(&conversation) {
                    Ok(false) => Ok(None),
                    Ok(true) => client.app_messages(&conversation, limit, before).map(Some),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            ReadJob::Message { id, reply } => {
                let _ = reply.send(client.app_message(&id));
            }
            ReadJob::MarkRead {
                conversation,
                reply,
            } => {
                let r = match client.has_conversation(&conversation) {
                    Ok(true) => client.app_mark_read(&conversation).map(|()| true),
                    other => other,
                };
                if matches!(r, Ok(true)) {
                    kick.notify_one();
                }
                let _ = reply.send(r);
            }
        }
    }
}

/// The tasks of one device, to wait for at shutdown.
pub struct Tasks {
    /// The sender, receiver, reader and webhook tasks.
    pub handles: Vec<JoinHandle<()>>,
}

/// How the host signs a business's hosting statement when it runs it for
/// that business.
pub struct HostKey {
    /// The host's name.
    pub name: String,
    /// Its Ed25519 key.
    pub key: ed25519_dalek::SigningKey,
}

/// Whether the statement `current` already says what `host` would.
fn says(current: Option<&[u8]>, host: Option<&HostKey>) -> bool {
    let Some(s) = current.and_then(|c| umbra_wire::hosting::statement_of(c).ok()) else {
        return false;
    };
    match host {
        None => s.host_name.is_empty() && s.host_key.is_empty(),
        Some(h) => s.host_name == h.name && s.host_key == h.key.verifying_key().to_bytes(),
    }
}

/// Makes this host's hosting statement the business's, if it is not yet:
/// every customer is told before anything more is sent.
pub async fn claim_hosting(
    client: &mut Client,
    host: Option<&HostKey>,
) -> Result<bool, ClientError> {
    if says(client.own_hosting().as_deref(), host) {
        return Ok(false);
    }
    let statement = match host {
        None => client.make_hosting(None)?,
        Some(h) => {
            use ed25519_dalek::Signer;
            let sign = |m: &[u8]| h.key.sign(m).to_bytes().to_vec();
            client.make_hosting(Some(&umbra_client::business_account::HostSigner {
                name: &h.name,
                key: h.key.verifying_key().to_bytes(),
                sign: &sign,
            }))?
        }
    };
    client.set_hosting(statement).await?;
    Ok(true)
}

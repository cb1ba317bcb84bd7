//! Sends and acknowledgements applied together: the commands a busy server
//! gets most of, gathered between two other commands of a batch and handed
//! to the store in one call each (one statement on PostgreSQL, where every
//! statement costs a round trip, instead of one or two per command).
//!
//! Order: within a run, acknowledgements go before sends, and each kind
//! keeps the order it came in (a connection's sends keep theirs, so its ids
//! follow its order). Nothing else moves: a run ends at any other command,
//! so a login, a fetch or a token change stays where it was relative to
//! every send and acknowledgement. An acknowledgement only deletes envelopes
//! stored by earlier batches (a client acknowledges what it was given), so
//! moving it before a send changes one thing: the room it frees in a full
//! mailbox is there for that send, as it would have been had the
//! acknowledgement arrived a moment sooner.

use std::collections::HashMap;

use umbra_store::{Day, EnvelopeAck, MailboxId, NewEnvelope, StoreTx};

use super::{Command, Finish, Refused, Reply, refused, spend_introduction};
use crate::metrics::inc;
use crate::routing::Push;
use crate::shared::Shared;

/// An envelope to store ([`Command::Send`]).
#[derive(Debug)]
pub struct SendCommand {
    /// Target mailbox.
    pub mailbox_id: MailboxId,
    /// Sealed bytes.
    pub sealed: Vec<u8>,
    /// Sent without a valid token.
    pub introduction: bool,
    /// For an introduction: the mailbox's budget, an hour.
    pub per_hour: u32,
    /// Answer once committed.
    pub reply: Reply<()>,
}

/// Envelopes a device acknowledges ([`Command::Ack`]), to delete.
#[derive(Debug)]
pub struct AckCommand {
    /// The logged-in device's mailbox.
    pub mailbox_id: MailboxId,
    /// The connection's main session (refused once superseded).
    pub session: u64,
    /// Envelope ids.
    pub ids: Vec<u64>,
    /// Answer: how many were deleted.
    pub reply: Reply<u32>,
}

/// The sends and acknowledgements gathered since the last other command.
#[derive(Default)]
pub(super) struct Run {
    sends: Vec<SendCommand>,
    acks: Vec<AckCommand>,
}

impl Run {
    /// Keeps a send or an acknowledgement; gives any other command back
    /// (the caller applies the run before it).
    pub(super) fn take(&mut self, cmd: Command) -> Option<Command> {
        match cmd {
            Command::Send(s) => self.sends.push(s),
            Command::Ack(a) => self.acks.push(a),
            other => return Some(other),
        }
        None
    }

    /// Applies what was gathered, acknowledgements first, and empties the run.
    pub(super) fn apply(
        &mut self,
        tx: &mut dyn StoreTx,
        day: Day,
        now: u64,
        sessions: &HashMap<MailboxId, u64>,
    ) -> Vec<Finish> {
        let mut finishes = acknowledge(tx, std::mem::take(&mut self.acks));
        finishes.extend(store_sends(
            tx,
            std::mem::take(&mut self.sends),
            day,
            now,
            sessions,
        ));
        finishes
    }
}

/// Applies acknowledgements in order, in one call to the store: a session
/// that was superseded deletes nothing and is told so.
pub(super) fn acknowledge(tx: &mut dyn StoreTx, acks: Vec<AckCommand>) -> Vec<Finish> {
    if acks.is_empty() {
        return Vec::new();
    }
    let asked: Vec<EnvelopeAck<'_>> = acks
        .iter()
        .map(|a| EnvelopeAck {
            mailbox_id: &a.mailbox_id,
            session: a.session,
            ids: &a.ids,
        })
        .collect();
    let outcomes: Vec<Result<u32, Refused>> = match tx.acknowledge(&asked) {
        Ok(all) => all
            .into_iter()
            .map(|r| match r {
                Ok(Some(n)) => Ok(n),
                Ok(None) => Err(Refused::Superseded),
                Err(e) => Err(refused(e)),
            })
            .collect(),
        Err(e) => vec![Err(refused(e)); asked.len()],
    };
    drop(asked);
    acks.into_iter()
        .zip(outcomes)
        .map(|(ack, r)| ack_finish(ack.reply, r))
        .collect()
}

/// After the commit: the deleted envelopes counted, the device answered.
fn ack_finish(reply: Reply<u32>, r: Result<u32, Refused>) -> Finish {
    Box::new(move |ok, shared: &Shared| {
        let r = if ok { r } else { Err(Refused::Unavailable) };
        if let Ok(n) = r {
            let m = &shared.metrics;
            m.envelopes_acked
                .fetch_add(u64::from(n), std::sync::atomic::Ordering::Relaxed);
            m.envelopes_stored
                .fetch_sub(i64::from(n), std::sync::atomic::Ordering::Relaxed);
        }
        let _ = reply.send(r);
    })
}

/// Stores sends in order, in one call to the store: each first spends its
/// introduction, if it is one, and only those that could are stored.
pub(super) fn store_sends(
    tx: &mut dyn StoreTx,
    sends: Vec<SendCommand>,
    day: Day,
    now: u64,
    sessions: &HashMap<MailboxId, u64>,
) -> Vec<Finish> {
    if sends.is_empty() {
        return Vec::new();
    }
    let budgets: Vec<Result<(), Refused>> = sends
        .iter()
        .map(|s| spend_introduction(tx, s.introduction, &s.mailbox_id, s.per_hour, now))
        .collect();
    let envelopes: Vec<NewEnvelope<'_>> = sends
        .iter()
        .zip(&budgets)
        .filter(|(_, b)| b.is_ok())
        .map(|(s, _)| NewEnvelope {
            mailbox_id: &s.mailbox_id,
            sealed: &s.sealed,
            introduction: s.introduction,
        })
        .collect();
    let stored: Vec<Result<u64, Refused>> = match tx.store_envelopes(&envelopes, day) {
        Ok(outcomes) => outcomes.into_iter().map(|r| r.map_err(refused)).collect(),
        Err(e) => vec![Err(refused(e)); envelopes.len()],
    };
    drop(envelopes);
    let mut stored = stored.into_iter();
    sends
        .into_iter()
        .zip(budgets)
        .map(|(send, budget)| {
            let r = budget.and_then(|()| stored.next().unwrap_or(Err(Refused::Unavailable)));
            let current = sessions.get(&send.mailbox_id).copied();
            send_finish(send, r, current)
        })
        .collect()
}

/// After the commit: a stored envelope is counted and pushed to the
/// mailbox's current session, and the sender answered.
fn send_finish(send: SendCommand, r: Result<u64, Refused>, current: Option<u64>) -> Finish {
    let SendCommand {
        mailbox_id,
        sealed,
        introduction,
        reply,
        ..
    } = send;
    Box::new(move |ok, shared: &Shared| {
        let r = if ok { r } else { Err(Refused::Unavailable) };
        if let Ok(id) = r {
            let m = &shared.metrics;
            inc(&m.envelopes_accepted);
            if introduction {
                inc(&m.introductions);
            }
            m.envelopes_stored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.registry.push(
                &mailbox_id,
                Push {
                    id,
                    sealed,
                    introduction,
                    live: false,
                },
                current,
            );
        }
        let _ = reply.send(r.map(|_| ()));
    })
}

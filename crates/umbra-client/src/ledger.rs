//! Group changes through the server's epoch ledger, so that a group never
//! forks.
//!
//! The server knows no groups, so two members who change one group at the
//! same moment would each move it to a different next epoch and stop
//! understanding each other. Instead every commit claims its epoch first:
//! the member makes the commit and keeps it pending (openmls's pending
//! commit, a row in `claims`, and its envelopes in the outbox `held` by the
//! epoch's tag, which `flush` does not send), then asks the server to take
//! the tag for it ([`ClaimEpoch`]). The tag is an MLS exporter value of the
//! epoch: every member of the epoch derives the same 32 bytes, the server
//! cannot tell which group, or which epoch, it names, nor link two of one
//! group. Won: the commit is merged and its envelopes released, in one
//! transaction. Lost: the commit and its envelopes are discarded, and the
//! winner the server handed back is applied as if it had arrived; the change
//! is then made again on top of it (or found already made). A crash anywhere
//! between leaves the claim in `claims`; the next command asks again (the
//! same commit wins again, or loses to the one that did) before it sends
//! anything. A member who never got the winner's envelopes (its author died
//! before sending them) finds it the same way ([`Client::catch_up`]).

use openmls::prelude::MlsGroup;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use umbra_crypto::mls;
use umbra_wire::proto::{ClaimEpoch, FetchEpoch, client_frame, server_frame};

use crate::client::{Client, required_group};
use crate::conn::ServerConn;
use crate::mls_store::Provider;
use crate::model::Event;
use crate::outbox::{self, Recipient};
use crate::{ClientError, inbox};

/// The exporter label of an epoch's tag.
const TAG_LABEL: &str = "umbra epoch tag";
/// How many times a change is made again after losing its epoch.
const ATTEMPTS: usize = 16;

/// The tag that names the group's current epoch at the server.
pub(crate) fn epoch_tag(
    provider: &Provider<'_>,
    group: &MlsGroup,
) -> Result<[u8; 32], ClientError> {
    let tag = mls::export_secret(provider, group, TAG_LABEL, b"", 32)?;
    tag.try_into()
        .map_err(|_| ClientError::Protocol("exporter gave a short tag".into()))
}

/// A commit made and not yet merged, with whom its messages go to.
pub(crate) struct Staged {
    /// The commit and (for additions) the welcome.
    pub commit: mls::Commit,
    /// The members who get the commit.
    pub members: Vec<Recipient>,
    /// The members added, who get the welcome.
    pub added: Vec<Recipient>,
}

/// Keeps `staged` (made in `conn`'s transaction on the group's epoch named
/// by `tag`) until its epoch is claimed: its envelopes are queued but held.
pub(crate) fn hold(
    conn: &Connection,
    group_id: &[u8],
    tag: &[u8; 32],
    staged: &Staged,
) -> Result<(), ClientError> {
    conn.execute(
        "INSERT INTO claims (tag, group_id, commit_msg) VALUES (?1, ?2, ?3)",
        params![&tag[..], group_id, staged.commit.commit],
    )?;
    outbox::enqueue_held(conn, &staged.commit.commit, &staged.members, tag)?;
    if let Some(w) = &staged.commit.welcome {
        outbox::enqueue_held(conn, w, &staged.added, tag)?;
    }
    Ok(())
}

/// Whether any claim waits to be settled.
pub(crate) fn any_waiting(conn: &Connection) -> Result<bool, ClientError> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM claims)", [], |r| r.get(0))?)
}

/// What the server said of a claim.
enum Verdict {
    Won,
    Lost(Vec<u8>),
}

async fn claim(
    server: &mut ServerConn,
    tag: &[u8; 32],
    commit: &[u8],
) -> Result<Verdict, ClientError> {
    let answer = server
        .call(client_frame::Body::ClaimEpoch(ClaimEpoch {
            tag: tag.to_vec(),
            commit: commit.to_vec(),
        }))
        .await?;
    match answer {
        server_frame::Body::Epoch(e) if e.won => Ok(Verdict::Won),
        server_frame::Body::Epoch(e) if !e.commit.is_empty() => Ok(Verdict::Lost(e.commit)),
        _ => Err(ClientError::Protocol(
            "the server answered an epoch claim with something else".into(),
        )),
    }
}

impl Client {
    /// Asks the server about every claim left waiting (by a crash, or by
    /// message processing that staged a commit) and settles each; returns
    /// what applying the winners of lost ones showed.
    pub(crate) async fn settle_claims(
        &self,
        server: &mut ServerConn,
    ) -> Result<Vec<Event>, ClientError> {
        let waiting: Vec<(Vec<u8>, Vec<u8>)> = {
            let conn = self.profile.conn();
            let mut stmt = conn.prepare("SELECT tag, commit_msg FROM claims ORDER BY rowid")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut events = Vec::new();
        for (tag, commit) in waiting {
            let tag: [u8; 32] = tag
                .try_into()
                .map_err(|_| ClientError::Protocol("a stored epoch tag is not 32 bytes".into()))?;
            match claim(server, &tag, &commit).await? {
                Verdict::Won => self.settle_won(&tag, |_, _, _| Ok(()))?,
                Verdict::Lost(winner) => events.extend(self.settle_lost(&tag, &winner)?),
            }
        }
        Ok(events)
    }

    /// Makes the change `stage` stages in the group, through the ledger:
    /// `stage` runs in a transaction on the group's current epoch and
    /// returns the commit (or `None`: nothing to do, e.g. a concurrent
    /// change already made it); `then` runs in the transaction that merges
    /// it, on the new epoch. Returns whether a commit was made, and what
    /// applying others' winning commits showed.
    pub(crate) async fn commit_through_ledger(
        &self,
        group_id: &[u8],
        mut stage: impl FnMut(
            &Connection,
            &Provider<'_>,
            &mut MlsGroup,
        ) -> Result<Option<Staged>, ClientError>,
        mut then: impl FnMut(&Connection, &Provider<'_>, &mut MlsGroup) -> Result<(), ClientError>,
    ) -> Result<(bool, Vec<Event>), ClientError> {
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        outbox::remember_limit(self.profile.conn(), server.hello())?;
        let mut events = self.settle_claims(&mut server).await?;
        for _ in 0..ATTEMPTS {
            let (tag, commit) = {
                let tx = self.profile.write()?;
                let provider = Provider::new(&self.crypto, &tx);
                let mut group = required_group(&provider, group_id)?;
                let tag = epoch_tag(&provider, &group)?;
                let Some(staged) = stage(&tx, &provider, &mut group)? else {
                    server.close().await;
                    return Ok((false, events));
                };
                hold(&tx, group_id, &tag, &staged)?;
                tx.commit()?;
                (tag, staged.commit.commit)
            };
            match claim(&mut server, &tag, &commit).await? {
                Verdict::Won => {
                    self.settle_won(&tag, &mut then)?;
                    server.close().await;
                    return Ok((true, events));
                }
                Verdict::Lost(winner) => events.extend(self.settle_lost(&tag, &winner)?),
            }
        }
        server.close().await;
        Err(ClientError::Protocol(format!(
            "the group changed {ATTEMPTS} times while this change was being made: try again"
        )))
    }

    /// Applies the commit that won the group's current epoch if the server
    /// has one we never received (its author may have died before sending
    /// it); returns what it showed. Used when messages arrive from an epoch
    /// this device has not reached.
    pub(crate) async fn catch_up(
        &self,
        server: &mut ServerConn,
        group_id: &[u8],
    ) -> Result<Vec<Event>, ClientError> {
        let tag = {
            let conn = self.profile.conn();
            let provider = Provider::new(&self.crypto, conn);
            let Some(group) = mls::load_group(&provider, group_id)? else {
                return Ok(Vec::new());
            };
            epoch_tag(&provider, &group)?
        };
        let answer = server
            .call(client_frame::Body::FetchEpoch(FetchEpoch {
                tag: tag.to_vec(),
            }))
            .await?;
        match answer {
            server_frame::Body::Epoch(e) if !e.commit.is_empty() => {
                inbox::apply_commit(&self.profile, &self.device(), &e.commit)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Our claim won: the commit is merged, its envelopes released, and
    /// `then` runs on the new epoch, in one transaction.
    fn settle_won(
        &self,
        tag: &[u8; 32],
        mut then: impl FnMut(&Connection, &Provider<'_>, &mut MlsGroup) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        self.settle(
            tag,
            |tx, provider, group| {
                mls::merge_own_commit(provider, group)?;
                then(tx, provider, group)
            },
            "UPDATE outbox SET held = NULL WHERE held = ?1",
        )
    }

    /// Our claim lost to `winner`: our commit and its envelopes are
    /// discarded, and the winner is applied.
    fn settle_lost(&self, tag: &[u8; 32], winner: &[u8]) -> Result<Vec<Event>, ClientError> {
        self.settle(
            tag,
            |_, provider, group| Ok(mls::discard_own_commit(provider, group)?),
            "DELETE FROM outbox WHERE held = ?1",
        )?;
        inbox::apply_commit(&self.profile, &self.device(), winner)
    }

    /// In one transaction: `pending` on the claim's group if our commit is
    /// still pending there (a commit that reached us otherwise has replaced
    /// it), `envelopes` (a statement on the envelopes held by `tag`), and
    /// the claim forgotten.
    fn settle(
        &self,
        tag: &[u8; 32],
        pending: impl FnOnce(&Connection, &Provider<'_>, &mut MlsGroup) -> Result<(), ClientError>,
        envelopes: &str,
    ) -> Result<(), ClientError> {
        let tx = self.profile.write()?;
        let group_id: Option<Vec<u8>> = tx
            .query_row(
                "SELECT group_id FROM claims WHERE tag = ?1",
                [&tag[..]],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(group_id) = group_id {
            let provider = Provider::new(&self.crypto, &tx);
            if let Some(mut group) = mls::load_group(&provider, &group_id)?
                && mls::has_own_commit(&group)
            {
                pending(&tx, &provider, &mut group)?;
            }
        }
        tx.execute(envelopes, [&tag[..]])?;
        tx.execute("DELETE FROM claims WHERE tag = ?1", [&tag[..]])?;
        tx.commit()?;
        Ok(())
    }
}

/// The hash under which an applied MLS message is remembered (so the
/// winner, applied from the ledger, is not applied again when its envelope
/// arrives, nor the other way round).
pub(crate) fn message_hash(mls_message: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"umbra mls message");
    h.update(mls_message);
    h.finalize().to_vec()
}

//! Group call signalling as application messages of the group conversation
//! (`GroupCallSignal` in `e2e.proto`): one signal encrypted once for the
//! devices it is for, sent online-only on an anonymous connection (the
//! server stores none of it and cannot tell a call from a message), and
//! what receiving one yields: a ring for a member not in the call (unless
//! "who can call you" is `nobody`), and the signal itself for a call in
//! progress.

use rusqlite::Connection;
use umbra_crypto::mls::Member;
use umbra_wire::e2e::{GroupCallSignal, content, group_call_signal::Body};

use super::records;
use super::signal::send_online;
use crate::ClientError;
use crate::client::Client;
use crate::conn::ServerConn;
use crate::contacts::group_recipients;
use crate::mls_store::Provider;
use crate::model::{CallEvent, Event};
use crate::outbox::Recipient;

/// A group call signal from another member of a group conversation.
#[derive(Debug, Clone)]
pub struct GroupSignal {
    /// The conversation's name.
    pub conversation: String,
    /// The conversation.
    pub group_id: Vec<u8>,
    /// Who sent it, with the identity key the conversation authenticated.
    pub from: Member,
    /// The call (empty on a probe).
    pub call_id: Vec<u8>,
    /// What it says.
    pub body: Body,
}

/// A group call signal, encrypted, and the devices it goes to.
pub(crate) struct GroupOutgoing {
    mls: Vec<u8>,
    to: Vec<Recipient>,
}

impl Client {
    /// Encrypts `body` for the call `call_id` in the group conversation
    /// `group_id`, for the members named in `only` (`None`: every member).
    pub(crate) fn encrypt_group_signal(
        &self,
        group_id: &[u8],
        call_id: &[u8],
        body: Body,
        only: Option<&[String]>,
    ) -> Result<GroupOutgoing, ClientError> {
        let signal = GroupCallSignal {
            call_id: call_id.to_vec(),
            body: Some(body),
        };
        let content = self.content(content::Body::GroupCall(signal));
        let tx = self.profile.write()?;
        let provider = Provider::new(&self.crypto, &tx);
        let (group, mls) = self.encrypt_content(&provider, group_id, &content)?;
        let mut to = group_recipients(&tx, &group, &self.identity.identity_key())?;
        if let Some(only) = only {
            to.retain(|r| only.contains(&r.username));
        }
        tx.commit()?;
        Ok(GroupOutgoing { mls, to })
    }
}

/// Sends a group signal online-only to each of its devices: every one is
/// tried, whatever happened to the one before (a device offline, refused),
/// and the first failure is returned.
pub(crate) async fn send_live(
    server: &mut ServerConn,
    out: &GroupOutgoing,
) -> Result<(), ClientError> {
    let mut first = None;
    for to in &out.to {
        if let Err(e) = send_online(server, &out.mls, to).await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// A group call signal arrived in `conversation` from `from`.
pub(crate) fn received(
    conn: &Connection,
    group_id: &[u8],
    conversation: &str,
    from: &Member,
    signal: GroupCallSignal,
    out: &mut Vec<GroupSignal>,
) -> Result<Vec<Event>, ClientError> {
    let Some(body) = signal.body else {
        return Ok(Vec::new());
    };
    let group: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM conversations WHERE group_id = ?1 AND kind = 'group')",
        [group_id],
        |r| r.get(0),
    )?;
    if !group {
        return Err(ClientError::Invalid(
            "a group call signal outside a group conversation".into(),
        ));
    }
    let probe = matches!(body, Body::Probe(_));
    if signal.call_id.len() != 16 && !(probe && signal.call_id.is_empty()) {
        return Err(ClientError::Protocol(
            "a group call signal without a proper call id".into(),
        ));
    }
    let mut events = Vec::new();
    match &body {
        Body::Started(_) => {
            let call = if records::may_ring_group(conn)? {
                CallEvent::GroupStarted {
                    conversation: conversation.to_owned(),
                    by: from.username.clone(),
                }
            } else {
                CallEvent::GroupSilenced {
                    conversation: conversation.to_owned(),
                    by: from.username.clone(),
                }
            };
            events.push(Event::Call(call));
        }
        Body::Ended(_) => events.push(Event::Call(CallEvent::GroupEnded {
            conversation: conversation.to_owned(),
        })),
        _ => {}
    }
    out.push(GroupSignal {
        conversation: conversation.to_owned(),
        group_id: group_id.to_vec(),
        from: from.clone(),
        call_id: signal.call_id,
        body,
    });
    Ok(events)
}

/// The signal's kind, for logs.
pub fn kind(body: &Body) -> &'static str {
    match body {
        Body::Started(_) => "started",
        Body::Probe(_) => "probe",
        Body::Ongoing(_) => "ongoing",
        Body::Join(_) => "join",
        Body::Welcome(_) => "welcome",
        Body::Commit(_) => "commit",
        Body::Left(_) => "left",
        Body::Ended(_) => "ended",
    }
}

//! Call signalling as end-to-end encrypted application messages of the 1:1
//! MLS conversation: encrypting a signal, sending it online-only (never
//! stored by the server) or stored (a missed call's hang-up), and what
//! receiving one yields. Sends go out on anonymous connections like every
//! other envelope, so the server cannot tell who signals whom.

use umbra_wire::e2e::{CallSignal, call_signal, content};
use umbra_wire::proto::{SendEnvelope, client_frame, server_frame};

use crate::ClientError;
use crate::client::Client;
use crate::conn::ServerConn;
use crate::contacts::group_recipients;
use crate::mls_store::Provider;
use crate::outbox::{self, Recipient};

/// A call signal received from the other party of a 1:1 conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Who sent it (authenticated by MLS).
    pub peer: String,
    /// The 1:1 conversation.
    pub group_id: Vec<u8>,
    /// The call it belongs to.
    pub call_id: Vec<u8>,
    /// What it says.
    pub body: call_signal::Body,
}

/// An MLS message carrying a signal, ready to seal, and its one recipient.
pub(crate) struct Outgoing {
    pub(crate) mls: Vec<u8>,
    pub(crate) to: Recipient,
}

impl Client {
    /// Encrypts `body` for the call `call_id` in the 1:1 conversation
    /// `group_id` (one transaction: the MLS ratchet moves and is saved).
    pub(crate) fn encrypt_signal(
        &self,
        group_id: &[u8],
        call_id: &[u8],
        body: call_signal::Body,
    ) -> Result<Outgoing, ClientError> {
        let signal = CallSignal {
            call_id: call_id.to_vec(),
            body: Some(body),
        };
        let content = self.content(content::Body::Call(signal));
        let tx = self.profile.write()?;
        let provider = Provider::new(&self.crypto, &tx);
        let (group, ct) = self.encrypt_content(&provider, group_id, &content)?;
        let to = group_recipients(&tx, &group, &self.identity.identity_key())?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ClientError::Protocol("the conversation has nobody else in it".into())
            })?;
        tx.commit()?;
        Ok(Outgoing { mls: ct, to })
    }

    /// Queues a signal as an ordinary stored message (the hang-up of an
    /// unanswered call, so an offline callee sees the missed call).
    pub(crate) fn queue_signal(&self, out: &Outgoing) -> Result<(), ClientError> {
        let tx = self.profile.write()?;
        outbox::enqueue(&tx, &out.mls, std::slice::from_ref(&out.to))?;
        tx.commit()?;
        Ok(())
    }
}

/// Sends a signal online-only on an anonymous connection. The server
/// answers the same whether or not the recipient is connected.
pub(crate) async fn send_live(server: &mut ServerConn, out: &Outgoing) -> Result<(), ClientError> {
    send_online(server, &out.mls, &out.to).await
}

/// Seals `mls` to `to` and sends it online-only.
pub(crate) async fn send_online(
    server: &mut ServerConn,
    mls: &[u8],
    to: &Recipient,
) -> Result<(), ClientError> {
    let sealed = outbox::seal(mls, &to.sealing_key)?;
    let body = client_frame::Body::Send(SendEnvelope {
        mailbox_id: to.mailbox_id.clone(),
        delivery_token: to.delivery_token.clone().unwrap_or_default(),
        sealed,
        online_only: true,
    });
    match server.call(body).await? {
        server_frame::Body::Accepted(_) => Ok(()),
        other => Err(ClientError::Protocol(format!("{other:?}"))),
    }
}

/// The signal's kind, for logs and errors.
pub fn kind(body: &call_signal::Body) -> &'static str {
    match body {
        call_signal::Body::Offer(_) => "offer",
        call_signal::Body::Ringing(_) => "ringing",
        call_signal::Body::Answer(_) => "answer",
        call_signal::Body::Candidate(_) => "candidate",
        call_signal::Body::Busy(_) => "busy",
        call_signal::Body::Decline(_) => "decline",
        call_signal::Body::Hangup(_) => "hang-up",
    }
}

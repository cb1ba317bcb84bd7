//! Calls: the glue between end-to-end encrypted signalling (this crate's
//! conversations and online-only envelopes) and the media engine
//! (`umbra-call`). Nothing here touches audio or RTP.
//!
//! - [`records`]: settings ("protect IP address in calls", "who can call
//!   you") and call records.
//! - [`signal`]: signals as MLS application messages, sent online-only.
//! - [`session`]: one call in progress, caller or callee: ringing, offer and
//!   answer, candidates, quality, hang-up.
//! - [`group_signal`]: group call signals in the group conversation.
//! - [`group_call`]: one member's group call: probe, start or join, the
//!   call's commits and keys, participants, leaving.
//! - [`group_room`]: into the unit's room and out of it (the unit link,
//!   the join, the media under the call's keys, the unit's reasons).
//! - [`group_keys`]: a group call's own MLS group (joins and leaves as
//!   commits, each epoch's frame keys from its exporter).
//! - [`unit`]: a group call member's control connection to the forwarding
//!   unit (join, answer, leave).
//!
//! Privacy rules enforced here (the engine enforces the packet-level ones):
//! every call starts relay-only; the callee sends nothing before its user
//! answers but an empty "ringing" (and nothing at all to a caller that "who
//! can call you" does not allow); a direct path is tried only after the
//! answer, and only if neither side protects its address.

mod group_call;
pub mod group_keys;
mod group_room;
pub mod group_signal;
pub mod records;
mod session;
pub mod signal;
pub mod unit;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use umbra_call::RelayServer;
use umbra_call::audio::{AudioIn, AudioOut};
use umbra_wire::proto::RelayCredentials;

use crate::ClientError;
use crate::client::Client;
pub use records::{CallRecord, CallSettings, Outcome, WhoCanCall};

/// What a call plays and records, and for how long.
#[derive(Debug, Clone)]
pub struct CallMedia {
    /// What we send.
    pub audio_in: AudioIn,
    /// Where what we hear goes.
    pub audio_out: AudioOut,
    /// Hang up this long after audio starts (`None`: until stopped).
    pub duration: Option<Duration>,
    /// Caller: give up after it rang this long (`None`: 45 s).
    pub ring_for: Option<Duration>,
}

/// A decision about an incoming call, made by the user (a prompt) or a
/// script (`--auto-answer`).
pub type Decide = Box<dyn FnMut(&str) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send>;

/// How `listen` handles incoming calls.
pub struct IncomingCalls {
    /// Media for each answered call.
    pub media: CallMedia,
    /// Answer (true) or decline (false) a ringing call from this user.
    pub decide: Decide,
}

impl Client {
    /// The profile's call settings.
    pub fn call_settings(&self) -> Result<CallSettings, ClientError> {
        records::settings(self.profile.conn())
    }

    /// Turns "protect IP address in calls" on or off.
    pub fn set_protect_ip(&self, on: bool) -> Result<(), ClientError> {
        records::set_protect_ip(self.profile.conn(), on)
    }

    /// Sets "who can call you".
    pub fn set_who_can_call(&self, who: WhoCanCall) -> Result<(), ClientError> {
        records::set_who_can_call(self.profile.conn(), who)
    }

    /// Recorded calls, oldest first.
    pub fn calls(&self, limit: usize) -> Result<Vec<CallRecord>, ClientError> {
        records::list(self.profile.conn(), limit)
    }
}

/// The UDP relays in a set of relay credentials, resolved, in the order the
/// server listed them.
pub(crate) async fn relay_servers(
    creds: &RelayCredentials,
) -> Result<Vec<RelayServer>, ClientError> {
    let mut out = Vec::new();
    for url in &creds.urls {
        let Some(rest) = url.strip_prefix("turn:") else {
            continue;
        };
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !(query.is_empty() || query == "transport=udp") {
            continue;
        }
        let Ok(mut addrs) = tokio::net::lookup_host(hostport).await else {
            continue;
        };
        if let Some(addr) = addrs.next() {
            out.push(RelayServer {
                addr,
                username: creds.username.clone(),
                password: creds.password.clone(),
                transport: umbra_call::Transport::Udp,
            });
        }
    }
    if out.is_empty() {
        return Err(ClientError::Invalid(
            "this server has no call relay configured (ask its operator to run `umbra serve`, \
             or `umbra server --relay-url`)"
                .into(),
        ));
    }
    Ok(out)
}

/// Picks this side's relay: a different one from `avoid` (the other side's
/// relay address) when the deployment has several, so that no single relay
/// sees both parties' addresses.
pub(crate) fn pick_relay(
    relays: Vec<RelayServer>,
    avoid: Option<SocketAddr>,
) -> Option<RelayServer> {
    let mut relays = relays;
    if let Some(avoid) = avoid
        && let Some(i) = relays.iter().position(|r| r.addr.ip() != avoid.ip())
    {
        return Some(relays.swap_remove(i));
    }
    relays.into_iter().next()
}

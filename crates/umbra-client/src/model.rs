//! What client operations return, ready for human or JSON output.

use serde::Serialize;

/// Something that happened while receiving.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A message to show.
    Message {
        /// Conversation name (the peer's username for a 1:1 chat).
        conversation: String,
        /// Who wrote it (authenticated by MLS).
        sender: String,
        /// The text.
        text: String,
        /// When the sender says it was sent.
        sent_ms: u64,
    },
    /// A change in a conversation (joined, member added or removed, ...).
    Info {
        /// Conversation name.
        conversation: String,
        /// What happened.
        text: String,
    },
    /// Something was dropped, with why.
    Warning {
        /// What happened.
        text: String,
    },
    /// Something happened in a call.
    Call(CallEvent),
}

/// What happens in a call, as `umbra call` and `umbra listen` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum CallEvent {
    /// We are calling `peer`; the call starts relay-only.
    Dialing {
        /// Who.
        peer: String,
    },
    /// The callee's device rings.
    Ringing {
        /// Who.
        peer: String,
    },
    /// Someone is calling us.
    Incoming {
        /// Who.
        peer: String,
    },
    /// A call was silenced (not allowed by "who can call you"): it did not
    /// ring and nothing was sent back.
    Silenced {
        /// Who.
        peer: String,
    },
    /// The call is answered.
    Answered {
        /// Who.
        peer: String,
    },
    /// Audio flows.
    Connected {
        /// Who.
        peer: String,
        /// `direct` or `relayed`.
        path: String,
        /// Why that path, and what it means for privacy and quality.
        why: String,
    },
    /// The other side's audio is playing.
    Hearing {
        /// Who.
        peer: String,
    },
    /// Live quality, once a second.
    Quality {
        /// Who.
        peer: String,
        /// Seconds since audio started.
        seconds: u64,
        /// Round-trip time.
        rtt_ms: Option<u32>,
        /// Our packets the other side lost, per mille.
        loss_out_permille: Option<u32>,
        /// Their packets we lost (concealed), per mille.
        loss_in_permille: u32,
        /// Interarrival jitter.
        jitter_ms: u32,
        /// `direct` or `relayed`.
        path: String,
    },
    /// The call ended.
    Ended {
        /// Who.
        peer: String,
        /// answered, missed, declined, busy, silenced, cancelled or failed.
        outcome: String,
        /// Talk time.
        seconds: u64,
        /// What went wrong, if anything.
        error: Option<String>,
    },
}

/// One line of history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Conversation name.
    pub conversation: String,
    /// Author (`you` style rendering is the CLI's business).
    pub sender: String,
    /// Text, or the description of an event.
    pub body: String,
    /// `text` or `event`.
    pub kind: String,
    /// Sender's timestamp.
    pub sent_ms: u64,
    /// Whether we wrote it.
    pub outgoing: bool,
}

/// A person we have talked to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Contact {
    /// Username.
    pub username: String,
    /// Identity key, hex.
    pub identity_key: String,
    /// Whether safety numbers were compared and marked verified.
    pub verified: bool,
    /// Whether we hold their delivery token (else messages to them count as introductions).
    pub has_token: bool,
}

/// A conversation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Conversation {
    /// Name (peer username for 1:1).
    pub name: String,
    /// `direct` or `group`.
    pub kind: String,
    /// Current members (usernames).
    pub members: Vec<String>,
    /// False once we left or were removed.
    pub active: bool,
    /// MLS epoch.
    pub epoch: u64,
}

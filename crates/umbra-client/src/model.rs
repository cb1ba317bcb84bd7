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
        /// The sender's business card, checked, if it is a business.
        #[serde(skip_serializing_if = "Option::is_none")]
        business: Option<crate::business::BusinessLabel>,
        /// Who can read this chat, from the sender's hosting statement, if
        /// it is a business.
        #[serde(skip_serializing_if = "Option::is_none")]
        hosting: Option<crate::hosting::HostingLabel>,
    },
    /// A change in a conversation (joined, member added or removed, ...).
    Info {
        /// Conversation name.
        conversation: String,
        /// What happened.
        text: String,
    },
    /// Receipts for messages we wrote: they reached `from`'s device, or
    /// (`read`) were shown to them.
    Receipt {
        /// Conversation name.
        conversation: String,
        /// Who sent the receipt (authenticated by MLS).
        from: String,
        /// Read, or only delivered.
        read: bool,
        /// The messages (hex ids) whose status moved forward.
        message_ids: Vec<String>,
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
    /// A member started a group call in a conversation we are in.
    GroupStarted {
        /// The group conversation.
        conversation: String,
        /// Who started it.
        by: String,
    },
    /// A group call started that "who can call you" does not let ring.
    GroupSilenced {
        /// The group conversation.
        conversation: String,
        /// Who started it.
        by: String,
    },
    /// The last member in a group call left it.
    GroupEnded {
        /// The group conversation.
        conversation: String,
    },
    /// We are in a group call (it may not have audio yet).
    GroupJoined {
        /// The group conversation.
        conversation: String,
        /// Whether we started it (nobody else was in a call there).
        started: bool,
        /// Who else is in it.
        participants: Vec<String>,
    },
    /// Someone joined the group call we are in.
    ParticipantJoined {
        /// The group conversation.
        conversation: String,
        /// Who.
        who: String,
    },
    /// Someone left the group call we are in.
    ParticipantLeft {
        /// The group conversation.
        conversation: String,
        /// Who.
        who: String,
    },
    /// The group call's participants, once a second.
    Participants {
        /// The group conversation.
        conversation: String,
        /// Seconds since our audio started.
        seconds: u64,
        /// Everyone else in the call.
        participants: Vec<Participant>,
    },
    /// We left the group call (or it ended for us).
    GroupLeft {
        /// The group conversation.
        conversation: String,
        /// Time in the call.
        seconds: u64,
        /// Why it ended, when it was not our choice.
        error: Option<String>,
    },
}

/// One other participant in a group call, as we hear them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Participant {
    /// Username (authenticated by the call's MLS group).
    pub name: String,
    /// Level of what we last played from them, dBFS (-100: silence).
    pub level_dbfs: i32,
    /// Their frames that never reached us (end to end), per mille: the
    /// quality of their connection as we hear it.
    pub loss_permille: u32,
    /// Whether what we last played from them was louder than silence
    /// (above -50 dBFS, heard in the last few seconds).
    pub speaking: bool,
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
    /// The message's id (hex), for texts.
    pub message_id: String,
    /// The sender's business card, checked, if it is a business.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business: Option<crate::business::BusinessLabel>,
    /// Who can read this chat, from the sender's hosting statement, if it
    /// is a business.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosting: Option<crate::hosting::HostingLabel>,
    /// For a text we wrote: how far it got (`pending`, `sent`, `delivered`,
    /// `read`), overall and per recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::receipts::MessageStatus>,
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
    /// Whether its keys are post-quantum (X-Wing), fixed when it was made;
    /// false for a classical one or one we left.
    pub post_quantum: bool,
    /// For a 1:1 conversation with a business: its checked card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business: Option<crate::business::BusinessLabel>,
    /// Who can read it, for each business in it (from the hosting
    /// statement in its MLS leaf).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosting: Vec<crate::hosting::HostingLabel>,
}

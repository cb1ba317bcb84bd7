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

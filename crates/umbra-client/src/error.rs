//! Client errors, each naming the problem and what to do about it.

use std::path::PathBuf;

use thiserror::Error;
use umbra_wire::proto::ErrorCode;

/// Why a client operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The profile directory holds no account yet.
    #[error(
        "no Umbra account in profile {0}: run `umbra register --invite LINK USERNAME` first, \
         or point --profile / UMBRA_PROFILE at an existing profile"
    )]
    NotRegistered(PathBuf),
    /// The profile is locked with a passphrase and none was given.
    #[error(
        "profile {0} is locked with a passphrase: type it when asked on a terminal, or give it in \
         UMBRA_PASSPHRASE or on --passphrase-fd N"
    )]
    PassphraseNeeded(PathBuf),
    /// The passphrase given does not open the profile.
    #[error("wrong passphrase for profile {0}: nothing was changed; try again")]
    WrongPassphrase(PathBuf),
    /// The profile's key file cannot be used.
    #[error(
        "the profile's key file {path} cannot be used ({why}): restore it from where you copied \
         the profile, or the profile cannot be opened"
    )]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The profile already has an account.
    #[error(
        "profile {0} already holds the account `{1}`: use another --profile for a second account"
    )]
    AlreadyRegistered(PathBuf, String),
    /// The server refused a request.
    #[error("the server refused: {message} ({code:?})")]
    Server {
        /// Machine-readable reason.
        code: ErrorCode,
        /// What the server said.
        message: String,
    },
    /// No such user on the server.
    #[error("there is no user `{0}` on this server: check the spelling")]
    UnknownUser(String),
    /// The network or the channel failed.
    #[error(transparent)]
    Net(#[from] umbra_net::NetError),
    /// Could not reach the server at all.
    // The cause is said here, so it is not also the error's source (the
    // binary prints the chain of sources).
    #[error("cannot reach the server at {addr}: {cause} (is `umbra serve` running there?)")]
    Unreachable {
        /// Where we tried.
        addr: String,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// The proxy link is not valid.
    #[error(transparent)]
    ProxyLink(#[from] umbra_wire::proxy::ProxyLinkError),
    /// The invite link is not valid.
    #[error(transparent)]
    Invite(#[from] umbra_wire::invite::InviteError),
    /// End-to-end cryptography failed.
    #[error(transparent)]
    Crypto(#[from] umbra_crypto::CryptoError),
    /// The profile database failed.
    #[error("profile database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// Profile directory I/O failed.
    #[error("profile directory error: {0}")]
    Io(#[from] std::io::Error),
    /// No conversation with that name.
    #[error("no conversation named `{0}`: `umbra conversations` lists them")]
    UnknownConversation(String),
    /// A group with that name already exists.
    #[error("a conversation named `{0}` already exists: choose another name")]
    ConversationExists(String),
    /// A contact's account key differs from the one first seen.
    #[error(
        "the account key of `{0}` has changed since you first talked: they made a new account, or \
         this is an attack. Compare safety numbers with `umbra verify {0}` in person before trusting it"
    )]
    KeyChanged(String),
    /// The server no longer knows this device: it was unlinked.
    #[error(
        "this device is no longer one of `{0}`'s devices (it was unlinked, or the account is gone): \
         link it again with `umbra link` in a new profile"
    )]
    Unlinked(String),
    /// A device presented as a user's was not signed by their account key.
    #[error(
        "a device presented as `{0}`'s is not signed by their account key: it was refused (a \
         forged device, or an account made by an older Umbra)"
    )]
    Unvouched(String),
    /// The server handed out a classical key package for a device of a
    /// user that says (in its signed leaf) it supports post-quantum
    /// conversations: a downgrade, refused.
    #[error(
        "the server offered only classical keys for a device of `{0}` that supports post-quantum \
         conversations: refusing a weaker conversation (a server withholding their post-quantum \
         keys, or one older than this client: ask its operator)"
    )]
    Downgraded(String),
    /// A user has a device that cannot join a post-quantum conversation.
    #[error(
        "`{0}` has a device without post-quantum keys (an older Umbra), which cannot join this \
         post-quantum conversation: ask them to update, or start a new group"
    )]
    NotPostQuantum(String),
    /// The server answered something that does not fit the protocol.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The message is saved locally but the server has not accepted it yet.
    #[error(
        "{0} message(s) are saved but not yet accepted by the server ({1}); they are sent again \
         automatically by your next umbra command"
    )]
    Queued(usize, String),
    /// The user blocked this account.
    #[error("you blocked `{0}`: `umbra unblock {0}` first")]
    Blocked(String),
    /// A message is larger than the server takes.
    #[error(
        "the message is too large for this server: {size} bytes once encrypted, where it takes at \
         most {max}; shorten it (nothing was sent or saved)"
    )]
    TooLarge {
        /// The envelope's size.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// The argument is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The call could not be made or failed.
    #[error(transparent)]
    Call(#[from] umbra_call::CallError),
    /// Who can read a business chat changed before our message went out:
    /// nothing was sent, so that the user sends knowing it.
    #[error("nothing was sent to `{conversation}`: {line}. Send again to go on")]
    HostingChanged {
        /// The conversation.
        conversation: String,
        /// The change, as the chat shows it.
        line: String,
    },
    /// An idempotency key came again with a different request.
    #[error(
        "the idempotency key `{0}` was already used for another request: use a new key for a new message"
    )]
    IdempotencyConflict(String),
    /// The group call's forwarding unit did not take the join.
    #[error("the group call's forwarding unit refused the join: {0}")]
    UnitRefused(String),
}

impl ClientError {
    /// Turns a server error frame into the most specific client error.
    pub fn from_server(code: ErrorCode, message: String, username: Option<&str>) -> Self {
        match (code, username) {
            (ErrorCode::UnknownUser, Some(u)) => Self::UnknownUser(u.to_string()),
            _ => Self::Server { code, message },
        }
    }
}

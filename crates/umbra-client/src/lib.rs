//! The Umbra client library: everything a user's device does.
//!
//! Layout:
//! - [`profile`]: the profile directory and its SQLite database (settings,
//!   contacts, conversations, history, seen envelopes, outbox, MLS state),
//!   encrypted under the key [`profile_key`] keeps (under a passphrase).
//! - [`mls_store`]: the openmls provider over one SQLite transaction, so each
//!   MLS operation and its bookkeeping commit together or not at all.
//! - [`conn`]: a connection to the server (anonymous for sending, logged in
//!   for receiving), with request/response matching.
//! - [`outbox`]: sealed envelopes waiting to be sent; written in the same
//!   transaction as the MLS operation that produced them, deleted once the
//!   server accepted them, so a crash never loses or forks a message.
//! - [`contacts`]: the address book (pinned account keys, the devices they
//!   vouch for, their addresses and tokens).
//! - [`linking`]: this account's own devices (account key, certificate, list),
//!   link codes and the sealed messages linking exchanges.
//! - [`devices`]: linking, unlinking and listing this account's devices.
//! - [`inbox`]: applying received envelopes exactly once.
//! - [`announce`]: giving our delivery token to a conversation's devices.
//! - [`client`]: the [`Client`] (a registered profile) and what its
//!   operations share; the operations themselves, one module each:
//!   [`account`] (register, login, relay credentials), [`directory`] (user
//!   look-ups, key packages, safety numbers), [`conversations`] (chats,
//!   groups, history), [`delivery`] (receipts sent, read marks, blocking)
//!   and [`receive`] (`sync`, `listen`).
//! - [`business_account`]: being a business (its card, its hosting
//!   statement), [`business`]: checking another's card before its name or
//!   badge shows, and [`hosting`]: who can read a business chat, from the
//!   statement in the business's MLS leaf.
//! - [`receipts`] and [`blocking`]: what receipts and blocks store, and
//!   how a received receipt moves a message's status forward.
//! - [`app`]: what an application running a device around the clock (the
//!   business host) needs: sends in batches with idempotency keys, and
//!   [`journal`], what happened, kept until the application passed it on.
//!
//! Imports go one way: a module uses only modules later in this list:
//! `app`, `receive`, `delivery`, `business_account`, `conversations`,
//! `directory`, `account`, `client`, `inbox`, `hosting`, `business`,
//! `receipts`, `blocking`, `contacts`, then `outbox`, `journal`, `conn`,
//! `profile`, `profile_key`, `mls_store`, `model`, `error`.
//! - [`transfer`]: attachment blobs sealed and uploaded, downloaded and
//!   opened, both resumable (uses `conn` only); [`attachments`]: files and
//!   locations and voice messages as messages, and what the profile keeps
//!   of them (after `conversations`, before `transfer`); [`media`]: what
//!   arrived, fetched (on arrival up to a size, or on demand), saved,
//!   opened as a voice message, or deleted by its sender (after `receive`,
//!   before `attachments`).
//! - [`calls`]: calls, gluing end-to-end signalling to the media engine
//!   (`umbra-call`): settings, records, ringing, offer and answer.
//! - [`model`]: what the operations return.
//! - [`error`]: what can go wrong, phrased for the user.

pub mod account;
pub mod announce;
pub mod app;
pub mod attachments;
pub mod blocking;
pub mod business;
pub mod business_account;
pub mod calls;
pub mod client;
pub mod conn;
pub mod contacts;
pub mod conversations;
pub mod delivery;
pub mod devices;
pub mod directory;
pub mod error;
pub mod hosting;
pub mod inbox;
pub mod journal;
pub mod ledger;
pub mod linking;
pub mod media;
pub mod mls_store;
pub mod model;
pub mod outbox;
pub mod profile;
pub mod profile_key;
pub mod receipts;
pub mod receive;
pub mod transfer;

pub use account::validate_username;
pub use client::Client;
pub use error::ClientError;
pub use model::{CallEvent, Contact, Conversation, Event, HistoryEntry, Participant};
/// The network errors a [`ClientError`] may carry.
pub use umbra_net::NetError;

/// Milliseconds since the Unix epoch, for message timestamps shown to users.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

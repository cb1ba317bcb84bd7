//! Storage for the Umbra messaging server.
//!
//! The server talks to storage only through the [`Store`] / [`StoreTx`] traits,
//! so another backend (PostgreSQL) can be added without touching the server.
//!
//! Layout:
//! - [`model`]: the records that go in and out (ids, devices, envelopes, limits).
//! - [`traits`]: [`Store`] opens a transaction, [`StoreTx`] has every operation.
//! - [`error`]: [`StoreError`], with a distinct variant for every outcome the
//!   server turns into a protocol error (username taken, mailbox full, ...).
//! - [`day`]: coarse time: storage never keeps anything finer than a day.
//! - [`blobs`]: attachment blobs ([`BlobStore`]; files under a directory).
//! - [`sqlite`]: the embedded default backend (WAL, `synchronous=NORMAL`).
//! - [`postgres`]: the backend several server nodes share
//!   (`synchronous_commit` on).
//! - `pgtest` (feature `test-cluster`): a throwaway PostgreSQL cluster for
//!   tests.
//!
//! What is stored is fixed by the privacy contract: accounts (username and
//! creation day), devices (public keys, random mailbox id, SHA-256 of the
//! delivery token), MLS key packages and sealed envelopes keyed by mailbox
//! only. No table names a sender, no address is stored, no timestamp is finer
//! than a day, except the end of an online-only envelope's hold: a row that
//! lives for seconds and never reaches a disk's journal (an unlogged
//! PostgreSQL table; a temporary in-memory SQLite one).
//!
//! Time is passed in (a [`Day`]); nothing here reads the clock.

pub mod blobs;
pub mod day;
pub mod error;
pub mod model;
#[cfg(feature = "test-cluster")]
pub mod pgtest;
pub mod postgres;
pub mod sqlite;
pub mod traits;

pub use blobs::{BlobId, BlobMeta, BlobState, BlobStore, FsBlobStore};
pub use day::Day;
pub use error::StoreError;
pub use model::{
    AccountDevices, DeviceId, DeviceRecord, EnvelopeAck, EpochClaim, LEGACY_SUITE, Limits,
    LiveEnvelope, MailboxEntry, MailboxId, NewDevice, NewEnvelope, StoredCard, StoredEnvelope,
    UserDevice,
};
pub use postgres::{Health, PgBlobStore, PgStore};
pub use sqlite::SqliteStore;
pub use traits::{Store, StoreTx};

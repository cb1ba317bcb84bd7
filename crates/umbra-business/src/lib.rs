//! The business host (`umbra business serve`): runs businesses' Umbra
//! devices (so it is the endpoint of their chats) and gives the businesses'
//! own systems an HTTP API and signed webhooks. Run by the business itself,
//! its chats are end to end with it; run by a third party (`host_name`), it
//! is the hosted case, and its customers are told the host can read them.
//!
//! Layout:
//! - [`config`]: flags, environment and the TOML file.
//! - [`serve`]: bringing each business up, serving, stopping in order.
//! - [`device`]: one business's device: the sender (batches, the outbox),
//!   the receiver (`listen`), the reader; and claiming its hosting.
//! - [`api`] and [`api_error`]: the HTTP API (axum) and its OpenAPI
//!   document (utoipa), its refusals.
//! - [`webhooks`]: the journal passed on, signed, at least once.
//! - [`signing`]: webhook signatures, for the host and for receivers, and
//!   [`receiver`]: a receiver that checks them (`umbra business
//!   receive-webhooks`).
//! - [`tokens`]: API tokens per business, kept as hashes.
//! - [`ratelimit`]: token buckets, time passed in.
//! - [`metrics`]: aggregate counters.
//!
//! Imports go one way: `serve` uses everything; `api` uses `device`,
//! `api_error`, `tokens`, `ratelimit`, `metrics`; `webhooks` uses `signing`
//! and `metrics`; `device` uses `metrics`.

pub mod api;
pub mod api_error;
pub mod config;
pub mod device;
pub mod metrics;
pub mod ratelimit;
pub mod receiver;
pub mod serve;
pub mod signing;
pub mod tokens;
pub mod webhooks;

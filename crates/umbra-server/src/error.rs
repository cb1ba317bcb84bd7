//! Per-request errors: each becomes one `Error` frame; none closes the connection.

use thiserror::Error;
use umbra_wire::proto::{self, ErrorCode, ServerFrame, server_frame::Body};

/// Why a request was refused. Messages never contain user data.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Username does not match `^[a-z][a-z0-9_.-]{2,31}$`.
    #[error(
        "username must be 3 to 32 characters of a-z, 0-9, '_', '.', '-', starting with a letter"
    )]
    InvalidUsername,
    /// Username exists.
    #[error("username already taken")]
    UsernameTaken,
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// No such device.
    #[error("unknown device")]
    UnknownDevice,
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The request needs a login first.
    #[error("log in first")]
    NotLoggedIn,
    /// No such mailbox.
    #[error("unknown mailbox")]
    UnknownMailbox,
    /// Envelope above the limit.
    #[error("envelope exceeds the server's size limit")]
    EnvelopeTooLarge,
    /// Introduction budget spent.
    #[error("no valid delivery token and the mailbox's introduction budget is spent")]
    RateLimited,
    /// A device has no key package.
    #[error("a device has no key packages left")]
    NoKeyPackages,
    /// A field is missing or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// Storage failed.
    #[error("internal server error")]
    Internal,
    /// No call relay is configured.
    #[error("this server has no call relay configured")]
    NoRelay,
    /// The server cannot take this now.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// A device list no newer than the stored one.
    #[error("a newer device list is already stored")]
    StaleDeviceList,
    /// A device list naming more devices than an account may have.
    #[error(
        "an account may have at most {} devices",
        umbra_wire::devices::MAX_DEVICES
    )]
    TooManyDevices,
    /// No such blob, or not complete yet.
    #[error("no such attachment blob (not complete, expired, deleted, or never made)")]
    NoSuchBlob,
    /// A blob over the server's size limit.
    #[error("attachments on this server are at most {max} bytes once encrypted")]
    BlobTooLarge {
        /// The limit.
        max: u64,
    },
    /// A blob written at another offset than what it holds.
    #[error("the blob holds {expected} bytes: go on from there")]
    BlobOffset {
        /// What it holds.
        expected: u64,
    },
}

impl RequestError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidUsername => ErrorCode::InvalidUsername,
            Self::UsernameTaken => ErrorCode::UsernameTaken,
            Self::UnknownUser => ErrorCode::UnknownUser,
            Self::UnknownDevice => ErrorCode::UnknownDevice,
            Self::BadSignature => ErrorCode::BadSignature,
            Self::NotLoggedIn => ErrorCode::NotLoggedIn,
            Self::UnknownMailbox => ErrorCode::UnknownMailbox,
            Self::EnvelopeTooLarge => ErrorCode::EnvelopeTooLarge,
            Self::RateLimited => ErrorCode::RateLimited,
            Self::NoKeyPackages => ErrorCode::NoKeyPackages,
            Self::StaleDeviceList => ErrorCode::StaleDeviceList,
            Self::TooManyDevices => ErrorCode::TooManyDevices,
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::Internal => ErrorCode::Internal,
            Self::Busy(_) => ErrorCode::Busy,
            Self::NoRelay => ErrorCode::NoRelay,
            Self::NoSuchBlob => ErrorCode::NoSuchBlob,
            Self::BlobTooLarge { .. } => ErrorCode::BlobTooLarge,
            Self::BlobOffset { .. } => ErrorCode::BlobOffset,
        }
    }
}

/// An `Error` frame.
pub fn error_frame(request_id: u64, code: ErrorCode, message: String) -> ServerFrame {
    ServerFrame {
        request_id,
        body: Some(Body::Error(proto::Error {
            code: code as i32,
            message,
        })),
    }
}

/// The frame answering a request: its result or its error.
pub fn reply(request_id: u64, r: Result<Body, RequestError>) -> ServerFrame {
    match r {
        Ok(body) => ServerFrame {
            request_id,
            body: Some(body),
        },
        Err(e) => error_frame(request_id, e.code(), e.to_string()),
    }
}

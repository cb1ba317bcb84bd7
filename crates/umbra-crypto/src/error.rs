//! Errors of the cryptographic layer, by category.

use thiserror::Error;

/// Why a cryptographic operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A sealed envelope could not be opened (not for us, or tampered with).
    #[error("the envelope could not be opened: not sealed to this device, or altered in transit")]
    SealOpen,
    /// A sealed envelope is malformed.
    #[error("malformed sealed envelope: {0}")]
    SealFormat(&'static str),
    /// A key package is malformed or its signature does not verify.
    #[error("invalid key package: {0}")]
    InvalidKeyPackage(String),
    /// An MLS message is malformed.
    #[error("malformed MLS message: {0}")]
    MalformedMessage(String),
    /// The message belongs to an epoch this member cannot read (too old, or
    /// sent by someone no longer in the group).
    #[error("message from another epoch of the group (sent by a removed member, or out of date)")]
    WrongEpoch,
    /// The message could not be decrypted or authenticated.
    #[error("message failed to decrypt or authenticate: {0}")]
    Rejected(String),
    /// The message belongs to an epoch this member has not reached yet
    /// (a commit it depends on has not arrived).
    #[error("message from a later epoch of the group")]
    FutureEpoch,
    /// We are not (or no longer) a member of the group.
    #[error("this device is no longer a member of the conversation")]
    NotAMember,
    /// A member's credential is not a valid Umbra username.
    #[error("invalid credential: {0}")]
    InvalidCredential(String),
    /// The operation is not possible in the group's current state.
    #[error("group operation failed: {0}")]
    Group(String),
    /// The storage behind the MLS state failed.
    #[error("MLS state storage failed: {0}")]
    Storage(String),
    /// A Welcome or key package of an MLS ciphersuite this version does not
    /// know (made by a newer Umbra).
    #[error(
        "made with MLS ciphersuite 0x{0:04x}, which this version of Umbra does not know: update Umbra"
    )]
    UnsupportedSuite(u16),
    /// An attachment could not be sealed or opened.
    #[error("attachment: {0}")]
    Attachment(&'static str),
    /// A key had the wrong length or form.
    #[error("invalid key material")]
    InvalidKey,
}

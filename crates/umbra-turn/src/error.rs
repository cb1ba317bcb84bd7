//! Error types of the codec: decoding (bytes from the network), encoding (building
//! messages) and integrity verification. Server and client state machines have their own
//! error enums next to them.

use thiserror::Error;

/// Why bytes could not be decoded as a STUN message, attribute or ChannelData frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the advertised length needs.
    #[error("message truncated")]
    Truncated,
    /// The first two bits are not zero: not a STUN message.
    #[error("not a STUN message")]
    NotStun,
    /// The magic cookie is not 0x2112A442.
    #[error("wrong magic cookie")]
    BadMagicCookie,
    /// The length field is not a multiple of 4.
    #[error("message length is not a multiple of 4")]
    BadLength,
    /// The length field disagrees with the number of bytes received.
    #[error("message length field does not match the data")]
    LengthMismatch,
    /// An attribute's (padded) value runs beyond the end of the message.
    #[error("attribute 0x{0:04x} runs past the end of the message")]
    AttributeOverflow(u16),
    /// An attribute follows FINGERPRINT, which must be last.
    #[error("FINGERPRINT is not the last attribute")]
    FingerprintNotLast,
    /// The FINGERPRINT value does not match the message.
    #[error("bad FINGERPRINT")]
    BadFingerprint,
    /// An attribute value is malformed.
    #[error("malformed attribute 0x{typ:04x}: {reason}")]
    InvalidAttribute {
        /// Attribute type.
        typ: u16,
        /// What was wrong (static text, never peer data).
        reason: &'static str,
    },
    /// The first byte is neither STUN (0b00) nor ChannelData (0b01).
    #[error("neither STUN nor ChannelData")]
    UnknownFraming,
    /// A ChannelData channel number outside 0x4000..=0x4FFF.
    #[error("invalid channel number")]
    InvalidChannelNumber,
}

/// Why a message could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An attribute value is longer than its type allows (or than 65535 bytes).
    #[error("attribute 0x{0:04x} value too long")]
    AttributeTooLong(u16),
    /// The whole message would exceed the 16-bit length field.
    #[error("message too long")]
    MessageTooLong,
    /// An attribute was added after MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT.
    #[error("attribute added after integrity or fingerprint")]
    AttributeAfterIntegrity,
    /// An attribute value is not encodable (e.g. error code outside 300..=699).
    #[error("invalid attribute 0x{typ:04x}: {reason}")]
    InvalidAttribute {
        /// Attribute type.
        typ: u16,
        /// What was wrong.
        reason: &'static str,
    },
    /// ChannelData payload longer than 65535 bytes, or channel number out of range.
    #[error("invalid ChannelData")]
    InvalidChannelData,
}

/// Why MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The message carries no integrity attribute.
    #[error("no message integrity attribute")]
    Missing,
    /// The integrity attribute has a length its type does not allow.
    #[error("malformed message integrity attribute")]
    Malformed,
    /// The HMAC does not match.
    #[error("message integrity mismatch")]
    Mismatch,
}

//! The ERROR-CODE attribute (RFC 8489 §14.8) and the error codes STUN and TURN define.

use crate::error::{DecodeError, EncodeError};

use super::ERROR_CODE;

/// An error code with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The numeric code, 300..=699.
    pub code: u16,
    /// The reason phrase (UTF-8, at most 763 bytes).
    pub reason: &'a str,
}

impl<'a> ErrorCode<'a> {
    /// 300 Try Alternate.
    pub const TRY_ALTERNATE: u16 = 300;
    /// 400 Bad Request.
    pub const BAD_REQUEST: u16 = 400;
    /// 401 Unauthenticated.
    pub const UNAUTHENTICATED: u16 = 401;
    /// 403 Forbidden.
    pub const FORBIDDEN: u16 = 403;
    /// 420 Unknown Attribute.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    /// 437 Allocation Mismatch.
    pub const ALLOCATION_MISMATCH: u16 = 437;
    /// 438 Stale Nonce.
    pub const STALE_NONCE: u16 = 438;
    /// 440 Address Family not Supported.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    /// 441 Wrong Credentials.
    pub const WRONG_CREDENTIALS: u16 = 441;
    /// 442 Unsupported Transport Protocol.
    pub const UNSUPPORTED_TRANSPORT: u16 = 442;
    /// 443 Peer Address Family Mismatch.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    /// 486 Allocation Quota Reached.
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    /// 500 Server Error.
    pub const SERVER_ERROR: u16 = 500;
    /// 508 Insufficient Capacity.
    pub const INSUFFICIENT_CAPACITY: u16 = 508;

    /// An error code with its standard reason phrase.
    pub fn standard(code: u16) -> ErrorCode<'static> {
        ErrorCode {
            code,
            reason: standard_reason(code),
        }
    }

    pub(crate) fn decode(v: &'a [u8]) -> Result<ErrorCode<'a>, DecodeError> {
        let bad = |reason| DecodeError::InvalidAttribute {
            typ: ERROR_CODE,
            reason,
        };
        if v.len() < 4 {
            return Err(bad("too short"));
        }
        let class = u16::from(v[2] & 0x07);
        let number = u16::from(v[3]);
        if !(3..=6).contains(&class) || number > 99 {
            return Err(bad("code out of range"));
        }
        let reason = std::str::from_utf8(&v[4..]).map_err(|_| bad("reason is not UTF-8"))?;
        Ok(ErrorCode {
            code: class * 100 + number,
            reason,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !(300..=699).contains(&self.code) {
            return Err(EncodeError::InvalidAttribute {
                typ: ERROR_CODE,
                reason: "code out of range",
            });
        }
        if self.reason.len() > 763 {
            return Err(EncodeError::AttributeTooLong(ERROR_CODE));
        }
        // `code` is at most 699, so both parts fit in a byte.
        out.extend_from_slice(&[0, 0, (self.code / 100) as u8, (self.code % 100) as u8]);
        out.extend_from_slice(self.reason.as_bytes());
        Ok(())
    }
}

/// The reason phrase RFC 8489 / RFC 8656 suggest for a code.
pub fn standard_reason(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthenticated",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

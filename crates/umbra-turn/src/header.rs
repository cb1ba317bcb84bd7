//! The fixed 20-byte STUN header (RFC 8489 §5): message type (class and method),
//! length, magic cookie and transaction id.

use crate::error::DecodeError;

/// The magic cookie every RFC 5389+ STUN message carries in bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Length of the STUN header in bytes.
pub const HEADER_LEN: usize = 20;

/// The class of a STUN message (the C1/C0 bits of the message type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request: expects a response.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    SuccessResponse,
    /// An error response (carries ERROR-CODE).
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }

    /// True for success and error responses.
    pub fn is_response(self) -> bool {
        matches!(self, Class::SuccessResponse | Class::ErrorResponse)
    }
}

/// A 12-bit STUN method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Method = Method(0x004);
    /// Send (RFC 8656, indication only).
    pub const SEND: Method = Method(0x006);
    /// Data (RFC 8656, indication only).
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// A method from its 12-bit number; `None` if it does not fit in 12 bits.
    pub const fn new(value: u16) -> Option<Method> {
        if value <= 0x0FFF {
            Some(Method(value))
        } else {
            None
        }
    }

    /// The 12-bit method number.
    pub const fn value(self) -> u16 {
        self.0
    }
}

/// Class and method together, as packed into the 14-bit message type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The class.
    pub class: Class,
    /// The method.
    pub method: Method,
}

impl MessageType {
    /// A message type from its parts.
    pub const fn new(class: Class, method: Method) -> MessageType {
        MessageType { class, method }
    }

    /// Packs into the wire format `M11..M7 C1 M6..M4 C0 M3..M0`.
    pub fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7)
    }

    /// Unpacks the 14-bit wire value (the top two bits must be zero).
    pub fn from_u16(value: u16) -> Result<MessageType, DecodeError> {
        if value & 0xC000 != 0 {
            return Err(DecodeError::NotStun);
        }
        let method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80);
        let class = ((value >> 4) & 0b01) | ((value >> 7) & 0b10);
        Ok(MessageType {
            class: Class::from_bits(class),
            method: Method(method),
        })
    }
}

/// The 96-bit transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

/// A decoded STUN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Class and method.
    pub message_type: MessageType,
    /// Length of the body (everything after the header), a multiple of 4.
    pub length: u16,
    /// Transaction id.
    pub transaction_id: TransactionId,
}

impl Header {
    /// Parses and validates the header at the start of `bytes` (which may be longer).
    pub fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
        let h = bytes.get(..HEADER_LEN).ok_or(DecodeError::Truncated)?;
        let raw_type = u16::from_be_bytes([h[0], h[1]]);
        let message_type = MessageType::from_u16(raw_type)?;
        let length = u16::from_be_bytes([h[2], h[3]]);
        let cookie = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadMagicCookie);
        }
        if length % 4 != 0 {
            return Err(DecodeError::BadLength);
        }
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&h[8..20]);
        Ok(Header {
            message_type,
            length,
            transaction_id: TransactionId(tid),
        })
    }

    /// Writes the header into the first 20 bytes of `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.message_type.to_u16().to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trip() {
        for m in [0u16, 1, 3, 4, 6, 7, 8, 9, 0x7F, 0x80, 0xFFF] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::SuccessResponse,
                Class::ErrorResponse,
            ] {
                let t = MessageType::new(c, Method(m));
                assert_eq!(MessageType::from_u16(t.to_u16()).ok(), Some(t));
            }
        }
    }

    #[test]
    fn known_type_values() {
        assert_eq!(
            MessageType::new(Class::Request, Method::BINDING).to_u16(),
            0x0001
        );
        assert_eq!(
            MessageType::new(Class::SuccessResponse, Method::BINDING).to_u16(),
            0x0101
        );
        assert_eq!(
            MessageType::new(Class::ErrorResponse, Method::BINDING).to_u16(),
            0x0111
        );
        assert_eq!(
            MessageType::new(Class::Request, Method::ALLOCATE).to_u16(),
            0x0003
        );
        assert_eq!(
            MessageType::new(Class::Indication, Method::SEND).to_u16(),
            0x0016
        );
        assert_eq!(
            MessageType::new(Class::Indication, Method::DATA).to_u16(),
            0x0017
        );
        assert_eq!(
            MessageType::new(Class::ErrorResponse, Method::ALLOCATE).to_u16(),
            0x0113
        );
    }
}

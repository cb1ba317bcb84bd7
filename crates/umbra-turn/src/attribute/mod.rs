//! STUN/TURN attributes: type numbers, the typed [`Attribute`] value and its TLV value
//! encoding. The TLV framing and padding live in [`crate::message`] (decoding) and
//! [`crate::builder`] (encoding); this module only turns values into bytes and back.

mod address;
mod error_code;
mod password_algorithm;

use std::net::SocketAddr;

pub use address::AddressFamily;
pub use error_code::{ErrorCode, standard_reason};
pub use password_algorithm::PasswordAlgorithm;

use crate::error::{DecodeError, EncodeError};
use crate::header::TransactionId;

/// MAPPED-ADDRESS.
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME.
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY (HMAC-SHA1).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE.
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES.
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// CHANNEL-NUMBER (TURN).
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// LIFETIME (TURN).
pub const LIFETIME: u16 = 0x000D;
/// XOR-PEER-ADDRESS (TURN).
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (TURN).
pub const DATA: u16 = 0x0013;
/// REALM.
pub const REALM: u16 = 0x0014;
/// NONCE.
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS (TURN).
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY (TURN).
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT (TURN).
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT (TURN).
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT (TURN).
pub const DONT_FRAGMENT: u16 = 0x001A;
/// MESSAGE-INTEGRITY-SHA256.
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// PASSWORD-ALGORITHM.
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// USERHASH.
pub const USERHASH: u16 = 0x001E;
/// XOR-MAPPED-ADDRESS.
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN (TURN).
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// ADDITIONAL-ADDRESS-FAMILY (TURN, comprehension-optional).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// PASSWORD-ALGORITHMS.
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// SOFTWARE.
pub const SOFTWARE: u16 = 0x8022;
/// FINGERPRINT.
pub const FINGERPRINT: u16 = 0x8028;

/// IANA protocol number for UDP, the only REQUESTED-TRANSPORT RFC 8656 defines.
pub const PROTOCOL_UDP: u8 = 17;

/// Attribute types this crate understands (used to find unknown comprehension-required
/// attributes, which make a request fail with 420).
pub const KNOWN: &[u16] = &[
    MAPPED_ADDRESS,
    USERNAME,
    MESSAGE_INTEGRITY,
    ERROR_CODE,
    UNKNOWN_ATTRIBUTES,
    CHANNEL_NUMBER,
    LIFETIME,
    XOR_PEER_ADDRESS,
    DATA,
    REALM,
    NONCE,
    XOR_RELAYED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY,
    EVEN_PORT,
    REQUESTED_TRANSPORT,
    DONT_FRAGMENT,
    MESSAGE_INTEGRITY_SHA256,
    PASSWORD_ALGORITHM,
    USERHASH,
    XOR_MAPPED_ADDRESS,
    RESERVATION_TOKEN,
    ADDITIONAL_ADDRESS_FAMILY,
    PASSWORD_ALGORITHMS,
    SOFTWARE,
    FINGERPRINT,
];

/// True for types 0x0000..=0x7FFF, which a receiver must understand.
pub fn is_comprehension_required(typ: u16) -> bool {
    typ < 0x8000
}

/// One typed attribute value. Borrowed variants point into the decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    /// MAPPED-ADDRESS.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS.
    XorMappedAddress(SocketAddr),
    /// XOR-PEER-ADDRESS.
    XorPeerAddress(SocketAddr),
    /// XOR-RELAYED-ADDRESS.
    XorRelayedAddress(SocketAddr),
    /// USERNAME (at most 512 bytes).
    Username(&'a str),
    /// USERHASH (SHA-256 of `username ":" realm`).
    UserHash([u8; 32]),
    /// REALM (at most 763 bytes).
    Realm(&'a str),
    /// NONCE (at most 763 bytes).
    Nonce(&'a str),
    /// ERROR-CODE.
    ErrorCode(ErrorCode<'a>),
    /// UNKNOWN-ATTRIBUTES.
    UnknownAttributes(Vec<u16>),
    /// SOFTWARE (at most 763 bytes).
    Software(&'a str),
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// CHANNEL-NUMBER.
    ChannelNumber(u16),
    /// DATA.
    Data(&'a [u8]),
    /// REQUESTED-TRANSPORT protocol number (17 = UDP).
    RequestedTransport(u8),
    /// DONT-FRAGMENT (no value).
    DontFragment,
    /// EVEN-PORT with its R (reserve next port) bit.
    EvenPort(bool),
    /// RESERVATION-TOKEN.
    ReservationToken([u8; 8]),
    /// REQUESTED-ADDRESS-FAMILY.
    RequestedAddressFamily(AddressFamily),
    /// ADDITIONAL-ADDRESS-FAMILY.
    AdditionalAddressFamily(AddressFamily),
    /// PASSWORD-ALGORITHMS (the list the server offers).
    PasswordAlgorithms(Vec<PasswordAlgorithm>),
    /// PASSWORD-ALGORITHM (the one the client chose).
    PasswordAlgorithm(PasswordAlgorithm),
    /// MESSAGE-INTEGRITY value (20 bytes); use the builder to compute it.
    MessageIntegrity(&'a [u8]),
    /// MESSAGE-INTEGRITY-SHA256 value (16..=32 bytes); use the builder to compute it.
    MessageIntegritySha256(&'a [u8]),
    /// FINGERPRINT value; use the builder to compute it.
    Fingerprint(u32),
    /// Any attribute this crate does not interpret.
    Other {
        /// Attribute type.
        typ: u16,
        /// Raw value (without padding).
        value: &'a [u8],
    },
}

/// Decodes an XOR-PEER-ADDRESS value (used to collect several of them).
pub(crate) fn decode_xor_peer(v: &[u8], tid: &TransactionId) -> Result<SocketAddr, DecodeError> {
    address::decode_xor(XOR_PEER_ADDRESS, v, tid)
}

fn utf8(typ: u16, v: &[u8], max: usize) -> Result<&str, DecodeError> {
    if v.len() > max {
        return Err(DecodeError::InvalidAttribute {
            typ,
            reason: "value too long",
        });
    }
    std::str::from_utf8(v).map_err(|_| DecodeError::InvalidAttribute {
        typ,
        reason: "not UTF-8",
    })
}

fn fixed<const N: usize>(typ: u16, v: &[u8]) -> Result<[u8; N], DecodeError> {
    v.try_into().map_err(|_| DecodeError::InvalidAttribute {
        typ,
        reason: "wrong length",
    })
}

impl<'a> Attribute<'a> {
    /// The attribute type number.
    pub fn typ(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::XorPeerAddress(_) => XOR_PEER_ADDRESS,
            Attribute::XorRelayedAddress(_) => XOR_RELAYED_ADDRESS,
            Attribute::Username(_) => USERNAME,
            Attribute::UserHash(_) => USERHASH,
            Attribute::Realm(_) => REALM,
            Attribute::Nonce(_) => NONCE,
            Attribute::ErrorCode(_) => ERROR_CODE,
            Attribute::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Attribute::Software(_) => SOFTWARE,
            Attribute::Lifetime(_) => LIFETIME,
            Attribute::ChannelNumber(_) => CHANNEL_NUMBER,
            Attribute::Data(_) => DATA,
            Attribute::RequestedTransport(_) => REQUESTED_TRANSPORT,
            Attribute::DontFragment => DONT_FRAGMENT,
            Attribute::EvenPort(_) => EVEN_PORT,
            Attribute::ReservationToken(_) => RESERVATION_TOKEN,
            Attribute::RequestedAddressFamily(_) => REQUESTED_ADDRESS_FAMILY,
            Attribute::AdditionalAddressFamily(_) => ADDITIONAL_ADDRESS_FAMILY,
            Attribute::PasswordAlgorithms(_) => PASSWORD_ALGORITHMS,
            Attribute::PasswordAlgorithm(_) => PASSWORD_ALGORITHM,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::MessageIntegritySha256(_) => MESSAGE_INTEGRITY_SHA256,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::Other { typ, .. } => *typ,
        }
    }

    /// Decodes one attribute value (without padding) of type `typ`.
    pub fn decode(
        typ: u16,
        v: &'a [u8],
        tid: &TransactionId,
    ) -> Result<Attribute<'a>, DecodeError> {
        let bad = |reason| DecodeError::InvalidAttribute { typ, reason };
        Ok(match typ {
            MAPPED_ADDRESS => Attribute::MappedAddress(address::decode_plain(typ, v)?),
            XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(address::decode_xor(typ, v, tid)?),
            XOR_PEER_ADDRESS => Attribute::XorPeerAddress(address::decode_xor(typ, v, tid)?),
            XOR_RELAYED_ADDRESS => Attribute::XorRelayedAddress(address::decode_xor(typ, v, tid)?),
            USERNAME => Attribute::Username(utf8(typ, v, 512)?),
            USERHASH => Attribute::UserHash(fixed::<32>(typ, v)?),
            REALM => Attribute::Realm(utf8(typ, v, 763)?),
            NONCE => Attribute::Nonce(utf8(typ, v, 763)?),
            SOFTWARE => Attribute::Software(utf8(typ, v, 763)?),
            ERROR_CODE => Attribute::ErrorCode(ErrorCode::decode(v)?),
            UNKNOWN_ATTRIBUTES => {
                if !v.len().is_multiple_of(2) {
                    return Err(bad("odd length"));
                }
                Attribute::UnknownAttributes(
                    v.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            LIFETIME => Attribute::Lifetime(u32::from_be_bytes(fixed::<4>(typ, v)?)),
            CHANNEL_NUMBER => {
                let b = fixed::<4>(typ, v)?;
                Attribute::ChannelNumber(u16::from_be_bytes([b[0], b[1]]))
            }
            DATA => Attribute::Data(v),
            REQUESTED_TRANSPORT => Attribute::RequestedTransport(fixed::<4>(typ, v)?[0]),
            DONT_FRAGMENT => {
                if !v.is_empty() {
                    return Err(bad("must be empty"));
                }
                Attribute::DontFragment
            }
            EVEN_PORT => Attribute::EvenPort(fixed::<1>(typ, v)?[0] & 0x80 != 0),
            RESERVATION_TOKEN => Attribute::ReservationToken(fixed::<8>(typ, v)?),
            REQUESTED_ADDRESS_FAMILY | ADDITIONAL_ADDRESS_FAMILY => {
                let fam = AddressFamily::from_byte(fixed::<4>(typ, v)?[0])
                    .ok_or(bad("unknown family"))?;
                if typ == REQUESTED_ADDRESS_FAMILY {
                    Attribute::RequestedAddressFamily(fam)
                } else {
                    Attribute::AdditionalAddressFamily(fam)
                }
            }
            PASSWORD_ALGORITHMS => {
                Attribute::PasswordAlgorithms(PasswordAlgorithm::decode_list(typ, v)?)
            }
            PASSWORD_ALGORITHM => {
                let list = PasswordAlgorithm::decode_list(typ, v)?;
                match list.as_slice() {
                    [one] => Attribute::PasswordAlgorithm(*one),
                    _ => return Err(bad("expected exactly one algorithm")),
                }
            }
            MESSAGE_INTEGRITY => {
                if v.len() != 20 {
                    return Err(bad("wrong length"));
                }
                Attribute::MessageIntegrity(v)
            }
            MESSAGE_INTEGRITY_SHA256 => {
                if v.len() < 16 || v.len() > 32 || !v.len().is_multiple_of(4) {
                    return Err(bad("wrong length"));
                }
                Attribute::MessageIntegritySha256(v)
            }
            FINGERPRINT => Attribute::Fingerprint(u32::from_be_bytes(fixed::<4>(typ, v)?)),
            _ => Attribute::Other { typ, value: v },
        })
    }

    /// Appends the value (without TLV header or padding) to `out`.
    pub fn encode_value(&self, tid: &TransactionId, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let typ = self.typ();
        let text = |s: &str, max: usize, out: &mut Vec<u8>| {
            if s.len() > max {
                return Err(EncodeError::AttributeTooLong(typ));
            }
            out.extend_from_slice(s.as_bytes());
            Ok(())
        };
        match self {
            Attribute::MappedAddress(a) => address::encode_plain(a, out),
            Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => address::encode_xor(a, tid, out),
            Attribute::Username(s) => text(s, 512, out)?,
            Attribute::Realm(s) | Attribute::Nonce(s) | Attribute::Software(s) => {
                text(s, 763, out)?
            }
            Attribute::UserHash(h) => out.extend_from_slice(h),
            Attribute::ErrorCode(e) => e.encode(out)?,
            Attribute::UnknownAttributes(list) => list
                .iter()
                .for_each(|t| out.extend_from_slice(&t.to_be_bytes())),
            Attribute::Lifetime(s) => out.extend_from_slice(&s.to_be_bytes()),
            Attribute::ChannelNumber(n) => {
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Attribute::Data(d) => out.extend_from_slice(d),
            Attribute::RequestedTransport(p) => out.extend_from_slice(&[*p, 0, 0, 0]),
            Attribute::DontFragment => {}
            Attribute::EvenPort(r) => out.push(if *r { 0x80 } else { 0 }),
            Attribute::ReservationToken(t) => out.extend_from_slice(t),
            Attribute::RequestedAddressFamily(f) | Attribute::AdditionalAddressFamily(f) => {
                out.extend_from_slice(&[f.to_byte(), 0, 0, 0])
            }
            Attribute::PasswordAlgorithms(list) => list.iter().for_each(|a| a.encode(out)),
            Attribute::PasswordAlgorithm(a) => a.encode(out),
            Attribute::MessageIntegrity(v) | Attribute::MessageIntegritySha256(v) => {
                out.extend_from_slice(v)
            }
            Attribute::Fingerprint(f) => out.extend_from_slice(&f.to_be_bytes()),
            Attribute::Other { value, .. } => out.extend_from_slice(value),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(a: Attribute<'_>) {
        let tid = TransactionId([0x5a; 12]);
        let mut v = Vec::new();
        a.encode_value(&tid, &mut v).expect("encodable");
        let back = Attribute::decode(a.typ(), &v, &tid).expect("decodable");
        assert_eq!(back, a);
    }

    #[test]
    fn typed_round_trips() {
        let v4: SocketAddr = "203.0.113.9:4000".parse().expect("literal");
        let v6: SocketAddr = "[2001:db8::7]:65535".parse().expect("literal");
        for a in [
            Attribute::MappedAddress(v4),
            Attribute::MappedAddress(v6),
            Attribute::XorMappedAddress(v6),
            Attribute::XorPeerAddress(v4),
            Attribute::XorRelayedAddress(v6),
            Attribute::Username("alice"),
            Attribute::UserHash([3; 32]),
            Attribute::Realm("umbra"),
            Attribute::Nonce("abc"),
            Attribute::ErrorCode(ErrorCode {
                code: 438,
                reason: "Stale Nonce",
            }),
            Attribute::UnknownAttributes(vec![0x0031, 0x0032, 0x0033]),
            Attribute::Software("umbra"),
            Attribute::Lifetime(600),
            Attribute::ChannelNumber(0x4001),
            Attribute::Data(b"hello"),
            Attribute::RequestedTransport(PROTOCOL_UDP),
            Attribute::DontFragment,
            Attribute::EvenPort(true),
            Attribute::EvenPort(false),
            Attribute::ReservationToken([9; 8]),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
            Attribute::AdditionalAddressFamily(AddressFamily::V6),
            Attribute::PasswordAlgorithms(vec![PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5]),
            Attribute::PasswordAlgorithm(PasswordAlgorithm::Sha256),
            Attribute::Fingerprint(0xdead_beef),
            Attribute::Other {
                typ: 0x8055,
                value: b"xyz",
            },
        ] {
            round_trip(a);
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        let tid = TransactionId([0; 12]);
        assert!(Attribute::decode(LIFETIME, &[0, 0, 1], &tid).is_err());
        assert!(Attribute::decode(USERNAME, &[0xff, 0xfe], &tid).is_err());
        assert!(Attribute::decode(USERNAME, &[b'a'; 513], &tid).is_err());
        assert!(Attribute::decode(ERROR_CODE, &[0, 0, 7, 0], &tid).is_err());
        assert!(Attribute::decode(ERROR_CODE, &[0, 0, 4, 100], &tid).is_err());
        assert!(Attribute::decode(UNKNOWN_ATTRIBUTES, &[0, 1, 2], &tid).is_err());
        assert!(Attribute::decode(DONT_FRAGMENT, &[0], &tid).is_err());
        assert!(Attribute::decode(MESSAGE_INTEGRITY, &[0; 19], &tid).is_err());
        assert!(Attribute::decode(MESSAGE_INTEGRITY_SHA256, &[0; 12], &tid).is_err());
        assert!(Attribute::decode(MESSAGE_INTEGRITY_SHA256, &[0; 18], &tid).is_err());
        assert!(Attribute::decode(PASSWORD_ALGORITHMS, &[0, 1, 0, 9], &tid).is_err());
        assert!(Attribute::decode(PASSWORD_ALGORITHM, &[0, 1, 0, 0, 0, 2, 0, 0], &tid).is_err());
        assert!(Attribute::decode(REQUESTED_ADDRESS_FAMILY, &[9, 0, 0, 0], &tid).is_err());
        assert!(Attribute::decode(XOR_PEER_ADDRESS, &[0, 1, 0], &tid).is_err());
    }
}

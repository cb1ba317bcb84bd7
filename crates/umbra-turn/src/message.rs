//! Decoding a whole STUN message: header checks, attribute TLV walk with 4-byte padding,
//! the ordering rules around MESSAGE-INTEGRITY / FINGERPRINT, FINGERPRINT verification,
//! and typed accessors. Integrity verification needs a key and is done on demand by
//! [`Message::verify_integrity`].

use std::net::SocketAddr;

use subtle::ConstantTimeEq;

use crate::attribute::{self as attr, AddressFamily, Attribute, ErrorCode, PasswordAlgorithm};
use crate::error::{DecodeError, IntegrityError};
use crate::header::{Class, HEADER_LEN, Header, Method, TransactionId};
use crate::integrity::{self, IntegrityKind};

/// Position of one attribute inside the message.
#[derive(Debug, Clone, Copy)]
struct RawAttr {
    typ: u16,
    /// Offset of the 4-byte TLV header from the start of the message.
    offset: usize,
    len: usize,
}

/// A decoded STUN message borrowing the received bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    header: Header,
    attrs: Vec<RawAttr>,
    integrity: Option<RawAttr>,
    integrity_sha256: Option<RawAttr>,
}

impl<'a> Message<'a> {
    /// Decodes exactly one message occupying all of `bytes`.
    ///
    /// Checks the header, the length, every attribute's bounds and padding, that FINGERPRINT
    /// (if any) is last and correct. Attributes after MESSAGE-INTEGRITY other than
    /// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are ignored, as RFC 8489 §14.5 requires.
    pub fn decode(bytes: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let header = Header::decode(bytes)?;
        let total = HEADER_LEN + usize::from(header.length);
        if bytes.len() < total {
            return Err(DecodeError::Truncated);
        }
        if bytes.len() != total {
            return Err(DecodeError::LengthMismatch);
        }
        let mut msg = Message {
            raw: bytes,
            header,
            attrs: Vec::new(),
            integrity: None,
            integrity_sha256: None,
        };
        let mut offset = HEADER_LEN;
        let mut fingerprint_seen = false;
        while offset < total {
            let tlv = bytes
                .get(offset..offset + 4)
                .ok_or(DecodeError::Truncated)?;
            let typ = u16::from_be_bytes([tlv[0], tlv[1]]);
            let len = usize::from(u16::from_be_bytes([tlv[2], tlv[3]]));
            let padded = len.div_ceil(4) * 4;
            if offset + 4 + padded > total {
                return Err(DecodeError::AttributeOverflow(typ));
            }
            if fingerprint_seen {
                return Err(DecodeError::FingerprintNotLast);
            }
            let a = RawAttr { typ, offset, len };
            match typ {
                attr::FINGERPRINT => {
                    fingerprint_seen = true;
                    msg.check_fingerprint(a)?;
                }
                attr::MESSAGE_INTEGRITY
                    if msg.integrity.is_none() && msg.integrity_sha256.is_none() =>
                {
                    msg.integrity = Some(a)
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    msg.integrity_sha256 = Some(a)
                }
                _ if msg.integrity.is_some() || msg.integrity_sha256.is_some() => {}
                _ => msg.attrs.push(a),
            }
            offset += 4 + padded;
        }
        Ok(msg)
    }

    fn check_fingerprint(&self, a: RawAttr) -> Result<(), DecodeError> {
        let value = self.value(a);
        let got: [u8; 4] = value
            .try_into()
            .map_err(|_| DecodeError::InvalidAttribute {
                typ: attr::FINGERPRINT,
                reason: "wrong length",
            })?;
        let (head, rest) =
            integrity::covered(self.raw, a.offset, a.len).ok_or(DecodeError::BadFingerprint)?;
        if integrity::fingerprint(&[&head, rest]) != u32::from_be_bytes(got) {
            return Err(DecodeError::BadFingerprint);
        }
        Ok(())
    }

    fn value(&self, a: RawAttr) -> &'a [u8] {
        let raw: &'a [u8] = self.raw;
        raw.get(a.offset + 4..a.offset + 4 + a.len)
            .unwrap_or_default()
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The message class.
    pub fn class(&self) -> Class {
        self.header.message_type.class
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.header.message_type.method
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.header.transaction_id
    }

    /// The raw bytes this message was decoded from.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Types of all attributes before the integrity attribute(s), in order.
    pub fn attribute_types(&self) -> impl Iterator<Item = u16> + '_ {
        self.attrs.iter().map(|a| a.typ)
    }

    /// The raw value of the first attribute of type `typ`.
    pub fn raw_attribute(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs
            .iter()
            .find(|a| a.typ == typ)
            .map(|a| self.value(*a))
    }

    /// Decodes the first attribute of type `typ`.
    pub fn attribute(&self, typ: u16) -> Option<Result<Attribute<'a>, DecodeError>> {
        let tid = self.header.transaction_id;
        self.raw_attribute(typ)
            .map(|v| Attribute::decode(typ, v, &tid))
    }

    /// Decodes every attribute (before integrity) in order.
    pub fn attributes(&self) -> impl Iterator<Item = Result<Attribute<'a>, DecodeError>> + '_ {
        let tid = self.header.transaction_id;
        self.attrs
            .iter()
            .map(move |a| Attribute::decode(a.typ, self.value(*a), &tid))
    }

    /// Comprehension-required attribute types this crate does not understand.
    pub fn unknown_comprehension_required(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self
            .attribute_types()
            .filter(|t| attr::is_comprehension_required(*t) && !attr::KNOWN.contains(t))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn typed<T>(
        &self,
        typ: u16,
        f: impl FnOnce(Attribute<'a>) -> Option<T>,
    ) -> Result<Option<T>, DecodeError> {
        match self.attribute(typ) {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(a)) => Ok(f(a)),
        }
    }

    /// USERNAME.
    pub fn username(&self) -> Result<Option<&'a str>, DecodeError> {
        self.typed(attr::USERNAME, |a| {
            if let Attribute::Username(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// USERHASH.
    pub fn userhash(&self) -> Result<Option<[u8; 32]>, DecodeError> {
        self.typed(attr::USERHASH, |a| {
            if let Attribute::UserHash(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// REALM.
    pub fn realm(&self) -> Result<Option<&'a str>, DecodeError> {
        self.typed(attr::REALM, |a| {
            if let Attribute::Realm(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// NONCE.
    pub fn nonce(&self) -> Result<Option<&'a str>, DecodeError> {
        self.typed(attr::NONCE, |a| {
            if let Attribute::Nonce(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// SOFTWARE.
    pub fn software(&self) -> Result<Option<&'a str>, DecodeError> {
        self.typed(attr::SOFTWARE, |a| {
            if let Attribute::Software(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// ERROR-CODE.
    pub fn error_code(&self) -> Result<Option<ErrorCode<'a>>, DecodeError> {
        self.typed(attr::ERROR_CODE, |a| {
            if let Attribute::ErrorCode(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// UNKNOWN-ATTRIBUTES.
    pub fn unknown_attributes(&self) -> Result<Option<Vec<u16>>, DecodeError> {
        self.typed(attr::UNKNOWN_ATTRIBUTES, |a| {
            if let Attribute::UnknownAttributes(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// MAPPED-ADDRESS.
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, DecodeError> {
        self.typed(attr::MAPPED_ADDRESS, |a| {
            if let Attribute::MappedAddress(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(&self) -> Result<Option<SocketAddr>, DecodeError> {
        self.typed(attr::XOR_MAPPED_ADDRESS, |a| {
            if let Attribute::XorMappedAddress(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// XOR-RELAYED-ADDRESS.
    pub fn xor_relayed_address(&self) -> Result<Option<SocketAddr>, DecodeError> {
        self.typed(attr::XOR_RELAYED_ADDRESS, |a| {
            if let Attribute::XorRelayedAddress(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// The first XOR-PEER-ADDRESS.
    pub fn xor_peer_address(&self) -> Result<Option<SocketAddr>, DecodeError> {
        self.typed(attr::XOR_PEER_ADDRESS, |a| {
            if let Attribute::XorPeerAddress(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several).
    pub fn xor_peer_addresses(&self) -> Result<Vec<SocketAddr>, DecodeError> {
        let tid = self.header.transaction_id;
        self.attrs
            .iter()
            .filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
            .map(|a| crate::attribute::decode_xor_peer(self.value(*a), &tid))
            .collect()
    }

    /// LIFETIME in seconds.
    pub fn lifetime(&self) -> Result<Option<u32>, DecodeError> {
        self.typed(attr::LIFETIME, |a| {
            if let Attribute::Lifetime(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// CHANNEL-NUMBER.
    pub fn channel_number(&self) -> Result<Option<u16>, DecodeError> {
        self.typed(attr::CHANNEL_NUMBER, |a| {
            if let Attribute::ChannelNumber(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// DATA.
    pub fn data(&self) -> Result<Option<&'a [u8]>, DecodeError> {
        self.typed(attr::DATA, |a| {
            if let Attribute::Data(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// REQUESTED-TRANSPORT protocol number.
    pub fn requested_transport(&self) -> Result<Option<u8>, DecodeError> {
        self.typed(attr::REQUESTED_TRANSPORT, |a| {
            if let Attribute::RequestedTransport(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// Whether DONT-FRAGMENT is present.
    pub fn dont_fragment(&self) -> bool {
        self.raw_attribute(attr::DONT_FRAGMENT).is_some()
    }

    /// EVEN-PORT's R bit, if EVEN-PORT is present.
    pub fn even_port(&self) -> Result<Option<bool>, DecodeError> {
        self.typed(attr::EVEN_PORT, |a| {
            if let Attribute::EvenPort(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// RESERVATION-TOKEN.
    pub fn reservation_token(&self) -> Result<Option<[u8; 8]>, DecodeError> {
        self.typed(attr::RESERVATION_TOKEN, |a| {
            if let Attribute::ReservationToken(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// REQUESTED-ADDRESS-FAMILY.
    pub fn requested_address_family(&self) -> Result<Option<AddressFamily>, DecodeError> {
        self.typed(attr::REQUESTED_ADDRESS_FAMILY, |a| {
            if let Attribute::RequestedAddressFamily(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// PASSWORD-ALGORITHMS.
    pub fn password_algorithms(&self) -> Result<Option<Vec<PasswordAlgorithm>>, DecodeError> {
        self.typed(attr::PASSWORD_ALGORITHMS, |a| {
            if let Attribute::PasswordAlgorithms(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// PASSWORD-ALGORITHM.
    pub fn password_algorithm(&self) -> Result<Option<PasswordAlgorithm>, DecodeError> {
        self.typed(attr::PASSWORD_ALGORITHM, |a| {
            if let Attribute::PasswordAlgorithm(v) = a {
                Some(v)
            } else {
                None
            }
        })
    }

    /// Which integrity attribute the message carries (SHA-256 preferred when both are).
    pub fn integrity_kind(&self) -> Option<IntegrityKind> {
        if self.integrity_sha256.is_some() {
            Some(IntegrityKind::Sha256)
        } else if self.integrity.is_some() {
            Some(IntegrityKind::Sha1)
        } else {
            None
        }
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY, with `key`
    /// (the short-term password or the long-term key). Returns which one was checked.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityKind, IntegrityError> {
        if let Some(a) = self.integrity_sha256 {
            let got = self.value(a);
            if got.len() < 16 || got.len() > 32 || !got.len().is_multiple_of(4) {
                return Err(IntegrityError::Malformed);
            }
            let (head, rest) =
                integrity::covered(self.raw, a.offset, a.len).ok_or(IntegrityError::Malformed)?;
            let want = integrity::hmac_sha256(key, &[&head, rest]);
            return if bool::from(want[..got.len()].ct_eq(got)) {
                Ok(IntegrityKind::Sha256)
            } else {
                Err(IntegrityError::Mismatch)
            };
        }
        if let Some(a) = self.integrity {
            let got = self.value(a);
            if got.len() != 20 {
                return Err(IntegrityError::Malformed);
            }
            let (head, rest) =
                integrity::covered(self.raw, a.offset, a.len).ok_or(IntegrityError::Malformed)?;
            let want = integrity::hmac_sha1(key, &[&head, rest]);
            return if bool::from(want.ct_eq(got)) {
                Ok(IntegrityKind::Sha1)
            } else {
                Err(IntegrityError::Mismatch)
            };
        }
        Err(IntegrityError::Missing)
    }
}

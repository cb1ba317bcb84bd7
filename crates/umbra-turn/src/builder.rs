//! Building STUN messages: the header, attribute TLVs with zero padding, and the trailing
//! MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 / FINGERPRINT attributes, each computed
//! with the header length adjusted to end at that attribute (RFC 8489 §14.5–14.7).

use crate::attribute::{self as attr, Attribute};
use crate::error::EncodeError;
use crate::header::{Class, HEADER_LEN, Header, MessageType, Method, TransactionId};
use crate::integrity;

/// Where the builder is in the attribute order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Attributes,
    Integrity,
    IntegritySha256,
    Fingerprint,
}

/// Builds one STUN message. Errors are remembered and reported by [`MessageBuilder::build`],
/// so calls can be chained.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    tid: TransactionId,
    stage: Stage,
    error: Option<EncodeError>,
}

impl MessageBuilder {
    /// Starts a message of the given class and method.
    pub fn new(class: Class, method: Method, tid: TransactionId) -> MessageBuilder {
        let mut buf = Vec::with_capacity(128);
        Header {
            message_type: MessageType::new(class, method),
            length: 0,
            transaction_id: tid,
        }
        .write(&mut buf);
        MessageBuilder {
            buf,
            tid,
            stage: Stage::Attributes,
            error: None,
        }
    }

    /// The transaction id of the message being built.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    fn set_len(&mut self) -> Result<(), EncodeError> {
        let len =
            u16::try_from(self.buf.len() - HEADER_LEN).map_err(|_| EncodeError::MessageTooLong)?;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn push_tlv(&mut self, typ: u16, value: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(value.len()).map_err(|_| EncodeError::AttributeTooLong(typ))?;
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self.set_len()
    }

    /// Appends an attribute.
    pub fn attr(mut self, attribute: &Attribute<'_>) -> MessageBuilder {
        if self.error.is_some() {
            return self;
        }
        if self.stage != Stage::Attributes {
            self.error = Some(EncodeError::AttributeAfterIntegrity);
            return self;
        }
        let mut value = Vec::new();
        let result = attribute
            .encode_value(&self.tid, &mut value)
            .and_then(|()| self.push_tlv(attribute.typ(), &value));
        if let Err(e) = result {
            self.error = Some(e);
        }
        self
    }

    /// Appends an attribute when `attribute` is `Some`.
    pub fn attr_opt(self, attribute: Option<&Attribute<'_>>) -> MessageBuilder {
        match attribute {
            Some(a) => self.attr(a),
            None => self,
        }
    }

    fn trailer(
        mut self,
        stage: Stage,
        typ: u16,
        len: usize,
        f: impl FnOnce(&[&[u8]]) -> Vec<u8>,
    ) -> MessageBuilder {
        if self.error.is_some() {
            return self;
        }
        if self.stage >= stage {
            self.error = Some(EncodeError::AttributeAfterIntegrity);
            return self;
        }
        let offset = self.buf.len();
        // Placeholder value so that the length field covers this attribute.
        if let Err(e) = self.push_tlv(typ, &vec![0; len]) {
            self.error = Some(e);
            return self;
        }
        let value = match integrity::covered(&self.buf, offset, len) {
            Some((head, rest)) => f(&[&head, rest]),
            None => {
                self.error = Some(EncodeError::MessageTooLong);
                return self;
            }
        };
        self.buf[offset + 4..offset + 4 + len].copy_from_slice(&value[..len]);
        self.stage = stage;
        self
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1) keyed with `key`.
    pub fn message_integrity(self, key: &[u8]) -> MessageBuilder {
        self.trailer(Stage::Integrity, attr::MESSAGE_INTEGRITY, 20, |p| {
            integrity::hmac_sha1(key, p).to_vec()
        })
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, full 32 bytes) keyed with `key`.
    pub fn message_integrity_sha256(self, key: &[u8]) -> MessageBuilder {
        self.trailer(
            Stage::IntegritySha256,
            attr::MESSAGE_INTEGRITY_SHA256,
            32,
            |p| integrity::hmac_sha256(key, p).to_vec(),
        )
    }

    /// Appends the integrity attribute of the given kind.
    pub fn integrity(self, kind: integrity::IntegrityKind, key: &[u8]) -> MessageBuilder {
        match kind {
            integrity::IntegrityKind::Sha1 => self.message_integrity(key),
            integrity::IntegrityKind::Sha256 => self.message_integrity_sha256(key),
        }
    }

    /// Appends FINGERPRINT; must be last.
    pub fn fingerprint(self) -> MessageBuilder {
        self.trailer(Stage::Fingerprint, attr::FINGERPRINT, 4, |p| {
            integrity::fingerprint(p).to_be_bytes().to_vec()
        })
    }

    /// Finishes the message.
    pub fn build(self) -> Result<Vec<u8>, EncodeError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }
}

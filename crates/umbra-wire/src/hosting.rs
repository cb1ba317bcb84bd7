//! Hosting statements: who can read a business's chats.
//!
//! A business's device carries a [`Hosting`] in its MLS leaf (a leaf node
//! extension of type [`EXTENSION_TYPE`]): the business's own statement, signed
//! by the key its leaf is signed with, that it runs its own endpoint, or that
//! a host (named, with its key) runs it; in the second case the host
//! countersigns. Customers' clients label a business chat from this
//! statement and nothing else, and since it lives in the leaf, it changes only
//! through an MLS commit that every member of the chat applies.
//!
//! This module holds the bytes each signature covers, the shape rules and the
//! check; signing is done by whoever holds the keys (the business's device,
//! the host's daemon).

use prost::Message;

use crate::business::signed_bytes;
use crate::e2e::{Hosting, HostingStatement};
use crate::signature::verify;

/// The MLS leaf node extension type that carries an encoded [`Hosting`]
/// (a private-use value, not a GREASE one).
pub const EXTENSION_TYPE: u16 = 0xF0B1;
/// What the business's signature covers: this, then the encoded statement.
pub const BUSINESS_CONTEXT: &[u8] = b"umbra-hosting-v1";
/// What the host's countersignature covers: this, then the encoded statement.
pub const HOST_CONTEXT: &[u8] = b"umbra-hosting-host-v1";

/// Who runs a business's endpoint, as a checked statement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// The business itself: its chats are end to end with it.
    SelfHosted,
    /// A host the business lets hold its keys: the host can read its chats.
    Hosted {
        /// What the host calls itself.
        name: String,
        /// The host's Ed25519 key.
        key: [u8; 32],
    },
}

/// Why a hosting statement is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostingError {
    /// It cannot be read, or has a bad shape.
    #[error("its hosting statement is malformed")]
    Malformed,
    /// It is about another account or another device key.
    #[error("its hosting statement names another account or key")]
    NotTheirs,
    /// The business's own signature is bad.
    #[error("its hosting statement is not signed by the business's key")]
    BadBusinessSignature,
    /// It names a host, but the host did not countersign it.
    #[error("its hosting statement names a host that did not sign it")]
    BadHostSignature,
}

/// Whether `name` can be a host's name: 1 to 64 characters, no control
/// characters, not blank.
pub fn valid_host_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=64).contains(&n) && !name.chars().any(char::is_control) && !name.trim().is_empty()
}

/// Something that signs the bytes it is given with a key it holds.
pub type Sign<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;

/// Makes an encoded [`Hosting`] from `statement`, signed with `business`
/// (the device's identity key) and, when the statement names a host, with
/// `host` (the host's key). Each signer gets the bytes to sign.
pub fn make(
    statement: &HostingStatement,
    business: impl FnOnce(&[u8]) -> Vec<u8>,
    host: Option<Sign<'_>>,
) -> Vec<u8> {
    let encoded = statement.encode_to_vec();
    let business_signature = business(&signed_bytes(BUSINESS_CONTEXT, &encoded));
    let host_signature = host
        .map(|sign| sign(&signed_bytes(HOST_CONTEXT, &encoded)))
        .unwrap_or_default();
    Hosting {
        statement: encoded,
        business_signature,
        host_signature,
    }
    .encode_to_vec()
}

/// Decodes the statement inside an encoded [`Hosting`], unchecked (to
/// compare with another, or to show what it claims).
pub fn statement_of(encoded: &[u8]) -> Result<HostingStatement, HostingError> {
    let h = Hosting::decode(encoded).map_err(|_| HostingError::Malformed)?;
    HostingStatement::decode(h.statement.as_slice()).map_err(|_| HostingError::Malformed)
}

/// Checks an encoded [`Hosting`] found in the leaf of `username`'s device
/// whose leaf key is `identity_key`.
pub fn check(encoded: &[u8], username: &str, identity_key: &[u8]) -> Result<Host, HostingError> {
    let h = Hosting::decode(encoded).map_err(|_| HostingError::Malformed)?;
    let s =
        HostingStatement::decode(h.statement.as_slice()).map_err(|_| HostingError::Malformed)?;
    if s.username != username || s.identity_key != identity_key {
        return Err(HostingError::NotTheirs);
    }
    if !verify(
        identity_key,
        &signed_bytes(BUSINESS_CONTEXT, &h.statement),
        &h.business_signature,
    ) {
        return Err(HostingError::BadBusinessSignature);
    }
    if s.host_name.is_empty() && s.host_key.is_empty() {
        if !h.host_signature.is_empty() {
            return Err(HostingError::Malformed);
        }
        return Ok(Host::SelfHosted);
    }
    if !valid_host_name(&s.host_name) {
        return Err(HostingError::Malformed);
    }
    let key: [u8; 32] = s
        .host_key
        .as_slice()
        .try_into()
        .map_err(|_| HostingError::Malformed)?;
    if !verify(
        &key,
        &signed_bytes(HOST_CONTEXT, &h.statement),
        &h.host_signature,
    ) {
        return Err(HostingError::BadHostSignature);
    }
    Ok(Host::Hosted {
        name: s.host_name,
        key,
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn statement(business: &SigningKey, host: Option<(&str, &SigningKey)>) -> HostingStatement {
        HostingStatement {
            username: "acme".into(),
            identity_key: business.verifying_key().to_bytes().to_vec(),
            host_name: host.map(|(n, _)| n.to_string()).unwrap_or_default(),
            host_key: host
                .map(|(_, k)| k.verifying_key().to_bytes().to_vec())
                .unwrap_or_default(),
            issued_unix: 1,
        }
    }

    fn signer(k: &SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        move |m| k.sign(m).to_bytes().to_vec()
    }

    #[test]
    fn self_hosted_and_hosted_statements_check() {
        let acme = SigningKey::from_bytes(&[1; 32]);
        let host = SigningKey::from_bytes(&[2; 32]);
        let key = acme.verifying_key().to_bytes();
        let own = make(&statement(&acme, None), signer(&acme), None);
        assert_eq!(check(&own, "acme", &key), Ok(Host::SelfHosted));
        let hosted = make(
            &statement(&acme, Some(("HostCo", &host))),
            signer(&acme),
            Some(&signer(&host)),
        );
        assert_eq!(
            check(&hosted, "acme", &key),
            Ok(Host::Hosted {
                name: "HostCo".into(),
                key: host.verifying_key().to_bytes()
            })
        );
        assert_eq!(
            statement_of(&hosted).map(|s| s.host_name),
            Ok("HostCo".into())
        );
    }

    #[test]
    fn forged_and_stripped_statements_are_refused() {
        let acme = SigningKey::from_bytes(&[1; 32]);
        let host = SigningKey::from_bytes(&[2; 32]);
        let mallory = SigningKey::from_bytes(&[3; 32]);
        let key = acme.verifying_key().to_bytes();
        // Another account's or another device's statement.
        let own = make(&statement(&acme, None), signer(&acme), None);
        assert_eq!(check(&own, "acme2", &key), Err(HostingError::NotTheirs));
        let other_key = mallory.verifying_key().to_bytes();
        assert_eq!(
            check(&own, "acme", &other_key),
            Err(HostingError::NotTheirs)
        );
        // Not signed by the business.
        let forged = make(&statement(&acme, None), signer(&mallory), None);
        assert_eq!(
            check(&forged, "acme", &key),
            Err(HostingError::BadBusinessSignature)
        );
        // A host named but the countersignature missing, or by another key.
        let s = statement(&acme, Some(("HostCo", &host)));
        let unsigned = make(&s, signer(&acme), None);
        assert_eq!(
            check(&unsigned, "acme", &key),
            Err(HostingError::BadHostSignature)
        );
        let wrong = make(&s, signer(&acme), Some(&signer(&mallory)));
        assert_eq!(
            check(&wrong, "acme", &key),
            Err(HostingError::BadHostSignature)
        );
        // The host stripped from a hosted statement: the business's
        // signature no longer covers what is left.
        let hosted = make(&s, signer(&acme), Some(&signer(&host)));
        let mut h = Hosting::decode(hosted.as_slice()).expect("decode");
        let mut inner = HostingStatement::decode(h.statement.as_slice()).expect("inner");
        inner.host_name.clear();
        inner.host_key.clear();
        h.statement = inner.encode_to_vec();
        h.host_signature.clear();
        assert_eq!(
            check(&h.encode_to_vec(), "acme", &key),
            Err(HostingError::BadBusinessSignature)
        );
        // A self-hosted statement with a stray countersignature, a bad
        // name, garbage.
        let mut stray = Hosting::decode(own.as_slice()).expect("decode");
        stray.host_signature = vec![0; 64];
        assert_eq!(
            check(&stray.encode_to_vec(), "acme", &key),
            Err(HostingError::Malformed)
        );
        let bad_name = make(
            &statement(&acme, Some(("Host\nCo", &host))),
            signer(&acme),
            Some(&signer(&host)),
        );
        assert_eq!(check(&bad_name, "acme", &key), Err(HostingError::Malformed));
        assert_eq!(
            check(b"\xff\xff", "acme", &key),
            Err(HostingError::Malformed)
        );
    }
}

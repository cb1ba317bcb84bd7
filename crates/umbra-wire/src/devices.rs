//! An account's devices, as its account key vouches for them.
//!
//! Every account has an Ed25519 **account key**, held by the device that
//! created the account. It signs two things:
//!
//! - a [`CertifiedDevice`] for each of its devices (username, the device's
//!   identity and sealing keys), carried in the device's MLS leaf (extension
//!   [`CERTIFICATE_EXTENSION`]), so a group member checks from the group
//!   alone that a leaf belongs to the account it names;
//! - the [`DeviceList`] (versioned), which the server stores and serves, so
//!   a client knows which devices to encrypt to and that none was added or
//!   kept behind the account's back.
//!
//! This module holds the bytes each signature covers, the shape rules and
//! the checks; the server checks lists with it too.

use prost::Message;

use crate::business::signed_bytes;
use crate::e2e::{CertifiedDevice, DeviceCertificate};
use crate::proto::{DeviceKeys, DeviceList, SignedDeviceList};
use crate::signature::verify;

/// The MLS leaf node extension type of a [`CertifiedDevice`].
pub const CERTIFICATE_EXTENSION: u16 = 0xF0B2;
/// What a device certificate's signature covers: this, then the certificate.
pub const CERTIFICATE_CONTEXT: &[u8] = b"umbra-device-v1";
/// What a device list's signature covers: this, then the encoded list.
pub const LIST_CONTEXT: &[u8] = b"umbra-device-list-v1";
/// The most devices an account may have (the first one included): each
/// is a member of every conversation, so every message is sealed once per
/// device of every member.
pub const MAX_DEVICES: usize = 6;

/// Why a certificate or a list is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// It cannot be read or has a bad shape.
    #[error("its device certificate or list is malformed")]
    Malformed,
    /// It is about another account or another device.
    #[error("its device certificate names another account or device")]
    NotTheirs,
    /// The account key's signature does not verify.
    #[error("it is not signed by the account's key")]
    BadSignature,
    /// Signed by a key other than the one expected for the account.
    #[error("it is signed by another account key than the one known for the account")]
    OtherAccountKey,
    /// More devices than an account may have.
    #[error("it lists more than {MAX_DEVICES} devices")]
    TooMany,
}

/// A device certificate that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    /// The account key that signed it.
    pub account_key: [u8; 32],
    /// The device's sealing key.
    pub sealing_key: [u8; 32],
}

fn key32(bytes: &[u8]) -> Result<[u8; 32], DeviceError> {
    bytes.try_into().map_err(|_| DeviceError::Malformed)
}

/// An encoded [`CertifiedDevice`] for `certificate`, signed by `sign` (the
/// account key), which is given the bytes to sign.
pub fn certify<E>(
    certificate: &DeviceCertificate,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let encoded = certificate.encode_to_vec();
    let signature = sign(&signed_bytes(CERTIFICATE_CONTEXT, &encoded))?;
    Ok(CertifiedDevice {
        certificate: encoded,
        signature,
    }
    .encode_to_vec())
}

/// Checks an encoded [`CertifiedDevice`] found in the leaf of `username`'s
/// device whose leaf key is `identity_key`.
pub fn check_certificate(
    encoded: &[u8],
    username: &str,
    identity_key: &[u8],
) -> Result<Certified, DeviceError> {
    let c = CertifiedDevice::decode(encoded).map_err(|_| DeviceError::Malformed)?;
    let cert =
        DeviceCertificate::decode(c.certificate.as_slice()).map_err(|_| DeviceError::Malformed)?;
    if cert.username != username || cert.identity_key != identity_key {
        return Err(DeviceError::NotTheirs);
    }
    let account_key = key32(&cert.account_key)?;
    let sealing_key = key32(&cert.sealing_key)?;
    if !verify(
        &account_key,
        &signed_bytes(CERTIFICATE_CONTEXT, &c.certificate),
        &c.signature,
    ) {
        return Err(DeviceError::BadSignature);
    }
    Ok(Certified {
        account_key,
        sealing_key,
    })
}

/// `list` signed by `sign` (the account key), which is given the bytes.
pub fn sign_list<E>(
    list: &DeviceList,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<SignedDeviceList, E> {
    let encoded = list.encode_to_vec();
    let signature = sign(&signed_bytes(LIST_CONTEXT, &encoded))?;
    Ok(SignedDeviceList {
        list: encoded,
        signature,
    })
}

/// Checks a signed list of `username`'s devices: its shape, and its
/// signature by the account key it names, which must be `account_key` when
/// one is known. Returns the list.
pub fn check_list(
    signed: &SignedDeviceList,
    username: &str,
    account_key: Option<&[u8]>,
) -> Result<DeviceList, DeviceError> {
    let list = DeviceList::decode(signed.list.as_slice()).map_err(|_| DeviceError::Malformed)?;
    if list.username != username {
        return Err(DeviceError::NotTheirs);
    }
    let key = key32(&list.account_key)?;
    if account_key.is_some_and(|k| k != key) {
        return Err(DeviceError::OtherAccountKey);
    }
    if list.devices.is_empty() || list.version == 0 {
        return Err(DeviceError::Malformed);
    }
    if list.devices.len() > MAX_DEVICES {
        return Err(DeviceError::TooMany);
    }
    for (i, d) in list.devices.iter().enumerate() {
        key32(&d.identity_key)?;
        key32(&d.sealing_key)?;
        if list.devices[..i]
            .iter()
            .any(|e| e.identity_key == d.identity_key)
        {
            return Err(DeviceError::Malformed);
        }
    }
    if !verify(
        &key,
        &signed_bytes(LIST_CONTEXT, &signed.list),
        &signed.signature,
    ) {
        return Err(DeviceError::BadSignature);
    }
    Ok(list)
}

/// Whether `list` names the device with these keys.
pub fn lists(list: &DeviceList, identity_key: &[u8], sealing_key: &[u8]) -> bool {
    list.devices
        .iter()
        .any(|d: &DeviceKeys| d.identity_key == identity_key && d.sealing_key == sealing_key)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn signer(k: &SigningKey) -> impl Fn(&[u8]) -> Result<Vec<u8>, ()> + '_ {
        move |m| Ok(k.sign(m).to_bytes().to_vec())
    }

    fn device(n: u8) -> DeviceKeys {
        DeviceKeys {
            identity_key: vec![n; 32],
            sealing_key: vec![n + 100; 32],
        }
    }

    fn list(account: &SigningKey, version: u64, devices: Vec<DeviceKeys>) -> DeviceList {
        DeviceList {
            username: "bob".into(),
            account_key: account.verifying_key().to_bytes().to_vec(),
            version,
            devices,
        }
    }

    #[test]
    fn a_certificate_checks_for_its_device_only() {
        let account = SigningKey::from_bytes(&[1; 32]);
        let cert = DeviceCertificate {
            username: "bob".into(),
            identity_key: vec![5; 32],
            sealing_key: vec![6; 32],
            account_key: account.verifying_key().to_bytes().to_vec(),
        };
        let encoded = certify(&cert, signer(&account)).expect("signed");
        let ok = check_certificate(&encoded, "bob", &[5; 32]).expect("checks");
        assert_eq!(ok.account_key, account.verifying_key().to_bytes());
        assert_eq!(ok.sealing_key, [6; 32]);
        assert_eq!(
            check_certificate(&encoded, "bob", &[7; 32]),
            Err(DeviceError::NotTheirs)
        );
        assert_eq!(
            check_certificate(&encoded, "alice", &[5; 32]),
            Err(DeviceError::NotTheirs)
        );
        // Signed by a key other than the one it names: a forgery.
        let mallory = SigningKey::from_bytes(&[3; 32]);
        let forged = certify(&cert, signer(&mallory)).expect("signed");
        assert_eq!(
            check_certificate(&forged, "bob", &[5; 32]),
            Err(DeviceError::BadSignature)
        );
        assert_eq!(
            check_certificate(b"\xff\x01", "bob", &[5; 32]),
            Err(DeviceError::Malformed)
        );
    }

    #[test]
    fn a_list_checks_under_its_account_key_only() {
        let account = SigningKey::from_bytes(&[1; 32]);
        let key = account.verifying_key().to_bytes();
        let signed = sign_list(
            &list(&account, 2, vec![device(1), device(2)]),
            signer(&account),
        )
        .expect("signed");
        let l = check_list(&signed, "bob", Some(&key)).expect("checks");
        assert!(lists(&l, &[2; 32], &[102; 32]));
        assert!(!lists(&l, &[2; 32], &[103; 32]));
        assert_eq!(
            check_list(&signed, "carol", None),
            Err(DeviceError::NotTheirs)
        );
        // A list a server made up under a key of its own.
        let mallory = SigningKey::from_bytes(&[3; 32]);
        let made_up = sign_list(
            &list(&mallory, 9, vec![device(1), device(9)]),
            signer(&mallory),
        )
        .expect("signed");
        assert!(check_list(&made_up, "bob", None).is_ok());
        assert_eq!(
            check_list(&made_up, "bob", Some(&key)),
            Err(DeviceError::OtherAccountKey)
        );
        // A device slipped into a signed list.
        let mut l = list(&account, 2, vec![device(1)]);
        let mut tampered = sign_list(&l, signer(&account)).expect("signed");
        l.devices.push(device(9));
        tampered.list = l.encode_to_vec();
        assert_eq!(
            check_list(&tampered, "bob", Some(&key)),
            Err(DeviceError::BadSignature)
        );
        let too_many = sign_list(
            &list(&account, 2, (1..=7).map(device).collect()),
            signer(&account),
        )
        .expect("signed");
        assert_eq!(
            check_list(&too_many, "bob", Some(&key)),
            Err(DeviceError::TooMany)
        );
        let twice = sign_list(
            &list(&account, 2, vec![device(1), device(1)]),
            signer(&account),
        )
        .expect("signed");
        assert_eq!(
            check_list(&twice, "bob", Some(&key)),
            Err(DeviceError::Malformed)
        );
    }
}

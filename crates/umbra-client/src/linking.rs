//! This account's own devices: the account key (on the device that made
//! the account), this device's certificate, and the account's signed
//! device list as this device last saw it.

use prost::Message;
use rusqlite::Connection;
use umbra_crypto::{AccountKey, Identity};
use umbra_wire::devices;
use umbra_wire::e2e::DeviceCertificate;
use umbra_wire::proto::{DeviceKeys, DeviceList, SignedDeviceList};

use crate::ClientError;
use crate::profile::{get_setting, set_setting};

/// The account's device list as this device last saw it.
pub(crate) fn own_list(conn: &Connection) -> Result<Option<DeviceList>, ClientError> {
    let Some(bytes) = get_setting(conn, "device_list")? else {
        return Ok(None);
    };
    let signed = SignedDeviceList::decode(bytes.as_slice())
        .map_err(|_| ClientError::Protocol("corrupt device list in the profile".into()))?;
    Ok(DeviceList::decode(signed.list.as_slice()).ok())
}

/// How many devices the account has, as this device last saw.
pub(crate) fn own_device_count(conn: &Connection) -> Result<usize, ClientError> {
    Ok(own_list(conn)?.map(|l| l.devices.len()).unwrap_or(1))
}

/// The certificate `account` signs for the device `identity`.
pub(crate) fn certify(account: &AccountKey, identity: &Identity) -> Result<Vec<u8>, ClientError> {
    let keys = DeviceKeys {
        identity_key: identity.identity_key(),
        sealing_key: identity.sealing_key().to_vec(),
    };
    certify_device(account, identity.username(), &keys)
}

/// The certificate `account` signs for `username`'s device with `keys`.
pub(crate) fn certify_device(
    account: &AccountKey,
    username: &str,
    keys: &DeviceKeys,
) -> Result<Vec<u8>, ClientError> {
    let cert = DeviceCertificate {
        username: username.to_string(),
        identity_key: keys.identity_key.clone(),
        sealing_key: keys.sealing_key.clone(),
        account_key: account.public(),
    };
    Ok(devices::certify(&cert, |m| account.sign(m))?)
}

/// `devices` at `version`, signed by `account`.
pub(crate) fn sign_list(
    account: &AccountKey,
    username: &str,
    version: u64,
    devices: Vec<DeviceKeys>,
) -> Result<SignedDeviceList, ClientError> {
    let list = DeviceList {
        username: username.to_string(),
        account_key: account.public(),
        version,
        devices,
    };
    Ok(devices::sign_list(&list, |m| account.sign(m))?)
}

/// Keeps what makes this device one of the account's: its certificate,
/// the account's public key and the latest list.
pub(crate) fn keep(
    conn: &Connection,
    account_key: &[u8],
    certificate: &[u8],
    list: &SignedDeviceList,
) -> Result<(), ClientError> {
    set_setting(conn, "account_key", account_key)?;
    set_setting(conn, "device_certificate", certificate)?;
    set_setting(conn, "device_list", &list.encode_to_vec())?;
    Ok(())
}

/// The secret a link code carries: 16 random bytes from which both devices
/// derive where they meet on the server (two slots) and the key that seals
/// what they leave there. The server sees the slots, never the secret.
#[derive(Clone)]
pub struct LinkSecret([u8; 16]);

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSecret(..)")
    }
}

/// Which way a sealed link message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leg {
    /// New device to existing device.
    Request,
    /// Existing device to new device.
    Reply,
}

impl LinkSecret {
    /// A fresh secret.
    pub fn generate() -> Self {
        Self(crate::client::random_bytes())
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"umbra-link-v1 ");
        h.update(label);
        h.update(self.0);
        h.finalize().into()
    }

    /// The slot a message of `leg` is left in.
    pub(crate) fn slot(&self, leg: Leg) -> Vec<u8> {
        let d = self.derive(match leg {
            Leg::Request => b"request slot",
            Leg::Reply => b"reply slot",
        });
        d[..16].to_vec()
    }

    /// Seals a message of `leg` (random nonce first).
    pub(crate) fn seal(&self, leg: Leg, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let key = self.derive(b"key");
        let cipher = chacha20poly1305::ChaCha20Poly1305::new((&key).into());
        let nonce: [u8; 12] = crate::client::random_bytes();
        let aad = [leg as u8];
        let ct = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| ClientError::Protocol("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`LinkSecret::seal`] sealed for `leg`.
    pub(crate) fn open(&self, leg: Leg, sealed: &[u8]) -> Result<Vec<u8>, ClientError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let bad = || ClientError::Invalid("the link message does not open with this code".into());
        if sealed.len() < 12 {
            return Err(bad());
        }
        let key = self.derive(b"key");
        let cipher = chacha20poly1305::ChaCha20Poly1305::new((&key).into());
        let (nonce, ct) = sealed.split_at(12);
        let aad = [leg as u8];
        cipher
            .decrypt(nonce.into(), Payload { msg: ct, aad: &aad })
            .map_err(|_| bad())
    }

    /// The code as the user types it: eight groups of four hex digits.
    pub fn code(&self) -> String {
        grouped_hex(&self.0)
    }

    /// Reads a typed code (dashes and spaces ignored, any case).
    pub fn parse_code(text: &str) -> Result<Self, ClientError> {
        let clean: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        let bytes = hex::decode(&clean)
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| {
                ClientError::Invalid(
                    "a link code is 32 hex digits (as `umbra devices link` shows it)".into(),
                )
            })?;
        Ok(Self(bytes))
    }
}

/// The link a new device is given: the server's invite and the code, as
/// one `umbra://link?...` text (what the QR code holds).
pub fn link_text(invite: &umbra_wire::invite::Invite, secret: &LinkSecret) -> String {
    let join = invite.to_string();
    let rest = join.strip_prefix("umbra://join?").unwrap_or(&join);
    format!("umbra://link?{rest}&code={}", hex::encode(secret.0))
}

/// Reads a link made by [`link_text`]: the invite and the secret.
pub fn parse_link(text: &str) -> Result<(umbra_wire::invite::Invite, LinkSecret), ClientError> {
    let rest = text.trim().strip_prefix("umbra://link?").ok_or_else(|| {
        ClientError::Invalid("not a device link (expected umbra://link?...)".into())
    })?;
    let mut code = None;
    let mut fields = Vec::new();
    for part in rest.split('&') {
        match part.strip_prefix("code=") {
            Some(c) => code = Some(c),
            None => fields.push(part),
        }
    }
    let code = code.ok_or_else(|| ClientError::Invalid("the device link has no code".into()))?;
    let invite = umbra_wire::invite::Invite::parse(&format!("umbra://join?{}", fields.join("&")))?;
    Ok((invite, LinkSecret::parse_code(code)?))
}

/// What a user compares on both devices before linking: a short hash of
/// the new device's keys.
pub fn fingerprint(identity_key: &[u8], sealing_key: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"umbra-device-fingerprint-v1");
    h.update(identity_key);
    h.update(sealing_key);
    grouped_hex(&h.finalize()[..8])
}

/// `bytes` in hex, four digits to a group, groups joined by '-'.
fn grouped_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_link_message_opens_with_its_code_and_leg_only() {
        let s = LinkSecret::generate();
        let sealed = s.seal(Leg::Request, b"keys").expect("seal");
        assert_eq!(s.open(Leg::Request, &sealed).expect("open"), b"keys");
        assert!(s.open(Leg::Reply, &sealed).is_err());
        assert!(LinkSecret::generate().open(Leg::Request, &sealed).is_err());
        assert_ne!(s.slot(Leg::Request), s.slot(Leg::Reply));
        let again = LinkSecret::parse_code(&s.code().to_uppercase()).expect("code");
        assert_eq!(again.open(Leg::Request, &sealed).expect("open"), b"keys");
        assert!(LinkSecret::parse_code("abcd").is_err());
    }

    #[test]
    fn a_link_carries_the_invite_and_the_code() {
        let invite = umbra_wire::invite::Invite::parse(
            "umbra://join?host=127.0.0.1&port=7777&key=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .expect("invite");
        let s = LinkSecret::generate();
        let (i, again) = parse_link(&link_text(&invite, &s)).expect("link");
        assert_eq!(i, invite);
        assert_eq!(again.code(), s.code());
        assert!(parse_link("umbra://join?host=x&port=1").is_err());
    }
}

//! Invite links: how a client learns where a server is and which key to pin;
//! and unit links, the same for a group call's forwarding unit.
//!
//! `umbra://join?host=HOST&port=PORT&key=KEY` where KEY is the server's Noise
//! static public key, base64url without padding (43 characters). HOST may be
//! a DNS name, an IPv4 address or a bracketed IPv6 address.
//! `umbra://unit?host=HOST&port=PORT&key=KEY` names a forwarding unit: its
//! control port (TCP) and media port (UDP) share PORT, KEY is its Noise key.
//! Members get it from their messaging server with relay credentials.
//! An invite may add `&sign=SIGN`, the server's Ed25519 key for the
//! statements it signs (a business account's verification), base64url too:
//! clients pin it with the rest. A link without it is an older server's;
//! nothing it signs can then be checked, so nothing is shown as verified.

use std::fmt;

use thiserror::Error;

/// A parsed invite link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Server host name or address.
    pub host: String,
    /// Server TCP port.
    pub port: u16,
    /// Server static public key to pin.
    pub server_key: [u8; 32],
    /// The server's Ed25519 key for the statements it signs (invites only).
    pub sign_key: Option<[u8; 32]>,
}

/// Why an invite link was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InviteError {
    /// Not of the form `umbra://join?...`.
    #[error("not an Umbra invite link (expected umbra://join?host=...&port=...&key=...)")]
    Scheme,
    /// Not of the form `umbra://unit?...`.
    #[error("not a forwarding unit link (expected umbra://unit?host=...&port=...&key=...)")]
    UnitScheme,
    /// A required field is missing.
    #[error("the invite link has no `{0}`")]
    Missing(&'static str),
    /// The port is not a number in 1..=65535.
    #[error("the invite link's port is not a valid port number")]
    Port,
    /// The key is not 32 bytes of base64url.
    #[error("the invite link's key is not a valid server key (43 base64url characters)")]
    Key,
    /// The signing key is not 32 bytes of base64url.
    #[error("the invite link's sign key is not a valid key (43 base64url characters)")]
    SignKey,
    /// The host has characters a host name cannot have.
    #[error("the invite link's host is not a valid host name or address")]
    Host,
}

impl Invite {
    /// Parses an invite link.
    pub fn parse(link: &str) -> Result<Self, InviteError> {
        let f = crate::link::fields(link, "umbra://join?").ok_or(InviteError::Scheme)?;
        Self::from_fields(&f)
    }

    fn from_fields(f: &crate::link::Fields<'_>) -> Result<Self, InviteError> {
        let host = f.get("host").ok_or(InviteError::Missing("host"))?;
        if !crate::link::valid_host(host) {
            return Err(InviteError::Host);
        }
        let port = crate::link::port(f.get("port").ok_or(InviteError::Missing("port"))?)
            .ok_or(InviteError::Port)?;
        let key = f.get("key");
        let key = decode_key(key.ok_or(InviteError::Missing("key"))?).ok_or(InviteError::Key)?;
        let sign_key = match f.get("sign") {
            Some(s) => Some(decode_key(s).ok_or(InviteError::SignKey)?),
            None => None,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            server_key: key,
            sign_key,
        })
    }

    /// `host:port`, ready for a socket connect.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Where a group call's forwarding unit is, and the key it proves itself
/// with (same fields as an invite link, scheme `umbra://unit?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitLink(pub Invite);

impl UnitLink {
    /// Parses a unit link.
    pub fn parse(link: &str) -> Result<Self, InviteError> {
        let f = crate::link::fields(link, "umbra://unit?").ok_or(InviteError::UnitScheme)?;
        Invite::from_fields(&f).map(Self)
    }
}

impl fmt::Display for UnitLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        let rest = text.strip_prefix("umbra://join?").unwrap_or(&text);
        write!(f, "umbra://unit?{rest}")
    }
}

impl fmt::Display for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "umbra://join?host={}&port={}&key={}",
            self.host,
            self.port,
            encode_key(&self.server_key)
        )?;
        if let Some(sign) = &self.sign_key {
            write!(f, "&sign={}", encode_key(sign))?;
        }
        Ok(())
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding of a 32-byte key.
pub fn encode_key(key: &[u8; 32]) -> String {
    let mut out = String::with_capacity(43);
    for chunk in key.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Inverse of [`encode_key`]; `None` unless it is exactly 32 bytes.
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 43 {
        return None;
    }
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    if bits != 0 {
        return None;
    }
    out.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let inv = Invite {
            host: "chat.example.org".into(),
            port: 7700,
            server_key: [7; 32],
            sign_key: None,
        };
        let text = inv.to_string();
        assert_eq!(Invite::parse(&text), Ok(inv.clone()));
        let signed = Invite {
            sign_key: Some([8; 32]),
            ..inv
        };
        let text = signed.to_string();
        assert!(text.contains("&sign="), "{text}");
        assert_eq!(Invite::parse(&text), Ok(signed));
        assert_eq!(
            Invite::parse(&format!("{text}x")),
            Err(InviteError::SignKey)
        );
        for k in [[0u8; 32], [255u8; 32]] {
            assert_eq!(decode_key(&encode_key(&k)), Some(k));
        }
    }

    #[test]
    fn unit_links_roundtrip_and_are_not_invites() {
        let unit = UnitLink(Invite {
            host: "[2001:db8::1]".into(),
            port: 3479,
            server_key: [9; 32],
            sign_key: None,
        });
        let text = unit.to_string();
        assert!(text.starts_with("umbra://unit?host=[2001:db8::1]&port=3479&key="));
        assert_eq!(UnitLink::parse(&text), Ok(unit.clone()));
        assert_eq!(Invite::parse(&text), Err(InviteError::Scheme));
        assert_eq!(
            UnitLink::parse(&unit.0.to_string()),
            Err(InviteError::UnitScheme)
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(Invite::parse("https://x"), Err(InviteError::Scheme));
        assert_eq!(
            Invite::parse("umbra://join?port=1&key=x"),
            Err(InviteError::Missing("host"))
        );
        let key = encode_key(&[1; 32]);
        assert_eq!(
            Invite::parse(&format!("umbra://join?host=a&port=0&key={key}")),
            Err(InviteError::Port)
        );
        assert_eq!(
            Invite::parse("umbra://join?host=a&port=1&key=short"),
            Err(InviteError::Key)
        );
        assert_eq!(
            Invite::parse(&format!("umbra://join?host=a b&port=1&key={key}")),
            Err(InviteError::Host)
        );
    }
}

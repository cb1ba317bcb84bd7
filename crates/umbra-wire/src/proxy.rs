//! Proxy links and the admission preamble, without I/O.
//!
//! A proxy link tells a client where a volunteer's proxy is and the secret
//! that gets it admitted:
//!
//! `umbra://proxy?host=HOST&port=PORT&secret=SECRET[&tls=0][&front=NAME]`
//!
//! SECRET is 32 bytes, base64url without padding. `tls` defaults to 1 (the
//! proxy's port speaks TLS, as on 443); `tls=0` is a plain TCP port (80,
//! 5222). `front=NAME` says the port fronts the web site NAME
//! (`crate::front`): the client's hello names that site.
//!
//! Right after connecting (inside TLS when `tls=1`), the client sends a
//! 58-byte preamble before anything else:
//!
//! ```text
//! version (1) = 0x01 || unix time, seconds (8, big endian) || random nonce (16)
//!   || target (1: 0 = messaging server, 1 = call relay)
//!   || HMAC-SHA256(secret, "umbra-proxy-v1" || the 26 bytes before)[..32]
//! ```
//!
//! The proxy admits a connection only with a valid tag, a timestamp within
//! its window and a nonce it has not seen; anything else is treated as a web
//! visitor, so a prober sees an ordinary website. After the preamble the
//! stream carries the client's Noise session, end to end with the server:
//! the proxy forwards bytes it cannot read.

use std::fmt;

use thiserror::Error;

use crate::invite::{decode_key, encode_key};

/// Length of the admission preamble.
pub const PREAMBLE_LEN: usize = 58;
const VERSION: u8 = 1;
const LABEL: &[u8] = b"umbra-proxy-v1";
const SIGNED_LEN: usize = 26;

/// Where an admitted connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The messaging server.
    Messaging,
    /// The call relay's stream (TCP/TLS TURN) port.
    Relay,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Messaging => 0,
            Target::Relay => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Target::Messaging),
            1 => Some(Target::Relay),
            _ => None,
        }
    }
}

/// A parsed proxy link.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyLink {
    /// Proxy host name or address.
    pub host: String,
    /// Proxy port.
    pub port: u16,
    /// Admission secret.
    pub secret: [u8; 32],
    /// Whether the port speaks TLS.
    pub tls: bool,
    /// The fronted site's name, when the port fronts one.
    pub front: Option<String>,
}

impl fmt::Debug for ProxyLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyLink")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("front", &self.front)
            .finish_non_exhaustive()
    }
}

/// Why a proxy link was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyLinkError {
    /// Not of the form `umbra://proxy?...`.
    #[error("not an Umbra proxy link (expected umbra://proxy?host=...&port=...&secret=...)")]
    Scheme,
    /// A required field is missing.
    #[error("the proxy link has no `{0}`")]
    Missing(&'static str),
    /// The port is not valid.
    #[error("the proxy link's port is not a valid port number")]
    Port,
    /// The secret is not 32 bytes of base64url.
    #[error("the proxy link's secret is damaged (expected 43 base64url characters)")]
    Secret,
    /// The host is not valid.
    #[error("the proxy link's host is not a valid host name or address")]
    Host,
    /// `tls` is neither 0 nor 1.
    #[error("the proxy link's `tls` must be 0 or 1")]
    Tls,
    /// `front` names no valid host, or comes with `tls=0`.
    #[error("the proxy link's `front` must be a host name, on a TLS port")]
    Front,
}

impl ProxyLink {
    /// Parses a proxy link.
    pub fn parse(link: &str) -> Result<Self, ProxyLinkError> {
        let f = crate::link::fields(link, "umbra://proxy?").ok_or(ProxyLinkError::Scheme)?;
        let host = f.get("host").ok_or(ProxyLinkError::Missing("host"))?;
        if !crate::link::valid_host(host) {
            return Err(ProxyLinkError::Host);
        }
        let port = crate::link::port(f.get("port").ok_or(ProxyLinkError::Missing("port"))?)
            .ok_or(ProxyLinkError::Port)?;
        let (secret, tls) = (f.get("secret"), f.get("tls"));
        let secret = decode_key(secret.ok_or(ProxyLinkError::Missing("secret"))?)
            .ok_or(ProxyLinkError::Secret)?;
        let tls = match tls {
            None | Some("1") => true,
            Some("0") => false,
            Some(_) => return Err(ProxyLinkError::Tls),
        };
        let front = match f.get("front") {
            None => None,
            Some(name) if tls && crate::link::valid_host(name) && !name.contains(':') => {
                Some(name.to_string())
            }
            Some(_) => return Err(ProxyLinkError::Front),
        };
        Ok(Self {
            host: host.to_string(),
            port,
            secret,
            tls,
            front,
        })
    }

    /// `host:port`, ready for a socket connect.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for ProxyLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "umbra://proxy?host={}&port={}&secret={}",
            self.host,
            self.port,
            encode_key(&self.secret)
        )?;
        if !self.tls {
            write!(f, "&tls=0")?;
        }
        if let Some(name) = &self.front {
            write!(f, "&front={name}")?;
        }
        Ok(())
    }
}

fn tag(secret: &[u8; 32], signed: &[u8]) -> [u8; 32] {
    crate::mask::prf(secret, &[LABEL, signed])
}

/// The preamble a client sends first.
pub fn preamble(
    secret: &[u8; 32],
    now_unix: u64,
    nonce: [u8; 16],
    target: Target,
) -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[0] = VERSION;
    out[1..9].copy_from_slice(&now_unix.to_be_bytes());
    out[9..25].copy_from_slice(&nonce);
    out[25] = target.byte();
    let t = tag(secret, &out[..SIGNED_LEN]);
    out[SIGNED_LEN..].copy_from_slice(&t);
    out
}

/// A preamble whose tag verified; freshness and replay are the proxy's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The client's timestamp.
    pub unix_time: u64,
    /// The client's nonce.
    pub nonce: [u8; 16],
    /// Where to forward.
    pub target: Target,
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Too few bytes to decide; they could still be a preamble.
    NeedMore,
    /// Not a preamble: treat the connection as a web visitor.
    NotAdmitted,
    /// A preamble with a valid tag.
    Valid(Verified),
}

/// Examines the first bytes of a connection (constant time in the tag).
pub fn peek(secret: &[u8; 32], first: &[u8]) -> Peek {
    match first.first() {
        None => return Peek::NeedMore,
        Some(&v) if v != VERSION => return Peek::NotAdmitted,
        Some(_) => {}
    }
    let Some(bytes) = first.get(..PREAMBLE_LEN) else {
        return Peek::NeedMore;
    };
    let expected = tag(secret, &bytes[..SIGNED_LEN]);
    let ok = subtle::ConstantTimeEq::ct_eq(&expected[..], &bytes[SIGNED_LEN..]);
    if !bool::from(ok) {
        return Peek::NotAdmitted;
    }
    let Some(target) = Target::from_byte(bytes[25]) else {
        return Peek::NotAdmitted;
    };
    let mut time = [0u8; 8];
    time.copy_from_slice(&bytes[1..9]);
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&bytes[9..25]);
    Peek::Valid(Verified {
        unix_time: u64::from_be_bytes(time),
        nonce,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_roundtrip_and_errors() {
        let link = ProxyLink {
            host: "proxy.example.org".into(),
            port: 443,
            secret: [3; 32],
            tls: true,
            front: None,
        };
        assert_eq!(ProxyLink::parse(&link.to_string()), Ok(link.clone()));
        let fronted = ProxyLink {
            front: Some("www.example.com".into()),
            ..link.clone()
        };
        assert!(fronted.to_string().ends_with("&front=www.example.com"));
        assert_eq!(ProxyLink::parse(&fronted.to_string()), Ok(fronted));
        let plain = ProxyLink { tls: false, ..link };
        assert!(plain.to_string().ends_with("&tls=0"));
        assert_eq!(ProxyLink::parse(&plain.to_string()), Ok(plain));
        assert_eq!(
            ProxyLink::parse("umbra://join?x"),
            Err(ProxyLinkError::Scheme)
        );
        assert_eq!(
            ProxyLink::parse("umbra://proxy?host=a&port=1&secret=zz"),
            Err(ProxyLinkError::Secret)
        );
        let s = encode_key(&[1; 32]);
        assert_eq!(
            ProxyLink::parse(&format!("umbra://proxy?host=a&port=1&secret={s}&tls=2")),
            Err(ProxyLinkError::Tls)
        );
        assert_eq!(
            ProxyLink::parse(&format!(
                "umbra://proxy?host=a&port=1&secret={s}&tls=0&front=b"
            )),
            Err(ProxyLinkError::Front)
        );
    }

    #[test]
    fn preamble_verifies_only_with_the_secret() {
        let p = preamble(&[9; 32], 1_800_000_000, [4; 16], Target::Relay);
        assert_eq!(
            peek(&[9; 32], &p),
            Peek::Valid(Verified {
                unix_time: 1_800_000_000,
                nonce: [4; 16],
                target: Target::Relay
            })
        );
        assert_eq!(peek(&[8; 32], &p), Peek::NotAdmitted);
        assert_eq!(peek(&[9; 32], &p[..30]), Peek::NeedMore);
        assert_eq!(peek(&[9; 32], b"GET / HTTP/1.1\r\n"), Peek::NotAdmitted);
        for i in 0..PREAMBLE_LEN {
            let mut bad = p;
            bad[i] ^= 0x10;
            assert_ne!(peek(&[9; 32], &bad), peek(&[9; 32], &p), "byte {i}");
        }
    }
}

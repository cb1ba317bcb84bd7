//! Stateless nonces: `[cookie] base64(issued_secs || HMAC-SHA256(secret, issued_secs ||
//! client)[..16])`. The server checks validity (its MAC and age) without storing anything.
//! `issued_secs` counts seconds since the server's start `Instant`. With password algorithm
//! negotiation on, the nonce starts with the RFC 8489 cookie `obMatJos2` and the security
//! feature set (bit 0: password algorithms).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use subtle::ConstantTimeEq;

use crate::demux::Transport;
use crate::integrity::hmac_sha256;

/// The RFC 8489 §9.2 nonce cookie.
pub const NONCE_COOKIE: &str = "obMatJos2";
/// Security feature set "password algorithms" (bit 0), base64 of 0x000001.
const FEATURES_PASSWORD_ALGORITHMS: &str = "AAAB";

/// Issues and checks nonces.
#[derive(Clone)]
pub(crate) struct NonceIssuer {
    secret: [u8; 32],
    epoch: Instant,
    lifetime: Duration,
    cookie: bool,
}

/// Result of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    Valid,
    /// Forged, malformed, for another client, or too old.
    Stale,
}

impl NonceIssuer {
    pub(crate) fn new(
        secret: [u8; 32],
        epoch: Instant,
        lifetime: Duration,
        cookie: bool,
    ) -> NonceIssuer {
        NonceIssuer {
            secret,
            epoch,
            lifetime,
            cookie,
        }
    }

    fn mac(&self, issued: u64, transport: Transport, client: SocketAddr) -> [u8; 32] {
        let t = [u8::from(transport.is_stream())];
        let ip = match client.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        hmac_sha256(
            &self.secret,
            &[&issued.to_be_bytes(), &t, &ip, &client.port().to_be_bytes()],
        )
    }

    /// A fresh nonce for `client`.
    pub(crate) fn issue(&self, now: Instant, transport: Transport, client: SocketAddr) -> String {
        let issued = now.saturating_duration_since(self.epoch).as_secs();
        let mut body = Vec::with_capacity(24);
        body.extend_from_slice(&issued.to_be_bytes());
        body.extend_from_slice(&self.mac(issued, transport, client)[..16]);
        let b64 = STANDARD_NO_PAD.encode(body);
        if self.cookie {
            format!("{NONCE_COOKIE}{FEATURES_PASSWORD_ALGORITHMS}{b64}")
        } else {
            b64
        }
    }

    /// Checks a nonce received from `client`.
    pub(crate) fn check(
        &self,
        now: Instant,
        nonce: &str,
        transport: Transport,
        client: SocketAddr,
    ) -> NonceCheck {
        let b64 = match nonce.strip_prefix(NONCE_COOKIE) {
            Some(rest) => rest.get(4..).unwrap_or_default(),
            None => nonce,
        };
        let Ok(body) = STANDARD_NO_PAD.decode(b64) else {
            return NonceCheck::Stale;
        };
        let (Some(ts), Some(tag)) = (body.get(..8), body.get(8..)) else {
            return NonceCheck::Stale;
        };
        let Ok(ts) = <[u8; 8]>::try_from(ts) else {
            return NonceCheck::Stale;
        };
        let issued = u64::from_be_bytes(ts);
        if tag.len() != 16 || !bool::from(self.mac(issued, transport, client)[..16].ct_eq(tag)) {
            return NonceCheck::Stale;
        }
        let now_secs = now.saturating_duration_since(self.epoch).as_secs();
        if issued > now_secs || now_secs - issued >= self.lifetime.as_secs() {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

/// True if `nonce` carries the RFC 8489 cookie with the password-algorithms feature bit.
pub fn nonce_signals_password_algorithms(nonce: &str) -> bool {
    use base64::engine::general_purpose::STANDARD;
    let Some(rest) = nonce.strip_prefix(NONCE_COOKIE) else {
        return false;
    };
    let Some(features) = rest.get(..4) else {
        return false;
    };
    match STANDARD.decode(features) {
        Ok(b) => b.get(2).is_some_and(|x| x & 0x01 != 0),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_lifecycle() {
        let t0 = Instant::now();
        let n = NonceIssuer::new([1; 32], t0, Duration::from_secs(600), false);
        let c: SocketAddr = "198.51.100.1:5000".parse().expect("literal");
        let other: SocketAddr = "198.51.100.1:5001".parse().expect("literal");
        let nonce = n.issue(t0 + Duration::from_secs(5), Transport::Udp, c);
        assert_eq!(
            n.check(t0 + Duration::from_secs(10), &nonce, Transport::Udp, c),
            NonceCheck::Valid
        );
        assert_eq!(
            n.check(t0 + Duration::from_secs(10), &nonce, Transport::Tcp, c),
            NonceCheck::Stale
        );
        assert_eq!(
            n.check(t0 + Duration::from_secs(10), &nonce, Transport::Udp, other),
            NonceCheck::Stale
        );
        assert_eq!(
            n.check(t0 + Duration::from_secs(605), &nonce, Transport::Udp, c),
            NonceCheck::Stale
        );
        assert_eq!(
            n.check(t0, "garbage!", Transport::Udp, c),
            NonceCheck::Stale
        );
        assert_eq!(n.check(t0, "", Transport::Udp, c), NonceCheck::Stale);
        let other_secret = NonceIssuer::new([2; 32], t0, Duration::from_secs(600), false);
        assert_eq!(
            other_secret.check(t0 + Duration::from_secs(10), &nonce, Transport::Udp, c),
            NonceCheck::Stale
        );
    }

    #[test]
    fn cookie_nonce() {
        let t0 = Instant::now();
        let n = NonceIssuer::new([1; 32], t0, Duration::from_secs(600), true);
        let c: SocketAddr = "[2001:db8::1]:5000".parse().expect("literal");
        let nonce = n.issue(t0, Transport::Udp, c);
        assert!(nonce.starts_with("obMatJos2AAAB"));
        assert!(nonce_signals_password_algorithms(&nonce));
        assert!(!nonce_signals_password_algorithms("obMatJos2AAAC"));
        assert!(!nonce_signals_password_algorithms("abc"));
        assert_eq!(n.check(t0, &nonce, Transport::Udp, c), NonceCheck::Valid);
    }
}

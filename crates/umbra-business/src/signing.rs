//! Webhook signatures, for the host that sends them and for the business's
//! receiver that checks them.
//!
//! Each webhook carries `Umbra-Signature: t=UNIX,v1=HEX`, where HEX is
//! HMAC-SHA256 under the business's webhook secret over `UNIX` `.` and the
//! raw body, byte for byte. A receiver recomputes it over the body it got
//! before parsing it, compares in constant time, and refuses a timestamp
//! further than its tolerance from its own clock, so a captured webhook
//! replayed later is refused even though its signature is good. The same
//! event is sent again (retries) under the same `Umbra-Event-Id`, so a
//! receiver that keeps the ids it has seen handles it once.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "umbra-signature";
/// The header that carries the event's id.
pub const EVENT_ID_HEADER: &str = "umbra-event-id";
/// How far from the receiver's clock a timestamp may be, by default.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No signature header, or not of the form `t=...,v1=...`.
    #[error("the webhook's signature header is missing or malformed")]
    Malformed,
    /// The timestamp is too far from now: an old webhook replayed, or a
    /// clock that is off.
    #[error("the webhook's timestamp is {0} s away from now: too old (a replay?) or a clock off")]
    Stale(u64),
    /// The signature does not match the body under this secret.
    #[error("the webhook's signature does not match its body under this secret")]
    BadSignature,
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Checks a received webhook: `header` (the signature header's value),
/// `body` as received, at `now_unix`, refusing timestamps more than
/// `tolerance_secs` away.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_unix: u64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => tags.push(hex::decode(v).map_err(|_| VerifyError::Malformed)?),
            _ => {}
        }
    }
    let (Some(timestamp), false) = (timestamp, tags.is_empty()) else {
        return Err(VerifyError::Malformed);
    };
    let skew = now_unix.abs_diff(timestamp);
    if skew > tolerance_secs {
        return Err(VerifyError::Stale(skew));
    }
    // Any of the tags may match (a secret being rolled over signs twice).
    if tags
        .iter()
        .any(|t| mac(secret, timestamp, body).verify_slice(t).is_ok())
    {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_body_secret_and_time_only() {
        let body = br#"{"id":"evt_1","type":"message.received"}"#;
        let h = sign(b"s3cret", 1_000, body);
        assert!(h.starts_with("t=1000,v1="), "{h}");
        assert_eq!(verify(b"s3cret", &h, body, 1_010, 300), Ok(()));
        // One byte of the body changed, another secret, a forged time.
        let mut changed = body.to_vec();
        changed[5] ^= 1;
        assert_eq!(
            verify(b"s3cret", &h, &changed, 1_010, 300),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"other", &h, body, 1_010, 300),
            Err(VerifyError::BadSignature)
        );
        let moved = h.replace("t=1000", "t=1200");
        assert_eq!(
            verify(b"s3cret", &moved, body, 1_210, 300),
            Err(VerifyError::BadSignature)
        );
        // Replayed an hour later: refused on its age.
        assert_eq!(
            verify(b"s3cret", &h, body, 4_600, 300),
            Err(VerifyError::Stale(3_600))
        );
        for bad in ["", "t=1000", "v1=00", "t=x,v1=00", "t=1000,v1=zz"] {
            assert_eq!(
                verify(b"s3cret", bad, body, 1_000, 300),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
    }
}

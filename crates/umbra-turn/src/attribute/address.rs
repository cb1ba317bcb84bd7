//! Address attribute values: the plain MAPPED-ADDRESS layout and the XOR-ed layout used by
//! XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS and XOR-RELAYED-ADDRESS (RFC 8489 §14.1–14.2),
//! plus the address-family byte used by REQUESTED-ADDRESS-FAMILY.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::DecodeError;
use crate::header::{MAGIC_COOKIE, TransactionId};

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// An IP address family as carried in STUN attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// IPv4 (0x01).
    V4,
    /// IPv6 (0x02).
    V6,
}

impl AddressFamily {
    /// The family of an address.
    pub fn of(addr: &SocketAddr) -> AddressFamily {
        match addr {
            SocketAddr::V4(_) => AddressFamily::V4,
            SocketAddr::V6(_) => AddressFamily::V6,
        }
    }

    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            AddressFamily::V4 => FAMILY_IPV4,
            AddressFamily::V6 => FAMILY_IPV6,
        }
    }

    /// From the wire byte.
    pub fn from_byte(b: u8) -> Option<AddressFamily> {
        match b {
            FAMILY_IPV4 => Some(AddressFamily::V4),
            FAMILY_IPV6 => Some(AddressFamily::V6),
            _ => None,
        }
    }
}

/// Decodes a plain (non-XOR) address value.
pub(crate) fn decode_plain(typ: u16, v: &[u8]) -> Result<SocketAddr, DecodeError> {
    let bad = |reason| DecodeError::InvalidAttribute { typ, reason };
    if v.len() < 4 {
        return Err(bad("address too short"));
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    match AddressFamily::from_byte(v[1]) {
        Some(AddressFamily::V4) => {
            let a: [u8; 4] = v
                .get(4..)
                .and_then(|s| s.try_into().ok())
                .ok_or(bad("bad IPv4 address length"))?;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        Some(AddressFamily::V6) => {
            let a: [u8; 16] = v
                .get(4..)
                .and_then(|s| s.try_into().ok())
                .ok_or(bad("bad IPv6 address length"))?;
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        None => Err(bad("unknown address family")),
    }
}

/// Encodes a plain (non-XOR) address value.
pub(crate) fn encode_plain(addr: &SocketAddr, out: &mut Vec<u8>) {
    out.push(0);
    out.push(AddressFamily::of(addr).to_byte());
    out.extend_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
}

/// The 16-byte XOR mask: magic cookie followed by the transaction id.
fn mask(tid: &TransactionId) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[4..].copy_from_slice(&tid.0);
    m
}

/// XORs an address with the cookie/transaction id (the operation is its own inverse).
pub(crate) fn xor_addr(addr: SocketAddr, tid: &TransactionId) -> SocketAddr {
    let m = mask(tid);
    let port = addr.port() ^ ((MAGIC_COOKIE >> 16) as u16);
    let ip = match addr.ip() {
        IpAddr::V4(ip) => {
            let mut o = ip.octets();
            o.iter_mut().zip(m.iter()).for_each(|(b, k)| *b ^= k);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(ip) => {
            let mut o = ip.octets();
            o.iter_mut().zip(m.iter()).for_each(|(b, k)| *b ^= k);
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    SocketAddr::new(ip, port)
}

/// Decodes an XOR-ed address value.
pub(crate) fn decode_xor(
    typ: u16,
    v: &[u8],
    tid: &TransactionId,
) -> Result<SocketAddr, DecodeError> {
    decode_plain(typ, v).map(|a| xor_addr(a, tid))
}

/// Encodes an XOR-ed address value.
pub(crate) fn encode_xor(addr: &SocketAddr, tid: &TransactionId, out: &mut Vec<u8>) {
    encode_plain(&xor_addr(*addr, tid), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_round_trip_v4_v6() {
        let tid = TransactionId([7; 12]);
        for a in ["192.0.2.1:32853", "[2001:db8::1]:9"] {
            let addr: SocketAddr = a.parse().expect("literal");
            let mut out = Vec::new();
            encode_xor(&addr, &tid, &mut out);
            assert_eq!(decode_xor(0x20, &out, &tid), Ok(addr));
        }
    }

    #[test]
    fn rejects_bad_lengths_and_family() {
        assert!(decode_plain(1, &[0, 1, 0]).is_err());
        assert!(decode_plain(1, &[0, 1, 0, 1, 1, 2, 3]).is_err());
        assert!(decode_plain(1, &[0, 2, 0, 1, 1, 2, 3, 4]).is_err());
        assert!(decode_plain(1, &[0, 3, 0, 1, 1, 2, 3, 4]).is_err());
    }
}

//! The peer-address policy hook: the server asks it before installing a permission or
//! channel and before relaying a Send indication, so the daemon can enforce a closed-world
//! policy (e.g. "only other allocations of this relay mesh").

use std::net::{IpAddr, SocketAddr};

/// What the policy is asked about.
#[derive(Debug, Clone, Copy)]
pub struct PeerCheck<'a> {
    /// The authenticated username owning the allocation.
    pub username: &'a str,
    /// The allocation's relayed transport address.
    pub relay: SocketAddr,
    /// The peer the client wants to reach.
    pub peer: SocketAddr,
}

/// Decides whether an allocation may talk to a peer. Refusals become 403 Forbidden
/// (CreatePermission, ChannelBind) or a silent discard (Send).
pub trait PeerPolicy {
    /// True if the peer is allowed.
    fn allow(&self, check: &PeerCheck<'_>) -> bool;
}

impl<F: Fn(&PeerCheck<'_>) -> bool> PeerPolicy for F {
    fn allow(&self, check: &PeerCheck<'_>) -> bool {
        self(check)
    }
}

/// Allows every peer. For tests and open relays.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl PeerPolicy for AllowAll {
    fn allow(&self, _check: &PeerCheck<'_>) -> bool {
        true
    }
}

/// Refuses loopback, private (RFC 1918, ULA), link-local, CGNAT, unspecified, multicast and
/// broadcast peers: the minimum any relay reachable from the internet needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyInternal;

impl PeerPolicy for DenyInternal {
    fn allow(&self, check: &PeerCheck<'_>) -> bool {
        !is_internal(check.peer.ip())
    }
}

/// True for addresses a public relay must not forward to.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xFE00) == 0xFC00
                || (s[0] & 0xFFC0) == 0xFE80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(a.parse().expect("literal")), "{a}");
        }
        for a in ["203.0.113.5", "8.8.8.8", "2001:db8::1", "100.128.0.1"] {
            assert!(!is_internal(a.parse().expect("literal")), "{a}");
        }
    }
}

//! The closed-world peer policy: an allocation may send only to the relayed addresses of
//! this relay's own allocations (across all workers), plus networks an operator explicitly
//! allowlists. Loopback, private networks and the internet at large are therefore out of
//! reach unless allowlisted.
//!
//! [`RelaySet`] is the shared set of live relayed addresses; [`MeshPolicy`] is the
//! [`PeerPolicy`] each worker's TURN server asks, and the I/O layer asks it again before
//! every send from a relay socket (ChannelData skips the server's per-packet check, and a
//! peer allocation may have gone since the channel was bound).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use umbra_turn::server::{PeerCheck, PeerPolicy};

/// The relayed (advertised) addresses of every live allocation of this relay.
#[derive(Debug, Default)]
pub struct RelaySet {
    addrs: RwLock<HashSet<SocketAddr>>,
}

impl RelaySet {
    /// Adds a relayed address.
    pub fn insert(&self, addr: SocketAddr) {
        if let Ok(mut s) = self.addrs.write() {
            s.insert(addr);
        }
    }

    /// Removes a relayed address.
    pub fn remove(&self, addr: &SocketAddr) {
        if let Ok(mut s) = self.addrs.write() {
            s.remove(addr);
        }
    }

    /// True if `addr` is a live relayed address.
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.addrs.read().is_ok_and(|s| s.contains(addr))
    }

    /// Number of live relayed addresses.
    pub fn len(&self) -> usize {
        self.addrs.read().map_or(0, |s| s.len())
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Closed world plus allowlist.
#[derive(Debug, Clone)]
pub struct MeshPolicy {
    relays: Arc<RelaySet>,
    relay_ip: IpAddr,
    allow: Arc<Vec<IpNet>>,
}

impl MeshPolicy {
    /// `relay_ip` is the advertised relay IP; `allow` widens the closed world.
    pub fn new(relays: Arc<RelaySet>, relay_ip: IpAddr, allow: Vec<IpNet>) -> MeshPolicy {
        MeshPolicy {
            relays,
            relay_ip,
            allow: Arc::new(allow),
        }
    }

    /// True if an allocation may reach `peer`.
    ///
    /// Port 0 on the relay IP is accepted: TURN permissions are per IP, and clients (ours
    /// included) refresh them with port 0. Data still needs an exact live relayed address.
    pub fn allows(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        let peer = SocketAddr::new(ip, peer.port());
        if peer.ip() == self.relay_ip && peer.port() == 0 {
            return true;
        }
        self.relays.contains(&peer)
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl PeerPolicy for MeshPolicy {
    fn allow(&self, check: &PeerCheck<'_>) -> bool {
        self.allows(check.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn closed_world_and_allowlist() {
        let set = Arc::new(RelaySet::default());
        set.insert(a("127.0.0.1:50000"));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let p = MeshPolicy::new(set.clone(), ip, Vec::new());
        assert!(p.allows(a("127.0.0.1:50000")));
        assert!(p.allows(a("127.0.0.1:0")));
        assert!(!p.allows(a("127.0.0.1:50001")));
        assert!(!p.allows(a("127.0.0.1:22")));
        assert!(!p.allows(a("10.0.0.1:50000")));
        assert!(!p.allows(a("8.8.8.8:53")));
        set.remove(&a("127.0.0.1:50000"));
        assert!(!p.allows(a("127.0.0.1:50000")));
        let wide = MeshPolicy::new(set, ip, vec!["192.0.2.0/24".parse().expect("net")]);
        assert!(wide.allows(a("192.0.2.9:9")));
        assert!(wide.allows(a("[::ffff:192.0.2.9]:9")));
        assert!(!wide.allows(a("192.0.3.9:9")));
    }
}

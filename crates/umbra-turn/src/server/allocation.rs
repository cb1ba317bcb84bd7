//! One allocation's state: relay address, owner, expiry, permissions (per peer IP) and
//! channel bindings (channel ⇄ peer transport address), with the RFC 8656 §12 rules.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::demux::Transport;
use crate::hash::KeyedMap;
use crate::header::TransactionId;

/// The client side of the 5-tuple (the server side is the daemon's listening socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Channel {
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// Outcome of a ChannelBind against the current bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindCheck {
    /// New binding or refresh of the same pair.
    Ok,
    /// The channel is bound to another peer, or the peer to another channel.
    Conflict,
}

#[derive(Debug)]
pub(crate) struct Allocation {
    pub client: ClientKey,
    pub relay: SocketAddr,
    pub username: String,
    pub expires: Instant,
    /// Deadline of the live timer-heap entry for this allocation.
    pub timer: Instant,
    pub allocate_tid: TransactionId,
    pub allocate_response: Vec<u8>,
    pub permissions: KeyedMap<IpAddr, Instant>,
    pub channels: KeyedMap<u16, Channel>,
    pub peer_channels: KeyedMap<SocketAddr, u16>,
}

impl Allocation {
    /// Drops expired permissions and channels.
    pub fn purge(&mut self, now: Instant) {
        self.permissions.retain(|_, exp| *exp > now);
        let expired: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| c.expires <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in expired {
            if let Some(c) = self.channels.remove(&n) {
                self.peer_channels.remove(&c.peer);
            }
        }
    }

    pub fn has_permission(&self, now: Instant, ip: IpAddr) -> bool {
        self.permissions.get(&ip).is_some_and(|exp| *exp > now)
    }

    pub fn check_bind(&self, now: Instant, channel: u16, peer: SocketAddr) -> BindCheck {
        let channel_ok = match self.channels.get(&channel) {
            Some(c) if c.expires > now => c.peer == peer,
            _ => true,
        };
        let peer_ok = match self.peer_channels.get(&peer) {
            Some(n) => *n == channel || self.channels.get(n).is_none_or(|c| c.expires <= now),
            None => true,
        };
        if channel_ok && peer_ok {
            BindCheck::Ok
        } else {
            BindCheck::Conflict
        }
    }

    pub fn bind(&mut self, channel: u16, peer: SocketAddr, expires: Instant) {
        if let Some(old) = self.channels.insert(channel, Channel { peer, expires })
            && old.peer != peer
        {
            self.peer_channels.remove(&old.peer);
        }
        if let Some(old) = self.peer_channels.insert(peer, channel)
            && old != channel
        {
            self.channels.remove(&old);
        }
    }

    /// The peer bound to `channel`, if the binding is live.
    pub fn channel_peer(&self, now: Instant, channel: u16) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The live channel bound to `peer`.
    pub fn peer_channel(&self, now: Instant, peer: SocketAddr) -> Option<u16> {
        let n = self.peer_channels.get(&peer)?;
        self.channels.get(n).filter(|c| c.expires > now).map(|_| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::KeyedState;
    use std::time::Duration;

    fn alloc(now: Instant) -> Allocation {
        let keys = KeyedState::new([7; 16]);
        Allocation {
            client: ClientKey {
                transport: Transport::Udp,
                addr: "198.51.100.1:1".parse().expect("literal"),
            },
            relay: "203.0.113.1:50000".parse().expect("literal"),
            username: "u".into(),
            expires: now + Duration::from_secs(600),
            timer: now + Duration::from_secs(600),
            allocate_tid: TransactionId([0; 12]),
            allocate_response: Vec::new(),
            permissions: keys.map(),
            channels: keys.map(),
            peer_channels: keys.map(),
        }
    }

    #[test]
    fn channel_rules() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let p1: SocketAddr = "192.0.2.1:1000".parse().expect("literal");
        let p2: SocketAddr = "192.0.2.2:1000".parse().expect("literal");
        let exp = t0 + Duration::from_secs(600);
        assert_eq!(a.check_bind(t0, 0x4000, p1), BindCheck::Ok);
        a.bind(0x4000, p1, exp);
        assert_eq!(a.check_bind(t0, 0x4000, p1), BindCheck::Ok);
        assert_eq!(a.check_bind(t0, 0x4000, p2), BindCheck::Conflict);
        assert_eq!(a.check_bind(t0, 0x4001, p1), BindCheck::Conflict);
        assert_eq!(a.channel_peer(t0, 0x4000), Some(p1));
        assert_eq!(a.peer_channel(t0, p1), Some(0x4000));
        let later = t0 + Duration::from_secs(601);
        assert_eq!(a.channel_peer(later, 0x4000), None);
        assert_eq!(a.check_bind(later, 0x4000, p2), BindCheck::Ok);
        a.purge(later);
        assert!(a.channels.is_empty() && a.peer_channels.is_empty());
    }
}

//! Relay sockets: binding UDP sockets on the relay IP at free ports of the configured range,
//! with RFC 8656 even ports and port reservations (EVEN-PORT with the R bit holds the next
//! port for a RESERVATION-TOKEN). [`umbra_turn::server::RelayPorts`] decides which ports
//! to try and keeps the reserved sockets; this binds them.
//!
//! One [`PortRange`] serves every worker: the Allocate that claims a reservation comes
//! from another client socket than the one that made it (RTCP beside RTP), which the
//! kernel may hash to another worker. It is locked only to allocate a relay port and for
//! the once-a-second expiry sweep ([`PortRange::expire`]), never per packet.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use umbra_turn::server::{PortGrant, PortRequest, RelayError, RelayPorts};

/// Picks and binds ports in `[min, max]` on one IP, and holds reservations.
#[derive(Debug)]
pub struct PortRange {
    ip: IpAddr,
    ports: Mutex<RelayPorts<UdpSocket>>,
}

impl PortRange {
    /// A range on `ip`, with a fresh random key for tokens and port choice, holding at most
    /// `per_user` reservations per credential and `total` in all.
    pub fn new(ip: IpAddr, min: u16, max: u16, per_user: usize, total: usize) -> PortRange {
        let ports = RelayPorts::new(min, max, rand::random()).with_limits(total, per_user);
        PortRange {
            ip,
            ports: Mutex::new(ports),
        }
    }

    /// Binds a non-blocking UDP socket for one Allocate: any free port, an even one, an
    /// even one plus a reservation of the next, or the socket a token reserved.
    pub fn bind(
        &self,
        now: Instant,
        request: PortRequest<'_>,
    ) -> Result<PortGrant<UdpSocket>, RelayError> {
        let ip = self.ip;
        self.lock().allocate(now, request, |port| {
            let s = UdpSocket::bind(SocketAddr::new(ip, port)).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        })
    }

    /// Closes the socket reserved under `token`, if still held.
    pub fn cancel(&self, token: &[u8; 8]) {
        drop(self.lock().cancel(token));
    }

    /// Closes the reserved sockets whose reservation expired by `now`; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let gone = self.lock().expire(now);
        gone.len()
    }

    /// Number of ports held in reservation.
    pub fn reserved(&self) -> usize {
        self.lock().reserved()
    }

    fn lock(&self) -> MutexGuard<'_, RelayPorts<UdpSocket>> {
        // The table stays consistent even if a holder panicked (every change is one call).
        self.ports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use umbra_turn::server::RESERVATION_LIFETIME;

    fn range(min: u16, max: u16) -> PortRange {
        PortRange::new("127.0.0.1".parse().expect("ip"), min, max, 10, 100)
    }

    fn req(even_port: Option<bool>, reservation_token: Option<[u8; 8]>) -> PortRequest<'static> {
        PortRequest {
            even_port,
            reservation_token,
            owner: "u",
        }
    }

    fn port(s: &UdpSocket) -> u16 {
        s.local_addr().expect("addr").port()
    }

    #[test]
    fn binds_inside_the_range() {
        let r = range(40000, 40499);
        let g = r
            .bind(Instant::now(), req(Some(false), None))
            .expect("bind");
        assert_eq!(port(&g.socket), g.port);
        assert!((40000..=40499).contains(&g.port));
        assert_eq!(g.port % 2, 0);
        let any = r.bind(Instant::now(), req(None, None)).expect("bind");
        assert!((40000..=40499).contains(&any.port));
    }

    #[test]
    fn reservation_holds_the_next_port_until_claimed_or_expired() {
        let r = range(40500, 40999);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let t0 = Instant::now();
        let g = r.bind(t0, req(Some(true), None)).expect("pair");
        assert_eq!(g.port % 2, 0);
        let token = g.reservation_token.expect("token");
        assert!(
            UdpSocket::bind(SocketAddr::new(ip, g.port + 1)).is_err(),
            "the next port is held"
        );
        let claimed = r.bind(t0, req(None, Some(token))).expect("claim");
        assert_eq!(port(&claimed.socket), g.port + 1);
        assert!(r.bind(t0, req(None, Some(token))).is_err(), "used once");

        let g = r.bind(t0, req(Some(true), None)).expect("pair");
        assert_eq!(r.reserved(), 1);
        assert_eq!(r.expire(t0 + Duration::from_secs(5)), 0);
        assert_eq!(r.expire(t0 + RESERVATION_LIFETIME), 1);
        assert!(
            UdpSocket::bind(SocketAddr::new(ip, g.port + 1)).is_ok(),
            "released after expiry"
        );
        let late = r.bind(t0 + RESERVATION_LIFETIME, req(None, g.reservation_token));
        assert_eq!(late.err(), Some(RelayError::InsufficientCapacity));
    }
}

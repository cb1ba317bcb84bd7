//! Relay sockets: binding a UDP socket on the relay IP at a free port of the configured
//! range (random start, bounded attempts, even ports on request).

use std::net::{IpAddr, SocketAddr, UdpSocket};

use rand::Rng as _;

/// Attempts before reporting the range full.
const ATTEMPTS: u32 = 64;

/// Picks ports in `[min, max]` on one IP.
#[derive(Debug, Clone)]
pub struct PortRange {
    ip: IpAddr,
    min: u16,
    max: u16,
}

impl PortRange {
    /// A range on `ip`.
    pub fn new(ip: IpAddr, min: u16, max: u16) -> PortRange {
        PortRange { ip, min, max }
    }

    /// Binds a non-blocking UDP socket at a free port (an even one if `even`). `None` if
    /// no attempt succeeded.
    pub fn bind(&self, even: bool) -> Option<UdpSocket> {
        let span = u32::from(self.max) - u32::from(self.min) + 1;
        let mut rng = rand::thread_rng();
        let start = rng.gen_range(0..span);
        for i in 0..ATTEMPTS.min(span) {
            // Spread attempts over the range instead of walking neighbours.
            let off = (start + i.wrapping_mul(7919)) % span;
            let mut port = u32::from(self.min) + off;
            if even && port % 2 == 1 {
                port = if port < u32::from(self.max) {
                    port + 1
                } else {
                    port - 1
                };
                if port < u32::from(self.min) {
                    continue;
                }
            }
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(self.ip, port))
                && s.set_nonblocking(true).is_ok()
            {
                return Some(s);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_inside_the_range() {
        let r = PortRange::new("127.0.0.1".parse().expect("ip"), 40000, 40999);
        let s = r.bind(true).expect("bind");
        let port = s.local_addr().expect("addr").port();
        assert!((40000..=40999).contains(&port));
        assert_eq!(port % 2, 0);
    }
}

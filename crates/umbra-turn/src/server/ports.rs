//! Relay port choice and RFC 8656 port reservations (§7.2; EVEN-PORT §18.6,
//! RESERVATION-TOKEN §18.9), sans-IO: [`RelayPorts`] decides which ports to try and keeps
//! the reservation table; the caller binds.
//!
//! The daemon owns the sockets. [`RelayPorts::allocate`] answers one
//! [`super::Output::AllocateRelay`]: it asks a `bind` callback for the ports it picks (any
//! port, an even one, or an even one whose odd neighbour it then also binds and keeps
//! under a fresh token), or hands back the socket a token reserved. Reserved sockets (of
//! any type `S`) stay here until claimed, cancelled ([`RelayPorts::cancel`]) or expired:
//! [`RESERVATION_LIFETIME`] after they were made, [`RelayPorts::expire`] (time passed in)
//! returns them for the caller to close.
//!
//! A reservation is server-wide, not tied to an allocation or a 5-tuple: the Allocate that
//! claims it normally comes from another client socket (RTCP beside RTP), so a daemon
//! running several [`super::Server`]s shares one `RelayPorts` between them.
//!
//! Tokens and the start of each port search are derived from a secret key and a counter
//! (HMAC-SHA256): unpredictable to clients, with no random number generator in this crate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::output::RelayError;

/// How long the odd port of an EVEN-PORT (R) allocation stays reserved (RFC 8656 §7.2:
/// approximately 30 seconds).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// Ports (or pairs) tried before reporting the range full.
const ATTEMPTS: u64 = 64;

/// Step between attempts, so they spread over the range instead of walking neighbours.
const STRIDE: u64 = 7919;

/// What an Allocate asks of its relay port: the fields of
/// [`super::Output::AllocateRelay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortRequest<'a> {
    /// `Some(r)`: an even port, and with `r` also reserve the next (odd) one under a token.
    pub even_port: Option<bool>,
    /// Claim the port an earlier request reserved (`even_port` is then ignored; the server
    /// refuses requests carrying both with 400).
    pub reservation_token: Option<[u8; 8]>,
    /// Who asks (the authenticated username), for the per-owner reservation limit.
    pub owner: &'a str,
}

/// A bound relay port.
#[derive(Debug)]
pub struct PortGrant<S> {
    /// The socket `bind` returned (or the reserved one a token claimed).
    pub socket: S,
    /// Its port.
    pub port: u16,
    /// The token reserving `port + 1`, when the request asked for a reservation.
    pub reservation_token: Option<[u8; 8]>,
}

/// A reserved odd port.
struct Reserved<S> {
    socket: S,
    port: u16,
    owner: String,
    expires: Instant,
}

/// Which ports a search may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Any,
    Even,
    /// An even port whose successor is in the range too.
    Pair,
}

/// Port choice in `[min, max]` and the reservation table. See the module docs.
pub struct RelayPorts<S> {
    min: u16,
    max: u16,
    key: [u8; 32],
    counter: u64,
    reserved: HashMap<[u8; 8], Reserved<S>>,
    max_reserved: usize,
    max_per_owner: usize,
}

impl<S> std::fmt::Debug for RelayPorts<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key or the tokens.
        f.debug_struct("RelayPorts")
            .field("min", &self.min)
            .field("max", &self.max)
            .field("reserved", &self.reserved.len())
            .finish_non_exhaustive()
    }
}

impl<S> RelayPorts<S> {
    /// Ports `min..=max` (none if `min > max`), keyed by `key` (fresh random bytes per
    /// process). At most 1024 reservations at a time, 10 per owner, until
    /// [`RelayPorts::with_limits`].
    pub fn new(min: u16, max: u16, key: [u8; 32]) -> RelayPorts<S> {
        RelayPorts {
            min,
            max,
            key,
            counter: 0,
            reserved: HashMap::new(),
            max_reserved: 1024,
            max_per_owner: 10,
        }
    }

    /// Caps the reservations held at once, in total and per owner; a reservation beyond
    /// either is refused (508).
    pub fn with_limits(mut self, total: usize, per_owner: usize) -> RelayPorts<S> {
        self.max_reserved = total;
        self.max_per_owner = per_owner;
        self
    }

    /// Binds the relay port for one Allocate, calling `bind(port)` for each port tried
    /// (`None`: taken). A token request gets its reserved socket, once, if it has not
    /// expired; otherwise [`RelayError::InsufficientCapacity`], as for a full range or a
    /// reservation over the limits (RFC 8656 §7.2: 508).
    pub fn allocate(
        &mut self,
        now: Instant,
        request: PortRequest<'_>,
        mut bind: impl FnMut(u16) -> Option<S>,
    ) -> Result<PortGrant<S>, RelayError> {
        drop(self.expire(now));
        if let Some(token) = request.reservation_token {
            let r = self
                .reserved
                .remove(&token)
                .ok_or(RelayError::InsufficientCapacity)?;
            return Ok(PortGrant {
                socket: r.socket,
                port: r.port,
                reservation_token: None,
            });
        }
        let (token, seed) = self.derive();
        let want = match request.even_port {
            None => Want::Any,
            Some(false) => Want::Even,
            Some(true) => Want::Pair,
        };
        if want != Want::Pair {
            let (socket, port) = self.search(want, seed, &mut bind)?;
            return Ok(PortGrant {
                socket,
                port,
                reservation_token: None,
            });
        }
        let owned = self
            .reserved
            .values()
            .filter(|r| r.owner == request.owner)
            .count();
        if self.reserved.len() >= self.max_reserved || owned >= self.max_per_owner {
            return Err(RelayError::InsufficientCapacity);
        }
        let token = token.ok_or(RelayError::Internal)?;
        let ((socket, odd), port) = self.search(want, seed, |p| {
            let even = bind(p)?;
            let odd = bind(p.checked_add(1)?)?;
            Some((even, odd))
        })?;
        let odd_port = port.checked_add(1).ok_or(RelayError::Internal)?;
        self.reserved.insert(
            token,
            Reserved {
                socket: odd,
                port: odd_port,
                owner: request.owner.to_owned(),
                expires: now + RESERVATION_LIFETIME,
            },
        );
        Ok(PortGrant {
            socket,
            port,
            reservation_token: Some(token),
        })
    }

    /// Drops the reservation of `token` (say its paired allocation was refused), returning
    /// the reserved socket for the caller to close.
    pub fn cancel(&mut self, token: &[u8; 8]) -> Option<S> {
        self.reserved.remove(token).map(|r| r.socket)
    }

    /// Removes the reservations expired by `now` and returns their sockets, to be closed.
    pub fn expire(&mut self, now: Instant) -> Vec<S> {
        if self.reserved.values().all(|r| r.expires > now) {
            return Vec::new();
        }
        let gone: Vec<[u8; 8]> = self
            .reserved
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        gone.iter()
            .filter_map(|t| self.reserved.remove(t))
            .map(|r| r.socket)
            .collect()
    }

    /// When the earliest reservation expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.reserved.values().map(|r| r.expires).min()
    }

    /// Number of reservations held.
    pub fn reserved(&self) -> usize {
        self.reserved.len()
    }

    /// A fresh token (unique among held ones, never all zeros; `None` only if the
    /// derivation kept colliding) and a search seed.
    fn derive(&mut self) -> (Option<[u8; 8]>, u64) {
        let mut seed = 0;
        for _ in 0..4 {
            self.counter = self.counter.wrapping_add(1);
            let mac = crate::integrity::hmac_sha256(
                &self.key,
                &[b"umbra-turn relay ports", &self.counter.to_be_bytes()],
            );
            let mut token = [0u8; 8];
            token.copy_from_slice(&mac[..8]);
            let mut s = [0u8; 8];
            s.copy_from_slice(&mac[8..16]);
            seed = u64::from_be_bytes(s);
            if token != [0; 8] && !self.reserved.contains_key(&token) {
                return (Some(token), seed);
            }
        }
        (None, seed)
    }

    /// Tries up to [`ATTEMPTS`] ports of the kind `want`, from a seeded offset, until
    /// `try_port` succeeds.
    fn search<T>(
        &self,
        want: Want,
        seed: u64,
        mut try_port: impl FnMut(u16) -> Option<T>,
    ) -> Result<(T, u16), RelayError> {
        let (min, max) = (u64::from(self.min), u64::from(self.max));
        let (first, step) = match want {
            Want::Any => (min, 1),
            Want::Even | Want::Pair => (min + (min & 1), 2),
        };
        let last = match want {
            Want::Pair => max.saturating_sub(1),
            _ => max,
        };
        let count = if first > last || min > max {
            0
        } else {
            (last - first) / step + 1
        };
        if count == 0 {
            return Err(RelayError::InsufficientCapacity);
        }
        let stride = if gcd(STRIDE, count) == 1 { STRIDE } else { 1 };
        let start = seed % count;
        for i in 0..ATTEMPTS.min(count) {
            let index = (start + i * stride) % count;
            let Ok(port) = u16::try_from(first + index * step) else {
                continue;
            };
            if let Some(t) = try_port(port) {
                return Ok((t, port));
            }
        }
        Err(RelayError::InsufficientCapacity)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::rc::Rc;

    /// A fake port space: `bind` fails for taken ports; dropping a [`Sock`] frees its port.
    #[derive(Clone, Default, Debug)]
    struct Net(Rc<RefCell<HashSet<u16>>>);

    #[derive(Debug)]
    struct Sock {
        port: u16,
        net: Net,
    }

    impl Drop for Sock {
        fn drop(&mut self) {
            self.net.0.borrow_mut().remove(&self.port);
        }
    }

    impl Net {
        fn bind(&self, port: u16) -> Option<Sock> {
            let fresh = self.0.borrow_mut().insert(port);
            fresh.then(|| Sock {
                port,
                net: self.clone(),
            })
        }
        fn taken(&self, port: u16) -> bool {
            self.0.borrow().contains(&port)
        }
    }

    fn req(even_port: Option<bool>, reservation_token: Option<[u8; 8]>) -> PortRequest<'static> {
        PortRequest {
            even_port,
            reservation_token,
            owner: "u",
        }
    }

    #[test]
    fn even_port_without_reservation_is_even() {
        let net = Net::default();
        let mut rp = RelayPorts::new(40_001, 40_100, [1; 32]);
        let t0 = Instant::now();
        let mut held = Vec::new();
        for _ in 0..30 {
            let g = rp
                .allocate(t0, req(Some(false), None), |p| net.bind(p))
                .expect("port");
            assert_eq!(g.port % 2, 0);
            assert!((40_001..=40_100).contains(&g.port));
            assert_eq!(g.socket.port, g.port);
            assert_eq!(g.reservation_token, None);
            held.push(g);
        }
        assert_eq!(rp.reserved(), 0);
        assert_eq!(net.0.borrow().len(), 30, "nothing bound besides the grants");
    }

    #[test]
    fn reservation_holds_the_odd_port_for_one_claim() {
        let net = Net::default();
        let mut rp = RelayPorts::new(40_000, 40_009, [2; 32]);
        let t0 = Instant::now();
        let g = rp
            .allocate(t0, req(Some(true), None), |p| net.bind(p))
            .expect("pair");
        assert_eq!(g.port % 2, 0);
        let token = g.reservation_token.expect("token");
        assert!(net.taken(g.port + 1), "the odd port is held");
        // Ordinary allocations never get the reserved port.
        let mut others = Vec::new();
        for _ in 0..4 {
            let other = rp
                .allocate(t0, req(None, None), |p| net.bind(p))
                .expect("port");
            assert_ne!(other.port, g.port + 1);
            others.push(other);
        }
        let claimed = rp
            .allocate(t0, req(None, Some(token)), |p| net.bind(p))
            .expect("claim");
        assert_eq!(
            (claimed.port, claimed.socket.port),
            (g.port + 1, g.port + 1)
        );
        assert_eq!(claimed.reservation_token, None);
        assert_eq!(
            rp.allocate(t0, req(None, Some(token)), |p| net.bind(p))
                .err(),
            Some(RelayError::InsufficientCapacity),
            "a token works once"
        );
        assert_eq!(
            rp.allocate(t0, req(None, Some([7; 8])), |p| net.bind(p))
                .err(),
            Some(RelayError::InsufficientCapacity),
            "unknown token"
        );
    }

    #[test]
    fn reservations_expire_after_30_seconds() {
        let net = Net::default();
        let mut rp = RelayPorts::new(40_000, 40_099, [3; 32]);
        let t0 = Instant::now();
        let g = rp
            .allocate(t0, req(Some(true), None), |p| net.bind(p))
            .expect("pair");
        assert_eq!(rp.next_expiry(), Some(t0 + RESERVATION_LIFETIME));
        assert!(rp.expire(t0 + Duration::from_secs(29)).is_empty());
        let gone = rp.expire(t0 + RESERVATION_LIFETIME);
        assert_eq!(
            gone.iter().map(|s| s.port).collect::<Vec<_>>(),
            [g.port + 1]
        );
        drop(gone);
        assert!(!net.taken(g.port + 1), "closing it frees the port");
        assert_eq!(rp.next_expiry(), None);

        // Claimed after expiry, with no sweep in between: refused, and the port is freed.
        let g = rp
            .allocate(t0, req(Some(true), None), |p| net.bind(p))
            .expect("pair");
        let late = t0 + Duration::from_secs(31);
        assert_eq!(
            rp.allocate(late, req(None, g.reservation_token), |p| net.bind(p))
                .err(),
            Some(RelayError::InsufficientCapacity)
        );
        assert_eq!(rp.reserved(), 0);
        assert!(!net.taken(g.port + 1));
    }

    #[test]
    fn pairs_need_both_ports_and_respect_limits() {
        let net = Net::default();
        // 40 000–40 003 holds the pairs (40 000, 40 001) and (40 002, 40 003); 40 001 is taken.
        let _busy = net.bind(40_001);
        let mut rp = RelayPorts::new(40_000, 40_003, [4; 32]).with_limits(8, 1);
        let t0 = Instant::now();
        let g = rp
            .allocate(t0, req(Some(true), None), |p| net.bind(p))
            .expect("pair");
        assert_eq!(g.port, 40_002);
        assert!(!net.taken(40_000), "a half-bound pair is let go");
        assert!(
            rp.allocate(t0, req(Some(true), None), |p| net.bind(p))
                .is_err(),
            "no pair left"
        );

        let mut rp = RelayPorts::new(40_000, 40_099, [4; 32]).with_limits(2, 1);
        let mine = rp
            .allocate(t0, req(Some(true), None), |p| net.bind(p))
            .expect("pair");
        assert_eq!(
            rp.allocate(t0, req(Some(true), None), |p| net.bind(p))
                .err(),
            Some(RelayError::InsufficientCapacity),
            "one reservation per owner"
        );
        let v = PortRequest {
            owner: "v",
            ..req(Some(true), None)
        };
        let theirs = rp.allocate(t0, v, |p| net.bind(p)).expect("pair");
        let w = PortRequest {
            owner: "w",
            ..req(Some(true), None)
        };
        assert!(rp.allocate(t0, w, |p| net.bind(p)).is_err(), "two in total");
        // An even port without reservation is still fine.
        assert!(
            rp.allocate(t0, req(Some(false), None), |p| net.bind(p))
                .is_ok()
        );
        let odd = rp
            .cancel(&mine.reservation_token.expect("token"))
            .expect("held");
        assert_eq!(odd.port, mine.port + 1);
        drop(odd);
        assert!(!net.taken(mine.port + 1));
        assert_eq!(rp.reserved(), 1);
        assert_ne!(mine.reservation_token, theirs.reservation_token);
    }

    #[test]
    fn tiny_and_edge_ranges() {
        let net = Net::default();
        let t0 = Instant::now();
        let mut one_odd: RelayPorts<Sock> = RelayPorts::new(40_001, 40_001, [5; 32]);
        assert!(
            one_odd
                .allocate(t0, req(Some(false), None), |p| net.bind(p))
                .is_err()
        );
        assert_eq!(
            one_odd
                .allocate(t0, req(None, None), |p| net.bind(p))
                .map(|g| g.port),
            Ok(40_001)
        );
        let mut top_pair: RelayPorts<Sock> = RelayPorts::new(65_534, 65_535, [5; 32]);
        let g = top_pair
            .allocate(t0, req(Some(true), None), |p| net.bind(p))
            .expect("pair");
        assert_eq!(g.port, 65_534);
        let mut top: RelayPorts<Sock> = RelayPorts::new(65_535, 65_535, [5; 32]);
        assert!(
            top.allocate(t0, req(Some(true), None), |p| net.bind(p))
                .is_err()
        );
        let mut inverted: RelayPorts<Sock> = RelayPorts::new(2, 1, [5; 32]);
        assert!(
            inverted
                .allocate(t0, req(None, None), |p| net.bind(p))
                .is_err()
        );
    }

    #[test]
    fn search_covers_a_small_range() {
        // Every port but one taken: 64 attempts over 64 ports find it.
        let net = Net::default();
        let busy: Vec<Sock> = (40_000..40_064)
            .filter(|p| *p != 40_037)
            .filter_map(|p| net.bind(p))
            .collect();
        assert_eq!(busy.len(), 63);
        let mut rp: RelayPorts<Sock> = RelayPorts::new(40_000, 40_063, [6; 32]);
        let g = rp
            .allocate(Instant::now(), req(None, None), |p| net.bind(p))
            .expect("the free port");
        assert_eq!(g.port, 40_037);
    }
}

//! The forwarding unit of group calls, as the relay runs it: the I/O edge
//! around `umbra-sfu`'s sans-IO unit.
//!
//! One port, two protocols: UDP for media (every member's ICE, DTLS and
//! SRTP, demultiplexed by the unit) and TCP for control (one connection per
//! member, Noise under the unit's key, `proto/unit.proto`). The unit's key
//! is kept in a file (`unit_key_file`) so the link the messaging server
//! hands out stays valid across restarts; without one, a fresh key is made
//! at each start.
//!
//! - [`core`]: the task that owns the socket, the timers and the unit.
//! - [`control`]: one member's control connection.
//! - [`metrics`]: aggregate counters.
//!
//! Nothing here logs an address, a room or a credential.

mod control;
mod core;
pub mod metrics;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use umbra_sfu::{Limits, Sfu, SfuConfig};
use umbra_wire::invite::{Invite, UnitLink};
use umbra_wire::noise::Keypair;

pub use metrics::UnitMetrics;

/// What the unit is set up with (its `Debug` leaves out the secret and
/// the key).
#[derive(Clone)]
pub struct UnitSettings {
    /// UDP and TCP address (one port for both; port 0 picks one).
    pub listen: SocketAddr,
    /// The IP members reach it at (its ICE candidate), when it differs
    /// from the listen IP.
    pub advertised_ip: std::net::IpAddr,
    /// The relay secret credentials are checked against.
    pub secret: Vec<u8>,
    /// The unit's Noise key.
    pub key: [u8; 32],
    /// Room, credential and total limits.
    pub limits: Limits,
}

impl std::fmt::Debug for UnitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitSettings")
            .field("listen", &self.listen)
            .field("advertised_ip", &self.advertised_ip)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Control connections that have not joined yet, at most, and from one
/// IP address (one IPv6 /64): a flood of idle connections takes neither members' places
/// nor, from one address, everyone else's turn to join.
const PENDING_JOINS: usize = 128;
const PENDING_PER_IP: usize = 8;

/// A connection's place among those not joined yet; given back on drop.
pub(crate) struct Unjoined {
    by_ip: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Unjoined {
    fn take(
        pending: &Arc<Semaphore>,
        by_ip: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
    ) -> Option<Unjoined> {
        let permit = pending.clone().try_acquire_owned().ok()?;
        let ip = counted_as(ip);
        let mut map = by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= PENDING_PER_IP {
            return None;
        }
        *n += 1;
        Some(Unjoined {
            by_ip: by_ip.clone(),
            ip,
            _permit: permit,
        })
    }
}

/// The address a pending connection counts against: IPv6 by its /64 (one
/// host holds a whole /64 and could otherwise take a place per address),
/// IPv4 as it is.
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
        v4 => v4,
    }
}

impl Drop for Unjoined {
    fn drop(&mut self) {
        let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A bound, not yet running, forwarding unit.
pub struct Unit {
    udp: std::net::UdpSocket,
    tcp: TcpListener,
    key: Keypair,
    config: SfuConfig,
    addr: SocketAddr,
    metrics: Arc<UnitMetrics>,
}

/// Binds a TCP listener on the port the UDP socket got.
async fn bind_pair(want: SocketAddr) -> anyhow::Result<(std::net::UdpSocket, TcpListener)> {
    // With port 0 the UDP port is free, but its TCP twin may not be: try a
    // few.
    let tries = if want.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = core::bind_udp(want).with_context(|| format!("cannot bind UDP {want}"))?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "cannot bind TCP beside UDP {want}: {}",
        last.map_or_else(String::new, |e| e.to_string())
    ))
}

impl Unit {
    /// Binds the unit's sockets.
    pub async fn bind(settings: UnitSettings, metrics: Arc<UnitMetrics>) -> anyhow::Result<Unit> {
        let key = Keypair::from_private(&settings.key).context("the unit's key")?;
        let (udp, tcp) = bind_pair(settings.listen).await?;
        let addr = udp.local_addr()?;
        Ok(Unit {
            udp,
            tcp,
            key,
            config: SfuConfig {
                public: SocketAddr::new(settings.advertised_ip, addr.port()),
                secret: settings.secret,
                limits: settings.limits,
            },
            addr,
            metrics,
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address members reach it at (its advertised IP).
    pub fn public(&self) -> SocketAddr {
        self.config.public
    }

    /// The link members use, with `host` as the name they reach it by.
    pub fn link(&self, host: &str) -> UnitLink {
        UnitLink(Invite {
            host: host.to_owned(),
            port: self.config.public.port(),
            server_key: self.key.public,
            sign_key: None,
        })
    }

    /// Runs until `shutdown` resolves; members in a call are told it ends.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Unit {
            udp,
            tcp,
            key,
            config,
            metrics,
            ..
        } = self;
        let socket = UdpSocket::from_std(udp)?;
        // Each member holds one control connection; room for as many as
        // the unit takes, and some being turned away.
        let cap = config.limits.total + 64;
        let (core_tx, core_rx) = mpsc::channel(256);
        let (stop_tx, stop_rx) = watch::channel(false);
        let sfu = Sfu::new(config);
        let mut core = tokio::spawn(core::run(
            socket,
            sfu,
            core_rx,
            stop_rx.clone(),
            metrics.clone(),
        ));
        let ctx = Arc::new(control::Ctx {
            key,
            core: core_tx,
            metrics: metrics.clone(),
        });
        let slots = Arc::new(Semaphore::new(cap));
        let pending = Arc::new(Semaphore::new(PENDING_JOINS));
        let by_ip = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let accept = async {
            loop {
                let Ok((stream, from)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (Ok(slot), Some(unjoined)) = (
                    slots.clone().try_acquire_owned(),
                    Unjoined::take(&pending, &by_ip, from.ip()),
                ) else {
                    metrics.count_control_refused();
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    ctx.metrics.control_opened();
                    control::serve(stream, ctx.clone(), stop, unjoined).await;
                    ctx.metrics.control_closed();
                    drop(slot);
                });
            }
        };
        tracing::info!("forwarding unit running");
        let core_ended = tokio::select! {
            _ = shutdown => None,
            _ = accept => None,
            // The task owning the socket ended by itself (it does not,
            // short of a bug): the unit is no more, and says so.
            r = &mut core => Some(r),
        };
        let _ = stop_tx.send(true);
        drop(ctx);
        let ended = match core_ended {
            Some(r) => r.context("the forwarding unit's task").and_then(|_| {
                Err(anyhow::anyhow!(
                    "the forwarding unit's task ended by itself"
                ))
            }),
            None => core.await.context("the forwarding unit's task").map(drop),
        };
        // Let the control connections say why they end, whatever ended it.
        let _ = tokio::time::timeout(Duration::from_secs(2), slots.acquire_many(cap as u32)).await;
        ended?;
        tracing::info!("forwarding unit stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::counted_as;
    use std::net::IpAddr;

    #[test]
    fn pending_joins_count_by_ipv4_address_and_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(counted_as(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(counted_as(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            counted_as(ip("2001:db8:1:2:ffff::9")),
            counted_as(ip("2001:db8:1:2::1"))
        );
        assert_ne!(counted_as(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(counted_as(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }
}

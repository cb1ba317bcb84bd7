//! The call's leg to its TURN relay: one allocation through `umbra-turn`'s
//! sans-IO client (401 dance, refreshes, permissions, channels), the relay
//! candidate it yields, and sending and receiving through it. Channels are
//! bound to every remote candidate we accept, so media travels as 4-byte
//! ChannelData headers instead of 36-byte Send indications.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use umbra_turn::client::{Client, ClientConfig, ClientEvent};
pub use umbra_turn::demux::Transport;

use crate::CallError;

/// Where the relay is and how to log in (TURN REST credentials from the
/// messaging server: a random token, never the account name).
#[derive(Debug, Clone)]
pub struct RelayServer {
    /// The relay's address: its UDP address, or, over a stream (TURN over
    /// TCP, e.g. through a proxy), the address that stands for the stream.
    pub addr: SocketAddr,
    /// TURN username (`expiry:token`).
    pub username: String,
    /// TURN password.
    pub password: String,
    /// UDP, or a byte stream to the relay (the driver frames it).
    pub transport: Transport,
}

/// What the relay leg reports.
#[derive(Debug)]
pub enum RelayEvent {
    /// The allocation exists: `relay` is our relay candidate, `mapped` our
    /// address as the relay saw it.
    Ready {
        /// Relayed transport address.
        relay: SocketAddr,
        /// Server-reflexive address.
        mapped: Option<SocketAddr>,
    },
    /// Data from a peer through the relay.
    Data {
        /// The peer's address (as the relay sees it).
        peer: SocketAddr,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The allocation failed or ended.
    Failed(CallError),
}

/// One allocation on one relay.
pub struct RelayLeg {
    server: SocketAddr,
    client: Client,
    relay: Option<SocketAddr>,
    mapped: Option<SocketAddr>,
    permitted: HashSet<IpAddr>,
    bound: HashSet<SocketAddr>,
}

impl RelayLeg {
    /// Starts allocating at `now`.
    pub fn new(server: &RelayServer, seed: [u8; 32], now: Instant) -> Result<Self, CallError> {
        let config = ClientConfig::new(server.transport, &server.username, &server.password);
        let mut client = Client::new(config, seed);
        client
            .allocate(now)
            .map_err(|e| CallError::Relay(e.to_string()))?;
        Ok(Self {
            server: server.addr,
            client,
            relay: None,
            mapped: None,
            permitted: HashSet::new(),
            bound: HashSet::new(),
        })
    }

    /// The relay's address (datagrams from it belong to this leg).
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Our relayed address, once allocated.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay
    }

    /// Our address as the relay saw it, once allocated.
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// A datagram from the relay.
    pub fn handle_packet(&mut self, now: Instant, data: &[u8], out: &mut Vec<RelayEvent>) {
        // A packet the client cannot use (late retransmission, garbage) is
        // dropped; it never ends the call.
        let _ = self.client.handle_packet(now, data);
        self.drain_events(out);
    }

    /// Timers (retransmissions, refreshes).
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<RelayEvent>) {
        self.client.handle_timeout(now);
        self.drain_events(out);
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// Bytes for the relay.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.client.poll_transmit()
    }

    /// Lets `peer` reach us through the relay (and binds a channel to it).
    pub fn permit(&mut self, now: Instant, peer: SocketAddr) {
        if self.relay.is_none() || self.bound.contains(&peer) {
            return;
        }
        if self.client.bind_channel(now, peer).is_ok() {
            self.bound.insert(peer);
            self.permitted.insert(peer.ip());
        } else if self.permitted.insert(peer.ip()) {
            let _ = self.client.create_permission(now, &[peer]);
        }
    }

    /// Sends `data` to `peer` through the relay. False if `peer` has no
    /// permission (it was never a candidate we accepted).
    pub fn send(&mut self, peer: SocketAddr, data: &[u8]) -> bool {
        self.permitted.contains(&peer.ip()) && self.client.send_to(peer, data).is_ok()
    }

    /// Deletes the allocation.
    pub fn release(&mut self, now: Instant) {
        let _ = self.client.release(now);
    }

    fn drain_events(&mut self, out: &mut Vec<RelayEvent>) {
        while let Some(e) = self.client.poll_event() {
            match e {
                ClientEvent::Allocated { relay, mapped, .. } => {
                    self.relay = Some(relay);
                    self.mapped = mapped;
                    out.push(RelayEvent::Ready { relay, mapped });
                }
                ClientEvent::Data { peer, data } => out.push(RelayEvent::Data { peer, data }),
                ClientEvent::RequestFailed { method, code } => {
                    if self.relay.is_none() {
                        let why = match code {
                            Some(401) => "refused our credentials (401)".to_string(),
                            Some(486) => "refused: allocation quota reached (486)".to_string(),
                            Some(c) => format!("refused the allocation (error {c})"),
                            None => "did not answer".to_string(),
                        };
                        out.push(RelayEvent::Failed(CallError::Relay(why)));
                    } else {
                        tracing::debug!(?method, ?code, "relay request failed");
                    }
                }
                ClientEvent::AllocationEnded if self.relay.take().is_some() => {
                    out.push(RelayEvent::Failed(CallError::Relay(
                        "ended our allocation".into(),
                    )));
                }
                _ => {}
            }
        }
    }
}

//! Shared test harness: an in-memory network joining one TURN client, the TURN server, a
//! fake relay daemon and peers, driven with simulated time.

#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use umbra_turn::client::{Client, ClientConfig, ClientEvent};
use umbra_turn::server::{Output, RelayGrant, Server};
use umbra_turn::{AddressFamily, Class, Message, Transport};

pub const REALM: &str = "umbra.test";
pub const USER: &str = "alice";
pub const PASS: &str = "correct horse";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test literal")
}

/// Everything the server sent that the harness observed.
#[derive(Default)]
pub struct Log {
    /// Error codes of error responses the server sent to the client.
    pub error_codes: Vec<u16>,
    /// (relay, peer, bytes) the server sent out of relay sockets.
    pub to_peers: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Relay addresses released.
    pub released: Vec<SocketAddr>,
    /// Raw bytes sent to the client (after the last `take`).
    pub to_client: Vec<Vec<u8>>,
}

pub struct World {
    pub now: Instant,
    pub server: Server,
    pub client: Client,
    pub client_addr: SocketAddr,
    pub transport: Transport,
    pub next_port: u16,
    pub log: Log,
    pub events: Vec<ClientEvent>,
    /// When false, the client's packets are lost (simulates a vanished client).
    pub client_online: bool,
}

impl World {
    pub fn new(server: Server, config: ClientConfig, now: Instant) -> World {
        let transport = config.transport;
        World {
            now,
            server,
            client: Client::new(config, [42; 32]),
            client_addr: addr("198.51.100.10:40000"),
            transport,
            next_port: 50_000,
            log: Log::default(),
            events: Vec::new(),
            client_online: true,
        }
    }

    /// Delivers every queued packet until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(bytes) = self.client.poll_transmit() {
                moved = true;
                if self.client_online {
                    let _ = self.server.handle_packet(
                        self.now,
                        self.transport,
                        self.client_addr,
                        &bytes,
                    );
                }
            }
            while let Some(out) = self.server.poll_output() {
                moved = true;
                match out {
                    Output::SendToClient { bytes, client, .. } => {
                        assert_eq!(client, self.client_addr);
                        if let Ok(m) = Message::decode(&bytes)
                            && m.class() == Class::ErrorResponse
                            && let Ok(Some(e)) = m.error_code()
                        {
                            self.log.error_codes.push(e.code);
                        }
                        self.log.to_client.push(bytes.clone());
                        if self.client_online {
                            let _ = self.client.handle_packet(self.now, &bytes);
                        }
                    }
                    Output::SendFromRelay {
                        relay, peer, bytes, ..
                    } => self.log.to_peers.push((relay, peer, bytes)),
                    Output::AllocateRelay {
                        request, family, ..
                    } => {
                        let ip = match family {
                            AddressFamily::V4 => addr("203.0.113.1:0").ip(),
                            _ => addr("[2001:db8::1]:0").ip(),
                        };
                        let relay = SocketAddr::new(ip, self.next_port);
                        self.next_port += 2;
                        let _ = self.server.relay_allocated(
                            self.now,
                            request,
                            Ok(RelayGrant {
                                relay,
                                reservation_token: None,
                            }),
                        );
                    }
                    Output::ReleaseRelay { relay } => self.log.released.push(relay),
                    _ => {}
                }
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                self.events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances simulated time by `d`, firing every timer on the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        loop {
            let client_t = if self.client_online {
                self.client.poll_timeout()
            } else {
                None
            };
            let next = [client_t, self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    if self.client_online {
                        self.client.handle_timeout(self.now);
                    }
                    self.server.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = target;
        if self.client_online {
            self.client.handle_timeout(self.now);
        }
        self.server.handle_timeout(self.now);
        self.pump();
    }

    /// Takes the events seen so far.
    pub fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events)
    }

    /// A peer sends `data` to the relay address.
    pub fn peer_sends(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> bool {
        let ok = self
            .server
            .handle_relayed(self.now, relay, peer, data)
            .is_ok();
        self.pump();
        ok
    }

    pub fn allocate(&mut self) -> SocketAddr {
        self.client.allocate(self.now).expect("idle client");
        self.pump();
        self.client.relay_address().expect("allocated")
    }
}

//! A TCP relay that records every byte of every connection, each direction
//! apart: what a passive observer on that link (a packet capture) sees.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One connection as seen on the wire.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Toward the relayed address.
    pub up: Vec<u8>,
    /// Back from it.
    pub down: Vec<u8>,
}

/// Every connection through the capture so far.
pub type Captured = Arc<Mutex<Vec<Seen>>>;

/// Listens on `listen_ip` (any port) and relays each connection to `to`.
pub fn capture(listen_ip: &str, to: String) -> (SocketAddr, Captured) {
    let l = TcpListener::bind(format!("{listen_ip}:0")).expect("bind");
    let addr = l.local_addr().expect("addr");
    let log: Captured = Arc::new(Mutex::new(Vec::new()));
    let record = log.clone();
    std::thread::spawn(move || {
        for inbound in l.incoming().flatten() {
            let Ok(outbound) = TcpStream::connect(&to) else {
                continue;
            };
            let index = {
                let mut r = record.lock().expect("lock");
                r.push(Seen::default());
                r.len() - 1
            };
            for (up, mut from, mut into) in [
                (
                    true,
                    inbound.try_clone().expect("clone"),
                    outbound.try_clone().expect("clone"),
                ),
                (false, outbound, inbound),
            ] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = into.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                {
                                    let mut r = record.lock().expect("lock");
                                    let seen = &mut r[index];
                                    let side = if up { &mut seen.up } else { &mut seen.down };
                                    side.extend_from_slice(&buf[..n]);
                                }
                                if into.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    (addr, log)
}

/// All bytes of all connections, both ways, in one buffer (for searching).
pub fn all_bytes(captured: &Captured) -> Vec<u8> {
    let r = captured.lock().expect("lock");
    r.iter()
        .flat_map(|s| s.up.iter().chain(&s.down))
        .copied()
        .collect()
}

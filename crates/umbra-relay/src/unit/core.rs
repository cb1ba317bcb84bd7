//! The task that owns the forwarding unit: its UDP socket, its timers and
//! the sans-IO [`Sfu`]. Control connections reach it through [`Command`]s
//! and learn, through the `ended` channel each join gets, when the unit has
//! ended their media connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use umbra_sfu::{JoinError, JoinRequest, PeerId, RoomId, Sfu, SfuEvent};

use super::metrics::UnitMetrics;

/// A join, as a control connection hands it over.
#[derive(Debug)]
pub(crate) struct Join {
    pub room: RoomId,
    pub username: String,
    pub password: String,
    pub offer: String,
    pub reply: oneshot::Sender<Result<Admitted, JoinError>>,
}

/// A join the unit took.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub peer: PeerId,
    pub answer: String,
    pub room_size: usize,
    /// Resolves when the unit ends the connection on its own (it never
    /// came up, or went silent).
    pub ended: oneshot::Receiver<()>,
}

/// What control connections ask of the unit.
#[derive(Debug)]
pub(crate) enum Command {
    Join(Join),
    /// The member's control connection closed: it left.
    Leave(PeerId),
}

/// Longest datagram read (a DTLS flight or an SRTP packet is far smaller).
const MAX_DATAGRAM: usize = 2048;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the unit until `stop` turns true or every command sender is gone.
pub(crate) async fn run(
    socket: UdpSocket,
    mut sfu: Sfu,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<UnitMetrics>,
) {
    let mut ended: HashMap<PeerId, oneshot::Sender<()>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let wake = sfu
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => sfu.handle_datagram(Instant::now(), from, &buf[..n]),
                // An ICMP error for an earlier send, or the like: the
                // socket itself is fine.
                Err(e) => tracing::debug!(error = %e, "unit receive failed"),
            },
            c = commands.recv() => match c {
                Some(Command::Join(j)) => {
                    let req = JoinRequest {
                        room: j.room,
                        username: &j.username,
                        password: &j.password,
                        offer: &j.offer,
                    };
                    let joined = sfu.join(Instant::now(), unix_now(), &req).map(|joined| {
                        let (tx, rx) = oneshot::channel();
                        ended.insert(joined.peer, tx);
                        Admitted {
                            peer: joined.peer,
                            room_size: sfu.room_size(joined.peer).unwrap_or(1),
                            answer: joined.answer,
                            ended: rx,
                        }
                    });
                    if let Err(Ok(a)) = j.reply.send(joined) {
                        // The control connection went away while waiting.
                        ended.remove(&a.peer);
                        sfu.leave(a.peer);
                    }
                }
                Some(Command::Leave(peer)) => {
                    ended.remove(&peer);
                    sfu.leave(peer);
                }
                None => break,
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.changed() => break,
        }
        let now = Instant::now();
        if sfu.poll_timeout().is_some_and(|t| t <= now) {
            sfu.handle_timeout(now);
        }
        flush(&socket, &mut sfu, &metrics);
        while let Some(SfuEvent::Left(peer)) = sfu.poll_event() {
            if let Some(tx) = ended.remove(&peer) {
                let _ = tx.send(());
            }
        }
        metrics.update(&sfu.stats());
    }
    // Shutting down: end every connection the way a leave does (DTLS
    // close_notify on its way).
    for peer in ended.into_keys() {
        sfu.leave(peer);
    }
    flush(&socket, &mut sfu, &metrics);
    metrics.update(&sfu.stats());
}

/// Sends what the unit has to send. A full socket buffer drops the
/// datagram (as a congested link would), counted, rather than stall every
/// other member's audio behind it.
fn flush(socket: &UdpSocket, sfu: &mut Sfu, metrics: &UnitMetrics) {
    while let Some(d) = sfu.poll_transmit() {
        if socket.try_send_to(&d.data, d.to).is_err() {
            metrics.count_send_failed();
        }
    }
}

/// Binds the unit's UDP socket.
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

//! The worker's datagram and timer tasks: the client-facing UDP socket, one task per
//! relay socket, and the timer that drives allocation expiry from
//! [`umbra_turn::server::Server::poll_timeout`]. Each receives a batch, feeds it to the
//! server with one `Instant::now()`, then drains outputs and flushes sends once.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use umbra_turn::Transport;

use super::Worker;
use crate::udp::BatchSocket;

/// Longest the timer sleeps without looking again.
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(60);

/// Outcome of one receive attempt.
enum Recv {
    /// `n` slots filled.
    Got(usize),
    /// Spurious wake-up.
    Again,
    /// A socket error: back off briefly.
    Failed,
}

fn recv(w: &Worker, sock: &BatchSocket) -> Recv {
    match sock.try_recv(&mut w.rx.borrow_mut()) {
        Ok(n) => Recv::Got(n),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Recv::Again,
        Err(_) => Recv::Failed,
    }
}

/// Reads datagrams from clients.
pub(super) async fn client_task(w: Rc<Worker>) {
    loop {
        if w.client.readable().await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let n = match recv(&w, &w.client) {
            Recv::Got(n) => n,
            Recv::Again => continue,
            Recv::Failed => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let now = Instant::now();
        {
            let rx = w.rx.borrow();
            let mut st = w.state.borrow_mut();
            for (client, data) in rx.datagrams(n) {
                match st
                    .server
                    .handle_packet_forward(now, Transport::Udp, client, data)
                {
                    Ok(Some(f)) => w.forward(&mut st, f, now),
                    Ok(None) => {}
                    Err(d) => w.shared.metrics.discarded(&d),
                }
            }
            w.drain(&mut st, now);
        }
        w.flush();
    }
}

/// Reads datagrams from peers on one allocation's relay socket, until `stop`.
pub(super) async fn relay_task(
    w: Rc<Worker>,
    relay: SocketAddr,
    sock: Rc<BatchSocket>,
    stop: Rc<Notify>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.notified() => return,
            r = sock.readable() => if r.is_err() { return },
        }
        let n = match recv(&w, &sock) {
            Recv::Got(n) => n,
            Recv::Again => continue,
            Recv::Failed => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let now = Instant::now();
        {
            let rx = w.rx.borrow();
            let mut st = w.state.borrow_mut();
            for (src, data) in rx.datagrams(n) {
                let peer = w.shared.peer_from_local(src);
                if !w.deliver(&mut st, relay, peer, data, now) {
                    return;
                }
            }
            w.drain(&mut st, now);
        }
        w.flush();
    }
}

/// Expires allocations when their time comes.
pub(super) async fn timer_task(w: Rc<Worker>) {
    loop {
        let now = Instant::now();
        let next = w
            .state
            .borrow()
            .server
            .poll_timeout()
            .unwrap_or(now + MAX_TIMER_SLEEP)
            .min(now + MAX_TIMER_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = w.timer.notified() => continue,
        }
        let now = Instant::now();
        {
            let mut st = w.state.borrow_mut();
            st.expiring = true;
            st.server.handle_timeout(now);
            w.drain(&mut st, now);
            st.expiring = false;
        }
        w.flush();
    }
}

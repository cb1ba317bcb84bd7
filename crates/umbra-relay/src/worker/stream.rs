//! TURN over TCP and TLS: one task per connection reads the byte stream, cuts it into
//! STUN / ChannelData frames with [`umbra_turn::frame_len`] and feeds each to the server;
//! a writer task sends what the server queued for this client (bounded: a client that
//! does not read loses packets, it does not grow our memory). When the connection ends its
//! allocation goes too (RFC 8656 §3.1). A corrupt stream closes the connection.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use umbra_turn::{Transport, frame_len};

use super::{Incoming, Shared, Worker};
use crate::metrics::{DropReason, inc};

/// Frames queued for one client before further ones are dropped.
const QUEUE: usize = 512;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed before the first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes coalesced into one write.
const WRITE_CHUNK: usize = 64 * 1024;

/// Gives a connection slot back when the connection ends.
struct Slot(Arc<Shared>);

impl std::ops::Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes over an accepted connection (the listener already counted it).
pub(super) async fn accept(w: Rc<Worker>, incoming: Incoming) {
    w.shared
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    let _slot = Slot(w.shared.clone());
    let Ok(tcp) = tokio::net::TcpStream::from_std(incoming.stream) else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    if incoming.tls {
        let handshake = w.shared.tls.accept(tcp);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => serve(w, tls, incoming.peer, false).await,
            _ => inc_refused(&w),
        }
    } else {
        serve(w, tcp, incoming.peer, true).await;
    }
}

fn inc_refused(w: &Worker) {
    inc(&w.shared.metrics.connections_refused);
}

/// `coalesce`: write queued frames together. Off for TLS, where each frame gets its own
/// record: some clients (coturn's among them) read one TLS record as one message.
async fn serve<S>(w: Rc<Worker>, stream: S, client: SocketAddr, coalesce: bool)
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    {
        let mut st = w.state.borrow_mut();
        if st.streams.contains_key(&client) {
            return;
        }
        st.streams.insert(client, tx);
    }
    tokio::task::spawn_local(async move {
        let mut buf = Vec::with_capacity(WRITE_CHUNK);
        while let Some(first) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&first);
            while coalesce && buf.len() < WRITE_CHUNK {
                match rx.try_recv() {
                    Ok(more) => buf.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut timeout = FIRST_BYTE_TIMEOUT;
    loop {
        buf.reserve(16 * 1024);
        match tokio::time::timeout(timeout, rd.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
        timeout = w.shared.idle;
        let now = Instant::now();
        let mut corrupt = false;
        {
            let mut st = w.state.borrow_mut();
            let mut at = 0;
            loop {
                let rest = buf.get(at..).unwrap_or_default();
                match frame_len(rest) {
                    Ok(Some(len)) if len <= rest.len() => {
                        if let Some(frame) = rest.get(..len) {
                            match st.server.handle_packet_forward(
                                now,
                                Transport::Tcp,
                                client,
                                frame,
                            ) {
                                Ok(Some(f)) => w.forward(&mut st, f, now),
                                Ok(None) => {}
                                Err(d) => w.shared.metrics.discarded(&d),
                            }
                        }
                        at += len;
                    }
                    Ok(_) => break,
                    Err(_) => {
                        corrupt = true;
                        break;
                    }
                }
            }
            buf.drain(..at);
            w.drain(&mut st, now);
        }
        w.flush();
        if corrupt {
            w.shared.metrics.count_drop(DropReason::Malformed);
            break;
        }
    }
    let now = Instant::now();
    {
        let mut st = w.state.borrow_mut();
        st.streams.remove(&client);
        st.server.close_client(Transport::Tcp, client);
        w.drain(&mut st, now);
    }
    w.flush();
}

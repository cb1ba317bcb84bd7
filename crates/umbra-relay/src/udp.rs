//! Batched UDP I/O over `quinn-udp`: `recvmmsg` (up to [`quinn_udp::BATCH_SIZE`] datagrams
//! per system call) with GRO where the kernel has it, and sends coalesced with GSO (one
//! `sendmsg` carrying consecutive equal-size datagrams to one destination). No `unsafe`
//! here: the system calls live in `quinn-udp`.
//!
//! A receive that returns fewer than a full batch marks the socket drained (`recvmmsg`
//! stopped at `EAGAIN`), so a lightly loaded socket costs one `recvmmsg` per wake-up rather
//! than two (the second would only say `EAGAIN`).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;

/// Bytes per receive slot (a GRO batch is at most 64 KiB).
const SLOT: usize = 64 * 1024;
/// Largest GSO send.
const GSO_MAX_BYTES: usize = 64_000;

/// A non-blocking UDP socket with batched receive and GSO send.
#[derive(Debug)]
pub struct BatchSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

/// Receive buffers for one batch, reused across calls (one per worker).
pub struct RecvBufs {
    data: Vec<u8>,
    meta: Vec<RecvMeta>,
}

impl Default for RecvBufs {
    fn default() -> Self {
        RecvBufs {
            data: vec![0; SLOT * quinn_udp::BATCH_SIZE],
            meta: vec![RecvMeta::default(); quinn_udp::BATCH_SIZE],
        }
    }
}

impl RecvBufs {
    /// The datagrams of the last receive of `n` slots: (source, payload), GRO batches
    /// split back into their segments.
    pub fn datagrams(&self, n: usize) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta
            .iter()
            .zip(self.data.chunks(SLOT))
            .take(n)
            .flat_map(|(m, slot)| {
                let bytes = slot.get(..m.len).unwrap_or_default();
                let stride = if m.stride == 0 {
                    bytes.len().max(1)
                } else {
                    m.stride
                };
                bytes.chunks(stride).map(move |d| (m.addr, d))
            })
    }
}

impl BatchSocket {
    /// Wraps a non-blocking std socket. Must run inside a tokio runtime.
    pub fn new(socket: std::net::UdpSocket, buffer_bytes: usize) -> io::Result<BatchSocket> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), buffer_bytes);
        let _ = state.set_send_buffer_size((&socket).into(), buffer_bytes);
        // quinn-udp asks for the TOS byte of every datagram (for QUIC's ECN); a TURN relay
        // does not use it, and the control message costs on every receive.
        if socket.local_addr()?.is_ipv4() {
            let _ = socket2::SockRef::from(&socket).set_recv_tos_v4(false);
        }
        let io = tokio::net::UdpSocket::from_std(socket)?;
        Ok(BatchSocket { io, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Waits until a receive may succeed.
    pub async fn readable(&self) -> io::Result<()> {
        self.io.readable().await
    }

    /// Receives one batch without blocking; returns how many slots were filled.
    pub fn try_recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        let RecvBufs { data, meta } = bufs;
        let mut got = None;
        let r = self.io.try_io(Interest::READABLE, || {
            let mut chunks = data.chunks_mut(SLOT);
            let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let n = self.state.recv((&self.io).into(), &mut slices, meta)?;
            got = Some(n);
            if n < quinn_udp::BATCH_SIZE {
                // recvmmsg stopped at EAGAIN: the queue is empty. Saying so makes tokio
                // clear the readiness it saw before this call; readiness that arrives
                // later is kept, so no wake-up is lost.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (r, got) {
            (_, Some(n)) => Ok(n),
            (r, None) => r,
        }
    }

    fn try_send(&self, dest: SocketAddr, contents: &[u8], segment: Option<usize>) -> bool {
        let t = Transmit {
            destination: dest,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        // Straight to the (non-blocking) socket: we never wait for writability, and tokio's
        // readiness of a fresh socket is not known yet, so `try_io` would refuse.
        self.state.try_send((&self.io).into(), &t).is_ok()
    }

    /// Sends datagrams in order, coalescing runs to one destination with GSO. Returns how
    /// many datagrams could not be sent (socket buffer full: dropped, as UDP does).
    pub fn send_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
        scratch: &mut Vec<u8>,
    ) -> usize {
        let mut failed = 0;
        let max = self.state.max_gso_segments();
        let mut it = items.into_iter().peekable();
        while let Some((dest, first)) = it.next() {
            let seg = first.len();
            let mut count = 1;
            if max > 1 && seg > 0 {
                scratch.clear();
                scratch.extend_from_slice(first);
                while count < max && scratch.len() + seg <= GSO_MAX_BYTES {
                    match it.peek() {
                        Some((d, b)) if *d == dest && !b.is_empty() && b.len() <= seg => {
                            let short = b.len() < seg;
                            scratch.extend_from_slice(b);
                            count += 1;
                            it.next();
                            if short {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            }
            if count == 1 {
                if !self.try_send(dest, first, None) {
                    failed += 1;
                }
            } else if !self.try_send(dest, scratch, Some(seg)) {
                // GSO refused (or buffer full): fall back to one datagram at a time.
                for d in scratch.chunks(seg) {
                    if !self.try_send(dest, d, None) {
                        failed += 1;
                    }
                }
            }
        }
        failed
    }
}

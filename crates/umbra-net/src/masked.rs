//! A proxy's plain port, from the client's side: the WebSocket upgrade
//! (`umbra_wire::upgrade`), then a stream whose bytes are masked where they
//! would show what they are (`umbra_wire::mask`).
//!
//! [`Masked::new`] opens lazily: the first write (the Noise handshake's
//! first message), if it fits, is not sent on its own
//! but rides in the upgrade request, masked, and the proxy answers the 101
//! together with the server's answer to it. So the disguise costs no round
//! trip, and nothing is sent before the 101, as RFC 6455 requires: a write
//! made while the answer is awaited waits for it. The request goes out at
//! the first write or read (a flush or shutdown after a write finishes
//! sending it); [`Masked::open`] sends it with nothing and waits for the
//! 101 at once.
//!
//! Once admitted, toward the messaging server only the first Noise message
//! of each direction is masked, after which reads and writes pass straight
//! through; toward the call relay every byte is.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use umbra_wire::mask::{End, Mask, Prf};
use umbra_wire::proxy::{ProxyLink, Target};
use umbra_wire::upgrade::{self, AnswerError};

use crate::NetError;

/// Most bytes masked per write while a mask is on.
const CHUNK: usize = 16 * 1024;

/// How far the upgrade has got.
enum Phase {
    /// Nothing sent yet: the first write may ride in the request.
    Fresh,
    /// The request is going out; `at` bytes of it are written.
    Sending { request: Vec<u8>, at: usize },
    /// Waiting for the 101; `got` is what came so far.
    Answer { got: Vec<u8> },
    /// Admitted.
    Open,
}

/// What the upgrade request is made of.
struct Upgrade {
    secret: [u8; 32],
    host: String,
    now_unix: u64,
    nonce: [u8; 16],
    target: Target,
    timeout: Duration,
}

/// A stream masked both ways.
pub struct Masked<S> {
    inner: S,
    up: Mask,
    down: Mask,
    /// Where a write is masked before it goes out.
    scratch: Vec<u8>,
    /// Unmasked bytes that came with the proxy's answer, not yet read.
    early: Unread,
    phase: Phase,
    upgrade: Upgrade,
    /// When waiting for the answer ends, once the request is made.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// Bytes already read off the socket and made plain, not yet returned.
#[derive(Debug, Default)]
pub(crate) struct Unread {
    pub bytes: Vec<u8>,
    pub at: usize,
}

impl Unread {
    /// Copies what fits into `buf`; `false` if there was nothing.
    pub fn serve(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.at >= self.bytes.len() {
            return false;
        }
        let n = buf.remaining().min(self.bytes.len() - self.at);
        buf.put_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        if self.at == self.bytes.len() {
            self.bytes.clear();
            self.at = 0;
        }
        true
    }
}

fn closed_unanswered() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, AnswerError::Closed)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Masked<S> {
    /// A plain-port stream for `target` on `stream`, a fresh connection to
    /// the proxy of `link`: nothing is sent until the first write, flush or
    /// read, and the proxy's answer is awaited for at most `timeout`.
    pub fn new(
        stream: S,
        link: &ProxyLink,
        target: Target,
        now_unix: u64,
        nonce: [u8; 16],
        timeout: Duration,
    ) -> Self {
        let secret = &link.secret;
        let (up, down) = Mask::pair(&Prf::new(secret), &nonce, target, End::Sender);
        Self {
            inner: stream,
            up,
            down,
            scratch: Vec::new(),
            early: Unread::default(),
            phase: Phase::Fresh,
            upgrade: Upgrade {
                secret: *secret,
                host: upgrade::host_header(&link.host, link.port),
                now_unix,
                nonce,
                target,
                timeout,
            },
            deadline: None,
        }
    }

    /// Sends the upgrade for `target`, carrying nothing, and waits for the
    /// proxy's 101.
    pub async fn open(
        stream: S,
        link: &ProxyLink,
        target: Target,
        now_unix: u64,
        nonce: [u8; 16],
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let mut masked = Self::new(stream, link, target, now_unix, nonce, timeout);
        std::future::poll_fn(|cx| masked.poll_open(cx)).await?;
        Ok(masked)
    }

    /// Makes the request, carrying `first` (masked) if not empty.
    fn start(&mut self, first: &[u8]) {
        let mut early = first.to_vec();
        self.up.apply(&mut early);
        let u = &self.upgrade;
        let request =
            upgrade::request_with(&u.secret, &u.host, u.now_unix, u.nonce, u.target, &early);
        self.phase = Phase::Sending {
            request: request.into_bytes(),
            at: 0,
        };
        self.deadline = Some(Box::pin(tokio::time::sleep(u.timeout)));
    }

    /// Writes the request, if it is going out.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Phase::Sending { request, at } = &mut self.phase {
            while *at < request.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &request[*at..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *at += n;
            }
            self.phase = Phase::Answer {
                got: Vec::with_capacity(512),
            };
        }
        Poll::Ready(Ok(()))
    }

    /// Drives the upgrade until the proxy has admitted the stream.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.phase, Phase::Fresh) {
            self.start(&[]);
        }
        ready!(self.poll_send(cx))?;
        let Phase::Answer { got } = &mut self.phase else {
            return Poll::Ready(Ok(()));
        };
        let mut buf = [0u8; 2048];
        loop {
            if let Some(deadline) = &mut self.deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(io::Error::other(NetError::Timeout(
                    "the proxy's answer",
                ))));
            }
            let mut read = ReadBuf::new(&mut buf);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                return Poll::Ready(Err(closed_unanswered()));
            }
            got.extend_from_slice(&buf[..n]);
            match upgrade::answer(&self.upgrade.nonce, got) {
                Ok(None) => continue,
                Ok(Some(len)) => {
                    let mut rest = got.split_off(len);
                    self.down.apply(&mut rest);
                    self.early = Unread { bytes: rest, at: 0 };
                    self.phase = Phase::Open;
                    self.deadline = None;
                    return Poll::Ready(Ok(()));
                }
                Err(e) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
        }
    }
}

impl<S> Masked<S> {
    /// The socket underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Masked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !matches!(this.phase, Phase::Open) {
            ready!(this.poll_open(cx))?;
        }
        if this.early.serve(buf) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if !this.down.done() {
            this.down.apply(&mut buf.filled_mut()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Masked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Fresh if !buf.is_empty() && buf.len() <= upgrade::EARLY_MAX => {
                // The first write rides in the request, which goes out now
                // as far as the socket takes it (the rest at the next poll).
                this.start(buf);
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(buf.len()));
            }
            Phase::Open => {}
            _ => ready!(this.poll_open(cx))?,
        }
        if this.up.done() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // The keystream moves on by exactly what the socket took: a write
        // that is refused or cut short is rewound, so the next write carries
        // on where the stream really is.
        let take = buf.len().min(CHUNK);
        let at = this.up.checkpoint();
        this.scratch.clear();
        this.scratch.extend_from_slice(&buf[..take]);
        this.up.apply(&mut this.scratch);
        let written = Pin::new(&mut this.inner).poll_write(cx, &this.scratch);
        let n = match written {
            Poll::Ready(Ok(n)) => n,
            other => {
                this.up.rewind(at);
                return other;
            }
        };
        if n < take {
            this.up.rewind(at);
            this.scratch.truncate(n);
            this.scratch.copy_from_slice(&buf[..n]);
            this.up.apply(&mut this.scratch);
        }
        if this.up.done() {
            this.scratch = Vec::new();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Flushed means sent: the request, not yet the answer.
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Never a request cut short.
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

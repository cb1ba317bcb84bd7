//! A proxy's plain port, from the client's side: the WebSocket upgrade
//! (`umbra_wire::upgrade`), then a stream whose bytes are masked where they
//! would show what they are (`umbra_wire::mask`).
//!
//! [`Masked`] wraps the socket once the proxy has answered 101. Toward the
//! messaging server only the first Noise message of each direction is
//! masked, after which reads and writes pass straight through; toward the
//! call relay every byte is.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use umbra_wire::mask::{End, Mask, Way};
use umbra_wire::proxy::{ProxyLink, Target};
use umbra_wire::upgrade;

use crate::NetError;

/// Most bytes masked per write while a mask is on.
const CHUNK: usize = 16 * 1024;

/// A stream masked both ways.
pub struct Masked<S> {
    inner: S,
    up: Mask,
    down: Mask,
    /// Where a write is masked before it goes out.
    scratch: Vec<u8>,
    /// Unmasked bytes that came with the proxy's answer, not yet read.
    early: Unread,
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

impl<S: AsyncRead + AsyncWrite + Unpin> Masked<S> {
    /// Sends the upgrade for `target` on `stream`, a fresh connection to the
    /// proxy of `link`, and waits for the proxy's 101.
    pub async fn open(
        mut stream: S,
        link: &ProxyLink,
        target: Target,
        now_unix: u64,
        nonce: [u8; 16],
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let host = upgrade::host_header(&link.host, link.port);
        let request = upgrade::request(&link.secret, &host, now_unix, nonce, target);
        let run = async {
            stream.write_all(request.as_bytes()).await?;
            let mut answer = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(NetError::Proxy(
                        "the proxy closed the connection without answering",
                    ));
                }
                answer.extend_from_slice(&buf[..n]);
                if let Some(len) = upgrade::answer(&nonce, &answer)? {
                    answer.drain(..len);
                    return Ok(answer);
                }
            }
        };
        let early = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| NetError::Timeout("the proxy's answer"))??;
        let secret = &link.secret;
        let mut masked = Self {
            inner: stream,
            up: Mask::proxied(secret, &nonce, target, Way::Up, End::Sender),
            down: Mask::proxied(secret, &nonce, target, Way::Down, End::Receiver),
            scratch: Vec::new(),
            early: Unread {
                bytes: early,
                at: 0,
            },
        };
        masked.down.apply(&mut masked.early.bytes);
        Ok(masked)
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
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

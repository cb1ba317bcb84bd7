//! The two halves of an established channel.
//!
//! An idle connection holds no buffer (an idle server holds many thousands
//! of them): reads land in one scratch buffer per thread, lent only for the
//! moment of a read, and what is left of a partial frame is all a
//! connection keeps; the writer's buffer is released once written.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use umbra_wire::noise::{Opener, Sealer};

use crate::NetError;

/// The scratch buffer a read borrows.
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// Receives frames.
pub struct FrameReader {
    rd: Box<dyn AsyncRead + Send + Unpin>,
    opener: Opener,
}

impl FrameReader {
    pub(crate) fn new(rd: Box<dyn AsyncRead + Send + Unpin>, opener: Opener) -> Self {
        Self { rd, opener }
    }

    /// Reads once into this thread's scratch buffer and hands the bytes to
    /// the opener before the buffer is given back; how many were read (0:
    /// the peer closed).
    fn poll_feed(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, NetError>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *self.rd).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    if n > 0
                        && let Err(e) = self.opener.feed(&scratch[..n])
                    {
                        return Poll::Ready(Err(e.into()));
                    }
                    Poll::Ready(Ok(n))
                }
            }
        })
    }

    /// The next frame; `Ok(None)` when the peer closed cleanly between frames.
    pub async fn recv<M: Message + Default>(&mut self) -> Result<Option<M>, NetError> {
        loop {
            if let Some(frame) = self.opener.next_frame()? {
                return Ok(Some(frame));
            }
            let n = std::future::poll_fn(|cx| self.poll_feed(cx)).await?;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// Changes the largest frame accepted.
    pub fn set_max_frame(&mut self, max: usize) {
        self.opener.set_max_frame(max);
    }
}

/// Sends frames. Frames can be queued and flushed together: what is queued
/// is sealed at the flush, as few Noise messages as its size allows (one
/// authentication per message, not per frame: a busy server's replies and
/// pushes, many small frames per flush, cost a fraction of the sealing).
pub struct FrameWriter {
    wr: Box<dyn AsyncWrite + Send + Unpin>,
    sealer: Sealer,
    /// Frames queued, not yet sealed.
    plain: Vec<u8>,
}

impl FrameWriter {
    pub(crate) fn new(wr: Box<dyn AsyncWrite + Send + Unpin>, sealer: Sealer) -> Self {
        Self {
            wr,
            sealer,
            plain: Vec::new(),
        }
    }

    /// Adds `msg` to what the next flush sends, without sending it yet.
    pub fn queue<M: Message>(&mut self, msg: &M) -> Result<(), NetError> {
        umbra_wire::frame::encode_frame(msg, &mut self.plain);
        Ok(())
    }

    /// Seals and writes everything queued.
    pub async fn flush(&mut self) -> Result<(), NetError> {
        if !self.plain.is_empty() {
            let mut out = Vec::with_capacity(Sealer::sealed_len(self.plain.len()));
            self.sealer.seal_bytes(&self.plain, &mut out)?;
            // Released, not kept for the next flush: an idle connection
            // holds no buffer.
            self.plain = Vec::new();
            self.wr.write_all(&out).await?;
        }
        self.wr.flush().await?;
        Ok(())
    }

    /// Queues and writes one frame.
    pub async fn send<M: Message>(&mut self, msg: &M) -> Result<(), NetError> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Bytes queued and not yet written (before sealing).
    pub fn queued(&self) -> usize {
        self.plain.len()
    }

    /// Closes the write direction.
    pub async fn shutdown(&mut self) -> Result<(), NetError> {
        self.flush().await?;
        self.wr.shutdown().await?;
        Ok(())
    }
}

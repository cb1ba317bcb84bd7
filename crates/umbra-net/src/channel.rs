//! The two halves of an established channel.
//!
//! Buffers stay small while a connection is idle (an idle server holds many
//! thousands of them): reads go through a 2 KiB buffer and the writer's
//! scratch space is released after large frames.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use umbra_wire::noise::{Opener, Sealer};

use crate::NetError;

const READ_CHUNK: usize = 2048;

/// Receives frames.
pub struct FrameReader {
    rd: Box<dyn AsyncRead + Send + Unpin>,
    opener: Opener,
    buf: Box<[u8]>,
}

impl FrameReader {
    pub(crate) fn new(rd: Box<dyn AsyncRead + Send + Unpin>, opener: Opener) -> Self {
        Self {
            rd,
            opener,
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// The next frame; `Ok(None)` when the peer closed cleanly between frames.
    pub async fn recv<M: Message + Default>(&mut self) -> Result<Option<M>, NetError> {
        loop {
            if let Some(frame) = self.opener.next_frame()? {
                return Ok(Some(frame));
            }
            let n = self.rd.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.opener.feed(&self.buf[..n])?;
        }
    }

    /// Changes the largest frame accepted.
    pub fn set_max_frame(&mut self, max: usize) {
        self.opener.set_max_frame(max);
    }
}

/// Sends frames. Frames can be queued and flushed together.
pub struct FrameWriter {
    wr: Box<dyn AsyncWrite + Send + Unpin>,
    sealer: Sealer,
    out: Vec<u8>,
}

impl FrameWriter {
    pub(crate) fn new(wr: Box<dyn AsyncWrite + Send + Unpin>, sealer: Sealer) -> Self {
        Self {
            wr,
            sealer,
            out: Vec::new(),
        }
    }

    /// Encrypts `msg` into the outgoing buffer without writing it yet.
    pub fn queue<M: Message>(&mut self, msg: &M) -> Result<(), NetError> {
        self.sealer.seal_frame(msg, &mut self.out)?;
        Ok(())
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), NetError> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
            if self.out.capacity() > 16 * 1024 {
                self.out = Vec::new();
            }
        }
        self.wr.flush().await?;
        Ok(())
    }

    /// Queues and writes one frame.
    pub async fn send<M: Message>(&mut self, msg: &M) -> Result<(), NetError> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Closes the write direction.
    pub async fn shutdown(&mut self) -> Result<(), NetError> {
        self.flush().await?;
        self.wr.shutdown().await?;
        Ok(())
    }
}

//! Where bytes in flight wait: read buffers and pipes, both pooled per
//! worker and borrowed only while bytes are moving, so an idle connection
//! holds neither.
//!
//! A pipe carries a bulk transfer without copying it (`splice`): the kernel
//! moves references to the socket's pages into the pipe and from the pipe
//! into the other socket, where a buffer costs a copy out of the kernel and
//! another back in. A pipe costs two descriptors and two calls per chunk,
//! like a buffer, so it only pays once chunks are large; see `conn`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{PipeFlags, SpliceFlags};

/// Bytes moved per read.
pub(super) const CHUNK: usize = 64 * 1024;
/// A pipe's capacity, and the most moved per splice. Measured on loopback:
/// bulk throughput grows by about 30% over copying at 256 KiB, not at the
/// default 64 KiB, and no further at 512 KiB or 1 MiB.
const PIPE: usize = 256 * 1024;
/// Buffers, and pipes, a worker keeps for reuse.
const KEEP: usize = 32;

/// An empty pipe, both ends non-blocking.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// The worker's spare buffers and pipes.
#[derive(Default)]
pub(super) struct Pool {
    buffers: Vec<Vec<u8>>,
    pipes: Vec<Pipe>,
}

impl Pool {
    /// A read buffer of [`CHUNK`] bytes.
    pub fn take(&mut self) -> Vec<u8> {
        self.buffers.pop().unwrap_or_else(|| vec![0u8; CHUNK])
    }

    /// Gives a buffer back (kept if it is a whole chunk and there is room).
    pub fn give(&mut self, buf: Vec<u8>) {
        if self.buffers.len() < KEEP && buf.len() == CHUNK {
            self.buffers.push(buf);
        }
    }

    /// An empty pipe.
    pub fn take_pipe(&mut self) -> io::Result<Pipe> {
        if let Some(p) = self.pipes.pop() {
            return Ok(p);
        }
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Best effort: past the user's pipe quota the kernel keeps 64 KiB,
        // and splicing still works, in smaller steps.
        let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE);
        Ok(Pipe { read, write })
    }

    /// Gives back a pipe that is empty (one still holding bytes is closed
    /// instead, with them).
    pub fn give_pipe(&mut self, pipe: Pipe) {
        if self.pipes.len() < KEEP {
            self.pipes.push(pipe);
        }
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

/// Moves what the pipe holds at most from socket `from` into `pipe`; 0 at
/// the end of the stream.
pub(super) fn fill(from: impl AsFd, pipe: &Pipe) -> io::Result<usize> {
    rustix::pipe::splice(
        from,
        None,
        &pipe.write,
        None,
        PIPE,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )
    .map_err(errno)
}

/// Moves up to `len` bytes from `pipe` into socket `to`.
pub(super) fn drain(pipe: &Pipe, to: impl AsFd, len: usize) -> io::Result<usize> {
    rustix::pipe::splice(
        &pipe.read,
        None,
        to,
        None,
        len,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )
    .map_err(errno)
}

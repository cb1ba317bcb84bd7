//! Length-prefixed protobuf frames: `u32-be length || protobuf bytes`.
//!
//! Frames travel inside the decrypted Noise stream. [`FrameBuffer`] collects
//! plaintext and yields whole frames; it enforces the frame limit from the
//! length prefix alone, before buffering the body.

use prost::Message;

use crate::WireError;

/// Appends one frame holding `msg` to `out`.
pub fn encode_frame<M: Message>(msg: &M, out: &mut Vec<u8>) {
    let len = msg.encoded_len();
    out.reserve(4 + len);
    // Frames are bounded far below u32::MAX by MAX_FRAME_BYTES on the reading side.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode_raw(out);
}

/// Accumulates decrypted bytes and splits them into frames.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
}

impl FrameBuffer {
    /// A buffer that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame: max_frame.min(crate::MAX_FRAME_BYTES),
        }
    }

    /// Changes the limit (after the peer announced its own).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.min(crate::MAX_FRAME_BYTES);
    }

    /// Appends decrypted bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, decoded; `Ok(None)` when more bytes are needed.
    pub fn next_frame<M: Message + Default>(&mut self) -> Result<Option<M>, WireError> {
        let avail = &self.buf[self.start..];
        let Some(prefix) = avail.get(..4) else {
            self.compact();
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        let Some(body) = avail.get(4..4 + len) else {
            self.compact();
            return Ok(None);
        };
        let msg = M::decode(body)?;
        self.start += 4 + len;
        if self.start == self.buf.len() {
            // Nothing partial: idle connections keep no buffer.
            self.buf = Vec::new();
            self.start = 0;
        }
        Ok(Some(msg))
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClientFrame, Ping, client_frame::Body};

    fn ping(n: u64) -> ClientFrame {
        ClientFrame {
            request_id: n,
            body: Some(Body::Ping(Ping { nonce: n })),
        }
    }

    #[test]
    fn frames_split_across_arbitrary_chunks() {
        let mut wire = Vec::new();
        for n in 1..=50 {
            encode_frame(&ping(n), &mut wire);
        }
        for chunk in [1, 2, 3, 7, 64] {
            let mut fb = FrameBuffer::new(1024);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                fb.extend(piece);
                while let Some(f) = fb.next_frame::<ClientFrame>().expect("valid") {
                    got.push(f.request_id);
                }
            }
            assert_eq!(got, (1..=50).collect::<Vec<_>>());
            assert_eq!(fb.pending(), 0);
        }
    }

    #[test]
    fn oversize_prefix_is_refused_before_the_body_arrives() {
        let mut fb = FrameBuffer::new(1024);
        fb.extend(&2000u32.to_be_bytes());
        assert!(matches!(
            fb.next_frame::<ClientFrame>(),
            Err(WireError::FrameTooLarge {
                len: 2000,
                max: 1024
            })
        ));
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        let mut fb = FrameBuffer::new(1024);
        fb.extend(&3u32.to_be_bytes());
        fb.extend(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            fb.next_frame::<ClientFrame>(),
            Err(WireError::Malformed(_))
        ));
    }
}

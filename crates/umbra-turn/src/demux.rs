//! Telling STUN from ChannelData (RFC 8656 §12, RFC 7983 first-byte rules) and framing
//! them on stream transports (TCP/TLS), where messages arrive back to back.

use crate::channel_data::ChannelData;
use crate::error::DecodeError;
use crate::header::HEADER_LEN;
use crate::message::Message;

/// The transport a client reaches the TURN server over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: one message per datagram, ChannelData padding optional.
    Udp,
    /// TCP or TLS-over-TCP: a byte stream, ChannelData always padded.
    Tcp,
}

impl Transport {
    /// True for stream transports (ChannelData must be padded).
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}

/// What a packet from a client (or the server) is.
#[derive(Debug, Clone)]
pub enum Packet<'a> {
    /// A STUN message.
    Stun(Message<'a>),
    /// A ChannelData message.
    ChannelData(ChannelData<'a>),
}

/// Decodes one complete packet (a datagram, or one frame cut by [`frame_len`]).
pub fn demux(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    match bytes.first() {
        None => Err(DecodeError::Truncated),
        Some(b) if b >> 6 == 0b00 => Message::decode(bytes).map(Packet::Stun),
        Some(b) if b >> 6 == 0b01 => ChannelData::decode(bytes).map(Packet::ChannelData),
        Some(_) => Err(DecodeError::UnknownFraming),
    }
}

/// On a stream transport: how many bytes the next frame at the start of `buf` occupies
/// (ChannelData including its padding). `Ok(None)` means fewer than 4 bytes are buffered
/// yet; the caller should read more. The returned length may exceed `buf.len()`.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(h) = buf.get(..4) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    match h[0] >> 6 {
        0b00 => {
            if len % 4 != 0 {
                return Err(DecodeError::BadLength);
            }
            Ok(Some(HEADER_LEN + len))
        }
        0b01 => {
            let channel = u16::from_be_bytes([h[0], h[1]]);
            if !crate::channel_data::is_valid_channel(channel) {
                return Err(DecodeError::InvalidChannelNumber);
            }
            Ok(Some(4 + len.div_ceil(4) * 4))
        }
        _ => Err(DecodeError::UnknownFraming),
    }
}

/// Splits complete frames off the front of a stream buffer.
///
/// Returns the frames found and how many bytes they consumed; the caller drains that many
/// bytes and keeps the rest for the next read. An error means the stream is corrupt and the
/// connection should be closed.
pub fn split_frames(buf: &[u8]) -> Result<(Vec<&[u8]>, usize), DecodeError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(n) = frame_len(&buf[at..])? {
        match buf.get(at..at + n) {
            Some(f) => frames.push(f),
            None => break,
        }
        at += n;
    }
    Ok((frames, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths() {
        assert_eq!(frame_len(&[0, 1, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 1, 0, 8]), Ok(Some(28)));
        assert_eq!(frame_len(&[0, 1, 0, 7]), Err(DecodeError::BadLength));
        assert_eq!(frame_len(&[0x40, 0, 0, 5]), Ok(Some(12)));
        assert_eq!(frame_len(&[0x40, 0, 0, 8]), Ok(Some(12)));
        assert_eq!(
            frame_len(&[0x80, 0, 0, 8]),
            Err(DecodeError::UnknownFraming)
        );
        // RFC 5766's wider channel range (0x4000..=0x7FFF) is accepted.
        assert_eq!(frame_len(&[0x7f, 0xff, 0, 8]), Ok(Some(12)));
    }

    #[test]
    fn split_keeps_partial_tail() {
        let mut s = Vec::new();
        s.extend_from_slice(&[0x40, 0x01, 0, 1, 0xaa, 0, 0, 0]);
        s.extend_from_slice(&[0x40, 0x02, 0, 4, 1, 2, 3, 4]);
        s.extend_from_slice(&[0x40, 0x03, 0, 4, 1]);
        let (frames, used) = split_frames(&s).expect("valid");
        assert_eq!(frames.len(), 2);
        assert_eq!(used, 16);
    }

    #[test]
    fn demux_rejects_other_first_bytes() {
        assert!(matches!(demux(&[]), Err(DecodeError::Truncated)));
        assert!(matches!(
            demux(&[0x80; 12]),
            Err(DecodeError::UnknownFraming)
        ));
        assert!(matches!(
            demux(&[0x40, 0x00, 0, 0]),
            Ok(Packet::ChannelData(_))
        ));
    }
}

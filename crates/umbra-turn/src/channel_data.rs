//! ChannelData framing (RFC 8656 §12.4): a 4-byte header (channel number, payload length)
//! followed by the payload, padded to a multiple of 4 on stream transports (TCP/TLS) and
//! optionally on UDP.

use crate::error::{DecodeError, EncodeError};

/// First valid channel number.
pub const CHANNEL_MIN: u16 = 0x4000;
/// Last channel number RFC 8656 allows, and the last our client binds.
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// Last channel number accepted from others: RFC 5766 allowed up to 0x7FFF, and RFC 5766
/// clients still use that range (coturn's `turnutils_uclient` does).
pub const CHANNEL_MAX_ACCEPTED: u16 = 0x7FFF;

/// True if `n` is a channel number a peer may use: 0x4000..=0x7FFF (RFC 5766's range,
/// which contains RFC 8656's 0x4000..=0x4FFF; being liberal here is what lets RFC 5766
/// clients interoperate).
pub fn is_valid_channel(n: u16) -> bool {
    (CHANNEL_MIN..=CHANNEL_MAX_ACCEPTED).contains(&n)
}

/// A decoded ChannelData message borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number.
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Decodes one ChannelData message from `bytes`.
    ///
    /// `bytes` must hold at least the advertised payload; up to 3 bytes of padding after it
    /// are accepted (UDP senders may pad), anything beyond is an error.
    pub fn decode(bytes: &'a [u8]) -> Result<ChannelData<'a>, DecodeError> {
        let h = bytes.get(..4).ok_or(DecodeError::Truncated)?;
        let channel = u16::from_be_bytes([h[0], h[1]]);
        if !is_valid_channel(channel) {
            return Err(DecodeError::InvalidChannelNumber);
        }
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let data = bytes.get(4..4 + len).ok_or(DecodeError::Truncated)?;
        if bytes.len() > 4 + len.div_ceil(4) * 4 {
            return Err(DecodeError::LengthMismatch);
        }
        Ok(ChannelData { channel, data })
    }

    /// Encodes into a new buffer; `pad` adds the zero padding stream transports require.
    pub fn encode(&self, pad: bool) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(4 + self.data.len() + 3);
        self.encode_into(pad, &mut out)?;
        Ok(out)
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, pad: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !is_valid_channel(self.channel) {
            return Err(EncodeError::InvalidChannelData);
        }
        let len = u16::try_from(self.data.len()).map_err(|_| EncodeError::InvalidChannelData)?;
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.data);
        if pad {
            let p = (4 - self.data.len() % 4) % 4;
            out.extend_from_slice(&[0u8; 3][..p]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_padded_and_not() {
        let cd = ChannelData {
            channel: 0x4001,
            data: b"hello",
        };
        let udp = cd.encode(false).expect("valid");
        assert_eq!(udp.len(), 9);
        let tcp = cd.encode(true).expect("valid");
        assert_eq!(tcp.len(), 12);
        assert_eq!(ChannelData::decode(&udp), Ok(cd));
        assert_eq!(ChannelData::decode(&tcp), Ok(cd));
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(ChannelData::decode(&[0x40, 0]), Err(DecodeError::Truncated));
        assert_eq!(
            ChannelData::decode(&[0x80, 0, 0, 0]),
            Err(DecodeError::InvalidChannelNumber)
        );
        assert_eq!(
            ChannelData::decode(&[0x3f, 0xff, 0, 0]),
            Err(DecodeError::InvalidChannelNumber)
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0, 0, 5, 1, 2]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0, 0, 1, 1, 0, 0, 0, 0]),
            Err(DecodeError::LengthMismatch)
        );
        assert!(
            ChannelData {
                channel: 0x3000,
                data: b""
            }
            .encode(false)
            .is_err()
        );
    }
}

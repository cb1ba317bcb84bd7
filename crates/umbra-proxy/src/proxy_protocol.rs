//! PROXY protocol v2 from a load balancer in front of the proxy.
//!
//! When enabled, every connection must start with a v2 header; it is read
//! and thrown away. The proxy has no use for the client's address and never
//! sends PROXY protocol upstream: the server must not learn it either.

use tokio::io::{AsyncRead, AsyncReadExt};

const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest address block accepted (v2 allows 65535; real ones are short).
const MAX_BLOCK: usize = 1024;

/// Why a header was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// Not a PROXY v2 header.
    #[error("the connection did not start with a PROXY protocol v2 header")]
    Missing,
    /// Malformed.
    #[error("malformed PROXY protocol v2 header")]
    Malformed,
    /// Reading failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads and discards one PROXY v2 header.
pub async fn strip<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(), ProxyHeaderError> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await?;
    if fixed[..12] != SIGNATURE {
        return Err(ProxyHeaderError::Missing);
    }
    let version = fixed[12] >> 4;
    let command = fixed[12] & 0x0F;
    if version != 2 || command > 1 {
        return Err(ProxyHeaderError::Malformed);
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if len > MAX_BLOCK {
        return Err(ProxyHeaderError::Malformed);
    }
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn strips_v2_and_refuses_others() {
        let mut header = SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12]);
        header.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 1, 0x30, 0x39, 0x01, 0xBB]);
        header.extend_from_slice(b"rest");
        let mut input = &header[..];
        strip(&mut input).await.expect("valid header");
        assert_eq!(input, b"rest");
        let mut http = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        assert!(matches!(
            strip(&mut http).await,
            Err(ProxyHeaderError::Missing)
        ));
    }
}

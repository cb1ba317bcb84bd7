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

/// Length of the address block that follows a header's fixed 16 bytes.
fn block_len(fixed: &[u8]) -> Result<usize, ProxyHeaderError> {
    if fixed.len() < 16 || fixed[..12] != SIGNATURE {
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
    Ok(len)
}

/// The length of the header at the start of `bytes`, once all of it is
/// there (`None` until then). Anything that cannot be the start of a v2
/// header is refused as soon as it differs.
pub fn header_len(bytes: &[u8]) -> Result<Option<usize>, ProxyHeaderError> {
    let n = bytes.len().min(SIGNATURE.len());
    if bytes[..n] != SIGNATURE[..n] {
        return Err(ProxyHeaderError::Missing);
    }
    if bytes.len() < 16 {
        return Ok(None);
    }
    let total = 16 + block_len(&bytes[..16])?;
    Ok((bytes.len() >= total).then_some(total))
}

/// Reads and discards one PROXY v2 header (reading no byte past it).
pub async fn strip<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(), ProxyHeaderError> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await?;
    let mut rest = vec![0u8; block_len(&fixed)?];
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
        // The same rules on bytes as they arrive.
        assert_eq!(header_len(&header[..5]).expect("a start"), None);
        assert_eq!(header_len(&header[..27]).expect("short"), None);
        assert_eq!(header_len(&header).expect("whole"), Some(28));
        assert!(matches!(header_len(b"GET"), Err(ProxyHeaderError::Missing)));
        let mut v1 = header[..16].to_vec();
        v1[12] = 0x11;
        assert!(matches!(header_len(&v1), Err(ProxyHeaderError::Malformed)));
    }
}

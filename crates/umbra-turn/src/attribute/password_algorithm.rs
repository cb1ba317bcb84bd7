//! PASSWORD-ALGORITHM and PASSWORD-ALGORITHMS values (RFC 8489 §14.11–14.12, §18.5).

use crate::error::DecodeError;

/// A password algorithm for the long-term credential key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    /// MD5 (0x0001): key = MD5(username ":" realm ":" password).
    Md5,
    /// SHA-256 (0x0002): key = SHA-256(username ":" realm ":" password).
    Sha256,
    /// Any other registered or unregistered number (parameters are dropped).
    Other(u16),
}

impl PasswordAlgorithm {
    /// The registered number.
    pub fn number(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 0x0001,
            PasswordAlgorithm::Sha256 => 0x0002,
            PasswordAlgorithm::Other(n) => n,
        }
    }

    /// From the registered number.
    pub fn from_number(n: u16) -> PasswordAlgorithm {
        match n {
            0x0001 => PasswordAlgorithm::Md5,
            0x0002 => PasswordAlgorithm::Sha256,
            n => PasswordAlgorithm::Other(n),
        }
    }

    /// Encodes one `algorithm, params length (0)` entry.
    pub(crate) fn encode(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.number().to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
    }

    /// Decodes entries until `v` is exhausted; returns them and checks padding bounds.
    pub(crate) fn decode_list(
        typ: u16,
        mut v: &[u8],
    ) -> Result<Vec<PasswordAlgorithm>, DecodeError> {
        let bad = |reason| DecodeError::InvalidAttribute { typ, reason };
        let mut list = Vec::new();
        while !v.is_empty() {
            if v.len() < 4 {
                return Err(bad("truncated algorithm entry"));
            }
            let number = u16::from_be_bytes([v[0], v[1]]);
            let plen = usize::from(u16::from_be_bytes([v[2], v[3]]));
            let padded = 4 + plen.div_ceil(4) * 4;
            // The last entry's padding may be outside the value (it is attribute padding).
            let consumed = padded.min(v.len());
            if 4 + plen > v.len() {
                return Err(bad("algorithm parameters overflow"));
            }
            list.push(PasswordAlgorithm::from_number(number));
            v = &v[consumed..];
        }
        Ok(list)
    }
}

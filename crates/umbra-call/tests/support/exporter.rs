//! A stand-in for an MLS group's exporter in tests (the frame layer's and
//! the forwarding unit's): HMAC-SHA256 under an epoch's secret.

use hmac::{Hmac, Mac};
use sframe::mls::MlsExporter;
use sha2::Sha256;

/// An epoch's exporter as MLS's is to the frame layer: a secret every
/// member of that epoch shares, expanded by label and context.
pub struct Exporter(pub [u8; 32]);

#[derive(Debug, thiserror::Error)]
#[error("no export")]
pub struct NoExport;

impl MlsExporter for Exporter {
    type BaseKey = Vec<u8>;
    type Error = NoExport;

    fn export_secret(&self, label: &str, context: &[u8], len: usize) -> Result<Vec<u8>, NoExport> {
        let mut out = Vec::new();
        let mut block = 0u8;
        while out.len() < len {
            let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).map_err(|_| NoExport)?;
            mac.update(label.as_bytes());
            mac.update(context);
            mac.update(&[block]);
            out.extend_from_slice(&mac.finalize().into_bytes());
            block += 1;
        }
        out.truncate(len);
        Ok(out)
    }
}

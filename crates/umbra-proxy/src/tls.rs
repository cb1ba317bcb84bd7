//! The TLS side of port 443: the operator's certificate, or a self-signed
//! one generated on first start and kept in the data directory. ALPN
//! `http/1.1`, like an ordinary web server.
//!
//! The certificate is camouflage, not the security boundary: the Noise
//! session inside is authenticated end to end with the server's pinned key,
//! so clients accept any certificate here (see `umbra_net::dial`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A loaded certificate.
pub struct Certificate {
    /// The TLS server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, hex.
    pub fingerprint: String,
    /// Whether it was generated here.
    pub generated: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads `cert_file`/`key_file`, or the generated pair in `data_dir`
/// (creating it for `host` if absent).
pub fn load(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    data_dir: &Path,
    host: &str,
) -> anyhow::Result<Certificate> {
    let (cert_path, key_path, generated) = match (cert_file, key_file) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
        _ => {
            let c = data_dir.join("tls-cert.pem");
            let k = data_dir.join("tls-key.pem");
            if !c.exists() || !k.exists() {
                generate(&c, &k, host)?;
            }
            (c, k, true)
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert_path.display()))?;
    let leaf = chain
        .first()
        .with_context(|| format!("no certificate in {}", cert_path.display()))?;
    let fingerprint = hex::encode(Sha256::digest(leaf.as_ref()));
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading private key {}", key_path.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and private key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Certificate {
        config: Arc::new(config),
        fingerprint,
        generated,
    })
}

fn generate(cert: &Path, key: &Path, host: &str) -> anyhow::Result<()> {
    if let Some(dir) = key.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let certified = rcgen::generate_simple_self_signed(vec![host.to_string()])
        .context("generating a self-signed certificate")?;
    write_private(key, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, certified.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!("generated a self-signed TLS certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn generates_into_a_data_dir_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("fresh").join("umbra-proxy-data");
        let first = super::load(None, None, &data, "proxy.example.net").expect("generated");
        assert!(first.generated);
        // Kept: the same certificate on the next start.
        let again = super::load(None, None, &data, "proxy.example.net").expect("reloaded");
        assert_eq!(first.fingerprint, again.fingerprint);
    }
}

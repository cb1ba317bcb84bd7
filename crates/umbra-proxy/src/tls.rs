//! The TLS side of port 443: the operator's certificate, or a self-signed
//! one generated on first start and kept in the data directory. ALPN
//! `http/1.1`, like an ordinary web server.
//!
//! A generated certificate is what `openssl req -x509 -subj /CN=HOST` makes
//! on any server: the proxy's public name as subject and issuer (and in the
//! subject alternative names), a random 159-bit serial, a year's validity
//! starting at a random moment of the last hour, a P-256 key, and openssl's
//! extensions in openssl's order. Nothing in it is the same on two
//! proxies. It is replaced when it nears its end or names another host.
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

/// The TLS implementation the proxy uses everywhere.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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
            let now = crate::shared::unix_now();
            if !c.exists() || !k.exists() || needs_renewal(&c, host, now) {
                generate(&c, &k, host, now)?;
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

/// Days a generated certificate is valid.
const VALID_DAYS: i64 = 365;
/// A generated certificate is replaced this close to its end.
const RENEW_BEFORE_SECS: u64 = 30 * 86_400;

/// Unix seconds of a certificate's validity, `(not_before, not_after)`.
pub(crate) fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    Some((
        u64::try_from(v.not_before.timestamp()).ok()?,
        u64::try_from(v.not_after.timestamp()).ok()?,
    ))
}

/// Whether the generated certificate at `path` ends within a month, names
/// another host, or cannot be read.
fn needs_renewal(path: &Path, host: &str, now: u64) -> bool {
    let Ok(Some(leaf)) = CertificateDer::pem_file_iter(path).map(|mut i| i.next()) else {
        return true;
    };
    let Ok(leaf) = leaf else { return true };
    let Some((_, ends)) = validity(leaf.as_ref()) else {
        return true;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return true;
    };
    let named = cert
        .subject()
        .iter_common_name()
        .any(|cn| cn.as_str() == Ok(host));
    ends < now.saturating_add(RENEW_BEFORE_SECS) || !named
}

/// A DER length.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A DER element: tag, length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

fn extension(oid: &[u64], critical: bool, content: Vec<u8>) -> rcgen::CustomExtension {
    let mut ext = rcgen::CustomExtension::from_oid_content(oid, content);
    ext.set_criticality(critical);
    ext
}

/// The parameters `openssl req -x509 -subj /CN=HOST -addext
/// subjectAltName=DNS:HOST -days 365` would use, its extensions in its
/// order: subject key identifier (SHA-1 of the key, RFC 5280's method 1),
/// authority key identifier, CA basic constraints, the name.
fn ordinary_params(
    host: &str,
    now: u64,
    public_key: &[u8],
) -> anyhow::Result<rcgen::CertificateParams> {
    use rand::{Rng, RngCore};
    use sha1::Digest as _;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, host);
    params.distinguished_name = dn;
    let mut serial = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f).max(1);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let start = i64::try_from(now).unwrap_or(0) - rand::rngs::OsRng.gen_range(0..3_600);
    params.not_before =
        time::OffsetDateTime::from_unix_timestamp(start).context("the clock is out of range")?;
    params.not_after = params.not_before + time::Duration::days(VALID_DAYS);
    params.is_ca = rcgen::IsCa::NoCa;
    params.use_authority_key_identifier_extension = false;
    let key_id = sha1::Sha1::digest(public_key);
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => der(0x87, &ip.octets()),
        Ok(std::net::IpAddr::V6(ip)) => der(0x87, &ip.octets()),
        Err(_) => der(0x82, host.as_bytes()),
    };
    params.custom_extensions = vec![
        extension(&[2, 5, 29, 14], false, der(0x04, &key_id)),
        extension(&[2, 5, 29, 35], false, der(0x30, &der(0x80, &key_id))),
        extension(&[2, 5, 29, 19], true, der(0x30, &[0x01, 0x01, 0xff])),
        extension(&[2, 5, 29, 17], false, der(0x30, &name)),
    ];
    Ok(params)
}

/// An ordinary self-signed certificate for `host` and its key, as PEM.
pub fn self_signed_pem(host: &str, now: u64) -> anyhow::Result<(String, String)> {
    let signing_key = rcgen::KeyPair::generate().context("generating a key")?;
    let certified = ordinary_params(host, now, signing_key.public_key_raw())?
        .self_signed(&signing_key)
        .context("generating a self-signed certificate")?;
    Ok((certified.pem(), signing_key.serialize_pem()))
}

fn generate(cert: &Path, key: &Path, host: &str, now: u64) -> anyhow::Result<()> {
    if let Some(dir) = key.parent() {
        crate::files::private_dir(dir)?;
    }
    let (chain, private) = self_signed_pem(host, now)?;
    crate::files::write_private(key, private.as_bytes())?;
    std::fs::write(cert, chain).with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!("generated a self-signed TLS certificate");
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
        // Another name, another certificate.
        let renamed = super::load(None, None, &data, "other.example.net").expect("renamed");
        assert_ne!(first.fingerprint, renamed.fingerprint);
    }

    #[test]
    fn an_expiring_certificate_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let now = 1_800_000_000;
        super::generate(&c, &k, "p.example", now).expect("generate");
        assert!(!super::needs_renewal(&c, "p.example", now));
        assert!(!super::needs_renewal(&c, "p.example", now + 300 * 86_400));
        assert!(super::needs_renewal(&c, "p.example", now + 340 * 86_400));
        assert!(super::needs_renewal(&c, "q.example", now));
    }
}

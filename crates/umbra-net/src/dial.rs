//! Opening the byte stream to the server: directly, or through a proxy.
//!
//! Through a proxy the client connects to the proxy's address only (never
//! the server's). On a TLS port it sends the admission preamble
//! (`umbra_wire::proxy`) inside TLS; on a plain port it opens with a
//! WebSocket upgrade that carries the same proof and the first write, and
//! masks what follows ([`crate::masked`]); on a fronting port it opens with a marked TLS hello
//! for the fronted site ([`crate::fronted`]). Either way what follows is the ordinary Noise
//! session with the server, end to end: the proxy forwards it without being
//! able to read it.
//!
//! The proxy's TLS certificate is not checked. TLS here is camouflage (it
//! makes the connection look like HTTPS); the security of the session comes
//! from Noise, whose server key is pinned by the invite link, so a
//! certificate check would add nothing but a way to fail (self-signed
//! volunteer certificates).

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use umbra_wire::proxy::{ProxyLink, Target, preamble};

use crate::fronted::Fronted;
use crate::masked::Masked;
use crate::{NetError, Stream};

/// How to reach the server.
#[derive(Debug, Clone)]
pub enum Route {
    /// Straight to `host:port`.
    Direct(String),
    /// Through a proxy.
    Proxy(ProxyLink),
}

/// A connected stream, ready for the Noise handshake.
pub type BoxStream = Box<dyn Stream>;

async fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, NetError> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| NetError::Timeout("connecting"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Opens a stream to `target` along `route`.
pub async fn dial(route: &Route, target: Target, timeout: Duration) -> Result<BoxStream, NetError> {
    match route {
        Route::Direct(addr) => Ok(Box::new(tcp(addr, timeout).await?)),
        Route::Proxy(link) => {
            let stream = tcp(&link.address(), timeout).await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            // A userspace CSPRNG (seeded from the OS): no syscall per connection.
            let mut nonce = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut nonce);
            if let Some(name) = &link.front {
                let fronted = Fronted::open(stream, link, name, target, now, timeout).await?;
                Ok(Box::new(fronted))
            } else if link.tls {
                let hello = preamble(&link.secret, now, nonce, target);
                let name = ServerName::try_from(
                    link.host.trim_matches(|c| c == '[' || c == ']').to_string(),
                )
                .map_err(|_| NetError::Proxy("the proxy link's host is not a valid TLS name"))?;
                let connector = tokio_rustls::TlsConnector::from(client_config()?);
                let mut tls = tokio::time::timeout(timeout, connector.connect(name, stream))
                    .await
                    .map_err(|_| NetError::Timeout("the proxy's TLS handshake"))??;
                tls.write_all(&hello).await?;
                Ok(Box::new(tls))
            } else {
                match target {
                    // Lazy: the first write (the Noise handshake's) rides in
                    // the upgrade. The answer is awaited for less than the
                    // handshake's own timeout, so a silent proxy is reported
                    // as the proxy, not as the server.
                    Target::Messaging => Ok(Box::new(Masked::new(
                        stream,
                        link,
                        target,
                        now,
                        nonce,
                        timeout.saturating_sub(timeout / 5),
                    ))),
                    // A call's relay leg opens once per call and its first
                    // reads run deep in the media engine: the upgrade is
                    // answered here, so a refusal reaches the caller in words.
                    Target::Relay => Ok(Box::new(
                        Masked::open(stream, link, target, now, nonce, timeout).await?,
                    )),
                }
            }
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn client_config() -> Result<Arc<rustls::ClientConfig>, NetError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|_| NetError::Proxy("TLS setup failed"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any certificate; see the module documentation for why.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

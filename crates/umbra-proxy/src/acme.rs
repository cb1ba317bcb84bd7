//! `--acme DOMAIN`: a real certificate without effort. It is obtained from
//! an ACME CA (RFC 8555; Let's Encrypt unless another directory is named)
//! by TLS-ALPN-01 (RFC 8737) on the proxy's own TLS port, kept in the data
//! directory, and renewed when two thirds of its life have passed.
//!
//! Until the first certificate arrives the port serves a generated one for
//! the domain. A challenge is answered only to a client that offers nothing
//! but `acme-tls/1` and names a domain with a challenge pending; such a
//! connection carries no data and never reaches admission. The admitted
//! path is untouched: the resolver hands rustls an `Arc` it already holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, Key, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where and what to ask for.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The domain the certificate is for (it must resolve to this proxy).
    pub domain: String,
    /// The ACME directory URL.
    pub directory: String,
    /// A PEM root to trust for the ACME server instead of the system's (a
    /// private or test CA).
    pub ca_root: Option<PathBuf>,
}

/// The certificate the TLS port serves, and pending challenges.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let only_acme = hello.alpn().is_some_and(|mut offered| {
            offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none()
        });
        if only_acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.lock().ok()?.get(&name).cloned();
        }
        self.current.read().ok().map(|c| c.clone())
    }
}

impl Resolver {
    fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut c) = self.current.write() {
            *c = key;
        }
    }
}

use crate::tls::provider;

/// A certified key from a PEM chain and a PEM private key.
fn certified(chain_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .context("parsing the certificate chain")?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in the chain");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("parsing the private key")?;
    Ok(Arc::new(
        CertifiedKey::from_der(chain, key, &provider()).context("the key does not match")?,
    ))
}

/// The validity of a certified key's leaf.
fn validity(key: &CertifiedKey) -> Option<(u64, u64)> {
    crate::tls::validity(key.cert.first()?.as_ref())
}

/// When a certificate valid over `(from, to)` should be renewed: once two
/// thirds of its life have passed.
pub fn renewal_due((from, to): (u64, u64)) -> u64 {
    from + to.saturating_sub(from) / 3 * 2
}

/// Keeps the certificate: loads it, obtains and renews it.
pub struct Manager {
    settings: Settings,
    dir: PathBuf,
    resolver: Arc<Resolver>,
    /// When the certificate being served must be replaced (0: now).
    due: u64,
}

impl Manager {
    /// The stored certificate for the domain, or a generated one until the
    /// CA issues it.
    pub fn load(settings: Settings, data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("acme");
        crate::files::private_dir(&dir)?;
        let stored = std::fs::read(dir.join(format!("{}.pem", settings.domain)))
            .ok()
            .and_then(|pem| certified(&pem, &pem).ok());
        let (current, due) = match stored {
            Some(key) => {
                let due = validity(&key).map_or(0, renewal_due);
                (key, due)
            }
            None => {
                let (chain, key) =
                    crate::tls::self_signed_pem(&settings.domain, crate::shared::unix_now())?;
                (certified(chain.as_bytes(), key.as_bytes())?, 0)
            }
        };
        Ok(Self {
            settings,
            dir,
            resolver: Arc::new(Resolver {
                current: RwLock::new(current),
                challenges: Mutex::new(HashMap::new()),
            }),
            due,
        })
    }

    /// The TLS configuration serving this manager's certificate.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        Ok(config)
    }

    /// Obtains and renews for as long as the proxy runs; failures are
    /// retried from a minute up to six hours apart.
    pub async fn run(mut self, metrics: Arc<crate::metrics::Metrics>) {
        use std::sync::atomic::Ordering;
        // The ACME client builds its TLS on the process's default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut backoff = Duration::from_secs(60);
        loop {
            let now = crate::shared::unix_now();
            if now < self.due {
                // Wake at least daily: the clock may have jumped.
                let wait = (self.due - now).min(86_400);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            match self.obtain().await {
                Ok(due) => {
                    metrics.acme_issued.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(domain = %self.settings.domain, "ACME certificate installed");
                    self.due = due;
                    backoff = Duration::from_secs(60);
                }
                Err(e) => {
                    metrics.acme_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(domain = %self.settings.domain, error = %format!("{e:#}"), retry_in_secs = backoff.as_secs(), "ACME issuance failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(6 * 3600));
                }
            }
        }
    }

    /// The account key, created on first use and kept 0600.
    fn account_key(&self) -> anyhow::Result<(Key, PrivateKeyDer<'static>)> {
        let path = self.dir.join("account.der");
        let der = match std::fs::read(&path) {
            Ok(der) => PrivatePkcs8KeyDer::from(der),
            Err(_) => {
                let (_, der) = Key::generate_pkcs8().context("generating the ACME account key")?;
                crate::files::write_private(&path, der.secret_pkcs8_der())?;
                der
            }
        };
        let key =
            Key::from_pkcs8_der(der.clone_key()).context("the ACME account key is damaged")?;
        Ok((key, PrivateKeyDer::Pkcs8(der)))
    }

    /// One issuance: order, answer the challenge, finalise, store, serve.
    /// Returns when the new certificate is due for renewal.
    async fn obtain(&self) -> anyhow::Result<u64> {
        let domain = self.settings.domain.clone();
        let builder = match &self.settings.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        }
        .context("setting up the ACME client")?;
        let (account, _) = builder
            .create_from_key(self.account_key()?, self.settings.directory.clone())
            .await
            .with_context(|| format!("registering with {}", self.settings.directory))?;
        let ids = [Identifier::Dns(domain.clone())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .context("placing the order")?;
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.context("reading an authorization")?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => anyhow::bail!("the CA refused the authorization ({other:?})"),
                }
                let mut challenge = authz
                    .challenge(ChallengeType::TlsAlpn01)
                    .context("the CA offers no tls-alpn-01 challenge")?;
                let digest = challenge.key_authorization().digest();
                let answer = challenge_key(&domain, digest.as_ref())?;
                if let Ok(mut c) = self.resolver.challenges.lock() {
                    c.insert(domain.to_ascii_lowercase(), answer);
                }
                challenge.set_ready().await.context("answering the challenge")?;
            }
            let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
            let status = order.poll_ready(&retry).await.context("waiting for validation")?;
            anyhow::ensure!(
                status == OrderStatus::Ready,
                "the CA did not validate {domain} ({status:?}): does it resolve to this proxy, and is the TLS port reachable on 443?"
            );
            let key_pem = order.finalize().await.context("finalising the order")?;
            let chain_pem = order
                .poll_certificate(&retry)
                .await
                .context("downloading the certificate")?;
            Ok::<_, anyhow::Error>((key_pem, chain_pem))
        }
        .await;
        if let Ok(mut c) = self.resolver.challenges.lock() {
            c.remove(&domain.to_ascii_lowercase());
        }
        let (key_pem, chain_pem) = result?;
        let key = certified(chain_pem.as_bytes(), key_pem.as_bytes())?;
        let due = validity(&key).map_or(0, renewal_due);
        crate::files::write_private(
            &self.dir.join(format!("{domain}.pem")),
            format!("{key_pem}{chain_pem}").as_bytes(),
        )?;
        self.resolver.set(key);
        Ok(due)
    }
}

/// The TLS-ALPN-01 answer: a certificate naming only `domain`, with the
/// critical acmeIdentifier extension holding the key authorization's digest.
fn challenge_key(domain: &str, digest: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    anyhow::ensure!(
        digest.len() == 32,
        "the key authorization digest is not SHA-256"
    );
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
        .context("the domain is not a valid name")?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().context("generating a challenge key")?;
    let cert = params
        .self_signed(&key)
        .context("making the challenge certificate")?;
    // Not `from_der`: its consistency check refuses the critical extension
    // that is the whole point of this certificate.
    let signing = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .context("loading the challenge key")?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds() {
        assert_eq!(renewal_due((0, 90)), 60);
        assert_eq!(renewal_due((1000, 1000 + 90 * 86_400)), 1000 + 60 * 86_400);
    }

    #[test]
    fn a_stored_certificate_is_served_and_a_missing_one_is_replaced_for_now() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            domain: "proxy.test".into(),
            directory: "https://127.0.0.1:1/dir".into(),
            ca_root: None,
        };
        let m = Manager::load(settings.clone(), dir.path()).expect("load");
        assert_eq!(m.due, 0, "no certificate yet: obtain at once");
        let (chain, key) = crate::tls::self_signed_pem("proxy.test", 1_900_000_000).expect("pem");
        std::fs::write(
            dir.path().join("acme/proxy.test.pem"),
            format!("{key}{chain}"),
        )
        .expect("write");
        let m = Manager::load(settings, dir.path()).expect("load");
        assert!(
            m.due > 1_900_000_000,
            "a stored certificate waits for its renewal"
        );
    }
}

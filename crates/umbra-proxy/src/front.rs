//! Fronting mode (`--front HOST:PORT`): the TLS ports are, to everyone who
//! is not admitted, the fronted site itself.
//!
//! A connection's first TLS record decides (`umbra_wire::front::peek`),
//! before anything is answered. A marked, fresh, new hello is admitted: it
//! gets a server flight in the fronted site's shape, and then its stream
//! goes to the upstream inside TLS records (`umbra_net::fronted`). Every
//! other connection — a browser, a scanner, a replayed hello, silence —
//! is connected to the fronted site and passed through byte for byte, its
//! first record included, so the site's own TLS answers it.
//!
//! The shape of the flight is learned from the site ([`Front::keep_learning`]):
//! at start and every hour the proxy sends it a hello of the shape clients
//! send and keeps its ServerHello (cipher suite, extensions) and the sizes
//! of the records that follow; until the site has answered once, a common
//! TLS 1.3 server's shape stands in.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use umbra_net::fronted::{Fronted, client_hello};
use umbra_wire::front::{self, Peek, Template};

use crate::admission::{Decision, Reason};
use crate::shared::{Shared, unix_now};
use crate::{decoy, forward};

/// How often the site's shape is learned again.
const RELEARN: Duration = Duration::from_secs(3600);
/// How soon to try again when the site could not be asked.
const RETRY: Duration = Duration::from_secs(60);
/// How long the site's flight may pause before it is taken as whole.
const QUIET: Duration = Duration::from_millis(300);
/// Most bytes of the site's flight kept.
const MAX_FLIGHT: usize = 64 * 1024;

/// The fronted site and the shape of its answer.
pub(crate) struct Front {
    /// Where it is (`host:port`).
    pub addr: String,
    /// The name clients' hellos carry.
    pub name: String,
    template: RwLock<Arc<Template>>,
}

impl Front {
    /// The site at `addr`, named `name`, with a stand-in shape.
    pub fn new(addr: String, name: String) -> Self {
        Self {
            addr,
            name,
            template: RwLock::new(Arc::new(Template::default())),
        }
    }

    fn template(&self) -> Arc<Template> {
        match self.template.read() {
            Ok(t) => t.clone(),
            Err(_) => Arc::new(Template::default()),
        }
    }

    /// Learns the site's shape now and every hour.
    pub async fn keep_learning(&self, timeout: Duration) {
        loop {
            let wait = match learn(&self.addr, &self.name, timeout).await {
                Some(t) => {
                    if let Ok(mut slot) = self.template.write() {
                        *slot = Arc::new(t);
                    }
                    tracing::debug!("learned the fronted site's handshake");
                    RELEARN
                }
                None => {
                    tracing::warn!(
                        "cannot learn the fronted site's handshake; check `umbra proxy doctor`"
                    );
                    RETRY
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Asks the site once: a hello of the clients' shape, then its flight.
pub(crate) async fn learn(addr: &str, name: &str, timeout: Duration) -> Option<Template> {
    let hello = client_hello(name).ok()?;
    let ask = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(&hello).await.ok()?;
        let mut flight = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let wait = if flight.is_empty() { timeout } else { QUIET };
            match tokio::time::timeout(wait, s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => flight.extend_from_slice(&buf[..n]),
                _ => break,
            }
            if flight.len() >= MAX_FLIGHT {
                break;
            }
        }
        Some(flight)
    };
    let flight = tokio::time::timeout(timeout * 2, ask).await.ok()??;
    Template::learn(&flight)
}

/// Serves one connection on a fronting TLS port.
pub(crate) async fn handle(mut tcp: TcpStream, shared: &Shared, front: &Front) {
    // The site is dialled at once, in parallel with the decision, so that a
    // visitor's clock (how soon the site answers, how long it bears
    // silence) runs from the visitor's own connect, as it would on the site
    // itself. For an admitted client the site sees a connection open and
    // close without a byte.
    let site = tokio::spawn(tokio::time::timeout(
        shared.handshake,
        TcpStream::connect(front.addr.clone()),
    ));
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    let decide = async {
        loop {
            let n = match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            first.extend_from_slice(&buf[..n]);
            match front::peek(shared.admission.secret(), &first) {
                Peek::NeedMore => {}
                Peek::NotAdmitted => return None,
                Peek::Valid {
                    verified,
                    record_len,
                    client_random,
                    session_id,
                } => {
                    let d = shared.admission.check(verified, record_len, unix_now());
                    return Some((d, client_random, session_id));
                }
            }
        }
    };
    let decided = tokio::time::timeout(shared.handshake, decide)
        .await
        .ok()
        .flatten();
    let (decision, client_random, session_id) = match decided {
        Some(d) => d,
        None => (Decision::Decoy(Reason::NoProof), [0; 32], Vec::new()),
    };
    shared.count(decision);
    let Decision::Admit(a) = decision else {
        // The site answers, from the first byte the visitor sent.
        if let Ok(Ok(Ok(site))) = site.await {
            let _ = decoy::relay_on(tcp, &first, site).await;
        }
        return;
    };
    site.abort();
    let secret = shared.admission.secret();
    let flight = {
        let mut rng = rand::thread_rng();
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        front
            .template()
            .flight(secret, &client_random, &session_id, &key, &mut |b| {
                rng.fill_bytes(b)
            })
    };
    match tokio::time::timeout(shared.handshake, tcp.write_all(&flight)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let Some(up) = crate::server::connect_upstream(shared, a.target, &[]).await else {
        return;
    };
    let stream = Fronted::server(tcp, secret, &a.nonce, a.target, &first[a.proof_len..]);
    forward::buffered(stream, up, shared.idle, &shared.metrics).await;
}

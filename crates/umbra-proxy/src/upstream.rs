//! Where admitted connections go: the configured upstreams, resolved ahead
//! of time, and the non-blocking connect both kinds of port start from.
//!
//! A name is resolved at start and then every 30 seconds in the background
//! (every 2 while it does not resolve), so no connection waits on DNS and
//! the event loops never block. An address given as `IP:PORT` is used as is.

use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

/// How often a resolved name is looked up again.
const REFRESH: Duration = Duration::from_secs(30);
/// How often a name that does not resolve is retried.
const RETRY: Duration = Duration::from_secs(2);

/// One upstream (`host:port`) and its current address.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    literal: bool,
    addr: RwLock<Option<SocketAddr>>,
}

impl Upstream {
    /// An upstream called `name`; an `IP:PORT` needs no resolving.
    pub fn new(name: &str) -> Self {
        let parsed = name.parse::<SocketAddr>().ok();
        Self {
            name: name.to_string(),
            literal: parsed.is_some(),
            addr: RwLock::new(parsed),
        }
    }

    /// The address to connect to, if the name has resolved.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.read().ok().and_then(|a| *a)
    }

    /// Looks the name up once; whether it resolved.
    pub async fn resolve(&self) -> bool {
        if self.literal {
            return true;
        }
        let found = tokio::net::lookup_host(self.name.as_str())
            .await
            .ok()
            .and_then(|mut it| it.next());
        if let Ok(mut a) = self.addr.write() {
            if found.is_some() {
                *a = found;
            }
            return a.is_some();
        }
        false
    }

    /// Keeps the address fresh until the task is dropped.
    pub async fn keep_resolved(&self) {
        if self.literal {
            return;
        }
        loop {
            let wait = if self.resolve().await {
                REFRESH
            } else {
                tracing::warn!("the upstream name does not resolve; check `umbra proxy doctor`");
                RETRY
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Starts a connection to `to`: the socket is created non-blocking
/// (SOCK_NONBLOCK, no `fcntl`), with TCP_NODELAY, and `connect` is not
/// waited for. On a near upstream the connection is usually established by
/// the time this returns, so callers write at once, as HAProxy does, and wait
/// for writability only if that write would block.
///
/// With `data_follows` (bytes will be written right away), quick ACKs are
/// turned off first, so the kernel holds the handshake's last ACK back and
/// sends it with those bytes (HAProxy's "smart connect"); the upstream's
/// first answer is then acknowledged by the next bytes sent, too. Two
/// packets fewer per connection.
pub fn start_connect(to: SocketAddr, data_follows: bool) -> std::io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM.nonblocking(),
        None,
    )?;
    socket.set_tcp_nodelay(true)?;
    if data_follows {
        socket.set_tcp_quickack(false)?;
    }
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Whether a write failed only because the connection is not up yet, or
/// the send buffer is full: wait for writability and try again.
pub fn not_yet(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_need_no_lookup_and_names_resolve() {
        let lit = Upstream::new("127.0.0.1:7700");
        assert_eq!(lit.addr(), Some(SocketAddr::from(([127, 0, 0, 1], 7700))));
        let named = Upstream::new("localhost:7700");
        assert_eq!(named.addr(), None);
        assert!(named.resolve().await);
        assert_eq!(named.addr().map(|a| a.port()), Some(7700));
        let bad = Upstream::new("no-such-host.invalid:1");
        assert!(!bad.resolve().await);
        assert_eq!(bad.addr(), None);
    }
}

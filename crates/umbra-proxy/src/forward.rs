//! Copying bytes both ways between a client and its upstream.
//!
//! Plain TCP on both sides (ports 80/5222): each direction waits for
//! readability *without* a buffer, borrows one from a small per-thread pool
//! only while bytes are moving, and gives it back before waiting again. An
//! idle forwarded connection therefore holds two sockets and a small task,
//! not buffers. TLS clients go through a buffered copy (rustls keeps its own
//! buffers anyway).
//!
//! Every direction notes activity; the connection ends after the idle
//! timeout, or when both directions have closed.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::metrics::Metrics;

const BUF: usize = 64 * 1024;
const POOL: usize = 32;

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Vec<u8> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF])
}

fn give(buf: Vec<u8>) {
    BUFFERS.with(|b| {
        let mut pool = b.borrow_mut();
        if pool.len() < POOL {
            pool.push(buf);
        }
    });
}

/// Milliseconds since `start` of the last byte moved.
struct Activity {
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

async fn idle_watch(activity: &Activity, timeout: Duration) {
    loop {
        let idle = activity.idle();
        if idle >= timeout {
            return;
        }
        tokio::time::sleep(timeout - idle).await;
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    counter: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = take();
        let result = loop {
            match from.try_read(&mut buf) {
                Ok(0) => break Ok(true),
                Ok(n) => {
                    activity.touch();
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    if let Err(e) = write_all(to, &buf[..n]).await {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        give(buf);
        if result? {
            // Half-close: pass the end of stream on, keep the other direction.
            let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

/// Forwards between two plain TCP streams until both directions end or the
/// connection idles out.
pub async fn plain(client: TcpStream, upstream: TcpStream, idle: Duration, metrics: &Metrics) {
    let activity = Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let both = async {
        let _ = tokio::join!(
            pump(&client, &upstream, &metrics.bytes_up, &activity),
            pump(&upstream, &client, &metrics.bytes_down, &activity),
        );
    };
    tokio::select! {
        _ = both => {}
        _ = idle_watch(&activity, idle) => { metrics.idle_closed.fetch_add(1, Ordering::Relaxed); }
    }
}

async fn copy_counted<R, W>(
    mut from: R,
    mut to: W,
    counter: &AtomicU64,
    activity: &Activity,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        activity.touch();
        counter.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
    }
}

/// Forwards between any client stream (TLS) and a TCP upstream, with
/// buffers (rustls buffers per connection anyway).
pub async fn buffered<S: AsyncRead + AsyncWrite + Unpin>(
    client: S,
    upstream: TcpStream,
    idle: Duration,
    metrics: &Metrics,
) {
    let activity = Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let (client_read, client_write) = tokio::io::split(client);
    let (up_read, up_write) = upstream.into_split();
    let both = async {
        let _ = tokio::join!(
            copy_counted(client_read, up_write, &metrics.bytes_up, &activity),
            copy_counted(up_read, client_write, &metrics.bytes_down, &activity),
        );
    };
    tokio::select! {
        _ = both => {}
        _ = idle_watch(&activity, idle) => { metrics.idle_closed.fetch_add(1, Ordering::Relaxed); }
    }
}

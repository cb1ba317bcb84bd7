//! Copying bytes both ways between a TLS client and its upstream, on the
//! tokio runtime, with a buffer per direction (rustls keeps its own buffers
//! anyway). Plain ports forward in their own event loop (`plain`).
//!
//! Every direction notes activity; the connection ends after the idle
//! timeout, or when both directions have closed.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::metrics::Metrics;

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
        // A writer that frames (TLS records) may hold the tail of a burst.
        to.flush().await?;
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

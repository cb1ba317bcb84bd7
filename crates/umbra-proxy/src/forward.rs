//! Copying bytes both ways between a client and its upstream.
//!
//! Plain TCP on both sides (ports 80/5222): [`PlainForward`] waits for
//! readability *without* a buffer, borrows one from a small per-thread pool
//! only while bytes are moving, and gives it back before waiting again. An
//! idle forwarded connection holds two sockets, a small future and a timer,
//! not buffers. TLS clients go through a buffered copy (rustls keeps its own
//! buffers anyway).
//!
//! Every direction notes activity; the connection ends after the idle
//! timeout, or when both directions have closed.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
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

/// One direction of a plain forward: bytes read but not yet written, and
/// whether the source has ended. Holds a buffer only while a write is
/// pending.
#[derive(Default)]
struct Direction {
    pending: Option<(Vec<u8>, usize, usize)>,
    ended: bool,
}

/// Chunks moved per direction before yielding to other tasks.
const BUDGET: usize = 16;

impl Direction {
    /// Moves bytes `from` -> `to` until blocked; `Ready` once `from` ended
    /// and everything was written.
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        counter: &AtomicU64,
        moved: &mut bool,
        other_ended: bool,
    ) -> Poll<io::Result<()>> {
        for _ in 0..BUDGET {
            if let Some((buf, start, end)) = &mut self.pending {
                match to.poll_write_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r?,
                }
                match to.try_write(&buf[*start..*end]) {
                    Ok(n) => {
                        *start += n;
                        if *start == *end
                            && let Some((buf, ..)) = self.pending.take()
                        {
                            give(buf);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match from.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r?,
            }
            let mut buf = take();
            match from.try_read(&mut buf) {
                Ok(0) => {
                    give(buf);
                    self.ended = true;
                    // Pass the end of stream on while the other direction
                    // goes on; once both ended, closing the sockets does it.
                    if !other_ended {
                        let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                    }
                }
                Ok(n) => {
                    *moved = true;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    self.pending = Some((buf, 0, n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => give(buf),
                Err(e) => {
                    give(buf);
                    return Poll::Ready(Err(e));
                }
            }
        }
        // Used the budget: let other connections run, come back soon.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Forwards between two plain TCP streams until both directions end, one
/// fails, or the connection idles out. A hand-made future, so that an idle
/// connection holds only its two sockets, this small struct and one timer:
/// the readiness wakers live in the sockets' own registrations.
pub struct PlainForward {
    client: TcpStream,
    upstream: TcpStream,
    up: Direction,
    down: Direction,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
    metrics: Arc<Metrics>,
}

impl PlainForward {
    /// Starts forwarding.
    pub fn new(
        client: TcpStream,
        upstream: TcpStream,
        idle: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            upstream,
            up: Direction::default(),
            down: Direction::default(),
            idle,
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
            metrics,
        }
    }
}

impl Future for PlainForward {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut moved = false;
        let down_ended = this.down.ended;
        let up = this.up.poll_move(
            cx,
            &this.client,
            &this.upstream,
            &this.metrics.bytes_up,
            &mut moved,
            down_ended,
        );
        let up_ended = this.up.ended;
        let down = this.down.poll_move(
            cx,
            &this.upstream,
            &this.client,
            &this.metrics.bytes_down,
            &mut moved,
            up_ended,
        );
        match (up, down) {
            (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => return Poll::Ready(()),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(()),
            _ => {}
        }
        if moved {
            this.last = Instant::now();
        }
        loop {
            match this.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let deadline = this.last + this.idle;
                    if Instant::now() >= deadline {
                        this.metrics.idle_closed.fetch_add(1, Ordering::Relaxed);
                        return Poll::Ready(());
                    }
                    this.timer.as_mut().reset(deadline.into());
                }
            }
        }
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

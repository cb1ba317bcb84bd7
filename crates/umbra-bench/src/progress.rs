//! A status line on stderr, redrawn in place.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Draws `label done/total (rate/s)` every 500 ms until dropped.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing (or does nothing when `enabled` is false).
    pub fn start(label: &'static str, done: Arc<AtomicU64>, total: u64, enabled: bool) -> Self {
        if !enabled {
            return Self { task: None };
        }
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let (mut last_n, mut last_t) = (0u64, Instant::now());
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let dt = last_t.elapsed().as_secs_f64().max(1e-3);
                let rate = (n.saturating_sub(last_n)) as f64 / dt;
                (last_n, last_t) = (n, Instant::now());
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2K{label}: {n}/{total}  {rate:.0}/s  {:.0}s",
                    start.elapsed().as_secs_f64()
                );
                let _ = err.flush();
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

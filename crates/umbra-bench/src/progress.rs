//! Progress of a long step on stderr: a status line redrawn in place when
//! stderr is a terminal; a plain line every ten seconds otherwise, so a
//! file or a pipe gets no carriage returns or escape sequences. Under
//! `--json` ([`set_quiet`]) there is no progress at all: the result is all a
//! bench prints.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// No progress, no notes: for `--json`, where the result is all that is
/// printed.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether progress is off for the whole process.
pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A line of a bench's progress on stderr (nothing under `--json`).
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {
        if !$crate::progress::is_quiet() {
            $crate::progress::line(format_args!($($t)*));
        }
    };
}

/// Writes a line to stderr; a reader that went away loses the line, not the
/// bench (`eprintln!` would panic).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// How often the line is redrawn on a terminal.
const REDRAW: Duration = Duration::from_millis(500);
/// How often a plain line is written to a file or a pipe.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Reports `label done/total (rate/s)` until dropped.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    live: bool,
}

impl Progress {
    /// Starts reporting (or does nothing when `enabled` is false).
    pub fn start(label: &'static str, done: Arc<AtomicU64>, total: u64, enabled: bool) -> Self {
        let live = std::io::stderr().is_terminal();
        if !enabled || is_quiet() {
            return Self { task: None, live };
        }
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(if live { REDRAW } else { PLAIN_EVERY });
            tick.tick().await;
            let (mut last_n, mut last_t) = (0u64, Instant::now());
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let dt = last_t.elapsed().as_secs_f64().max(1e-3);
                let rate = (n.saturating_sub(last_n)) as f64 / dt;
                (last_n, last_t) = (n, Instant::now());
                let line = format!(
                    "{label}: {n}/{total}  {rate:.0}/s  {:.0}s",
                    start.elapsed().as_secs_f64()
                );
                let mut err = std::io::stderr().lock();
                let _ = if live {
                    write!(err, "\r\x1b[2K{line}")
                } else {
                    writeln!(err, "{line}")
                };
                let _ = err.flush();
            }
        });
        Self {
            task: Some(task),
            live,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            if self.live {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
            }
        }
    }
}

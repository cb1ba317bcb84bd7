//! Passing a business's journal on as webhooks: at least once, signed, in
//! order within each conversation, retried with backoff.
//!
//! Each journal entry becomes one POST of a JSON event (`id`, `type`,
//! `created_ms`, `business`, `data`) to the business's URL, signed as
//! [`crate::signing`] says, with its id in `Umbra-Event-Id` and the attempt
//! number in `Umbra-Attempt`. A 2xx takes the entry out of the journal;
//! anything else (an error status, no answer in time, no connection) leaves
//! it for another attempt, after a wait that doubles each time (up to an
//! hour), and holds back the entries behind it in its conversation, so a
//! receiver sees one message's statuses in the order they happened. An
//! entry that fails every attempt is dropped, with a warning and a count.
//! A conversation's entries go out one after another; different
//! conversations' side by side.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Notify, watch};
use umbra_client::journal::{Journal, Record};

use crate::metrics::Metrics;
use crate::signing::{EVENT_ID_HEADER, SIGNATURE_HEADER, sign};

/// Entries looked at a time.
const BATCH: usize = 512;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Where one business's webhooks go, and how.
pub struct Hook {
    /// The business (account username), in every event.
    pub business: String,
    /// The receiver's URL.
    pub url: String,
    /// The signing secret.
    pub secret: Vec<u8>,
    /// First wait before a retry.
    pub retry: Duration,
    /// Attempts before an entry is given up.
    pub attempts: u32,
    /// How long a receiver has to answer.
    pub timeout: Duration,
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// An HTTP(S) client for webhooks (the system's roots for https).
pub fn http_client() -> std::io::Result<HttpClient<Https, Full<Bytes>>> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(HttpClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

/// The event's JSON body for a journal record.
pub fn event_body(business: &str, r: &Record) -> Vec<u8> {
    let mut data = serde_json::to_value(&r.entry).unwrap_or_default();
    let kind = data
        .as_object_mut()
        .and_then(|o| o.remove("type"))
        .unwrap_or_default();
    serde_json::json!({
        "id": format!("evt_{}", r.id),
        "type": kind,
        "created_ms": r.created_ms,
        "business": business,
        "data": data,
    })
    .to_string()
    .into_bytes()
}

/// The wait before attempt `attempt + 1`: `retry`, doubled per failure so
/// far, up to an hour, with up to a tenth more at random (so receivers that
/// came back are not hit by every host at once).
pub fn backoff(retry: Duration, failures: u32) -> Duration {
    let base = retry
        .saturating_mul(1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    let jitter = rand::random::<f64>() * 0.1;
    base.mul_f64(1.0 + jitter)
}

async fn post(
    http: &HttpClient<Https, Full<Bytes>>,
    hook: &Hook,
    r: &Record,
    now_unix: u64,
) -> Result<(), String> {
    let body = event_body(&hook.business, r);
    let request = hyper::Request::post(&hook.url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("umbra-business/", env!("CARGO_PKG_VERSION")),
        )
        .header(EVENT_ID_HEADER, format!("evt_{}", r.id))
        .header("umbra-attempt", (r.attempts + 1).to_string())
        .header(SIGNATURE_HEADER, sign(&hook.secret, now_unix, &body))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(hook.timeout, http.request(request))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read what little the receiver says, so the connection can be reused.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        http_body_util::Limited::new(response.into_body(), 64 * 1024).collect(),
    )
    .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// Passes `journal` on to `hook` until shutdown.
pub async fn run(
    journal: Journal,
    hook: Hook,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = match http_client() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "no TLS roots for webhooks; webhooks are off");
            return;
        }
    };
    let hook = Arc::new(hook);
    loop {
        let now_ms = umbra_client::now_ms();
        let due = match journal.due(now_ms, BATCH) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "reading the journal failed");
                Vec::new()
            }
        };
        if due.is_empty() {
            let wait = match journal.next_due_ms() {
                Ok(Some(at)) => {
                    Duration::from_millis(at.saturating_sub(now_ms)).min(Duration::from_secs(1))
                }
                _ => Duration::from_secs(1),
            };
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        // One task per conversation, taking its entries in order and
        // stopping at the first that fails (the rest wait behind it).
        let mut groups: Vec<Vec<Record>> = Vec::new();
        for r in due {
            match groups
                .iter_mut()
                .find(|g| g[0].conversation == r.conversation)
            {
                Some(g) => g.push(r),
                None => groups.push(vec![r]),
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for group in groups {
            let http = http.clone();
            let hook = hook.clone();
            set.spawn(async move {
                let mut outcomes = Vec::with_capacity(group.len());
                for r in group {
                    let outcome = post(&http, &hook, &r, umbra_client::now_ms() / 1000).await;
                    let failed = outcome.is_err();
                    outcomes.push((r, outcome));
                    if failed {
                        break;
                    }
                }
                outcomes
            });
        }
        let mut done = Vec::new();
        while let Some(joined) = set.join_next().await {
            let Ok(outcomes) = joined else { continue };
            for (r, outcome) in outcomes {
                match outcome {
                    Ok(()) => {
                        metrics.webhooks_delivered.inc();
                        done.push(r.seq);
                    }
                    Err(why) if r.attempts + 1 >= hook.attempts => {
                        metrics.webhooks_dropped.inc();
                        tracing::warn!(
                            event = %format!("evt_{}", r.id),
                            attempts = r.attempts + 1,
                            %why,
                            "a webhook failed every attempt and is given up"
                        );
                        done.push(r.seq);
                    }
                    Err(why) => {
                        metrics.webhooks_failed.inc();
                        let wait = backoff(hook.retry, r.attempts);
                        tracing::debug!(%why, wait_ms = wait.as_millis() as u64, "a webhook failed; retrying");
                        let at = umbra_client::now_ms() + wait.as_millis() as u64;
                        if let Err(e) = journal.retry(r.seq, at) {
                            tracing::error!(error = %e, "recording a webhook retry failed");
                        }
                    }
                }
            }
        }
        if let Err(e) = journal.done(&done) {
            tracing::error!(error = %e, "taking delivered webhooks out of the journal failed");
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let r = Duration::from_secs(2);
        let b0 = backoff(r, 0);
        assert!(b0 >= r && b0 <= r.mul_f64(1.1), "{b0:?}");
        let b3 = backoff(r, 3);
        assert!(b3 >= Duration::from_secs(16) && b3 <= Duration::from_secs_f64(17.6));
        assert!(backoff(r, 40) <= MAX_BACKOFF.mul_f64(1.1));
    }
}

//! The moving parts of `umbra bench business`: the customers' devices as
//! the server sees them (logged in, timing each envelope pushed to them),
//! the business's system (API calls over keep-alive HTTP/1.1), and its
//! webhook receiver (timing each `sent` status).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use umbra_client::conn::ServerConn;
use umbra_wire::proto::server_frame;

/// When each customer was last sent a message (by the schedule), and when
/// what was sent arrived, in order per customer.
#[derive(Default)]
pub struct Deliveries {
    /// Per customer: the scheduled times of messages sent and not yet seen.
    waiting: Vec<VecDeque<Instant>>,
    /// Delays of what arrived, microseconds.
    pub delays_us: Vec<u64>,
    /// Envelopes that arrived with nothing waiting (not the bench's).
    pub strays: u64,
}

impl Deliveries {
    /// For `customers` customers.
    pub fn new(customers: usize) -> Self {
        Self {
            waiting: vec![VecDeque::new(); customers],
            ..Self::default()
        }
    }

    /// A message to customer `c`, scheduled at `at`, was taken by the API.
    pub fn sent(&mut self, c: usize, at: Instant) {
        if let Some(q) = self.waiting.get_mut(c) {
            q.push_back(at);
        }
    }

    /// Something reached customer `c` at `now`.
    pub fn arrived(&mut self, c: usize, now: Instant) {
        match self.waiting.get_mut(c).and_then(VecDeque::pop_front) {
            Some(at) => self
                .delays_us
                .push(now.saturating_duration_since(at).as_micros() as u64),
            None => self.strays += 1,
        }
    }

    /// The message to customer `c` scheduled at `at` was not taken after
    /// all.
    pub fn cancel(&mut self, c: usize, at: Instant) {
        if let Some(q) = self.waiting.get_mut(c)
            && let Some(i) = q.iter().rposition(|t| *t == at)
        {
            q.remove(i);
        }
    }

    /// Messages still on their way.
    pub fn outstanding(&self) -> usize {
        self.waiting.iter().map(VecDeque::len).sum()
    }
}

/// Records every envelope pushed to customer `c`'s logged-in device until
/// the connection ends. What was stored for it before is drained first and
/// not counted.
pub async fn receive(
    c: usize,
    mut server: ServerConn,
    deliveries: Arc<Mutex<Deliveries>>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let mut drained = false;
    loop {
        match server.next_push().await? {
            Some(server_frame::Body::Deliver(d)) => {
                if drained {
                    let now = Instant::now();
                    if let Ok(mut ds) = deliveries.lock() {
                        ds.arrived(c, now);
                    }
                }
                if !d.online_only {
                    server.ack(vec![d.envelope_id]).await?;
                }
            }
            Some(server_frame::Body::QueueDrained(_)) if !drained => {
                drained = true;
                let _ = ready.send(()).await;
            }
            None => return Ok(()),
            Some(_) => {}
        }
    }
}

/// The business's system: sends with keep-alive connections.
pub type Http = HttpClient<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client with a pool large enough for `window` requests at
/// once.
pub fn http(window: usize) -> Http {
    HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(window)
        .build_http()
}

/// What one API call answered: its status and, for a 202, the message id.
pub async fn post_message(
    http: &Http,
    url: &str,
    token: &str,
    body: String,
    key: String,
) -> anyhow::Result<(u16, Option<String>)> {
    let request = hyper::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body)))?;
    let response = http.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string));
    Ok((status, id))
}

/// When each of the bench's messages was scheduled, and when its `sent`
/// webhook came.
#[derive(Default)]
pub struct Hooks {
    /// Message id → when it was scheduled.
    pub scheduled: HashMap<String, Instant>,
    /// Delays from schedule to the `sent` webhook, microseconds.
    pub delays_us: Vec<u64>,
    /// `sent` webhooks for a message the bench had not (yet) recorded.
    pub early: HashMap<String, Instant>,
    /// Webhooks of any kind.
    pub total: u64,
}

impl Hooks {
    /// The API took message `id`, scheduled at `at`.
    pub fn sent(&mut self, id: String, at: Instant) {
        match self.early.remove(&id) {
            Some(came) => self
                .delays_us
                .push(came.saturating_duration_since(at).as_micros() as u64),
            None => {
                self.scheduled.insert(id, at);
            }
        }
    }

    fn came(&mut self, body: &[u8], now: Instant) {
        self.total += 1;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        if v["type"] != "message.status" || v["data"]["status"] != "sent" {
            return;
        }
        let Some(id) = v["data"]["message"].as_str() else {
            return;
        };
        match self.scheduled.remove(id) {
            Some(at) => self
                .delays_us
                .push(now.saturating_duration_since(at).as_micros() as u64),
            // The webhook beat the API's answer to the bench.
            None => {
                self.early.insert(id.to_string(), now);
            }
        }
    }
}

/// Serves the webhook receiver on `listener`, recording into `hooks`.
pub async fn webhook_receiver(listener: tokio::net::TcpListener, hooks: Arc<Mutex<Hooks>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hooks = hooks.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let hooks = hooks.clone();
                async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let now = Instant::now();
                    if let Ok(mut h) = hooks.lock() {
                        h.came(&body, now);
                    }
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Percentile `p` (0-100) of `values`, in milliseconds.
pub fn percentile_ms(values: &[u64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_pair_in_order_and_count_strays() {
        let t0 = Instant::now();
        let mut d = Deliveries::new(2);
        d.sent(0, t0);
        d.sent(0, t0 + std::time::Duration::from_millis(10));
        d.arrived(0, t0 + std::time::Duration::from_millis(5));
        d.arrived(0, t0 + std::time::Duration::from_millis(17));
        d.arrived(1, t0);
        assert_eq!(d.delays_us, [5_000, 7_000]);
        assert_eq!(d.strays, 1);
        assert_eq!(d.outstanding(), 0);
        assert_eq!(percentile_ms(&[1_000, 2_000, 3_000], 50.0), 2.0);
    }

    #[test]
    fn a_webhook_before_the_answer_still_counts() {
        let t0 = Instant::now();
        let mut h = Hooks::default();
        let body = br#"{"type":"message.status","data":{"message":"ab","status":"sent"}}"#;
        h.came(body, t0 + std::time::Duration::from_millis(3));
        h.sent("ab".into(), t0);
        assert_eq!(h.delays_us, [3_000]);
    }
}

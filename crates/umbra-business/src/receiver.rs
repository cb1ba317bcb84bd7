//! A webhook receiver, as a business's own system would run one: checks each
//! webhook's signature over the raw body and its timestamp
//! ([`crate::signing::verify`]), handles each event id once, and hands the
//! event on. `umbra business receive-webhooks` runs it and prints each event
//! as a line of JSON, for trying the host out and as a model to copy.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use crate::signing::{DEFAULT_TOLERANCE_SECS, EVENT_ID_HEADER, SIGNATURE_HEADER, verify};

/// Where a receiver hands each new event's body.
pub type Out = Arc<dyn Fn(&str) + Send + Sync>;

/// Event ids remembered, to hand each event on once however often it comes.
const REMEMBERED: usize = 100_000;

/// What a receiver did with one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new event: handed on.
    Taken(String),
    /// An event already handed on (a retry): answered, not handed on again.
    Again(String),
    /// Refused, with why.
    Refused(String),
}

/// The receiver's state: its secret and the ids it has seen.
pub struct Receiver {
    secret: Vec<u8>,
    tolerance_secs: u64,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Receiver {
    /// A receiver for webhooks signed with `secret`.
    pub fn new(secret: Vec<u8>) -> Self {
        Self {
            secret,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// Checks one webhook (its headers and raw body) at `now_unix`.
    pub fn receive(&self, headers: &HeaderMap, body: &[u8], now_unix: u64) -> Outcome {
        let signature = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Err(e) = verify(&self.secret, signature, body, now_unix, self.tolerance_secs) {
            return Outcome::Refused(e.to_string());
        }
        let id = headers
            .get(EVENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let Ok(mut seen) = self.seen.lock() else {
            return Outcome::Refused("the receiver's state is unusable".into());
        };
        let (ids, order) = &mut *seen;
        if !ids.insert(id.clone()) {
            return Outcome::Again(id);
        }
        order.push_back(id.clone());
        if order.len() > REMEMBERED
            && let Some(old) = order.pop_front()
        {
            ids.remove(&old);
        }
        Outcome::Taken(id)
    }
}

async fn hook(
    State((receiver, out)): State<(Arc<Receiver>, Out)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = umbra_client::now_ms() / 1000;
    match receiver.receive(&headers, &body, now) {
        Outcome::Taken(_) => {
            out(&String::from_utf8_lossy(&body));
            StatusCode::OK
        }
        Outcome::Again(_) => StatusCode::OK,
        Outcome::Refused(why) => {
            tracing::warn!(%why, "refused a webhook");
            StatusCode::UNAUTHORIZED
        }
    }
}

/// The receiver's routes: POST anywhere.
pub fn router(receiver: Arc<Receiver>, out: Out) -> Router {
    Router::new()
        .fallback(post(hook))
        .with_state((receiver, out))
}

/// Serves the receiver on `listener` until `shutdown`, handing each new
/// event's body to `out`.
pub async fn run(
    listener: tokio::net::TcpListener,
    receiver: Arc<Receiver>,
    out: Out,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(receiver, out))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::signing::sign;

    fn headers(sig: &str, id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).expect("value"));
        h.insert(EVENT_ID_HEADER, HeaderValue::from_str(id).expect("value"));
        h
    }

    #[test]
    fn each_event_once_and_nothing_forged_or_stale() {
        let r = Receiver::new(b"secret".to_vec());
        let body = br#"{"id":"evt_1"}"#;
        let h = headers(&sign(b"secret", 1000, body), "evt_1");
        assert_eq!(r.receive(&h, body, 1001), Outcome::Taken("evt_1".into()));
        assert_eq!(r.receive(&h, body, 1002), Outcome::Again("evt_1".into()));
        assert!(matches!(r.receive(&h, body, 5000), Outcome::Refused(_)));
        let forged = headers(&sign(b"guess", 1000, body), "evt_2");
        assert!(matches!(
            r.receive(&forged, body, 1001),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            r.receive(&HeaderMap::new(), body, 1001),
            Outcome::Refused(_)
        ));
    }
}

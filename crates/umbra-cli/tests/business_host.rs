//! `umbra business serve` through the real binary, with curl as the
//! business's system and a webhook receiver the test runs:
//! - the API: a reply with an idempotency key (a repeat sends nothing, a
//!   key reused for another text is refused), a first message to a new
//!   customer, lists, a status lookup, and every refusal in its JSON shape
//!   with the status the OpenAPI document gives it (no token, a wrong one,
//!   an unknown customer, a bad body, no JSON, over the rate);
//! - webhooks: signed over the raw body (checked with the receiver helper,
//!   which refuses the same webhook an hour later), retried with backoff
//!   under the same event id when the receiver fails, statuses of a message
//!   in order (sent, delivered, read);
//! - a host killed mid-way and started again: nothing the customers sent
//!   while it was down is lost, a request repeated with its key after the
//!   restart sends nothing twice;
//! - the label: a chat with a business run by itself says end to end; the
//!   same business started by a host (`--host-name`) says who can read it,
//!   and the customer's next message waits until they have seen that;
//! - privacy: the messaging server's files and log hold no text and no
//!   customer; the host's own files hold no chat at all, and a business's
//!   profile holds none of another business's chats;
//! - the API fuzzed against its own OpenAPI document with schemathesis.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::business_host::{HostProc, Receiver, curl};
use common::{ServerProc, ok};
use umbra_business::signing;

/// Everyone's profiles and the server, in one temporary directory.
struct World {
    dir: tempfile::TempDir,
    server: ServerProc,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProc::start(
            &dir.path().join("server"),
            "127.0.0.1:0",
            &dir.path().join("server.log"),
        );
        Self { dir, server }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn user(&self, name: &str) -> PathBuf {
        common::register(&self.p(name), &self.server.invite, name);
        self.p(name)
    }

    fn business(&self, name: &str, display: &str) -> PathBuf {
        let p = self.user(name);
        ok(&p, &["business", "register", "--name", display]);
        p
    }

    /// The host in `host_dir` running the business in `profile`, its
    /// webhooks to `receiver` (first retry after a second), with `extra`
    /// flags.
    fn host(
        &self,
        host_dir: &Path,
        profile: &Path,
        receiver: &Receiver,
        extra: &[&str],
    ) -> HostProc {
        let url = receiver.url();
        let mut args = vec![
            "--business",
            profile.to_str().expect("path"),
            "--webhook-url",
            &url,
            "--webhook-retry-secs",
            "1",
        ];
        args.extend_from_slice(extra);
        HostProc::start(host_dir, &self.p("host.log"), 1, &args)
    }

    /// A token for the business in `profile`, on the host in `host_dir`.
    fn token(&self, profile: &Path, host_dir: &Path) -> String {
        let out = std::process::Command::new(common::bin())
            .args(["business", "token", "create", "--json", "--business"])
            .arg(profile)
            .arg("--data-dir")
            .arg(host_dir)
            .output()
            .expect("token");
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["token"].as_str().expect("token").to_string()
    }
}

fn secret(host_dir: &Path, business: &str) -> Vec<u8> {
    std::fs::read_to_string(host_dir.join(format!("{business}.webhook-secret")))
        .expect("secret")
        .trim()
        .as_bytes()
        .to_vec()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn send(
    host: &HostProc,
    token: &str,
    body: &str,
    key: Option<&str>,
) -> common::business_host::Answer {
    let header = key.map(|k| format!("Idempotency-Key: {k}"));
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    curl(
        "POST",
        &host.url("/v1/messages"),
        Some(token),
        Some(body),
        &headers,
    )
}

fn texts_from(profile: &Path, conversation: &str, sender: &str) -> Vec<String> {
    common::history(profile, conversation)
        .into_iter()
        .filter(|(s, _)| s == sender)
        .map(|(_, b)| b)
        .collect()
}

#[test]
fn the_api_through_curl_and_signed_webhooks_retried_in_order() {
    let w = World::new();
    let acme = w.business("acme", "Acme Shop");
    let alice = w.user("alice");
    let bob = w.user("bob");
    let host_dir = w.p("host");
    let token = w.token(&acme, &host_dir);
    let receiver = Receiver::start();
    // The receiver is down at first: the first two attempts fail.
    receiver.fail.store(2, std::sync::atomic::Ordering::SeqCst);
    let host = w.host(
        &host_dir,
        &acme,
        &receiver,
        &["--messages-per-second", "20"],
    );
    assert!(host.stdout.contains("self-hosted"), "{}", host.stdout);

    // A customer writes: one webhook, delivered after the receiver's two
    // failures, under the same event id every time, signed over the body.
    ok(&alice, &["send", "acme", "where is my order?"]);
    let taken = receiver.wait(30, "the incoming message", |t| !t.is_empty());
    let incoming = taken[0].event();
    assert_eq!(incoming["type"], "message.received");
    assert_eq!(incoming["data"]["from"], "alice");
    assert_eq!(incoming["data"]["text"], "where is my order?");
    let attempts = receiver.all();
    assert!(attempts.len() >= 3, "{attempts:?}");
    assert!(attempts[..2].iter().all(|d| d.answered == 500));
    let id = taken[0].header("umbra-event-id");
    assert!(attempts.iter().all(|d| d.header("umbra-event-id") == id));
    assert_eq!(taken[0].header("umbra-attempt"), "3");
    assert!(
        attempts[2].at.duration_since(attempts[1].at) >= Duration::from_millis(1500),
        "the second retry waited twice the first"
    );
    let key = secret(&host_dir, "acme");
    let sig = taken[0].header(signing::SIGNATURE_HEADER);
    assert_eq!(
        signing::verify(&key, sig, &taken[0].body, now_unix(), 300),
        Ok(())
    );
    // Replayed by someone who captured it, an hour on: refused.
    assert!(matches!(
        signing::verify(&key, sig, &taken[0].body, now_unix() + 3600, 300),
        Err(signing::VerifyError::Stale(_))
    ));
    // Altered: refused.
    let mut changed = taken[0].body.clone();
    let at = changed.len() / 2;
    changed[at] ^= 0x20;
    assert_eq!(
        signing::verify(&key, sig, &changed, now_unix(), 300),
        Err(signing::VerifyError::BadSignature)
    );

    // The business answers in the conversation, with an idempotency key.
    let convs = curl(
        "GET",
        &host.url("/v1/conversations"),
        Some(&token),
        None,
        &[],
    );
    assert_eq!(convs.status, 200, "{convs:?}");
    let conv = convs.json()["conversations"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(conv, incoming["data"]["conversation"]);
    let reply = format!(r#"{{"conversation":"{conv}","text":"on its way"}}"#);
    let first = send(&host, &token, &reply, Some("order-17-reply"));
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(
        first.header("idempotent-replayed").as_deref(),
        Some("false")
    );
    let message = first.json()["id"].as_str().expect("id").to_string();
    // The same request again (the caller timed out and retried).
    let again = send(&host, &token, &reply, Some("order-17-reply"));
    assert_eq!(again.status, 202);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.json()["id"], message.as_str());
    // The same key for another text.
    let other = format!(r#"{{"conversation":"{conv}","text":"something else"}}"#);
    let conflict = send(&host, &token, &other, Some("order-17-reply"));
    assert_eq!(conflict.status, 422, "{conflict:?}");
    assert_eq!(conflict.json()["error"]["code"], "idempotency_conflict");

    // Alice gets it once, and reads it: sent, delivered, read, in order.
    std::thread::sleep(Duration::from_millis(500));
    ok(&alice, &["sync"]);
    assert_eq!(texts_from(&alice, "acme", "acme"), ["on its way"]);
    let statuses = |t: &[common::business_host::Delivery]| -> Vec<String> {
        t.iter()
            .map(|d| d.event())
            .filter(|e| e["type"] == "message.status" && e["data"]["message"] == message.as_str())
            .map(|e| e["data"]["status"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let taken = receiver.wait(30, "sent, delivered and read", |t| statuses(t).len() >= 3);
    assert_eq!(statuses(&taken), ["sent", "delivered", "read"]);
    let looked = curl(
        "GET",
        &host.url(&format!("/v1/messages/{message}")),
        Some(&token),
        None,
        &[],
    );
    assert_eq!(looked.status, 200);
    assert_eq!(looked.json()["status"], "read");
    assert_eq!(looked.json()["recipients"][0]["username"], "alice");

    // A first message to a customer the business never talked with.
    let hello = send(
        &host,
        &token,
        r#"{"to":"bob","text":"your parcel is here"}"#,
        None,
    );
    assert_eq!(hello.status, 202, "{hello:?}");
    let shown = ok(&bob, &["sync"]);
    assert!(
        shown.contains("end-to-end encrypted with Acme Shop (acme)"),
        "{shown}"
    );
    assert_eq!(texts_from(&bob, "acme", "acme"), ["your parcel is here"]);
    let msgs = curl(
        "GET",
        &host.url(&format!("/v1/conversations/{conv}/messages?limit=2")),
        Some(&token),
        None,
        &[],
    );
    assert_eq!(msgs.status, 200);
    assert_eq!(msgs.json()["messages"][0]["text"], "on its way");
    assert_eq!(msgs.json()["messages"][1]["text"], "where is my order?");

    // Refusals, each in the one JSON shape.
    let no_token = curl("GET", &host.url("/v1/conversations"), None, None, &[]);
    assert_eq!(no_token.status, 401);
    assert_eq!(
        no_token.header("www-authenticate").as_deref(),
        Some("Bearer")
    );
    let wrong = curl(
        "GET",
        &host.url("/v1/business"),
        Some("umbra_bt_00"),
        None,
        &[],
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["code"], "unauthorized");
    let nobody = send(&host, &token, r#"{"to":"nobody","text":"hi"}"#, None);
    assert_eq!(nobody.status, 404);
    assert_eq!(nobody.json()["error"]["code"], "unknown_user");
    let both = send(
        &host,
        &token,
        &format!(r#"{{"to":"bob","conversation":"{conv}","text":"hi"}}"#),
        None,
    );
    assert_eq!(both.status, 400);
    let not_json = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: text/plain", "--data", "hi"])
        .arg(host.url("/v1/messages"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&not_json.stdout), "415");
    let long = format!(r#"{{"to":"bob","text":"{}"}}"#, "x".repeat(4097));
    assert_eq!(send(&host, &token, &long, None).status, 400);
    let huge = format!(r#"{{"to":"bob","text":"{}"}}"#, "x".repeat(70_000));
    let too_large = send(&host, &token, &huge, None);
    assert_eq!(too_large.status, 413, "{too_large:?}");
    assert_eq!(too_large.json()["error"]["code"], "too_large");
    // A token this host made for an account it does not run.
    let stray = w.token(&bob, &host_dir);
    let forbidden = curl("GET", &host.url("/v1/business"), Some(&stray), None, &[]);
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    assert_eq!(forbidden.json()["error"]["code"], "forbidden");
    let missing = curl(
        "GET",
        &host.url("/v1/messages/0123456789abcdef0123456789abcdef"),
        Some(&token),
        None,
        &[],
    );
    assert_eq!(missing.status, 404);
    let me = curl("GET", &host.url("/v1/business"), Some(&token), None, &[]);
    assert_eq!(me.json()["name"], "Acme Shop");
    assert_eq!(me.json()["host"], serde_json::Value::Null);
    // Over the business's rate (20 a second, 20 at once): 40 at the same
    // moment, and those over it are refused with how long to wait.
    let answers: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let (host, token, conv) = (&host, &token, &conv);
                s.spawn(move || {
                    send(
                        host,
                        token,
                        &format!(r#"{{"conversation":"{conv}","text":"burst {i}"}}"#),
                        None,
                    )
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("curl")).collect()
    });
    assert!(
        answers.iter().all(|a| matches!(a.status, 202 | 429)),
        "{answers:?}"
    );
    let limited = answers.into_iter().find(|a| a.status == 429);
    let limited = limited.expect("the rate limit never answered");
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    assert!(limited.header("retry-after").is_some(), "{limited:?}");

    // Aggregate metrics, naming nobody.
    let metrics = curl(
        "GET",
        &format!("http://{}/metrics", host.metrics),
        None,
        None,
        &[],
    );
    assert!(
        metrics
            .body
            .contains("umbra_business_webhooks_delivered_total")
    );
    assert!(
        metrics
            .body
            .contains("umbra_business_api_rate_limited_total")
    );
    for name in ["acme", "alice", "bob", "127.0.0.1"] {
        assert!(!metrics.body.contains(name), "{name} in the metrics");
    }
    assert!(host.stop().success(), "a clean exit on SIGTERM");
}

#[test]
fn a_host_killed_and_started_again_loses_nothing_and_sends_nothing_twice() {
    let w = World::new();
    let acme = w.business("acme", "Acme Shop");
    let alice = w.user("alice");
    let host_dir = w.p("host");
    let token = w.token(&acme, &host_dir);
    let receiver = Receiver::start();
    let start = || w.host(&host_dir, &acme, &receiver, &[]);
    let host = start();
    ok(&alice, &["send", "acme", "hello?"]);
    receiver.wait(30, "the first message", |t| !t.is_empty());
    let conv = curl(
        "GET",
        &host.url("/v1/conversations"),
        Some(&token),
        None,
        &[],
    )
    .json()["conversations"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // The API took the message (it is saved), then the host dies before
    // anything else; the caller never saw the answer and retries later.
    let body = format!(r#"{{"conversation":"{conv}","text":"your refund is done"}}"#);
    let taken = send(&host, &token, &body, Some("refund-9"));
    assert_eq!(taken.status, 202);
    let id = taken.json()["id"].as_str().expect("id").to_string();
    host.kill();
    // While it is down, the customer writes three times; the receiver is
    // down too when it comes back.
    for i in 1..=3 {
        ok(&alice, &["send", "acme", &format!("still there? {i}")]);
    }
    receiver.fail.store(1, std::sync::atomic::Ordering::SeqCst);
    let host = start();
    let again = send(&host, &token, &body, Some("refund-9"));
    assert_eq!(again.status, 202, "{again:?}");
    assert_eq!(again.json()["id"], id.as_str(), "the same message");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    // Every message the customer sent reached the business's system.
    let got = receiver.wait(30, "the three messages sent while it was down", |t| {
        (1..=3).all(|i| {
            t.iter()
                .any(|d| d.event()["data"]["text"] == format!("still there? {i}").as_str())
        })
    });
    let received: Vec<String> = got
        .iter()
        .map(|d| d.event())
        .filter(|e| e["type"] == "message.received")
        .map(|e| e["data"]["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        received,
        [
            "hello?",
            "still there? 1",
            "still there? 2",
            "still there? 3"
        ]
    );
    // The customer sees the refund message once.
    std::thread::sleep(Duration::from_millis(500));
    ok(&alice, &["sync"]);
    assert_eq!(texts_from(&alice, "acme", "acme"), ["your refund is done"]);
    assert!(host.stop().success());
}

#[test]
fn the_label_says_who_runs_the_business_and_a_change_is_seen_before_the_next_send() {
    let w = World::new();
    let acme = w.business("acme", "Acme Shop");
    let bank = w.business("bank", "Bank");
    let alice = w.user("alice");
    let own_dir = w.p("acme-own-host");
    let own = HostProc::start(
        &own_dir,
        &w.p("own.log"),
        1,
        &["--business", acme.to_str().expect("path")],
    );
    let token = w.token(&acme, &own_dir);
    let first = send(
        &own,
        &token,
        r#"{"to":"alice","text":"welcome to Acme"}"#,
        None,
    );
    assert_eq!(first.status, 202);
    let shown = ok(&alice, &["sync"]);
    assert!(
        shown.contains("end-to-end encrypted with Acme Shop (acme)"),
        "{shown}"
    );
    ok(&alice, &["send", "acme", "my address is 1 Main St"]);
    assert!(own.stop().success());

    // A hosting company now runs Acme's device (and Bank's, beside it).
    let hosted_dir = w.p("hostco");
    let hosted = HostProc::start(
        &hosted_dir,
        &w.p("hostco.log"),
        2,
        &[
            "--business",
            acme.to_str().expect("path"),
            "--business",
            bank.to_str().expect("path"),
            "--host-name",
            "HostCo",
        ],
    );
    assert!(
        hosted.stdout.contains("hosted by HostCo"),
        "{}",
        hosted.stdout
    );
    let err = common::fails(&alice, &["send", "acme", "my card number is 4242"]);
    assert!(
        err.contains("nothing was sent to `acme`: HostCo can now read messages you send"),
        "{err}"
    );
    common::said_once(&err);
    let history = ok(&alice, &["history", "acme", "--offline"]);
    assert!(
        history.starts_with(
            "-- Acme Shop (acme) uses HostCo to manage this chat: HostCo can read what you send --"
        ),
        "{history}"
    );
    assert!(!history.contains("4242"), "{history}");
    let convs: serde_json::Value =
        serde_json::from_str(ok(&alice, &["--json", "conversations"]).trim()).expect("json");
    assert_eq!(convs[0]["hosting"][0]["kind"], "hosted");
    assert_eq!(convs[0]["hosting"][0]["host"], "HostCo");
    ok(&alice, &["send", "acme", "ok, HostCo it is"]);
    let hosted_token = w.token(&acme, &hosted_dir);
    let me = curl(
        "GET",
        &hosted.url("/v1/business"),
        Some(&hosted_token),
        None,
        &[],
    );
    assert_eq!(me.json()["host"], "HostCo");
    // Bank's customers talk with Bank through the same host.
    let bank_token = w.token(&bank, &hosted_dir);
    let b = send(
        &hosted,
        &bank_token,
        r#"{"to":"alice","text":"your statement is ready"}"#,
        None,
    );
    assert_eq!(b.status, 202);
    // A token is for its own business only.
    let msgs = curl(
        "GET",
        &hosted.url("/v1/conversations"),
        Some(&bank_token),
        None,
        &[],
    );
    let listed = msgs.json();
    let names: Vec<&str> = listed["conversations"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["peer"].as_str())
        .collect();
    assert_eq!(names, ["alice"]);
    std::thread::sleep(Duration::from_millis(500));
    let shown = ok(&alice, &["sync"]);
    assert!(
        shown.contains("Bank (bank) uses HostCo to manage this chat"),
        "{shown}"
    );
    assert!(hosted.stop().success());

    // Privacy. The messaging server's files and log: no text, and no
    // customer name beside the accounts table (checked by privacy.rs for
    // every table; here, the raw files and the log).
    let texts = [
        "welcome to Acme",
        "my address is 1 Main St",
        "ok, HostCo it is",
        "your statement is ready",
    ];
    let mut server_bytes = std::fs::read(w.p("server.log")).expect("log");
    for entry in std::fs::read_dir(w.p("server")).expect("dir") {
        server_bytes.extend(std::fs::read(entry.expect("entry").path()).unwrap_or_default());
    }
    for t in texts {
        assert!(
            !contains(&server_bytes, t.as_bytes()),
            "`{t}` on the server"
        );
    }
    let log = std::fs::read_to_string(w.p("server.log")).expect("log");
    assert!(!log.contains("alice"), "a customer in the server's log");
    // The host's own state holds no chat at all; Acme's profile holds
    // Acme's chat and nothing of Bank's.
    for dir in [&own_dir, &hosted_dir] {
        for entry in std::fs::read_dir(dir).expect("dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).unwrap_or_default();
            for t in texts {
                assert!(!contains(&bytes, t.as_bytes()), "`{t}` in the host's files");
            }
        }
    }
    let acme_bytes = profile_texts(&acme);
    assert!(contains(&acme_bytes, b"my address is 1 Main St"));
    assert!(!contains(&acme_bytes, b"your statement is ready"));
    let bank_bytes = profile_texts(&bank);
    assert!(!contains(&bank_bytes, b"my address is 1 Main St"));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file of a profile (the database, its WAL), concatenated.
/// Every text a profile holds: the directory's files are encrypted, so it
/// is read through the profile's key (these profiles have no passphrase).
fn profile_texts(dir: &Path) -> Vec<u8> {
    let key = umbra_client::profile_key::unlock(dir, None).expect("key");
    assert!(key.is_some(), "{} is not encrypted", dir.display());
    let db = umbra_client::profile::connect(dir, key.as_ref()).expect("db");
    let mut stmt = db.prepare("SELECT body FROM history").expect("history");
    let bodies: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    bodies.join("\n").into_bytes()
}

#[test]
fn the_api_fuzzed_against_its_own_document_answers_nothing_undocumented() {
    let w = World::new();
    let acme = w.business("acme", "Acme Shop");
    let alice = w.user("alice");
    let host_dir = w.p("host");
    let token = w.token(&acme, &host_dir);
    let host = HostProc::start(
        &host_dir,
        &w.p("host.log"),
        1,
        &["--business", acme.to_str().expect("path")],
    );
    // Something to list, so the fuzzer reaches real conversations.
    ok(&alice, &["send", "acme", "hello"]);
    std::thread::sleep(Duration::from_millis(500));
    // The document served is the one kept in the repository.
    let served = curl("GET", &host.url("/openapi.json"), None, None, &[]);
    let kept = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../umbra-business/openapi.json"),
    )
    .expect("openapi.json");
    assert_eq!(served.body.trim(), kept.trim());
    let out = std::process::Command::new("schemathesis")
        .args(["run", &host.url("/openapi.json"), "--checks", "all"])
        .args(["--max-examples", "60", "--seed", "1"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis (the test script installs it from PyPI)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    assert!(host.stop().success());
}

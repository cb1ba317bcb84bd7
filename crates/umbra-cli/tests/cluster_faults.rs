//! Three `umbra server` nodes on one PostgreSQL database and NATS, under
//! the faults an operator meets, through the real binary: behind HAProxy,
//! every node SIGKILLed in turn while a user sends (its clients come back
//! through another, nothing acknowledged is lost, nothing shown twice);
//! PostgreSQL restarted as a crash would (`pg_ctl restart -m immediate`;
//! the nodes recover by themselves); a node frozen with SIGSTOP while its
//! user's device moves to another node, then resumed (it delivers nothing
//! more); strangers on every node claiming one user's key packages at once
//! (each gets its own: every first message opens).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Haproxy, Listener, NatsProc};
use common::{history_offline, ok, umbra};
use umbra_store::pgtest::Cluster as Postgres;

/// `umbra send`, not asserting: whether the server acknowledged it.
fn try_send(profile: &Path, to: &str, text: &str) -> bool {
    umbra(profile, &["send", to, text]).status.success()
}

/// What `who` has received from `from`, in the order shown (read from the
/// profile alone).
fn texts(profile: &Path, from: &str) -> Vec<String> {
    history_offline(profile, from)
        .into_iter()
        .filter(|(sender, _)| sender == from)
        .map(|(_, t)| t)
        .collect()
}

/// Asserts that `got` holds every one of `want` exactly once.
fn each_once(got: &[String], want: &[String]) {
    for w in want {
        let n = got.iter().filter(|g| *g == w).count();
        assert_eq!(n, 1, "`{w}` shown {n} times in {got:?}");
    }
    assert_eq!(got.len(), want.len(), "{got:?}");
}

/// The node whose logins counter moved past `before`.
fn node_that_logged_in(c: &Cluster, before: &[f64]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, n) in c.nodes.iter().enumerate() {
            if n.metric("umbra_logins_total") > before[i] {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no node saw the login");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn logins(c: &Cluster) -> Vec<f64> {
    c.nodes
        .iter()
        .map(|n| n.metric("umbra_logins_total"))
        .collect()
}

#[test]
fn behind_haproxy_every_node_killed_in_turn_loses_nothing_acknowledged() {
    let pg = Postgres::start().expect("postgres");
    let url = pg.database("killed").expect("db");
    let nats = NatsProc::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::start(dir.path(), 3, &url, &nats.url(), 1);
    let lb = Haproxy::start(dir.path(), &c.addresses());
    let invite = lb.invite(c.invite(0));
    let p = |n: &str| dir.path().join(n);
    for u in ["alice", "bob"] {
        common::register(&p(u), &invite, u);
    }
    let bob = Listener::start(&p("bob"));
    std::thread::sleep(Duration::from_secs(1));
    let mut sent = Vec::new();
    let mut acknowledged = Vec::new();
    for victim in 0..3 {
        for i in 0..8 {
            if i == 3 {
                c.kill(victim);
            }
            let text = format!("node {victim} round, message {i}");
            if try_send(&p("alice"), "bob", &text) {
                acknowledged.push(text.clone());
            }
            sent.push(text);
        }
        c.restart(victim);
        std::thread::sleep(Duration::from_millis(500));
    }
    // What a failed send left in Alice's outbox goes with her next sync.
    ok(&p("alice"), &["sync"]);
    assert!(
        acknowledged.len() >= sent.len() / 2,
        "most sends went through: {acknowledged:?}"
    );
    for text in &sent {
        bob.wait_for(&format!("alice: {text}"), Duration::from_secs(60));
    }
    drop(bob);
    ok(&p("bob"), &["sync"]);
    each_once(&texts(&p("bob"), "alice"), &sent);
    // And Bob's listen showed each once.
    drop(lb);
}

#[test]
fn postgres_restarted_like_a_crash_and_the_nodes_recover_by_themselves() {
    // A PostgreSQL of this test's own: it is restarted under the nodes.
    let pg = Postgres::start_own().expect("postgres");
    let url = pg.database("crash").expect("db");
    let nats = NatsProc::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Cluster::start(dir.path(), 3, &url, &nats.url(), 1);
    let p = |n: &str| dir.path().join(n);
    common::register(&p("alice"), c.invite(0), "alice");
    common::register(&p("bob"), c.invite(1), "bob");
    let bob = Listener::start(&p("bob"));
    std::thread::sleep(Duration::from_secs(1));
    ok(&p("alice"), &["send", "bob", "before the crash"]);
    bob.wait_for("alice: before the crash", Duration::from_secs(20));

    let restart = std::thread::spawn(move || {
        pg.restart_immediate().expect("restart");
        pg
    });
    let mut sent = vec!["before the crash".to_string()];
    for i in 0..6 {
        let text = format!("around the crash {i}");
        let _ = try_send(&p("alice"), "bob", &text);
        sent.push(text);
        std::thread::sleep(Duration::from_millis(300));
    }
    let _pg = restart.join().expect("restarted");
    // The nodes reconnect at their next batch: a send goes through again
    // within seconds, with nothing done by hand.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !try_send(&p("alice"), "bob", "after the crash") {
        assert!(Instant::now() < deadline, "the nodes never recovered");
        std::thread::sleep(Duration::from_millis(500));
    }
    sent.push("after the crash".into());
    ok(&p("alice"), &["sync"]);
    for text in &sent {
        bob.wait_for(&format!("alice: {text}"), Duration::from_secs(60));
    }
    drop(bob);
    ok(&p("bob"), &["sync"]);
    each_once(&texts(&p("bob"), "alice"), &sent);
}

#[test]
fn a_frozen_node_resumed_delivers_nothing_more() {
    let pg = Postgres::start().expect("postgres");
    let url = pg.database("frozen").expect("db");
    let nats = NatsProc::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Cluster::start(dir.path(), 3, &url, &nats.url(), 1);
    let lb = Haproxy::start(dir.path(), &c.addresses());
    let p = |n: &str| dir.path().join(n);
    common::register(&p("bob"), &lb.invite(c.invite(0)), "bob");
    // Bob listens through the balancer; Alice writes through node 0
    // directly, so her sends never wait on the frozen node. (Bob's listen
    // is started again until it lands elsewhere than node 0.)
    common::register(&p("alice"), c.invite(0), "alice");
    let (bob, frozen) = loop {
        let before = logins(&c);
        let l = Listener::start(&p("bob"));
        let i = node_that_logged_in(&c, &before);
        if i != 0 {
            break (l, i);
        }
        drop(l);
    };
    ok(&p("alice"), &["send", "bob", "before the freeze"]);
    bob.wait_for("alice: before the freeze", Duration::from_secs(20));
    let delivered_before = c.nodes[frozen].metric("umbra_envelopes_delivered_total");

    // Bob's node stops dead; his device comes back through another node
    // (a sync; its login supersedes the frozen node's session) and takes
    // what Alice sends meanwhile.
    let pid = c.nodes[frozen].child.id().to_string();
    assert!(common::signal("STOP", &pid));
    let mut sent = vec!["before the freeze".to_string()];
    for i in 0..3 {
        let text = format!("while frozen {i}");
        ok(&p("alice"), &["send", "bob", &text]);
        sent.push(text);
    }
    // A sync that lands on the frozen node hangs until its handshake times
    // out; the balancer's next pick is another node.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !umbra(&p("bob"), &["sync"]).status.success() {
        assert!(Instant::now() < deadline, "bob never got through");
    }
    let got = texts(&p("bob"), "alice");
    for i in 0..3 {
        assert!(got.contains(&format!("while frozen {i}")), "{got:?}");
    }

    // Resumed: the frozen node learns its session was superseded and
    // delivers nothing of what the later session already took.
    assert!(common::signal("CONT", &pid));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.nodes[frozen].metric("umbra_envelopes_delivered_total"),
        delivered_before,
        "the resumed node delivered again"
    );
    // Bob's listen reconnects (through any node) and goes on.
    ok(&p("alice"), &["send", "bob", "after the thaw"]);
    sent.push("after the thaw".into());
    bob.wait_for("alice: after the thaw", Duration::from_secs(60));
    let shown = bob.out.lock().expect("lock").clone();
    for i in 0..3 {
        assert!(
            !shown.contains(&format!("alice: while frozen {i}")),
            "the stale connection showed `while frozen {i}`:\n{shown}"
        );
    }
    drop(bob);
    ok(&p("bob"), &["sync"]);
    each_once(&texts(&p("bob"), "alice"), &sent);
    drop(lb);
}

#[test]
fn strangers_on_every_node_claim_one_users_key_packages_at_once() {
    let pg = Postgres::start().expect("postgres");
    let url = pg.database("claims").expect("db");
    let nats = NatsProc::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Cluster::start(dir.path(), 3, &url, &nats.url(), 1);
    let p = |n: &str| dir.path().join(n);
    common::register(&p("bob"), c.invite(0), "bob");
    let users: Vec<String> = (0..9).map(|i| format!("stranger{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        common::register(&p(u), c.invite(i % 3), u);
    }
    // All at once, three on each node: each claims one of Bob's key
    // packages and welcomes him with it.
    let threads: Vec<_> = users
        .iter()
        .map(|u| {
            let profile = p(u);
            let text = format!("hello from {u}");
            std::thread::spawn(move || ok(&profile, &["send", "bob", &text]))
        })
        .collect();
    for t in threads {
        t.join().expect("send");
    }
    // Every welcome opens: no key package went to two of them.
    ok(&p("bob"), &["sync"]);
    for u in &users {
        assert_eq!(
            texts(&p("bob"), u),
            [format!("hello from {u}")],
            "{u}'s first message"
        );
    }
}

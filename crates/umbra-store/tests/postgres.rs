//! What the PostgreSQL store must do that one process on SQLite never had
//! to: several connections (as several server nodes) writing at once, an
//! older schema upgraded in place, a newer one refused, and the database
//! restarting under it, or a node stalling inside a batch.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

mod common;

use common::{device, list};
use umbra_store::pgtest::Cluster;
use umbra_store::{Day, EpochClaim, LEGACY_SUITE, Limits, PgStore, Store, StoreError};

const TODAY: Day = Day(20_000);

fn limits(mailbox_cap: u64) -> Limits {
    Limits {
        mailbox_cap,
        key_package_cap: 400,
    }
}

fn once(store: &mut PgStore, f: impl FnOnce(&mut dyn umbra_store::StoreTx)) {
    let mut tx = store.begin().expect("begin");
    f(&mut *tx);
    tx.commit().expect("commit");
}

#[test]
fn an_older_schema_upgrades_in_place_and_a_newer_one_is_refused() {
    let cluster = Cluster::start().expect("postgres");
    let url = cluster.database("schema").expect("db");
    PgStore::migrate(&url, 1).expect("version 1");
    assert_eq!(PgStore::schema_version(&url).expect("version"), 1);
    {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.batch_execute(
            "INSERT INTO accounts (username, created_day) VALUES ('alice', 1);
             INSERT INTO devices (device_id, username, identity_key, sealing_key, mailbox_id,
                 delivery_token_hash)
               VALUES (decode(repeat('01', 16), 'hex'), 'alice', decode(repeat('01', 32), 'hex'),
                 decode(repeat('02', 32), 'hex'), decode(repeat('65', 16), 'hex'),
                 decode(repeat('03', 32), 'hex'));
             INSERT INTO key_packages (device_id, data, last_resort)
               VALUES (decode(repeat('01', 16), 'hex'), 'old', false)",
        )
        .expect("version 1 rows");
    }
    let mut store = PgStore::connect(&url, limits(10)).expect("upgrade");
    assert_eq!(
        PgStore::schema_version(&url).expect("version"),
        umbra_store::postgres::schema::SCHEMA_VERSION
    );
    once(&mut store, |tx| {
        // The old rows are there, a key package from before suites is the
        // classical suite's, and the new table works.
        let claimed = tx
            .devices_for_user("alice", &[0x004F, LEGACY_SUITE])
            .expect("claim")
            .expect("user");
        assert_eq!(claimed[0].suite, LEGACY_SUITE);
        assert_eq!(claimed[0].key_package.as_deref(), Some(&b"old"[..]));
        tx.set_business_card("alice", b"card", false).expect("card");
    });
    // Connecting again changes nothing.
    drop(PgStore::connect(&url, limits(10)).expect("again"));
    {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.batch_execute("INSERT INTO schema_version (version) VALUES (99)")
            .expect("from the future");
    }
    assert!(matches!(
        PgStore::connect(&url, limits(10)),
        Err(StoreError::SchemaTooNew {
            found: 99,
            supported: umbra_store::postgres::schema::SCHEMA_VERSION
        })
    ));
}

#[test]
fn an_epoch_claimed_from_every_node_at_once_has_one_winner() {
    let cluster = Cluster::start().expect("postgres");
    let url = cluster.database("epochs_at_once").expect("db");
    let nodes = 8;
    for round in 0..20u8 {
        let start = Arc::new(Barrier::new(nodes));
        let handles: Vec<_> = (0..nodes)
            .map(|n| {
                let (url, start) = (url.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut s = PgStore::connect(&url, limits(10)).expect("connect");
                    let commit = format!("round {round} commit of node {n}").into_bytes();
                    start.wait();
                    let mut tx = s.begin().expect("begin");
                    let claim = tx.claim_epoch(&[round; 32], &commit, TODAY).expect("claim");
                    tx.commit().expect("commit");
                    (commit, claim)
                })
            })
            .collect();
        let results: Vec<(Vec<u8>, EpochClaim)> = handles
            .into_iter()
            .map(|h| h.join().expect("node"))
            .collect();
        let winners: Vec<&Vec<u8>> = results
            .iter()
            .filter(|(_, c)| *c == EpochClaim::Won)
            .map(|(commit, _)| commit)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (_, c) in &results {
            if let EpochClaim::Lost(w) = c {
                assert_eq!(w, winners[0], "a loser was handed another commit");
            }
        }
    }
}

#[test]
fn key_packages_claimed_from_every_node_at_once_are_never_handed_out_twice() {
    let cluster = Cluster::start().expect("postgres");
    let url = cluster.database("claims").expect("db");
    let mut store = PgStore::connect(&url, limits(10)).expect("connect");
    const PACKAGES: usize = 400;
    once(&mut store, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        let kps: Vec<Vec<u8>> = (0..PACKAGES)
            .map(|i| format!("kp-{i}").into_bytes())
            .collect();
        tx.upload_key_packages(&[1; 16], LEGACY_SUITE, &kps, Some(b"last"), false)
            .expect("upload");
    });
    // Eight connections, as eight nodes, claim as fast as they can, each
    // claim its own transaction.
    let nodes = 8;
    let start = Arc::new(Barrier::new(nodes));
    let handles: Vec<_> = (0..nodes)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                let mut s = PgStore::connect(&url, limits(10)).expect("connect");
                start.wait();
                let mut got = Vec::new();
                for _ in 0..PACKAGES / nodes + 10 {
                    let mut tx = s.begin().expect("begin");
                    let d = tx
                        .devices_for_user("alice", &[LEGACY_SUITE])
                        .expect("claim")
                        .expect("user");
                    tx.commit().expect("commit");
                    got.push((
                        d[0].key_package.clone().expect("a package"),
                        d[0].key_package_is_last_resort,
                    ));
                }
                got
            })
        })
        .collect();
    let all: Vec<(Vec<u8>, bool)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("node"))
        .collect();
    let regular: Vec<&Vec<u8>> = all.iter().filter(|(_, lr)| !lr).map(|(p, _)| p).collect();
    let unique: HashSet<&Vec<u8>> = regular.iter().copied().collect();
    assert_eq!(regular.len(), PACKAGES, "every regular package handed out");
    assert_eq!(unique.len(), PACKAGES, "none twice");
    assert!(all.iter().filter(|(_, lr)| *lr).all(|(p, _)| p == b"last"));
}

#[test]
fn a_mailbox_written_from_every_node_at_once_numbers_in_commit_order_and_keeps_its_cap() {
    let cluster = Cluster::start().expect("postgres");
    let url = cluster.database("mailbox").expect("db");
    const CAP: u64 = 300;
    let mut store = PgStore::connect(&url, limits(CAP)).expect("connect");
    once(&mut store, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        tx.register(&device("bobby", 2), &list(2), TODAY)
            .expect("register");
    });
    let (a, b) = ([101u8; 16], [102u8; 16]);
    // Eight nodes store into both mailboxes in batches, half of them in the
    // other order (the locks taken first keep them from a deadlock), until
    // more than the cap was offered.
    let nodes = 8;
    let start = Arc::new(Barrier::new(nodes));
    let handles: Vec<_> = (0..nodes)
        .map(|n| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                let mut s = PgStore::connect(&url, limits(CAP)).expect("connect");
                start.wait();
                let order = if n % 2 == 0 { [a, b] } else { [b, a] };
                let (mut taken, mut full) = (0u64, 0u64);
                for batch in 0..10 {
                    let mut tx = s.begin().expect("begin");
                    tx.lock_mailboxes(&[a, b], &[]).expect("lock");
                    for i in 0..5u8 {
                        for m in &order {
                            match tx.store_envelope(m, &[n as u8, batch, i], false, TODAY) {
                                Ok(_) => taken += 1,
                                Err(StoreError::MailboxFull) => full += 1,
                                Err(e) => panic!("store: {e}"),
                            }
                        }
                    }
                    tx.commit().expect("commit");
                }
                (taken, full)
            })
        })
        .collect();
    let (taken, full) = handles
        .into_iter()
        .map(|h| h.join().expect("node"))
        .fold((0, 0), |acc, (t, f)| (acc.0 + t, acc.1 + f));
    assert_eq!(taken + full, nodes as u64 * 10 * 5 * 2);
    assert_eq!(taken, 2 * CAP, "each mailbox holds exactly its cap");
    once(&mut store, |tx| {
        for m in [a, b] {
            let got = tx.fetch_envelopes(&m, 0, 1000, usize::MAX).expect("fetch");
            assert_eq!(got.len() as u64, CAP);
            let ids: Vec<u64> = got.iter().map(|e| e.id).collect();
            assert_eq!(
                ids,
                (1..=CAP).collect::<Vec<_>>(),
                "numbered 1.. without a gap"
            );
        }
        // Acks free room, counted across nodes.
        assert_eq!(tx.delete_envelopes(&a, &[1, 2, 3]).expect("ack"), 3);
        assert_eq!(
            tx.store_envelope(&a, b"after", false, TODAY).expect("room"),
            CAP + 1
        );
    });
}

#[test]
fn the_store_finds_its_way_back_after_the_database_restarts() {
    // A cluster of our own, whatever the environment offers: it is
    // restarted the way a crash would.
    let cluster = Cluster::start_own().expect("postgres");
    let url = cluster.database("restart").expect("db");
    let mut store = PgStore::connect(&url, limits(10)).expect("connect");
    once(&mut store, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        tx.store_envelope(&[101; 16], b"kept", false, TODAY)
            .expect("store");
    });
    once(&mut store, |tx| {
        assert!(
            tx.hold_live(&[101; 16], b"ringing", false, 10, u64::MAX / 4, 8)
                .expect("hold")
        );
    });
    {
        // Online-only envelopes are in an unlogged table: never in the WAL.
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let persistence: String = c
            .query_one(
                "SELECT relpersistence::text FROM pg_class WHERE relname = 'live'",
                &[],
            )
            .expect("persistence")
            .get(0);
        assert_eq!(persistence, "u");
    }
    cluster.restart_immediate().expect("restart");
    // The first batch may find the old connection dead; a later one works.
    let mut found = None;
    for _ in 0..50 {
        if let Ok(mut tx) = store.begin()
            && let Ok(got) = tx.fetch_envelopes(&[101; 16], 0, 10, usize::MAX)
            && tx.commit().is_ok()
        {
            found = Some(got);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let got = found.expect("the store never came back");
    assert_eq!(got.len(), 1, "what was committed before the crash is there");
    assert_eq!(got[0].sealed, b"kept");
    // What was held online-only went with the crash, as a node's memory
    // would have.
    once(&mut store, |tx| {
        assert!(tx.take_live(&[101; 16], 10).expect("take").is_empty());
    });
}

#[test]
fn a_node_stalled_inside_a_batch_holds_no_mailbox_for_long() {
    let cluster = Cluster::start().expect("postgres");
    let url = cluster.database("stalled").expect("db");
    let mut stalled = PgStore::connect(&url, limits(10)).expect("connect");
    once(&mut stalled, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
    });
    let mailbox = [101u8; 16];
    // One node locks Alice's mailbox row, as every batch that delivers to or
    // stores for her does, and then stops dead (SIGSTOP, a suspended
    // machine) before it commits.
    let mut tx = stalled.begin().expect("begin");
    tx.lock_mailboxes(&[mailbox], &[]).expect("lock");
    // Another node stores for Alice meanwhile: it waits for that lock, but
    // not for as long as the stalled node sleeps.
    let (done, finished) = std::sync::mpsc::channel();
    let other = url.clone();
    std::thread::spawn(move || {
        let mut s = PgStore::connect(&other, limits(10)).expect("connect");
        let stored = s.begin().and_then(|mut tx| {
            tx.lock_mailboxes(&[mailbox], &[])?;
            let id = tx.store_envelope(&mailbox, b"meanwhile", false, TODAY)?;
            tx.commit()?;
            Ok(id)
        });
        let _ = done.send(stored);
    });
    let waited = std::time::Instant::now();
    let stored = finished
        .recv_timeout(umbra_store::postgres::STALLED_SESSION * 6)
        .expect("the other node still waits on the stalled node's lock");
    assert_eq!(stored.expect("stored"), 1);
    assert!(waited.elapsed() >= umbra_store::postgres::STALLED_SESSION / 2);
    // The stalled node wakes: its batch is refused, not half-applied, and
    // its next batch works on a fresh connection and sees the envelope.
    assert!(
        tx.store_envelope(&mailbox, b"late", false, TODAY)
            .and_then(|_| tx.commit())
            .is_err(),
        "the stalled batch committed after its session was ended"
    );
    once(&mut stalled, |tx| {
        let got = tx
            .fetch_envelopes(&mailbox, 0, 10, usize::MAX)
            .expect("fetch");
        let texts: Vec<&[u8]> = got.iter().map(|e| &e.sealed[..]).collect();
        assert_eq!(texts, vec![&b"meanwhile"[..]]);
    });
}

#[test]
fn blobs_in_the_database_behave_as_blobs_in_files_and_any_node_reads_them() {
    use umbra_store::blobs::contract;
    use umbra_store::{BlobStore, PgBlobStore};
    let cluster = Cluster::start().expect("postgres");
    let url = cluster.database("blobs").expect("db");
    PgStore::connect(&url, limits(10)).expect("schema");
    let (a, b) = (PgBlobStore::new(&url), PgBlobStore::new(&url));
    contract::old_blobs_expire(&b);
    contract::uploads_in_order_then_reads_and_deletes(&a);
    // Uploaded through two nodes in turn, read through a third.
    let id = [9u8; 16];
    a.create(&id, contract::meta(200_000, b"tok", 1))
        .expect("create");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut at = 0;
    for (i, piece) in data.chunks(65_552).enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        // The other node's resumed write at a stale offset is refused.
        if at > 0 {
            assert!(matches!(
                node.append(&id, b"tok", at - 1, piece),
                Err(umbra_store::StoreError::BlobOffset { expected }) if expected == at
            ));
        }
        node.append(&id, b"tok", at, piece).expect("append");
        at += piece.len() as u64;
    }
    let c = PgBlobStore::new(&url);
    let mut back = Vec::new();
    while (back.len() as u64) < 200_000 {
        let (size, part) = c.read(&id, back.len() as u64, 131_072).expect("read");
        assert_eq!(size, 200_000);
        back.extend_from_slice(&part);
    }
    assert_eq!(back, data);
}

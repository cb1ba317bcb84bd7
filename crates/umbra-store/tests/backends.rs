//! Both stores, held to one behaviour: SQLite against real database files in
//! a temporary directory, PostgreSQL against a real server (a throwaway
//! cluster, or the one `scripts/test.sh` started), each test in a database
//! of its own. "Reopening" opens the file, or connects, afresh.

mod common;

use common::{
    LIMITS, Open, TODAY, device, list, on_postgres, on_postgres_with, on_sqlite, on_sqlite_with,
    with_tx,
};
use umbra_store::{
    Day, EnvelopeAck, EpochClaim, LEGACY_SUITE, Limits, NewEnvelope, SqliteStore, Store, StoreError,
};

fn register_and_look_up_survives_reopen(open: Open<'_>) {
    {
        let mut s = open();
        with_tx(&mut s, |tx| {
            tx.register(&device("alice", 1), &list(1), TODAY)
                .expect("register");
            assert!(matches!(
                tx.register(&device("alice", 2), &list(2), TODAY),
                Err(StoreError::UsernameTaken)
            ));
            // Same device id under another name: collision, and no half-made account.
            assert!(matches!(
                tx.register(&device("bob", 1), &list(1), TODAY),
                Err(StoreError::IdCollision)
            ));
            assert!(tx.devices_for_user("bob", &[]).expect("lookup").is_none());
        });
    }
    let mut s = open();
    with_tx(&mut s, |tx| {
        let d = tx.device(&[1; 16]).expect("device").expect("exists");
        assert_eq!(d.username, "alice");
        assert_eq!(d.identity_key, [1; 32]);
        let m = tx.mailbox(&[101; 16]).expect("mailbox").expect("exists");
        assert_eq!(m.device_id, [1; 16]);
        assert_eq!(tx.all_mailboxes().expect("all").len(), 1);
        tx.set_delivery_token_hash(&[1; 16], &[9; 32]).expect("set");
        assert!(matches!(
            tx.set_delivery_token_hash(&[7; 16], &[9; 32]),
            Err(StoreError::UnknownDevice)
        ));
        let devs = tx
            .devices_for_user("alice", &[])
            .expect("lookup")
            .expect("user");
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0].device.delivery_token_hash, [9; 32]);
        assert!(tx.device(&[7; 16]).expect("device").is_none());
    });
}

fn key_packages_claim_falls_back_to_last_resort(open: Open<'_>) {
    let mut s = open();
    with_tx(&mut s, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        let dev = [1u8; 16];
        assert!(matches!(
            tx.devices_for_user("alice", &[LEGACY_SUITE]),
            Err(StoreError::NoKeyPackages)
        ));
        let left = tx
            .upload_key_packages(
                &dev,
                LEGACY_SUITE,
                &[vec![1], vec![2]],
                Some(&[0xaa]),
                false,
            )
            .expect("upload");
        assert_eq!(left, 2);
        assert!(matches!(
            tx.upload_key_packages(&dev, LEGACY_SUITE, &[vec![3], vec![4]], None, false),
            Err(StoreError::TooManyKeyPackages { max: 3 })
        ));
        assert_eq!(tx.key_packages_left(&dev, LEGACY_SUITE).expect("left"), 2);
        // Last resort replaced.
        tx.upload_key_packages(&dev, LEGACY_SUITE, &[], Some(&[0xbb]), false)
            .expect("replace");
        let claim = |tx: &mut dyn umbra_store::StoreTx| {
            let d = tx
                .devices_for_user("alice", &[LEGACY_SUITE])
                .expect("claim")
                .expect("user");
            (d[0].key_package.clone(), d[0].key_package_is_last_resort)
        };
        assert_eq!(claim(tx), (Some(vec![1]), false));
        assert_eq!(claim(tx), (Some(vec![2]), false));
        assert_eq!(claim(tx), (Some(vec![0xbb]), true));
        assert_eq!(claim(tx), (Some(vec![0xbb]), true));
        assert_eq!(tx.key_packages_left(&dev, LEGACY_SUITE).expect("left"), 0);
        assert!(matches!(
            tx.upload_key_packages(&[5; 16], LEGACY_SUITE, &[vec![1]], None, false),
            Err(StoreError::UnknownDevice)
        ));
        // Replacing withdraws every package the device had, the last-resort
        // one too; over the cap, nothing is withdrawn either.
        tx.upload_key_packages(
            &dev,
            LEGACY_SUITE,
            &[vec![6], vec![7]],
            Some(&[0xcc]),
            false,
        )
        .expect("refill");
        assert!(matches!(
            tx.upload_key_packages(
                &dev,
                LEGACY_SUITE,
                &[vec![8], vec![8], vec![8], vec![8]],
                Some(&[0xdd]),
                true
            ),
            Err(StoreError::TooManyKeyPackages { max: 3 })
        ));
        assert_eq!(tx.key_packages_left(&dev, LEGACY_SUITE).expect("left"), 2);
        tx.upload_key_packages(&dev, LEGACY_SUITE, &[vec![9]], Some(&[0xee]), true)
            .expect("replace all");
        assert_eq!(tx.key_packages_left(&dev, LEGACY_SUITE).expect("left"), 1);
        assert_eq!(claim(tx), (Some(vec![9]), false));
        assert_eq!(claim(tx), (Some(vec![0xee]), true));
    });
}

fn envelopes_store_fetch_ack_cap_and_expire(open: Open<'_>) {
    let a = [101u8; 16];
    let b = [102u8; 16];
    let (ids, b_id) = {
        let mut s = open();
        with_tx(&mut s, |tx| {
            tx.register(&device("alice", 1), &list(1), TODAY)
                .expect("register");
            tx.register(&device("bobby", 2), &list(2), TODAY)
                .expect("register");
            let mut ids = Vec::new();
            for i in 0..5u8 {
                ids.push(
                    tx.store_envelope(&a, &[i; 10], i == 0, TODAY)
                        .expect("store"),
                );
            }
            assert!(matches!(
                tx.store_envelope(&a, b"x", false, TODAY),
                Err(StoreError::MailboxFull)
            ));
            assert!(matches!(
                tx.store_envelope(&[9; 16], b"x", false, TODAY),
                Err(StoreError::UnknownMailbox)
            ));
            let b_id = tx
                .store_envelope(&b, b"old", false, Day(TODAY.0 - 31))
                .expect("store");
            (ids, b_id)
        })
    };
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let mut s = open();
    with_tx(&mut s, |tx| {
        let got = tx.fetch_envelopes(&a, 0, 100, usize::MAX).expect("fetch");
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert!(got[0].introduction && !got[1].introduction);
        assert_eq!(got[2].sealed, vec![2; 10]);
        let page = tx
            .fetch_envelopes(&a, ids[1], 2, usize::MAX)
            .expect("fetch");
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].id, ids[2]);
        // Byte bound: stops after the envelope that crosses it.
        assert_eq!(tx.fetch_envelopes(&a, 0, 100, 15).expect("fetch").len(), 2);
        // Acks only touch the given mailbox: a's ids acked in b take nothing
        // of a's (nor of b's own).
        let not_b: Vec<u64> = ids.iter().copied().filter(|i| *i != b_id).collect();
        assert_eq!(tx.delete_envelopes(&b, &not_b).expect("delete"), 0);
        assert_eq!(
            tx.fetch_envelopes(&a, 0, 100, usize::MAX)
                .expect("fetch")
                .len(),
            5
        );
        assert_eq!(tx.delete_envelopes(&a, &ids[..2]).expect("delete"), 2);
        // Room again after the acks.
        tx.store_envelope(&a, b"y", false, TODAY)
            .expect("store after ack");
        assert_eq!(tx.envelope_count().expect("count"), 5);
        assert_eq!(tx.expire_envelopes(TODAY, 30).expect("expire"), 1);
        assert_eq!(tx.envelope_count().expect("count"), 4);
    });
    // A deleted top id is never reused.
    let last = with_tx(&mut s, |tx| {
        let all = tx.fetch_envelopes(&a, 0, 100, usize::MAX).expect("fetch");
        let top = all.last().expect("some").id;
        tx.delete_envelopes(&a, &[top]).expect("delete");
        top
    });
    let next = with_tx(&mut s, |tx| {
        tx.store_envelope(&a, b"z", false, TODAY).expect("store")
    });
    assert!(next > last);
}

/// One commit per epoch: the first claim wins and is kept across a reopen,
/// the same commit claimed again (a retried request) wins again, another
/// loses and is handed the winner; tags are independent; claims expire
/// as envelopes do.
fn one_commit_wins_each_epoch(open: Open<'_>) {
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let mut s = open();
    with_tx(&mut s, |tx| {
        assert_eq!(tx.epoch_commit(&a).expect("get"), None);
        assert_eq!(
            tx.claim_epoch(&a, b"commit-x", TODAY).expect("claim"),
            EpochClaim::Won
        );
        assert_eq!(
            tx.claim_epoch(&a, b"commit-y", TODAY).expect("claim"),
            EpochClaim::Lost(b"commit-x".to_vec())
        );
    });
    drop(s);
    let mut s = open();
    with_tx(&mut s, |tx| {
        assert_eq!(
            tx.claim_epoch(&a, b"commit-x", TODAY).expect("retry"),
            EpochClaim::Won
        );
        assert_eq!(
            tx.claim_epoch(&a, b"commit-z", TODAY).expect("claim"),
            EpochClaim::Lost(b"commit-x".to_vec())
        );
        assert_eq!(
            tx.claim_epoch(&b, b"commit-y", Day(TODAY.0 + 3))
                .expect("claim"),
            EpochClaim::Won
        );
        assert_eq!(
            tx.epoch_commit(&a).expect("get"),
            Some(b"commit-x".to_vec())
        );
    });
    // A claim rolled back holds nothing.
    {
        let mut tx = s.begin().expect("begin");
        tx.claim_epoch(&[3; 32], b"commit-r", TODAY).expect("claim");
    }
    with_tx(&mut s, |tx| {
        assert_eq!(tx.epoch_commit(&[3; 32]).expect("get"), None);
        // Kept two days: `a` (claimed today) goes three days on, `b` stays.
        assert_eq!(tx.expire_epochs(Day(TODAY.0 + 3), 2).expect("expire"), 1);
        assert_eq!(tx.epoch_commit(&a).expect("get"), None);
        assert_eq!(
            tx.epoch_commit(&b).expect("get"),
            Some(b"commit-y".to_vec())
        );
    });
}

#[test]
fn sqlite_one_commit_wins_each_epoch() {
    on_sqlite(one_commit_wins_each_epoch);
}

#[test]
fn postgres_one_commit_wins_each_epoch() {
    on_postgres("epochs", one_commit_wins_each_epoch);
}

fn rolled_back_transaction_leaves_nothing(open: Open<'_>) {
    let mut s = open();
    {
        let mut tx = s.begin().expect("begin");
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
    }
    with_tx(&mut s, |tx| {
        assert!(tx.devices_for_user("alice", &[]).expect("lookup").is_none());
    });
}

#[test]
fn sqlite_register_and_look_up_survives_reopen() {
    on_sqlite(register_and_look_up_survives_reopen);
}

#[test]
fn postgres_register_and_look_up_survives_reopen() {
    on_postgres("register", register_and_look_up_survives_reopen);
}

#[test]
fn sqlite_key_packages_claim_falls_back_to_last_resort() {
    on_sqlite(key_packages_claim_falls_back_to_last_resort);
}

#[test]
fn postgres_key_packages_claim_falls_back_to_last_resort() {
    on_postgres("keypackages", key_packages_claim_falls_back_to_last_resort);
}

/// Envelopes stored together behave as if stored one by one, in order:
/// each mailbox's cap counts those before it in the call, an unknown
/// mailbox refuses only its own, ids go on from where single stores left
/// them.
fn envelopes_stored_together_as_one_by_one(open: Open<'_>) {
    let a = [101u8; 16];
    let b = [102u8; 16];
    let nowhere = [9u8; 16];
    let mut s = open();
    let first = with_tx(&mut s, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        tx.register(&device("bobby", 2), &list(2), TODAY)
            .expect("register");
        tx.store_envelope(&a, b"a0", false, TODAY).expect("store")
    });
    let plan: [(&[u8; 16], &[u8], bool); 8] = [
        (&a, b"a1", false),
        (&b, b"b1", true),
        (&nowhere, b"z", false),
        (&a, b"a2", false),
        (&a, b"a3", true),
        (&a, b"a4", false),
        (&a, b"a5", false), // the sixth in a's mailbox: over the cap of 5
        (&b, b"b2", false),
    ];
    let batch: Vec<NewEnvelope<'_>> = plan
        .iter()
        .map(|&(mailbox_id, sealed, introduction)| NewEnvelope {
            mailbox_id,
            sealed,
            introduction,
        })
        .collect();
    let got = with_tx(&mut s, |tx| {
        assert!(tx.store_envelopes(&[], TODAY).expect("nothing").is_empty());
        tx.store_envelopes(&batch, TODAY).expect("store together")
    });
    assert_eq!(got.len(), 8);
    assert!(matches!(got[2], Err(StoreError::UnknownMailbox)));
    assert!(matches!(got[6], Err(StoreError::MailboxFull)));
    let ok: Vec<u64> = got
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(ok.len(), 6);
    let a_ids: Vec<u64> = [0, 3, 4, 5]
        .iter()
        .map(|&i| *got[i].as_ref().expect("stored"))
        .collect();
    assert!(first < a_ids[0] && a_ids.windows(2).all(|w| w[0] < w[1]));
    let b_ids = [*got[1].as_ref().expect("b1"), *got[7].as_ref().expect("b2")];
    assert!(b_ids[0] < b_ids[1]);
    with_tx(&mut s, |tx| {
        let in_a = tx.fetch_envelopes(&a, 0, 100, usize::MAX).expect("fetch");
        let sealed: Vec<&[u8]> = in_a.iter().map(|e| &e.sealed[..]).collect();
        assert_eq!(sealed, [&b"a0"[..], b"a1", b"a2", b"a3", b"a4"]);
        assert_eq!(
            in_a.iter().map(|e| e.introduction).collect::<Vec<_>>(),
            [false, false, false, true, false]
        );
        let in_b = tx.fetch_envelopes(&b, 0, 100, usize::MAX).expect("fetch");
        assert_eq!(in_b.iter().map(|e| e.id).collect::<Vec<_>>(), b_ids);
        assert!(in_b[0].introduction);
        // The counts moved with the batch: one ack makes room for exactly one.
        assert_eq!(tx.delete_envelopes(&a, &[first]).expect("ack"), 1);
        let again = tx
            .store_envelopes(
                &[
                    NewEnvelope {
                        mailbox_id: &a,
                        sealed: b"a6",
                        introduction: false,
                    },
                    NewEnvelope {
                        mailbox_id: &a,
                        sealed: b"a7",
                        introduction: false,
                    },
                ],
                TODAY,
            )
            .expect("store together");
        assert!(*again[0].as_ref().expect("room for one") > a_ids[3]);
        assert!(matches!(again[1], Err(StoreError::MailboxFull)));
        // A single store goes on from the batch's numbers.
        assert!(tx.store_envelope(&b, b"b3", false, TODAY).expect("store") > b_ids[1]);
        assert_eq!(tx.envelope_count().expect("count"), 8);
    });
}

/// Acknowledgements applied together: each deletes only what its mailbox
/// holds, and only while its session is current; the mailbox's count
/// follows.
fn acknowledgements_applied_together(open: Open<'_>) {
    let a = [101u8; 16];
    let mut s = open();
    let (ids, old, new) = with_tx(&mut s, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        let ids: Vec<u64> = (0..3u8)
            .map(|i| tx.store_envelope(&a, &[i], false, TODAY).expect("store"))
            .collect();
        let old = tx.start_session(&[1; 16]).expect("session");
        let new = tx.start_session(&[1; 16]).expect("session");
        (ids, old, new)
    });
    let got = with_tx(&mut s, |tx| {
        assert!(tx.acknowledge(&[]).expect("nothing").is_empty());
        tx.acknowledge(&[
            // A superseded session deletes nothing.
            EnvelopeAck {
                mailbox_id: &a,
                session: old,
                ids: &[ids[0]],
            },
            EnvelopeAck {
                mailbox_id: &a,
                session: new,
                ids: &[ids[0], ids[1], 9_999],
            },
            EnvelopeAck {
                mailbox_id: &[9; 16],
                session: new,
                ids: &[ids[2]],
            },
            // Already gone.
            EnvelopeAck {
                mailbox_id: &a,
                session: new,
                ids: &[ids[1]],
            },
        ])
        .expect("acknowledge")
    });
    let got: Vec<Option<u32>> = got.into_iter().map(|r| r.expect("outcome")).collect();
    assert_eq!(got, [None, Some(2), None, Some(0)]);
    with_tx(&mut s, |tx| {
        let left = tx.fetch_envelopes(&a, 0, 100, usize::MAX).expect("fetch");
        assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[2]]);
        // Room for exactly four more under the cap of 5.
        for i in 0..4u8 {
            tx.store_envelope(&a, &[i], false, TODAY).expect("room");
        }
        assert!(matches!(
            tx.store_envelope(&a, b"x", false, TODAY),
            Err(StoreError::MailboxFull)
        ));
    });
}

#[test]
fn sqlite_acknowledgements_applied_together() {
    on_sqlite(acknowledgements_applied_together);
}

#[test]
fn postgres_acknowledgements_applied_together() {
    on_postgres("acks", acknowledgements_applied_together);
}

/// Many at once: a hundred envelopes over three mailboxes come back in
/// order with rising ids, and an acknowledgement of more than a statement's
/// worth of ids (with repeats and another mailbox's among them) deletes
/// exactly what it names of its own.
fn many_envelopes_in_and_out_in_order(open: Open<'_>) {
    let boxes = [[101u8; 16], [102u8; 16], [103u8; 16]];
    let mut s = open();
    let sealed: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 3]).collect();
    let got = with_tx(&mut s, |tx| {
        for (i, name) in ["alice", "bobby", "carol"].into_iter().enumerate() {
            tx.register(&device(name, i as u8 + 1), &list(i as u8 + 1), TODAY)
                .expect("register");
        }
        let batch: Vec<NewEnvelope<'_>> = sealed
            .iter()
            .enumerate()
            .map(|(i, b)| NewEnvelope {
                mailbox_id: &boxes[i % 3],
                sealed: b,
                introduction: i % 7 == 0,
            })
            .collect();
        tx.store_envelopes(&batch, TODAY).expect("store")
    });
    let ids: Vec<u64> = got.into_iter().map(|r| r.expect("stored")).collect();
    with_tx(&mut s, |tx| {
        for (k, m) in boxes.iter().enumerate() {
            let mine: Vec<usize> = (0..100).filter(|i| i % 3 == k).collect();
            let held = tx.fetch_envelopes(m, 0, 1000, usize::MAX).expect("fetch");
            assert_eq!(
                held.iter().map(|e| e.id).collect::<Vec<_>>(),
                mine.iter().map(|&i| ids[i]).collect::<Vec<_>>()
            );
            assert!(
                held.iter()
                    .zip(&mine)
                    .all(|(e, &i)| e.sealed == sealed[i] && e.introduction == (i % 7 == 0))
            );
        }
        // 34 of alice's, each named twice, and all of bobby's: 101 ids.
        let alice: Vec<u64> = (0..100).filter(|i| i % 3 == 0).map(|i| ids[i]).collect();
        let mut named: Vec<u64> = alice.iter().chain(&alice).copied().collect();
        named.extend((0..100).filter(|i| i % 3 == 1).map(|i| ids[i]));
        assert!(named.len() > 64);
        assert_eq!(tx.delete_envelopes(&boxes[0], &named).expect("delete"), 34);
        assert!(
            tx.fetch_envelopes(&boxes[0], 0, 1000, usize::MAX)
                .expect("fetch")
                .is_empty()
        );
        assert_eq!(tx.envelope_count().expect("count"), 66);
    });
}

/// Room for all of them: the cap is not what this test is about.
const ROOMY: Limits = Limits {
    mailbox_cap: 1000,
    ..LIMITS
};

#[test]
fn sqlite_many_envelopes_in_and_out_in_order() {
    on_sqlite_with(ROOMY, many_envelopes_in_and_out_in_order);
}

#[test]
fn postgres_many_envelopes_in_and_out_in_order() {
    on_postgres_with("many", ROOMY, many_envelopes_in_and_out_in_order);
}

#[test]
fn sqlite_envelopes_stored_together_as_one_by_one() {
    on_sqlite(envelopes_stored_together_as_one_by_one);
}

#[test]
fn postgres_envelopes_stored_together_as_one_by_one() {
    on_postgres("together", envelopes_stored_together_as_one_by_one);
}

#[test]
fn sqlite_envelopes_store_fetch_ack_cap_and_expire() {
    on_sqlite(envelopes_store_fetch_ack_cap_and_expire);
}

#[test]
fn postgres_envelopes_store_fetch_ack_cap_and_expire() {
    on_postgres("envelopes", envelopes_store_fetch_ack_cap_and_expire);
}

#[test]
fn sqlite_rolled_back_transaction_leaves_nothing() {
    on_sqlite(rolled_back_transaction_leaves_nothing);
}

#[test]
fn postgres_rolled_back_transaction_leaves_nothing() {
    on_postgres("rollback", rolled_back_transaction_leaves_nothing);
}

fn sessions_fence_and_budgets_hold(open: Open<'_>) {
    let mut s = open();
    let (a, b) = ([101u8; 16], [102u8; 16]);
    with_tx(&mut s, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        tx.register(&device("bobby", 2), &list(2), TODAY)
            .expect("register");
        // A later login supersedes the one before, wherever it was.
        let first = tx.start_session(&[1; 16]).expect("session");
        let second = tx.start_session(&[1; 16]).expect("session");
        assert!(second > first);
        assert!(!tx.session_is_current(&a, first).expect("check"));
        assert!(tx.session_is_current(&a, second).expect("check"));
        assert!(matches!(
            tx.start_session(&[9; 16]),
            Err(StoreError::UnknownDevice)
        ));
        let locked = tx.lock_mailboxes(&[a, b, [9; 16]], &[]).expect("lock");
        assert_eq!(locked, [(a, second), (b, 0)]);
        // Two introductions an hour, saved up to two.
        let t = 1_000_000;
        assert!(tx.take_introduction(&a, 2, t).expect("take"));
        assert!(tx.take_introduction(&a, 2, t).expect("take"));
        assert!(!tx.take_introduction(&a, 2, t).expect("take"));
        assert!(
            tx.take_introduction(&b, 2, t)
                .expect("another mailbox's own")
        );
        assert!(
            tx.take_introduction(&a, 2, t + 1800)
                .expect("half an hour on")
        );
        assert!(matches!(
            tx.take_introduction(&[9; 16], 2, t),
            Err(StoreError::UnknownMailbox)
        ));
        // The newest envelope of each mailbox that holds any.
        let mut top = 0;
        for i in 0..3u8 {
            top = tx.store_envelope(&a, &[i], false, TODAY).expect("store");
        }
        assert_eq!(tx.newest_envelopes(&[a, b]).expect("newest"), [(a, top)]);
    });
    // The budget spent is kept.
    with_tx(&mut open(), |tx| {
        assert!(!tx.take_introduction(&a, 2, 1_001_800).expect("take"));
    });
}

#[test]
fn sqlite_sessions_fence_and_budgets_hold() {
    on_sqlite(sessions_fence_and_budgets_hold);
}

#[test]
fn postgres_sessions_fence_and_budgets_hold() {
    on_postgres("sessions", sessions_fence_and_budgets_hold);
}

fn online_only_envelopes_are_held_briefly_and_taken_once(open: Open<'_>) {
    let mut s = open();
    let (a, b) = ([101u8; 16], [102u8; 16]);
    let t = 2_000_000;
    with_tx(&mut s, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        tx.register(&device("bobby", 2), &list(2), TODAY)
            .expect("register");
        // Three for alice under a cap of three (one already past its hold
        // does not count), then no more.
        assert!(
            tx.hold_live(&a, b"old", false, t - 30, t - 10, 3)
                .expect("hold")
        );
        for i in 0..3u8 {
            assert!(tx.hold_live(&a, &[i], i == 0, t, t + 20, 3).expect("hold"));
        }
        assert!(
            !tx.hold_live(&a, b"over", false, t, t + 20, 3)
                .expect("capped")
        );
        assert!(
            tx.hold_live(&b, b"bob's", false, t, t + 20, 3)
                .expect("hold")
        );
        let mut waiting = tx.live_waiting(&[a, b, [9; 16]], t).expect("waiting");
        waiting.sort_unstable();
        assert_eq!(waiting, [a, b]);
    });
    // Taken once, in the order held, without what was past its hold.
    let got = with_tx(&mut s, |tx| tx.take_live(&a, t + 1).expect("take"));
    let got: Vec<(Vec<u8>, bool)> = got
        .into_iter()
        .map(|l| (l.sealed, l.introduction))
        .collect();
    assert_eq!(got, [(vec![0], true), (vec![1], false), (vec![2], false)]);
    with_tx(&mut s, |tx| {
        assert!(tx.take_live(&a, t + 1).expect("again").is_empty());
        assert_eq!(tx.live_waiting(&[a, b], t + 1).expect("waiting"), [b]);
        // Past its hold: not waiting, then forgotten.
        assert!(tx.live_waiting(&[b], t + 21).expect("waiting").is_empty());
        assert_eq!(tx.expire_live(t + 21).expect("expire"), 1);
        assert!(tx.take_live(&b, t).expect("gone").is_empty());
    });
    // Nothing of it was put among stored envelopes.
    with_tx(&mut s, |tx| {
        assert_eq!(tx.envelope_count().expect("count"), 0)
    });
}

#[test]
fn sqlite_online_only_envelopes_are_held_briefly_and_taken_once() {
    on_sqlite(online_only_envelopes_are_held_briefly_and_taken_once);
}

#[test]
fn postgres_online_only_envelopes_are_held_briefly_and_taken_once() {
    on_postgres(
        "live",
        online_only_envelopes_are_held_briefly_and_taken_once,
    );
}

#[test]
fn sqlite_keeps_online_only_envelopes_out_of_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let mut s: Box<dyn Store> = Box::new(SqliteStore::open(&path, LIMITS).expect("open"));
    let marker = b"online-only-marker-7f3a9c";
    with_tx(&mut s, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        assert!(
            tx.hold_live(&[101; 16], marker, false, 10, 30, 8)
                .expect("hold")
        );
    });
    // Not in the file nor its journal while held, and gone with the process.
    for f in ["db.sqlite", "db.sqlite-wal"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "{f}");
    }
    drop(s);
    let mut s: Box<dyn Store> = Box::new(SqliteStore::open(&path, LIMITS).expect("reopen"));
    with_tx(&mut s, |tx| {
        assert!(tx.take_live(&[101; 16], 10).expect("take").is_empty());
    });
}

#[test]
fn an_older_sqlite_file_upgrades_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        umbra_store::sqlite::schema::migrate_to(&conn, 2).expect("version 2");
        conn.execute(
            "INSERT INTO accounts (username, created_day) VALUES ('alice', 1)",
            [],
        )
        .expect("a version 2 row");
    }
    let mut s: Box<dyn Store> = Box::new(SqliteStore::open(&path, LIMITS).expect("upgrade"));
    with_tx(&mut s, |tx| {
        assert!(tx.devices_for_user("alice", &[]).expect("lookup").is_some());
        tx.register(&device("bobby", 2), &list(2), TODAY)
            .expect("register");
        assert_eq!(tx.start_session(&[2; 16]).expect("the new column"), 1);
    });
    let conn = rusqlite::Connection::open(&path).expect("open");
    let v: i64 = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, umbra_store::sqlite::schema::SCHEMA_VERSION);
}

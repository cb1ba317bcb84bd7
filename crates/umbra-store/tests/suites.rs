//! Key packages of several MLS ciphersuites, on both stores: a claim takes
//! for each device the first suite (of those asked for, in order) it has,
//! and takes nothing when one device has none of them;
//! uploads, caps and replacements hold per suite; a package stored before
//! suites existed counts as the classical one.

mod common;

use common::{Open, TODAY, device, list, on_postgres, on_sqlite, with_tx};
use umbra_store::{AccountDevices, LEGACY_SUITE, StoreError, StoreTx};

/// The post-quantum suite's code point (X-Wing), as the clients use it.
const PQ: u16 = 0x004F;

/// The suite and package claimed for each of alice's devices, in device
/// order.
fn claim(tx: &mut dyn StoreTx, suites: &[u16]) -> Result<Vec<(u16, Vec<u8>)>, StoreError> {
    Ok(tx
        .devices_for_user("alice", suites)?
        .expect("user")
        .into_iter()
        .map(|d| (d.suite, d.key_package.expect("claimed")))
        .collect())
}

fn each_device_gives_the_first_suite_it_has(open: Open<'_>) {
    let mut s = open();
    with_tx(&mut s, |tx| {
        tx.register(&device("alice", 1), &list(1), TODAY)
            .expect("register");
        let (one, two) = ([1u8; 16], [2u8; 16]);
        tx.upload_key_packages(
            &one,
            LEGACY_SUITE,
            &[b"c1".to_vec()],
            Some(b"c1-last"),
            false,
        )
        .expect("classical");
        tx.upload_key_packages(&one, PQ, &[b"q1".to_vec()], Some(b"q1-last"), false)
            .expect("pq");
        // One device: the preferred suite it has.
        assert_eq!(
            claim(tx, &[PQ, LEGACY_SUITE]).expect("claim"),
            vec![(PQ, b"q1".to_vec())]
        );
        assert_eq!(
            claim(tx, &[LEGACY_SUITE]).expect("claim"),
            vec![(LEGACY_SUITE, b"c1".to_vec())]
        );
        assert_eq!(tx.key_packages_left(&one, PQ).expect("left"), 0);
        assert_eq!(tx.key_packages_left(&one, LEGACY_SUITE).expect("left"), 0);

        // A second device that knows only the classical suite (an older
        // client): a claim preferring post-quantum takes the first device's
        // post-quantum package and the second's classical one (the client
        // decides what the conversation needs).
        tx.update_devices(
            "alice",
            &AccountDevices {
                version: 2,
                ..list(1)
            },
            Some(&device("alice", 2)),
            &[[1; 32], [2; 32]],
        )
        .expect("link");
        tx.upload_key_packages(&two, LEGACY_SUITE, &[b"c2".to_vec()], None, false)
            .expect("classical");
        tx.upload_key_packages(&one, PQ, &[b"q1b".to_vec()], None, false)
            .expect("pq");
        assert_eq!(
            claim(tx, &[PQ, LEGACY_SUITE]).expect("claim"),
            vec![(PQ, b"q1b".to_vec()), (LEGACY_SUITE, b"c2".to_vec())]
        );
        tx.upload_key_packages(&one, PQ, &[b"q1c".to_vec()], None, false)
            .expect("pq");
        // Post-quantum only: the second device has none, so the claim is
        // refused as a whole and the first device's package stays.
        assert!(matches!(claim(tx, &[PQ]), Err(StoreError::NoKeyPackages)));
        assert_eq!(tx.key_packages_left(&one, PQ).expect("left"), 1);
        // A suite nobody has, and no suite at all asked for.
        assert!(matches!(
            claim(tx, &[0x7777]),
            Err(StoreError::NoKeyPackages)
        ));
        let looked = tx
            .devices_for_user("alice", &[])
            .expect("lookup")
            .expect("user");
        assert!(
            looked
                .iter()
                .all(|d| d.key_package.is_none() && d.suite == 0)
        );

        // Caps and replacement are per suite: replacing the classical
        // packages leaves the post-quantum ones.
        tx.upload_key_packages(
            &one,
            LEGACY_SUITE,
            &[b"c1n".to_vec()],
            Some(b"c1n-last"),
            true,
        )
        .expect("replace");
        assert_eq!(tx.key_packages_left(&one, PQ).expect("left"), 1);
        tx.upload_key_packages(&one, PQ, &[b"x".to_vec(), b"y".to_vec()], None, false)
            .expect("up to the cap of 3 per suite");
        assert!(matches!(
            tx.upload_key_packages(&one, PQ, &[b"z".to_vec()], None, false),
            Err(StoreError::TooManyKeyPackages { max: 3 })
        ));
        tx.upload_key_packages(
            &one,
            LEGACY_SUITE,
            &[b"c".to_vec(), b"d".to_vec()],
            None,
            false,
        )
        .expect("the classical suite has room of its own");
    });
}

#[test]
fn sqlite_each_device_gives_the_first_suite_it_has() {
    on_sqlite(each_device_gives_the_first_suite_it_has);
}

#[test]
fn postgres_each_device_gives_the_first_suite_it_has() {
    on_postgres("suites", each_device_gives_the_first_suite_it_has);
}

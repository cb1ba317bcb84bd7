//! Devices linked to and unlinked from an account, on both stores: the
//! list's version only goes up, and an unlinked device's mailbox goes with it.

mod common;

use common::{Open, TODAY, device, list, on_postgres, on_sqlite, with_tx};
use umbra_store::{AccountDevices, StoreError};

fn devices_linked_and_unlinked(open: Open<'_>) {
    let listed = |version: u64| AccountDevices {
        version,
        list: vec![version as u8; 3],
        ..list(1)
    };
    {
        let mut s = open();
        with_tx(&mut s, |tx| {
            tx.register(&device("alice", 1), &list(1), TODAY)
                .expect("register");
            assert_eq!(tx.account_devices("alice").expect("list"), Some(list(1)));
            let gone = tx
                .update_devices(
                    "alice",
                    &listed(2),
                    Some(&device("alice", 2)),
                    &[[1; 32], [2; 32]],
                )
                .expect("link");
            assert!(gone.is_empty());
            tx.store_envelope(&[102; 16], b"to the new device", false, TODAY)
                .expect("store");
            // The same version again, or an older one: refused, nothing changed.
            for v in [1, 2] {
                assert!(matches!(
                    tx.update_devices("alice", &listed(v), Some(&device("alice", 3)), &[[1; 32]]),
                    Err(StoreError::StaleDeviceList)
                ));
            }
            assert!(matches!(
                tx.update_devices("nobody", &listed(5), None, &[[1; 32]]),
                Err(StoreError::UnknownUser)
            ));
        });
    }
    let mut s = open();
    with_tx(&mut s, |tx| {
        let devs = tx
            .devices_for_user("alice", &[])
            .expect("lookup")
            .expect("user");
        assert_eq!(devs.len(), 2);
        assert_eq!(tx.account_devices("alice").expect("list"), Some(listed(2)));
        assert_eq!(tx.envelope_count().expect("count"), 1);
        let gone = tx
            .update_devices("alice", &listed(3), None, &[[1; 32]])
            .expect("unlink");
        assert_eq!(gone, vec![([2; 16], [102; 16])]);
        // Its mailbox, envelopes and key packages went with it.
        assert!(tx.mailbox(&[102; 16]).expect("mailbox").is_none());
        assert_eq!(tx.envelope_count().expect("count"), 0);
        assert_eq!(
            tx.devices_for_user("alice", &[])
                .expect("lookup")
                .expect("user")
                .len(),
            1
        );
        assert!(matches!(
            tx.store_envelope(&[102; 16], b"late", false, TODAY),
            Err(StoreError::UnknownMailbox)
        ));
    });
}

#[test]
fn sqlite_devices_linked_and_unlinked() {
    on_sqlite(devices_linked_and_unlinked);
}

#[test]
fn postgres_devices_linked_and_unlinked() {
    on_postgres("linked", devices_linked_and_unlinked);
}

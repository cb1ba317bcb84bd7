//! Linking and unlinking devices under the account key, and link slots,
//! against the real server over 127.0.0.1 with SQLite in a tempdir. The
//! attacker here holds no account key: a forged list, a replayed one and a
//! slot aimed at someone's mailbox all fail.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Account, Client, config, device_list, error_code, is_accepted, start};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use umbra_wire::proto::{self, ErrorCode, client_frame::Body as Req, server_frame::Body as Resp};

fn update(
    list: proto::SignedDeviceList,
    new_device: Option<&proto::DeviceKeys>,
    token: &[u8],
) -> Req {
    Req::UpdateDevices(proto::UpdateDevices {
        device_list: Some(list),
        new_device: new_device.cloned(),
        new_device_token_hash: Sha256::digest(token).to_vec(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_linked_and_unlinked_under_the_account_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut c = Client::connect(&srv.invite).await;
    let bob = c.register("bob").await;

    // The list the server serves is the one bob's account key signed.
    let r = c
        .call(Req::FetchDevices(proto::FetchDevices {
            username: "bob".into(),
            claim_key_packages: false,
            ..Default::default()
        }))
        .await;
    let Resp::Devices(d) = r else { panic!("{r:?}") };
    let served = d.device_list.expect("a list");
    let key = bob.account.verifying_key().to_bytes();
    let list = umbra_wire::devices::check_list(&served, "bob", Some(&key)).expect("checks");
    assert_eq!(list.version, 1);
    assert_eq!(list.devices, vec![bob.device.clone()]);

    let laptop_key = SigningKey::from_bytes(&[42; 32]);
    let laptop = proto::DeviceKeys {
        identity_key: laptop_key.verifying_key().to_bytes().to_vec(),
        sealing_key: vec![43; 32],
    };
    let both = vec![bob.device.clone(), laptop.clone()];
    let token = b"laptop token".to_vec();

    // Someone without the account key cannot add a device to it.
    let mallory = SigningKey::from_bytes(&[66; 32]);
    let forged = device_list(&mallory, "bob", 2, both.clone());
    let r = c.call(update(forged, Some(&laptop), &token)).await;
    assert_eq!(error_code(&r), Some(ErrorCode::BadSignature));
    // Nor slip a device in beside a list that does not name it.
    let r = c
        .call(update(
            device_list(&bob.account, "bob", 2, vec![bob.device.clone()]),
            Some(&laptop),
            &token,
        ))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidArgument));
    // An old version is refused.
    let r = c
        .call(update(
            device_list(&bob.account, "bob", 1, both.clone()),
            Some(&laptop),
            &token,
        ))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::StaleDeviceList));

    // Linked.
    let link = update(
        device_list(&bob.account, "bob", 2, both.clone()),
        Some(&laptop),
        &token,
    );
    let r = c.call(link.clone()).await;
    let Resp::DevicesUpdated(u) = r else {
        panic!("{r:?}")
    };
    assert_eq!(u.device_id.len(), 16);
    assert_eq!(u.unlinked, 0);
    let laptop_account = Account {
        username: "bob".into(),
        key: laptop_key,
        account: bob.account.clone(),
        device: laptop.clone(),
        device_id: u.device_id.clone(),
        mailbox_id: u.mailbox_id.clone(),
        token: token.clone(),
    };
    // A captured link replayed adds nothing.
    let r = c.call(link).await;
    assert_eq!(error_code(&r), Some(ErrorCode::StaleDeviceList));
    let r = c
        .call(Req::FetchDevices(proto::FetchDevices {
            username: "bob".into(),
            claim_key_packages: false,
            ..Default::default()
        }))
        .await;
    let Resp::Devices(d) = r else { panic!("{r:?}") };
    assert_eq!(d.devices.len(), 2);

    // The laptop logs in and gets what is sent to it.
    let mut lap = Client::connect(&srv.invite).await;
    let (li, _) = lap.login(&laptop_account).await;
    assert_eq!(li.mailbox_id, laptop_account.mailbox_id);
    let mut sender = Client::connect(&srv.invite).await;
    let r = sender
        .send_envelope(&laptop_account.mailbox_id, &token, b"for the laptop")
        .await;
    assert!(is_accepted(&r), "{r:?}");

    // Unlinked: its connection is closed, its mailbox is gone, it can no
    // longer log in.
    let r = c
        .call(update(
            device_list(&bob.account, "bob", 3, vec![bob.device.clone()]),
            None,
            &[],
        ))
        .await;
    let Resp::DevicesUpdated(u) = r else {
        panic!("{r:?}")
    };
    assert_eq!(u.unlinked, 1);
    assert!(u.device_id.is_empty());
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match lap.recv().await {
                None => break,
                Some(f) => {
                    // What was in flight may still arrive; then the end.
                    assert!(matches!(f.body, Some(Resp::Deliver(_))), "{f:?}");
                }
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the unlinked device's connection stays open"
    );
    let r = sender
        .send_envelope(&laptop_account.mailbox_id, &token, b"too late")
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::UnknownMailbox));
    let mut again = Client::connect(&srv.invite).await;
    let r = again
        .call(Req::Login(proto::Login {
            device_id: laptop_account.device_id.clone(),
            signature: again.login_signature(&laptop_account.key),
            signalling: false,
        }))
        .await;
    assert_eq!(error_code(&r), Some(ErrorCode::UnknownDevice));
    srv.stop().await;
}

fn put(slot: &[u8], data: &[u8]) -> Req {
    Req::PutLinkSlot(proto::PutLinkSlot {
        slot: slot.to_vec(),
        data: data.to_vec(),
    })
}

fn take(slot: &[u8]) -> Req {
    Req::TakeLinkSlot(proto::TakeLinkSlot {
        slot: slot.to_vec(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_slots_hold_one_message_for_whoever_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut a = Client::connect(&srv.invite).await;
    let mut b = Client::connect(&srv.invite).await;
    let slot = [5u8; 16];
    let r = a.call(put(&slot, b"hello from the new device")).await;
    assert!(matches!(r, Resp::LinkSlot(_)), "{r:?}");
    // One message at a time.
    let r = a.call(put(&slot, b"another")).await;
    assert_eq!(error_code(&r), Some(ErrorCode::Busy));
    let r = b.call(take(&slot)).await;
    let Resp::LinkSlot(got) = r else {
        panic!("{r:?}")
    };
    assert_eq!(got.data, b"hello from the new device");
    // Taken once.
    let r = b.call(take(&slot)).await;
    let Resp::LinkSlot(got) = r else {
        panic!("{r:?}")
    };
    assert!(got.data.is_empty());
    // Bad shapes.
    let r = a.call(put(&[1; 15], b"x")).await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidArgument));
    let r = a.call(put(&slot, &vec![0; 64 * 1024 + 1])).await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidArgument));
    let r = a.call(put(&slot, &[])).await;
    assert_eq!(error_code(&r), Some(ErrorCode::InvalidArgument));

    // A slot named after someone's mailbox reads nothing of theirs.
    let mut c = Client::connect(&srv.invite).await;
    let carol = c.register("carol").await;
    drop(c);
    let r = a
        .call(Req::Send(proto::SendEnvelope {
            mailbox_id: carol.mailbox_id.clone(),
            delivery_token: carol.token.clone(),
            sealed: b"a call for carol".to_vec(),
            online_only: true,
        }))
        .await;
    assert!(is_accepted(&r), "{r:?}");
    let r = b.call(take(&carol.mailbox_id)).await;
    let Resp::LinkSlot(got) = r else {
        panic!("{r:?}")
    };
    assert!(got.data.is_empty());
    srv.stop().await;
}

//! An account's devices: the first device list a registration brings,
//! linking and unlinking devices under the account key (`UpdateDevices`),
//! and the link slots where a device being linked and the device linking it
//! meet (`PutLinkSlot` / `TakeLinkSlot`).
//!
//! The account key's signature is the authority over the list, so these
//! requests need no login; an older list (or the same version again) is
//! refused, so a captured request cannot be replayed to bring back an
//! unlinked device. Link slots are kept in the store's table of online-only
//! envelopes (memory on SQLite, an unlogged table on PostgreSQL, so any node
//! finds them), under a hash of the slot a client names: no slot can be
//! made to name a device's mailbox, whose online-only envelopes share the
//! table.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message;
use rand::RngCore;
use sha2::{Digest, Sha256};
use umbra_store::{AccountDevices, NewDevice};
use umbra_wire::devices::{DeviceError, check_list, lists};
use umbra_wire::proto::{
    self, DeviceKeys, DeviceList, SignedDeviceList, server_frame::Body as Resp,
};

use crate::connection::Conn;
use crate::error::RequestError;
use crate::storage::{Command, Refused};

/// How long a link slot keeps what was put in it.
pub const SLOT_HOLD: Duration = Duration::from_secs(600);
/// The most a link slot holds.
pub const SLOT_MAX_BYTES: usize = 64 * 1024;
/// Link slots filled per minute on one node, at most (each holds up to
/// [`SLOT_MAX_BYTES`] for [`SLOT_HOLD`]: this bounds the memory they take).
const SLOTS_PER_MINUTE: u32 = 600;

/// Counts the link slots filled on this node in the current minute.
#[derive(Default)]
pub struct SlotBudget {
    window: Mutex<Option<(Instant, u32)>>,
}

impl SlotBudget {
    /// Takes one slot from this minute's budget at `now`.
    pub fn take(&self, now: Instant) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        match &mut *w {
            Some((start, n)) if now.duration_since(*start) < Duration::from_secs(60) => {
                if *n >= SLOTS_PER_MINUTE {
                    return false;
                }
                *n += 1;
            }
            other => *other = Some((now, 1)),
        }
        true
    }
}

fn list_error(e: DeviceError) -> RequestError {
    match e {
        DeviceError::BadSignature | DeviceError::OtherAccountKey => RequestError::BadSignature,
        DeviceError::TooMany => RequestError::TooManyDevices,
        _ => RequestError::InvalidArgument("malformed device list"),
    }
}

fn refused(r: Refused) -> RequestError {
    match r {
        Refused::StaleDeviceList => RequestError::StaleDeviceList,
        Refused::UnknownUser => RequestError::UnknownUser,
        _ => RequestError::Internal,
    }
}

/// The stored form of a checked list.
fn stored(list: &DeviceList, signed: &SignedDeviceList) -> Result<AccountDevices, RequestError> {
    Ok(AccountDevices {
        account_key: list
            .account_key
            .as_slice()
            .try_into()
            .map_err(|_| RequestError::InvalidArgument("account key must be 32 bytes"))?,
        version: list.version,
        list: signed.encode_to_vec(),
    })
}

/// A registration's first list: version 1, naming the registering device
/// alone, signed by the account key it names.
pub fn first_list(
    signed: Option<&SignedDeviceList>,
    username: &str,
    device: &DeviceKeys,
) -> Result<AccountDevices, RequestError> {
    let signed = signed.ok_or(RequestError::InvalidArgument(
        "device list missing (this client is older than the server)",
    ))?;
    let list = check_list(signed, username, None).map_err(list_error)?;
    if list.version != 1 || list.devices.len() != 1 || list.devices[0] != *device {
        return Err(RequestError::InvalidArgument(
            "a first device list names the registering device alone, at version 1",
        ));
    }
    stored(&list, signed)
}

/// Where a link slot's content is kept: not the slot a client names, so
/// that no client can name a device's mailbox.
fn slot_key(slot: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"umbra-link-slot-v1");
    h.update(slot);
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

impl Conn {
    /// Links and unlinks devices under a list signed by the account key.
    pub(crate) async fn update_devices(
        &mut self,
        u: proto::UpdateDevices,
    ) -> Result<Resp, RequestError> {
        let signed = u
            .device_list
            .ok_or(RequestError::InvalidArgument("device list missing"))?;
        // Which account: the list says; its stored key decides.
        let claimed = DeviceList::decode(signed.list.as_slice())
            .map_err(|_| RequestError::InvalidArgument("malformed device list"))?;
        let username = claimed.username;
        let known = self
            .ctx
            .storage
            .call(|reply| Command::AccountDevices {
                username: username.clone(),
                reply,
            })
            .await
            .map_err(refused)?
            .ok_or(RequestError::UnknownUser)?;
        let list = check_list(&signed, &username, Some(&known.account_key)).map_err(list_error)?;
        if list.version <= known.version {
            return Err(RequestError::StaleDeviceList);
        }
        let new_device = match u.new_device {
            None => None,
            Some(keys) => {
                let identity_key: [u8; 32] =
                    keys.identity_key.as_slice().try_into().map_err(|_| {
                        RequestError::InvalidArgument("identity key must be 32 bytes")
                    })?;
                let sealing_key: [u8; 32] =
                    keys.sealing_key.as_slice().try_into().map_err(|_| {
                        RequestError::InvalidArgument("sealing key must be 32 bytes")
                    })?;
                if !lists(&list, &identity_key, &sealing_key) {
                    return Err(RequestError::InvalidArgument(
                        "the device list does not name the device being linked",
                    ));
                }
                let token_hash: [u8; 32] =
                    u.new_device_token_hash.as_slice().try_into().map_err(|_| {
                        RequestError::InvalidArgument("delivery token hash must be 32 bytes")
                    })?;
                let mut device_id = [0u8; 16];
                let mut mailbox_id = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut device_id);
                rand::thread_rng().fill_bytes(&mut mailbox_id);
                Some(NewDevice {
                    username: username.clone(),
                    device_id,
                    mailbox_id,
                    identity_key,
                    sealing_key,
                    delivery_token_hash: token_hash,
                })
            }
        };
        let keep: Vec<[u8; 32]> = list
            .devices
            .iter()
            .filter_map(|d| d.identity_key.as_slice().try_into().ok())
            .collect();
        let devices = stored(&list, &signed)?;
        let ids = new_device.as_ref().map(|d| (d.device_id, d.mailbox_id));
        let gone = self
            .ctx
            .storage
            .call(|reply| Command::UpdateDevices {
                username,
                devices,
                new_device,
                keep,
                reply,
            })
            .await
            .map_err(refused)?;
        let (device_id, mailbox_id) = ids
            .map(|(d, m)| (d.to_vec(), m.to_vec()))
            .unwrap_or_default();
        Ok(Resp::DevicesUpdated(proto::DevicesUpdated {
            device_id,
            mailbox_id,
            unlinked: u32::try_from(gone.len()).unwrap_or(u32::MAX),
        }))
    }

    /// Leaves data in a link slot.
    pub(crate) async fn put_link_slot(
        &mut self,
        p: proto::PutLinkSlot,
    ) -> Result<Resp, RequestError> {
        if p.slot.len() != 16 {
            return Err(RequestError::InvalidArgument("slot must be 16 bytes"));
        }
        if p.data.is_empty() || p.data.len() > SLOT_MAX_BYTES {
            return Err(RequestError::InvalidArgument(
                "link slot data must be 1 byte to 64 KiB",
            ));
        }
        if !self.ctx.shared.slots.take(Instant::now()) {
            return Err(RequestError::Busy("too many devices being linked"));
        }
        let key = slot_key(&p.slot);
        let held = self
            .ctx
            .storage
            .call(|reply| Command::PutSlot {
                key,
                data: p.data,
                reply,
            })
            .await
            .map_err(refused)?;
        if !held {
            return Err(RequestError::Busy("the link slot is taken"));
        }
        Ok(Resp::LinkSlot(proto::LinkSlot { data: Vec::new() }))
    }

    /// Takes what waits in a link slot.
    pub(crate) async fn take_link_slot(
        &mut self,
        t: proto::TakeLinkSlot,
    ) -> Result<Resp, RequestError> {
        if t.slot.len() != 16 {
            return Err(RequestError::InvalidArgument("slot must be 16 bytes"));
        }
        let key = slot_key(&t.slot);
        let data = self
            .ctx
            .storage
            .call(|reply| Command::TakeSlot { key, reply })
            .await
            .map_err(refused)?;
        Ok(Resp::LinkSlot(proto::LinkSlot {
            data: data.unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_budget_refills_each_minute() {
        let b = SlotBudget::default();
        let t = Instant::now();
        for _ in 0..SLOTS_PER_MINUTE {
            assert!(b.take(t));
        }
        assert!(!b.take(t + Duration::from_secs(59)));
        assert!(b.take(t + Duration::from_secs(61)));
    }

    /// A stranger who knows someone's mailbox id (every contact does) names
    /// it as a slot, hoping to take the online-only envelopes (call
    /// signals) held for that mailbox in the same table, as they are with
    /// several nodes. Without the hash the take would hand them over.
    #[test]
    fn a_slot_named_after_a_mailbox_takes_nothing_held_for_it() {
        use umbra_store::{Limits, SqliteStore, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(&dir.path().join("db"), Limits::default()).expect("open");
        let mailbox = [7u8; 16];
        let mut tx = store.begin().expect("begin");
        assert!(
            tx.hold_live(&mailbox, b"an offer for carol", false, 100, 120, 8)
                .expect("hold")
        );
        assert!(
            tx.take_live(&slot_key(&mailbox), 101)
                .expect("take")
                .is_empty()
        );
        // What the hash stands between: the same take under the mailbox id.
        assert_eq!(tx.take_live(&mailbox, 101).expect("take").len(), 1);
    }
}

//! [`SqliteTx`]: one SQLite transaction implementing [`StoreTx`].

use std::collections::HashMap;

use rusqlite::Transaction;

use super::{accounts, business, envelopes, epochs, key_packages, live};
use crate::model::{
    AccountDevices, DeviceId, DeviceRecord, EpochClaim, Limits, LiveEnvelope, MailboxEntry,
    MailboxId, NewDevice, StoredCard, StoredEnvelope, UserDevice,
};
use crate::traits::StoreTx;
use crate::{Day, StoreError};

/// A write transaction on the SQLite store.
pub struct SqliteTx<'a> {
    tx: Transaction<'a>,
    limits: Limits,
    /// Envelope counts of mailboxes touched in this transaction (`None`:
    /// the mailbox does not exist), so a batch counts each mailbox once.
    counts: HashMap<MailboxId, Option<u64>>,
}

impl<'a> SqliteTx<'a> {
    pub(crate) fn new(tx: Transaction<'a>, limits: Limits) -> Self {
        Self {
            tx,
            limits,
            counts: HashMap::new(),
        }
    }

    fn mailbox_count(&mut self, mailbox: &MailboxId) -> Result<Option<u64>, StoreError> {
        if let Some(c) = self.counts.get(mailbox) {
            return Ok(*c);
        }
        let c = match accounts::mailbox(&self.tx, mailbox)? {
            Some(_) => Some(envelopes::count_in(&self.tx, mailbox)?),
            None => None,
        };
        self.counts.insert(*mailbox, c);
        Ok(c)
    }
}

impl StoreTx for SqliteTx<'_> {
    fn lock_mailboxes(
        &mut self,
        mailboxes: &[MailboxId],
        _devices: &[DeviceId],
    ) -> Result<Vec<(MailboxId, u64)>, StoreError> {
        // One writer: the transaction already excludes every other.
        accounts::sessions(&self.tx, mailboxes)
    }

    fn start_session(&mut self, device_id: &DeviceId) -> Result<u64, StoreError> {
        accounts::start_session(&self.tx, device_id)
    }

    fn session_is_current(
        &mut self,
        mailbox_id: &MailboxId,
        session: u64,
    ) -> Result<bool, StoreError> {
        Ok(accounts::sessions(&self.tx, &[*mailbox_id])?
            .first()
            .is_some_and(|(_, s)| *s == session))
    }

    fn take_introduction(
        &mut self,
        mailbox_id: &MailboxId,
        per_hour: u32,
        now_secs: u64,
    ) -> Result<bool, StoreError> {
        accounts::take_introduction(&self.tx, mailbox_id, per_hour, now_secs)
    }

    fn newest_envelopes(
        &mut self,
        mailboxes: &[MailboxId],
    ) -> Result<Vec<(MailboxId, u64)>, StoreError> {
        envelopes::newest(&self.tx, mailboxes)
    }

    fn hold_live(
        &mut self,
        mailbox_id: &MailboxId,
        sealed: &[u8],
        introduction: bool,
        now_secs: u64,
        until_secs: u64,
        cap: u32,
    ) -> Result<bool, StoreError> {
        live::hold(
            &self.tx,
            mailbox_id,
            sealed,
            introduction,
            now_secs,
            until_secs,
            cap,
        )
    }

    fn take_live(
        &mut self,
        mailbox_id: &MailboxId,
        now_secs: u64,
    ) -> Result<Vec<LiveEnvelope>, StoreError> {
        live::take(&self.tx, mailbox_id, now_secs)
    }

    fn live_waiting(
        &mut self,
        mailboxes: &[MailboxId],
        now_secs: u64,
    ) -> Result<Vec<MailboxId>, StoreError> {
        live::waiting(&self.tx, mailboxes, now_secs)
    }

    fn expire_live(&mut self, now_secs: u64) -> Result<u64, StoreError> {
        live::expire(&self.tx, now_secs)
    }

    fn set_business_card(
        &mut self,
        username: &str,
        card: &[u8],
        keep_verified: bool,
    ) -> Result<(), StoreError> {
        business::set_card(&self.tx, username, card, keep_verified)
    }

    fn business_card(&mut self, username: &str) -> Result<Option<StoredCard>, StoreError> {
        business::card(&self.tx, username)
    }

    fn set_business_verification(
        &mut self,
        username: &str,
        verification: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        business::set_verification(&self.tx, username, verification)
    }

    fn business_cards(&mut self) -> Result<Vec<StoredCard>, StoreError> {
        business::all(&self.tx)
    }

    fn register(
        &mut self,
        device: &NewDevice,
        devices: &AccountDevices,
        today: Day,
    ) -> Result<(), StoreError> {
        accounts::register(&mut self.tx, device, devices, today)
    }

    fn account_devices(&mut self, username: &str) -> Result<Option<AccountDevices>, StoreError> {
        accounts::account_devices(&self.tx, username)
    }

    fn update_devices(
        &mut self,
        username: &str,
        devices: &AccountDevices,
        new_device: Option<&NewDevice>,
        keep: &[[u8; 32]],
    ) -> Result<Vec<(DeviceId, MailboxId)>, StoreError> {
        let gone = accounts::update_devices(&mut self.tx, username, devices, new_device, keep)?;
        for (_, mailbox) in &gone {
            self.counts.insert(*mailbox, None);
        }
        Ok(gone)
    }

    fn device(&mut self, device_id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        accounts::device(&self.tx, device_id)
    }

    fn devices_for_user(
        &mut self,
        username: &str,
        claim: &[u16],
    ) -> Result<Option<Vec<UserDevice>>, StoreError> {
        let sp = self.tx.savepoint()?;
        let Some(devices) = accounts::devices_of(&sp, username)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            if claim.is_empty() {
                out.push(UserDevice::unclaimed(device));
                continue;
            }
            let mut taken = None;
            for &suite in claim {
                if let Some((p, lr)) = key_packages::claim(&sp, &device.device_id, suite)? {
                    taken = Some(UserDevice::claimed(device.clone(), p, lr, suite));
                    break;
                }
            }
            // Dropping the savepoint gives back the packages taken so far.
            out.push(taken.ok_or(StoreError::NoKeyPackages)?);
        }
        sp.commit()?;
        Ok(Some(out))
    }

    fn mailbox(&mut self, mailbox_id: &MailboxId) -> Result<Option<MailboxEntry>, StoreError> {
        accounts::mailbox(&self.tx, mailbox_id)
    }

    fn all_mailboxes(&mut self) -> Result<Vec<MailboxEntry>, StoreError> {
        accounts::all_mailboxes(&self.tx)
    }

    fn set_delivery_token_hash(
        &mut self,
        device_id: &DeviceId,
        hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        accounts::set_token_hash(&self.tx, device_id, hash)
    }

    fn upload_key_packages(
        &mut self,
        device_id: &DeviceId,
        suite: u16,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        replace: bool,
    ) -> Result<u32, StoreError> {
        let cap = self.limits.key_package_cap;
        key_packages::upload(
            &mut self.tx,
            device_id,
            suite,
            packages,
            last_resort,
            replace,
            cap,
        )
    }

    fn key_packages_left(&mut self, device_id: &DeviceId, suite: u16) -> Result<u32, StoreError> {
        key_packages::left(&self.tx, device_id, suite)
    }

    fn store_envelope(
        &mut self,
        mailbox_id: &MailboxId,
        sealed: &[u8],
        introduction: bool,
        today: Day,
    ) -> Result<u64, StoreError> {
        let Some(count) = self.mailbox_count(mailbox_id)? else {
            return Err(StoreError::UnknownMailbox);
        };
        if count >= self.limits.mailbox_cap {
            return Err(StoreError::MailboxFull);
        }
        let id = envelopes::insert(&self.tx, mailbox_id, sealed, introduction, today)?;
        self.counts.insert(*mailbox_id, Some(count + 1));
        Ok(id)
    }

    fn fetch_envelopes(
        &mut self,
        mailbox_id: &MailboxId,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        envelopes::fetch(&self.tx, mailbox_id, after, limit, max_bytes)
    }

    fn delete_envelopes(&mut self, mailbox_id: &MailboxId, ids: &[u64]) -> Result<u32, StoreError> {
        self.counts.remove(mailbox_id);
        envelopes::delete(&self.tx, mailbox_id, ids)
    }

    fn expire_envelopes(&mut self, today: Day, max_age_days: u32) -> Result<u64, StoreError> {
        self.counts.clear();
        envelopes::expire(&self.tx, today, max_age_days)
    }

    fn envelope_count(&mut self) -> Result<u64, StoreError> {
        envelopes::total(&self.tx)
    }

    fn claim_epoch(
        &mut self,
        tag: &[u8; 32],
        commit: &[u8],
        today: Day,
    ) -> Result<EpochClaim, StoreError> {
        epochs::claim(&self.tx, tag, commit, today)
    }

    fn epoch_commit(&mut self, tag: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        epochs::get(&self.tx, tag)
    }

    fn expire_epochs(&mut self, today: Day, max_age_days: u32) -> Result<u64, StoreError> {
        epochs::expire(&self.tx, today, max_age_days)
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit()?;
        Ok(())
    }
}

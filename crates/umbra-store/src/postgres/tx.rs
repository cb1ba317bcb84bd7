//! [`PgTx`]: one PostgreSQL transaction implementing [`StoreTx`].
//!
//! A statement that fails in PostgreSQL aborts its whole transaction, so
//! every operation is written not to fail for the outcomes the server
//! expects (a taken name, a full mailbox: `ON CONFLICT DO NOTHING`,
//! conditional updates, then a look at what happened); the few that must
//! undo part of their work (a registration whose device id collides, a claim
//! that finds a device without key packages, an upload over the cap) run in
//! a savepoint. An unexpected database error fails the batch, which the
//! server answers as unavailable.

use postgres::Transaction;
use postgres::types::ToSql;

use super::Statements;
use crate::model::{
    AccountDevices, DeviceId, DeviceRecord, EnvelopeAck, EpochClaim, Limits, LiveEnvelope,
    MailboxEntry, MailboxId, NewDevice, NewEnvelope, StoredCard, StoredEnvelope, UserDevice,
};
use crate::traits::StoreTx;
use crate::{Day, StoreError};

/// A write transaction on the PostgreSQL store.
pub struct PgTx<'a> {
    tx: Transaction<'a>,
    st: &'a Statements,
    limits: Limits,
}

fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl<'a> PgTx<'a> {
    /// Inserts a device; 0 when its id or mailbox collides.
    fn insert_device(
        tx: &mut Transaction<'_>,
        st: &Statements,
        d: &NewDevice,
    ) -> Result<u64, StoreError> {
        Ok(tx.execute(
            &st.insert_device,
            &[
                &&d.device_id[..],
                &d.username,
                &&d.identity_key[..],
                &&d.sealing_key[..],
                &&d.mailbox_id[..],
                &&d.delivery_token_hash[..],
            ],
        )?)
    }

    pub(crate) fn new(tx: Transaction<'a>, st: &'a Statements, limits: Limits) -> Self {
        Self { tx, st, limits }
    }
}

fn fixed<const N: usize>(v: Vec<u8>) -> Result<[u8; N], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("a stored id or key has the wrong length"))
}

fn device_row(r: &postgres::Row) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        device_id: fixed(r.get(0))?,
        username: r.get(1),
        identity_key: fixed(r.get(2))?,
        sealing_key: fixed(r.get(3))?,
        mailbox_id: fixed(r.get(4))?,
        delivery_token_hash: fixed(r.get(5))?,
    })
}

fn mailbox_row(r: &postgres::Row) -> Result<MailboxEntry, StoreError> {
    Ok(MailboxEntry {
        mailbox_id: fixed(r.get(0))?,
        device_id: fixed(r.get(1))?,
        delivery_token_hash: fixed(r.get(2))?,
    })
}

fn card_row(r: &postgres::Row) -> StoredCard {
    StoredCard {
        username: r.get(0),
        card: r.get(1),
        verification: r.get(2),
    }
}

fn day(d: Day) -> i32 {
    i32::try_from(d.0).unwrap_or(i32::MAX)
}

fn seq(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Times a batch tries to lock its rows.
const LOCK_ATTEMPTS: usize = 3;

/// A deadlock or serialization failure: the same statement may succeed
/// when tried again.
fn retryable(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
    })
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

impl PgTx<'_> {
    fn exists(
        &mut self,
        stmt: &postgres::Statement,
        key: &(dyn ToSql + Sync),
    ) -> Result<bool, StoreError> {
        Ok(self.tx.query_opt(stmt, &[key])?.is_some())
    }

    fn claim(
        tx: &mut Transaction<'_>,
        st: &Statements,
        device: &DeviceId,
        suite: i32,
    ) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        let id = &device[..];
        if let Some(r) = tx.query_opt(&st.kp_claim, &[&id, &suite])? {
            return Ok(Some((r.get(0), false)));
        }
        Ok(tx
            .query_opt(&st.kp_last_resort, &[&id, &suite])?
            .map(|r| (r.get(0), true)))
    }
}

impl StoreTx for PgTx<'_> {
    fn lock_mailboxes(
        &mut self,
        mailboxes: &[MailboxId],
        devices: &[DeviceId],
    ) -> Result<Vec<(MailboxId, u64)>, StoreError> {
        if mailboxes.is_empty() && devices.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&[u8]> = mailboxes.iter().map(|m| &m[..]).collect();
        let devs: Vec<&[u8]> = devices.iter().map(|d| &d[..]).collect();
        // A deadlock the database broke (against a transaction that locks
        // in another order: a login, an operator's command) is tried again
        // in a savepoint, which undoes only the failed attempt.
        let st = self.st;
        let mut attempt = 1;
        let rows = loop {
            let mut sp = self.tx.savepoint("lock")?;
            match sp.query(&st.lock_mailboxes, &[&ids, &devs]) {
                Ok(rows) => {
                    sp.commit()?;
                    break rows;
                }
                Err(e) if attempt < LOCK_ATTEMPTS && retryable(&e) => {
                    drop(sp);
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        rows.iter()
            .map(|r| Ok((fixed(r.get(0))?, seq(r.get(1)))))
            .collect()
    }

    fn start_session(&mut self, device_id: &DeviceId) -> Result<u64, StoreError> {
        self.tx
            .query_opt(&self.st.start_session, &[&&device_id[..]])?
            .map(|r| seq(r.get(0)))
            .ok_or(StoreError::UnknownDevice)
    }

    fn session_is_current(
        &mut self,
        mailbox_id: &MailboxId,
        session: u64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .tx
            .query_opt(&self.st.session_of, &[&&mailbox_id[..]])?
            .is_some_and(|r| seq(r.get(0)) == session))
    }

    fn take_introduction(
        &mut self,
        mailbox_id: &MailboxId,
        per_hour: u32,
        now_secs: u64,
    ) -> Result<bool, StoreError> {
        let id = &mailbox_id[..];
        let Some(r) = self.tx.query_opt(&self.st.intro_get, &[&id])? else {
            return Err(StoreError::UnknownMailbox);
        };
        let (tokens, at): (Option<f64>, i64) = (r.get(0), r.get(1));
        let (taken, left) = crate::model::take_token(tokens, seq(at), per_hour, now_secs);
        if taken {
            let now = i64::try_from(now_secs).unwrap_or(i64::MAX);
            self.tx.execute(&self.st.intro_set, &[&id, &left, &now])?;
        }
        Ok(taken)
    }

    fn newest_envelopes(
        &mut self,
        mailboxes: &[MailboxId],
    ) -> Result<Vec<(MailboxId, u64)>, StoreError> {
        if mailboxes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&[u8]> = mailboxes.iter().map(|m| &m[..]).collect();
        self.tx
            .query(&self.st.newest, &[&ids])?
            .iter()
            .map(|r| Ok((fixed(r.get(0))?, seq(r.get(1)))))
            .collect()
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
        let n = self.tx.execute(
            &self.st.live_hold,
            &[
                &&mailbox_id[..],
                &sealed,
                &introduction,
                &secs(now_secs),
                &secs(until_secs),
                &i64::from(cap),
            ],
        )?;
        Ok(n == 1)
    }

    fn take_live(
        &mut self,
        mailbox_id: &MailboxId,
        now_secs: u64,
    ) -> Result<Vec<LiveEnvelope>, StoreError> {
        let mut rows: Vec<(i64, Vec<u8>, bool, i64)> = self
            .tx
            .query(&self.st.live_take, &[&&mailbox_id[..]])?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        rows.sort_unstable_by_key(|r| r.0);
        Ok(rows
            .into_iter()
            .filter(|r| r.3 >= secs(now_secs))
            .map(|(_, sealed, introduction, _)| LiveEnvelope {
                sealed,
                introduction,
            })
            .collect())
    }

    fn live_waiting(
        &mut self,
        mailboxes: &[MailboxId],
        now_secs: u64,
    ) -> Result<Vec<MailboxId>, StoreError> {
        if mailboxes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&[u8]> = mailboxes.iter().map(|m| &m[..]).collect();
        self.tx
            .query(&self.st.live_waiting, &[&ids, &secs(now_secs)])?
            .iter()
            .map(|r| fixed(r.get(0)))
            .collect()
    }

    fn expire_live(&mut self, now_secs: u64) -> Result<u64, StoreError> {
        let n = self.tx.execute(&self.st.live_expire, &[&secs(now_secs)])?;
        Ok(n)
    }

    fn register(
        &mut self,
        d: &NewDevice,
        list: &AccountDevices,
        today: Day,
    ) -> Result<(), StoreError> {
        let st = self.st;
        let mut sp = self.tx.savepoint("register")?;
        if sp.execute(
            &st.insert_account,
            &[
                &d.username,
                &day(today),
                &&list.account_key[..],
                &list.list,
                &version(list.version),
            ],
        )? == 0
        {
            return Err(StoreError::UsernameTaken);
        }
        if Self::insert_device(&mut sp, st, d)? == 0 {
            // Dropping the savepoint takes the account back too.
            return Err(StoreError::IdCollision);
        }
        sp.commit()?;
        Ok(())
    }

    fn account_devices(&mut self, username: &str) -> Result<Option<AccountDevices>, StoreError> {
        let Some(row) = self.tx.query_opt(&self.st.account_devices, &[&username])? else {
            return Ok(None);
        };
        let key: Option<Vec<u8>> = row.get(0);
        let list: Option<Vec<u8>> = row.get(1);
        let v: i64 = row.get(2);
        Ok(match (key, list) {
            (Some(key), Some(list)) => Some(AccountDevices {
                account_key: key
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("account key"))?,
                version: u64::try_from(v).unwrap_or(0),
                list,
            }),
            _ => None,
        })
    }

    fn update_devices(
        &mut self,
        username: &str,
        list: &AccountDevices,
        new_device: Option<&NewDevice>,
        keep: &[[u8; 32]],
    ) -> Result<Vec<(DeviceId, MailboxId)>, StoreError> {
        let st = self.st;
        if let Some(d) = new_device
            && d.username != username
        {
            return Err(StoreError::UnknownUser);
        }
        let mut sp = self.tx.savepoint("devices")?;
        let updated = sp.execute(
            &st.set_device_list,
            &[
                &username,
                &&list.account_key[..],
                &list.list,
                &version(list.version),
            ],
        )?;
        if updated == 0 {
            let known = sp.query_opt(&st.account_devices, &[&username])?;
            return Err(match known {
                Some(r) if r.get::<_, Option<Vec<u8>>>(0).is_some() => StoreError::StaleDeviceList,
                _ => StoreError::UnknownUser,
            });
        }
        if let Some(d) = new_device
            && Self::insert_device(&mut sp, st, d)? == 0
        {
            return Err(StoreError::IdCollision);
        }
        let devices = sp
            .query(&st.devices_of, &[&username])?
            .iter()
            .map(device_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut gone = Vec::new();
        for d in devices {
            if !keep.contains(&d.identity_key) {
                sp.execute(&st.delete_device, &[&&d.device_id[..]])?;
                sp.execute(&st.live_drop, &[&&d.mailbox_id[..]])?;
                gone.push((d.device_id, d.mailbox_id));
            }
        }
        sp.commit()?;
        Ok(gone)
    }

    fn device(&mut self, device_id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.tx
            .query_opt(&self.st.device, &[&&device_id[..]])?
            .map(|r| device_row(&r))
            .transpose()
    }

    fn devices_for_user(
        &mut self,
        username: &str,
        claim: &[u16],
    ) -> Result<Option<Vec<UserDevice>>, StoreError> {
        let st = self.st;
        if self
            .tx
            .query_opt(&st.account_exists, &[&username])?
            .is_none()
        {
            return Ok(None);
        }
        let devices = self
            .tx
            .query(&st.devices_of, &[&username])?
            .iter()
            .map(device_row)
            .collect::<Result<Vec<_>, _>>()?;
        if claim.is_empty() {
            return Ok(Some(
                devices.into_iter().map(UserDevice::unclaimed).collect(),
            ));
        }
        let mut sp = self.tx.savepoint("claim")?;
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            let mut taken = None;
            for &suite in claim {
                if let Some((p, lr)) =
                    Self::claim(&mut sp, st, &device.device_id, i32::from(suite))?
                {
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
        self.tx
            .query_opt(&self.st.mailbox, &[&&mailbox_id[..]])?
            .map(|r| mailbox_row(&r))
            .transpose()
    }

    fn all_mailboxes(&mut self) -> Result<Vec<MailboxEntry>, StoreError> {
        self.tx
            .query(&self.st.all_mailboxes, &[])?
            .iter()
            .map(mailbox_row)
            .collect()
    }

    fn set_delivery_token_hash(
        &mut self,
        device_id: &DeviceId,
        hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        let n = self
            .tx
            .execute(&self.st.set_token, &[&&device_id[..], &&hash[..]])?;
        if n == 0 {
            return Err(StoreError::UnknownDevice);
        }
        Ok(())
    }

    fn upload_key_packages(
        &mut self,
        device_id: &DeviceId,
        suite: u16,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        replace: bool,
    ) -> Result<u32, StoreError> {
        let st = self.st;
        let cap = self.limits.key_package_cap;
        let id = &device_id[..];
        let suite = i32::from(suite);
        if !self.exists(&st.device_exists, &id)? {
            return Err(StoreError::UnknownDevice);
        }
        let mut sp = self.tx.savepoint("upload")?;
        if replace {
            sp.execute(&st.kp_delete_all, &[&id, &suite])?;
        }
        let have: i64 = sp.query_one(&st.kp_left, &[&id, &suite])?.get(0);
        let total = u64::try_from(have).unwrap_or(0) + packages.len() as u64;
        if total > u64::from(cap) {
            // Dropping the savepoint undoes the withdrawal too.
            return Err(StoreError::TooManyKeyPackages { max: cap });
        }
        if !packages.is_empty() {
            sp.execute(&st.kp_insert_many, &[&id, &suite, &packages])?;
        }
        if let Some(lr) = last_resort {
            sp.execute(&st.kp_delete_last_resort, &[&id, &suite])?;
            sp.execute(&st.kp_insert_last_resort, &[&id, &suite, &lr])?;
        }
        sp.commit()?;
        Ok(u32::try_from(total).unwrap_or(u32::MAX))
    }

    fn key_packages_left(&mut self, device_id: &DeviceId, suite: u16) -> Result<u32, StoreError> {
        let n: i64 = self
            .tx
            .query_one(&self.st.kp_left, &[&&device_id[..], &i32::from(suite)])?
            .get(0);
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn store_envelope(
        &mut self,
        mailbox_id: &MailboxId,
        sealed: &[u8],
        introduction: bool,
        today: Day,
    ) -> Result<u64, StoreError> {
        let st = self.st;
        let cap = i64::try_from(self.limits.mailbox_cap).unwrap_or(i64::MAX);
        let id = &mailbox_id[..];
        match self.tx.query_opt(
            &st.store_envelope,
            &[&id, &cap, &sealed, &introduction, &day(today)],
        )? {
            Some(r) => Ok(seq(r.get(0))),
            None if self.exists(&st.mailbox_exists, &id)? => Err(StoreError::MailboxFull),
            None => Err(StoreError::UnknownMailbox),
        }
    }

    fn store_envelopes(
        &mut self,
        envelopes: &[NewEnvelope<'_>],
        today: Day,
    ) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        if envelopes.is_empty() {
            return Ok(Vec::new());
        }
        let cap = i64::try_from(self.limits.mailbox_cap).unwrap_or(i64::MAX);
        let ids: Vec<&[u8]> = envelopes.iter().map(|e| &e.mailbox_id[..]).collect();
        let sealed: Vec<&[u8]> = envelopes.iter().map(|e| e.sealed).collect();
        let intro: Vec<bool> = envelopes.iter().map(|e| e.introduction).collect();
        let rows = self.tx.query(
            &self.st.store_envelopes,
            &[&ids, &sealed, &intro, &cap, &day(today)],
        )?;
        if rows.len() != envelopes.len() {
            return Err(StoreError::Corrupt(
                "a batch of envelopes came back a different size",
            ));
        }
        Ok(rows
            .iter()
            .map(
                |r| match (r.get::<_, Option<i64>>(0), r.get::<_, bool>(1)) {
                    (Some(s), _) => Ok(seq(s)),
                    (None, true) => Err(StoreError::MailboxFull),
                    (None, false) => Err(StoreError::UnknownMailbox),
                },
            )
            .collect())
    }

    fn fetch_envelopes(
        &mut self,
        mailbox_id: &MailboxId,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self.tx.query(
            &self.st.fetch,
            &[&&mailbox_id[..], &after, &i64::from(limit)],
        )?;
        crate::model::up_to_bytes(
            rows.iter().map(|r| {
                Ok::<_, StoreError>(StoredEnvelope {
                    id: seq(r.get(0)),
                    sealed: r.get(1),
                    introduction: r.get(2),
                })
            }),
            max_bytes,
        )
    }

    fn delete_envelopes(&mut self, mailbox_id: &MailboxId, ids: &[u64]) -> Result<u32, StoreError> {
        let seqs: Vec<i64> = ids.iter().filter_map(|&i| i64::try_from(i).ok()).collect();
        let n: i64 = self
            .tx
            .query_one(&self.st.delete, &[&&mailbox_id[..], &seqs])?
            .get(0);
        Ok(u32::try_from(n).unwrap_or(0))
    }

    fn acknowledge(
        &mut self,
        acks: &[EnvelopeAck<'_>],
    ) -> Result<Vec<Result<Option<u32>, StoreError>>, StoreError> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let boxes: Vec<&[u8]> = acks.iter().map(|a| &a.mailbox_id[..]).collect();
        let sessions: Vec<i64> = acks
            .iter()
            .map(|a| i64::try_from(a.session).unwrap_or(-1))
            .collect();
        let mut named = Vec::new();
        let mut ids = Vec::new();
        for (n, a) in (1i64..).zip(acks) {
            for &id in a.ids {
                if let Ok(id) = i64::try_from(id) {
                    named.push(n);
                    ids.push(id);
                }
            }
        }
        let rows = self
            .tx
            .query(&self.st.acknowledge, &[&boxes, &sessions, &named, &ids])?;
        if rows.len() != acks.len() {
            return Err(StoreError::Corrupt(
                "a batch of acknowledgements came back a different size",
            ));
        }
        Ok(rows
            .iter()
            .map(|r| {
                let current: bool = r.get(0);
                Ok(current.then(|| u32::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            })
            .collect())
    }

    fn expire_envelopes(&mut self, today: Day, max_age_days: u32) -> Result<u64, StoreError> {
        let cutoff = day(Day(today.0.saturating_sub(max_age_days)));
        let n: i64 = self.tx.query_one(&self.st.expire, &[&cutoff])?.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn envelope_count(&mut self) -> Result<u64, StoreError> {
        let n: i64 = self.tx.query_one(&self.st.total, &[])?.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn claim_epoch(
        &mut self,
        tag: &[u8; 32],
        commit: &[u8],
        today: Day,
    ) -> Result<EpochClaim, StoreError> {
        // A claim of the same tag in progress elsewhere makes this insert
        // wait for it; the read after it sees whichever committed first.
        self.tx
            .execute(&self.st.epoch_claim, &[&&tag[..], &commit, &day(today)])?;
        let holder = self
            .epoch_commit(tag)?
            .ok_or(StoreError::Corrupt("a claimed epoch is missing"))?;
        Ok(EpochClaim::of(commit, holder))
    }

    fn epoch_commit(&mut self, tag: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tx
            .query_opt(&self.st.epoch_get, &[&&tag[..]])?
            .map(|r| r.get(0)))
    }

    fn expire_epochs(&mut self, today: Day, max_age_days: u32) -> Result<u64, StoreError> {
        let cutoff = day(Day(today.0.saturating_sub(max_age_days)));
        let n: i64 = self.tx.query_one(&self.st.epoch_expire, &[&cutoff])?.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn set_business_card(
        &mut self,
        username: &str,
        card: &[u8],
        keep_verified: bool,
    ) -> Result<(), StoreError> {
        let st = self.st;
        if !self.exists(&st.account_exists, &username)? {
            return Err(StoreError::UnknownUser);
        }
        self.tx
            .execute(&st.card_set, &[&username, &card, &keep_verified])?;
        Ok(())
    }

    fn business_card(&mut self, username: &str) -> Result<Option<StoredCard>, StoreError> {
        Ok(self
            .tx
            .query_opt(&self.st.card_get, &[&username])?
            .map(|r| card_row(&r)))
    }

    fn set_business_verification(
        &mut self,
        username: &str,
        verification: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .tx
            .execute(&self.st.card_verify, &[&username, &verification])?
            == 1)
    }

    fn business_cards(&mut self) -> Result<Vec<StoredCard>, StoreError> {
        Ok(self
            .tx
            .query(&self.st.cards_all, &[])?
            .iter()
            .map(card_row)
            .collect())
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit()?;
        Ok(())
    }
}

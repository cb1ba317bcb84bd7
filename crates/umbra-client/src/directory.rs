//! Looking users up on the server: claiming a key package to start a
//! conversation, fetching members' addresses, safety numbers, and the list of
//! contacts this profile knows.

use openmls::prelude::Ciphersuite;
use umbra_crypto::mls::{self, VerifiedKeyPackage};

use crate::ClientError;
use crate::account::validate_username;
use crate::client::{Client, required_group};
use crate::conn::ServerConn;
use crate::contacts::{accept_listing, account_key, check_member, device_address, device_token};
use crate::mls_store::Provider;
use crate::model::Contact;
use crate::outbox::Recipient;

impl Client {
    /// Looks up a user's devices and claims a key package for each, all of
    /// the first of `suites` every device has, checking that the account
    /// key we pinned for them vouches for every device, and that each key
    /// package is that device's. `except` skips one device (our own, when
    /// claiming our other devices). Post-quantum asked for first and
    /// classical handed out for a device whose leaf says it supports
    /// post-quantum is a downgrade and refused.
    pub(crate) async fn claim(
        &mut self,
        server: &mut ServerConn,
        username: &str,
        except: Option<&[u8]>,
        suites: &[Ciphersuite],
    ) -> Result<Vec<(VerifiedKeyPackage, Recipient)>, ClientError> {
        validate_username(username)?;
        let codes: Vec<u16> = suites.iter().map(|s| mls::suite_code(*s)).collect();
        let listing = match server.fetch_devices(username, &codes).await {
            Err(ClientError::Server {
                code: umbra_wire::proto::ErrorCode::NoKeyPackages,
                ..
            }) if suites == [mls::POST_QUANTUM] => {
                return Err(ClientError::NotPostQuantum(username.to_string()));
            }
            r => r?,
        };
        let devices = accept_listing(self.profile.conn(), username, &listing)?;
        let business = listing.business;
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            let keys = device.keys.unwrap_or_default();
            if except == Some(keys.identity_key.as_slice()) {
                continue;
            }
            let kp = mls::verify_key_package(
                &Provider::new(&self.crypto, self.profile.conn()),
                &device.key_package,
            )?;
            if kp.member.username != username || kp.member.identity_key != keys.identity_key {
                return Err(ClientError::Protocol(format!(
                    "the server handed out a key package that does not belong to `{username}`"
                )));
            }
            if !suites.contains(&kp.suite) || u32::from(mls::suite_code(kp.suite)) != device.suite {
                return Err(ClientError::Protocol(format!(
                    "the server handed out a key package of `{username}` of a suite not asked for"
                )));
            }
            // Post-quantum asked for first, and a classical package handed
            // out for a device whose own leaf says it supports post-quantum
            // (so it uploaded such packages first): a downgrade.
            if suites.first() == Some(&mls::POST_QUANTUM)
                && kp.suite != mls::POST_QUANTUM
                && kp.supports_post_quantum
            {
                return Err(ClientError::Downgraded(username.to_string()));
            }
            let certified = check_member(self.profile.conn(), &kp.member)?;
            if certified.sealing_key.as_slice() != keys.sealing_key.as_slice() {
                return Err(ClientError::Unvouched(username.to_string()));
            }
            let token = device_token(self.profile.conn(), username, &keys.identity_key)?;
            out.push((
                kp,
                Recipient {
                    username: username.to_string(),
                    identity_key: keys.identity_key,
                    mailbox_id: device.mailbox_id,
                    sealing_key: certified.sealing_key,
                    delivery_token: token,
                },
            ));
        }
        if out.is_empty() && except.is_none() {
            return Err(ClientError::UnknownUser(username.to_string()));
        }

        if let Some(card) = &business
            && let Err(e) = self.believe_card(username, card)
        {
            // Before the first message the user learns whom they write to;
            // a card that does not check out is not shown (`umbra business
            // show` says why), and the account counts as a person's.
            tracing::warn!(error = %e, "a business card was refused");
        }
        Ok(out)
    }

    /// Claims a key package for each device of each of `members`, and of
    /// our own other devices, over one connection, for a new conversation:
    /// post-quantum ones when every device has them and the group is small
    /// enough ([`mls::POST_QUANTUM_MAX_DEVICES`]), else classical ones.
    /// Returns them with the suite the conversation must be made with.
    pub(crate) async fn claim_new(
        &mut self,
        members: &[&str],
    ) -> Result<(Vec<(VerifiedKeyPackage, Recipient)>, Ciphersuite), ClientError> {
        let preferred: &[Ciphersuite] = if members.len() < mls::POST_QUANTUM_MAX_DEVICES {
            &[mls::POST_QUANTUM, mls::CLASSICAL]
        } else {
            &[mls::CLASSICAL]
        };
        let mut per_user = self.claim_all(members, preferred).await?;
        let devices = per_user.iter().map(|(_, c)| c.len()).sum::<usize>() + 1;
        let post_quantum = devices <= mls::POST_QUANTUM_MAX_DEVICES
            && per_user
                .iter()
                .flat_map(|(_, c)| c)
                .all(|(kp, _)| kp.suite == mls::POST_QUANTUM);
        if post_quantum {
            return Ok((
                per_user.into_iter().flat_map(|(_, c)| c).collect(),
                mls::POST_QUANTUM,
            ));
        }
        // Someone's device knows only the classical suite, or the group is
        // too large for post-quantum sizes: the users whose post-quantum
        // packages were taken are claimed again for classical ones (the
        // taken ones are spent; their devices upload more).
        let again: Vec<String> = per_user
            .iter()
            .filter(|(_, c)| c.iter().any(|(kp, _)| kp.suite != mls::CLASSICAL))
            .map(|(u, _)| u.clone())
            .collect();
        if !again.is_empty() {
            let names: Vec<&str> = again.iter().map(String::as_str).collect();
            let fresh = self.claim_all_of(&names, &[mls::CLASSICAL]).await?;
            for (user, claimed) in fresh {
                if let Some(slot) = per_user.iter_mut().find(|(u, _)| *u == user) {
                    slot.1 = claimed;
                }
            }
        }
        Ok((
            per_user.into_iter().flat_map(|(_, c)| c).collect(),
            mls::CLASSICAL,
        ))
    }

    /// Claims packages of one of `suites` for each device of each of
    /// `members` and of our own other devices, per user.
    pub(crate) async fn claim_all(
        &mut self,
        members: &[&str],
        suites: &[Ciphersuite],
    ) -> Result<Vec<(String, Vec<(VerifiedKeyPackage, Recipient)>)>, ClientError> {
        for m in members {
            if *m == self.username() {
                return Err(ClientError::Invalid(
                    "you cannot start a conversation with yourself".into(),
                ));
            }
        }
        let mut names: Vec<&str> = members.to_vec();
        let me = self.username().to_string();
        if crate::linking::own_device_count(self.profile.conn())? > 1 {
            names.push(&me);
        }
        self.claim_all_of(&names, suites).await
    }

    /// Claims packages of one of `suites` for each device of each of
    /// `users` (our own name: our other devices), over one connection.
    pub(crate) async fn claim_all_of(
        &mut self,
        users: &[&str],
        suites: &[Ciphersuite],
    ) -> Result<Vec<(String, Vec<(VerifiedKeyPackage, Recipient)>)>, ClientError> {
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let own = self.identity.identity_key();
        let mut claimed = Vec::with_capacity(users.len());
        for u in users {
            let except = (*u == self.username()).then_some(own.as_slice());
            claimed.push((
                u.to_string(),
                self.claim(&mut server, u, except, suites).await?,
            ));
        }
        server.close().await;
        Ok(claimed)
    }

    /// Fetches (anonymously) the addresses of group members' devices we
    /// have none for, from their accounts' signed device lists.
    pub(crate) async fn ensure_addresses(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        let own = self.identity.identity_key();
        let missing: Vec<String> = {
            let provider = Provider::new(&self.crypto, self.profile.conn());
            let group = required_group(&provider, group_id)?;
            let mut users: Vec<String> = Vec::new();
            for m in mls::members(&group) {
                if m.identity_key == own || users.contains(&m.username) {
                    continue;
                }
                if device_address(self.profile.conn(), &m.username, &m.identity_key)?.is_none() {
                    users.push(m.username);
                }
            }
            users
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        for username in missing {
            let listing = server.fetch_devices(&username, &[]).await?;
            accept_listing(self.profile.conn(), &username, &listing)?;
        }
        server.close().await;
        Ok(())
    }

    /// Everyone we have talked to.
    pub fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        let mut stmt = self.profile.conn().prepare(
            "SELECT username, identity_key, verified,
                 EXISTS (SELECT 1 FROM contact_devices d
                         WHERE d.username = contacts.username AND d.delivery_token IS NOT NULL)
             FROM contacts ORDER BY username",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Contact {
                username: r.get(0)?,
                identity_key: hex::encode(r.get::<_, Vec<u8>>(1)?),
                verified: r.get(2)?,
                has_token: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The safety number with `username` (over both accounts' keys, which
    /// vouch for every device of each); marks them verified when asked.
    pub async fn verify(
        &mut self,
        username: &str,
        mark_verified: bool,
    ) -> Result<String, ClientError> {
        let mut key = account_key(self.profile.conn(), username)?;
        if key.is_none() {
            validate_username(username)?;
            let mut server = ServerConn::open(&self.invite, &self.route()).await?;
            let listing = server.fetch_devices(username, &[]).await?;
            server.close().await;
            accept_listing(self.profile.conn(), username, &listing)?;
            key = account_key(self.profile.conn(), username)?;
        }
        let key = key.ok_or_else(|| ClientError::UnknownUser(username.to_string()))?;
        let own = account_key(self.profile.conn(), self.username())?.unwrap_or_default();
        if mark_verified {
            self.profile.conn().execute(
                "UPDATE contacts SET verified = 1 WHERE username = ?1",
                [username],
            )?;
        }
        Ok(umbra_crypto::safety::safety_number(
            self.username(),
            &own,
            username,
            &key,
        ))
    }
}

#[cfg(test)]
mod tests {
    use umbra_crypto::mls;
    use umbra_wire::suites;

    #[test]
    fn the_wire_names_the_suites_openmls_uses() {
        assert_eq!(mls::suite_code(mls::CLASSICAL), suites::CLASSICAL);
        assert_eq!(mls::suite_code(mls::POST_QUANTUM), suites::POST_QUANTUM);
        let ours: Vec<u16> = mls::SUITES.iter().map(|s| mls::suite_code(*s)).collect();
        assert!(suites::ALL.iter().all(|s| ours.contains(s)));
    }
}

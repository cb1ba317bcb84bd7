//! Looking users up on the server: claiming a key package to start a
//! conversation, fetching members' addresses, safety numbers, and the list of
//! contacts this profile knows.

use rusqlite::{OptionalExtension, params};
use umbra_crypto::mls::{self, VerifiedKeyPackage};

use crate::ClientError;
use crate::account::validate_username;
use crate::client::{Client, required_group};
use crate::conn::ServerConn;
use crate::contacts::{check_identity, contact_address, contact_token};
use crate::mls_store::Provider;
use crate::model::Contact;
use crate::outbox::Recipient;

impl Client {
    /// Looks up a user's device and claims a key package, checking that the
    /// key package is theirs and matches the key we pinned for them.
    async fn claim(
        &mut self,
        server: &mut ServerConn,
        username: &str,
    ) -> Result<(VerifiedKeyPackage, Recipient), ClientError> {
        validate_username(username)?;
        if username == self.username() {
            return Err(ClientError::Invalid(
                "you cannot start a conversation with yourself".into(),
            ));
        }
        let devices = server.fetch_devices(username, true).await?;
        let business = devices.business;
        let device = devices
            .devices
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::UnknownUser(username.to_string()))?;
        let keys = device.keys.unwrap_or_default();
        let kp = mls::verify_key_package(
            &Provider::new(&self.crypto, self.profile.conn()),
            &device.key_package,
        )?;
        if kp.member.username != username || kp.member.identity_key != keys.identity_key {
            return Err(ClientError::Protocol(format!(
                "the server handed out a key package that does not belong to `{username}`"
            )));
        }
        check_identity(self.profile.conn(), username, &keys.identity_key)?;
        if let Some(card) = &business
            && let Err(e) = self.believe_card(username, &keys.identity_key, card)
        {
            // Before the first message the user learns whom they write to;
            // a card that does not check out is not shown (`umbra business
            // show` says why), and the account counts as a person's.
            tracing::warn!(error = %e, "a business card was refused");
        }
        let sealing_key: [u8; 32] = keys
            .sealing_key
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Protocol("bad sealing key".into()))?;
        let token = contact_token(self.profile.conn(), username)?;
        Ok((
            kp,
            Recipient {
                username: username.to_string(),
                mailbox_id: device.mailbox_id,
                sealing_key,
                delivery_token: token,
            },
        ))
    }

    /// Claims a key package for each of `members`, over one connection.
    pub(crate) async fn claim_all(
        &mut self,
        members: &[&str],
    ) -> Result<Vec<(VerifiedKeyPackage, Recipient)>, ClientError> {
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let mut claimed = Vec::with_capacity(members.len());
        for m in members {
            claimed.push(self.claim(&mut server, m).await?);
        }
        server.close().await;
        Ok(claimed)
    }

    /// Fetches (anonymously) the address of group members we have none for,
    /// checking each against the identity key MLS has for them.
    pub(crate) async fn ensure_addresses(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
        let missing: Vec<mls::Member> = {
            let provider = Provider::new(&self.crypto, self.profile.conn());
            let group = required_group(&provider, group_id)?;
            mls::members(&group)
                .into_iter()
                .filter(|m| m.username != self.username())
                .filter(|m| {
                    contact_address(self.profile.conn(), &m.username)
                        .ok()
                        .flatten()
                        .is_none()
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        for member in missing {
            let devices = server.fetch_devices(&member.username, false).await?;
            let Some(device) = devices.devices.into_iter().next() else {
                continue;
            };
            let keys = device.keys.unwrap_or_default();
            if keys.identity_key != member.identity_key {
                return Err(ClientError::KeyChanged(member.username));
            }
            check_identity(self.profile.conn(), &member.username, &keys.identity_key)?;
            self.profile.conn().execute(
                "UPDATE contacts SET mailbox_id = ?2, sealing_key = ?3 WHERE username = ?1",
                params![member.username, device.mailbox_id, keys.sealing_key],
            )?;
        }
        server.close().await;
        Ok(())
    }

    /// Everyone we have talked to.
    pub fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        let mut stmt = self.profile.conn().prepare(
            "SELECT username, identity_key, verified, delivery_token IS NOT NULL FROM contacts ORDER BY username",
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

    /// The safety number with `username`; marks them verified when asked.
    pub async fn verify(
        &mut self,
        username: &str,
        mark_verified: bool,
    ) -> Result<String, ClientError> {
        let mut key: Option<Vec<u8>> = self
            .profile
            .conn()
            .query_row(
                "SELECT identity_key FROM contacts WHERE username = ?1",
                [username],
                |r| r.get(0),
            )
            .optional()?;
        if key.is_none() {
            validate_username(username)?;
            let mut server = ServerConn::open(&self.invite, &self.route()).await?;
            let devices = server.fetch_devices(username, false).await?;
            server.close().await;
            let k = devices
                .devices
                .first()
                .and_then(|d| d.keys.as_ref())
                .map(|k| k.identity_key.clone())
                .ok_or_else(|| ClientError::UnknownUser(username.to_string()))?;
            check_identity(self.profile.conn(), username, &k)?;
            key = Some(k);
        }
        let key = key.unwrap_or_default();
        if mark_verified {
            self.profile.conn().execute(
                "UPDATE contacts SET verified = 1 WHERE username = ?1",
                [username],
            )?;
        }
        Ok(umbra_crypto::safety::safety_number(
            self.username(),
            &self.identity.identity_key(),
            username,
            &key,
        ))
    }
}

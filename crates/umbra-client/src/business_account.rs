//! Being a business account, as a [`Client`] operation: `umbra business
//! register` makes a signed card (display name and fields) and sets it on
//! the server; the card, with the operator's verification once given, then
//! rides on every message the business sends, so customers can check it
//! whether or not they looked the business up. Looking a business up is
//! [`Client::business_card`].
//!
//! Who can read the business's chats is its hosting statement
//! ([`Client::set_hosting`]): signed by this device's key (and countersigned
//! by a host, when one runs the device), carried in the device's MLS leaf in
//! every conversation and in every key package it publishes, so a change is
//! a commit each customer applies and sees.

use prost::Message;
use umbra_crypto::mls;
use umbra_wire::business::{PROFILE_CONTEXT, check_profile, signed_bytes};
use umbra_wire::proto::{
    BusinessCard, BusinessField, BusinessProfile, SetBusinessCard, client_frame, server_frame,
};

use crate::business::{BusinessLabel, CardError, check_card, needs_refresh, now_unix, remember};
use crate::client::Client;
use crate::conn::ServerConn;
use crate::contacts::accept_listing;
use crate::mls_store::Provider;
use crate::profile::set_setting;
use crate::{ClientError, now_ms};

/// A host that runs this business's device and countersigns its hosting
/// statement: its name, its Ed25519 key and a way to sign with it.
pub struct HostSigner<'a> {
    /// What the host calls itself (1 to 64 characters).
    pub name: &'a str,
    /// The host's public key.
    pub key: [u8; 32],
    /// Signs the bytes it is given with the host's key.
    pub sign: &'a dyn Fn(&[u8]) -> Vec<u8>,
}

/// What `set_hosting` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostingSet {
    /// Who now runs this business's endpoint: `None` for the business itself.
    pub host: Option<String>,
    /// Conversations whose leaf changed (each got a commit).
    pub conversations: usize,
}

/// What `register_business` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BusinessRegistered {
    /// The card as customers will see it.
    pub label: BusinessLabel,
}

impl Client {
    /// Makes this account a business account named `name` with `fields`,
    /// or changes its card. A change of name (or key) drops the operator's
    /// verification until it is given again.
    pub async fn register_business(
        &mut self,
        name: &str,
        fields: &[(String, String)],
    ) -> Result<BusinessRegistered, ClientError> {
        let profile = BusinessProfile {
            username: self.username().to_string(),
            display_name: name.trim().to_string(),
            identity_key: self.identity.identity_key().to_vec(),
            fields: fields
                .iter()
                .map(|(n, v)| BusinessField {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
            updated_unix: now_ms() / 1000,
        };
        check_profile(&profile).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let encoded = profile.encode_to_vec();
        let signature = self
            .identity
            .sign(&signed_bytes(PROFILE_CONTEXT, &encoded))?;
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        // A signalling session: it does not take this device's stored mail.
        self.login_session(&mut server, true).await?;
        let set = SetBusinessCard {
            profile: encoded,
            signature,
        };
        match server
            .call(client_frame::Body::SetBusinessCard(set))
            .await?
        {
            server_frame::Body::BusinessCardStored(_) => {}
            other => return Err(ClientError::Protocol(format!("{other:?}"))),
        }
        server.close().await;
        let label = self.refresh_business_card().await?.ok_or_else(|| {
            ClientError::Protocol("the server did not keep the business card".into())
        })?;
        Ok(BusinessRegistered { label })
    }

    /// Fetches this business account's own card from the server (with the
    /// operator's verification, if given) to send with its messages.
    /// `None` if this is not a business account.
    pub async fn refresh_business_card(&mut self) -> Result<Option<BusinessLabel>, ClientError> {
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let listing = server.fetch_devices(self.username(), &[]).await?;
        server.close().await;
        let Some(mut card) = listing.business else {
            return Ok(None);
        };
        let check = |card: &BusinessCard| {
            check_card(
                &card.encode_to_vec(),
                self.username(),
                &self.identity.identity_key(),
                self.invite.sign_key.as_ref(),
                now_unix(),
            )
        };
        let label = match check(&card) {
            Ok(l) => l,
            Err(CardError::ForgedVerification) => {
                // Not a badge this server's pinned key gave: not ours to send.
                tracing::warn!(
                    "the server's verification of this business does not verify; sent without it"
                );
                card.verification.clear();
                card.verification_signature.clear();
                check(&card).map_err(|e| {
                    ClientError::Protocol(format!("the server holds a bad card for us: {e}"))
                })?
            }
            Err(e) => {
                return Err(ClientError::Protocol(format!(
                    "the server holds a bad card for us: {e}"
                )));
            }
        };
        let encoded = card.encode_to_vec();
        set_setting(self.profile.conn(), "business_card", &encoded)?;
        self.business_card = Some(encoded);
        Ok(Some(label))
    }

    /// This business's own card as it last fetched it, checked (`None` for
    /// a personal account).
    pub fn own_card(&self) -> Option<BusinessLabel> {
        let card = self.business_card.as_ref()?;
        check_card(
            card,
            self.username(),
            &self.identity.identity_key(),
            self.invite.sign_key.as_ref(),
            now_unix(),
        )
        .ok()
    }

    /// Fetches this business's card afresh when the verification it carries
    /// is about to run out, so its messages keep their badge. A server that
    /// cannot be reached leaves the card as it is (the message is queued
    /// anyway).
    pub async fn keep_card_fresh(&mut self) -> Result<(), ClientError> {
        let Some(card) = &self.business_card else {
            return Ok(());
        };
        if !needs_refresh(card, now_unix()) {
            return Ok(());
        }
        match self.refresh_business_card().await {
            Ok(_) | Err(ClientError::Unreachable { .. } | ClientError::Net(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `username`'s business card, looked up on the server and checked
    /// (`None` for a personal account).
    pub async fn business_card(
        &mut self,
        username: &str,
    ) -> Result<Option<BusinessLabel>, ClientError> {
        crate::validate_username(username)?;
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let listing = server.fetch_devices(username, &[]).await?;
        server.close().await;
        let devices = accept_listing(self.profile.conn(), username, &listing)?;
        if devices.is_empty() {
            return Err(ClientError::UnknownUser(username.to_string()));
        }
        let Some(card) = listing.business else {
            return Ok(None);
        };
        self.believe_card(username, &card).map(Some)
    }

    /// Checks a card the directory listed for `username` (signed by one of
    /// the devices its account key vouches for) and keeps its label.
    pub(crate) fn believe_card(
        &self,
        username: &str,
        card: &BusinessCard,
    ) -> Result<BusinessLabel, ClientError> {
        let conn = self.profile.conn();
        let identity_key = crate::business::card_key(card)
            .filter(|k| crate::contacts::is_vouched(conn, username, k).unwrap_or(false))
            .ok_or_else(|| ClientError::Unvouched(username.to_string()))?;
        let identity_key = identity_key.as_slice();
        let encoded = card.encode_to_vec();
        let label = check_card(
            &encoded,
            username,
            identity_key,
            self.invite.sign_key.as_ref(),
            now_unix(),
        )
        .map_err(|e| ClientError::Protocol(format!("`{username}` is not what it claims: {e}")))?;
        remember(conn, username, &encoded, &label)?;
        Ok(label)
    }
}

impl Client {
    /// Makes this business's hosting statement: run by itself (`host`
    /// `None`), or by `host`, who countersigns.
    pub fn make_hosting(&self, host: Option<&HostSigner<'_>>) -> Result<Vec<u8>, ClientError> {
        if let Some(h) = host
            && !umbra_wire::hosting::valid_host_name(h.name)
        {
            return Err(ClientError::Invalid(
                "a host's name has 1 to 64 characters and no control characters".into(),
            ));
        }
        let statement = umbra_wire::e2e::HostingStatement {
            username: self.username().to_string(),
            identity_key: self.identity.identity_key().to_vec(),
            host_name: host.map(|h| h.name.to_string()).unwrap_or_default(),
            host_key: host.map(|h| h.key.to_vec()).unwrap_or_default(),
            issued_unix: now_ms() / 1000,
        };
        let mut failed = None;
        let made = umbra_wire::hosting::make(
            &statement,
            |m| match self.identity.sign(m) {
                Ok(s) => s,
                Err(e) => {
                    failed = Some(e);
                    Vec::new()
                }
            },
            host.map(|h| h.sign),
        );
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(made)
    }

    /// This business's hosting statement, encoded, if it has one.
    pub fn own_hosting(&self) -> Option<Vec<u8>> {
        crate::hosting::own(self.profile.conn()).ok().flatten()
    }

    /// This business's hosting statement as it stands: `None` if it has
    /// none (a personal account), else who runs its endpoint (`Some(None)`:
    /// the business itself).
    pub fn hosting(&self) -> Result<Option<Option<String>>, ClientError> {
        let Some(h) = crate::hosting::own(self.profile.conn())? else {
            return Ok(None);
        };
        let s = umbra_wire::hosting::statement_of(&h)
            .map_err(|e| ClientError::Protocol(format!("this profile's {e}")))?;
        Ok(Some((!s.host_name.is_empty()).then_some(s.host_name)))
    }

    /// Makes `hosting` (from [`Client::make_hosting`]) this business's
    /// statement: every conversation gets a commit carrying it in our leaf
    /// (customers see a line before they can send again), and the key
    /// packages on the server are replaced by ones that carry it. Nothing
    /// happens if it already is the statement everywhere.
    pub async fn set_hosting(&mut self, hosting: Vec<u8>) -> Result<HostingSet, ClientError> {
        let host = match umbra_wire::hosting::check(
            &hosting,
            self.username(),
            &self.identity.identity_key(),
        )
        .map_err(|e| ClientError::Invalid(format!("this hosting statement will not do: {e}")))?
        {
            umbra_wire::hosting::Host::SelfHosted => None,
            umbra_wire::hosting::Host::Hosted { name, .. } => Some(name),
        };
        let line = match &host {
            None => "this chat is now run by this business itself".to_string(),
            Some(h) => format!("this chat is now run by {h}, who can read it"),
        };
        let before = crate::hosting::own(self.profile.conn())?;
        let mut changed = 0;
        {
            let tx = self.profile.write()?;
            crate::profile::set_setting(&tx, "hosting", &hosting)?;
            let groups: Vec<Vec<u8>> = {
                let mut stmt = tx.prepare("SELECT group_id FROM conversations WHERE active = 1")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let provider = Provider::new(&self.crypto, &tx);
            for gid in groups {
                let Some(mut group) = umbra_crypto::mls::load_group(&provider, &gid)? else {
                    continue;
                };
                if crate::hosting::align_own_leaf(&tx, &provider, &self.identity, &mut group)? {
                    crate::profile::record_event(&tx, &gid, self.username(), &line)?;
                    changed += 1;
                }
            }
            tx.commit()?;
        }
        self.flush_now().await?;
        if before.as_deref() != Some(hosting.as_slice()) {
            let mut server = ServerConn::open(&self.invite, &self.route()).await?;
            self.login_session(&mut server, true).await?;
            for suite in mls::SUITES {
                self.upload_key_packages(&mut server, suite, true).await?;
            }
            server.close().await;
        }
        Ok(HostingSet {
            host,
            conversations: changed,
        })
    }
}

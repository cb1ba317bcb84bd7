//! Being a business account, as a [`Client`] operation: `umbra business
//! register` makes a signed card (display name and fields) and sets it on
//! the server; the card, with the operator's verification once given, then
//! rides on every message the business sends, so customers can check it
//! whether or not they looked the business up. Looking a business up is
//! [`Client::business_card`].

use prost::Message;
use umbra_wire::business::{PROFILE_CONTEXT, check_profile, signed_bytes};
use umbra_wire::proto::{
    BusinessCard, BusinessField, BusinessProfile, SetBusinessCard, client_frame, server_frame,
};

use crate::business::{BusinessLabel, CardError, check_card, needs_refresh, now_unix, remember};
use crate::client::Client;
use crate::conn::ServerConn;
use crate::contacts::check_identity;
use crate::profile::set_setting;
use crate::{ClientError, now_ms};

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
        let listing = server.fetch_devices(self.username(), false).await?;
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

    /// Fetches this business's card afresh when the verification it carries
    /// is about to run out, so its messages keep their badge. A server that
    /// cannot be reached leaves the card as it is (the message is queued
    /// anyway).
    pub(crate) async fn keep_card_fresh(&mut self) -> Result<(), ClientError> {
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
        let listing = server.fetch_devices(username, false).await?;
        server.close().await;
        let key = listing
            .devices
            .first()
            .and_then(|d| d.keys.as_ref())
            .map(|k| k.identity_key.clone())
            .ok_or_else(|| ClientError::UnknownUser(username.to_string()))?;
        let Some(card) = listing.business else {
            return Ok(None);
        };
        self.believe_card(username, &key, &card).map(Some)
    }

    /// Checks a card the directory listed for `username` (whose key is
    /// pinned here) and keeps its label.
    pub(crate) fn believe_card(
        &self,
        username: &str,
        identity_key: &[u8],
        card: &BusinessCard,
    ) -> Result<BusinessLabel, ClientError> {
        let conn = self.profile.conn();
        check_identity(conn, username, identity_key)?;
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

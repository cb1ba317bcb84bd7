//! Business accounts, the server's side: checking a card a business sets,
//! the forms cards are stored and listed in, and the operator's
//! verification, signed with the server's signing key (`DATA_DIR/sign.key`,
//! Ed25519, created on first start; its public half is the invite link's
//! `sign`, so every client pins it with the server's Noise key and a
//! verification can be checked by anyone who has the invite, and not
//! denied later by the server that gave it). The statement is signed afresh
//! at each listing, valid for a week, so a badge taken back does not
//! outlive that week.
//!
//! The server checks the business's signature when the card is set, but
//! clients check it again, and the server's own statement, before they show
//! a name or a badge: a server that serves a forged card gains nothing.

use std::path::Path;

use anyhow::Context;
use ed25519_dalek::{Signer, SigningKey};
use prost::Message;
use umbra_store::{Limits, Store, StoredCard};
use umbra_wire::business::{
    PROFILE_CONTEXT, VERIFICATION_CONTEXT, VERIFICATION_VALIDITY_SECS, check_profile, signed_bytes,
};
use umbra_wire::proto::{BusinessCard, BusinessProfile, SetBusinessCard, Verification};

use crate::error::RequestError;
use crate::validate::verify;

/// File name of the signing key inside the data directory.
pub const SIGN_KEY_FILE: &str = "sign.key";

/// Loads the server's signing key from `data_dir`, creating it if needed.
pub fn signing_key(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = data_dir.join(SIGN_KEY_FILE);
    let (seed, created) = umbra_daemon::keyfile::load_or_create(&path, rand::random)?;
    if created {
        tracing::info!("created a new signing key");
    }
    Ok(SigningKey::from_bytes(&seed))
}

/// The profile of a card the logged-in `username` (device key
/// `identity_key`) sets, once checked.
pub(crate) fn check(
    c: &SetBusinessCard,
    username: &str,
    identity_key: &[u8; 32],
) -> Result<BusinessProfile, RequestError> {
    let profile = BusinessProfile::decode(c.profile.as_slice())
        .map_err(|_| RequestError::InvalidArgument("the business profile is not readable"))?;
    if profile.username != username || profile.identity_key != identity_key {
        return Err(RequestError::InvalidArgument(
            "a business card must name this account and this device's key",
        ));
    }
    if check_profile(&profile).is_err() {
        return Err(RequestError::InvalidArgument(
            "a business card has a display name of 1 to 64 characters and at most 16 short fields",
        ));
    }
    if !verify(identity_key, &[PROFILE_CONTEXT, &c.profile], &c.signature) {
        return Err(RequestError::BadSignature);
    }
    Ok(profile)
}

/// What is stored of a checked card: the profile and its signature.
pub(crate) fn stored(c: SetBusinessCard) -> Vec<u8> {
    BusinessCard {
        profile: c.profile,
        signature: c.signature,
        ..BusinessCard::default()
    }
    .encode_to_vec()
}

/// The card as clients get it: the business's part, and the operator's
/// verification (if given) signed afresh with `key`, valid from `now_unix`
/// for [`VERIFICATION_VALIDITY_SECS`].
pub(crate) fn listed(c: StoredCard, key: &SigningKey, now_unix: u64) -> BusinessCard {
    let mut card = BusinessCard::decode(c.card.as_slice()).unwrap_or_default();
    let given = c
        .verification
        .and_then(|v| BusinessCard::decode(v.as_slice()).ok())
        .and_then(|v| Verification::decode(v.verification.as_slice()).ok());
    if let Some(v) = given {
        let (verification, verification_signature) = statement(
            key,
            Verification {
                expires_unix: now_unix + VERIFICATION_VALIDITY_SECS,
                ..v
            },
        );
        card.verification = verification;
        card.verification_signature = verification_signature;
    }
    card
}

/// An encoded verification and the server's signature over it.
fn statement(key: &SigningKey, v: Verification) -> (Vec<u8>, Vec<u8>) {
    let encoded = v.encode_to_vec();
    let signature = key
        .sign(&signed_bytes(VERIFICATION_CONTEXT, &encoded))
        .to_bytes()
        .to_vec();
    (encoded, signature)
}

/// One business account, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BusinessListing {
    /// The account.
    pub username: String,
    /// What it calls itself.
    pub display_name: String,
    /// Whether the operator's verification holds for its current card.
    pub verified: bool,
}

fn profile_of(c: &StoredCard) -> anyhow::Result<BusinessProfile> {
    let card = BusinessCard::decode(c.card.as_slice()).context("a stored card is unreadable")?;
    BusinessProfile::decode(card.profile.as_slice()).context("a stored profile is unreadable")
}

/// The server's database, as operator commands open it.
pub type Database = Box<dyn Store>;

/// The server's database (the SQLite file in `data_dir`, or the PostgreSQL
/// database at `url`), for an operator command run beside the server (both
/// let it write while the server does).
pub fn open_store(
    data_dir: &Path,
    url: Option<&crate::database::DatabaseUrl>,
) -> anyhow::Result<Database> {
    crate::database::open(data_dir, url, Limits::default(), false)
}

/// Every business account on the server.
pub fn list(store: &mut dyn Store) -> anyhow::Result<Vec<BusinessListing>> {
    let mut tx = store.begin()?;
    let cards = tx.business_cards()?;
    tx.commit()?;
    cards
        .iter()
        .map(|c| {
            Ok(BusinessListing {
                username: c.username.clone(),
                display_name: profile_of(c)?.display_name,
                verified: c.verification.is_some(),
            })
        })
        .collect()
}

/// The operator verifies the business account `username` as it presents
/// itself now (its display name and key): a statement signed with `key`.
/// A later change of name or key drops it. Returns the name verified.
pub fn verify_account(
    store: &mut dyn Store,
    key: &SigningKey,
    username: &str,
    now_unix: u64,
) -> anyhow::Result<String> {
    let mut tx = store.begin()?;
    let card = tx.business_card(username)?.with_context(|| {
        format!("`{username}` is not a business account (it runs `umbra business register` first)")
    })?;
    let profile = profile_of(&card)?;
    let (verification, signature) = statement(
        key,
        Verification {
            username: profile.username.clone(),
            display_name: profile.display_name.clone(),
            identity_key: profile.identity_key,
            verified_unix: now_unix,
            expires_unix: now_unix + VERIFICATION_VALIDITY_SECS,
        },
    );
    let statement = BusinessCard {
        verification,
        verification_signature: signature,
        ..BusinessCard::default()
    }
    .encode_to_vec();
    tx.set_business_verification(username, Some(&statement))?;
    tx.commit()?;
    Ok(profile.display_name)
}

/// Takes the operator's verification back; `false` if there was none.
pub fn unverify_account(store: &mut dyn Store, username: &str) -> anyhow::Result<bool> {
    let mut tx = store.begin()?;
    let had = tx
        .business_card(username)?
        .is_some_and(|c| c.verification.is_some());
    tx.set_business_verification(username, None)?;
    tx.commit()?;
    Ok(had)
}

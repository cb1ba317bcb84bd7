//! Business accounts as a customer's device sees them: a card is checked
//! before its name or badge is shown, and the result is kept on the contact.
//!
//! A card is believed only if: its profile names the account it came from
//! and the identity key MLS (or the directory, then pinned) has for it; the
//! business's signature over it is good; and, for the badge, the operator's
//! verification is about exactly this name and key, is signed by the
//! server key the invite link pinned (`sign`), and has not run out (the
//! server signs it afresh for a week at each listing, so a badge the
//! operator took back is gone within a week). A card that fails any of
//! these is refused with a warning and the account is shown as a person.
//! The Client operations (registering as a business) are in
//! [`crate::business_account`].

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use umbra_wire::business::{
    PROFILE_CONTEXT, VERIFICATION_CONTEXT, check_profile, signed_bytes, verification_current,
    verification_matches,
};
use umbra_wire::proto::{BusinessCard, BusinessProfile, Verification};
use umbra_wire::signature::verify;

use crate::ClientError;

/// What the user is shown for a business account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusinessLabel {
    /// What it calls itself.
    pub name: String,
    /// Whether the server's operator verified it (as this name and key),
    /// in a statement that has not run out.
    pub verified: bool,
    /// Its profile's fields, in order.
    pub fields: Vec<(String, String)>,
}

/// Why a card was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CardError {
    /// The card or its profile cannot be read, or has a bad shape.
    #[error("its business card is malformed")]
    Malformed,
    /// The profile names another account or key.
    #[error("its business card names another account or key")]
    NotTheirs,
    /// The business's signature is bad.
    #[error("its business card is not signed by its own key")]
    BadSignature,
    /// The verification is about another name or key, or is not signed by
    /// this server's key.
    #[error("its verified badge was not given by this server to this name and key")]
    ForgedVerification,
}

/// Checks `card` (encoded) as coming from `username` with `identity_key`,
/// under the server signing key `sign_key` the invite pinned, at
/// `now_unix`. A verification that has run out is no error: the business
/// is then shown as not verified.
pub fn check_card(
    card: &[u8],
    username: &str,
    identity_key: &[u8],
    sign_key: Option<&[u8; 32]>,
    now_unix: u64,
) -> Result<BusinessLabel, CardError> {
    let card = BusinessCard::decode(card).map_err(|_| CardError::Malformed)?;
    let profile =
        BusinessProfile::decode(card.profile.as_slice()).map_err(|_| CardError::Malformed)?;
    check_profile(&profile).map_err(|_| CardError::Malformed)?;
    if profile.username != username || profile.identity_key != identity_key {
        return Err(CardError::NotTheirs);
    }
    if !verify(
        identity_key,
        &signed_bytes(PROFILE_CONTEXT, &card.profile),
        &card.signature,
    ) {
        return Err(CardError::BadSignature);
    }
    let verified = if card.verification.is_empty() {
        false
    } else {
        let v = Verification::decode(card.verification.as_slice())
            .map_err(|_| CardError::ForgedVerification)?;
        let signed = signed_bytes(VERIFICATION_CONTEXT, &card.verification);
        match sign_key {
            // An older invite pinned no signing key: nothing can be checked,
            // so nothing is shown as verified.
            None => false,
            Some(key) => {
                if !verification_matches(&v, &profile)
                    || !verify(key, &signed, &card.verification_signature)
                {
                    return Err(CardError::ForgedVerification);
                }
                verification_current(&v, now_unix)
            }
        }
    };
    Ok(BusinessLabel {
        name: profile.display_name,
        verified,
        fields: profile
            .fields
            .into_iter()
            .map(|f| (f.name, f.value))
            .collect(),
    })
}

/// Keeps `label` (from `card`) for the contact `username`. Returns what it
/// had before, if it changed.
pub(crate) fn remember(
    conn: &Connection,
    username: &str,
    card: &[u8],
    label: &BusinessLabel,
) -> Result<Option<Option<BusinessLabel>>, ClientError> {
    let before = label_of(conn, username)?;
    if before.as_ref() == Some(label) {
        return Ok(None);
    }
    conn.execute(
        "UPDATE contacts SET business_card = ?2 WHERE username = ?1",
        params![username, card],
    )?;
    Ok(Some(before))
}

/// The device key a card says signed it (unchecked).
pub(crate) fn card_key(card: &BusinessCard) -> Option<Vec<u8>> {
    BusinessProfile::decode(card.profile.as_slice())
        .ok()
        .map(|p| p.identity_key)
}

/// The label of the contact `username`, if it is a business (its stored
/// card, checked again: signed by a device its account key vouches for).
pub fn label_of(conn: &Connection, username: &str) -> Result<Option<BusinessLabel>, ClientError> {
    let card: Option<Option<Vec<u8>>> = conn
        .query_row(
            "SELECT business_card FROM contacts WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?;
    let Some(Some(card)) = card else {
        return Ok(None);
    };
    let Some(key) = BusinessCard::decode(card.as_slice())
        .ok()
        .and_then(|c| card_key(&c))
    else {
        return Ok(None);
    };
    if !crate::contacts::is_vouched(conn, username, &key)? {
        return Ok(None);
    }
    let sign_key = sign_key(conn)?;
    Ok(check_card(&card, username, &key, sign_key.as_ref(), now_unix()).ok())
}

/// The server signing key this profile's invite pinned.
pub(crate) fn sign_key(conn: &Connection) -> Result<Option<[u8; 32]>, ClientError> {
    let invite = crate::profile::get_setting(conn, "invite")?.unwrap_or_default();
    Ok(
        umbra_wire::invite::Invite::parse(&String::from_utf8_lossy(&invite))
            .ok()
            .and_then(|i| i.sign_key),
    )
}

/// Seconds since the Unix epoch, for checking statements' validity.
pub fn now_unix() -> u64 {
    crate::now_ms() / 1000
}

/// Whether this business's own `card` should be fetched afresh before it
/// goes out: its verification runs out within half its validity.
pub(crate) fn needs_refresh(card: &[u8], now_unix: u64) -> bool {
    let Ok(card) = BusinessCard::decode(card) else {
        return true;
    };
    if card.verification.is_empty() {
        return false;
    }
    Verification::decode(card.verification.as_slice())
        .map(|v| {
            v.expires_unix
                < now_unix.saturating_add(umbra_wire::business::VERIFICATION_VALIDITY_SECS / 2)
        })
        .unwrap_or(true)
}

/// How a business is named to the user: `Acme Shop ✓ (acme)`.
pub fn display(username: &str, label: &BusinessLabel) -> String {
    let badge = if label.verified { " ✓" } else { "" };
    format!("{}{badge} ({username})", label.name)
}

#[cfg(test)]
mod tests {
    use umbra_crypto::Identity;
    use umbra_wire::proto::BusinessField;

    use super::*;

    /// A card by `by` for `username`, verified by `server` if given.
    fn card(by: &Identity, username: &str, name: &str, server: Option<&Identity>) -> Vec<u8> {
        let profile = BusinessProfile {
            username: username.into(),
            display_name: name.into(),
            identity_key: by.identity_key().to_vec(),
            fields: vec![BusinessField {
                name: "website".into(),
                value: "https://acme.example".into(),
            }],
            updated_unix: 1,
        }
        .encode_to_vec();
        let signature = by
            .sign(&signed_bytes(PROFILE_CONTEXT, &profile))
            .expect("sign");
        let mut c = BusinessCard {
            profile,
            signature,
            ..BusinessCard::default()
        };
        if let Some(server) = server {
            c.verification = Verification {
                username: username.into(),
                display_name: name.into(),
                identity_key: by.identity_key().to_vec(),
                verified_unix: NOW - 10,
                expires_unix: NOW + umbra_wire::business::VERIFICATION_VALIDITY_SECS,
            }
            .encode_to_vec();
            c.verification_signature = server
                .sign(&signed_bytes(VERIFICATION_CONTEXT, &c.verification))
                .expect("sign");
        }
        c.encode_to_vec()
    }

    /// The time the tests check cards at.
    const NOW: u64 = 1_000_000;

    fn key(id: &Identity) -> [u8; 32] {
        id.identity_key().try_into().expect("32 bytes")
    }

    #[test]
    fn a_card_is_believed_only_from_its_own_account_and_key() {
        let acme = Identity::generate("acme").expect("id");
        let server = Identity::generate("server").expect("id");
        let pinned = key(&server);
        let good = card(&acme, "acme", "Acme Shop", Some(&server));
        let l = check_card(&good, "acme", &acme.identity_key(), Some(&pinned), NOW).expect("good");
        assert_eq!(l.name, "Acme Shop");
        assert!(l.verified);
        assert_eq!(
            l.fields,
            [("website".into(), "https://acme.example".into())]
        );

        // Relayed by another account, or under another key.
        let mallory = Identity::generate("mallory").expect("id");
        assert_eq!(
            check_card(&good, "mallory", &acme.identity_key(), Some(&pinned), NOW),
            Err(CardError::NotTheirs)
        );
        assert_eq!(
            check_card(&good, "acme", &mallory.identity_key(), Some(&pinned), NOW),
            Err(CardError::NotTheirs)
        );
        // Signed by someone else than the key it names.
        let mut forged = BusinessCard::decode(good.as_slice()).expect("decode");
        forged.signature = mallory
            .sign(&signed_bytes(PROFILE_CONTEXT, &forged.profile))
            .expect("sign");
        assert_eq!(
            check_card(
                &forged.encode_to_vec(),
                "acme",
                &acme.identity_key(),
                Some(&pinned),
                NOW
            ),
            Err(CardError::BadSignature)
        );
        assert_eq!(
            check_card(
                b"\xff\xff",
                "acme",
                &acme.identity_key(),
                Some(&pinned),
                NOW
            ),
            Err(CardError::Malformed)
        );
    }

    #[test]
    fn a_badge_needs_the_pinned_servers_signature_on_this_very_name() {
        let acme = Identity::generate("acme").expect("id");
        let server = Identity::generate("server").expect("id");
        let other_server = Identity::generate("other").expect("id");
        let pinned = key(&server);
        // Verified by another server's key: refused, not shown as verified.
        let wrong = card(&acme, "acme", "Acme Shop", Some(&other_server));
        assert_eq!(
            check_card(&wrong, "acme", &acme.identity_key(), Some(&pinned), NOW),
            Err(CardError::ForgedVerification)
        );
        // A verification of one name stuck on another.
        let shop = BusinessCard::decode(card(&acme, "acme", "Acme Shop", Some(&server)).as_slice())
            .expect("decode");
        let mut bank = BusinessCard::decode(card(&acme, "acme", "Acme Bank", None).as_slice())
            .expect("decode");
        bank.verification = shop.verification;
        bank.verification_signature = shop.verification_signature;
        assert_eq!(
            check_card(
                &bank.encode_to_vec(),
                "acme",
                &acme.identity_key(),
                Some(&pinned),
                NOW
            ),
            Err(CardError::ForgedVerification)
        );
        // Stripped of its badge: still the business's card, not verified.
        let plain = card(&acme, "acme", "Acme Shop", None);
        let l =
            check_card(&plain, "acme", &acme.identity_key(), Some(&pinned), NOW).expect("plain");
        assert!(!l.verified);
        // An invite without a signing key can check no badge.
        let good = card(&acme, "acme", "Acme Shop", Some(&server));
        let l = check_card(&good, "acme", &acme.identity_key(), None, NOW).expect("unpinned");
        assert!(!l.verified);
        // A statement that has run out: shown as not verified, and the
        // business's own device knows to fetch a fresh one.
        let week = umbra_wire::business::VERIFICATION_VALIDITY_SECS;
        let l = check_card(
            &good,
            "acme",
            &acme.identity_key(),
            Some(&pinned),
            NOW + week,
        )
        .expect("expired");
        assert!(!l.verified);
        assert!(!needs_refresh(&good, NOW));
        assert!(!needs_refresh(&good, NOW + week / 2 - 1));
        assert!(needs_refresh(&good, NOW + week / 2 + 1));
        assert!(
            !needs_refresh(&plain, NOW + 10 * week),
            "nothing to refresh"
        );
    }
}

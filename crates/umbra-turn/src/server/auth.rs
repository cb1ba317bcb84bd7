//! Long-term credential checking on the server (RFC 8489 §9.2.4): the pluggable
//! [`Authenticator`] that maps a username to its key, two ready implementations (a static
//! user table and the TURN REST time-limited scheme), and [`authenticate`], which walks a
//! request through the RFC's checks and says which error response to send, if any.

use std::collections::HashMap;
use std::time::Instant;

use crate::attribute::PasswordAlgorithm;
use crate::credentials::{LongTermKey, rest, userhash};
use crate::integrity::IntegrityKind;
use crate::message::Message;

/// Looks up long-term keys. Implemented by the daemon (database, REST secret, ...).
pub trait Authenticator {
    /// The key of `username` in `realm` for `algorithm`, or `None` if the user is unknown
    /// or (for time-limited credentials) expired. `now` lets implementations check expiry
    /// without reading the clock.
    fn key(
        &self,
        now: Instant,
        username: &str,
        realm: &str,
        algorithm: PasswordAlgorithm,
    ) -> Option<LongTermKey>;

    /// The username whose USERHASH is `hash`, if the implementation can invert it.
    fn username_for_userhash(
        &self,
        _now: Instant,
        _hash: &[u8; 32],
        _realm: &str,
    ) -> Option<String> {
        None
    }
}

/// A fixed table of usernames and passwords.
#[derive(Clone, Default)]
pub struct StaticAuthenticator {
    users: HashMap<String, String>,
}

impl StaticAuthenticator {
    /// An empty table.
    pub fn new() -> StaticAuthenticator {
        StaticAuthenticator::default()
    }

    /// Adds (or replaces) a user.
    pub fn with_user(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> StaticAuthenticator {
        self.users.insert(username.into(), password.into());
        self
    }
}

impl Authenticator for StaticAuthenticator {
    fn key(
        &self,
        _now: Instant,
        username: &str,
        realm: &str,
        algorithm: PasswordAlgorithm,
    ) -> Option<LongTermKey> {
        let password = self.users.get(username)?;
        LongTermKey::derive(algorithm, username, realm, password)
    }

    fn username_for_userhash(&self, _now: Instant, hash: &[u8; 32], realm: &str) -> Option<String> {
        self.users
            .keys()
            .find(|u| userhash(u, realm) == *hash)
            .cloned()
    }
}

/// The TURN REST / coturn `use-auth-secret` scheme: username `"<unix-expiry>:<token>"`,
/// password `base64(HMAC-SHA1(secret, username))`.
///
/// Unix time is derived from `now` through an anchor pair (an `Instant` and the Unix time
/// at that instant) the daemon supplies once, so this code never reads the clock.
#[derive(Clone)]
pub struct RestAuthenticator {
    secret: Vec<u8>,
    anchor: Instant,
    anchor_unix: u64,
}

impl RestAuthenticator {
    /// `anchor_unix` is the Unix time (seconds) at `anchor`.
    pub fn new(secret: impl Into<Vec<u8>>, anchor: Instant, anchor_unix: u64) -> RestAuthenticator {
        RestAuthenticator {
            secret: secret.into(),
            anchor,
            anchor_unix,
        }
    }

    fn unix_at(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.anchor) {
            Some(d) => self.anchor_unix.saturating_add(d.as_secs()),
            None => self
                .anchor_unix
                .saturating_sub(self.anchor.saturating_duration_since(now).as_secs()),
        }
    }
}

impl Authenticator for RestAuthenticator {
    fn key(
        &self,
        now: Instant,
        username: &str,
        realm: &str,
        algorithm: PasswordAlgorithm,
    ) -> Option<LongTermKey> {
        rest::check_username(username, self.unix_at(now)).ok()?;
        let password = rest::password(&self.secret, username);
        LongTermKey::derive(algorithm, username, realm, &password)
    }
}

/// A request that passed authentication.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub username: String,
    pub key: LongTermKey,
    pub kind: IntegrityKind,
}

/// Why authentication failed, i.e. which error response to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// 401 with REALM and NONCE (no integrity: the client has no key yet).
    Unauthenticated,
    /// 400: integrity present but USERNAME/REALM/NONCE missing, or bad algorithm attributes.
    BadRequest,
    /// 438 with a fresh NONCE.
    StaleNonce,
}

/// Inputs the checks need besides the message.
pub(crate) struct AuthContext<'a> {
    pub now: Instant,
    pub realm: &'a str,
    pub algorithms: &'a [PasswordAlgorithm],
    pub negotiates: bool,
    pub nonce_valid: &'a dyn Fn(&str) -> bool,
}

/// Runs RFC 8489 §9.2.4 on `msg`.
pub(crate) fn authenticate(
    msg: &Message<'_>,
    ctx: &AuthContext<'_>,
    auth: &dyn Authenticator,
) -> Result<Authenticated, AuthFailure> {
    let Some(kind) = msg.integrity_kind() else {
        return Err(AuthFailure::Unauthenticated);
    };
    let username = msg.username().map_err(|_| AuthFailure::BadRequest)?;
    let hash = msg.userhash().map_err(|_| AuthFailure::BadRequest)?;
    let realm = msg
        .realm()
        .map_err(|_| AuthFailure::BadRequest)?
        .ok_or(AuthFailure::BadRequest)?;
    let nonce = msg
        .nonce()
        .map_err(|_| AuthFailure::BadRequest)?
        .ok_or(AuthFailure::BadRequest)?;
    if username.is_none() && hash.is_none() {
        return Err(AuthFailure::BadRequest);
    }
    let algorithm = choose_algorithm(msg, ctx)?;
    if realm != ctx.realm {
        return Err(AuthFailure::Unauthenticated);
    }
    let username = match (username, hash) {
        (Some(u), _) => u.to_owned(),
        (None, Some(h)) => auth
            .username_for_userhash(ctx.now, &h, realm)
            .ok_or(AuthFailure::Unauthenticated)?,
        (None, None) => return Err(AuthFailure::BadRequest),
    };
    let key = auth
        .key(ctx.now, &username, realm, algorithm)
        .ok_or(AuthFailure::Unauthenticated)?;
    msg.verify_integrity(key.as_bytes())
        .map_err(|_| AuthFailure::Unauthenticated)?;
    if !(ctx.nonce_valid)(nonce) {
        return Err(AuthFailure::StaleNonce);
    }
    Ok(Authenticated {
        username,
        key,
        kind,
    })
}

/// The password algorithm rules of RFC 8489 §9.2.4.
fn choose_algorithm(
    msg: &Message<'_>,
    ctx: &AuthContext<'_>,
) -> Result<PasswordAlgorithm, AuthFailure> {
    if !ctx.negotiates {
        return Ok(PasswordAlgorithm::Md5);
    }
    let offered = msg
        .password_algorithms()
        .map_err(|_| AuthFailure::BadRequest)?;
    let chosen = msg
        .password_algorithm()
        .map_err(|_| AuthFailure::BadRequest)?;
    match (offered, chosen) {
        (None, None) => Ok(PasswordAlgorithm::Md5),
        (Some(list), Some(a)) if list == ctx.algorithms && list.contains(&a) => Ok(a),
        _ => Err(AuthFailure::BadRequest),
    }
}

//! The [`Client`]: one registered profile, its identity and how it reaches
//! the server, plus what every operation shares (message contents, flushing
//! the outbox).
//!
//! The operations live beside it, one module per responsibility, each adding
//! an `impl Client` block and importing this module (never the other way):
//! - [`crate::account`]: register, login, key packages, relay credentials;
//! - [`crate::directory`]: looking users up, claiming key packages, safety
//!   numbers, the contact list;
//! - [`crate::conversations`]: 1:1 and group conversations, sending, history;
//! - [`crate::receive`]: `sync` and `listen`, applying what arrives.
//!
//! Each operation that changes conversation state runs as: network look-ups
//! first (key packages, addresses), then one database transaction holding the
//! MLS operation, the history row and the queued envelopes, then the outbox
//! is flushed. Nothing is half-done after a crash.

use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use prost::Message;
use rand::RngCore;
use rusqlite::Connection;
use umbra_crypto::mls;
use umbra_crypto::{Identity, identity::IdentitySecrets};
use umbra_net::dial::Route;
use umbra_wire::e2e::{Content, DeviceAddress, content};
use umbra_wire::invite::Invite;
use umbra_wire::proxy::ProxyLink;

use crate::conn::ServerConn;
use crate::inbox::Device;
use crate::mls_store::Provider;
use crate::model::Event;
use crate::outbox;
use crate::profile::{Profile, get_setting, set_setting};
use crate::{ClientError, now_ms};

/// A registered profile, ready to use.
pub struct Client {
    pub(crate) profile: Profile,
    pub(crate) crypto: RustCrypto,
    pub(crate) identity: Identity,
    pub(crate) invite: Invite,
    pub(crate) me: DeviceAddress,
    pub(crate) device_id: Vec<u8>,
    pub(crate) proxy: Option<ProxyLink>,
    /// Whether what `sync` and `listen` return is shown to the user (a
    /// terminal app), so that it counts as read; see [`Client::shows_messages`].
    pub(crate) shows: bool,
    /// This business account's card (with the operator's verification, if
    /// given), sent with every message; `None` for a personal account.
    pub(crate) business_card: Option<Vec<u8>>,
    /// Whether `listen` sends what waits in the outbox itself (see
    /// [`Client::flushes_in_listen`]).
    pub(crate) listen_flushes: bool,
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

pub(crate) fn setting(conn: &Connection, key: &str) -> Result<Vec<u8>, ClientError> {
    get_setting(conn, key)?
        .ok_or_else(|| ClientError::Protocol(format!("profile is missing `{key}`")))
}

impl Client {
    /// Opens an existing profile, unlocking it with `passphrase` if it has
    /// one (see [`crate::profile_key`]).
    pub fn open(dir: &Path, passphrase: Option<&str>) -> Result<Self, ClientError> {
        if !dir.join("profile.db").exists() {
            return Err(ClientError::NotRegistered(dir.to_path_buf()));
        }
        let key = crate::profile_key::unlock(dir, passphrase)?;
        Self::open_with_key(dir, key.as_ref())
    }

    /// Opens an existing profile with its key already unlocked (as
    /// [`Client::key`] gives it: one passphrase derivation for several
    /// clients of one profile).
    pub fn open_with_key(
        dir: &Path,
        key: Option<&crate::profile_key::DataKey>,
    ) -> Result<Self, ClientError> {
        if !dir.join("profile.db").exists() {
            return Err(ClientError::NotRegistered(dir.to_path_buf()));
        }
        let profile = Profile::open(dir, key)?;
        let conn = profile.conn();
        let Some(username) = get_setting(conn, "username")? else {
            return Err(ClientError::NotRegistered(dir.to_path_buf()));
        };
        let username = String::from_utf8_lossy(&username).into_owned();
        let invite = Invite::parse(&String::from_utf8_lossy(&setting(conn, "invite")?))?;
        let sealing: [u8; 32] = setting(conn, "sealing_private")?
            .try_into()
            .map_err(|_| ClientError::Protocol("corrupt sealing key".into()))?;
        let mut identity = Identity::from_secrets(
            &username,
            &IdentitySecrets {
                identity_keypair: setting(conn, "identity_keypair")?,
                sealing_private: sealing,
            },
        )?;
        if let Some(certificate) = get_setting(conn, "device_certificate")? {
            identity.set_certificate(certificate);
        }
        let me = DeviceAddress {
            username: username.clone(),
            mailbox_id: setting(conn, "mailbox_id")?,
            sealing_key: identity.sealing_key().to_vec(),
            delivery_token: setting(conn, "delivery_token")?,
            identity_key: identity.identity_key(),
        };
        let device_id = setting(conn, "device_id")?;
        let proxy = match get_setting(conn, "proxy")? {
            Some(text) => Some(ProxyLink::parse(&String::from_utf8_lossy(&text))?),
            None => None,
        };
        let business_card = get_setting(conn, "business_card")?;
        Ok(Self {
            profile,
            crypto: RustCrypto::default(),
            identity,
            invite,
            me,
            device_id,
            proxy,
            shows: false,
            business_card,
            listen_flushes: true,
        })
    }

    /// Says that the messages `sync` and `listen` return are shown to the
    /// user as they come (as the terminal app does): they then count as
    /// read, and read receipts go back (if they are on). Otherwise only
    /// delivered receipts are sent, and [`Client::mark_read`] says when a
    /// conversation was read.
    pub fn shows_messages(&mut self, shows: bool) {
        self.shows = shows;
    }

    /// Whether `listen` sends what waits in the outbox (receipts it owes,
    /// what other commands left) itself: on by default; an application that
    /// sends from another task on the same profile turns it off, so that
    /// only one of them sends.
    pub fn flushes_in_listen(&mut self, on: bool) {
        self.listen_flushes = on;
    }

    /// Our username.
    pub fn username(&self) -> &str {
        self.identity.username()
    }

    /// How this client reaches the server: through the proxy if one is set,
    /// else directly. With a proxy, no connection ever goes to the server's
    /// own address.
    pub fn route(&self) -> Route {
        match &self.proxy {
            Some(link) => Route::Proxy(link.clone()),
            None => Route::Direct(self.invite.address()),
        }
    }

    /// The proxy in use, if any.
    pub fn proxy(&self) -> Option<&ProxyLink> {
        self.proxy.as_ref()
    }

    /// Uses `link` for this session only (`--proxy`); [`Client::save_proxy`]
    /// keeps one in the profile.
    pub fn use_proxy(&mut self, link: ProxyLink) {
        self.proxy = Some(link);
    }

    /// Keeps `link` (or no proxy) as this profile's network setting.
    pub fn save_proxy(&mut self, link: Option<ProxyLink>) -> Result<(), ClientError> {
        match &link {
            Some(l) => set_setting(self.profile.conn(), "proxy", l.to_string().as_bytes())?,
            None => {
                self.profile
                    .conn()
                    .execute("DELETE FROM settings WHERE key = 'proxy'", [])?;
            }
        }
        self.proxy = link;
        Ok(())
    }

    /// The key the profile's database is encrypted under (for another
    /// connection to it, such as [`crate::journal::Journal::open`]).
    pub fn key(&self) -> Option<&crate::profile_key::DataKey> {
        self.profile.key()
    }

    /// This device's mailbox id (what the server files our envelopes under).
    pub fn mailbox_id(&self) -> &[u8] {
        &self.me.mailbox_id
    }

    /// The server this profile belongs to.
    pub fn invite(&self) -> &Invite {
        &self.invite
    }

    /// Encrypts `content` in the conversation `group_id`, within the
    /// transaction behind `provider` (the ratchet moves with it); returns
    /// the group (for its recipients) and the MLS message.
    pub(crate) fn encrypt_content(
        &self,
        provider: &Provider<'_>,
        group_id: &[u8],
        content: &Content,
    ) -> Result<(openmls::prelude::MlsGroup, Vec<u8>), ClientError> {
        let mut group = required_group(provider, group_id)?;
        let ct = mls::encrypt(
            provider,
            &self.identity,
            &mut group,
            &content.encode_to_vec(),
        )?;
        Ok((group, ct))
    }

    /// What applying received envelopes needs of this device.
    pub(crate) fn device(&self) -> Device<'_> {
        Device {
            crypto: &self.crypto,
            identity: &self.identity,
            me: &self.me,
            sign_key: self.invite.sign_key,
        }
    }

    pub(crate) fn content(&self, body: content::Body) -> Content {
        Content {
            message_id: random_bytes::<16>().to_vec(),
            sent_at_ms: now_ms(),
            sender: Some(self.me.clone()),
            business_card: self.business_card.clone().unwrap_or_default(),
            body: Some(body),
        }
    }

    /// Sends what the outbox holds (from this or an earlier, interrupted run).
    pub async fn flush_outbox(&mut self) -> Result<Vec<Event>, ClientError> {
        let claims = crate::ledger::any_waiting(self.profile.conn())?;
        if !claims && outbox::pending(self.profile.conn())? == 0 {
            return Ok(Vec::new());
        }
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        outbox::remember_limit(self.profile.conn(), server.hello())?;
        // Group commits waiting for their epoch first: until settled, their
        // groups can send nothing, and their envelopes are held.
        let mut events = if claims {
            self.settle_claims(&mut server).await?
        } else {
            Vec::new()
        };
        events.extend(outbox::flush(self.profile.conn(), &mut server).await?);
        server.close().await;
        Ok(events)
    }

    /// Flushes what earlier commands left; messages the server still holds
    /// back stay queued and become a warning instead of blocking this command.
    pub(crate) async fn flush_earlier(&mut self) -> Result<Vec<Event>, ClientError> {
        match self.flush_outbox().await {
            Err(ClientError::Queued(n, why)) => Ok(vec![Event::Warning {
                text: format!("{n} earlier message(s) still waiting: {why}"),
            }]),
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Net(_))) => {
                Ok(vec![Event::Warning {
                    text: format!("earlier messages still waiting: {e}"),
                }])
            }
            other => other,
        }
    }

    /// Flushes what this command queued. If the server cannot be reached the
    /// messages stay saved in the outbox: that is [`ClientError::Queued`].
    pub(crate) async fn flush_now(&mut self) -> Result<Vec<Event>, ClientError> {
        match self.flush_outbox().await {
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Net(_))) => {
                let n = outbox::pending(self.profile.conn())?;
                Err(ClientError::Queued(n, e.to_string()))
            }
            other => other,
        }
    }
}

/// The MLS state of a conversation we are in.
pub(crate) fn required_group(
    provider: &Provider<'_>,
    group_id: &[u8],
) -> Result<openmls::prelude::MlsGroup, ClientError> {
    mls::load_group(provider, group_id)?
        .ok_or_else(|| ClientError::Protocol("conversation state missing from the profile".into()))
}

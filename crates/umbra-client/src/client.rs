//! The operations a user performs: register, send, groups, receive, history.
//!
//! Each operation that changes conversation state runs as: network look-ups
//! first (key packages, addresses), then one database transaction holding the
//! MLS operation, the history row and the queued envelopes, then the outbox
//! is flushed. Nothing is half-done after a crash.

use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use prost::Message;
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use umbra_crypto::mls::{self, VerifiedKeyPackage};
use umbra_crypto::{Identity, identity::IdentitySecrets};
use umbra_net::dial::Route;
use umbra_wire::e2e::{Content, DeviceAddress, GroupMeta, Leaving, content};
use umbra_wire::invite::Invite;
use umbra_wire::proto::{
    DeviceKeys, Login, Register, RelayCredentials, UploadKeyPackages, client_frame, server_frame,
};
use umbra_wire::proxy::ProxyLink;

use crate::conn::ServerConn;
use crate::mls_store::Provider;
use crate::model::{Contact, Conversation, Event, HistoryEntry};
use crate::outbox::{self, Recipient};
use crate::profile::{Profile, get_setting, set_setting};
use crate::{ClientError, inbox, now_ms};

/// Envelopes `sync` acknowledges per confirmed request.
const ACK_BATCH: usize = 500;
/// How often `listen` pings an otherwise quiet connection.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);
/// First and longest wait before `listen` reconnects.
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Key packages uploaded at a time.
const KEY_PACKAGE_BATCH: usize = 50;
/// Below this many left, a login uploads a new batch.
const KEY_PACKAGE_LOW_WATER: u32 = 20;

/// A registered profile, ready to use.
pub struct Client {
    pub(crate) profile: Profile,
    pub(crate) crypto: RustCrypto,
    pub(crate) identity: Identity,
    pub(crate) invite: Invite,
    pub(crate) me: DeviceAddress,
    device_id: Vec<u8>,
    proxy: Option<ProxyLink>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn setting(conn: &Connection, key: &str) -> Result<Vec<u8>, ClientError> {
    get_setting(conn, key)?
        .ok_or_else(|| ClientError::Protocol(format!("profile is missing `{key}`")))
}

/// Checks a username the way the server does, to fail early and clearly.
pub fn validate_username(username: &str) -> Result<(), ClientError> {
    let ok = (3..=32).contains(&username.len())
        && username.starts_with(|c: char| c.is_ascii_lowercase())
        && username
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ClientError::Invalid(format!(
            "`{username}` is not a valid username: use 3 to 32 characters a-z, 0-9, '_', '.', '-', \
             starting with a letter"
        )))
    }
}

impl Client {
    /// Creates an account on the server named by `invite_link` and stores it
    /// in the profile directory.
    pub async fn register(
        dir: &Path,
        invite_link: &str,
        username: &str,
        proxy: Option<ProxyLink>,
    ) -> Result<Self, ClientError> {
        validate_username(username)?;
        let invite = Invite::parse(invite_link)?;
        let profile = Profile::open(dir)?;
        if let Some(existing) = get_setting(profile.conn(), "username")? {
            return Err(ClientError::AlreadyRegistered(
                dir.to_path_buf(),
                String::from_utf8_lossy(&existing).into_owned(),
            ));
        }
        let identity = Identity::generate(username)?;
        let token: [u8; 32] = random_bytes();
        let route = match &proxy {
            Some(link) => Route::Proxy(link.clone()),
            None => Route::Direct(invite.address()),
        };
        let mut server = ServerConn::open(&invite, &route).await?;
        let hh = server.handshake_hash();
        let mut signed = b"umbra-register-v1".to_vec();
        signed.extend_from_slice(&hh);
        signed.extend_from_slice(username.as_bytes());
        signed.extend_from_slice(&identity.identity_key());
        signed.extend_from_slice(&identity.sealing_key());
        let register = Register {
            username: username.to_string(),
            device: Some(DeviceKeys {
                identity_key: identity.identity_key(),
                sealing_key: identity.sealing_key().to_vec(),
            }),
            signature: identity.sign(&signed)?,
            delivery_token_hash: Sha256::digest(token).to_vec(),
        };
        let registered = match server.call(client_frame::Body::Register(register)).await? {
            server_frame::Body::Registered(r) => r,
            other => return Err(ClientError::Protocol(format!("{other:?}"))),
        };
        let secrets = identity.secrets()?;
        {
            let tx = profile.write()?;
            set_setting(&tx, "invite", invite.to_string().as_bytes())?;
            set_setting(&tx, "username", username.as_bytes())?;
            set_setting(&tx, "device_id", &registered.device_id)?;
            set_setting(&tx, "mailbox_id", &registered.mailbox_id)?;
            set_setting(&tx, "identity_keypair", &secrets.identity_keypair)?;
            set_setting(&tx, "sealing_private", &secrets.sealing_private)?;
            set_setting(&tx, "delivery_token", &token)?;
            if let Some(link) = &proxy {
                set_setting(&tx, "proxy", link.to_string().as_bytes())?;
            }
            tx.commit()?;
        }
        let mut client = Self::open(dir)?;
        client.login(&mut server).await?;
        server.close().await;
        Ok(client)
    }

    /// Opens an existing profile.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        if !dir.join("profile.db").exists() {
            return Err(ClientError::NotRegistered(dir.to_path_buf()));
        }
        let profile = Profile::open(dir)?;
        let conn = profile.conn();
        let Some(username) = get_setting(conn, "username")? else {
            return Err(ClientError::NotRegistered(dir.to_path_buf()));
        };
        let username = String::from_utf8_lossy(&username).into_owned();
        let invite = Invite::parse(&String::from_utf8_lossy(&setting(conn, "invite")?))?;
        let sealing: [u8; 32] = setting(conn, "sealing_private")?
            .try_into()
            .map_err(|_| ClientError::Protocol("corrupt sealing key".into()))?;
        let identity = Identity::from_secrets(
            &username,
            &IdentitySecrets {
                identity_keypair: setting(conn, "identity_keypair")?,
                sealing_private: sealing,
            },
        )?;
        let me = DeviceAddress {
            username: username.clone(),
            mailbox_id: setting(conn, "mailbox_id")?,
            sealing_key: identity.sealing_key().to_vec(),
            delivery_token: setting(conn, "delivery_token")?,
        };
        let device_id = setting(conn, "device_id")?;
        let proxy = match get_setting(conn, "proxy")? {
            Some(text) => Some(ProxyLink::parse(&String::from_utf8_lossy(&text))?),
            None => None,
        };
        Ok(Self {
            profile,
            crypto: RustCrypto::default(),
            identity,
            invite,
            me,
            device_id,
            proxy,
        })
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

    /// This device's mailbox id (what the server files our envelopes under).
    pub fn mailbox_id(&self) -> &[u8] {
        &self.me.mailbox_id
    }

    /// The server this profile belongs to.
    pub fn invite(&self) -> &Invite {
        &self.invite
    }

    /// Logs `server` in as this device and tops up key packages.
    pub async fn login(&mut self, server: &mut ServerConn) -> Result<(), ClientError> {
        let mut signed = b"umbra-login-v1".to_vec();
        signed.extend_from_slice(&server.handshake_hash());
        let login = Login {
            device_id: self.device_id.clone(),
            signature: self.identity.sign(&signed)?,
        };
        let left = match server.call(client_frame::Body::Login(login)).await? {
            server_frame::Body::LoggedIn(l) => l.key_packages_left,
            other => return Err(ClientError::Protocol(format!("{other:?}"))),
        };
        if left < KEY_PACKAGE_LOW_WATER {
            let upload = {
                let tx = self.profile.write()?;
                let provider = Provider::new(&self.crypto, &tx);
                let mut kps = Vec::with_capacity(KEY_PACKAGE_BATCH);
                for _ in 0..KEY_PACKAGE_BATCH {
                    kps.push(mls::new_key_package(&provider, &self.identity, false)?);
                }
                let last_resort = mls::new_key_package(&provider, &self.identity, true)?;
                tx.commit()?;
                UploadKeyPackages {
                    key_packages: kps,
                    last_resort,
                }
            };
            server
                .call(client_frame::Body::UploadKeyPackages(upload))
                .await?;
        }
        Ok(())
    }

    fn content(&self, body: content::Body) -> Content {
        Content {
            message_id: random_bytes::<16>().to_vec(),
            sent_at_ms: now_ms(),
            sender: Some(self.me.clone()),
            body: Some(body),
        }
    }

    /// Sends what the outbox holds (from this or an earlier, interrupted run).
    pub async fn flush_outbox(&mut self) -> Result<Vec<Event>, ClientError> {
        if outbox::pending(self.profile.conn())? == 0 {
            return Ok(Vec::new());
        }
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let warnings = outbox::flush(self.profile.conn(), &mut server).await?;
        server.close().await;
        Ok(warnings)
    }

    /// Flushes what earlier commands left; messages the server still holds
    /// back stay queued and become a warning instead of blocking this command.
    async fn flush_earlier(&mut self) -> Result<Vec<Event>, ClientError> {
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
    async fn flush_now(&mut self) -> Result<Vec<Event>, ClientError> {
        match self.flush_outbox().await {
            Err(e @ (ClientError::Unreachable { .. } | ClientError::Net(_))) => {
                let n = outbox::pending(self.profile.conn())?;
                Err(ClientError::Queued(n, e.to_string()))
            }
            other => other,
        }
    }

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
    async fn claim_all(
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
    async fn ensure_addresses(&mut self, group_id: &[u8]) -> Result<(), ClientError> {
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

    /// Sends a 1:1 message, starting the conversation if needed.
    pub async fn send(&mut self, to: &str, text: &str) -> Result<Vec<Event>, ClientError> {
        let mut events = self.flush_earlier().await?;
        let existing = direct_conversation(self.profile.conn(), to)?;
        let group_id = match existing {
            Some(g) => g,
            None => self.start_conversation(to, None, &[to]).await?,
        };
        self.post(&group_id, text)?;
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Creates a conversation with `members` (1:1 when `name` is None).
    async fn start_conversation(
        &mut self,
        display: &str,
        name: Option<&str>,
        members: &[&str],
    ) -> Result<Vec<u8>, ClientError> {
        let claimed = self.claim_all(members).await?;
        let tx = self.profile.write()?;
        let provider = Provider::new(&self.crypto, &tx);
        let mut group = mls::create_group(&provider, &self.identity)?;
        let kps: Vec<VerifiedKeyPackage> = claimed.iter().map(|(k, _)| k.clone()).collect();
        let commit = mls::add_members(&provider, &self.identity, &mut group, &kps)?;
        let group_id = mls::group_id(&group);
        let recipients: Vec<Recipient> = claimed.into_iter().map(|(_, r)| r).collect();
        for r in &recipients {
            save_address(&tx, r)?;
            // Our meta message gives them our delivery token.
            inbox::mark_announced(&tx, &group_id, &r.username)?;
        }
        if let Some(welcome) = &commit.welcome {
            outbox::enqueue(&tx, welcome, &recipients)?;
        }
        let (kind, peer) = match name {
            None => ("direct", Some(display)),
            Some(_) => ("group", None),
        };
        tx.execute(
            "INSERT INTO conversations (group_id, kind, name, peer, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![group_id, kind, display, peer, now_ms() as i64],
        )?;
        let meta = self.meta_content(&tx, &group, name.unwrap_or(""))?;
        let ct = mls::encrypt(&provider, &self.identity, &mut group, &meta.encode_to_vec())?;
        outbox::enqueue(&tx, &ct, &recipients)?;
        if name.is_some() {
            inbox::record_event(
                &tx,
                &group_id,
                self.username(),
                &format!("you created the group with {}", members.join(", ")),
            )?;
        }
        tx.commit()?;
        Ok(group_id)
    }

    fn meta_content(
        &self,
        conn: &Connection,
        group: &openmls::prelude::MlsGroup,
        name: &str,
    ) -> Result<Content, ClientError> {
        let mut members = Vec::new();
        for m in mls::members(group) {
            if m.username == self.username() {
                continue;
            }
            if let Some(r) = contact_address(conn, &m.username)? {
                members.push(DeviceAddress {
                    username: r.username,
                    mailbox_id: r.mailbox_id,
                    sealing_key: r.sealing_key.to_vec(),
                    delivery_token: Vec::new(),
                });
            }
        }
        Ok(self.content(content::Body::Meta(GroupMeta {
            name: name.to_string(),
            members,
        })))
    }

    /// Encrypts `text` for a conversation and queues it.
    fn post(&mut self, group_id: &[u8], text: &str) -> Result<(), ClientError> {
        let content = self.content(content::Body::Text(text.to_string()));
        let tx = self.profile.write()?;
        let provider = Provider::new(&self.crypto, &tx);
        let mut group = required_group(&provider, group_id)?;
        let ct = mls::encrypt(
            &provider,
            &self.identity,
            &mut group,
            &content.encode_to_vec(),
        )?;
        let recipients = group_recipients(&tx, &group, self.username())?;
        outbox::enqueue(&tx, &ct, &recipients)?;
        tx.execute(
            "INSERT INTO history (group_id, message_id, sender, body, kind, sent_ms, received_ms, outgoing)
             VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?5, 1)",
            params![group_id, content.message_id, self.username(), text, content.sent_at_ms as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn group_id_by_name(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        self.profile
            .conn()
            .query_row(
                "SELECT group_id FROM conversations WHERE name = ?1 AND kind = 'group' AND active = 1",
                [name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| ClientError::UnknownConversation(name.to_string()))
    }

    /// Creates a group conversation.
    pub async fn group_create(
        &mut self,
        name: &str,
        members: &[&str],
    ) -> Result<Vec<Event>, ClientError> {
        if name.is_empty() || name.len() > 64 {
            return Err(ClientError::Invalid(
                "a group name has 1 to 64 characters".into(),
            ));
        }
        if self.group_id_by_name(name).is_ok() {
            return Err(ClientError::ConversationExists(name.to_string()));
        }
        if members.is_empty() {
            return Err(ClientError::Invalid(
                "name at least one member to add".into(),
            ));
        }
        let mut events = self.flush_earlier().await?;
        self.start_conversation(name, Some(name), members).await?;
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Adds members to a group.
    pub async fn group_add(
        &mut self,
        name: &str,
        members: &[&str],
    ) -> Result<Vec<Event>, ClientError> {
        let group_id = self.group_id_by_name(name)?;
        // Apply what others changed first, so our commit builds on it.
        let mut events = self.sync().await?;
        self.ensure_addresses(&group_id).await?;
        let claimed = self.claim_all(members).await?;
        {
            let tx = self.profile.write()?;
            let provider = Provider::new(&self.crypto, &tx);
            let mut group = required_group(&provider, &group_id)?;
            let existing = group_recipients(&tx, &group, self.username())?;
            let kps: Vec<VerifiedKeyPackage> = claimed.iter().map(|(k, _)| k.clone()).collect();
            let commit = mls::add_members(&provider, &self.identity, &mut group, &kps)?;
            outbox::enqueue(&tx, &commit.commit, &existing)?;
            let added: Vec<Recipient> = claimed.into_iter().map(|(_, r)| r).collect();
            for r in &added {
                save_address(&tx, r)?;
                inbox::mark_announced(&tx, &group_id, &r.username)?;
            }
            if let Some(w) = &commit.welcome {
                outbox::enqueue(&tx, w, &added)?;
            }
            let meta = self.meta_content(&tx, &group, name)?;
            let ct = mls::encrypt(&provider, &self.identity, &mut group, &meta.encode_to_vec())?;
            let everyone = group_recipients(&tx, &group, self.username())?;
            outbox::enqueue(&tx, &ct, &everyone)?;
            inbox::record_event(
                &tx,
                &group_id,
                self.username(),
                &format!("you added {}", members.join(", ")),
            )?;
            tx.commit()?;
        }
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Removes a member from a group.
    pub async fn group_remove(
        &mut self,
        name: &str,
        member: &str,
    ) -> Result<Vec<Event>, ClientError> {
        let group_id = self.group_id_by_name(name)?;
        // Apply what others changed first, so our commit builds on it.
        let mut events = self.sync().await?;
        self.ensure_addresses(&group_id).await?;
        {
            let tx = self.profile.write()?;
            let provider = Provider::new(&self.crypto, &tx);
            let mut group = required_group(&provider, &group_id)?;
            if !mls::members(&group).iter().any(|m| m.username == member) {
                return Err(ClientError::Invalid(format!(
                    "`{member}` is not in `{name}`"
                )));
            }
            // The removed member gets the commit too, so they learn of it.
            let recipients = group_recipients(&tx, &group, self.username())?;
            let commit = mls::remove_members(&provider, &self.identity, &mut group, &[member])?;
            outbox::enqueue(&tx, &commit.commit, &recipients)?;
            inbox::record_event(
                &tx,
                &group_id,
                self.username(),
                &format!("you removed {member}"),
            )?;
            tx.commit()?;
        }
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Leaves a group: tells the members, who remove us, and forgets it.
    pub async fn group_leave(&mut self, name: &str) -> Result<Vec<Event>, ClientError> {
        let group_id = self.group_id_by_name(name)?;
        // Apply what others changed first, so our commit builds on it.
        let mut events = self.sync().await?;
        self.ensure_addresses(&group_id).await?;
        {
            let content = self.content(content::Body::Leaving(Leaving {}));
            let tx = self.profile.write()?;
            let provider = Provider::new(&self.crypto, &tx);
            let mut group = required_group(&provider, &group_id)?;
            let ct = mls::encrypt(
                &provider,
                &self.identity,
                &mut group,
                &content.encode_to_vec(),
            )?;
            let recipients = group_recipients(&tx, &group, self.username())?;
            outbox::enqueue(&tx, &ct, &recipients)?;
            mls::delete_group(&provider, &mut group)?;
            tx.execute(
                "UPDATE conversations SET active = 0 WHERE group_id = ?1",
                [&group_id],
            )?;
            inbox::record_event(&tx, &group_id, self.username(), "you left the group")?;
            tx.commit()?;
        }
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Sends a message to a group.
    pub async fn group_send(&mut self, name: &str, text: &str) -> Result<Vec<Event>, ClientError> {
        let group_id = self.group_id_by_name(name)?;
        let mut events = self.flush_earlier().await?;
        self.ensure_addresses(&group_id).await?;
        self.post(&group_id, text)?;
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Receives everything waiting on the server, applies it, and returns
    /// what happened.
    pub async fn sync(&mut self) -> Result<Vec<Event>, ClientError> {
        let mut events = self.flush_earlier().await?;
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        self.login(&mut server).await?;
        // Acknowledged in confirmed batches: when sync returns, the server has
        // deleted what this device applied.
        let mut applied = Vec::new();
        loop {
            match server.next_push().await? {
                Some(server_frame::Body::Deliver(d)) => {
                    events.extend(inbox::apply(self, &d)?);
                    applied.push(d.envelope_id);
                    if applied.len() >= ACK_BATCH {
                        server.ack_confirmed(std::mem::take(&mut applied)).await?;
                    }
                }
                Some(server_frame::Body::QueueDrained(_)) | None => break,
                Some(_) => {}
            }
        }
        server.ack_confirmed(applied).await?;
        server.close().await;
        events.extend(self.flush_earlier().await?);
        Ok(events)
    }

    /// Receives until `stop` resolves, handing each event to `on_event` as
    /// it happens. Keeps the connection alive with pings (so a proxy's idle
    /// timeout does not cut it), and reconnects with backoff when it drops.
    pub async fn listen(
        &mut self,
        mut on_event: impl FnMut(&Event),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClientError> {
        tokio::pin!(stop);
        let mut backoff = RECONNECT_MIN;
        loop {
            match self
                .listen_once(&mut on_event, &mut stop, &mut backoff)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e @ (ClientError::Net(_) | ClientError::Unreachable { .. })) => {
                    on_event(&Event::Warning {
                        text: format!(
                            "connection lost ({e}); reconnecting in {} s",
                            backoff.as_secs()
                        ),
                    });
                    tokio::select! {
                        _ = &mut stop => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One connection's worth of [`Client::listen`]; `Ok` when stopped.
    async fn listen_once(
        &mut self,
        on_event: &mut impl FnMut(&Event),
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        backoff: &mut std::time::Duration,
    ) -> Result<(), ClientError> {
        for e in self.flush_earlier().await? {
            on_event(&e);
        }
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        self.login(&mut server).await?;
        *backoff = RECONNECT_MIN;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        loop {
            let push = tokio::select! {
                _ = stop.as_mut() => break,
                _ = keepalive.tick() => {
                    server.ping().await?;
                    continue;
                }
                p = server.next_push() => p?,
            };
            match push {
                Some(server_frame::Body::Deliver(d)) => {
                    for e in inbox::apply(self, &d)? {
                        on_event(&e);
                    }
                    server.ack(vec![d.envelope_id]).await?;
                    if outbox::pending(self.profile.conn())? > 0 {
                        for e in self.flush_earlier().await? {
                            on_event(&e);
                        }
                    }
                }
                None => return Err(ClientError::Net(umbra_net::NetError::Closed)),
                Some(_) => {}
            }
        }
        server.close().await;
        Ok(())
    }

    /// Time-limited credentials for the call relay (TURN REST scheme). The
    /// username holds a random token, not our account name.
    pub async fn relay_credentials(&mut self) -> Result<RelayCredentials, ClientError> {
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        self.login(&mut server).await?;
        let body =
            client_frame::Body::GetRelayCredentials(umbra_wire::proto::GetRelayCredentials {});
        let creds = match server.call(body).await? {
            server_frame::Body::RelayCredentials(c) => c,
            other => return Err(ClientError::Protocol(format!("{other:?}"))),
        };
        server.close().await;
        Ok(creds)
    }

    /// History, oldest first; one conversation or all.
    pub fn history(
        &self,
        conversation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(
            "SELECT c.name, h.sender, h.body, h.kind, h.sent_ms, h.outgoing FROM history h
             JOIN conversations c ON c.group_id = h.group_id
             WHERE (?1 IS NULL OR c.name = ?1)
             ORDER BY h.id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![conversation, limit as i64], |r| {
            Ok(HistoryEntry {
                conversation: r.get(0)?,
                sender: r.get(1)?,
                body: r.get(2)?,
                kind: r.get(3)?,
                sent_ms: r.get::<_, i64>(4)? as u64,
                outgoing: r.get(5)?,
            })
        })?;
        let mut out: Vec<HistoryEntry> = rows.collect::<Result<_, _>>()?;
        out.reverse();
        if let (true, Some(name)) = (out.is_empty(), conversation) {
            let known: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM conversations WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if !known {
                return Err(ClientError::UnknownConversation(name.to_string()));
            }
        }
        Ok(out)
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

    /// Conversations with their members.
    pub fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(
            "SELECT group_id, name, kind, active FROM conversations ORDER BY created_ms",
        )?;
        let rows: Vec<(Vec<u8>, String, String, bool)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let provider = Provider::new(&self.crypto, conn);
        let mut out = Vec::new();
        for (gid, name, kind, active) in rows {
            let group = if active {
                mls::load_group(&provider, &gid)?
            } else {
                None
            };
            out.push(Conversation {
                name,
                kind,
                members: group
                    .as_ref()
                    .map(|g| mls::members(g).into_iter().map(|m| m.username).collect())
                    .unwrap_or_default(),
                active: group.is_some(),
                epoch: group.as_ref().map(mls::epoch).unwrap_or(0),
            });
        }
        Ok(out)
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

/// The MLS state of a conversation we are in.
fn required_group(
    provider: &Provider<'_>,
    group_id: &[u8],
) -> Result<openmls::prelude::MlsGroup, ClientError> {
    mls::load_group(provider, group_id)?
        .ok_or_else(|| ClientError::Protocol("conversation state missing from the profile".into()))
}

/// Pins `key` for `username` on first sight; refuses a different one later.
pub(crate) fn check_identity(
    conn: &Connection,
    username: &str,
    key: &[u8],
) -> Result<(), ClientError> {
    let known: Option<Vec<u8>> = conn
        .query_row(
            "SELECT identity_key FROM contacts WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?;
    match known {
        Some(k) if k == key => Ok(()),
        Some(_) => Err(ClientError::KeyChanged(username.to_string())),
        None => {
            conn.execute(
                "INSERT INTO contacts (username, identity_key, added_ms) VALUES (?1, ?2, ?3)",
                params![username, key, now_ms() as i64],
            )?;
            Ok(())
        }
    }
}

fn contact_token(conn: &Connection, username: &str) -> Result<Option<Vec<u8>>, ClientError> {
    Ok(conn
        .query_row(
            "SELECT delivery_token FROM contacts WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

/// A contact's device address, if we know it.
pub(crate) fn contact_address(
    conn: &Connection,
    username: &str,
) -> Result<Option<Recipient>, ClientError> {
    type Row = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
    let row: Option<Row> = conn
        .query_row(
            "SELECT mailbox_id, sealing_key, delivery_token FROM contacts WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(match row {
        Some((Some(mailbox_id), Some(sealing), token)) => {
            let Ok(sealing_key) = <[u8; 32]>::try_from(sealing.as_slice()) else {
                return Ok(None);
            };
            Some(Recipient {
                username: username.to_string(),
                mailbox_id,
                sealing_key,
                delivery_token: token,
            })
        }
        _ => None,
    })
}

fn save_address(conn: &Connection, r: &Recipient) -> Result<(), ClientError> {
    conn.execute(
        "UPDATE contacts SET mailbox_id = ?2, sealing_key = ?3 WHERE username = ?1",
        params![r.username, r.mailbox_id, r.sealing_key.to_vec()],
    )?;
    Ok(())
}

/// Everyone in the group but us, with their addresses.
pub(crate) fn group_recipients(
    conn: &Connection,
    group: &openmls::prelude::MlsGroup,
    me: &str,
) -> Result<Vec<Recipient>, ClientError> {
    let mut out = Vec::new();
    for m in mls::members(group) {
        if m.username == me {
            continue;
        }
        if let Some(r) = contact_address(conn, &m.username)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// The 1:1 conversation with `peer`; when both sides started one at the same
/// time, both pick the one with the lowest group id.
fn direct_conversation(conn: &Connection, peer: &str) -> Result<Option<Vec<u8>>, ClientError> {
    Ok(conn
        .query_row(
            "SELECT group_id FROM conversations WHERE kind = 'direct' AND peer = ?1 AND active = 1
             ORDER BY group_id LIMIT 1",
            [peer],
            |r| r.get(0),
        )
        .optional()?)
}

//! The account: registering this device, logging in (which also tops up
//! key packages) and asking for call relay credentials.

use std::path::Path;

use openmls::prelude::Ciphersuite;
use sha2::{Digest, Sha256};
use umbra_crypto::mls;
use umbra_crypto::{AccountKey, Identity};
use umbra_net::dial::Route;
use umbra_wire::invite::Invite;
use umbra_wire::proto::{
    DeviceKeys, Login, Register, RelayCredentials, UploadKeyPackages, client_frame, server_frame,
};
use umbra_wire::proxy::ProxyLink;
use umbra_wire::suites;

use crate::ClientError;
use crate::client::{Client, random_bytes};
use crate::conn::ServerConn;
use crate::mls_store::Provider;
use crate::outbox;
use crate::profile::{Profile, get_setting, set_setting};

/// Key packages uploaded at a time.
const KEY_PACKAGE_BATCH: usize = 50;
/// Below this many left, a login uploads a new batch.
const KEY_PACKAGE_LOW_WATER: u32 = 20;

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

/// A new profile in `dir`, encrypted under a new key kept under
/// `passphrase` (or unlocked with it, if the directory already has a key);
/// refused if it already holds an account.
pub(crate) fn new_profile(dir: &Path, passphrase: Option<&str>) -> Result<Profile, ClientError> {
    crate::profile::make_dir(dir)?;
    let key = match crate::profile_key::protection(dir)? {
        None => Some(crate::profile_key::create(dir, passphrase)?),
        Some(_) => crate::profile_key::unlock(dir, passphrase)?,
    };
    let profile = Profile::open(dir, key.as_ref())?;
    if let Some(existing) = get_setting(profile.conn(), "username")? {
        return Err(ClientError::AlreadyRegistered(
            dir.to_path_buf(),
            String::from_utf8_lossy(&existing).into_owned(),
        ));
    }
    Ok(profile)
}

/// What a profile keeps of a device the server just created.
pub(crate) struct NewDevice<'a> {
    pub invite: &'a Invite,
    pub identity: &'a Identity,
    pub device_id: &'a [u8],
    pub mailbox_id: &'a [u8],
    pub token: &'a [u8; 32],
    pub proxy: Option<&'a ProxyLink>,
}

/// Keeps a new device's settings in the profile (within `tx`).
pub(crate) fn keep_device(
    tx: &rusqlite::Connection,
    d: &NewDevice<'_>,
    hello: &umbra_wire::proto::ServerHello,
) -> Result<(), ClientError> {
    let secrets = d.identity.secrets()?;
    set_setting(tx, "invite", d.invite.to_string().as_bytes())?;
    set_setting(tx, "username", d.identity.username().as_bytes())?;
    set_setting(tx, "device_id", d.device_id)?;
    set_setting(tx, "mailbox_id", d.mailbox_id)?;
    set_setting(tx, "identity_keypair", &secrets.identity_keypair)?;
    set_setting(tx, "sealing_private", &secrets.sealing_private)?;
    set_setting(tx, "delivery_token", d.token)?;
    outbox::remember_limit(tx, hello)?;
    if let Some(link) = d.proxy {
        set_setting(tx, "proxy", link.to_string().as_bytes())?;
    }
    Ok(())
}

impl Client {
    /// Creates an account on the server named by `invite_link` and stores it
    /// in the profile directory, encrypted under a new key kept under
    /// `passphrase` (`None`: kept beside the data, readable by whoever copies
    /// the directory).
    pub async fn register(
        dir: &Path,
        invite_link: &str,
        username: &str,
        proxy: Option<ProxyLink>,
        passphrase: Option<&str>,
    ) -> Result<Self, ClientError> {
        validate_username(username)?;
        let invite = Invite::parse(invite_link)?;
        let profile = new_profile(dir, passphrase)?;
        let mut identity = Identity::generate(username)?;
        // The account key vouches for this device, and for every device
        // linked later; it stays on this device.
        let account = AccountKey::generate()?;
        let certificate = crate::linking::certify(&account, &identity)?;
        identity.set_certificate(certificate.clone());
        let keys = DeviceKeys {
            identity_key: identity.identity_key(),
            sealing_key: identity.sealing_key().to_vec(),
        };
        let device_list = crate::linking::sign_list(&account, username, 1, vec![keys.clone()])?;
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
            device: Some(keys),
            signature: identity.sign(&signed)?,
            delivery_token_hash: Sha256::digest(token).to_vec(),
            device_list: Some(device_list.clone()),
        };
        let registered = match server.call(client_frame::Body::Register(register)).await? {
            server_frame::Body::Registered(r) => r,
            other => return Err(ClientError::Protocol(format!("{other:?}"))),
        };
        {
            let tx = profile.write()?;
            set_setting(&tx, "account_keypair", &account.to_bytes()?)?;
            keep_device(
                &tx,
                &NewDevice {
                    invite: &invite,
                    identity: &identity,
                    device_id: &registered.device_id,
                    mailbox_id: &registered.mailbox_id,
                    token: &token,
                    proxy: proxy.as_ref(),
                },
                server.hello(),
            )?;
            crate::linking::keep(&tx, &account.public(), &certificate, &device_list)?;
            tx.commit()?;
        }
        let mut client = Self::open_with_key(dir, profile.key())?;
        client.login(&mut server).await?;
        server.close().await;
        Ok(client)
    }

    /// Logs `server` in as this device and tops up key packages.
    pub async fn login(&mut self, server: &mut ServerConn) -> Result<(), ClientError> {
        self.login_session(server, false).await
    }

    /// Logs in as this device's main session, or as a signalling session
    /// (a call in progress: it takes online-only envelopes and does not
    /// replace the main session, so `umbra listen` keeps running).
    pub(crate) async fn login_session(
        &mut self,
        server: &mut ServerConn,
        signalling: bool,
    ) -> Result<(), ClientError> {
        let mut signed = b"umbra-login-v1".to_vec();
        signed.extend_from_slice(&server.handshake_hash());
        let login = Login {
            device_id: self.device_id.clone(),
            signature: self.identity.sign(&signed)?,
            signalling,
        };
        let logged_in = match server.call(client_frame::Body::Login(login)).await {
            Ok(server_frame::Body::LoggedIn(l)) => l,
            Ok(other) => return Err(ClientError::Protocol(format!("{other:?}"))),
            Err(ClientError::Server {
                code: umbra_wire::proto::ErrorCode::UnknownDevice,
                ..
            }) => return Err(ClientError::Unlinked(self.username().to_string())),
            Err(e) => return Err(e),
        };
        // Suites running low, the post-quantum one first: a device whose
        // classical packages (which say it supports post-quantum) were
        // stored while its post-quantum ones were not would look to others
        // like a server withholding them. A server that counts no
        // post-quantum packages is older than this client and would keep
        // them as classical: none are sent to it.
        let mut low = Vec::new();
        if let Some(pq) = logged_in
            .key_package_counts
            .iter()
            .find(|c| c.suite == u32::from(suites::POST_QUANTUM))
            && pq.left < KEY_PACKAGE_LOW_WATER
        {
            low.push(mls::POST_QUANTUM);
        }
        if logged_in.key_packages_left < KEY_PACKAGE_LOW_WATER {
            low.push(mls::CLASSICAL);
        }
        for suite in low {
            self.upload_key_packages(server, suite, false).await?;
        }
        Ok(())
    }

    /// Uploads a batch of key packages of `suite` (their leaves carrying
    /// this device's hosting statement, if it has one) and a last-resort
    /// one; with `replace`, the server first withdraws every package of the
    /// suite it held for us.
    pub(crate) async fn upload_key_packages(
        &mut self,
        server: &mut ServerConn,
        suite: Ciphersuite,
        replace: bool,
    ) -> Result<(), ClientError> {
        let upload = {
            let tx = self.profile.write()?;
            let hosting = crate::hosting::own(&tx)?;
            let provider = Provider::new(&self.crypto, &tx);
            let mut kps = Vec::with_capacity(KEY_PACKAGE_BATCH);
            for _ in 0..KEY_PACKAGE_BATCH {
                kps.push(mls::new_key_package(
                    &provider,
                    &self.identity,
                    suite,
                    false,
                    hosting.as_deref(),
                )?);
            }
            let last_resort =
                mls::new_key_package(&provider, &self.identity, suite, true, hosting.as_deref())?;
            tx.commit()?;
            UploadKeyPackages {
                key_packages: kps,
                last_resort,
                replace,
                suite: u32::from(mls::suite_code(suite)),
            }
        };
        server
            .call(client_frame::Body::UploadKeyPackages(upload))
            .await?;
        Ok(())
    }

    /// Time-limited credentials for the call relay (TURN REST scheme). The
    /// username holds a random token, not our account name.
    pub async fn relay_credentials(&mut self) -> Result<RelayCredentials, ClientError> {
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        self.login(&mut server).await?;
        let creds = relay_credentials_on(&mut server).await?;
        server.close().await;
        Ok(creds)
    }
}

/// Asks for relay credentials on a connection that is already logged in.
pub(crate) async fn relay_credentials_on(
    server: &mut ServerConn,
) -> Result<RelayCredentials, ClientError> {
    let body = client_frame::Body::GetRelayCredentials(umbra_wire::proto::GetRelayCredentials {});
    match server.call(body).await? {
        server_frame::Body::RelayCredentials(c) => Ok(c),
        other => Err(ClientError::Protocol(format!("{other:?}"))),
    }
}

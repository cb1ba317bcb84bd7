//! Linking and unlinking this account's devices, and listing them.
//!
//! Linking, in order: the existing device (the one holding the account
//! key) shows a code; the new device, given the code, leaves its keys in
//! the code's request slot on the server, sealed under the code, and shows
//! their fingerprint; the existing device takes them, shows the same
//! fingerprint, and once the user confirms, signs the device's certificate
//! and the new device list, has the server link the device, and leaves the
//! reply (certificate, list, ids) in the reply slot; the new device takes
//! it, keeps it in its profile and logs in (uploading key packages that
//! carry its certificate); the existing device then adds it to every
//! conversation (through the epoch ledger), so it shows each conversation
//! from then on. Unlinking removes the device from every conversation
//! first, then from the list: it cannot read what is sent after.

use std::time::{Duration, Instant};

use openmls::prelude::Ciphersuite;
use prost::Message;
use sha2::{Digest, Sha256};
use umbra_crypto::mls::{self, VerifiedKeyPackage};
use umbra_crypto::{AccountKey, Identity};
use umbra_net::dial::Route;
use umbra_wire::devices::check_list;
use umbra_wire::e2e::{LinkReply, LinkRequest};
use umbra_wire::invite::Invite;
use umbra_wire::proto::{
    DeviceKeys, DeviceList, ErrorCode, PutLinkSlot, SignedDeviceList, TakeLinkSlot, UpdateDevices,
    client_frame, server_frame,
};
use umbra_wire::proxy::ProxyLink;

use crate::ClientError;
use crate::account::{NewDevice, keep_device, new_profile};
use crate::client::{Client, random_bytes};
use crate::conn::ServerConn;
use crate::contacts::{check_member, group_recipients};
use crate::ledger::Staged;
use crate::linking::{Leg, LinkSecret, fingerprint, link_text};
use crate::mls_store::Provider;
use crate::outbox::{self, Recipient};
use crate::profile::get_setting;

/// How often a waiting device looks in its slot.
const POLL: Duration = Duration::from_millis(500);

/// One of this account's devices.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OwnDevice {
    /// Its fingerprint, which also names it to `umbra devices unlink`.
    pub id: String,
    /// This device.
    pub this: bool,
    /// The device that made the account (it holds the account key).
    pub primary: bool,
}

/// A link this device offers: the code and the link that carries it.
#[derive(Debug, Clone)]
pub struct LinkOffer {
    secret: LinkSecret,
    /// `umbra://link?...`: the server's invite and the code (the QR code).
    pub link: String,
    /// The code alone, to type with the invite.
    pub code: String,
}

/// A device this one linked.
#[derive(Debug, Clone)]
pub struct Linked {
    /// Its fingerprint (its id in `umbra devices`).
    pub id: String,
    /// Its identity key.
    pub identity_key: Vec<u8>,
}

/// A device that asked to be linked.
#[derive(Debug, Clone)]
pub struct LinkAsk {
    request: LinkRequest,
    /// What both devices show, for the user to compare.
    pub fingerprint: String,
}

/// Takes what waits in `slot` (empty: nothing yet).
async fn take_slot(server: &mut ServerConn, slot: Vec<u8>) -> Result<Vec<u8>, ClientError> {
    match server
        .call(client_frame::Body::TakeLinkSlot(TakeLinkSlot { slot }))
        .await?
    {
        server_frame::Body::LinkSlot(s) => Ok(s.data),
        other => Err(ClientError::Protocol(format!("{other:?}"))),
    }
}

/// Waits for something in `slot`, until `timeout`.
async fn wait_slot(
    invite: &Invite,
    route: &Route,
    slot: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let deadline = Instant::now() + timeout;
    let mut server = ServerConn::open(invite, route).await?;
    loop {
        let data = take_slot(&mut server, slot.clone()).await?;
        if !data.is_empty() {
            server.close().await;
            return Ok(data);
        }
        if Instant::now() >= deadline {
            server.close().await;
            return Err(ClientError::Invalid(format!(
                "no answer from the other device within {} s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn put_slot(
    invite: &Invite,
    route: &Route,
    slot: Vec<u8>,
    data: Vec<u8>,
) -> Result<(), ClientError> {
    let mut server = ServerConn::open(invite, route).await?;
    let r = server
        .call(client_frame::Body::PutLinkSlot(PutLinkSlot { slot, data }))
        .await;
    server.close().await;
    match r? {
        server_frame::Body::LinkSlot(_) => Ok(()),
        other => Err(ClientError::Protocol(format!("{other:?}"))),
    }
}

impl Client {
    /// The account key, which only the device that made the account holds.
    fn account_key(&self) -> Result<AccountKey, ClientError> {
        let bytes = get_setting(self.profile.conn(), "account_keypair")?.ok_or_else(|| {
            ClientError::Invalid(
                "only the device that created the account can link or unlink devices".into(),
            )
        })?;
        Ok(AccountKey::from_bytes(&bytes)?)
    }

    /// The account's device list as the server has it, checked against our
    /// account key.
    async fn current_list(&self) -> Result<DeviceList, ClientError> {
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let listing = server.fetch_devices(self.username(), &[]).await?;
        server.close().await;
        let own = get_setting(self.profile.conn(), "account_key")?;
        let signed = listing
            .device_list
            .ok_or_else(|| ClientError::Unvouched(self.username().to_string()))?;
        check_list(&signed, self.username(), own.as_deref())
            .map_err(|_| ClientError::Unvouched(self.username().to_string()))
    }

    /// This account's devices, from the list its account key signed.
    pub async fn own_devices(&mut self) -> Result<Vec<OwnDevice>, ClientError> {
        let list = self.current_list().await?;
        let own = self.identity.identity_key();
        Ok(list
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| OwnDevice {
                id: fingerprint(&d.identity_key, &d.sealing_key),
                this: d.identity_key == own,
                primary: i == 0,
            })
            .collect())
    }

    /// Starts linking a new device: its code.
    pub fn link_offer(&self) -> Result<LinkOffer, ClientError> {
        self.account_key()?;
        let secret = LinkSecret::generate();
        Ok(LinkOffer {
            link: link_text(&self.invite, &secret),
            code: secret.code(),
            secret,
        })
    }

    /// Waits (up to `timeout`) for the new device to ask.
    pub async fn link_wait(
        &self,
        offer: &LinkOffer,
        timeout: Duration,
    ) -> Result<LinkAsk, ClientError> {
        let sealed = wait_slot(
            &self.invite,
            &self.route(),
            offer.secret.slot(Leg::Request),
            timeout,
        )
        .await?;
        let request = LinkRequest::decode(offer.secret.open(Leg::Request, &sealed)?.as_slice())
            .map_err(|_| ClientError::Protocol("malformed link request".into()))?;
        if request.identity_key.len() != 32
            || request.sealing_key.len() != 32
            || request.delivery_token_hash.len() != 32
        {
            return Err(ClientError::Protocol("malformed link request".into()));
        }
        Ok(LinkAsk {
            fingerprint: fingerprint(&request.identity_key, &request.sealing_key),
            request,
        })
    }

    /// Links the device that asked (the user confirmed its fingerprint):
    /// the server links it under a new list, and the device gets its
    /// certificate.
    pub async fn link_approve(
        &mut self,
        offer: &LinkOffer,
        ask: &LinkAsk,
    ) -> Result<Linked, ClientError> {
        let account = self.account_key()?;
        let current = self.current_list().await?;
        let keys = DeviceKeys {
            identity_key: ask.request.identity_key.clone(),
            sealing_key: ask.request.sealing_key.clone(),
        };
        if current
            .devices
            .iter()
            .any(|d| d.identity_key == keys.identity_key)
        {
            return Err(ClientError::Invalid("that device is linked already".into()));
        }
        let mut devices = current.devices.clone();
        devices.push(keys.clone());
        if devices.len() > umbra_wire::devices::MAX_DEVICES {
            return Err(ClientError::Invalid(format!(
                "an account may have at most {} devices: unlink one first",
                umbra_wire::devices::MAX_DEVICES
            )));
        }
        let list =
            crate::linking::sign_list(&account, self.username(), current.version + 1, devices)?;
        let certificate = crate::linking::certify_device(&account, self.username(), &keys)?;
        let updated = self
            .update_devices(&list, Some(&keys), &ask.request.delivery_token_hash)
            .await?;
        crate::profile::set_setting(self.profile.conn(), "device_list", &list.encode_to_vec())?;
        let reply = LinkReply {
            username: self.username().to_string(),
            device_id: updated.0,
            mailbox_id: updated.1,
            certificate,
            device_list: list.encode_to_vec(),
        };
        put_slot(
            &self.invite,
            &self.route(),
            offer.secret.slot(Leg::Reply),
            offer.secret.seal(Leg::Reply, &reply.encode_to_vec())?,
        )
        .await?;
        Ok(Linked {
            id: ask.fingerprint.clone(),
            identity_key: keys.identity_key,
        })
    }

    /// Sends a new device list (and the device it links) to the server.
    async fn update_devices(
        &self,
        list: &SignedDeviceList,
        new_device: Option<&DeviceKeys>,
        token_hash: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
        let mut server = ServerConn::open(&self.invite, &self.route()).await?;
        let r = server
            .call(client_frame::Body::UpdateDevices(UpdateDevices {
                device_list: Some(list.clone()),
                new_device: new_device.cloned(),
                new_device_token_hash: token_hash.to_vec(),
            }))
            .await;
        server.close().await;
        match r? {
            server_frame::Body::DevicesUpdated(u) => Ok((u.device_id, u.mailbox_id)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Adds our device `identity_key` (just linked) to every conversation
    /// this device is in, once it has published key packages (waiting up
    /// to `timeout`). Returns how many conversations it was added to.
    pub async fn add_device_everywhere(
        &mut self,
        identity_key: &[u8],
        timeout: Duration,
    ) -> Result<usize, ClientError> {
        let groups: Vec<(Vec<u8>, String, String)> = {
            let mut stmt = self.profile.conn().prepare(
                "SELECT group_id, kind, name FROM conversations WHERE active = 1 ORDER BY created_ms",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut added = 0;
        for (group_id, kind, name) in groups {
            let suite = {
                let provider = Provider::new(&self.crypto, self.profile.conn());
                match mls::load_group(&provider, &group_id)? {
                    Some(g) => mls::group_suite(&g),
                    None => continue,
                }
            };
            let claimed = self.claim_own(identity_key, suite, timeout).await?;
            let meta_name = if kind == "group" { name } else { String::new() };
            let own = self.identity.identity_key();
            let (made, _) = self
                .commit_through_ledger(
                    &group_id,
                    |tx, provider, group| {
                        if mls::members(group)
                            .iter()
                            .any(|m| m.identity_key == identity_key)
                        {
                            return Ok(None);
                        }
                        let members = group_recipients(tx, group, &own)?;
                        let commit = mls::stage_add_members(
                            provider,
                            &self.identity,
                            group,
                            std::slice::from_ref(&claimed.0),
                        )?;
                        Ok(Some(Staged {
                            commit,
                            members,
                            added: vec![claimed.1.clone()],
                        }))
                    },
                    |tx, provider, group| {
                        crate::announce::mark_announced(tx, &group_id, &claimed.1)?;
                        let meta = self.meta_content(tx, group, &meta_name)?;
                        let ct =
                            mls::encrypt(provider, &self.identity, group, &meta.encode_to_vec())?;
                        outbox::enqueue(tx, &ct, &group_recipients(tx, group, &own)?)?;
                        crate::profile::record_event(
                            tx,
                            &group_id,
                            self.username(),
                            "you linked a new device",
                        )
                    },
                )
                .await?;
            if made {
                added += 1;
            }
        }
        self.flush_now().await?;
        Ok(added)
    }

    /// A key package of `suite` of our device `identity_key`, waiting up to
    /// `timeout` for it to publish some.
    async fn claim_own(
        &mut self,
        identity_key: &[u8],
        suite: Ciphersuite,
        timeout: Duration,
    ) -> Result<(VerifiedKeyPackage, Recipient), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut server = ServerConn::open(&self.invite, &self.route()).await?;
            let me = self.username().to_string();
            let r = server.fetch_devices(&me, &[mls::suite_code(suite)]).await;
            server.close().await;
            match r {
                Ok(listing) => {
                    let devices =
                        crate::contacts::accept_listing(self.profile.conn(), &me, &listing)?;
                    let Some(d) = devices.into_iter().find(|d| {
                        d.keys
                            .as_ref()
                            .is_some_and(|k| k.identity_key == identity_key)
                    }) else {
                        return Err(ClientError::Invalid(
                            "the server does not list the linked device".into(),
                        ));
                    };
                    let kp = mls::verify_key_package(
                        &Provider::new(&self.crypto, self.profile.conn()),
                        &d.key_package,
                    )?;
                    if kp.member.username != me || kp.member.identity_key != identity_key {
                        return Err(ClientError::Protocol(
                            "the server handed out a key package of another device".into(),
                        ));
                    }
                    let certified = check_member(self.profile.conn(), &kp.member)?;
                    let recipient = Recipient {
                        username: me,
                        identity_key: identity_key.to_vec(),
                        mailbox_id: d.mailbox_id,
                        sealing_key: certified.sealing_key,
                        delivery_token: None,
                    };
                    return Ok((kp, recipient));
                }
                Err(ClientError::Server { code, .. })
                    if code == ErrorCode::NoKeyPackages && Instant::now() < deadline =>
                {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Unlinks the device named by (a prefix of) its fingerprint: removes
    /// it from every conversation, then from the account's list. Returns
    /// its fingerprint.
    pub async fn unlink_device(&mut self, id: &str) -> Result<String, ClientError> {
        let account = self.account_key()?;
        let current = self.current_list().await?;
        let wanted = id.trim().to_ascii_lowercase();
        if wanted.len() < 4 {
            return Err(ClientError::Invalid(
                "name the device by at least 4 characters of its id (`umbra devices`)".into(),
            ));
        }
        let matching: Vec<&DeviceKeys> = current
            .devices
            .iter()
            .filter(|d| fingerprint(&d.identity_key, &d.sealing_key).starts_with(&wanted))
            .collect();
        let gone = match matching.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(ClientError::Invalid(format!(
                    "no device of this account is `{id}`"
                )));
            }
            _ => {
                return Err(ClientError::Invalid(format!(
                    "`{id}` names several devices"
                )));
            }
        };
        if gone.identity_key == self.identity.identity_key() {
            return Err(ClientError::Invalid(
                "this device holds the account key and cannot unlink itself".into(),
            ));
        }
        let groups: Vec<Vec<u8>> = {
            let mut stmt = self
                .profile
                .conn()
                .prepare("SELECT group_id FROM conversations WHERE active = 1")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for group_id in groups {
            self.ensure_addresses(&group_id).await?;
            self.remove_through_ledger(
                &group_id,
                |m| m.identity_key == gone.identity_key,
                "you unlinked a device",
            )
            .await?;
        }
        self.flush_now().await?;
        let devices: Vec<DeviceKeys> = current
            .devices
            .iter()
            .filter(|d| d.identity_key != gone.identity_key)
            .cloned()
            .collect();
        let list =
            crate::linking::sign_list(&account, self.username(), current.version + 1, devices)?;
        self.update_devices(&list, None, &[]).await?;
        crate::profile::set_setting(self.profile.conn(), "device_list", &list.encode_to_vec())?;
        {
            let conn = self.profile.conn();
            conn.execute(
                "DELETE FROM contact_devices WHERE username = ?1 AND identity_key = ?2",
                rusqlite::params![self.username(), gone.identity_key],
            )?;
        }
        Ok(fingerprint(&gone.identity_key, &gone.sealing_key))
    }
}

/// A device on its way into an account: its keys, made before it knows
/// the account's name.
pub struct Joining {
    invite: Invite,
    secret: LinkSecret,
    identity: Identity,
    token: [u8; 32],
    proxy: Option<ProxyLink>,
}

impl Joining {
    /// Starts joining the account whose device showed `link` (an
    /// `umbra://link?...`, or a bare code with `invite`).
    pub fn start(
        link: &str,
        invite: Option<&str>,
        proxy: Option<ProxyLink>,
    ) -> Result<Self, ClientError> {
        let (invite, secret) = if link.trim().starts_with("umbra://link?") {
            crate::linking::parse_link(link)?
        } else {
            let invite = invite.ok_or_else(|| {
                ClientError::Invalid(
                    "give the whole link (umbra://link?...), or the code with --invite".into(),
                )
            })?;
            (Invite::parse(invite)?, LinkSecret::parse_code(link)?)
        };
        Ok(Self {
            invite,
            secret,
            // The name comes with the answer; the keys do not depend on it.
            identity: Identity::generate("pending")?,
            token: random_bytes(),
            proxy,
        })
    }

    /// What the user compares with the other device.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.identity.identity_key(), &self.identity.sealing_key())
    }

    fn route(&self) -> Route {
        match &self.proxy {
            Some(link) => Route::Proxy(link.clone()),
            None => Route::Direct(self.invite.address()),
        }
    }

    /// Leaves this device's keys for the other device, then waits (up to
    /// `timeout`) for it to link us, and makes the profile in `dir`.
    pub async fn finish(
        self,
        dir: &std::path::Path,
        passphrase: Option<&str>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let profile = new_profile(dir, passphrase)?;
        let request = LinkRequest {
            identity_key: self.identity.identity_key(),
            sealing_key: self.identity.sealing_key().to_vec(),
            delivery_token_hash: Sha256::digest(self.token).to_vec(),
        };
        let route = self.route();
        put_slot(
            &self.invite,
            &route,
            self.secret.slot(Leg::Request),
            self.secret.seal(Leg::Request, &request.encode_to_vec())?,
        )
        .await?;
        let sealed = wait_slot(&self.invite, &route, self.secret.slot(Leg::Reply), timeout).await?;
        let reply = LinkReply::decode(self.secret.open(Leg::Reply, &sealed)?.as_slice())
            .map_err(|_| ClientError::Protocol("malformed link reply".into()))?;
        crate::account::validate_username(&reply.username)?;
        let certified = umbra_wire::devices::check_certificate(
            &reply.certificate,
            &reply.username,
            &request.identity_key,
        )
        .map_err(|_| ClientError::Unvouched(reply.username.clone()))?;
        let list = SignedDeviceList::decode(reply.device_list.as_slice())
            .map_err(|_| ClientError::Protocol("malformed device list".into()))?;
        let checked = check_list(&list, &reply.username, Some(&certified.account_key))
            .map_err(|_| ClientError::Unvouched(reply.username.clone()))?;
        if !umbra_wire::devices::lists(&checked, &request.identity_key, &request.sealing_key) {
            return Err(ClientError::Unvouched(reply.username.clone()));
        }
        let mut identity = Identity::from_secrets(&reply.username, &self.identity.secrets()?)?;
        identity.set_certificate(reply.certificate.clone());
        let mut server = ServerConn::open(&self.invite, &route).await?;
        {
            let tx = profile.write()?;
            keep_device(
                &tx,
                &NewDevice {
                    invite: &self.invite,
                    identity: &identity,
                    device_id: &reply.device_id,
                    mailbox_id: &reply.mailbox_id,
                    token: &self.token,
                    proxy: self.proxy.as_ref(),
                },
                server.hello(),
            )?;
            crate::linking::keep(&tx, &certified.account_key, &reply.certificate, &list)?;
            tx.commit()?;
        }
        let mut client = Client::open_with_key(dir, profile.key())?;
        client.login(&mut server).await?;
        server.close().await;
        Ok(client)
    }
}

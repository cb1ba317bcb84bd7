//! Handling of each client request (see `proto/umbra.proto`).
//!
//! Register and Login are answered inline (a login then pushes the stored
//! backlog before anything else); the other requests go to the storage thread
//! and their replies wait in the connection's pending queue, so clients can
//! pipeline them.

use std::time::Instant;

use prost::Message;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use umbra_store::EpochClaim;
use umbra_wire::proto::{
    self, ClientFrame, ErrorCode, client_frame::Body as Req, server_frame::Body as Resp,
};
use umbra_wire::suites;

use crate::connection::{Conn, ConnError, Flow, LoginState};
use crate::error::{RequestError, error_frame, reply};
use crate::metrics::inc;
use crate::routing::{LiveOutcome, Session};
use crate::storage::{AckCommand, Command, Refused, Reply, SendCommand};
use crate::validate::{LOGIN_CONTEXT, REGISTER_CONTEXT, valid_username, verify};

/// Envelopes per backlog page.
const PAGE: u32 = 64;
/// Sealed bytes per backlog page.
const PAGE_BYTES: usize = 512 * 1024;
/// Most ids in one Ack.
const MAX_ACK_IDS: usize = 4096;

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn internal(r: Refused) -> RequestError {
    match r {
        Refused::UnknownDevice => RequestError::UnknownDevice,
        Refused::UnknownUser => RequestError::UnknownUser,
        Refused::UnknownMailbox => RequestError::UnknownMailbox,
        Refused::MailboxFull => RequestError::Busy("the recipient's mailbox is full"),
        Refused::NoKeyPackages => RequestError::NoKeyPackages,
        Refused::UsernameTaken => RequestError::UsernameTaken,
        Refused::TooManyKeyPackages => RequestError::InvalidArgument("too many key packages"),
        Refused::IntroductionLimit => RequestError::RateLimited,
        // A later login of the device (here or on another node) took over.
        Refused::Superseded => RequestError::NotLoggedIn,
        _ => RequestError::Internal,
    }
}

impl Conn {
    /// Handles one frame from the client.
    pub(crate) async fn on_frame(&mut self, frame: ClientFrame) -> Result<Flow, ConnError> {
        let rid = frame.request_id;
        let Some(body) = frame.body.filter(|_| rid != 0) else {
            inc(&self.ctx.shared.metrics.frames_rejected);
            let f = error_frame(
                0,
                ErrorCode::Protocol,
                "frame without request id or body".to_string(),
            );
            self.writer.queue(&f)?;
            return Ok(Flow::Close);
        };
        match body {
            Req::Ping(p) => self.answer(rid, Ok(Resp::Pong(proto::Pong { nonce: p.nonce })))?,
            Req::Register(r) => {
                let r = self.register(r).await;
                self.answer(rid, r)?;
            }
            Req::Login(l) => return self.login(rid, l).await,
            Req::UploadKeyPackages(u) => self.upload(rid, u).await?,
            Req::SetDeliveryToken(t) => self.set_token(rid, t).await?,
            Req::FetchDevices(f) => self.fetch_devices(rid, f).await?,
            Req::Send(s) => self.send_envelope(rid, s).await?,
            Req::Ack(a) => self.ack(rid, a).await?,
            Req::SetBusinessCard(c) => self.set_business_card(rid, c).await?,
            Req::ClaimEpoch(c) => self.claim_epoch(rid, c).await?,
            Req::FetchEpoch(f) => self.fetch_epoch(rid, f).await?,
            Req::UpdateDevices(u) => {
                let r = self.update_devices(u).await;
                self.answer(rid, r)?;
            }
            Req::PutLinkSlot(p) => {
                let r = self.put_link_slot(p).await;
                self.answer(rid, r)?;
            }
            Req::TakeLinkSlot(t) => {
                let r = self.take_link_slot(t).await;
                self.answer(rid, r)?;
            }
            Req::CreateBlob(c) => {
                let r = self.create_blob(c).await;
                self.answer(rid, r)?;
            }
            Req::PutBlob(p) => {
                let r = self.put_blob(p).await;
                self.answer(rid, r)?;
            }
            Req::GetBlob(g) => {
                let r = self.get_blob(g).await;
                self.answer(rid, r)?;
            }
            Req::DeleteBlob(d) => {
                let r = self.delete_blob(d).await;
                self.answer(rid, r)?;
            }
            Req::GetRelayCredentials(_) => {
                let r = self.relay_credentials();
                self.answer(rid, r)?;
            }
        }
        Ok(Flow::Continue)
    }

    fn answer(&mut self, rid: u64, r: Result<Resp, RequestError>) -> Result<(), ConnError> {
        self.writer.queue(&reply(rid, r))?;
        Ok(())
    }

    /// Sends `make`'s command to storage; its answer, mapped by `map`, joins
    /// the pending replies.
    async fn pend<T: Send + 'static>(
        &mut self,
        rid: u64,
        make: impl FnOnce(Reply<T>) -> Command,
        map: impl FnOnce(T) -> Result<Resp, RequestError> + Send + 'static,
    ) {
        let rx = self.ctx.storage.submit(make).await;
        self.pending.push_back(Box::pin(async move {
            let r = match rx.await {
                Ok(Ok(v)) => map(v),
                Ok(Err(refused)) => Err(internal(refused)),
                Err(_) => Err(RequestError::Internal),
            };
            reply(rid, r)
        }));
    }

    fn relay_credentials(&self) -> Result<Resp, RequestError> {
        self.logged_in()?;
        let issuer = self
            .ctx
            .shared
            .relay
            .as_ref()
            .ok_or(RequestError::NoRelay)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        inc(&self.ctx.shared.metrics.relay_credentials);
        Ok(Resp::RelayCredentials(issuer.issue(now)))
    }

    fn logged_in(&self) -> Result<([u8; 16], [u8; 16]), RequestError> {
        self.login
            .as_ref()
            .map(|l| (l.device_id, l.mailbox_id))
            .ok_or(RequestError::NotLoggedIn)
    }

    async fn register(&mut self, r: proto::Register) -> Result<Resp, RequestError> {
        if !valid_username(&r.username) {
            return Err(RequestError::InvalidUsername);
        }
        let keys = r
            .device
            .ok_or(RequestError::InvalidArgument("device keys missing"))?;
        let identity_key: [u8; 32] = keys
            .identity_key
            .as_slice()
            .try_into()
            .map_err(|_| RequestError::InvalidArgument("identity key must be 32 bytes"))?;
        let sealing_key: [u8; 32] = keys
            .sealing_key
            .as_slice()
            .try_into()
            .map_err(|_| RequestError::InvalidArgument("sealing key must be 32 bytes"))?;
        let token_hash: [u8; 32] =
            r.delivery_token_hash.as_slice().try_into().map_err(|_| {
                RequestError::InvalidArgument("delivery token hash must be 32 bytes")
            })?;
        let signed: [&[u8]; 5] = [
            REGISTER_CONTEXT,
            &self.handshake_hash,
            r.username.as_bytes(),
            &identity_key,
            &sealing_key,
        ];
        if !verify(&identity_key, &signed, &r.signature) {
            return Err(RequestError::BadSignature);
        }
        let devices = crate::devices::first_list(r.device_list.as_ref(), &r.username, &keys)?;
        for _ in 0..3 {
            let mut device_id = [0u8; 16];
            let mut mailbox_id = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut device_id);
            rand::thread_rng().fill_bytes(&mut mailbox_id);
            let device = umbra_store::NewDevice {
                username: r.username.clone(),
                device_id,
                mailbox_id,
                identity_key,
                sealing_key,
                delivery_token_hash: token_hash,
            };
            let devices = devices.clone();
            match self
                .ctx
                .storage
                .call(|reply| Command::Register {
                    device,
                    devices,
                    reply,
                })
                .await
            {
                Ok(()) => {
                    return Ok(Resp::Registered(proto::Registered {
                        device_id: device_id.to_vec(),
                        mailbox_id: mailbox_id.to_vec(),
                    }));
                }
                Err(Refused::IdCollision) => continue,
                Err(other) => return Err(internal(other)),
            }
        }
        Err(RequestError::Internal)
    }

    async fn login(&mut self, rid: u64, l: proto::Login) -> Result<Flow, ConnError> {
        let r = self.verify_login(l).await;
        let logged_in = r.is_ok();
        self.answer(rid, r)?;
        if logged_in {
            self.drain_backlog().await?;
            // With other nodes, online-only envelopes held for the device
            // while it was not connected (or connected elsewhere).
            if self.ctx.shared.bus.get().is_some() {
                self.take_live().await?;
            }
            self.writer.queue(&proto::ServerFrame {
                request_id: 0,
                body: Some(Resp::QueueDrained(proto::QueueDrained {})),
            })?;
        }
        Ok(Flow::Continue)
    }

    async fn verify_login(&mut self, l: proto::Login) -> Result<Resp, RequestError> {
        if self.login.is_some() {
            return Err(RequestError::InvalidArgument("already logged in"));
        }
        let device_id: [u8; 16] = l
            .device_id
            .as_slice()
            .try_into()
            .map_err(|_| RequestError::UnknownDevice)?;
        let info = self
            .ctx
            .storage
            .call(|reply| Command::Login { device_id, reply })
            .await
            .map_err(internal)?
            .ok_or(RequestError::UnknownDevice)?;
        let signed: [&[u8]; 2] = [LOGIN_CONTEXT, &self.handshake_hash];
        if !verify(&info.identity_key, &signed, &l.signature) {
            return Err(RequestError::BadSignature);
        }
        let session = if l.signalling {
            Session::Signalling
        } else {
            Session::Main
        };
        // Only a login whose signature verified starts a main session (and
        // so supersedes the device's earlier one).
        let epoch = match session {
            Session::Main => self
                .ctx
                .storage
                .call(|reply| Command::StartSession { device_id, reply })
                .await
                .map_err(internal)?,
            Session::Signalling => 0,
        };
        let inbox =
            self.ctx
                .shared
                .registry
                .register(&info.mailbox_id, session, epoch, Instant::now());
        // With other nodes: hear what they say of this mailbox, and tell them
        // this session started (an older one elsewhere closes).
        let bus = match self.ctx.shared.bus.get() {
            Some(bus) => {
                if session == Session::Main {
                    bus.session(info.mailbox_id, epoch);
                }
                match bus.listen(&info.mailbox_id).await {
                    Ok(sub) => Some(sub),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hear the other nodes; the sweep carries the mail");
                        None
                    }
                }
            }
            None => None,
        };
        self.login = Some(Box::new(LoginState {
            device_id,
            username: info.username,
            identity_key: info.identity_key,
            mailbox_id: info.mailbox_id,
            inbox,
            session,
            epoch,
            bus,
            cursor: 0,
        }));
        self.idle = None;
        inc(&self.ctx.shared.metrics.logins);
        let left = |suite| {
            info.key_packages_left
                .iter()
                .find(|(s, _)| *s == suite)
                .map_or(0, |(_, n)| *n)
        };
        Ok(Resp::LoggedIn(proto::LoggedIn {
            mailbox_id: info.mailbox_id.to_vec(),
            key_packages_left: left(suites::CLASSICAL),
            key_package_counts: info
                .key_packages_left
                .iter()
                .filter(|(s, _)| *s != suites::CLASSICAL)
                .map(|&(suite, left)| proto::KeyPackageCount {
                    suite: u32::from(suite),
                    left,
                })
                .collect(),
        }))
    }

    /// Pushes every stored envelope above the cursor, page by page (a
    /// signalling session receives nothing stored).
    pub(crate) async fn drain_backlog(&mut self) -> Result<(), ConnError> {
        loop {
            let Some(login) = self.login.as_ref().filter(|l| l.session == Session::Main) else {
                return Ok(());
            };
            let (mailbox_id, after, session) = (login.mailbox_id, login.cursor, login.epoch);
            let page = self
                .ctx
                .storage
                .call(|reply| Command::Fetch {
                    mailbox_id,
                    session,
                    after,
                    limit: PAGE,
                    max_bytes: PAGE_BYTES,
                    reply,
                })
                .await
                .map_err(|r| match r {
                    Refused::Superseded => ConnError::Superseded,
                    _ => ConnError::Storage,
                })?;
            let bytes: usize = page.iter().map(|e| e.sealed.len()).sum();
            let exhausted = page.len() < PAGE as usize && bytes < PAGE_BYTES;
            for env in page {
                self.deliver(env.id, env.sealed, env.introduction)?;
            }
            self.writer.flush().await?;
            if exhausted {
                return Ok(());
            }
        }
    }

    async fn upload(&mut self, rid: u64, u: proto::UploadKeyPackages) -> Result<(), ConnError> {
        let device_id = match self.logged_in() {
            Ok((d, _)) => d,
            Err(e) => return self.answer(rid, Err(e)),
        };
        let last_resort = Some(u.last_resort).filter(|l| !l.is_empty());
        if u.key_packages.iter().any(Vec::is_empty) {
            return self.answer(rid, Err(RequestError::InvalidArgument("empty key package")));
        }
        let Some(suite) = suites::named(u.suite) else {
            return self.answer(
                rid,
                Err(RequestError::InvalidArgument("unknown ciphersuite")),
            );
        };
        let packages = u.key_packages;
        let replace = u.replace;
        self.pend(
            rid,
            |reply| Command::Upload {
                device_id,
                suite,
                packages,
                last_resort,
                replace,
                reply,
            },
            |left| {
                Ok(Resp::KeyPackagesStored(proto::KeyPackagesStored {
                    key_packages_left: left,
                }))
            },
        )
        .await;
        Ok(())
    }

    async fn set_token(&mut self, rid: u64, t: proto::SetDeliveryToken) -> Result<(), ConnError> {
        let (device_id, mailbox_id) = match self.logged_in() {
            Ok(ids) => ids,
            Err(e) => return self.answer(rid, Err(e)),
        };
        let Ok(hash) = <[u8; 32]>::try_from(t.delivery_token_hash.as_slice()) else {
            return self.answer(
                rid,
                Err(RequestError::InvalidArgument(
                    "delivery token hash must be 32 bytes",
                )),
            );
        };
        self.pend(
            rid,
            |reply| Command::SetToken {
                device_id,
                mailbox_id,
                hash,
                reply,
            },
            |()| Ok(Resp::Accepted(proto::Accepted {})),
        )
        .await;
        Ok(())
    }

    async fn fetch_devices(&mut self, rid: u64, f: proto::FetchDevices) -> Result<(), ConnError> {
        if !valid_username(&f.username) {
            return self.answer(rid, Err(RequestError::InvalidUsername));
        }
        let username = f.username;
        // The suites asked for, in order; unknown ones are skipped (a newer
        // client's first choice), and none at all means the classical one.
        let claim: Vec<u16> = match (f.claim_key_packages, f.suites.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => vec![suites::CLASSICAL],
            (true, false) => f
                .suites
                .iter()
                .filter_map(|&s| suites::named(s))
                .take(suites::ALL.len())
                .collect(),
        };
        if f.claim_key_packages && claim.is_empty() {
            return self.answer(rid, Err(RequestError::NoKeyPackages));
        }
        let echo = username.clone();
        let sign = self.ctx.shared.sign.clone();
        self.pend(
            rid,
            |reply| Command::Devices {
                username,
                claim,
                reply,
            },
            move |listing| {
                let listing = listing.ok_or(RequestError::UnknownUser)?;
                Ok(Resp::Devices(proto::Devices {
                    username: echo,
                    business: listing
                        .card
                        .map(|c| crate::business::listed(c, &sign, now_unix())),
                    device_list: listing
                        .list
                        .and_then(|l| proto::SignedDeviceList::decode(l.list.as_slice()).ok()),
                    devices: listing
                        .devices
                        .into_iter()
                        .map(|d| proto::Device {
                            device_id: d.device.device_id.to_vec(),
                            mailbox_id: d.device.mailbox_id.to_vec(),
                            keys: Some(proto::DeviceKeys {
                                identity_key: d.device.identity_key.to_vec(),
                                sealing_key: d.device.sealing_key.to_vec(),
                            }),
                            key_package: d.key_package.unwrap_or_default(),
                            key_package_is_last_resort: d.key_package_is_last_resort,
                            suite: u32::from(d.suite),
                        })
                        .collect(),
                }))
            },
        )
        .await;
        Ok(())
    }

    /// Makes the logged-in account a business account (or replaces its
    /// card): the profile names this account and device key, has a valid
    /// shape, and is signed by that key.
    async fn set_business_card(
        &mut self,
        rid: u64,
        c: proto::SetBusinessCard,
    ) -> Result<(), ConnError> {
        let Some(login) = self.login.as_ref() else {
            return self.answer(rid, Err(RequestError::NotLoggedIn));
        };
        let profile = match crate::business::check(&c, &login.username, &login.identity_key) {
            Ok(p) => p,
            Err(e) => return self.answer(rid, Err(e)),
        };
        let username = login.username.clone();
        let card = crate::business::stored(c);
        self.pend(
            rid,
            |reply| Command::SetCard {
                username,
                card,
                profile,
                reply,
            },
            |verified| {
                Ok(Resp::BusinessCardStored(proto::BusinessCardStored {
                    verified,
                }))
            },
        )
        .await;
        Ok(())
    }

    /// Claims a group epoch for a commit (no login: the server learns no
    /// more of who changes a group than of who sends to it).
    async fn claim_epoch(&mut self, rid: u64, c: proto::ClaimEpoch) -> Result<(), ConnError> {
        let Ok(tag) = <[u8; 32]>::try_from(c.tag.as_slice()) else {
            return self.answer(
                rid,
                Err(RequestError::InvalidArgument("tag must be 32 bytes")),
            );
        };
        if c.commit.is_empty() {
            return self.answer(rid, Err(RequestError::InvalidArgument("empty commit")));
        }
        if c.commit.len() > self.ctx.shared.limits.max_envelope_bytes as usize {
            return self.answer(rid, Err(RequestError::EnvelopeTooLarge));
        }
        let commit = c.commit;
        self.pend(
            rid,
            |reply| Command::ClaimEpoch { tag, commit, reply },
            |claim| {
                Ok(Resp::Epoch(match claim {
                    EpochClaim::Won => proto::Epoch {
                        won: true,
                        commit: Vec::new(),
                    },
                    EpochClaim::Lost(winner) => proto::Epoch {
                        won: false,
                        commit: winner,
                    },
                }))
            },
        )
        .await;
        Ok(())
    }

    /// The commit that won a group epoch, if any.
    async fn fetch_epoch(&mut self, rid: u64, f: proto::FetchEpoch) -> Result<(), ConnError> {
        let Ok(tag) = <[u8; 32]>::try_from(f.tag.as_slice()) else {
            return self.answer(
                rid,
                Err(RequestError::InvalidArgument("tag must be 32 bytes")),
            );
        };
        self.pend(
            rid,
            |reply| Command::FetchEpoch { tag, reply },
            |commit| {
                Ok(Resp::Epoch(proto::Epoch {
                    won: false,
                    commit: commit.unwrap_or_default(),
                }))
            },
        )
        .await;
        Ok(())
    }

    async fn send_envelope(&mut self, rid: u64, s: proto::SendEnvelope) -> Result<(), ConnError> {
        let shared = &self.ctx.shared;
        if s.sealed.len() > shared.limits.max_envelope_bytes as usize {
            return self.answer(rid, Err(RequestError::EnvelopeTooLarge));
        }
        let Ok(mailbox_id) = <[u8; 16]>::try_from(s.mailbox_id.as_slice()) else {
            return self.answer(rid, Err(RequestError::UnknownMailbox));
        };
        let token_matches = |hash: &[u8; 32]| {
            !s.delivery_token.is_empty()
                && bool::from(Sha256::digest(&s.delivery_token).ct_eq(hash))
        };
        let cached = shared.cache.get(&mailbox_id);
        // Not known here (registered on another node), or a token that does
        // not match what is known (changed on another node): the database
        // says.
        let route = match cached {
            Some(r) if token_matches(&r.token_hash) || s.delivery_token.is_empty() => Some(r),
            _ => match self
                .ctx
                .storage
                .call(|reply| Command::Mailbox { mailbox_id, reply })
                .await
            {
                Ok(Some(_)) => self.ctx.shared.cache.get(&mailbox_id),
                Ok(None) => None,
                Err(_) => cached,
            },
        };
        let shared = &self.ctx.shared;
        let Some(route) = route else {
            return self.answer(rid, Err(RequestError::UnknownMailbox));
        };
        let token_ok = token_matches(&route.token_hash);
        let sealed = s.sealed;
        if s.online_only && shared.bus.get().is_some() {
            return self
                .send_live_in_cluster(rid, mailbox_id, sealed, !token_ok)
                .await;
        }
        if s.online_only {
            // Never stored: the node's own budget counts its introductions.
            if !token_ok && !shared.budget.try_take(&mailbox_id, Instant::now()) {
                return self.answer(rid, Err(RequestError::RateLimited));
            }
            // Never stored; answered at once whatever became of it, so the
            // sender learns nothing about the recipient's presence.
            let m = &shared.metrics;
            match shared
                .registry
                .push_live(&mailbox_id, sealed, !token_ok, Instant::now())
            {
                LiveOutcome::Delivered => inc(&m.live_delivered),
                LiveOutcome::Held => inc(&m.live_held),
                LiveOutcome::Dropped => inc(&m.live_dropped),
            }
            return self.answer(rid, Ok(Resp::Accepted(proto::Accepted {})));
        }
        let per_hour = shared.budget.per_hour();
        self.pend(
            rid,
            |reply| {
                Command::Send(SendCommand {
                    mailbox_id,
                    sealed,
                    introduction: !token_ok,
                    per_hour,
                    reply,
                })
            },
            |()| Ok(Resp::Accepted(proto::Accepted {})),
        )
        .await;
        Ok(())
    }

    /// An online-only envelope on a node with others: handed over here when
    /// the device is connected here and no introduction budget is involved;
    /// otherwise held in the shared database (the introduction taken from the
    /// mailbox's budget there, which every node shares) for the node the
    /// device is connected to, told over the bus. Answered `Accepted`
    /// whatever became of it, as on one node.
    async fn send_live_in_cluster(
        &mut self,
        rid: u64,
        mailbox_id: umbra_store::MailboxId,
        sealed: Vec<u8>,
        introduction: bool,
    ) -> Result<(), ConnError> {
        if introduction {
            return self
                .hold_live_in_cluster(rid, mailbox_id, sealed, true)
                .await;
        }
        let m = &self.ctx.shared.metrics;
        match self
            .ctx
            .shared
            .registry
            .push_live_here(&mailbox_id, sealed, false)
        {
            Ok(LiveOutcome::Delivered) => inc(&m.live_delivered),
            Ok(_) => inc(&m.live_dropped),
            Err(sealed) => {
                return self
                    .hold_live_in_cluster(rid, mailbox_id, sealed, false)
                    .await;
            }
        }
        self.answer(rid, Ok(Resp::Accepted(proto::Accepted {})))
    }

    async fn hold_live_in_cluster(
        &mut self,
        rid: u64,
        mailbox_id: umbra_store::MailboxId,
        sealed: Vec<u8>,
        introduction: bool,
    ) -> Result<(), ConnError> {
        let per_hour = self.ctx.shared.budget.per_hour();
        let metrics = self.ctx.shared.metrics.clone();
        self.pend(
            rid,
            |reply| Command::HoldLive {
                mailbox_id,
                sealed,
                introduction,
                per_hour,
                reply,
            },
            move |held| {
                inc(if held {
                    &metrics.live_held
                } else {
                    &metrics.live_dropped
                });
                Ok(Resp::Accepted(proto::Accepted {}))
            },
        )
        .await;
        Ok(())
    }

    async fn ack(&mut self, rid: u64, a: proto::Ack) -> Result<(), ConnError> {
        let (mailbox_id, session) = match self.login.as_ref() {
            Some(l) if l.session == Session::Main => (l.mailbox_id, l.epoch),
            Some(_) => {
                return self.answer(
                    rid,
                    Err(RequestError::InvalidArgument(
                        "a signalling session has nothing stored to acknowledge",
                    )),
                );
            }
            None => return self.answer(rid, Err(RequestError::NotLoggedIn)),
        };
        if a.envelope_ids.len() > MAX_ACK_IDS {
            return self.answer(
                rid,
                Err(RequestError::InvalidArgument("too many ids in one ack")),
            );
        }
        let ids = a.envelope_ids;
        self.pend(
            rid,
            |reply| {
                Command::Ack(AckCommand {
                    mailbox_id,
                    session,
                    ids,
                    reply,
                })
            },
            |deleted| Ok(Resp::Acked(proto::Acked { deleted })),
        )
        .await;
        Ok(())
    }
}

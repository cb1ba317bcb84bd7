//! One handler per TURN input: Binding, the authenticated requests (Allocate, Refresh,
//! CreatePermission, ChannelBind), Send indications, ChannelData from clients, data from
//! peers, and the daemon's relay-socket answers.

use std::net::SocketAddr;
use std::time::Instant;

use super::allocation::{Allocation, BindCheck, ClientKey};
use super::auth::{AuthContext, AuthFailure, Authenticated, authenticate};
use super::nonce::NonceCheck;
use super::output::{Discarded, Forward, Output, RelayError, RelayGrant, RelayRequestId};
use super::policy::PeerCheck;
use super::{Pending, Server};
use crate::attribute::{self as attr, AddressFamily, Attribute, ErrorCode, PROTOCOL_UDP};
use crate::builder::MessageBuilder;
use crate::channel_data::is_valid_channel;
use crate::header::{Class, Method};
use crate::message::Message;

impl Server {
    pub(super) fn on_binding(
        &mut self,
        client: ClientKey,
        msg: &Message<'_>,
    ) -> Result<(), Discarded> {
        let tid = msg.transaction_id();
        let unknown = msg.unknown_comprehension_required();
        if !unknown.is_empty() {
            let extra = [Attribute::UnknownAttributes(unknown)];
            return self.send_error(
                client,
                Method::BINDING,
                tid,
                ErrorCode::UNKNOWN_ATTRIBUTE,
                &extra,
                None,
            );
        }
        let attrs = [Attribute::XorMappedAddress(client.addr)];
        self.send_response(
            client,
            Class::SuccessResponse,
            Method::BINDING,
            tid,
            &attrs,
            None,
        )
    }

    /// 401 / 438 carry REALM, NONCE and (when negotiating) PASSWORD-ALGORITHMS.
    fn send_challenge(
        &mut self,
        now: Instant,
        client: ClientKey,
        msg: &Message<'_>,
        code: u16,
    ) -> Result<(), Discarded> {
        let nonce = self.nonces.issue(now, client.transport, client.addr);
        let realm = self.config.realm.clone();
        let mut extra = vec![Attribute::Realm(&realm), Attribute::Nonce(&nonce)];
        if self.config.negotiates_algorithms() {
            extra.push(Attribute::PasswordAlgorithms(
                self.config.password_algorithms.clone(),
            ));
        }
        self.send_error(
            client,
            msg.method(),
            msg.transaction_id(),
            code,
            &extra,
            None,
        )
    }

    pub(super) fn on_authenticated_request(
        &mut self,
        now: Instant,
        client: ClientKey,
        msg: &Message<'_>,
    ) -> Result<(), Discarded> {
        let nonces = self.nonces.clone();
        let nonce_valid =
            move |n: &str| nonces.check(now, n, client.transport, client.addr) == NonceCheck::Valid;
        let ctx = AuthContext {
            now,
            realm: &self.config.realm,
            algorithms: &self.config.password_algorithms,
            negotiates: self.config.negotiates_algorithms(),
            nonce_valid: &nonce_valid,
        };
        let authed = match authenticate(msg, &ctx, self.auth.as_ref()) {
            Ok(a) => a,
            Err(AuthFailure::Unauthenticated) => {
                return self.send_challenge(now, client, msg, ErrorCode::UNAUTHENTICATED);
            }
            Err(AuthFailure::StaleNonce) => {
                return self.send_challenge(now, client, msg, ErrorCode::STALE_NONCE);
            }
            Err(AuthFailure::BadRequest) => {
                return self.send_error(
                    client,
                    msg.method(),
                    msg.transaction_id(),
                    ErrorCode::BAD_REQUEST,
                    &[],
                    None,
                );
            }
        };
        let sign = (authed.key.clone(), authed.kind);
        let mut unknown = msg.unknown_comprehension_required();
        if msg.method() == Method::ALLOCATE && !self.config.dont_fragment && msg.dont_fragment() {
            unknown.push(attr::DONT_FRAGMENT);
        }
        if !unknown.is_empty() {
            let extra = [Attribute::UnknownAttributes(unknown)];
            let (k, kind) = &sign;
            let (m, t) = (msg.method(), msg.transaction_id());
            return self.send_error(
                client,
                m,
                t,
                ErrorCode::UNKNOWN_ATTRIBUTE,
                &extra,
                Some((k, *kind)),
            );
        }
        let result = match msg.method() {
            Method::ALLOCATE => self.on_allocate(now, client, msg, &authed),
            Method::REFRESH => self.on_refresh(now, client, msg, &authed),
            Method::CREATE_PERMISSION => self.on_create_permission(now, client, msg, &authed),
            _ => self.on_channel_bind(now, client, msg, &authed),
        };
        match result {
            Ok(Reply::Done) => Ok(()),
            Ok(Reply::Success(attrs)) => {
                let attrs: Vec<Attribute<'_>> = attrs.iter().map(OwnedAttr::as_attribute).collect();
                let (m, t) = (msg.method(), msg.transaction_id());
                self.send_response(
                    client,
                    Class::SuccessResponse,
                    m,
                    t,
                    &attrs,
                    Some((&sign.0, sign.1)),
                )
            }
            Err(Refusal::Code(code)) => {
                let (m, t) = (msg.method(), msg.transaction_id());
                self.send_error(client, m, t, code, &[], Some((&sign.0, sign.1)))
            }
            Err(Refusal::Silent(d)) => Err(d),
        }
    }

    fn owned_allocation(&self, client: ClientKey, authed: &Authenticated) -> Result<u64, Refusal> {
        let id = *self
            .by_client
            .get(&client)
            .ok_or(Refusal::Code(ErrorCode::ALLOCATION_MISMATCH))?;
        let alloc = self
            .allocations
            .get(&id)
            .ok_or(Refusal::Code(ErrorCode::ALLOCATION_MISMATCH))?;
        if alloc.username != authed.username {
            return Err(Refusal::Code(ErrorCode::WRONG_CREDENTIALS));
        }
        Ok(id)
    }

    fn on_allocate(
        &mut self,
        _now: Instant,
        client: ClientKey,
        msg: &Message<'_>,
        authed: &Authenticated,
    ) -> Result<Reply, Refusal> {
        let tid = msg.transaction_id();
        if let Some(alloc) = self
            .by_client
            .get(&client)
            .and_then(|id| self.allocations.get(id))
        {
            if alloc.allocate_tid == tid {
                // Retransmission: replay the original success response.
                let bytes = alloc.allocate_response.clone();
                self.outputs.push_back(Output::SendToClient {
                    transport: client.transport,
                    client: client.addr,
                    bytes,
                });
                return Ok(Reply::Done);
            }
            return Err(Refusal::Code(ErrorCode::ALLOCATION_MISMATCH));
        }
        if let Some(req) = self.pending_by_client.get(&client) {
            let same = self.pending.get(req).is_some_and(|p| p.tid == tid);
            return Err(if same {
                Refusal::Silent(Discarded::InProgress)
            } else {
                Refusal::Code(437)
            });
        }
        let bad = Refusal::Code(ErrorCode::BAD_REQUEST);
        match msg.requested_transport().map_err(|_| Refusal::Code(400))? {
            None => return Err(bad),
            Some(PROTOCOL_UDP) => {}
            Some(_) => return Err(Refusal::Code(ErrorCode::UNSUPPORTED_TRANSPORT)),
        }
        let even_port = msg.even_port().map_err(|_| Refusal::Code(400))?;
        let token = msg.reservation_token().map_err(|_| Refusal::Code(400))?;
        let family = msg
            .requested_address_family()
            .map_err(|_| Refusal::Code(400))?;
        let additional = msg.raw_attribute(attr::ADDITIONAL_ADDRESS_FAMILY).is_some();
        // RFC 8656 §7.2: a token excludes EVEN-PORT and both address-family attributes; a
        // reservation (R) excludes ADDITIONAL-ADDRESS-FAMILY.
        if token.is_some() && (even_port.is_some() || family.is_some() || additional) {
            return Err(bad);
        }
        if even_port == Some(true) && additional {
            return Err(bad);
        }
        // With a token, the reserved address decides the family.
        let family = match token {
            Some(_) => None,
            None => Some(family.unwrap_or(AddressFamily::V4)),
        };
        if family.is_some_and(|f| !self.config.relay_families.contains(&f)) {
            return Err(Refusal::Code(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED));
        }
        let lifetime = self
            .config
            .desired_lifetime(msg.lifetime().map_err(|_| Refusal::Code(400))?);
        if self.per_user.get(&authed.username).copied().unwrap_or(0) >= self.config.user_quota {
            return Err(Refusal::Code(ErrorCode::ALLOCATION_QUOTA_REACHED));
        }
        if self.in_use() >= self.config.total_quota {
            return Err(Refusal::Code(ErrorCode::INSUFFICIENT_CAPACITY));
        }
        *self.per_user.entry(authed.username.clone()).or_insert(0) += 1;
        let request = RelayRequestId(self.next_id);
        self.next_id += 1;
        self.pending.insert(
            request,
            Pending {
                client,
                tid,
                username: authed.username.clone(),
                key: authed.key.clone(),
                kind: authed.kind,
                lifetime,
                family,
                even_port,
            },
        );
        self.pending_by_client.insert(client, request);
        self.outputs.push_back(Output::AllocateRelay {
            request,
            family: family.unwrap_or(AddressFamily::V4),
            even_port,
            reservation_token: token,
            username: authed.username.clone(),
        });
        Ok(Reply::Done)
    }

    pub(super) fn on_relay_allocated(
        &mut self,
        now: Instant,
        request: RelayRequestId,
        result: Result<RelayGrant, RelayError>,
    ) -> Result<(), Discarded> {
        let p = self
            .pending
            .remove(&request)
            .ok_or(Discarded::UnknownRelayRequest)?;
        self.pending_by_client.remove(&p.client);
        let sign = Some((&p.key, p.kind));
        let refusal = match result {
            // Already some allocation's relay address: not ours to release.
            Ok(g) if self.by_relay.contains_key(&g.relay) => Err(ErrorCode::SERVER_ERROR),
            Ok(g) if !p.fits(&g) => {
                // Not what was asked (a daemon bug): give the socket back.
                self.outputs
                    .push_back(Output::ReleaseRelay { relay: g.relay });
                Err(ErrorCode::SERVER_ERROR)
            }
            Ok(g) => Ok(g),
            Err(RelayError::FamilyNotSupported) => Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED),
            Err(RelayError::InsufficientCapacity) => Err(ErrorCode::INSUFFICIENT_CAPACITY),
            Err(RelayError::QuotaReached) => Err(ErrorCode::ALLOCATION_QUOTA_REACHED),
            Err(_) => Err(ErrorCode::SERVER_ERROR),
        };
        let grant = match refusal {
            Ok(g) => g,
            Err(code) => {
                self.release_quota(&p.username);
                return self.send_error(p.client, Method::ALLOCATE, p.tid, code, &[], sign);
            }
        };
        let secs = u32::try_from(p.lifetime.as_secs()).unwrap_or(u32::MAX);
        let mut attrs = vec![
            Attribute::XorRelayedAddress(grant.relay),
            Attribute::Lifetime(secs),
            Attribute::XorMappedAddress(p.client.addr),
        ];
        // RFC 8656 §7.2: the token of the reserved next port, only if R asked for one.
        if let (Some(true), Some(t)) = (p.even_port, grant.reservation_token) {
            attrs.push(Attribute::ReservationToken(t));
        }
        let bytes = match self.build_response(
            Class::SuccessResponse,
            Method::ALLOCATE,
            p.tid,
            &attrs,
            sign,
        ) {
            Ok(b) => b,
            Err(e) => {
                self.release_quota(&p.username);
                self.outputs
                    .push_back(Output::ReleaseRelay { relay: grant.relay });
                return Err(e);
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let expires = now + p.lifetime;
        self.allocations.insert(
            id,
            Allocation {
                client: p.client,
                relay: grant.relay,
                username: p.username,
                expires,
                timer: expires,
                allocate_tid: p.tid,
                allocate_response: bytes.clone(),
                permissions: self.keys.map(),
                channels: self.keys.map(),
                peer_channels: self.keys.map(),
            },
        );
        self.by_client.insert(p.client, id);
        self.by_relay.insert(grant.relay, id);
        self.timers.push(std::cmp::Reverse((expires, id)));
        self.outputs.push_back(Output::SendToClient {
            transport: p.client.transport,
            client: p.client.addr,
            bytes,
        });
        Ok(())
    }

    fn on_refresh(
        &mut self,
        now: Instant,
        client: ClientKey,
        msg: &Message<'_>,
        authed: &Authenticated,
    ) -> Result<Reply, Refusal> {
        let id = self.owned_allocation(client, authed)?;
        let requested = msg.lifetime().map_err(|_| Refusal::Code(400))?;
        let family = msg
            .requested_address_family()
            .map_err(|_| Refusal::Code(400))?;
        let alloc = self.allocations.get_mut(&id).ok_or(Refusal::Code(437))?;
        if family.is_some_and(|f| f != AddressFamily::of(&alloc.relay)) {
            return Err(Refusal::Code(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH));
        }
        if requested == Some(0) {
            self.remove_allocation(id);
            return Ok(Reply::Success(vec![OwnedAttr::Lifetime(0)]));
        }
        let lifetime = self.config.desired_lifetime(requested);
        alloc.expires = now + lifetime;
        alloc.purge(now);
        let expires = alloc.expires;
        self.schedule(id, expires);
        let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        Ok(Reply::Success(vec![OwnedAttr::Lifetime(secs)]))
    }

    fn check_peer(&self, alloc: &Allocation, peer: SocketAddr) -> Result<(), Refusal> {
        if AddressFamily::of(&peer) != AddressFamily::of(&alloc.relay) {
            return Err(Refusal::Code(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH));
        }
        let check = PeerCheck {
            username: &alloc.username,
            relay: alloc.relay,
            peer,
        };
        if !self.policy.allow(&check) {
            return Err(Refusal::Code(ErrorCode::FORBIDDEN));
        }
        Ok(())
    }

    fn on_create_permission(
        &mut self,
        now: Instant,
        client: ClientKey,
        msg: &Message<'_>,
        authed: &Authenticated,
    ) -> Result<Reply, Refusal> {
        let id = self.owned_allocation(client, authed)?;
        let peers = msg.xor_peer_addresses().map_err(|_| Refusal::Code(400))?;
        if peers.is_empty() {
            return Err(Refusal::Code(ErrorCode::BAD_REQUEST));
        }
        let alloc = self.allocations.get(&id).ok_or(Refusal::Code(437))?;
        for p in &peers {
            self.check_peer(alloc, *p)?;
        }
        let expires = now + self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let alloc = self.allocations.get_mut(&id).ok_or(Refusal::Code(437))?;
        alloc.purge(now);
        let new = peers
            .iter()
            .filter(|p| !alloc.permissions.contains_key(&p.ip()))
            .count();
        if alloc.permissions.len() + new > max {
            return Err(Refusal::Code(ErrorCode::INSUFFICIENT_CAPACITY));
        }
        for p in peers {
            alloc.permissions.insert(p.ip(), expires);
        }
        Ok(Reply::Success(Vec::new()))
    }

    fn on_channel_bind(
        &mut self,
        now: Instant,
        client: ClientKey,
        msg: &Message<'_>,
        authed: &Authenticated,
    ) -> Result<Reply, Refusal> {
        let id = self.owned_allocation(client, authed)?;
        let bad = Refusal::Code(ErrorCode::BAD_REQUEST);
        let channel = msg
            .channel_number()
            .map_err(|_| Refusal::Code(400))?
            .ok_or(Refusal::Code(400))?;
        let peer = msg
            .xor_peer_address()
            .map_err(|_| Refusal::Code(400))?
            .ok_or(Refusal::Code(400))?;
        if !is_valid_channel(channel) {
            return Err(bad);
        }
        let alloc = self.allocations.get(&id).ok_or(Refusal::Code(437))?;
        if alloc.check_bind(now, channel, peer) != BindCheck::Ok {
            return Err(bad);
        }
        self.check_peer(alloc, peer)?;
        let channel_expires = now + self.config.channel_lifetime;
        let permission_expires = now + self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let alloc = self.allocations.get_mut(&id).ok_or(Refusal::Code(437))?;
        alloc.purge(now);
        if !alloc.permissions.contains_key(&peer.ip()) && alloc.permissions.len() >= max {
            return Err(Refusal::Code(ErrorCode::INSUFFICIENT_CAPACITY));
        }
        alloc.bind(channel, peer, channel_expires);
        alloc.permissions.insert(peer.ip(), permission_expires);
        Ok(Reply::Success(Vec::new()))
    }

    pub(super) fn on_send_indication(
        &mut self,
        now: Instant,
        client: ClientKey,
        msg: &Message<'_>,
    ) -> Result<(), Discarded> {
        let id = *self.by_client.get(&client).ok_or(Discarded::NoAllocation)?;
        if !msg.unknown_comprehension_required().is_empty()
            || (msg.dont_fragment() && !self.config.dont_fragment)
        {
            return Err(Discarded::BadIndication);
        }
        let peer = msg.xor_peer_address()?.ok_or(Discarded::BadIndication)?;
        let data = msg.data()?.ok_or(Discarded::BadIndication)?;
        let alloc = self.allocations.get(&id).ok_or(Discarded::NoAllocation)?;
        if !alloc.has_permission(now, peer.ip()) {
            return Err(Discarded::NoPermission);
        }
        self.check_peer(alloc, peer)
            .map_err(|_| Discarded::PeerForbidden)?;
        self.outputs.push_back(Output::SendFromRelay {
            relay: alloc.relay,
            peer,
            bytes: data.to_vec(),
            dont_fragment: msg.dont_fragment(),
        });
        Ok(())
    }

    /// ChannelData from a client: the (relay, peer) it goes between, if the channel is
    /// bound and its permission live.
    pub(super) fn client_channel_route(
        &self,
        now: Instant,
        client: ClientKey,
        channel: u16,
    ) -> Result<(SocketAddr, SocketAddr), Discarded> {
        let id = *self.by_client.get(&client).ok_or(Discarded::NoAllocation)?;
        let alloc = self.allocations.get(&id).ok_or(Discarded::NoAllocation)?;
        let peer = alloc
            .channel_peer(now, channel)
            .ok_or(Discarded::NoChannel)?;
        if !alloc.has_permission(now, peer.ip()) {
            return Err(Discarded::NoPermission);
        }
        Ok((alloc.relay, peer))
    }

    /// Data from a peer: a bound channel gives a [`Forward::ToClient`]; otherwise a Data
    /// indication is queued.
    pub(super) fn on_peer_data<'a>(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &'a [u8],
    ) -> Result<Option<Forward<'a>>, Discarded> {
        let id = *self.by_relay.get(&relay).ok_or(Discarded::NoAllocation)?;
        let alloc = self.allocations.get(&id).ok_or(Discarded::NoAllocation)?;
        if !alloc.has_permission(now, peer.ip()) {
            return Err(Discarded::NoPermission);
        }
        let client = alloc.client;
        if let Some(channel) = alloc.peer_channel(now, peer) {
            // The frame must be encodable, as the queued output would be.
            if !is_valid_channel(channel) || u16::try_from(data.len()).is_err() {
                return Err(crate::error::EncodeError::InvalidChannelData.into());
            }
            return Ok(Some(Forward::ToClient {
                transport: client.transport,
                client: client.addr,
                channel,
                data,
            }));
        }
        let mut b = MessageBuilder::new(Class::Indication, Method::DATA, self.fresh_tid(id))
            .attr(&Attribute::XorPeerAddress(peer))
            .attr(&Attribute::Data(data));
        if self.config.fingerprint {
            b = b.fingerprint();
        }
        let bytes = b.build()?;
        self.outputs.push_back(Output::SendToClient {
            transport: client.transport,
            client: client.addr,
            bytes,
        });
        Ok(None)
    }

    /// A unique, unpredictable transaction id for a server-originated indication.
    fn fresh_tid(&mut self, id: u64) -> crate::header::TransactionId {
        let n = self.next_id;
        self.next_id += 1;
        let mac = crate::integrity::hmac_sha256(
            &self.config.nonce_secret,
            &[b"tid", &id.to_be_bytes(), &n.to_be_bytes()],
        );
        let mut t = [0u8; 12];
        t.copy_from_slice(&mac[..12]);
        crate::header::TransactionId(t)
    }
}

/// Attributes of a success response, owned so handlers can return them.
pub(super) enum OwnedAttr {
    Lifetime(u32),
}

impl OwnedAttr {
    fn as_attribute(&self) -> Attribute<'static> {
        match self {
            OwnedAttr::Lifetime(s) => Attribute::Lifetime(*s),
        }
    }
}

/// What a request handler decided.
pub(super) enum Reply {
    /// Send a signed success response with these attributes.
    Success(Vec<OwnedAttr>),
    /// The handler queued its own outputs (or will, later).
    Done,
}

/// A request handler's refusal.
pub(super) enum Refusal {
    /// Send a signed error response with this code.
    Code(u16),
    /// Drop silently.
    Silent(Discarded),
}

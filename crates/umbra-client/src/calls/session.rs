//! One call in progress, caller or callee: the signalling loop around a
//! running media engine. It receives on a logged-in connection (a
//! signalling session for `umbra call`, the main session for `umbra
//! listen`), applies what arrives exactly as `listen` would (messages keep
//! arriving during a call), routes this call's signals to the engine, sends
//! our signals online-only on an anonymous connection, and records the
//! call when it ends.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use umbra_call::driver::{self, CallHandle, CallIo, Command, Media, Notice};
use umbra_call::engine::candidates;
use umbra_call::{EngineConfig, EngineEvent, Path, RelayServer, Role, Transport};
use umbra_net::dial::{Route, dial};
use umbra_wire::e2e::{
    CallAnswer, CallBusy, CallCandidate, CallDecline, CallHangup, CallOffer, CallRinging,
    call_signal::Body,
};
use umbra_wire::proto::RelayCredentials;
use umbra_wire::proto::server_frame;
use umbra_wire::proxy::Target;

use super::records::{self, Ended, Outcome};
use super::signal::{self, Signal};
use super::{CallMedia, IncomingCalls, pick_relay, relay_servers};
use crate::account::{relay_credentials_on, validate_username};
use crate::client::{Client, random_bytes};
use crate::conn::ServerConn;
use crate::conversations::direct_conversation;
use crate::model::{CallEvent, Event};
use crate::{ClientError, inbox};

/// How long a caller lets it ring.
const RING_FOR: Duration = Duration::from_secs(45);
/// How long a callee rings at most.
const RINGING_AT_MOST: Duration = Duration::from_secs(60);
/// How long the relay may take to give us an allocation.
const RELAY_WITHIN: Duration = Duration::from_secs(10);
/// Pings on the receiving connection.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A call with its engine running.
struct Active {
    peer: String,
    group_id: Vec<u8>,
    call_id: Vec<u8>,
    role: Role,
    /// This side keeps the call relay-only (its setting, or a proxy).
    protect_ip: bool,
    /// The relay is reached through the profile's proxy.
    via_proxy: bool,
    remote_direct: bool,
    handle: CallHandle,
    /// Anonymous connection for our signals.
    sender: ServerConn,
    answered: bool,
    path: Option<Path>,
    started_ms: u64,
    media_ended: bool,
    /// How long the caller lets it ring.
    ring_for: Duration,
    /// When audio started.
    connected_at: Option<tokio::time::Instant>,
}

fn path_name(p: Path) -> &'static str {
    match p {
        Path::Direct => "direct",
        Path::Relayed => "relayed",
    }
}

impl Active {
    fn why(&self, path: Path) -> String {
        match path {
            Path::Direct => format!(
                "peer to peer: best quality, but {} can see your IP address (turn on \
                 `umbra settings protect-ip on` to relay your calls)",
                self.peer
            ),
            Path::Relayed if self.via_proxy => {
                "through the call relay, reached via your proxy: the other side sees only the \
                 relay's address, and this device contacts only the proxy; quality may be lower"
                    .into()
            }
            Path::Relayed if self.protect_ip => {
                "through the call relay because you protect your IP address: the other side \
                 sees only the relay's address; quality may be lower"
                    .into()
            }
            Path::Relayed if !self.remote_direct => format!(
                "through the call relay because {} protects their IP address; quality may be lower",
                self.peer
            ),
            Path::Relayed => {
                "through the call relay until a direct path is found; quality may be lower".into()
            }
        }
    }

    async fn send(&mut self, client: &Client, body: Body) {
        match client.encrypt_signal(&self.group_id, &self.call_id, body) {
            Ok(out) => {
                if let Err(e) = signal::send_live(&mut self.sender, &out).await {
                    tracing::debug!(error = %e, "call signal not sent");
                }
            }
            Err(e) => tracing::debug!(error = %e, "call signal not encrypted"),
        }
    }

    /// Hang-up: live, and also stored when the call was never answered so
    /// an offline callee sees a missed call.
    async fn hang_up(&mut self, client: &Client) {
        let unanswered = !self.answered;
        self.send(client, Body::Hangup(CallHangup { unanswered }))
            .await;
        if unanswered
            && self.role == Role::Caller
            && let Ok(out) = client.encrypt_signal(
                &self.group_id,
                &self.call_id,
                Body::Hangup(CallHangup { unanswered }),
            )
        {
            let _ = client.queue_signal(&out);
        }
    }
}

/// What woke the call loop.
enum Wake {
    Push(Result<Option<server_frame::Body>, ClientError>),
    Notice(Option<Notice>),
    RingTimeout,
    Stop,
    Keepalive,
}

impl Client {
    /// Calls `peer` and runs the call until it ends, `media.duration`
    /// passes, or `stop` resolves (Ctrl-C). Every call starts relay-only; a
    /// direct path is tried once answered if neither side protects its IP
    /// address. Returns how it ended (also recorded in the history).
    pub async fn call(
        &mut self,
        peer: &str,
        media: &CallMedia,
        on_event: &mut impl FnMut(&Event),
        stop: impl Future<Output = ()>,
    ) -> Result<Outcome, ClientError> {
        validate_username(peer)?;
        if peer == self.username() {
            return Err(ClientError::Invalid("you cannot call yourself".into()));
        }
        tokio::pin!(stop);
        for e in self.flush_earlier().await? {
            on_event(&e);
        }
        let group_id = match direct_conversation(self.profile.conn(), peer)? {
            Some(g) => g,
            None => {
                let g = self.start_conversation(peer, None, &[peer]).await?;
                self.flush_now().await?;
                g
            }
        };
        let settings = self.call_settings()?;
        let mut recv = ServerConn::open(&self.invite, &self.route()).await?;
        self.login_session(&mut recv, true).await?;
        let creds = relay_credentials_on(&mut recv).await?;
        let mut handle = self.start_media(Role::Caller, &creds, None, media).await?;
        on_event(&Event::Call(CallEvent::Dialing {
            peer: peer.to_string(),
        }));
        wait_relay(&mut handle).await?;
        let offer = handle.request(Command::CreateOffer).await?;
        let sender = ServerConn::open(&self.invite, &self.route()).await?;
        let mut active = Active {
            peer: peer.to_string(),
            group_id,
            call_id: random_bytes::<16>().to_vec(),
            role: Role::Caller,
            // Through a proxy the call stays relay-only: the device contacts
            // nothing but the proxy.
            protect_ip: settings.protect_ip || self.proxy.is_some(),
            via_proxy: self.proxy.is_some(),
            remote_direct: false,
            handle,
            sender,
            answered: false,
            path: None,
            started_ms: records::now(),
            media_ended: false,
            ring_for: media.ring_for.unwrap_or(RING_FOR),
            connected_at: None,
        };
        active
            .send(
                self,
                Body::Offer(CallOffer {
                    sdp: offer,
                    direct_allowed: !active.protect_ip,
                }),
            )
            .await;
        let outcome = self
            .drive(&mut recv, &mut active, on_event, &mut stop)
            .await?;
        recv.close().await;
        self.finish_call(active, outcome, on_event).await
    }

    /// An offer arrived while listening: rings (if "who can call you"
    /// allows), asks the user, and runs the call. Returns true if `stop`
    /// fired meanwhile.
    pub(crate) async fn incoming_call<S: Future<Output = ()>>(
        &mut self,
        recv: &mut ServerConn,
        offer: Signal,
        calls: &mut IncomingCalls,
        on_event: &mut impl FnMut(&Event),
        stop: &mut Pin<&mut S>,
    ) -> Result<bool, ClientError> {
        let Body::Offer(o) = offer.body else {
            return Ok(false);
        };
        if records::is_recorded(self.profile.conn(), &offer.call_id)? {
            return Ok(false);
        }
        let record = |client: &Client, outcome| {
            records::record(
                client.profile.conn(),
                &Ended {
                    call_id: &offer.call_id,
                    group_id: &offer.group_id,
                    peer: &offer.peer,
                    outgoing: false,
                    started_ms: records::now(),
                    talk_ms: 0,
                    outcome,
                    path: None,
                },
            )
        };
        if !records::may_ring(self.profile.conn(), &offer.peer)? {
            // Silenced: nothing goes back, no relay is contacted.
            record(self, Outcome::Silenced)?;
            on_event(&Event::Call(CallEvent::Silenced {
                peer: offer.peer.clone(),
            }));
            return Ok(false);
        }
        let mut sender = ServerConn::open(&self.invite, &self.route()).await?;
        if let Ok(out) = self.encrypt_signal(
            &offer.group_id,
            &offer.call_id,
            Body::Ringing(CallRinging {}),
        ) {
            let _ = signal::send_live(&mut sender, &out).await;
        }
        on_event(&Event::Call(CallEvent::Incoming {
            peer: offer.peer.clone(),
        }));
        let mut decision = (calls.decide)(&offer.peer);
        let give_up = tokio::time::sleep(RINGING_AT_MOST);
        tokio::pin!(give_up);
        let accepted = loop {
            tokio::select! {
                d = &mut decision => break d,
                () = &mut give_up => {
                    record(self, Outcome::Missed)?;
                    self.ended(on_event, &offer.peer, Outcome::Missed, 0, None);
                    return Ok(false);
                }
                () = stop.as_mut() => {
                    record(self, Outcome::Missed)?;
                    return Ok(true);
                }
                p = recv.next_push() => {
                    let Some(server_frame::Body::Deliver(d)) = p? else { continue };
                    let applied = inbox::apply(&self.profile, &self.device(), &d)?;
                    if !d.online_only {
                        recv.ack(vec![d.envelope_id]).await?;
                    }
                    for e in &applied.events {
                        on_event(e);
                    }
                    for s in applied.signals {
                        if s.call_id == offer.call_id {
                            if matches!(s.body, Body::Hangup(_)) {
                                record(self, Outcome::Missed)?;
                                self.ended(on_event, &offer.peer, Outcome::Missed, 0, None);
                                return Ok(false);
                            }
                        } else {
                            self.busy(&mut sender, s, on_event).await?;
                        }
                    }
                }
            }
        };
        if !accepted {
            if let Ok(out) = self.encrypt_signal(
                &offer.group_id,
                &offer.call_id,
                Body::Decline(CallDecline {}),
            ) {
                let _ = signal::send_live(&mut sender, &out).await;
            }
            record(self, Outcome::Declined)?;
            self.ended(on_event, &offer.peer, Outcome::Declined, 0, None);
            return Ok(false);
        }
        let settings = self.call_settings()?;
        // Anything the caller sent that cannot be used, or a relay that
        // fails us, ends this call only: listening goes on.
        let started = async {
            let creds = relay_credentials_on(recv).await?;
            // A different relay from the caller's, when there are several.
            let avoid = candidates::addresses(&o.sdp).into_iter().next();
            let mut handle = self
                .start_media(Role::Callee, &creds, avoid, &calls.media)
                .await?;
            wait_relay(&mut handle).await?;
            let answer = handle
                .request(|r| Command::AcceptOffer(o.sdp.clone(), r))
                .await?;
            Ok::<_, ClientError>((handle, answer))
        };
        let (handle, answer) = match started.await {
            Ok(started) => started,
            Err(e) => {
                if let Ok(out) = self.encrypt_signal(
                    &offer.group_id,
                    &offer.call_id,
                    Body::Hangup(CallHangup { unanswered: false }),
                ) {
                    let _ = signal::send_live(&mut sender, &out).await;
                }
                record(self, Outcome::Failed)?;
                self.ended(
                    on_event,
                    &offer.peer,
                    Outcome::Failed,
                    0,
                    Some(e.to_string()),
                );
                return Ok(false);
            }
        };
        let mut active = Active {
            peer: offer.peer.clone(),
            group_id: offer.group_id.clone(),
            call_id: offer.call_id.clone(),
            role: Role::Callee,
            protect_ip: settings.protect_ip || self.proxy.is_some(),
            via_proxy: self.proxy.is_some(),
            remote_direct: o.direct_allowed,
            handle,
            sender,
            answered: true,
            path: None,
            started_ms: records::now(),
            media_ended: false,
            ring_for: RING_FOR,
            connected_at: None,
        };
        active
            .send(
                self,
                Body::Answer(CallAnswer {
                    sdp: answer,
                    direct_allowed: !active.protect_ip,
                }),
            )
            .await;
        if !active.protect_ip && o.direct_allowed {
            let _ = active.handle.commands.send(Command::AllowDirect).await;
        }
        let stopped = Box::pin(self.drive(recv, &mut active, on_event, stop)).await?;
        let outcome = stopped;
        let was_stop = matches!(outcome, Driven::Stopped(_));
        self.finish_call(active, outcome, on_event).await?;
        Ok(was_stop)
    }

    /// Another call while we are in one (or ringing): "busy" to an allowed
    /// caller, silence to anyone else.
    async fn busy(
        &mut self,
        sender: &mut ServerConn,
        s: Signal,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<(), ClientError> {
        if !matches!(s.body, Body::Offer(_)) {
            return Ok(());
        }
        let allowed = records::may_ring(self.profile.conn(), &s.peer)?;
        if allowed
            && let Ok(out) = self.encrypt_signal(&s.group_id, &s.call_id, Body::Busy(CallBusy {}))
        {
            let _ = signal::send_live(sender, &out).await;
        }
        let outcome = if allowed {
            Outcome::Busy
        } else {
            Outcome::Silenced
        };
        let line = records::record(
            self.profile.conn(),
            &Ended {
                call_id: &s.call_id,
                group_id: &s.group_id,
                peer: &s.peer,
                outgoing: false,
                started_ms: records::now(),
                talk_ms: 0,
                outcome,
                path: None,
            },
        )?;
        if let Some(text) = line {
            on_event(&Event::Info {
                conversation: s.peer.clone(),
                text,
            });
        }
        Ok(())
    }

    /// The loop of a call whose engine runs: until it ends, or `stop`.
    async fn drive<S: Future<Output = ()>>(
        &mut self,
        recv: &mut ServerConn,
        a: &mut Active,
        on_event: &mut impl FnMut(&Event),
        stop: &mut Pin<&mut S>,
    ) -> Result<Driven, ClientError> {
        let ring_deadline = tokio::time::Instant::now() + a.ring_for;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        let mut signalling_up = true;
        loop {
            let wake = tokio::select! {
                p = recv.next_push(), if signalling_up => Wake::Push(p),
                n = a.handle.notices.recv() => Wake::Notice(n),
                () = tokio::time::sleep_until(ring_deadline), if !a.answered => Wake::RingTimeout,
                () = stop.as_mut() => Wake::Stop,
                _ = keepalive.tick(), if signalling_up => Wake::Keepalive,
            };
            match wake {
                Wake::Push(Ok(Some(server_frame::Body::Deliver(d)))) => {
                    let applied = inbox::apply(&self.profile, &self.device(), &d)?;
                    if !d.online_only {
                        recv.ack(vec![d.envelope_id]).await?;
                    }
                    for e in &applied.events {
                        on_event(e);
                    }
                    for s in applied.signals {
                        if let Some(outcome) = self.on_signal(a, s, on_event).await? {
                            return Ok(Driven::Ended(outcome));
                        }
                    }
                }
                Wake::Push(Ok(Some(_))) => {}
                Wake::Push(Ok(None) | Err(_)) => {
                    if !a.answered {
                        a.hang_up(self).await;
                        return Ok(Driven::Ended(Outcome::Failed));
                    }
                    // The media goes on; only the other side's hang-up
                    // can no longer reach us (the media timeout still can).
                    signalling_up = false;
                    on_event(&Event::Warning {
                        text: "lost the connection to the server; the call goes on".into(),
                    });
                }
                Wake::Notice(None) => {
                    // The media ended by itself (duration, failure, lost path).
                    a.media_ended = true;
                    a.hang_up(self).await;
                    return Ok(Driven::Ended(if a.answered {
                        Outcome::Answered
                    } else {
                        Outcome::Failed
                    }));
                }
                Wake::Notice(Some(n)) => self.on_notice(a, n, on_event).await,
                Wake::RingTimeout => {
                    a.hang_up(self).await;
                    return Ok(Driven::Ended(Outcome::Missed));
                }
                Wake::Stop => {
                    a.hang_up(self).await;
                    return Ok(Driven::Stopped(if a.answered {
                        Outcome::Answered
                    } else {
                        Outcome::Cancelled
                    }));
                }
                Wake::Keepalive => {
                    if recv.ping().await.is_err() {
                        signalling_up = false;
                    }
                }
            }
        }
    }

    async fn on_notice(&mut self, a: &mut Active, n: Notice, on_event: &mut impl FnMut(&Event)) {
        match n {
            Notice::Engine(EngineEvent::LocalCandidate(line)) => {
                a.send(self, Body::Candidate(CallCandidate { candidate: line }))
                    .await;
            }
            Notice::Engine(EngineEvent::Connected(p) | EngineEvent::PathChanged(p)) => {
                a.path = Some(p);
                a.connected_at.get_or_insert_with(tokio::time::Instant::now);
                on_event(&Event::Call(CallEvent::Connected {
                    peer: a.peer.clone(),
                    path: path_name(p).into(),
                    why: a.why(p),
                }));
            }
            Notice::Engine(_) => {}
            Notice::Hearing => on_event(&Event::Call(CallEvent::Hearing {
                peer: a.peer.clone(),
            })),
            Notice::Stats(s) => {
                let r = s.received;
                let heard = r.played + r.concealed;
                on_event(&Event::Call(CallEvent::Quality {
                    peer: a.peer.clone(),
                    seconds: a.connected_at.map_or(0, |t| t.elapsed().as_secs()),
                    rtt_ms: s.rtt_ms.map(|v| v.round() as u32),
                    loss_out_permille: s.loss_out.map(|l| (l * 1000.0).round() as u32),
                    loss_in_permille: (r.concealed * 1000).checked_div(heard).unwrap_or(0) as u32,
                    jitter_ms: s.jitter_ms.round() as u32,
                    path: path_name(s.path.unwrap_or(Path::Relayed)).into(),
                }));
            }
        }
    }

    /// A signal for the call in progress (or another call: busy).
    async fn on_signal(
        &mut self,
        a: &mut Active,
        s: Signal,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<Option<Outcome>, ClientError> {
        if s.call_id != a.call_id {
            self.busy(&mut a.sender, s, on_event).await?;
            return Ok(None);
        }
        if s.peer != a.peer {
            return Ok(None);
        }
        match s.body {
            Body::Ringing(_) if a.role == Role::Caller && !a.answered => {
                on_event(&Event::Call(CallEvent::Ringing {
                    peer: a.peer.clone(),
                }));
            }
            Body::Answer(ans) if a.role == Role::Caller && !a.answered => {
                if let Err(e) = a
                    .handle
                    .request(|r| Command::AcceptAnswer(ans.sdp.clone(), r))
                    .await
                {
                    on_event(&Event::Warning {
                        text: format!("the answer could not be used: {e}"),
                    });
                    a.answered = true;
                    a.hang_up(self).await;
                    return Ok(Some(Outcome::Failed));
                }
                a.answered = true;
                a.remote_direct = ans.direct_allowed;
                on_event(&Event::Call(CallEvent::Answered {
                    peer: a.peer.clone(),
                }));
                if !a.protect_ip && ans.direct_allowed {
                    let _ = a.handle.commands.send(Command::AllowDirect).await;
                }
            }
            Body::Candidate(c) if a.answered => {
                let _ = a
                    .handle
                    .commands
                    .send(Command::RemoteCandidate(c.candidate))
                    .await;
            }
            Body::Busy(_) if a.role == Role::Caller => return Ok(Some(Outcome::Busy)),
            Body::Decline(_) if a.role == Role::Caller => return Ok(Some(Outcome::Declined)),
            Body::Hangup(_) => {
                return Ok(Some(if a.answered {
                    Outcome::Answered
                } else {
                    Outcome::Missed
                }));
            }
            other => {
                tracing::debug!(kind = signal::kind(&other), "ignored a call signal");
            }
        }
        Ok(None)
    }

    /// Stops the media, records the call, tells the user.
    async fn finish_call(
        &mut self,
        a: Active,
        driven: Driven,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<Outcome, ClientError> {
        let mut outcome = match driven {
            Driven::Ended(o) | Driven::Stopped(o) => o,
        };
        if !a.media_ended {
            let _ = a.handle.commands.send(Command::HangUp).await;
        }
        let Active {
            handle,
            sender,
            peer,
            group_id,
            call_id,
            role,
            path,
            started_ms,
            ..
        } = a;
        sender.close().await;
        let summary = handle.finish().await;
        let path = summary.stats.path.or(path);
        if outcome == Outcome::Answered && summary.setup_time.is_none() {
            outcome = Outcome::Failed;
        }
        let talk_ms = summary.talk_time.as_millis() as u64;
        records::record(
            self.profile.conn(),
            &Ended {
                call_id: &call_id,
                group_id: &group_id,
                peer: &peer,
                outgoing: role == Role::Caller,
                started_ms,
                talk_ms,
                outcome,
                path: path.map(path_name),
            },
        )?;
        for e in self.flush_earlier().await? {
            on_event(&e);
        }
        let error = summary.error.map(|e| e.to_string());
        self.ended(on_event, &peer, outcome, talk_ms / 1000, error);
        Ok(outcome)
    }

    fn ended(
        &self,
        on_event: &mut impl FnMut(&Event),
        peer: &str,
        outcome: Outcome,
        seconds: u64,
        error: Option<String>,
    ) {
        let outcome = serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        on_event(&Event::Call(CallEvent::Ended {
            peer: peer.to_string(),
            outcome,
            seconds,
            error,
        }));
    }
}

/// How the loop ended.
enum Driven {
    /// By itself.
    Ended(Outcome),
    /// Because the user stopped it.
    Stopped(Outcome),
}

impl Client {
    /// Starts the media engine on this side's relay: over UDP to a relay
    /// the server listed (not `avoid`, the other side's, when there are
    /// several), or over TCP through the profile's proxy.
    async fn start_media(
        &self,
        role: Role,
        creds: &RelayCredentials,
        avoid: Option<std::net::SocketAddr>,
        media: &CallMedia,
    ) -> Result<CallHandle, ClientError> {
        let (io, relay, local) = match &self.proxy {
            Some(link) => {
                let stream = dial(&Route::Proxy(link.clone()), Target::Relay, RELAY_WITHIN).await?;
                // The engine names the relay by the proxy's address; nothing
                // is ever sent anywhere else.
                let addr = tokio::net::lookup_host(link.address())
                    .await?
                    .next()
                    .ok_or_else(|| {
                        ClientError::Invalid("the proxy's name does not resolve".into())
                    })?;
                let relay = RelayServer {
                    addr,
                    username: creds.username.clone(),
                    password: creds.password.clone(),
                    transport: Transport::Tcp,
                };
                let io = CallIo::Stream {
                    stream: Box::new(stream),
                    relay: addr,
                };
                (io, relay, std::net::SocketAddr::from(([127, 0, 0, 1], 9)))
            }
            None => {
                let relay = pick_relay(relay_servers(creds).await?, avoid)
                    .ok_or_else(|| ClientError::Invalid("no call relay".into()))?;
                let (socket, local) = driver::bind_toward(relay.addr)?;
                (CallIo::Udp(socket), relay, local)
            }
        };
        let config = EngineConfig {
            role,
            relay: Some(relay),
            local,
            seed: random_bytes::<32>(),
            expected_loss: 5,
        };
        let media = Media {
            source: media.audio_in.open()?,
            sink: media.audio_out.open()?,
            duration: media.duration,
        };
        Ok(driver::spawn(config, io, media)?)
    }
}

async fn wait_relay(handle: &mut CallHandle) -> Result<(), ClientError> {
    let deadline = tokio::time::Instant::now() + RELAY_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, handle.notices.recv()).await {
            Ok(Some(Notice::Engine(EngineEvent::RelayReady { .. }))) => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ClientError::Call(umbra_call::CallError::Relay(
                    "could not be used".into(),
                )));
            }
            Err(_) => {
                return Err(ClientError::Call(umbra_call::CallError::Relay(format!(
                    "did not answer within {} s (is it reachable from here?)",
                    RELAY_WITHIN.as_secs()
                ))));
            }
        }
    }
}

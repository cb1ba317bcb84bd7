//! One member's group call: finding the call going on in a group
//! conversation (a probe the call's committer answers) or starting one,
//! getting into the call's own MLS group (a join request, the Welcome with
//! the forwarding unit's room) and into the room, then the loop around the
//! running media: admitting joiners and removing leavers when this device
//! commits for the call, applying the committer's commits otherwise, each
//! epoch's frame keys handed to the media, the participants reported once
//! a second; and on Ctrl-C, the end of the media or the unit going away,
//! telling the call we left (and everyone, if we were the last).
//!
//! Always relayed: the only address the media ever reaches is the unit's,
//! whatever "protect IP address" says, and the unit holds no key.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use umbra_call::e2ee::FrameKeys;
use umbra_call::group_driver::{self, GroupCommand, GroupHandle, GroupMedia, GroupNotice};
use umbra_wire::e2e::group_call_signal::Body;
use umbra_wire::e2e::{
    GroupCallCommit, GroupCallEnded, GroupCallJoin, GroupCallLeft, GroupCallOngoing,
    GroupCallProbe, GroupCallStarted, GroupCallWelcome,
};
use umbra_wire::invite::UnitLink;
use umbra_wire::proto::{RelayCredentials, server_frame};

use super::CallMedia;
use super::group_keys::{CallGroup, JoinRequest};
use super::group_signal::{self, GroupSignal};
use super::unit::{self, UnitEnd};
use crate::account::relay_credentials_on;
use crate::client::{Client, random_bytes};
use crate::conn::ServerConn;
use crate::model::{CallEvent, Event, Participant};
use crate::{ClientError, inbox};

/// How long a probe waits for a call going on before starting one.
const PROBE_FOR: Duration = Duration::from_secs(2);
/// How long a join request waits for the Welcome.
const JOIN_WITHIN: Duration = Duration::from_secs(10);
/// Pings on the receiving connection.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Above this level (dBFS) a participant counts as speaking; below, what
/// arrives is silence or the decoder's comfort noise.
const SPEAKING_DBFS: f64 = -50.0;

/// What `Connected` says about the path of every group call.
const WHY_RELAYED: &str = "through the forwarding unit: group calls are always relayed, so no \
                           member sees another's address, and the unit cannot decrypt what is said";

/// A group call with its media running.
struct InCall {
    group_id: Vec<u8>,
    conversation: String,
    call_id: Vec<u8>,
    room: [u8; 16],
    keys: CallGroup,
    handle: GroupHandle,
    /// Anonymous connection for our signals.
    sender: ServerConn,
    connected_at: Option<Instant>,
}

/// What waiting for a signal came to.
enum Waited<T> {
    Found(T),
    TimedOut,
    Stopped,
}

/// What woke the call loop.
enum Wake {
    Push(Result<Option<server_frame::Body>, ClientError>),
    Notice(Option<GroupNotice>),
    Unit(UnitEnd),
    Stop,
    Keepalive,
}

impl InCall {
    /// Everyone else in the call.
    fn others(&self, me: &str) -> Vec<String> {
        self.keys
            .members()
            .into_iter()
            .map(|(_, u)| u)
            .filter(|u| u != me)
            .collect()
    }
}

impl Client {
    /// Starts or joins the group call in the group conversation `name`, and
    /// runs it until we leave (`stop`), `media.duration` passes, or the call
    /// ends for us.
    pub async fn group_call(
        &mut self,
        name: &str,
        media: &CallMedia,
        on_event: &mut impl FnMut(&Event),
        stop: impl Future<Output = ()>,
    ) -> Result<(), ClientError> {
        tokio::pin!(stop);
        if self.proxy.is_some() {
            return Err(ClientError::Invalid(
                "group calls do not go through a proxy yet: the forwarding unit is reached \
                 over UDP (use 1:1 calls through the proxy, or connect without it)"
                    .into(),
            ));
        }
        let group_id = self.group_id_by_name(name)?;
        for e in self.flush_earlier().await? {
            on_event(&e);
        }
        let mut recv = ServerConn::open(&self.invite, &self.route()).await?;
        self.login_session(&mut recv, true).await?;
        let creds = relay_credentials_on(&mut recv).await?;
        let link = unit_link(&creds)?;
        let mut sender = ServerConn::open(&self.invite, &self.route()).await?;

        let probe =
            self.encrypt_group_signal(&group_id, &[], Body::Probe(GroupCallProbe {}), None)?;
        group_signal::send_live(&mut sender, &probe).await?;
        let found = self
            .wait_for(&mut recv, name, PROBE_FOR, on_event, &mut stop, |s| {
                (s.group_id == group_id && matches!(s.body, Body::Ongoing(_) | Body::Started(_)))
                    .then_some(s)
            })
            .await?;
        let (call_id, keys, room, started) = match found {
            Waited::Stopped => return Ok(()),
            Waited::Found(s) => {
                let request = JoinRequest::new(&self.identity)?;
                let ask = self.encrypt_group_signal(
                    &group_id,
                    &s.call_id,
                    Body::Join(GroupCallJoin {
                        key_package: request.key_package.clone(),
                    }),
                    None,
                )?;
                group_signal::send_live(&mut sender, &ask).await?;
                let me = self.username().to_owned();
                let welcome = self
                    .wait_for(
                        &mut recv,
                        name,
                        JOIN_WITHIN,
                        on_event,
                        &mut stop,
                        |w| match w.body {
                            Body::Welcome(welcome)
                                if w.call_id == s.call_id && w.from.username != me =>
                            {
                                Some(welcome)
                            }
                            _ => None,
                        },
                    )
                    .await?;
                let w = match welcome {
                    Waited::Stopped => return Ok(()),
                    Waited::TimedOut => {
                        return Err(ClientError::Invalid(format!(
                            "the group call in `{name}` did not let us in within {} s (its \
                             members may just have left: try again)",
                            JOIN_WITHIN.as_secs()
                        )));
                    }
                    Waited::Found(w) => w,
                };
                let room: [u8; 16] = w.room.as_slice().try_into().map_err(|_| {
                    ClientError::Protocol("a group call welcome without a proper room".into())
                })?;
                (s.call_id, request.accept(&w.welcome)?, room, false)
            }
            Waited::TimedOut => {
                let call_id = random_bytes::<16>().to_vec();
                let keys = CallGroup::start(&self.identity)?;
                let told = self.encrypt_group_signal(
                    &group_id,
                    &call_id,
                    Body::Started(GroupCallStarted {}),
                    None,
                )?;
                group_signal::send_live(&mut sender, &told).await?;
                (call_id, keys, random_bytes::<16>(), true)
            }
        };

        let unit_addr = unit::resolve(&link).await?;
        let prepared = group_driver::prepare(unit_addr)?;
        let session = unit::join(&link, &creds, room, &prepared.offer).await?;
        let frame_keys = FrameKeys::new(&keys.epoch_secret()?.epoch())
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let handle = prepared.start(
            &session.answer,
            frame_keys,
            GroupMedia {
                source: media.audio_in.open()?,
                sink: media.audio_out.open()?,
                duration: media.duration,
            },
        )?;
        // The control connection is held by a task of its own: it reports
        // the unit ending our place, or closes when we leave.
        let (unit_end_tx, mut unit_end) = oneshot::channel();
        let (leave_tx, leave_rx) = oneshot::channel::<()>();
        let mut session = session;
        tokio::spawn(async move {
            tokio::select! {
                e = session.ended() => { let _ = unit_end_tx.send(e); }
                _ = leave_rx => session.leave().await,
            }
        });
        let mut call = InCall {
            group_id,
            conversation: name.to_owned(),
            call_id,
            room,
            keys,
            handle,
            sender,
            connected_at: None,
        };
        on_event(&Event::Call(CallEvent::GroupJoined {
            conversation: name.to_owned(),
            started,
            participants: call.others(self.username()),
        }));
        let error = self
            .run_group(&mut recv, &mut call, &mut unit_end, on_event, &mut stop)
            .await;
        let _ = leave_tx.send(());
        self.leave_group(&mut call).await;
        recv.close().await;
        let InCall {
            handle,
            sender,
            connected_at,
            ..
        } = call;
        handle.hang_up();
        sender.close().await;
        let summary = handle.finish().await;
        let error = error.or_else(|| match summary {
            Ok(s) => s.error.map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        });
        on_event(&Event::Call(CallEvent::GroupLeft {
            conversation: name.to_owned(),
            seconds: connected_at.map_or(0, |t| t.elapsed().as_secs()),
            error,
        }));
        for e in self.flush_earlier().await? {
            on_event(&e);
        }
        Ok(())
    }

    /// Receives (applying everything as `listen` would) until `pick`
    /// takes a group signal, `within` passes, or `stop`.
    async fn wait_for<S: Future<Output = ()>, T>(
        &mut self,
        recv: &mut ServerConn,
        conversation: &str,
        within: Duration,
        on_event: &mut impl FnMut(&Event),
        stop: &mut Pin<&mut S>,
        pick: impl Fn(GroupSignal) -> Option<T>,
    ) -> Result<Waited<T>, ClientError> {
        let deadline = Instant::now() + within;
        loop {
            let push = tokio::select! {
                p = recv.next_push() => p?,
                () = tokio::time::sleep_until(deadline) => return Ok(Waited::TimedOut),
                () = stop.as_mut() => return Ok(Waited::Stopped),
            };
            let Some(server_frame::Body::Deliver(d)) = push else {
                if push.is_none() {
                    return Err(ClientError::Net(umbra_net::NetError::Closed));
                }
                continue;
            };
            let applied = inbox::apply(&self.profile, &self.device(), &d)?;
            if !d.online_only {
                recv.ack(vec![d.envelope_id]).await?;
            }
            for e in applied
                .events
                .iter()
                .filter(|e| !about_this_call(e, conversation))
            {
                on_event(e);
            }
            if let Some(found) = applied.group_signals.into_iter().find_map(&pick) {
                return Ok(Waited::Found(found));
            }
        }
    }

    /// The call loop. Returns why the call ended for us, when it was not
    /// our choice.
    async fn run_group<S: Future<Output = ()>>(
        &mut self,
        recv: &mut ServerConn,
        call: &mut InCall,
        unit_end: &mut oneshot::Receiver<UnitEnd>,
        on_event: &mut impl FnMut(&Event),
        stop: &mut Pin<&mut S>,
    ) -> Option<String> {
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        let mut signalling_up = true;
        loop {
            let wake = tokio::select! {
                p = recv.next_push(), if signalling_up => Wake::Push(p),
                n = call.handle.notices.recv() => Wake::Notice(n),
                e = &mut *unit_end => Wake::Unit(e.unwrap_or(UnitEnd::Closed)),
                () = stop.as_mut() => Wake::Stop,
                _ = keepalive.tick(), if signalling_up => Wake::Keepalive,
            };
            match wake {
                Wake::Push(Ok(Some(server_frame::Body::Deliver(d)))) => {
                    let applied = match inbox::apply(&self.profile, &self.device(), &d) {
                        Ok(a) => a,
                        Err(e) => return Some(e.to_string()),
                    };
                    if !d.online_only && recv.ack(vec![d.envelope_id]).await.is_err() {
                        signalling_up = false;
                    }
                    for e in applied
                        .events
                        .iter()
                        .filter(|e| !about_this_call(e, &call.conversation))
                    {
                        on_event(e);
                    }
                    for s in applied.group_signals {
                        if s.group_id != call.group_id {
                            continue;
                        }
                        if let Err(e) = self.on_group_signal(call, s, on_event).await {
                            match e {
                                Ended::Removed => {
                                    return Some("another member removed us from the call".into());
                                }
                                Ended::Failed(e) => return Some(e.to_string()),
                            }
                        }
                    }
                }
                Wake::Push(Ok(Some(_))) => {}
                Wake::Push(Ok(None) | Err(_)) => {
                    // The media goes on; joins and leaves can no longer
                    // reach us, so the keys stay where they are.
                    signalling_up = false;
                    on_event(&Event::Warning {
                        text: "lost the connection to the server; the call goes on, but nobody \
                               can join or leave it until you call again"
                            .into(),
                    });
                }
                Wake::Notice(None) => return None,
                Wake::Notice(Some(n)) => self.on_group_notice(call, n, on_event),
                Wake::Unit(end) => {
                    return Some(
                        match end {
                            UnitEnd::ShuttingDown => {
                                "the forwarding unit is restarting; call again in a moment"
                            }
                            UnitEnd::ConnectionLost => {
                                "the forwarding unit lost our audio connection"
                            }
                            UnitEnd::Closed => "the connection to the forwarding unit broke",
                        }
                        .into(),
                    );
                }
                Wake::Stop => return None,
                Wake::Keepalive => {
                    if recv.ping().await.is_err() {
                        signalling_up = false;
                    }
                }
            }
        }
    }

    /// A signal for a call in this conversation while we are in one.
    async fn on_group_signal(
        &mut self,
        call: &mut InCall,
        s: GroupSignal,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<(), Ended> {
        let me = self.username().to_owned();
        let from = s.from.username.clone();
        match s.body {
            Body::Probe(_) if call.keys.is_committer() => {
                let participants = call.keys.members().len() as u32;
                let out = self.encrypt_group_signal(
                    &call.group_id,
                    &call.call_id,
                    Body::Ongoing(GroupCallOngoing { participants }),
                    Some(std::slice::from_ref(&from)),
                )?;
                self.send_group(call, &out).await;
            }
            Body::Join(j) if s.call_id == call.call_id && call.keys.is_committer() => {
                if call.keys.has(&from) {
                    // The same member again: a device that crashed and came
                    // back. Its old place goes first.
                    let commit = call.keys.remove(&self.identity, &from)?;
                    self.send_commit(call, &commit.commit, &[&me, &from])
                        .await?;
                }
                let commit = match call.keys.admit(&self.identity, &j.key_package, &s.from) {
                    Ok(c) => c,
                    Err(e) => {
                        on_event(&Event::Warning {
                            text: format!("refused a request into the call: {e}"),
                        });
                        return Ok(());
                    }
                };
                self.send_commit(call, &commit.commit, &[&me, &from])
                    .await?;
                let welcome = self.encrypt_group_signal(
                    &call.group_id,
                    &call.call_id,
                    Body::Welcome(GroupCallWelcome {
                        welcome: commit.welcome.unwrap_or_default(),
                        room: call.room.to_vec(),
                    }),
                    Some(std::slice::from_ref(&from)),
                )?;
                self.send_group(call, &welcome).await;
                self.rekey(call).await?;
                on_event(&Event::Call(CallEvent::ParticipantJoined {
                    conversation: call.conversation.clone(),
                    who: from,
                }));
            }
            Body::Commit(c) if s.call_id == call.call_id => {
                let applied = match call.keys.apply(&c.commit, &from) {
                    Ok(a) => a,
                    Err(e) => {
                        on_event(&Event::Warning {
                            text: format!("ignored a change to the call: {e}"),
                        });
                        return Ok(());
                    }
                };
                if applied.we_were_removed {
                    return Err(Ended::Removed);
                }
                self.rekey(call).await?;
                for who in applied.added.into_iter().filter(|u| *u != me) {
                    on_event(&Event::Call(CallEvent::ParticipantJoined {
                        conversation: call.conversation.clone(),
                        who,
                    }));
                }
                for who in applied.removed {
                    on_event(&Event::Call(CallEvent::ParticipantLeft {
                        conversation: call.conversation.clone(),
                        who,
                    }));
                }
            }
            Body::Left(_) if s.call_id == call.call_id && call.keys.has(&from) => {
                call.keys.mark_leaving(&from);
                if call.keys.is_committer() {
                    let commit = call.keys.remove(&self.identity, &from)?;
                    self.send_commit(call, &commit.commit, &[&me]).await?;
                    self.rekey(call).await?;
                    on_event(&Event::Call(CallEvent::ParticipantLeft {
                        conversation: call.conversation.clone(),
                        who: from,
                    }));
                }
            }
            Body::Started(_) if s.call_id != call.call_id => {
                on_event(&Event::Warning {
                    text: format!(
                        "{from} started another call in `{}` at the same moment; it stays \
                         separate from this one",
                        call.conversation
                    ),
                });
            }
            other => {
                tracing::debug!(
                    kind = group_signal::kind(&other),
                    "ignored a group call signal"
                );
            }
        }
        Ok(())
    }

    /// Sends a call group commit to everyone in the call but `except`.
    async fn send_commit(
        &mut self,
        call: &mut InCall,
        commit: &[u8],
        except: &[&str],
    ) -> Result<(), ClientError> {
        let to: Vec<String> = call
            .keys
            .members()
            .into_iter()
            .map(|(_, u)| u)
            .filter(|u| !except.contains(&u.as_str()))
            .collect();
        if to.is_empty() {
            return Ok(());
        }
        let out = self.encrypt_group_signal(
            &call.group_id,
            &call.call_id,
            Body::Commit(GroupCallCommit {
                commit: commit.to_vec(),
            }),
            Some(&to),
        )?;
        self.send_group(call, &out).await;
        Ok(())
    }

    async fn send_group(&self, call: &mut InCall, out: &group_signal::GroupOutgoing) {
        if let Err(e) = group_signal::send_live(&mut call.sender, out).await {
            tracing::debug!(error = %e, "group call signal not sent");
        }
    }

    /// Hands the call's current epoch to the media.
    async fn rekey(&self, call: &mut InCall) -> Result<(), ClientError> {
        let secret = call.keys.epoch_secret()?;
        let _ = call.handle.commands.send(GroupCommand::Rekey(secret)).await;
        Ok(())
    }

    fn on_group_notice(
        &self,
        call: &mut InCall,
        n: GroupNotice,
        on_event: &mut impl FnMut(&Event),
    ) {
        match n {
            GroupNotice::Connected => {
                call.connected_at = Some(Instant::now());
                on_event(&Event::Call(CallEvent::Connected {
                    peer: call.conversation.clone(),
                    path: "relayed".into(),
                    why: WHY_RELAYED.into(),
                }));
            }
            GroupNotice::Speakers(stats) => {
                let me = self.username();
                let participants = call
                    .keys
                    .members()
                    .into_iter()
                    .filter(|(_, u)| u != me)
                    .map(|(leaf, name)| {
                        let s = stats.iter().find(|s| s.member == leaf);
                        Participant {
                            name,
                            level_dbfs: s.map_or(-100, |s| s.level_dbfs.round() as i32),
                            loss_permille: s.map_or(0, |s| (s.loss * 1000.0).round() as u32),
                            speaking: s.is_some_and(|s| s.active && s.level_dbfs > SPEAKING_DBFS),
                        }
                    })
                    .collect();
                on_event(&Event::Call(CallEvent::Participants {
                    conversation: call.conversation.clone(),
                    seconds: call.connected_at.map_or(0, |t| t.elapsed().as_secs()),
                    participants,
                }));
            }
            GroupNotice::Rekeyed(Ok(_)) => {}
            GroupNotice::Rekeyed(Err(e)) => on_event(&Event::Warning {
                text: format!(
                    "the call could not move to its new keys ({e}); you are muted until it does"
                ),
            }),
        }
    }

    /// Tells the call we left; if nobody else is in it, tells every member
    /// it ended.
    async fn leave_group(&mut self, call: &mut InCall) {
        let others = call.others(self.username());
        let (body, only) = if others.is_empty() {
            (Body::Ended(GroupCallEnded {}), None)
        } else {
            (Body::Left(GroupCallLeft {}), Some(others.as_slice()))
        };
        match self.encrypt_group_signal(&call.group_id, &call.call_id, body, only) {
            Ok(out) => self.send_group(call, &out).await,
            Err(e) => tracing::debug!(error = %e, "group call leave not encrypted"),
        }
    }
}

/// Why the call loop stops on a signal.
enum Ended {
    /// The committer removed us.
    Removed,
    /// Our own state broke.
    Failed(ClientError),
}

impl From<ClientError> for Ended {
    fn from(e: ClientError) -> Self {
        Self::Failed(e)
    }
}

/// A ring, or an end, of a call in the conversation we are calling in:
/// news for members not in it, not for us.
fn about_this_call(e: &Event, conversation: &str) -> bool {
    matches!(
        e,
        Event::Call(
            CallEvent::GroupStarted { conversation: c, .. }
            | CallEvent::GroupSilenced { conversation: c, .. }
            | CallEvent::GroupEnded { conversation: c },
        ) if c == conversation
    )
}

/// The forwarding unit the server named with our relay credentials.
fn unit_link(creds: &RelayCredentials) -> Result<UnitLink, ClientError> {
    if creds.unit.is_empty() {
        return Err(ClientError::Invalid(
            "this server has no forwarding unit for group calls (ask its operator to run \
             `umbra serve`, or `umbra server --unit`)"
                .into(),
        ));
    }
    Ok(UnitLink::parse(&creds.unit)?)
}

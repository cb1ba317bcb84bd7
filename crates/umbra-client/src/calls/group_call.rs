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
use umbra_call::group_driver::{GroupCommand, GroupHandle, GroupNotice};
use umbra_wire::e2e::group_call_signal::Body;
use umbra_wire::e2e::{
    GroupCallCommit, GroupCallEnded, GroupCallJoin, GroupCallLeft, GroupCallOngoing,
    GroupCallProbe, GroupCallStarted, GroupCallWelcome,
};
use umbra_wire::proto::server_frame;

use super::CallMedia;
use super::group_keys::{CallGroup, JoinRequest};
use super::group_room::{enter_room, unit_link, unit_reason};
use super::group_signal::{self, GroupSignal};
use super::unit::UnitEnd;
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
/// Commits kept from a member who is not (yet) the committer: the next in
/// line can remove a committer that left before its Left reaches us.
const DEFERRED_MAX: usize = 16;
/// Signals kept while we wait to get into the call, to act on once in.
const SPILL_MAX: usize = 64;
/// Why the call ends when the server connection goes.
const SIGNALLING_LOST: &str = "lost the connection to the server: without it this device cannot \
                               follow who joins and leaves, so it left the call (call again to \
                               rejoin)";

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
    /// Commits from a member who did not commit for the call when they
    /// came, with who sent them: applied once it does.
    deferred: Vec<(Vec<u8>, String)>,
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
        others_than(&self.keys, me)
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
        let mut spill = Vec::new();
        let found = self
            .wait_for(
                &mut recv,
                name,
                PROBE_FOR,
                on_event,
                &mut stop,
                &mut spill,
                |s| {
                    (s.group_id == group_id
                        && matches!(s.body, Body::Ongoing(_) | Body::Started(_)))
                    .then_some(s)
                },
            )
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
                // Only the member who answered the probe lets us in: a
                // Welcome from anyone else is not this call's.
                let answered = s.from.clone();
                let welcome = self
                    .wait_for(
                        &mut recv,
                        name,
                        JOIN_WITHIN,
                        on_event,
                        &mut stop,
                        &mut spill,
                        |w| match w.body {
                            Body::Welcome(welcome)
                                if w.call_id == s.call_id && w.from == answered =>
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

        // In the call's group from here: whatever stops us getting into
        // the room, the others are told we left (or, alone, that it ended).
        let (handle, session) = match enter_room(&link, &creds, room, &keys, media).await {
            Ok(entered) => entered,
            Err(e) => {
                let others = others_than(&keys, self.username());
                self.tell_left(&group_id, &call_id, &others, &mut sender)
                    .await;
                sender.close().await;
                recv.close().await;
                return Err(e);
            }
        };
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
            deferred: Vec::new(),
        };
        on_event(&Event::Call(CallEvent::GroupJoined {
            conversation: name.to_owned(),
            started,
            participants: call.others(self.username()),
        }));
        // What came for this call while we were getting in (a join, a
        // leave, a probe we may now be the one to answer).
        let mut error = None;
        for s in spill {
            if (s.call_id == call.call_id || matches!(s.body, Body::Probe(_)))
                && let Err(e) = self.on_group_signal(&mut call, s, on_event).await
            {
                error = Some(e.reason());
                break;
            }
        }
        if error.is_none() {
            error = self
                .run_group(&mut recv, &mut call, &mut unit_end, on_event, &mut stop)
                .await;
        }
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
    /// takes a group signal, `within` passes, or `stop`. The group signals
    /// `pick` does not take are kept in `spill` (the first [`SPILL_MAX`]).
    #[allow(clippy::too_many_arguments)]
    async fn wait_for<S: Future<Output = ()>, T>(
        &mut self,
        recv: &mut ServerConn,
        conversation: &str,
        within: Duration,
        on_event: &mut impl FnMut(&Event),
        stop: &mut Pin<&mut S>,
        spill: &mut Vec<GroupSignal>,
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
            for s in applied.group_signals {
                let kept = (spill.len() < SPILL_MAX).then(|| s.clone());
                if let Some(found) = pick(s) {
                    return Ok(Waited::Found(found));
                }
                spill.extend(kept);
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
        loop {
            let wake = tokio::select! {
                p = recv.next_push() => Wake::Push(p),
                n = call.handle.notices.recv() => Wake::Notice(n),
                e = &mut *unit_end => Wake::Unit(e.unwrap_or(UnitEnd::Closed)),
                () = stop.as_mut() => Wake::Stop,
                _ = keepalive.tick() => Wake::Keepalive,
            };
            match wake {
                Wake::Push(Ok(Some(server_frame::Body::Deliver(d)))) => {
                    let applied = match inbox::apply(&self.profile, &self.device(), &d) {
                        Ok(a) => a,
                        Err(e) => return Some(e.to_string()),
                    };
                    if !d.online_only && recv.ack(vec![d.envelope_id]).await.is_err() {
                        return Some(signalling_lost(unit_end).await);
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
                            return Some(e.reason());
                        }
                    }
                }
                Wake::Push(Ok(Some(_))) => {}
                // Joins and leaves could no longer reach us: the others
                // would move to keys we never get.
                Wake::Push(Ok(None) | Err(_)) => return Some(signalling_lost(unit_end).await),
                Wake::Notice(None) => return None,
                Wake::Notice(Some(n)) => self.on_group_notice(call, n, on_event),
                Wake::Unit(end) => return Some(unit_reason(end)),
                Wake::Stop => return None,
                Wake::Keepalive => {
                    if recv.ping().await.is_err() {
                        return Some(signalling_lost(unit_end).await);
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
                    // back. Its old place goes first, and its old keys
                    // with it, whatever becomes of the new request.
                    let commit = call.keys.remove(&self.identity, &from)?;
                    self.rekey(call).await?;
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
                // Our frames move to the new keys at once; the others hold
                // them a moment until the commit reaches them.
                self.rekey(call).await?;
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
                on_event(&Event::Call(CallEvent::ParticipantJoined {
                    conversation: call.conversation.clone(),
                    who: from,
                }));
            }
            Body::Commit(c) if s.call_id == call.call_id => {
                if !call.keys.commits(&from) {
                    // Perhaps the committer left and the next in line
                    // removed it before its Left reached us: kept until
                    // the Left comes.
                    if call.deferred.len() == DEFERRED_MAX {
                        call.deferred.remove(0);
                    }
                    call.deferred.push((c.commit, from));
                    return Ok(());
                }
                self.apply_commit(call, &c.commit, &from, on_event).await?;
                self.apply_deferred(call, on_event).await?;
            }
            Body::Left(_) if s.call_id == call.call_id && call.keys.has(&from) => {
                call.keys.mark_leaving(&from);
                if call.keys.is_committer() {
                    let commit = call.keys.remove(&self.identity, &from)?;
                    self.rekey(call).await?;
                    self.send_commit(call, &commit.commit, &[&me]).await?;
                    on_event(&Event::Call(CallEvent::ParticipantLeft {
                        conversation: call.conversation.clone(),
                        who: from,
                    }));
                } else {
                    self.apply_deferred(call, on_event).await?;
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

    /// Applies a commit from the member who commits for the call. One for
    /// an epoch we left behind is ignored; one we cannot follow (or one
    /// from an epoch we never reached) ends the call for us: the others'
    /// keys would be ones we do not have.
    async fn apply_commit(
        &mut self,
        call: &mut InCall,
        commit: &[u8],
        from: &str,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<(), Ended> {
        let ours = call.keys.epoch();
        match CallGroup::commit_epoch(commit) {
            Some(e) if e < ours => {
                tracing::debug!("ignored a call group commit for an earlier epoch");
                return Ok(());
            }
            Some(e) if e > ours => {
                return Err(Ended::Failed(ClientError::Protocol(format!(
                    "the call moved on without us (a change to its keys for epoch {e} came \
                     while we were at {ours}): call again"
                ))));
            }
            Some(_) => {}
            None => {
                on_event(&Event::Warning {
                    text: format!("ignored a change to the call from {from} that is not a commit"),
                });
                return Ok(());
            }
        }
        let applied = call.keys.apply(commit, from).map_err(|e| {
            Ended::Failed(ClientError::Protocol(format!(
                "could not follow a change to the call's keys ({e}): call again"
            )))
        })?;
        if applied.we_were_removed {
            return Err(Ended::Removed);
        }
        self.rekey(call).await?;
        let me = self.username().to_owned();
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
        Ok(())
    }

    /// Applies the kept commits whose sender now commits for the call.
    async fn apply_deferred(
        &mut self,
        call: &mut InCall,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<(), Ended> {
        while let Some(i) = call
            .deferred
            .iter()
            .position(|(_, from)| call.keys.commits(from))
        {
            let (commit, from) = call.deferred.remove(i);
            self.apply_commit(call, &commit, &from, on_event).await?;
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
        self.tell_left(&call.group_id, &call.call_id, &others, &mut call.sender)
            .await;
    }

    /// Tells `others` in the call that we left, or, with nobody else in
    /// it, every member of the conversation that it ended.
    async fn tell_left(
        &mut self,
        group_id: &[u8],
        call_id: &[u8],
        others: &[String],
        sender: &mut ServerConn,
    ) {
        let (body, only) = if others.is_empty() {
            (Body::Ended(GroupCallEnded {}), None)
        } else {
            (Body::Left(GroupCallLeft {}), Some(others))
        };
        match self.encrypt_group_signal(group_id, call_id, body, only) {
            Ok(out) => {
                if let Err(e) = group_signal::send_live(sender, &out).await {
                    tracing::debug!(error = %e, "group call leave not sent to everyone");
                }
            }
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

impl Ended {
    /// What the user is told.
    fn reason(self) -> String {
        match self {
            Self::Removed => "another member removed us from the call".into(),
            Self::Failed(e) => e.to_string(),
        }
    }
}

/// Why the call ended when the server connection went: the unit's reason
/// if it ends our place within a second (a node shutting down closes
/// both), else the lost signalling.
async fn signalling_lost(unit_end: &mut oneshot::Receiver<UnitEnd>) -> String {
    match tokio::time::timeout(Duration::from_secs(1), unit_end).await {
        Ok(Ok(end)) => unit_reason(end),
        _ => SIGNALLING_LOST.into(),
    }
}

/// Everyone in the call's group but `me`.
fn others_than(keys: &CallGroup, me: &str) -> Vec<String> {
    keys.members()
        .into_iter()
        .map(|(_, u)| u)
        .filter(|u| u != me)
        .collect()
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

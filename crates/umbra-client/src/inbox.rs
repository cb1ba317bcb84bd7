//! Applying received envelopes, exactly once.
//!
//! For each delivered envelope, one transaction: skip it if its hash is in
//! `seen`; otherwise open the seal, apply the MLS message (join, commit,
//! application data), write history and any envelopes it causes us to send,
//! and record the hash. The server's copy is acknowledged only after that
//! commit, so a crash re-delivers the envelope and the `seen` table drops
//! the second copy. An envelope that cannot be applied (forged, from an old
//! epoch, from a removed member) is recorded as seen with a warning, and its
//! partial effects are rolled back.

use openmls::prelude::ProtocolMessage;
use openmls_rust_crypto::RustCrypto;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use umbra_crypto::mls::{self, Incoming, Processed};
use umbra_crypto::{CryptoError, Identity};
use umbra_wire::e2e::{Content, SealedContent, content, sealed_content};
use umbra_wire::proto::Deliver;

use crate::blocking::is_blocked;
use crate::calls::group_signal::{self, GroupSignal};
use crate::calls::records::{self, Ended, Outcome};
use crate::calls::signal::Signal;
use crate::contacts::{check_member, group_recipients, learn_mailbox, save_sender_address};
use crate::mls_store::Provider;
use crate::model::Event;
use crate::profile::Profile;
use crate::{ClientError, now_ms, receipts};
use crate::{business, hosting};

/// What applying envelopes needs of the receiving device: its keys and its
/// own address (to announce to new members).
pub struct Device<'a> {
    /// The crypto provider for MLS.
    pub crypto: &'a RustCrypto,
    /// The device's identity and sealing keys.
    pub identity: &'a Identity,
    /// The device's own address, with its delivery token.
    pub me: &'a umbra_wire::e2e::DeviceAddress,
    /// The server signing key the invite pinned (business verifications).
    pub sign_key: Option<[u8; 32]>,
}

/// What one envelope produced.
#[derive(Debug, Default)]
pub struct Applied {
    /// What to show.
    pub events: Vec<Event>,
    /// Call signals, for a call in progress (or an incoming one).
    pub signals: Vec<Signal>,
    /// Group call signals, for a group call in progress.
    pub group_signals: Vec<GroupSignal>,
}

/// The signals an envelope carried, as they are found.
#[derive(Default)]
pub(crate) struct Signals {
    pub(crate) calls: Vec<Signal>,
    pub(crate) group: Vec<GroupSignal>,
}

/// Applies one delivered envelope; returns what to show and any call
/// signals it carried.
pub fn apply(
    profile: &Profile,
    device: &Device<'_>,
    delivered: &Deliver,
) -> Result<Applied, ClientError> {
    let hash = Sha256::digest(&delivered.sealed).to_vec();
    let ctx = device;
    let mut tx = profile.write()?;
    let seen: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM seen WHERE hash = ?1)",
        [&hash],
        |r| r.get(0),
    )?;
    if seen {
        return Ok(Applied::default());
    }
    let result = {
        let sp = tx.savepoint()?;
        let mut signals = Signals::default();
        match open_and_apply(&sp, ctx, &delivered.sealed, &mut signals) {
            Ok(events) => {
                sp.commit()?;
                Applied {
                    events,
                    signals: signals.calls,
                    group_signals: signals.group,
                }
            }
            // Dropping the savepoint rolls back whatever the failed step wrote.
            Err(e) => Applied {
                events: vec![Event::Warning {
                    text: format!("dropped a received message: {e}"),
                }],
                ..Applied::default()
            },
        }
    };
    tx.execute("INSERT INTO seen (hash) VALUES (?1)", [&hash])?;
    tx.commit()?;
    Ok(result)
}

fn open_and_apply(
    conn: &Connection,
    ctx: &Device<'_>,
    sealed: &[u8],
    signals: &mut Signals,
) -> Result<Vec<Event>, ClientError> {
    let inner = umbra_crypto::seal::open(ctx.identity.sealing_secret(), sealed)?;
    let inner = SealedContent::decode(inner.as_slice())
        .map_err(|e| ClientError::Protocol(format!("malformed sealed content: {e}")))?;
    let Some(sealed_content::Body::MlsMessage(bytes)) = inner.body else {
        return Err(ClientError::Protocol("empty sealed content".into()));
    };
    apply_mls(conn, ctx, &bytes, signals)
}

/// Applies a group's winning commit handed back by the server's epoch
/// ledger (see [`crate::ledger`]), exactly once whichever way it comes.
pub fn apply_commit(
    profile: &Profile,
    device: &Device<'_>,
    mls_message: &[u8],
) -> Result<Vec<Event>, ClientError> {
    let mut tx = profile.write()?;
    let events = {
        let sp = tx.savepoint()?;
        let mut signals = Signals::default();
        match apply_mls(&sp, device, mls_message, &mut signals) {
            Ok(events) => {
                sp.commit()?;
                events
            }
            Err(e) => vec![Event::Warning {
                text: format!("could not apply a change another member made to a group: {e}"),
            }],
        }
    };
    tx.commit()?;
    Ok(events)
}

/// Applies one MLS message. A commit is applied once whichever way it
/// comes (in an envelope, or handed back by the epoch ledger), so it is
/// remembered by its hash; other messages only ever come in envelopes,
/// which `seen` already counts.
fn apply_mls(
    conn: &Connection,
    ctx: &Device<'_>,
    bytes: &[u8],
    signals: &mut Signals,
) -> Result<Vec<Event>, ClientError> {
    match mls::parse(bytes)? {
        Incoming::Welcome(welcome) => join(conn, ctx, *welcome),
        Incoming::Group {
            group_id,
            epoch,
            commit,
            message,
        } => {
            if commit {
                let hash = crate::ledger::message_hash(bytes);
                let new = conn
                    .prepare_cached("INSERT OR IGNORE INTO seen (hash) VALUES (?1)")?
                    .execute([&hash])?;
                if new == 0 {
                    return Ok(Vec::new());
                }
            }
            let mut events = group_message(conn, ctx, &group_id, epoch, *message, bytes, signals)?;
            events.extend(retry_deferred(conn, ctx, &group_id, signals)?);
            Ok(events)
        }
    }
}

fn join(
    conn: &Connection,
    ctx: &Device<'_>,
    welcome: openmls::prelude::Welcome,
) -> Result<Vec<Event>, ClientError> {
    let provider = Provider::new(ctx.crypto, conn);
    let (group, sender) = mls::join(&provider, welcome)?;
    check_member(conn, &sender)?;
    let members = mls::members(&group);
    let own = ctx.identity.identity_key();
    let me = ctx.identity.username();
    let mut others: Vec<String> = Vec::new();
    for m in &members {
        if m.identity_key != own {
            check_member(conn, m)?;
        }
        if m.username != me && !others.contains(&m.username) {
            others.push(m.username.clone());
        }
    }
    let group_id = mls::group_id(&group);
    // A 1:1 chat is a group of two accounts (each with all its devices);
    // our own device that adds us to one names the other account.
    let (kind, name, peer) = if others.len() == 1 {
        ("direct", others[0].clone(), Some(others[0].clone()))
    } else {
        (
            "group",
            format!("group-{}", hex::encode(&group_id[..3.min(group_id.len())])),
            None,
        )
    };
    conn.execute(
        "INSERT OR IGNORE INTO conversations (group_id, kind, name, peer, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![group_id, kind, name, peer, now_ms() as i64],
    )?;
    if kind == "group" {
        // The group's name and a notice follow in the GroupMeta message
        // (and what a business's leaf says, with its first message).
        return Ok(Vec::new());
    }
    if is_blocked(conn, &sender.username)? {
        // Joined, so that the conversation is whole if they are unblocked;
        // nothing shown.
        return Ok(Vec::new());
    }
    let text = if sender.username == me {
        format!("your conversation with {name}, from your other device")
    } else {
        format!("{} started a conversation with you", sender.username)
    };
    crate::profile::record_event(conn, &group_id, &sender.username, &text)?;
    // What the business's leaf says of who reads the chat comes with its
    // first message, which carries its card: the line can then name it.
    Ok(vec![Event::Info {
        conversation: name,
        text,
    }])
}

fn conversation_name(
    conn: &Connection,
    group_id: &[u8],
) -> Result<Option<(String, bool)>, ClientError> {
    Ok(conn
        .query_row(
            "SELECT name, active FROM conversations WHERE group_id = ?1",
            [group_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

fn group_message(
    conn: &Connection,
    ctx: &Device<'_>,
    group_id: &[u8],
    epoch: u64,
    message: ProtocolMessage,
    raw: &[u8],
    signals: &mut Signals,
) -> Result<Vec<Event>, ClientError> {
    let Some((name, active)) = conversation_name(conn, group_id)? else {
        return Err(ClientError::Protocol(
            "message for a conversation this device is not in".into(),
        ));
    };
    if !active {
        // We left or were removed: later traffic is expected and unreadable.
        return Ok(Vec::new());
    }
    let provider = Provider::new(ctx.crypto, conn);
    let Some(mut group) = mls::load_group(&provider, group_id)? else {
        return Ok(Vec::new());
    };
    if epoch > mls::epoch(&group) {
        // Sent after a commit we have not received yet: keep it for later.
        conn.execute(
            "INSERT INTO deferred (group_id, epoch, mls) VALUES (?1, ?2, ?3)",
            params![group_id, epoch as i64, raw],
        )?;
        return Ok(Vec::new());
    }
    let processed = match mls::process(&provider, &mut group, epoch, message) {
        Err(CryptoError::WrongEpoch) => {
            return Err(ClientError::Invalid(format!(
                "it was sent in an earlier epoch of `{name}` (by a member who has since been removed, \
                 or before a change they had not seen)"
            )));
        }
        other => other?,
    };
    let me = ctx.identity.username();
    let mut events = Vec::new();
    match processed {
        Processed::Application { sender, data } => {
            check_member(conn, &sender)?;
            let content = Content::decode(data.as_slice())
                .map_err(|e| ClientError::Protocol(format!("malformed content: {e}")))?;
            if let Some(addr) = &content.sender {
                if addr.username != sender.username
                    || (!addr.identity_key.is_empty() && addr.identity_key != sender.identity_key)
                {
                    return Err(ClientError::Protocol("content names another sender".into()));
                }
                let token =
                    (!addr.delivery_token.is_empty()).then_some(addr.delivery_token.as_slice());
                save_sender_address(
                    conn,
                    &sender.username,
                    &sender.identity_key,
                    &addr.mailbox_id,
                    token,
                )?;
            }
            // Another device of this account: what it sent is ours.
            let from_self = sender.username == me;
            let blocked = is_blocked(conn, &sender.username)?;
            let card_seen = !content.business_card.is_empty() && !blocked;
            if card_seen {
                events.extend(business_card(
                    conn,
                    ctx,
                    group_id,
                    &name,
                    &sender,
                    &content.business_card,
                )?);
            }
            // The first message from a member (its card now known), or a
            // card: what its leaf says of who reads the chat is shown, and a
            // business chat whose leaf says nothing is flagged.
            if card_seen || !hosting::known(conn, group_id, &sender.username)? {
                events.extend(hosting::reconcile_group(conn, group_id, &name, &group, me)?);
            }
            // An attachment or a location is shown as a line of text from
            // here on (an attachment's details are kept; `umbra
            // attachments` lists only those whose message was shown).
            let body =
                crate::attachments::arrived(conn, group_id, &content.message_id, content.body)?;
            match body {
                // Nothing from a blocked account is shown or answered.
                Some(
                    content::Body::Text(_)
                    | content::Body::Call(_)
                    | content::Body::GroupCall(_)
                    | content::Body::Receipt(_),
                ) if blocked => {}
                // Our own other devices neither call nor send us receipts.
                Some(
                    content::Body::Call(_)
                    | content::Body::GroupCall(_)
                    | content::Body::Receipt(_),
                ) if from_self => {}
                Some(content::Body::Text(text)) if from_self => {
                    let inserted = conn.execute(
                        "INSERT OR IGNORE INTO history (group_id, message_id, sender, body, kind, sent_ms, received_ms, outgoing, read)
                         VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6, 1, 1)",
                        params![group_id, content.message_id, me, text, content.sent_at_ms as i64, now_ms() as i64],
                    )?;
                    if inserted == 1 {
                        events.push(Event::Message {
                            conversation: name.clone(),
                            sender: me.to_string(),
                            text,
                            sent_ms: content.sent_at_ms,
                            business: None,
                            hosting: None,
                        });
                    }
                }
                Some(content::Body::Receipt(r)) => {
                    let moved = receipts::received(conn, group_id, &sender.username, &r)?;
                    if !moved.is_empty() {
                        events.push(Event::Receipt {
                            conversation: name.clone(),
                            from: sender.username.clone(),
                            read: r.kind() == umbra_wire::e2e::receipt::Kind::Read,
                            message_ids: moved.iter().map(hex::encode).collect(),
                        });
                    }
                }
                Some(content::Body::Text(text)) => {
                    let inserted = conn.execute(
                        "INSERT OR IGNORE INTO history (group_id, message_id, sender, body, kind, sent_ms, received_ms, outgoing)
                         VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6, 0)",
                        params![group_id, content.message_id, sender.username, text, content.sent_at_ms as i64, now_ms() as i64],
                    )?;
                    if inserted == 1 {
                        receipts::owe_delivered(
                            conn,
                            group_id,
                            &sender.username,
                            &content.message_id,
                        )?;
                        crate::journal::received(
                            conn,
                            group_id,
                            &name,
                            &content.message_id,
                            &sender.username,
                            &text,
                            content.sent_at_ms,
                        )?;
                        events.push(Event::Message {
                            conversation: name.clone(),
                            sender: sender.username.clone(),
                            text,
                            sent_ms: content.sent_at_ms,
                            business: business::label_of(conn, &sender.username)?,
                            hosting: hosting::label_in(conn, group_id, &sender.username)?,
                        });
                    }
                }
                Some(content::Body::Meta(meta)) => {
                    let members = mls::members(&group);
                    let own = ctx.identity.identity_key();
                    for addr in meta.members {
                        if let Some(m) = members.iter().find(|m| {
                            m.username == addr.username && m.identity_key == addr.identity_key
                        }) {
                            if m.identity_key == own {
                                continue;
                            }
                            check_member(conn, m)?;
                            learn_mailbox(conn, &m.username, &m.identity_key, &addr.mailbox_id)?;
                        }
                    }
                    crate::announce::announce(conn, ctx, &provider, &mut group, group_id)?;
                    // Every member's address is known now: a business whose
                    // leaf is behind its hosting statement catches up.
                    hosting::align_own_leaf(conn, &provider, ctx.identity, &mut group)?;
                    if !meta.name.is_empty() && meta.name != name {
                        let new_name = unique_name(conn, &meta.name, group_id)?;
                        conn.execute(
                            "UPDATE conversations SET kind = 'group', name = ?2, peer = NULL WHERE group_id = ?1",
                            params![group_id, new_name],
                        )?;
                        let text = if from_self {
                            format!("your other device added this one to the group `{new_name}`")
                        } else {
                            format!("{} added you to the group `{new_name}`", sender.username)
                        };
                        crate::profile::record_event(conn, group_id, &sender.username, &text)?;
                        events.push(Event::Info {
                            conversation: new_name.clone(),
                            text,
                        });
                    }
                }
                Some(content::Body::Call(signal)) => {
                    events.extend(call_signal(
                        conn,
                        group_id,
                        &sender.username,
                        signal,
                        signals,
                    )?);
                }
                Some(content::Body::GroupCall(signal)) => {
                    events.extend(group_signal::received(
                        conn,
                        group_id,
                        &name,
                        &sender,
                        signal,
                        &mut signals.group,
                    )?);
                }
                Some(content::Body::Leaving(_)) => {
                    if !blocked {
                        let text = format!("{} left", sender.username);
                        crate::profile::record_event(conn, group_id, &sender.username, &text)?;
                        events.push(Event::Info {
                            conversation: name.clone(),
                            text,
                        });
                    }
                    // The remaining member at the lowest leaf commits the removal.
                    let committer = mls::leaves(&group)
                        .into_iter()
                        .filter(|(_, u)| *u != sender.username)
                        .min_by_key(|(i, _)| *i);
                    if committer
                        .map(|(i, _)| i == mls::own_leaf_index(&group))
                        .unwrap_or(false)
                        && !mls::has_own_commit(&group)
                    {
                        // Through the epoch ledger: held until the server
                        // says this commit has the epoch (settled by the
                        // command's next contact with the server).
                        let members: Vec<_> =
                            group_recipients(conn, &group, &ctx.identity.identity_key())?
                                .into_iter()
                                .filter(|r| r.identity_key != sender.identity_key)
                                .collect();
                        let tag = crate::ledger::epoch_tag(&provider, &group)?;
                        // The account leaves, every device of it: its other
                        // devices get the commit and learn they are out.
                        let commit = mls::stage_remove_members(
                            &provider,
                            ctx.identity,
                            &mut group,
                            &[sender.username.as_str()],
                        )?;
                        let staged = crate::ledger::Staged {
                            commit,
                            members,
                            added: Vec::new(),
                        };
                        crate::ledger::hold(conn, group_id, &tag, &staged)?;
                    }
                }
                // Made text above.
                Some(content::Body::Attachment(_) | content::Body::Location(_)) | None => {}
            }
        }
        Processed::Commit {
            sender,
            added,
            removed,
            we_were_removed,
        } => {
            for m in &added {
                if m.identity_key != ctx.identity.identity_key() {
                    check_member(conn, m)?;
                }
            }
            let mut changes = Vec::new();
            if let Some(text) = membership_line(&sender.username, "added", "linked", &added) {
                changes.push(text);
            }
            if we_were_removed {
                changes.push(format!("{} removed you", sender.username));
                mls::delete_group(&provider, &mut group)?;
                conn.execute(
                    "UPDATE conversations SET active = 0 WHERE group_id = ?1",
                    [group_id],
                )?;
            } else if let Some(text) =
                membership_line(&sender.username, "removed", "unlinked", &removed)
            {
                changes.push(text);
            }
            for text in changes {
                crate::profile::record_event(conn, group_id, &sender.username, &text)?;
                events.push(Event::Info {
                    conversation: name.clone(),
                    text,
                });
            }
            if !we_were_removed {
                // A business's leaf may have changed (a change of host).
                events.extend(hosting::reconcile_group(conn, group_id, &name, &group, me)?);
            }
        }
        Processed::Ignored => {}
    }
    Ok(events)
}

/// "alice added bob, carol", or "alice linked a new device" when the devices
/// are the committer's own (`verb` / `own_verb`); `None` when nobody.
fn membership_line(
    committer: &str,
    verb: &str,
    own_verb: &str,
    members: &[mls::Member],
) -> Option<String> {
    let mut users: Vec<&str> = Vec::new();
    let mut own = 0;
    for m in members {
        if m.username == committer {
            own += 1;
        } else if !users.contains(&m.username.as_str()) {
            users.push(&m.username);
        }
    }
    let mut parts = Vec::new();
    if !users.is_empty() {
        parts.push(format!("{committer} {verb} {}", users.join(", ")));
    }
    match own {
        0 => {}
        1 => parts.push(format!("{committer} {own_verb} a device")),
        n => parts.push(format!("{committer} {own_verb} {n} devices")),
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A business's card on a message: checked against the sender MLS
/// authenticated and the server key the invite pinned; kept if good, with a
/// line when the name or badge changes; refused with a warning if not.
fn business_card(
    conn: &Connection,
    ctx: &Device<'_>,
    group_id: &[u8],
    conversation: &str,
    sender: &mls::Member,
    card: &[u8],
) -> Result<Vec<Event>, ClientError> {
    let label = match business::check_card(
        card,
        &sender.username,
        &sender.identity_key,
        ctx.sign_key.as_ref(),
        business::now_unix(),
    ) {
        Ok(l) => l,
        Err(e) => {
            return Ok(vec![Event::Warning {
                text: format!(
                    "`{}` sent a message as a business, but {e}: it is shown as a personal account",
                    sender.username
                ),
            }]);
        }
    };
    let Some(before) = business::remember(conn, &sender.username, card, &label)? else {
        return Ok(Vec::new());
    };
    let now = business::display(&sender.username, &label);
    let text = match before {
        None if label.verified => format!("{now} is a business account, verified by this server"),
        None => format!("{now} is a business account, not verified by this server"),
        Some(b) => {
            let mut what = Vec::new();
            if b.name != label.name {
                what.push(format!("changed its name from \"{}\"", b.name));
            }
            match (b.verified, label.verified) {
                (true, false) => what.push("is no longer verified by this server".into()),
                (false, true) => what.push("is now verified by this server".into()),
                _ => {}
            }
            if what.is_empty() {
                what.push("changed its business card".into());
            }
            format!("{now} {}", what.join(" and "))
        }
    };
    crate::profile::record_event(conn, group_id, &sender.username, &text)?;
    Ok(vec![Event::Info {
        conversation: conversation.to_string(),
        text,
    }])
}

/// A call signal: passed on for the call it belongs to. The hang-up of a
/// call that was never answered also records a missed call here, so a
/// callee who was offline sees it whenever it next receives.
fn call_signal(
    conn: &Connection,
    group_id: &[u8],
    sender: &str,
    signal: umbra_wire::e2e::CallSignal,
    signals: &mut Signals,
) -> Result<Vec<Event>, ClientError> {
    let direct: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM conversations WHERE group_id = ?1 AND kind = 'direct' AND peer = ?2)",
        params![group_id, sender],
        |r| r.get(0),
    )?;
    let Some(body) = signal.body else {
        return Ok(Vec::new());
    };
    if !direct || signal.call_id.len() != 16 {
        return Err(ClientError::Invalid(
            "a call signal outside a 1:1 conversation".into(),
        ));
    }
    let mut events = Vec::new();
    if let umbra_wire::e2e::call_signal::Body::Hangup(h) = &body
        && h.unanswered
    {
        let line = records::record(
            conn,
            &Ended {
                call_id: &signal.call_id,
                group_id,
                peer: sender,
                outgoing: false,
                started_ms: now_ms(),
                talk_ms: 0,
                outcome: Outcome::Missed,
                path: None,
            },
        )?;
        if let Some(text) = line {
            events.push(Event::Info {
                conversation: sender.to_string(),
                text,
            });
        }
    }
    signals.calls.push(Signal {
        peer: sender.to_string(),
        group_id: group_id.to_vec(),
        call_id: signal.call_id,
        body,
    });
    Ok(events)
}

/// Messages kept because they arrived before the commit they depend on.
fn retry_deferred(
    conn: &Connection,
    ctx: &Device<'_>,
    group_id: &[u8],
    signals: &mut Signals,
) -> Result<Vec<Event>, ClientError> {
    let mut events = Vec::new();
    loop {
        let provider = Provider::new(ctx.crypto, conn);
        let Some(group) = mls::load_group(&provider, group_id)? else {
            return Ok(events);
        };
        let current = mls::epoch(&group) as i64;
        let next: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT id, mls FROM deferred WHERE group_id = ?1 AND epoch <= ?2 ORDER BY id LIMIT 1",
                params![group_id, current],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, raw)) = next else {
            return Ok(events);
        };
        conn.execute("DELETE FROM deferred WHERE id = ?1", [id])?;
        if let Ok(Incoming::Group { epoch, message, .. }) = mls::parse(&raw) {
            match group_message(conn, ctx, group_id, epoch, *message, &raw, signals) {
                Ok(e) => events.extend(e),
                Err(e) => events.push(Event::Warning {
                    text: format!("dropped a received message: {e}"),
                }),
            }
        }
    }
}

fn unique_name(conn: &Connection, wanted: &str, group_id: &[u8]) -> Result<String, ClientError> {
    let mut candidate = wanted.to_string();
    let mut n = 2;
    loop {
        let taken: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM conversations WHERE name = ?1 AND group_id != ?2)",
            params![candidate, group_id],
            |r| r.get(0),
        )?;
        if !taken {
            return Ok(candidate);
        }
        candidate = format!("{wanted}-{n}");
        n += 1;
    }
}

//! Conversations: starting a 1:1 chat, groups (create, add, remove, leave),
//! posting a message, and what the profile shows of them (history, the list
//! of conversations).

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use umbra_crypto::mls::{self, VerifiedKeyPackage};
use umbra_wire::e2e::{Content, DeviceAddress, GroupMeta, Leaving, content};

use crate::client::{Client, required_group};
use crate::contacts::{device_address, group_recipients, save_address};
use crate::ledger::Staged;
use crate::mls_store::Provider;
use crate::model::{Conversation, Event, HistoryEntry};
use crate::outbox::{self, Recipient};
use crate::{ClientError, now_ms};

impl Client {
    /// Sends a 1:1 message, starting the conversation if needed.
    pub async fn send(&mut self, to: &str, text: &str) -> Result<Vec<Event>, ClientError> {
        let content = self.content(content::Body::Text(text.to_string()));
        self.send_content(to, content, text).await
    }

    /// Sends `content` to `to` (starting the conversation if needed);
    /// `shown` is what the history shows of it.
    pub(crate) async fn send_content(
        &mut self,
        to: &str,
        content: Content,
        shown: &str,
    ) -> Result<Vec<Event>, ClientError> {
        crate::blocking::refuse_blocked(self.profile.conn(), to)?;
        let mut events = self.flush_earlier().await?;
        let existing = direct_conversation(self.profile.conn(), to)?;
        let group_id = match existing {
            Some(g) => {
                events.extend(self.hosting_checked(&g, to).await?);
                // A device of theirs (or ours) added since we last wrote.
                self.ensure_addresses(&g).await?;
                g
            }
            None => {
                let g = self.start_conversation(to, None, &[to]).await?;
                // What the business's leaf says, for the user to read with
                // the first message.
                events.extend(self.hosting_lines(&g)?);
                g
            }
        };
        self.keep_card_fresh().await?;
        self.post(&group_id, content, shown)?;
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Before we write into `group_id` (named `conversation`): if a business
    /// is in it, first receives what is waiting, so a change of who can read
    /// the chat is applied; a change the user has not been shown stops this
    /// message ([`ClientError::HostingChanged`], which shows it). Returns
    /// what receiving showed.
    async fn hosting_checked(
        &mut self,
        group_id: &[u8],
        conversation: &str,
    ) -> Result<Vec<Event>, ClientError> {
        let mut events = Vec::new();
        if crate::hosting::is_business_chat(self.profile.conn(), group_id)? {
            // Received here but not shown yet: not marked read.
            let shows = std::mem::replace(&mut self.shows, false);
            let received = self.sync().await;
            self.shows = shows;
            match received {
                Ok(e) => events = e,
                Err(e @ (ClientError::Unreachable { .. } | ClientError::Net(_))) => {
                    events.push(Event::Warning {
                        text: format!(
                            "could not check for changes in `{conversation}` before sending: {e}"
                        ),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(line) = crate::hosting::unseen(self.profile.conn(), group_id)? {
            crate::hosting::mark_seen(self.profile.conn(), Some(group_id))?;
            return Err(ClientError::HostingChanged {
                conversation: conversation.to_string(),
                line,
            });
        }
        Ok(events)
    }

    /// The hosting lines of a conversation we just started, as events.
    fn hosting_lines(&self, group_id: &[u8]) -> Result<Vec<Event>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(
            "SELECT c.name, h.body FROM history h JOIN conversations c ON c.group_id = h.group_id
             JOIN hosting s ON s.group_id = h.group_id AND s.username = h.sender
             WHERE h.group_id = ?1 AND h.kind = 'event' ORDER BY h.id",
        )?;
        let rows = stmt.query_map([group_id], |r| {
            Ok(Event::Info {
                conversation: r.get(0)?,
                text: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Creates a conversation with `members` (1:1 when `name` is None).
    pub(crate) async fn start_conversation(
        &mut self,
        display: &str,
        name: Option<&str>,
        members: &[&str],
    ) -> Result<Vec<u8>, ClientError> {
        let (claimed, suite) = self.claim_new(members).await?;
        let tx = self.profile.write()?;
        let hosting = crate::hosting::own(&tx)?;
        let provider = Provider::new(&self.crypto, &tx);
        let mut group = mls::create_group(&provider, &self.identity, suite, hosting.as_deref())?;
        let kps: Vec<VerifiedKeyPackage> = claimed.iter().map(|(k, _)| k.clone()).collect();
        let commit = mls::add_members(&provider, &self.identity, &mut group, &kps)?;
        let group_id = mls::group_id(&group);
        let recipients: Vec<Recipient> = claimed.into_iter().map(|(_, r)| r).collect();
        for r in &recipients {
            save_address(&tx, r)?;
            // Our meta message gives them our delivery token.
            crate::announce::mark_announced(&tx, &group_id, r)?;
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
        crate::hosting::reconcile(
            &tx,
            &group_id,
            display,
            &mls::members(&group),
            self.username(),
        )?;
        let meta = self.meta_content(&tx, &group, name.unwrap_or(""))?;
        let ct = mls::encrypt(&provider, &self.identity, &mut group, &meta.encode_to_vec())?;
        outbox::enqueue(&tx, &ct, &recipients)?;
        if name.is_some() {
            crate::profile::record_event(
                &tx,
                &group_id,
                self.username(),
                &format!("you created the group with {}", members.join(", ")),
            )?;
        }
        tx.commit()?;
        Ok(group_id)
    }

    pub(crate) fn meta_content(
        &self,
        conn: &Connection,
        group: &openmls::prelude::MlsGroup,
        name: &str,
    ) -> Result<Content, ClientError> {
        let mut members = Vec::new();
        let own = self.identity.identity_key();
        for m in mls::members(group) {
            if m.identity_key == own {
                continue;
            }
            if let Some(r) = device_address(conn, &m.username, &m.identity_key)? {
                members.push(DeviceAddress {
                    username: r.username,
                    mailbox_id: r.mailbox_id,
                    sealing_key: r.sealing_key.to_vec(),
                    delivery_token: Vec::new(),
                    identity_key: r.identity_key,
                });
            }
        }
        Ok(self.content(content::Body::Meta(GroupMeta {
            name: name.to_string(),
            members,
        })))
    }

    /// Encrypts `content` for a conversation and queues it.
    fn post(&mut self, group_id: &[u8], content: Content, shown: &str) -> Result<(), ClientError> {
        let tx = self.profile.write()?;
        self.post_content_in(&tx, group_id, content, shown)?;
        tx.commit()?;
        Ok(())
    }

    /// A text message posted within the caller's transaction `conn`;
    /// returns the new message's id.
    pub(crate) fn post_in(
        &self,
        conn: &Connection,
        group_id: &[u8],
        text: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let content = self.content(content::Body::Text(text.to_string()));
        self.post_content_in(conn, group_id, content, text)
    }

    /// [`Client::post`] within the caller's transaction `conn`; returns the
    /// message's id. The history shows `shown`.
    fn post_content_in(
        &self,
        conn: &Connection,
        group_id: &[u8],
        content: Content,
        shown: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let provider = Provider::new(&self.crypto, conn);
        // A business whose leaf does not carry its statement yet (a
        // conversation joined from a key package made before a change of
        // host) brings it in line first.
        let mut group = required_group(&provider, group_id)?;
        crate::hosting::align_own_leaf(conn, &provider, &self.identity, &mut group)?;
        let ct = mls::encrypt(
            &provider,
            &self.identity,
            &mut group,
            &content.encode_to_vec(),
        )?;
        let recipients = group_recipients(conn, &group, &self.identity.identity_key())?;
        outbox::enqueue_message(conn, &ct, &recipients, Some(&content.message_id))?;
        crate::receipts::expect(conn, &content.message_id, &recipients, self.username())?;
        conn.prepare_cached(
            "INSERT INTO history (group_id, message_id, sender, body, kind, sent_ms, received_ms, outgoing)
             VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?5, 1)",
        )?
        .execute(params![group_id, content.message_id, self.username(), shown, content.sent_at_ms as i64])?;
        Ok(content.message_id)
    }

    pub(crate) fn group_id_by_name(&self, name: &str) -> Result<Vec<u8>, ClientError> {
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

    /// Adds members to a group (through the epoch ledger: see
    /// [`crate::ledger`]). Members a concurrent change already added are
    /// not added again.
    pub async fn group_add(
        &mut self,
        name: &str,
        members: &[&str],
    ) -> Result<Vec<Event>, ClientError> {
        let group_id = self.group_id_by_name(name)?;
        // Apply what others changed first, so our commit builds on it.
        let mut events = self.sync().await?;
        self.ensure_addresses(&group_id).await?;
        // The group's suite is fixed: every new device must have packages
        // of it, and a post-quantum group keeps its Welcome within bounds.
        let (suite, leaves) = {
            let provider = Provider::new(&self.crypto, self.profile.conn());
            let group = required_group(&provider, &group_id)?;
            (mls::group_suite(&group), mls::leaves(&group).len())
        };
        for m in members {
            if *m == self.username() {
                return Err(ClientError::Invalid(
                    "you cannot start a conversation with yourself".into(),
                ));
            }
        }
        let claimed: Vec<(VerifiedKeyPackage, Recipient)> = self
            .claim_all_of(members, &[suite])
            .await?
            .into_iter()
            .flat_map(|(_, c)| c)
            .collect();
        if suite == mls::POST_QUANTUM && leaves + claimed.len() > mls::POST_QUANTUM_MAX_DEVICES {
            return Err(ClientError::Invalid(format!(
                "a post-quantum conversation holds at most {} devices, and this one has {leaves}: \
                 adding these {} would pass that (start a new group for more people)",
                mls::POST_QUANTUM_MAX_DEVICES,
                claimed.len()
            )));
        }
        let me = self.username().to_string();
        let own = self.identity.identity_key();
        let added_now: std::cell::RefCell<Vec<Recipient>> = std::cell::RefCell::new(Vec::new());
        let (_, applied) = self
            .commit_through_ledger(
                &group_id,
                |tx, provider, group| {
                    let present: Vec<String> = mls::members(group)
                        .into_iter()
                        .map(|m| m.username)
                        .collect();
                    let todo: Vec<&(VerifiedKeyPackage, Recipient)> = claimed
                        .iter()
                        .filter(|(_, r)| !present.contains(&r.username))
                        .collect();
                    if todo.is_empty() {
                        return Ok(None);
                    }
                    let existing = group_recipients(tx, group, &own)?;
                    let kps: Vec<VerifiedKeyPackage> =
                        todo.iter().map(|(k, _)| k.clone()).collect();
                    let commit = mls::stage_add_members(provider, &self.identity, group, &kps)?;
                    let added: Vec<Recipient> = todo.iter().map(|(_, r)| r.clone()).collect();
                    for r in &added {
                        save_address(tx, r)?;
                    }
                    *added_now.borrow_mut() = added.clone();
                    Ok(Some(Staged {
                        commit,
                        members: existing,
                        added,
                    }))
                },
                |tx, provider, group| {
                    let added_now = added_now.borrow();
                    let mut names: Vec<&str> = Vec::new();
                    for r in added_now.iter() {
                        crate::announce::mark_announced(tx, &group_id, r)?;
                        if r.username != me && !names.contains(&r.username.as_str()) {
                            names.push(&r.username);
                        }
                    }
                    let meta = self.meta_content(tx, group, name)?;
                    let ct = mls::encrypt(provider, &self.identity, group, &meta.encode_to_vec())?;
                    let everyone = group_recipients(tx, group, &own)?;
                    outbox::enqueue(tx, &ct, &everyone)?;
                    crate::profile::record_event(
                        tx,
                        &group_id,
                        &me,
                        &format!("you added {}", names.join(", ")),
                    )
                },
            )
            .await?;
        events.extend(applied);
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Removes a member from a group (through the epoch ledger).
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
            let provider = Provider::new(&self.crypto, self.profile.conn());
            let group = required_group(&provider, &group_id)?;
            if !mls::members(&group).iter().any(|m| m.username == member) {
                return Err(ClientError::Invalid(format!(
                    "`{member}` is not in `{name}`"
                )));
            }
        }
        let applied = self
            .remove_through_ledger(
                &group_id,
                |m| m.username == member,
                &format!("you removed {member}"),
            )
            .await?;
        events.extend(applied);
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Removes from a conversation the devices `select` picks (through the
    /// epoch ledger; nothing if a concurrent change removed them already),
    /// recording `event`. The removed devices get the commit too, so they
    /// learn of it. Returns what applying others' changes showed.
    pub(crate) async fn remove_through_ledger(
        &self,
        group_id: &[u8],
        select: impl Fn(&mls::Member) -> bool,
        event: &str,
    ) -> Result<Vec<Event>, ClientError> {
        let own = self.identity.identity_key();
        let (_, applied) = self
            .commit_through_ledger(
                group_id,
                |tx, provider, group| {
                    let gone: Vec<Vec<u8>> = mls::members(group)
                        .into_iter()
                        .filter(|m| select(m))
                        .map(|m| m.identity_key)
                        .collect();
                    if gone.is_empty() {
                        return Ok(None);
                    }
                    let members = group_recipients(tx, group, &own)?;
                    let commit = mls::stage_remove_devices(provider, &self.identity, group, &gone)?;
                    Ok(Some(Staged {
                        commit,
                        members,
                        added: Vec::new(),
                    }))
                },
                |tx, _, _| crate::profile::record_event(tx, group_id, self.username(), event),
            )
            .await?;
        Ok(applied)
    }

    /// Leaves a group: tells the members, who remove us (every device of
    /// this account), and forgets it.
    pub async fn group_leave(&mut self, name: &str) -> Result<Vec<Event>, ClientError> {
        let group_id = self.group_id_by_name(name)?;
        // Apply what others changed first, so our commit builds on it.
        let mut events = self.sync().await?;
        self.ensure_addresses(&group_id).await?;
        {
            let content = self.content(content::Body::Leaving(Leaving {}));
            let tx = self.profile.write()?;
            let provider = Provider::new(&self.crypto, &tx);
            let (mut group, ct) = self.encrypt_content(&provider, &group_id, &content)?;
            let recipients = group_recipients(&tx, &group, &self.identity.identity_key())?;
            outbox::enqueue(&tx, &ct, &recipients)?;
            mls::delete_group(&provider, &mut group)?;
            tx.execute(
                "UPDATE conversations SET active = 0 WHERE group_id = ?1",
                [&group_id],
            )?;
            crate::profile::record_event(&tx, &group_id, self.username(), "you left the group")?;
            tx.commit()?;
        }
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Sends a message to a group.
    pub async fn group_send(&mut self, name: &str, text: &str) -> Result<Vec<Event>, ClientError> {
        let content = self.content(content::Body::Text(text.to_string()));
        self.group_send_content(name, content, text).await
    }

    /// Sends `content` to the group `name`; `shown` is what the history
    /// shows of it.
    pub(crate) async fn group_send_content(
        &mut self,
        name: &str,
        content: Content,
        shown: &str,
    ) -> Result<Vec<Event>, ClientError> {
        let group_id = self.group_id_by_name(name)?;
        let mut events = self.flush_earlier().await?;
        events.extend(self.hosting_checked(&group_id, name).await?);
        self.ensure_addresses(&group_id).await?;
        self.keep_card_fresh().await?;
        self.post(&group_id, content, shown)?;
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// History, oldest first; one conversation or all.
    pub fn history(
        &self,
        conversation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(
            "SELECT c.name, h.sender, h.body, h.kind, h.sent_ms, h.outgoing, h.message_id, h.group_id
             FROM history h JOIN conversations c ON c.group_id = h.group_id
             WHERE (?1 IS NULL OR c.name = ?1)
             ORDER BY h.id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![conversation, limit as i64], |r| {
            Ok((
                HistoryEntry {
                    conversation: r.get(0)?,
                    sender: r.get(1)?,
                    body: r.get(2)?,
                    kind: r.get(3)?,
                    sent_ms: r.get::<_, i64>(4)? as u64,
                    outgoing: r.get(5)?,
                    message_id: hex::encode(r.get::<_, Vec<u8>>(6)?),
                    status: None,
                    business: None,
                    hosting: None,
                },
                r.get::<_, Vec<u8>>(7)?,
            ))
        })?;
        let rows: Vec<(HistoryEntry, Vec<u8>)> = rows.collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (mut h, group_id) in rows {
            if !h.outgoing && h.kind == "text" {
                h.hosting = crate::hosting::label_in(conn, &group_id, &h.sender)?;
            }
            out.push(h);
        }
        for h in out.iter_mut().filter(|h| h.outgoing && h.kind == "text") {
            let id = hex::decode(&h.message_id).unwrap_or_default();
            h.status = crate::receipts::status(conn, &id)?;
        }
        let mut labels = std::collections::HashMap::new();
        for h in out.iter_mut().filter(|h| !h.outgoing && h.kind == "text") {
            if !labels.contains_key(&h.sender) {
                let label = crate::business::label_of(conn, &h.sender)?;
                labels.insert(h.sender.clone(), label);
            }
            h.business = labels.get(&h.sender).cloned().flatten();
        }
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

    /// Conversations with their members.
    pub fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare(
            "SELECT group_id, name, kind, active, peer FROM conversations ORDER BY created_ms",
        )?;
        // group id, name, kind, active, peer
        type Row = (Vec<u8>, String, String, bool, Option<String>);
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        let provider = Provider::new(&self.crypto, conn);
        let mut out = Vec::new();
        for (gid, name, kind, active, peer) in rows {
            let business = match &peer {
                Some(p) => crate::business::label_of(conn, p)?,
                None => None,
            };
            let group = if active {
                mls::load_group(&provider, &gid)?
            } else {
                None
            };
            // Accounts, each once (a member's devices are leaves of their own).
            let mut members: Vec<String> = Vec::new();
            for m in group.as_ref().map(mls::members).unwrap_or_default() {
                if !members.contains(&m.username) {
                    members.push(m.username);
                }
            }
            let mut hosting = Vec::new();
            for m in &members {
                if let Some(l) = crate::hosting::label_in(conn, &gid, m)? {
                    hosting.push(l);
                }
            }
            out.push(Conversation {
                name,
                kind,
                members,
                active: group.is_some(),
                epoch: group.as_ref().map(mls::epoch).unwrap_or(0),
                post_quantum: group
                    .as_ref()
                    .is_some_and(|g| mls::group_suite(g) == mls::POST_QUANTUM),
                business,
                hosting,
            });
        }
        Ok(out)
    }
}

/// The 1:1 conversation with `peer`; when both sides started one at the same
/// time, both pick the one with the lowest group id.
pub(crate) fn direct_conversation(
    conn: &Connection,
    peer: &str,
) -> Result<Option<Vec<u8>>, ClientError> {
    Ok(conn
        .query_row(
            "SELECT group_id FROM conversations WHERE kind = 'direct' AND peer = ?1 AND active = 1
             ORDER BY group_id LIMIT 1",
            [peer],
            |r| r.get(0),
        )
        .optional()?)
}

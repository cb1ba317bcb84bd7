//! Conversations: starting a 1:1 chat, groups (create, add, remove, leave),
//! posting a message, and what the profile shows of them (history, the list
//! of conversations).

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use umbra_crypto::mls::{self, VerifiedKeyPackage};
use umbra_wire::e2e::{Content, DeviceAddress, GroupMeta, Leaving, content};

use crate::client::{Client, required_group};
use crate::contacts::{contact_address, group_recipients, save_address};
use crate::mls_store::Provider;
use crate::model::{Conversation, Event, HistoryEntry};
use crate::outbox::{self, Recipient};
use crate::{ClientError, inbox, now_ms};

impl Client {
    /// Sends a 1:1 message, starting the conversation if needed.
    pub async fn send(&mut self, to: &str, text: &str) -> Result<Vec<Event>, ClientError> {
        crate::blocking::refuse_blocked(self.profile.conn(), to)?;
        let mut events = self.flush_earlier().await?;
        let existing = direct_conversation(self.profile.conn(), to)?;
        let group_id = match existing {
            Some(g) => g,
            None => self.start_conversation(to, None, &[to]).await?,
        };
        self.keep_card_fresh().await?;
        self.post(&group_id, text)?;
        events.extend(self.flush_now().await?);
        Ok(events)
    }

    /// Creates a conversation with `members` (1:1 when `name` is None).
    pub(crate) async fn start_conversation(
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
        let (group, ct) = self.encrypt_content(&provider, group_id, &content)?;
        let recipients = group_recipients(&tx, &group, self.username())?;
        outbox::enqueue_message(&tx, &ct, &recipients, Some(&content.message_id))?;
        crate::receipts::expect(&tx, &content.message_id, &recipients)?;
        tx.execute(
            "INSERT INTO history (group_id, message_id, sender, body, kind, sent_ms, received_ms, outgoing)
             VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?5, 1)",
            params![group_id, content.message_id, self.username(), text, content.sent_at_ms as i64],
        )?;
        tx.commit()?;
        Ok(())
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
            let (mut group, ct) = self.encrypt_content(&provider, &group_id, &content)?;
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
        self.keep_card_fresh().await?;
        self.post(&group_id, text)?;
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
            "SELECT c.name, h.sender, h.body, h.kind, h.sent_ms, h.outgoing, h.message_id FROM history h
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
                message_id: hex::encode(r.get::<_, Vec<u8>>(6)?),
                status: None,
                business: None,
            })
        })?;
        let mut out: Vec<HistoryEntry> = rows.collect::<Result<_, _>>()?;
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
            out.push(Conversation {
                name,
                kind,
                members: group
                    .as_ref()
                    .map(|g| mls::members(g).into_iter().map(|m| m.username).collect())
                    .unwrap_or_default(),
                active: group.is_some(),
                epoch: group.as_ref().map(mls::epoch).unwrap_or(0),
                business,
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

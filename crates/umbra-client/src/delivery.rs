//! What happens to messages once sent, as operations of the [`Client`]:
//! receipts owed are sealed and sent, conversations are marked read, read
//! receipts turned on or off, accounts blocked and unblocked. What these
//! store is in [`crate::receipts`] and [`crate::blocking`].

use rusqlite::{OptionalExtension, params};
use umbra_wire::e2e::{Receipt, content, receipt};

use crate::blocking::is_blocked;
use crate::client::{Client, required_group};
use crate::contacts::group_recipients;
use crate::mls_store::Provider;
use crate::profile::set_setting;
use crate::receipts::{GAP_MAX, IDS_MAX, read_receipts};
use crate::{ClientError, now_ms, outbox};

impl Client {
    /// Turns read receipts on or off. Off: no read receipt is sent, and
    /// none is shown.
    pub fn set_read_receipts(&self, on: bool) -> Result<(), ClientError> {
        set_setting(
            self.profile.conn(),
            "read_receipts",
            if on { b"on" } else { b"off" },
        )
    }

    /// Whether read receipts are on.
    pub fn read_receipts(&self) -> Result<bool, ClientError> {
        read_receipts(self.profile.conn())
    }

    /// The user has been shown the conversation `group_id` (None: all):
    /// its incoming texts are read, and their authors are owed read
    /// receipts (if they are on).
    pub(crate) fn mark_read_group(&self, group_id: Option<&[u8]>) -> Result<(), ClientError> {
        let tx = self.profile.write()?;
        if read_receipts(&tx)? {
            tx.execute(
                "INSERT OR IGNORE INTO receipts_out (group_id, author, message_id, level)
                 SELECT h.group_id, h.sender, h.message_id, 2 FROM history h
                 WHERE h.outgoing = 0 AND h.kind = 'text' AND h.read = 0
                   AND (?1 IS NULL OR h.group_id = ?1)",
                [group_id],
            )?;
        }
        tx.execute(
            "UPDATE history SET read = 1 WHERE outgoing = 0 AND read = 0 AND (?1 IS NULL OR group_id = ?1)",
            [group_id],
        )?;
        // A change of who can read a business chat, shown with the rest.
        crate::hosting::mark_seen(&tx, group_id)?;
        tx.commit()?;
        Ok(())
    }

    /// Marks the conversation named `conversation` (None: every one) as
    /// shown to the user.
    pub fn mark_read(&self, conversation: Option<&str>) -> Result<(), ClientError> {
        match conversation {
            None => self.mark_read_group(None),
            Some(name) => {
                let gid: Vec<u8> = self
                    .profile
                    .conn()
                    .query_row(
                        "SELECT group_id FROM conversations WHERE name = ?1",
                        [name],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| ClientError::UnknownConversation(name.to_string()))?;
                self.mark_read_group(Some(&gid))
            }
        }
    }

    /// Seals what receipts are owed into the outbox: one per conversation,
    /// author and kind (a read receipt stands for the delivered one too).
    /// They go out with the next outbox flush.
    pub(crate) fn queue_receipts(&self) -> Result<(), ClientError> {
        let tx = self.profile.write()?;
        let owed: Vec<(Vec<u8>, String, i64, Vec<u8>)> = {
            let mut stmt = tx.prepare(
                "SELECT group_id, author, MAX(level), message_id FROM receipts_out
                 GROUP BY group_id, author, message_id ORDER BY group_id, author",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?
        };
        if owed.is_empty() {
            return Ok(());
        }
        let provider = Provider::new(&self.crypto, &tx);
        // (conversation, author, level) and the message ids.
        type Batch = ((Vec<u8>, String, i64), Vec<Vec<u8>>);
        let mut batches: Vec<Batch> = Vec::new();
        for (gid, author, level, id) in owed {
            let key = (gid, author, level);
            match batches.last_mut() {
                Some((k, ids)) if *k == key && ids.len() < IDS_MAX => ids.push(id),
                _ => batches.push((key, vec![id])),
            }
        }
        for ((gid, author, level), ids) in batches {
            let active: bool = tx
                .query_row(
                    "SELECT active FROM conversations WHERE group_id = ?1",
                    [&gid],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(false);
            if !active || is_blocked(&tx, &author)? {
                continue;
            }
            let group = required_group(&provider, &gid)?;
            if umbra_crypto::mls::has_own_commit(&group) {
                // A commit of ours waits for its epoch (`ledger`): nothing
                // can be encrypted to the group until it is settled; the
                // receipts stay owed until then.
                continue;
            }
            let members = group_recipients(&tx, &group, &self.identity.identity_key())?;
            // Every device of the author (each keeps its own statuses).
            let to: Vec<_> = members
                .iter()
                .filter(|r| r.username == author)
                .cloned()
                .collect();
            if to.is_empty() {
                // The author has left: nobody to tell.
                continue;
            }
            let gap: i64 = tx
                .query_row(
                    "SELECT gap FROM receipt_gaps WHERE group_id = ?1",
                    [&gid],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            if members.len() > 1 && gap >= GAP_MAX {
                // An empty message to everyone: their view of our ratchet
                // catches up.
                let filler = umbra_wire::e2e::Content {
                    body: None,
                    ..self.content(content::Body::Text(String::new()))
                };
                let (_, ct) = self.encrypt_content(&provider, &gid, &filler)?;
                outbox::enqueue(&tx, &ct, &members)?;
                tx.execute("DELETE FROM receipt_gaps WHERE group_id = ?1", [&gid])?;
            }
            let kind = if level >= 2 {
                receipt::Kind::Read
            } else {
                receipt::Kind::Delivered
            };
            let body = content::Body::Receipt(Receipt {
                kind: kind as i32,
                message_ids: ids,
            });
            let (_, ct) = self.encrypt_content(&provider, &gid, &self.content(body))?;
            outbox::enqueue(&tx, &ct, &to)?;
            if members.len() > 1 {
                tx.execute(
                    "INSERT INTO receipt_gaps (group_id, gap) VALUES (?1, 1)
                     ON CONFLICT (group_id) DO UPDATE SET gap = gap + 1",
                    [&gid],
                )?;
            }
        }
        tx.execute("DELETE FROM receipts_out", [])?;
        tx.commit()?;
        Ok(())
    }

    /// Seals what receipts are owed and sends them (with anything else the
    /// outbox holds). A server out of reach leaves them queued.
    pub async fn send_receipts(&mut self) -> Result<Vec<crate::Event>, ClientError> {
        self.queue_receipts()?;
        self.flush_earlier().await
    }
}

impl Client {
    /// Blocks `username`; `false` if it already was.
    pub fn block(&self, username: &str) -> Result<bool, ClientError> {
        crate::validate_username(username)?;
        if username == self.username() {
            return Err(ClientError::Invalid("you cannot block yourself".into()));
        }
        let n = self.profile.conn().execute(
            "INSERT OR IGNORE INTO blocked (username, since_ms) VALUES (?1, ?2)",
            params![username, now_ms() as i64],
        )?;
        Ok(n == 1)
    }

    /// Unblocks `username`; `false` if it was not blocked.
    pub fn unblock(&self, username: &str) -> Result<bool, ClientError> {
        let n = self
            .profile
            .conn()
            .execute("DELETE FROM blocked WHERE username = ?1", [username])?;
        Ok(n == 1)
    }

    /// Blocked usernames, in order.
    pub fn blocked(&self) -> Result<Vec<String>, ClientError> {
        let conn = self.profile.conn();
        let mut stmt = conn.prepare("SELECT username FROM blocked ORDER BY username")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

//! Who can read a business chat, as this device sees it.
//!
//! A business's device carries a hosting statement in its MLS leaf
//! (`umbra_wire::hosting`): self-hosted, or hosted by a named host who
//! countersigned. This module keeps, per conversation and business member,
//! what that leaf said when we last looked (`hosting` table), and compares
//! it whenever the group's leaves may have changed (a commit, a
//! conversation we started, a member's first message (which carries a
//! business's card, so the line can name it), a card that says an account
//! is a business).
//! Each change becomes a line in the chat at that point; a change after the
//! first also holds back our next message in that chat until the line has
//! been shown (`conversations.hosting_unseen`), so nobody sends to a new host
//! without having been told.
//!
//! The label comes from the leaf alone, never from the business's card or
//! any field the server serves: the card only tells us that an account is a
//! business, so that a business chat whose leaf carries no statement is
//! flagged rather than shown as end to end.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use umbra_crypto::mls::Member;
use umbra_wire::hosting::{Host, check};

use crate::model::Event;
use crate::{ClientError, business};

/// Who can read a chat with a business, as its leaf says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostingLabel {
    /// `self` (end to end with the business), `hosted` (its host can read
    /// it) or `unknown` (no statement, or one that was refused).
    pub kind: String,
    /// The business account.
    pub business: String,
    /// The host's name, when hosted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The host's key (hex), when hosted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// The label as the user reads it.
    pub text: String,
}

/// What one business member's leaf says, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    SelfHosted,
    Hosted {
        name: String,
        key: Vec<u8>,
    },
    /// A statement that did not check, with why.
    Refused(String),
    /// A business account whose leaf carries no statement.
    Missing,
}

impl State {
    fn of(member: &Member, is_business: bool) -> Option<State> {
        match &member.hosting {
            Some(h) => Some(match check(h, &member.username, &member.identity_key) {
                Ok(Host::SelfHosted) => State::SelfHosted,
                Ok(Host::Hosted { name, key }) => State::Hosted {
                    name,
                    key: key.to_vec(),
                },
                Err(e) => State::Refused(e.to_string()),
            }),
            None if is_business => Some(State::Missing),
            None => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            State::SelfHosted => "self",
            State::Hosted { .. } => "hosted",
            State::Refused(_) => "refused",
            State::Missing => "missing",
        }
    }

    fn load(kind: &str, name: Option<String>, key: Option<Vec<u8>>) -> State {
        match kind {
            "self" => State::SelfHosted,
            "hosted" => State::Hosted {
                name: name.unwrap_or_default(),
                key: key.unwrap_or_default(),
            },
            "missing" => State::Missing,
            _ => State::Refused(name.unwrap_or_default()),
        }
    }

    fn label(&self, username: &str, biz: &str) -> HostingLabel {
        let (kind, host, host_key, text) = match self {
            State::SelfHosted => (
                "self",
                None,
                None,
                format!("end-to-end encrypted with {biz}"),
            ),
            State::Hosted { name, key } => (
                "hosted",
                Some(name.clone()),
                Some(hex::encode(key)),
                format!("{biz} uses {name} to manage this chat: {name} can read what you send"),
            ),
            State::Refused(why) => (
                "unknown",
                None,
                None,
                format!(
                    "{biz}'s hosting statement was refused ({why}): who can read this chat is not known"
                ),
            ),
            State::Missing => (
                "unknown",
                None,
                None,
                format!(
                    "{biz} is a business, but its chat carries no hosting statement: who can read it is not known"
                ),
            ),
        };
        HostingLabel {
            kind: kind.into(),
            business: username.to_string(),
            host,
            host_key,
            text,
        }
    }

    /// The line shown when the state goes from `before` to `self`.
    fn line(&self, before: Option<&State>, biz: &str) -> String {
        match (before, self) {
            (None, now) => now.label("", biz).text,
            (Some(State::Hosted { name: old, key: k1 }), State::Hosted { name, key })
                if k1 != key || old != name =>
            {
                format!(
                    "{name} can now read messages you send to {biz}; {old} can no longer read them, \
                     but keeps what it already received"
                )
            }
            (_, State::Hosted { name, .. }) => format!(
                "{name} can now read messages you send: {biz} uses {name} to manage this chat"
            ),
            (Some(State::Hosted { name, .. }), State::SelfHosted) => format!(
                "{name} can no longer read messages you send, but keeps what it already received: \
                 this chat is end-to-end encrypted with {biz}"
            ),
            (_, now) => now.label("", biz).text,
        }
    }
}

/// How the user knows the business `username`: its checked card's name,
/// else its username.
fn business_name(conn: &Connection, username: &str) -> Result<String, ClientError> {
    Ok(match business::label_of(conn, username)? {
        Some(l) => business::display(username, &l),
        None => username.to_string(),
    })
}

fn stored(
    conn: &Connection,
    group_id: &[u8],
    username: &str,
) -> Result<Option<State>, ClientError> {
    Ok(conn
        .query_row(
            "SELECT kind, host_name, host_key FROM hosting WHERE group_id = ?1 AND username = ?2",
            params![group_id, username],
            |r| Ok(State::load(&r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// Compares what the leaves of `members` say with what we last saw in the
/// conversation `group_id` (named `conversation`), writes a line into the
/// chat for each change, and returns the lines as events. `me` is skipped.
pub(crate) fn reconcile(
    conn: &Connection,
    group_id: &[u8],
    conversation: &str,
    members: &[Member],
    me: &str,
) -> Result<Vec<Event>, ClientError> {
    let mut events = Vec::new();
    for m in members.iter().filter(|m| m.username != me) {
        let is_business = business::label_of(conn, &m.username)?.is_some();
        let Some(now) = State::of(m, is_business) else {
            continue;
        };
        let before = stored(conn, group_id, &m.username)?;
        if before.as_ref() == Some(&now) {
            continue;
        }
        let biz = business_name(conn, &m.username)?;
        let text = now.line(before.as_ref(), &biz);
        let (host_name, host_key) = match &now {
            State::Hosted { name, key } => (Some(name.clone()), Some(key.clone())),
            State::Refused(why) => (Some(why.clone()), None),
            _ => (None, None),
        };
        conn.execute(
            "INSERT INTO hosting (group_id, username, kind, host_name, host_key) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (group_id, username) DO UPDATE SET
               kind = excluded.kind, host_name = excluded.host_name, host_key = excluded.host_key",
            params![group_id, m.username, now.kind(), host_name, host_key],
        )?;
        crate::profile::record_event(conn, group_id, &m.username, &text)?;
        if before.is_some() {
            // A change, not the first look: our next message here waits
            // until this line has been shown.
            conn.execute(
                "UPDATE conversations SET hosting_unseen = ?2 WHERE group_id = ?1",
                params![group_id, text],
            )?;
        }
        events.push(match now {
            State::Refused(_) | State::Missing => Event::Warning {
                text: format!("{conversation}: {text}"),
            },
            _ => Event::Info {
                conversation: conversation.to_string(),
                text,
            },
        });
    }
    Ok(events)
}

/// [`reconcile`] over the current members of `group`.
pub(crate) fn reconcile_group(
    conn: &Connection,
    group_id: &[u8],
    conversation: &str,
    group: &openmls::prelude::MlsGroup,
    me: &str,
) -> Result<Vec<Event>, ClientError> {
    reconcile(
        conn,
        group_id,
        conversation,
        &umbra_crypto::mls::members(group),
        me,
    )
}

/// Whether what `username`'s leaf says in `group_id` has been looked at
/// and recorded (a member whose leaf says nothing, and is no business, is
/// never recorded).
pub(crate) fn known(
    conn: &Connection,
    group_id: &[u8],
    username: &str,
) -> Result<bool, ClientError> {
    Ok(stored(conn, group_id, username)?.is_some())
}

/// The label of `username` in the conversation `group_id`, if its leaf
/// there said anything (or it is a business whose leaf said nothing).
pub fn label_in(
    conn: &Connection,
    group_id: &[u8],
    username: &str,
) -> Result<Option<HostingLabel>, ClientError> {
    let Some(state) = stored(conn, group_id, username)? else {
        return Ok(None);
    };
    let biz = business_name(conn, username)?;
    Ok(Some(state.label(username, &biz)))
}

/// The hosting change in `group_id` not shown to the user yet, if any.
pub(crate) fn unseen(conn: &Connection, group_id: &[u8]) -> Result<Option<String>, ClientError> {
    Ok(conn
        .query_row(
            "SELECT hosting_unseen FROM conversations WHERE group_id = ?1",
            [group_id],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

/// Records that the hosting changes of `group_id` (or of every
/// conversation) have been shown.
pub(crate) fn mark_seen(conn: &Connection, group_id: Option<&[u8]>) -> Result<(), ClientError> {
    conn.execute(
        "UPDATE conversations SET hosting_unseen = NULL WHERE ?1 IS NULL OR group_id = ?1",
        [group_id],
    )?;
    Ok(())
}

/// Whether `group_id` has a member whose leaf carried a hosting statement,
/// or who is a business: a conversation whose sends first receive what is
/// waiting, so a change of host is seen before anything more goes out.
pub(crate) fn is_business_chat(conn: &Connection, group_id: &[u8]) -> Result<bool, ClientError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM hosting WHERE group_id = ?1)
             OR EXISTS (SELECT 1 FROM conversations c JOIN contacts k ON k.username = c.peer
                        WHERE c.group_id = ?1 AND k.business_card IS NOT NULL)",
        [group_id],
        |r| r.get(0),
    )?)
}

/// This device's own hosting statement (a business's), if it has one.
pub(crate) fn own(conn: &Connection) -> Result<Option<Vec<u8>>, ClientError> {
    crate::profile::get_setting(conn, "hosting")
}

/// Brings our own leaf in `group` in line with our hosting statement, if it
/// is not: a commit (fresh leaf, the statement) queued for the group's other
/// members, within the caller's transaction. Returns whether it committed.
/// Left alone while a member's address is unknown (they would never get the
/// commit and could no longer follow the group); the next call does it.
pub(crate) fn align_own_leaf(
    conn: &Connection,
    provider: &crate::mls_store::Provider<'_>,
    identity: &umbra_crypto::Identity,
    group: &mut openmls::prelude::MlsGroup,
) -> Result<bool, ClientError> {
    let Some(statement) = own(conn)? else {
        return Ok(false);
    };
    if umbra_crypto::mls::own_hosting(group).as_deref() == Some(statement.as_slice()) {
        return Ok(false);
    }
    let own = identity.identity_key();
    let recipients = crate::contacts::group_recipients(conn, group, &own)?;
    let others = umbra_crypto::mls::members(group)
        .iter()
        .filter(|m| m.identity_key != own)
        .count();
    if recipients.len() < others {
        return Ok(false);
    }
    let commit = umbra_crypto::mls::update_own_leaf(provider, identity, group, Some(&statement))?;
    crate::outbox::enqueue(conn, &commit.commit, &recipients)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosted(name: &str, k: u8) -> State {
        State::Hosted {
            name: name.into(),
            key: vec![k; 32],
        }
    }

    #[test]
    fn each_change_of_host_says_who_can_read_now_and_who_no_longer() {
        let acme = "Acme Shop (acme)";
        assert_eq!(
            State::SelfHosted.line(None, acme),
            "end-to-end encrypted with Acme Shop (acme)"
        );
        assert_eq!(
            hosted("HostCo", 1).line(None, acme),
            "Acme Shop (acme) uses HostCo to manage this chat: HostCo can read what you send"
        );
        let now = hosted("HostCo", 1).line(Some(&State::SelfHosted), acme);
        assert!(
            now.starts_with("HostCo can now read messages you send"),
            "{now}"
        );
        let back = State::SelfHosted.line(Some(&hosted("HostCo", 1)), acme);
        assert!(
            back.starts_with(
                "HostCo can no longer read messages you send, but keeps what it already received"
            ),
            "{back}"
        );
        let moved = hosted("OtherHost", 2).line(Some(&hosted("HostCo", 1)), acme);
        assert!(moved.contains("OtherHost can now read"), "{moved}");
        assert!(moved.contains("HostCo can no longer read them"), "{moved}");
        let missing = State::Missing.line(Some(&State::SelfHosted), acme);
        assert!(missing.contains("not known"), "{missing}");
    }
}

//! Call settings and call records in the profile: "protect IP address in
//! calls", "who can call you", and the list of calls (answered, missed,
//! declined, silenced, with talk time), which also appear as lines in the
//! conversation's history. Plain functions over a database connection.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::profile::{get_setting, set_setting};
use crate::{ClientError, now_ms};

/// Who may ring this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhoCanCall {
    /// Anyone who knows your username.
    Everyone,
    /// People you have written to in a 1:1 chat, called, or verified.
    Contacts,
    /// Nobody: every call is silenced.
    Nobody,
}

impl WhoCanCall {
    /// Parses `everyone`, `contacts` or `nobody`.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        match s {
            "everyone" => Ok(Self::Everyone),
            "contacts" => Ok(Self::Contacts),
            "nobody" => Ok(Self::Nobody),
            other => Err(ClientError::Invalid(format!(
                "`{other}` is not a who-can-call setting: use everyone, contacts or nobody"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Everyone => "everyone",
            Self::Contacts => "contacts",
            Self::Nobody => "nobody",
        }
    }
}

/// The profile's call settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CallSettings {
    /// Relay every call, so the other side only ever sees a relay's address.
    pub protect_ip: bool,
    /// Who may ring this device.
    pub who_can_call: WhoCanCall,
}

/// Reads the settings (defaults: protect IP off, as in the anchors; calls
/// from contacts only, so a stranger cannot ring you or learn that you are
/// online).
pub fn settings(conn: &Connection) -> Result<CallSettings, ClientError> {
    let protect_ip = get_setting(conn, "protect_ip")?.is_some_and(|v| v == b"1");
    let who_can_call = match get_setting(conn, "who_can_call")? {
        Some(v) => WhoCanCall::parse(&String::from_utf8_lossy(&v))?,
        None => WhoCanCall::Contacts,
    };
    Ok(CallSettings {
        protect_ip,
        who_can_call,
    })
}

/// Sets "protect IP address in calls".
pub fn set_protect_ip(conn: &Connection, on: bool) -> Result<(), ClientError> {
    set_setting(conn, "protect_ip", if on { b"1" } else { b"0" })
}

/// Sets "who can call you".
pub fn set_who_can_call(conn: &Connection, who: WhoCanCall) -> Result<(), ClientError> {
    set_setting(conn, "who_can_call", who.as_str().as_bytes())
}

/// Whether `peer` is a contact for "who can call you": someone we wrote to
/// in a 1:1 chat, called, or verified. Merely having received a message
/// from someone does not make them a contact.
pub fn is_contact(conn: &Connection, peer: &str) -> Result<bool, ClientError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM conversations c JOIN history h ON h.group_id = c.group_id
                        WHERE c.kind = 'direct' AND c.peer = ?1 AND h.outgoing = 1)
             OR EXISTS (SELECT 1 FROM contacts WHERE username = ?1 AND verified = 1)
             OR EXISTS (SELECT 1 FROM calls WHERE peer = ?1 AND outgoing = 1)",
        [peer],
        |r| r.get(0),
    )?)
}

/// Whether a call from `peer` may ring.
pub fn may_ring(conn: &Connection, peer: &str) -> Result<bool, ClientError> {
    Ok(match settings(conn)?.who_can_call {
        WhoCanCall::Everyone => true,
        WhoCanCall::Contacts => is_contact(conn, peer)?,
        WhoCanCall::Nobody => false,
    })
}

/// Whether a group call started in a group we are in rings: being in the
/// group is the consent "contacts" stands for, so only `nobody` silences
/// it (we can still join; nothing is sent back either way).
pub fn may_ring_group(conn: &Connection) -> Result<bool, ClientError> {
    Ok(settings(conn)?.who_can_call != WhoCanCall::Nobody)
}

/// How a call ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Talked.
    Answered,
    /// Rang without an answer (or reached an offline device).
    Missed,
    /// The callee declined.
    Declined,
    /// The callee was in another call.
    Busy,
    /// Not allowed by "who can call you": never rang.
    Silenced,
    /// The caller hung up before an answer.
    Cancelled,
    /// It could not be connected, or the connection was lost.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Missed => "missed",
            Self::Declined => "declined",
            Self::Busy => "busy",
            Self::Silenced => "silenced",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "answered" => Self::Answered,
            "missed" => Self::Missed,
            "declined" => Self::Declined,
            "busy" => Self::Busy,
            "silenced" => Self::Silenced,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// The other party.
    pub peer: String,
    /// We called.
    pub outgoing: bool,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// Talk time in milliseconds.
    pub talk_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// `direct` or `relayed`, for answered calls.
    pub path: Option<String>,
}

/// What to write for a call that ended.
pub struct Ended<'a> {
    /// The call.
    pub call_id: &'a [u8],
    /// The 1:1 conversation it belongs to (for the history line).
    pub group_id: &'a [u8],
    /// The other party.
    pub peer: &'a str,
    /// We called.
    pub outgoing: bool,
    /// When it started.
    pub started_ms: u64,
    /// Talk time.
    pub talk_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The path, if connected.
    pub path: Option<&'a str>,
}

/// The history line for a call.
pub fn describe(e: &Ended<'_>) -> String {
    let secs = e.talk_ms / 1000;
    let talk = format!("{}:{:02}", secs / 60, secs % 60);
    match (e.outcome, e.outgoing) {
        (Outcome::Answered, true) => {
            format!(
                "you called {}: {talk}, {}",
                e.peer,
                e.path.unwrap_or("relayed")
            )
        }
        (Outcome::Answered, false) => {
            format!(
                "{} called you: {talk}, {}",
                e.peer,
                e.path.unwrap_or("relayed")
            )
        }
        (Outcome::Missed, false) => format!("missed call from {}", e.peer),
        (Outcome::Missed, true) => format!("{} did not answer your call", e.peer),
        (Outcome::Declined, false) => format!("you declined a call from {}", e.peer),
        (Outcome::Declined, true) => format!("{} declined your call", e.peer),
        (Outcome::Busy, false) => format!("missed call from {} (you were in a call)", e.peer),
        (Outcome::Busy, true) => format!("{} was in another call", e.peer),
        (Outcome::Silenced, _) => format!(
            "silenced call from {} (not allowed by who can call you)",
            e.peer
        ),
        (Outcome::Cancelled, true) => format!("you cancelled a call to {}", e.peer),
        (Outcome::Cancelled, false) => format!("missed call from {}", e.peer),
        (Outcome::Failed, true) => format!("your call to {} failed", e.peer),
        (Outcome::Failed, false) => format!("a call from {} failed", e.peer),
    }
}

/// Records a call once (a later record for the same call is ignored, so a
/// silenced or declined call stays so when the caller's hang-up arrives).
/// Returns the history line if this was the first record.
pub fn record(conn: &Connection, e: &Ended<'_>) -> Result<Option<String>, ClientError> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO calls (call_id, peer, outgoing, started_ms, talk_ms, outcome, path)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.call_id,
            e.peer,
            e.outgoing,
            e.started_ms as i64,
            e.talk_ms as i64,
            e.outcome.as_str(),
            e.path
        ],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    let line = describe(e);
    crate::profile::record_event(conn, e.group_id, e.peer, &line)?;
    Ok(Some(line))
}

/// Whether a call is already recorded.
pub fn is_recorded(conn: &Connection, call_id: &[u8]) -> Result<bool, ClientError> {
    Ok(conn
        .query_row("SELECT 1 FROM calls WHERE call_id = ?1", [call_id], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

/// Every call, newest last.
pub fn list(conn: &Connection, limit: usize) -> Result<Vec<CallRecord>, ClientError> {
    let mut stmt = conn.prepare(
        "SELECT peer, outgoing, started_ms, talk_ms, outcome, path FROM calls
         ORDER BY started_ms DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(CallRecord {
            peer: r.get(0)?,
            outgoing: r.get(1)?,
            started_ms: r.get::<_, i64>(2)? as u64,
            talk_ms: r.get::<_, i64>(3)? as u64,
            outcome: Outcome::parse(&r.get::<_, String>(4)?),
            path: r.get(5)?,
        })
    })?;
    let mut out: Vec<CallRecord> = rows.collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

/// Milliseconds now (for records).
pub fn now() -> u64 {
    now_ms()
}

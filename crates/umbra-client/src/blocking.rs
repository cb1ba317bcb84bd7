//! Blocking (`umbra block USER`; the operations are in [`crate::delivery`]). Nothing from a blocked account is shown
//! (texts, calls, group calls, receipts are dropped as they are applied, and
//! a conversation it starts is joined silently, so that MLS state stays
//! whole for the day it is unblocked), no receipt goes back to it, and
//! nothing is sent to it until it is unblocked. The server is not told: it
//! cannot tell who anybody talks to, so it cannot block for us either.

use rusqlite::Connection;

use crate::ClientError;

/// Whether `username` is blocked in this profile.
pub fn is_blocked(conn: &Connection, username: &str) -> Result<bool, ClientError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM blocked WHERE username = ?1)",
        [username],
        |r| r.get(0),
    )?)
}

/// Refuses to send to a blocked user.
pub(crate) fn refuse_blocked(conn: &Connection, username: &str) -> Result<(), ClientError> {
    if is_blocked(conn, username)? {
        return Err(ClientError::Blocked(username.to_string()));
    }
    Ok(())
}

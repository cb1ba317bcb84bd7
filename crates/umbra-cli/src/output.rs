//! Rendering results: plain text for people, JSON (`--json`) for scripts.

use std::io::Write;

use serde::Serialize;
use umbra_client::{Event, HistoryEntry};

/// Writes one line of the command's output. When the reader has gone
/// (`umbra history | head -1`), the rest would go nowhere: the command ends
/// quietly with success, as `cat` does, instead of panicking. Any other
/// failure to write (a full disk) ends it with the cause.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            tell(format_args!("error: cannot write the output: {e}"));
            std::process::exit(1);
        }
    }
}

/// Writes one line to standard error (warnings, errors, what a command is
/// doing). Nothing can be reported when that fails, so a failure is ignored
/// rather than ending the command.
pub fn tell(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Where results go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// JSON lines instead of text.
    pub json: bool,
}

impl Output {
    /// Prints a value as JSON, or `text`.
    pub fn value<T: Serialize>(&self, value: &T, text: &str) {
        if self.json {
            say!("{}", serde_json::to_string(value).unwrap_or_default());
        } else if !text.is_empty() {
            say!("{text}");
        }
    }

    /// Prints one received event.
    pub fn event(&self, event: &Event) {
        if self.json {
            say!("{}", serde_json::to_string(event).unwrap_or_default());
            return;
        }
        match event {
            Event::Message {
                conversation,
                sender,
                text,
                sent_ms,
                business,
                hosting,
            } => {
                let who = match business {
                    Some(b) => umbra_client::business::display(sender, b),
                    None => sender.clone(),
                } + &hosting_tag(hosting.as_ref());
                if conversation == sender {
                    say!("{} {who}: {text}", clock(*sent_ms));
                } else {
                    say!("{} [{conversation}] {who}: {text}", clock(*sent_ms));
                }
            }
            Event::Info { conversation, text } => say!("* [{conversation}] {text}"),
            Event::Receipt {
                conversation,
                from,
                read,
                message_ids,
            } => {
                let n = message_ids.len();
                let what = if n == 1 {
                    "your message".to_string()
                } else {
                    format!("{n} of your messages")
                };
                if *read {
                    say!("* [{conversation}] {from} read {what}");
                } else {
                    say!("* [{conversation}] {what} reached {from}");
                }
            }
            Event::Warning { text } => tell!("warning: {text}"),
            Event::Call(c) => crate::calling::show(*self, c),
        }
    }

    /// Prints events.
    pub fn events(&self, events: &[Event]) {
        for e in events {
            self.event(e);
        }
    }

    /// Prints history; `labels` (who can read a business chat) go first.
    pub fn history(
        &self,
        entries: &[HistoryEntry],
        me: &str,
        labels: &[umbra_client::hosting::HostingLabel],
    ) {
        if self.json {
            self.value(&entries, "");
            return;
        }
        for l in labels {
            say!("-- {} --", l.text);
        }
        if entries.is_empty() {
            say!("(no messages yet)");
        }
        for h in entries {
            let who = match (&h.business, h.outgoing) {
                (_, true) => me.to_string(),
                (Some(b), false) => {
                    umbra_client::business::display(&h.sender, b) + &hosting_tag(h.hosting.as_ref())
                }
                (None, false) => h.sender.clone() + &hosting_tag(h.hosting.as_ref()),
            };
            if h.kind == "event" {
                say!("{} [{}] * {}", clock(h.sent_ms), h.conversation, h.body);
            } else {
                let status = h
                    .status
                    .as_ref()
                    .map(|s| format!("  ({})", status_text(s)))
                    .unwrap_or_default();
                say!(
                    "{} [{}] {who}: {}{status}",
                    clock(h.sent_ms),
                    h.conversation,
                    h.body
                );
            }
        }
    }
}

/// What a message line says of who can read the chat, when it is not end
/// to end with the business: ` [HostCo can read this chat]`.
fn hosting_tag(l: Option<&umbra_client::hosting::HostingLabel>) -> String {
    match l {
        Some(l) if l.kind == "hosted" => format!(
            " [{} can read this chat]",
            l.host.as_deref().unwrap_or("its host")
        ),
        Some(l) if l.kind == "unknown" => " [who can read this chat is not known]".into(),
        _ => String::new(),
    }
}

/// `Acme Shop ✓ verified by this server` / `Acme Shop (not verified)`.
pub fn business_line(b: &umbra_client::business::BusinessLabel) -> String {
    if b.verified {
        format!("{} ✓ verified by this server", b.name)
    } else {
        format!("{} (not verified)", b.name)
    }
}

/// "read", "delivered", "sent", "not sent yet"; in a group, with who.
fn status_text(s: &umbra_client::receipts::MessageStatus) -> String {
    use umbra_client::receipts::Status;
    let word = |st: Status| match st {
        Status::Failed => "refused by the server",
        Status::Pending => "not sent yet",
        Status::Sent => "sent",
        Status::Delivered => "delivered",
        Status::Read => "read",
    };
    if s.recipients.len() <= 1 || s.status == Status::Pending {
        return word(s.status).to_string();
    }
    let read = s
        .recipients
        .iter()
        .filter(|r| r.status == Status::Read)
        .count();
    let got = s
        .recipients
        .iter()
        .filter(|r| r.status >= Status::Delivered)
        .count();
    let all = s.recipients.len();
    match s.status {
        Status::Read => "read by all".into(),
        Status::Delivered if read > 0 => format!("delivered to all, read by {read} of {all}"),
        Status::Delivered => "delivered to all".into(),
        _ if read > 0 => format!("sent, delivered to {got} of {all}, read by {read}"),
        _ if got > 0 => format!("sent, delivered to {got} of {all}"),
        _ => "sent".into(),
    }
}

/// Prints an error for the user.
pub fn error(json: bool, e: &anyhow::Error) {
    let text = said_once(e);
    if json {
        let v = serde_json::json!({ "error": text });
        // Not `say!`: a reader that has gone must not turn a failure into success.
        let _ = writeln!(std::io::stdout(), "{v}");
    } else {
        tell!("error: {text}");
    }
}

/// An error and its chain of causes, "what failed: why", where a cause whose
/// words the message already holds is not said again (an error type may
/// embed its source in its own message, so that it reads whole in a log
/// line, and still expose it as its source).
pub fn said_once(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !cause.is_empty() && !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// `YYYY-MM-DD HH:MM:SS` UTC from Unix milliseconds.
pub fn clock(ms: u64) -> String {
    let t = umbra_daemon::time::utc(ms / 1000);
    let (h, m, s) = t.hms;
    format!(
        "{:04}-{:02}-{:02} {h:02}:{m:02}:{s:02}",
        t.year, t.month, t.day
    )
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    enum Wrapper {
        #[error("profile database error: {0}")]
        Db(#[from] std::io::Error),
    }

    #[test]
    fn a_cause_already_said_is_not_said_again() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::from(Wrapper::from(io)).context("saving the message");
        assert_eq!(
            super::said_once(&e),
            "saving the message: profile database error: disk full"
        );
        let e = anyhow::Error::from(std::io::Error::other("refused")).context("dialing");
        assert_eq!(super::said_once(&e), "dialing: refused");
    }

    #[test]
    fn clock_formats_utc() {
        assert_eq!(super::clock(0), "1970-01-01 00:00:00");
        assert_eq!(super::clock(1_795_132_800_000), "2026-11-20 00:00:00");
    }
}

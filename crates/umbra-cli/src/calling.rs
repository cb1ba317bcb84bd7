//! The call commands: `umbra call USER` and `umbra call GROUP` (start or
//! join the group's call), the call half of `umbra listen`
//! (ringing, answering with a prompt or `--auto-answer`), `umbra calls`
//! (the call log) and `umbra settings` (protect IP, who can call).

use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Mutex;
use umbra_call::audio::{AudioIn, AudioOut};
use umbra_client::calls::{CallMedia, Decide, IncomingCalls, Outcome, WhoCanCall};
use umbra_client::{CallEvent, Client};

use crate::output::Output;

/// What `--audio-in` is when not given: the microphone where this build
/// has sound-card support, else a tone.
const DEFAULT_AUDIO_IN: &str = if umbra_call::audio::HAS_DEVICES {
    "mic"
} else {
    "tone"
};

/// Audio for a call: devices, or files and tones for headless machines and
/// scripts.
#[derive(Debug, Clone, clap::Args)]
pub struct MediaArgs {
    /// What to send: `mic` (or `mic:DEVICE-ID`, e.g. `mic:alsa:hw:0,0`; the
    /// default in builds with sound-card support), `tone` (four notes,
    /// repeated; the default otherwise), `silence`, or a WAV file (any rate,
    /// mono or stereo).
    #[arg(long, value_name = "mic|FILE.wav|tone|silence", default_value = DEFAULT_AUDIO_IN)]
    pub audio_in: String,
    /// Where what you hear goes: `speaker` (or `speaker:DEVICE-ID`; the
    /// default with sound-card support), `none` (the default otherwise), or a
    /// WAV file (48 kHz mono).
    #[arg(long, value_name = "speaker|FILE.wav|none")]
    pub audio_out: Option<String>,
    /// Hang up this many seconds after the audio starts.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

impl MediaArgs {
    fn media(&self) -> CallMedia {
        CallMedia {
            audio_in: AudioIn::parse(&self.audio_in),
            audio_out: match &self.audio_out {
                Some(p) => AudioOut::parse(p),
                None if umbra_call::audio::HAS_DEVICES => AudioOut::Speaker(None),
                None => AudioOut::Discard,
            },
            duration: self.duration.map(Duration::from_secs),
            ring_for: None,
        }
    }
}

/// `umbra call` only: how long to let it ring.
#[derive(Debug, Clone, clap::Args)]
pub struct RingArgs {
    /// Give up after it rang this many seconds without an answer (the callee
    /// then sees a missed call).
    #[arg(long, value_name = "SECS", default_value_t = 45)]
    pub ring_timeout: u64,
}

/// `umbra settings ...`
#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show this profile's call settings.
    Show,
    /// "Protect IP address in calls": relay every call, so the other side
    /// only ever sees the relay's address (quality may be lower).
    ProtectIp {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Who can call you: `everyone`, `contacts` (people you wrote to in a
    /// 1:1 chat, called, or verified; the default) or `nobody`. Other calls
    /// never ring and get nothing back. Group calls in groups you are in
    /// ring unless it is `nobody`.
    WhoCanCall {
        /// `everyone`, `contacts` or `nobody`.
        #[arg(value_parser = ["everyone", "contacts", "nobody"])]
        who: String,
    },
    /// Read receipts: `on` (the default) tells the people who wrote to you
    /// when you have been shown their messages; `off` does not, and, as it
    /// works both ways, shows you nobody's (delivered receipts still go).
    ReadReceipts {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Attachments up to this size are fetched as soon as their message
    /// arrives (kept encrypted in the profile until saved); larger ones
    /// wait for `umbra save`. A size such as `16M` (the default), `500K`,
    /// `off` or `all`.
    AutoFetch {
        /// `off`, `all`, or a size in bytes with an optional K, M or G.
        #[arg(value_parser = parse_size)]
        size: u64,
    },
}

/// `16M`, `500K`, `2G`, `1234`, `off` (0) or `all`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    match s.to_ascii_lowercase().as_str() {
        "off" | "none" => return Ok(0),
        "all" => return Ok(u64::MAX),
        _ => {}
    }
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        _ => (s, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{s}` is not a size: try 16M, 500K, off or all"))
}

fn size_text(n: u64) -> String {
    match n {
        0 => "off (every attachment waits for `umbra save`)".into(),
        u64::MAX => "all (every attachment is fetched on arrival)".into(),
        n if n % (1 << 30) == 0 => format!("up to {} GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("up to {} MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("up to {} KiB", n >> 10),
        n => format!("up to {n} bytes"),
    }
}

fn clock(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// Prints a call event (text) or passes it to the JSON printer.
pub fn show(out: Output, e: &CallEvent) {
    if out.json {
        say!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    match e {
        CallEvent::Dialing { peer } => {
            say!("calling {peer}… (relay-only until answered; Ctrl-C hangs up)")
        }
        CallEvent::Ringing { peer } => say!("ringing {peer}…"),
        CallEvent::Incoming { peer } => say!("incoming call from {peer}"),
        CallEvent::Silenced { peer } => say!(
            "* silenced a call from {peer} (not allowed by who can call you; nothing was sent back)"
        ),
        CallEvent::Answered { peer } => say!("{peer} answered"),
        CallEvent::Connected { path, why, .. } => say!("connected, {path}: {why}"),
        CallEvent::Hearing { peer } => say!("hearing {peer}"),
        CallEvent::Quality {
            seconds,
            rtt_ms,
            loss_out_permille,
            loss_in_permille,
            jitter_ms,
            path,
            ..
        } => {
            // A line every 5 s: readable in a terminal and in a log.
            if seconds % 5 == 1 {
                let rtt = rtt_ms.map_or("-".into(), |r| format!("{r} ms"));
                let out_loss = loss_out_permille
                    .map_or("-".into(), |l| format!("{:.1}%", f64::from(l) / 10.0));
                say!(
                    "  {}  rtt {rtt}  loss in {:.1}% out {out_loss}  jitter {jitter_ms} ms  {path}",
                    clock(*seconds),
                    f64::from(*loss_in_permille) / 10.0
                );
            }
        }
        CallEvent::Ended {
            outcome,
            seconds,
            error,
            ..
        } => {
            let mut line = format!("call ended: {outcome}");
            if *seconds > 0 {
                line.push_str(&format!(", {}", clock(*seconds)));
            }
            if let Some(e) = error {
                line.push_str(&format!(" ({e})"));
            }
            say!("{line}");
        }
        CallEvent::GroupStarted { conversation, by } => say!(
            "{by} started a group call in `{conversation}`: join with `umbra call {conversation}`"
        ),
        CallEvent::GroupSilenced { conversation, by } => say!(
            "* {by} started a group call in `{conversation}` (not ringing: who can call you \
             is nobody; join with `umbra call {conversation}`)"
        ),
        CallEvent::GroupEnded { conversation } => {
            say!("the group call in `{conversation}` ended")
        }
        CallEvent::GroupJoined {
            conversation,
            started,
            participants,
        } => {
            if *started {
                say!(
                    "started a group call in `{conversation}`; members can join with `umbra call \
                     {conversation}` (Ctrl-C leaves)"
                );
            } else {
                say!(
                    "joined the group call in `{conversation}` with {} (Ctrl-C leaves)",
                    participants.join(", ")
                );
            }
        }
        CallEvent::ParticipantJoined { who, .. } => say!("{who} joined the call"),
        CallEvent::ParticipantLeft { who, .. } => say!("{who} left the call"),
        CallEvent::Participants {
            seconds,
            participants,
            ..
        } => {
            // A line every 5 s, one entry per participant.
            if seconds % 5 == 1 {
                let each: Vec<String> = participants
                    .iter()
                    .map(|p| {
                        let level = if p.speaking {
                            format!("{} dB", p.level_dbfs)
                        } else {
                            "silent".to_string()
                        };
                        format!(
                            "{}{} {level}, loss {:.1}%",
                            p.name,
                            if p.speaking { " (speaking)" } else { "" },
                            f64::from(p.loss_permille) / 10.0
                        )
                    })
                    .collect();
                let list = if each.is_empty() {
                    "nobody else yet".to_string()
                } else {
                    each.join("; ")
                };
                say!("  {}  {list}", clock(*seconds));
            }
        }
        CallEvent::GroupLeft { seconds, error, .. } => {
            let mut line = format!("left the call, {}", clock(*seconds));
            if let Some(e) = error {
                line.push_str(&format!(" ({e})"));
            }
            say!("{line}");
        }
    }
}

/// `umbra call USER`.
pub async fn call(
    client: &mut Client,
    user: &str,
    media: &MediaArgs,
    ring: &RingArgs,
    out: Output,
) -> anyhow::Result<()> {
    let mut media = media.media();
    let group = client
        .conversations()?
        .iter()
        .any(|c| c.name == user && c.kind == "group" && c.active);
    if group {
        client
            .group_call(
                user,
                &media,
                &mut |e| out.event(e),
                crate::daemon::shutdown_signal(),
            )
            .await?;
        return Ok(());
    }
    media.ring_for = Some(Duration::from_secs(ring.ring_timeout));
    let outcome = client
        .call(
            user,
            &media,
            &mut |e| out.event(e),
            crate::daemon::shutdown_signal(),
        )
        .await?;
    if outcome == Outcome::Failed {
        anyhow::bail!("the call to {user} failed");
    }
    Ok(())
}

/// What `umbra listen` does with calls.
pub fn incoming(media: &MediaArgs, auto_answer: bool, out: Output) -> IncomingCalls {
    let decide: Decide = if auto_answer {
        Box::new(|_peer: &str| Box::pin(async { true }))
    } else {
        let lines = Arc::new(Mutex::new(stdin_lines()));
        Box::new(move |peer: &str| {
            let lines = lines.clone();
            let peer = peer.to_string();
            Box::pin(async move {
                if !out.json {
                    say!("answer the call from {peer}? [y/N]");
                }
                let mut lines = lines.lock().await;
                match lines.recv().await {
                    Some(l) => matches!(l.trim(), "y" | "Y" | "yes"),
                    // No terminal to ask: let it ring out (a missed call).
                    None => std::future::pending().await,
                }
            })
        })
    };
    IncomingCalls {
        media: media.media(),
        decide,
    }
}

fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// `umbra calls`.
pub fn list(client: &Client, limit: usize, out: Output) -> anyhow::Result<()> {
    let calls = client.calls(limit)?;
    let mut text = String::new();
    for c in &calls {
        let outcome = serde_json::to_value(c.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        text.push_str(&format!(
            "{} {} {:<16} {:<10} {}{}\n",
            crate::output::clock(c.started_ms),
            if c.outgoing { "to  " } else { "from" },
            c.peer,
            outcome,
            clock(c.talk_ms / 1000),
            c.path
                .as_deref()
                .map(|p| format!(" {p}"))
                .unwrap_or_default()
        ));
    }
    if calls.is_empty() {
        text.push_str("(no calls yet)\n");
    }
    out.value(&calls, text.trim_end());
    Ok(())
}

/// `umbra settings ...`.
pub fn settings(client: &Client, cmd: SettingsCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        SettingsCommand::Show => {}
        SettingsCommand::ProtectIp { state } => client.set_protect_ip(state == "on")?,
        SettingsCommand::WhoCanCall { who } => client.set_who_can_call(WhoCanCall::parse(&who)?)?,
        SettingsCommand::ReadReceipts { state } => client.set_read_receipts(state == "on")?,
        SettingsCommand::AutoFetch { size } => client.set_auto_fetch_limit(size)?,
    }
    let auto_fetch = client.auto_fetch_limit()?;
    let s = client.call_settings()?;
    let read_receipts = client.read_receipts()?;
    let who = serde_json::to_value(s.who_can_call)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut json = serde_json::to_value(s)?;
    json["read_receipts"] = read_receipts.into();
    json["auto_fetch_bytes"] = auto_fetch.into();
    out.value(
        &json,
        &format!(
            "protect IP address in calls: {}\nwho can call you: {who}\nread receipts: {}\n\
             fetch attachments on arrival: {}",
            if s.protect_ip {
                "on (every call is relayed: the other side only sees the relay's address; quality may be lower)"
            } else {
                "off (calls go peer to peer once answered: each side can see the other's IP address)"
            },
            if read_receipts { "on" } else { "off" },
            size_text(auto_fetch)
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_or_say_why_not() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("500k"), Ok(500 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("off"), Ok(0));
        assert_eq!(parse_size("all"), Ok(u64::MAX));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}

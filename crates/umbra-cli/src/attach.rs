//! Attachments on the command line: `send --file` / `--voice` /
//! `--location` (1:1 and groups), `umbra attachments` (and `delete`),
//! `umbra save`, `umbra play`, with progress on stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use umbra_call::audio::{AudioOut, Sink, WavSink};
use umbra_call::codec::FRAME;
use umbra_call::voice_note;
use umbra_client::Client;
use umbra_client::attachments::Target;
use umbra_wire::e2e::attachment::Kind;

use crate::output::Output;

/// What a message may carry besides text.
#[derive(Debug, Clone, clap::Args)]
pub struct Attach {
    /// Send this file (photos included), encrypted on this device; the
    /// message text, if any, goes with it as a caption.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["location", "voice"])]
    pub file: Option<PathBuf>,
    /// Send a voice message recorded in this WAV file (any rate, mono or
    /// stereo; at most 15 minutes): encoded to Opus on this device.
    #[arg(long, value_name = "FILE.wav", conflicts_with = "location")]
    pub voice: Option<PathBuf>,
    /// Send a location: the server never sees it.
    #[arg(long, value_name = "LAT,LON", allow_hyphen_values = true)]
    pub location: Option<String>,
}

impl Attach {
    /// Whether anything is attached.
    pub fn any(&self) -> bool {
        self.file.is_some() || self.voice.is_some() || self.location.is_some()
    }
}

fn parse_location(s: &str) -> anyhow::Result<(f64, f64)> {
    let (lat, lon) = s
        .split_once(',')
        .context("a location is LAT,LON, e.g. 48.8584,2.2945")?;
    Ok((
        lat.trim().parse().context("the latitude is not a number")?,
        lon.trim()
            .parse()
            .context("the longitude is not a number")?,
    ))
}

/// Shows a transfer's progress on stderr, not in JSON mode: a bar redrawn
/// in place on a terminal, else a line at most every half second.
fn progress(out: &Output, verb: &'static str) -> impl FnMut(u64, u64) {
    let quiet = out.json;
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last: Option<Instant> = None;
    let mut ended = false;
    move |done, total| {
        if quiet || ended {
            return;
        }
        let now = Instant::now();
        let finished = done >= total;
        let every = if terminal { 100 } else { 500 };
        if !finished && last.is_some_and(|l| now.duration_since(l) < Duration::from_millis(every)) {
            return;
        }
        last = Some(now);
        ended = finished;
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let mib = |n: u64| n as f64 / 1048576.0;
        if terminal {
            let filled = (pct as usize * 30 / 100).min(30);
            let rate = mib(done) / now.duration_since(started).as_secs_f64().max(0.001);
            eprint!(
                "\r{verb} [{}{}] {pct:>3}% {:.1}/{:.1} MiB, {rate:.1} MiB/s{}",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                mib(done),
                mib(total),
                if finished { "\n" } else { "" }
            );
        } else {
            eprintln!("{verb}: {pct}% ({:.1} of {:.1} MiB)", mib(done), mib(total));
        }
    }
}

/// Sends what `attach` names (with `text` as a caption) to `target`.
pub async fn send(
    client: &mut Client,
    target: Target<'_>,
    text: Option<&str>,
    attach: &Attach,
    out: &Output,
) -> anyhow::Result<()> {
    let events = if let Some(path) = &attach.file {
        let mut shown = progress(out, "uploading");
        client
            .send_file(target, path, text.unwrap_or(""), Kind::File, &mut shown)
            .await?
    } else if let Some(wav) = &attach.voice {
        let mut shown = progress(out, "uploading");
        client
            .send_voice(target, wav, text.unwrap_or(""), &mut shown)
            .await?
    } else if let Some(loc) = &attach.location {
        let (lat, lon) = parse_location(loc)?;
        let mut events = client.send_location(target, lat, lon).await?;
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            events.extend(match target {
                Target::User(u) => client.send(u, t).await?,
                Target::Group(g) => client.group_send(g, t).await?,
            });
        }
        events
    } else {
        anyhow::bail!("nothing to send: give a text, --file, --voice or --location");
    };
    out.events(&events);
    let to = match target {
        Target::User(u) => u.to_string(),
        Target::Group(g) => format!("`{g}`"),
    };
    out.value(
        &serde_json::json!({ "sent": true, "to": to }),
        &format!("sent to {to}"),
    );
    Ok(())
}

/// `umbra attachments` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AttachmentsCommand {
    /// Delete a file you sent from the server: whoever has not fetched it
    /// yet can no longer get it (copies already fetched stay).
    Delete {
        /// The message id (a prefix is enough).
        id: String,
    },
}

/// `umbra attachments`.
pub fn list(client: &Client, out: &Output) -> anyhow::Result<()> {
    let all = client.attachments()?;
    let mut text = String::new();
    for a in &all {
        let what = match a.kind {
            "voice" => format!(
                "voice {}",
                umbra_client::attachments::duration_text(a.duration_ms)
            ),
            kind => kind.to_string(),
        };
        text.push_str(&format!(
            "{}  {:<16} {:<12} {:<10} {} ({} bytes, {}){}\n",
            &a.id[..12],
            a.conversation,
            a.sender,
            what,
            a.name,
            a.size,
            a.state,
            a.path
                .as_ref()
                .map(|p| format!("  saved: {p}"))
                .unwrap_or_default()
        ));
    }
    if all.is_empty() {
        text.push_str("(no attachments yet)\n");
    }
    out.value(&all, text.trim_end());
    Ok(())
}

/// `umbra play ID [--out speaker|PATH.wav]`: a WAV file gets exactly the
/// message's samples; the speaker is fed in real time.
pub async fn play(client: &mut Client, id: &str, to: &str, out: &Output) -> anyhow::Result<()> {
    let mut shown = progress(out, "downloading");
    let ogg = client.voice_message(id, &mut shown).await?;
    let samples = match AudioOut::parse(to) {
        AudioOut::Wav(path) => {
            let mut wav = WavSink::create(&path)?;
            let n = voice_note::decode(ogg.as_slice(), |s| wav.write(s))?;
            wav.finish()?;
            out.value(
                &serde_json::json!({ "exported": path, "samples": n }),
                &format!(
                    "wrote {} ({:.1} s, 48 kHz mono)",
                    path.display(),
                    n as f64 / 48_000.0
                ),
            );
            return Ok(());
        }
        AudioOut::Discard => voice_note::decode(ogg.as_slice(), |_| Ok(()))?,
        speaker => {
            if !umbra_call::audio::HAS_DEVICES {
                anyhow::bail!(
                    "this build has no sound-card support: give --out FILE.wav to export the \
                     voice message, or rebuild with `--features audio-device` (on Linux it needs \
                     libasound2-dev)"
                );
            }
            let mut sink = speaker.open()?;
            let mut pending: Vec<i16> = Vec::new();
            let mut clock = tokio::time::interval(Duration::from_millis(20));
            let mut frames = Vec::new();
            let n = voice_note::decode(ogg.as_slice(), |s| {
                pending.extend_from_slice(s);
                while pending.len() >= FRAME {
                    let mut f = [0i16; FRAME];
                    f.copy_from_slice(&pending[..FRAME]);
                    pending.drain(..FRAME);
                    frames.push(f);
                }
                Ok(())
            })?;
            if !pending.is_empty() {
                let mut f = [0i16; FRAME];
                f[..pending.len()].copy_from_slice(&pending);
                frames.push(f);
            }
            for f in &frames {
                clock.tick().await;
                sink.play(f)?;
            }
            sink.finish()?;
            n
        }
    };
    out.value(
        &serde_json::json!({ "played": samples }),
        &format!("played {:.1} s", samples as f64 / 48_000.0),
    );
    Ok(())
}

/// `umbra save ID [PATH]`.
pub async fn save(
    client: &mut Client,
    id: &str,
    path: Option<PathBuf>,
    out: &Output,
) -> anyhow::Result<()> {
    let mut shown = progress(out, "downloading");
    let dest = client
        .save_attachment(id, path.as_deref(), &mut shown)
        .await?;
    out.value(
        &serde_json::json!({ "saved": dest }),
        &format!("saved to {}", dest.display()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_location;

    #[test]
    fn locations_parse_or_say_why_not() {
        assert_eq!(
            parse_location("48.8584,2.2945").expect("ok"),
            (48.8584, 2.2945)
        );
        assert_eq!(parse_location("-33.9, -70.6").expect("ok"), (-33.9, -70.6));
        assert!(parse_location("48.8584").is_err());
        assert!(parse_location("north,south").is_err());
    }
}

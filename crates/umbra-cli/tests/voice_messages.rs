//! Voice messages and fetching on arrival, through the real binary: a WAV
//! recording sent with `--voice` arrives as an Opus voice message, is
//! fetched as its message arrives, and plays back (exported to WAV) as long
//! and as pitched as it was recorded, with the server stopped; the fetched
//! copy in the profile is sealed, not the recording. With fetching on
//! arrival off, a file waits on the server, and once its sender deletes it
//! the recipient is told it is gone rather than given anything.

mod common;

use std::path::Path;

use common::{ServerProc, fails, history, ok};
use umbra_call::audio::{WavSink, read_wav};

fn attachments(profile: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(profile, &["--json", "attachments"])).expect("json")
}

fn named<'a>(list: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list:?}"))
}

/// 2.5 s of a 440 Hz tone, as a microphone recording would be.
fn record(path: &Path) -> Vec<i16> {
    let samples: Vec<i16> = (0..120_000)
        .map(|i| ((i as f32 * std::f32::consts::TAU * 440.0 / 48_000.0).sin() * 9_000.0) as i16)
        .collect();
    let mut wav = WavSink::create(path).expect("wav");
    wav.write(&samples).expect("write");
    use umbra_call::audio::Sink;
    wav.finish().expect("finish");
    samples
}

/// A server in `dir/server` and the accounts `alice` and `bob` in
/// `dir/alice` and `dir/bob`.
fn alice_and_bob(dir: &Path) -> ServerProc {
    let server = ServerProc::start(&dir.join("server"), "127.0.0.1:0", &dir.join("server.log"));
    for user in ["alice", "bob"] {
        common::register(&dir.join(user), &server.invite, user);
    }
    server
}

#[test]
fn a_voice_message_is_fetched_on_arrival_and_plays_back_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = alice_and_bob(dir.path());
    let p = |n: &str| dir.path().join(n);
    let memo = p("memo.wav");
    let recorded = record(&memo);
    ok(
        &p("alice"),
        &[
            "send",
            "bob",
            "--voice",
            &memo.to_string_lossy(),
            "from the station",
        ],
    );
    // A voice message needs no text.
    ok(
        &p("alice"),
        &["send", "bob", "--voice", &memo.to_string_lossy()],
    );
    ok(&p("bob"), &["sync"]);
    let shown = history(&p("bob"), "alice");
    assert!(
        shown
            .iter()
            .any(|(_, t)| t.starts_with("[voice message: 0:03") && t.contains("from the station")),
        "{shown:?}"
    );
    let listed = attachments(&p("bob"));
    let voice = named(&listed, "memo.opus");
    assert_eq!(voice["kind"], "voice");
    assert_eq!(voice["media_type"], "audio/ogg");
    assert_eq!(voice["duration_ms"], 2500);
    assert_eq!(voice["state"], "fetched", "fetched as it arrived");
    let id = voice["id"].as_str().expect("id").to_string();
    // Under 24 kbit/s: far smaller than the 240 KB recording.
    assert!(voice["size"].as_u64().expect("size") < 12_000, "{voice}");

    // The fetched copy is sealed: neither the Opus file nor the recording.
    let media: Vec<_> = std::fs::read_dir(p("bob").join("media"))
        .expect("media dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_none_or(|e| e != "lock"))
        .collect();
    assert_eq!(media.len(), 2, "both voice messages: {media:?}");
    for m in &media {
        let sealed = std::fs::read(m).expect("sealed");
        assert!(sealed.len() >= 4096, "padded: {}", sealed.len());
        assert!(
            !sealed.windows(4).any(|w| w == b"OggS"),
            "no Ogg page in clear"
        );
    }

    // The server goes away: playing and saving need nothing from it.
    assert!(server.stop().success());
    let back = p("heard.wav");
    let said = ok(
        &p("bob"),
        &["play", &id[..10], "--out", &back.to_string_lossy()],
    );
    assert!(said.contains("2.5 s"), "{said}");
    let (heard, _) = read_wav(&back, None).expect("exported wav");
    assert_eq!(heard.len(), recorded.len(), "as long as it was recorded");
    let pitch = umbra_call::analysis::dominant_frequency(&heard[4_800..], 48_000);
    assert!((pitch - 440.0).abs() < 10.0, "heard {pitch} Hz");
    if !umbra_call::audio::HAS_DEVICES {
        // Without a sound card build, the speaker is not there: say what to do.
        let err = fails(&p("bob"), &["play", &id]);
        assert!(err.contains("give --out FILE.wav"), "{err}");
    }
    let opus = p("memo-copy.opus");
    ok(&p("bob"), &["save", &id, &opus.to_string_lossy()]);
    assert!(std::fs::read(&opus).expect("opus").starts_with(b"OggS"));
    let err = fails(&p("bob"), &["play", "00000000000000"]);
    assert!(err.contains("umbra attachments"), "{err}");
}

#[test]
fn without_fetching_on_arrival_a_file_deleted_by_its_sender_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = alice_and_bob(dir.path());
    let p = |n: &str| dir.path().join(n);
    let shown = ok(&p("bob"), &["settings", "auto-fetch", "off"]);
    assert!(
        shown.contains("fetch attachments on arrival: off"),
        "{shown}"
    );
    let settings: serde_json::Value =
        serde_json::from_str(&ok(&p("bob"), &["--json", "settings", "show"])).expect("json");
    assert_eq!(settings["auto_fetch_bytes"], 0);

    let report = p("report.pdf");
    std::fs::write(&report, vec![7u8; 50_000]).expect("file");
    ok(
        &p("alice"),
        &["send", "bob", "--file", &report.to_string_lossy()],
    );
    ok(&p("bob"), &["sync"]);
    let listed = attachments(&p("bob"));
    assert_eq!(named(&listed, "report.pdf")["state"], "waiting");
    assert!(!p("bob").join("media").exists(), "nothing fetched");

    // Only the sender can delete it; then it is gone for everyone.
    let id = named(&attachments(&p("alice")), "report.pdf")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let err = fails(&p("bob"), &["play", &id]);
    assert!(err.contains("is not a voice message"), "{err}");
    let err = fails(&p("bob"), &["attachments", "delete", &id]);
    assert!(err.contains("only its sender can delete it"), "{err}");
    let said = ok(&p("alice"), &["attachments", "delete", &id]);
    assert!(
        said.contains("deleted `report.pdf` from the server"),
        "{said}"
    );
    assert_eq!(
        named(&attachments(&p("alice")), "report.pdf")["state"],
        "deleted"
    );
    let err = fails(&p("bob"), &["save", &id, &p("got.pdf").to_string_lossy()]);
    assert!(err.contains("no longer on the server"), "{err}");
    assert!(!p("got.pdf").exists());
    assert_eq!(
        named(&attachments(&p("bob")), "report.pdf")["state"],
        "gone"
    );
    // Deleting twice is no error: it is gone either way.
    ok(&p("alice"), &["attachments", "delete", &id]);
    drop(server);
}

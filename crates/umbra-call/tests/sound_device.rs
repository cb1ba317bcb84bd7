//! The microphone and speaker paths against real ALSA devices that need no
//! hardware: ALSA's `file` plugin, defined in a private `~/.asoundrc` (this
//! test's own HOME), plays the speaker into a raw file and feeds the
//! microphone from one: the tone the speaker plays is found in its file at
//! its frequency, and the file's tone reaches the microphone at its level.
//! Only with the `audio-device` feature.

#![cfg(feature = "audio-device")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use umbra_call::analysis::dominant_frequency;
use umbra_call::audio::{AudioIn, AudioOut, Source, Tone};

/// Runs the check in a child process of this test binary whose HOME holds
/// the `.asoundrc` (ALSA reads it once per process).
#[test]
fn a_tone_goes_through_the_speaker_and_comes_in_through_the_microphone() {
    let home = std::env::temp_dir().join(format!("umbra-alsa-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let input = home.join("in.raw");
    let output = home.join("out.raw");
    // 2 s of 660 Hz, 48 kHz mono s16le, for the microphone to read.
    let tone: Vec<u8> = (0..96_000)
        .flat_map(|i| {
            let v = (8000.0 * (i as f32 * std::f32::consts::TAU * 660.0 / 48_000.0).sin()) as i16;
            v.to_le_bytes()
        })
        .collect();
    std::fs::write(&input, tone).unwrap();
    // The file plugin behind `plug`, so the files are 48 kHz mono s16le
    // whatever format cpal opens the device in.
    let conf = format!(
        "pcm.umbraspkfile {{ type file slave.pcm \"null\" file \"{out}\" format \"raw\" }}\n\
         pcm.umbraspeaker {{ type plug slave {{ pcm \"umbraspkfile\" format S16_LE rate 48000 channels 1 }} \
         hint {{ show on description \"Umbra test speaker\" }} }}\n\
         pcm.umbramicfile {{ type file slave.pcm \"null\" file \"/dev/null\" infile \"{inp}\" format \"raw\" }}\n\
         pcm.umbramic {{ type plug slave {{ pcm \"umbramicfile\" format S16_LE rate 48000 channels 1 }} \
         hint {{ show on description \"Umbra test microphone\" }} }}\n",
        out = output.display(),
        inp = input.display()
    );
    std::fs::write(home.join(".asoundrc"), conf).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "through_alsa_files", "--ignored", "--nocapture"])
        .env("HOME", &home)
        .env("UMBRA_ALSA_TEST_DIR", &home)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
#[ignore = "run by the test above, in a process with its own HOME"]
fn through_alsa_files() {
    let dir = std::path::PathBuf::from(std::env::var_os("UMBRA_ALSA_TEST_DIR").unwrap());
    let mut spk = AudioOut::parse("speaker:alsa:umbraspeaker").open().unwrap();
    let mut tone = Tone::repeating(&[(440.0, 1.0)]);
    for _ in 0..50 {
        spk.play(&tone.next_frame().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(spk);
    let bytes = std::fs::read(dir.join("out.raw")).unwrap();
    let played: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert!(
        played.len() > 24_000,
        "the speaker wrote {} samples",
        played.len()
    );
    // The null slave has no clock either: the device pulls faster than the
    // call plays, and gets silence in between. Judge the longest stretch
    // of tone.
    let longest = tone_runs(&played)
        .into_iter()
        .max_by_key(|r| r.len())
        .unwrap_or(&[]);
    assert!(
        longest.len() >= 900,
        "no stretch of tone in what the speaker wrote"
    );
    let f = dominant_frequency(longest, 48_000);
    assert!((f - 440.0).abs() < 15.0, "the speaker played {f} Hz");

    // The microphone: the null slave has no clock, so capture comes in
    // bursts whose timing says nothing about the tone's frequency; what can
    // be checked is that the file's samples arrive, at their level.
    let mut mic = AudioIn::parse("mic:alsa:umbramic").open().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut heard = Vec::new();
    for _ in 0..8 {
        heard.extend_from_slice(&mic.next_frame().unwrap());
    }
    let level = umbra_call::analysis::rms(&heard);
    assert!(
        (4_000.0..7_000.0).contains(&level),
        "the microphone gave a level of {level} (the file's tone is 5,657 RMS)"
    );
}

/// Stretches of `samples` between runs of 32 or more zeros.
fn tone_runs(samples: &[i16]) -> Vec<&[i16]> {
    let mut runs = Vec::new();
    let (mut start, mut zeros) = (0, 0);
    for (i, &x) in samples.iter().enumerate() {
        if x == 0 {
            zeros += 1;
            if zeros == 32 && i + 1 - 32 > start {
                runs.push(&samples[start..i + 1 - 32]);
            }
        } else {
            if zeros >= 32 {
                start = i;
            }
            zeros = 0;
        }
    }
    if zeros < 32 && samples.len() > start {
        runs.push(&samples[start..]);
    }
    runs
}

//! Group-call frame encryption (`umbra_call::e2ee`): RFC 9605's own test
//! vectors through the SFrame implementation it uses, then what members,
//! a forwarding unit that tampers, a member who left and one who joined
//! late can and cannot do with the frames.

use sframe::CipherSuite;
use sframe::crypto::{DecryptionBufferView, EncryptionBufferView};
use sframe::header::SframeHeader;
use sframe::key::{DecryptionKey, EncryptionKey};
use umbra_call::e2ee::{
    Dropped, EARLY_HOLD_MS, Epoch, FrameKeys, KeyError, Opened, PREVIOUS_EPOCH_GRACE_MS, SealError,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn suite(n: u64) -> CipherSuite {
    match n {
        1 => CipherSuite::AesCtr128HmacSha256_80,
        2 => CipherSuite::AesCtr128HmacSha256_64,
        3 => CipherSuite::AesCtr128HmacSha256_32,
        4 => CipherSuite::AesGcm128Sha256,
        5 => CipherSuite::AesGcm256Sha512,
        other => panic!("suite {other} is not in RFC 9605"),
    }
}

#[test]
fn rfc_9605_test_vectors_pass() {
    let text = include_str!("data/rfc9605-sframe-vectors.json");
    let doc: serde_json::Value = serde_json::from_str(text).expect("json");
    let vectors = doc["sframe"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 5, "one per cipher suite");
    for v in vectors {
        let s = suite(v["cipher_suite"].as_u64().expect("suite"));
        let kid = v["kid"].as_u64().expect("kid");
        let ctr = v["ctr"].as_u64().expect("ctr");
        let field = |name: &str| hex(v[name].as_str().expect(name));
        let header = Vec::from(&SframeHeader::new(kid, ctr));
        let mut aad = [header.clone(), field("metadata")].concat();
        assert_eq!(aad, field("aad"), "{s}: aad");

        let enc = EncryptionKey::derive_from(s, kid, field("base_key")).expect("key");
        let mut data = field("pt");
        let mut tag = vec![0u8; s.auth_tag_len()];
        enc.encrypt(
            EncryptionBufferView {
                aad: &mut aad,
                data: &mut data,
                tag: &mut tag,
            },
            ctr,
        )
        .expect("encrypt");
        let ct = field("ct");
        assert_eq!([header.clone(), data, tag].concat(), ct, "{s}: ct");

        let dec = DecryptionKey::derive_from(s, kid, field("base_key")).expect("key");
        let mut aad = field("aad");
        let mut body = ct[header.len()..].to_vec();
        dec.decrypt(
            DecryptionBufferView {
                aad: &mut aad,
                data: &mut body,
            },
            ctr,
        )
        .expect("decrypt");
        body.truncate(body.len() - s.auth_tag_len());
        assert_eq!(body, field("pt"), "{s}: pt");

        // One changed byte of the ciphertext and the tag fails.
        let mut aad = field("aad");
        let mut bad = ct[header.len()..].to_vec();
        bad[0] ^= 1;
        let refused = dec.decrypt(
            DecryptionBufferView {
                aad: &mut aad,
                data: &mut bad,
            },
            ctr,
        );
        assert!(refused.is_err(), "{s}: a changed frame decrypted");
    }
}

#[path = "support/exporter.rs"]
mod exporter;
use exporter::Exporter;

fn keys(number: u64, secret: u8, own: u32, members: &[u32]) -> FrameKeys {
    FrameKeys::new(&Epoch {
        number,
        own_index: own,
        members,
        exporter: &Exporter([secret; 32]),
    })
    .expect("keys")
}

fn try_advance(
    k: &mut FrameKeys,
    number: u64,
    secret: u8,
    own: u32,
    members: &[u32],
    now: u64,
) -> Result<(), KeyError> {
    k.advance(
        &Epoch {
            number,
            own_index: own,
            members,
            exporter: &Exporter([secret; 32]),
        },
        now,
    )
}

fn advance(k: &mut FrameKeys, number: u64, secret: u8, own: u32, members: &[u32], now: u64) {
    try_advance(k, number, secret, own, members, now).expect("advance");
}

#[test]
fn every_other_member_opens_a_frame_and_learns_who_sent_it() {
    let members = [0, 1, 2];
    let mut a = keys(7, 1, 0, &members);
    let mut b = keys(7, 1, 1, &members);
    let mut c = keys(7, 1, 2, &members);
    let opus = b"an opus frame, twenty milliseconds".to_vec();
    let sealed = a.seal(&opus).expect("seal");
    assert!(!sealed.windows(opus.len()).any(|w| w == opus), "in clear");
    for k in [&mut b, &mut c] {
        assert_eq!(
            k.open(&sealed, 0),
            Some(Opened {
                sender: 0,
                counter: 0,
                payload: opus.clone()
            })
        );
    }
    // Each sender has a key of its own: the same payload sealed by two
    // senders gives two different frames, each opened as its sender's.
    let from_b = b.seal(&opus).expect("seal");
    let from_c = c.seal(&opus).expect("seal");
    assert_ne!(from_b[..], from_c[..]);
    assert_eq!(a.open(&from_b, 0).map(|o| o.sender), Some(1));
    assert_eq!(a.open(&from_c, 0).map(|o| o.sender), Some(2));
    // A sender does not hold a receiving key for itself.
    assert_eq!(a.open(&sealed, 0), None);
    assert_eq!(a.dropped().unknown_key, 1);
}

#[test]
fn what_a_forwarding_unit_changes_or_replays_is_dropped_counted_and_harmless() {
    let members = [0, 1];
    let mut a = keys(3, 9, 0, &members);
    let mut b = keys(3, 9, 1, &members);
    let frames: Vec<Vec<u8>> = (0..5u8).map(|i| a.seal(&[i; 40]).expect("seal")).collect();
    assert!(b.open(&frames[0], 0).is_some());
    // Replayed.
    assert_eq!(b.open(&frames[0], 0), None);
    // A byte of the ciphertext changed.
    let mut changed = frames[1].clone();
    let last = changed.len() - 1;
    changed[last] ^= 0x80;
    assert_eq!(b.open(&changed, 0), None);
    // A forged frame claiming a counter far ahead (a real header with the
    // counter moved on, the real ciphertext behind it) fails its tag, and
    // does not move the replay window: the real frames behind it still
    // play (a window moved to 1,000,000 would refuse them as too old).
    let real = SframeHeader::deserialize(&frames[2]).expect("header");
    let mut ahead = Vec::from(&SframeHeader::new(real.key_id(), 1_000_000));
    ahead.extend_from_slice(&frames[2][real.len()..]);
    assert_eq!(b.open(&ahead, 0), None);
    // Not SFrame at all.
    assert_eq!(b.open(&[], 0), None);
    for f in &frames[1..] {
        assert!(b.open(f, 0).is_some(), "a real frame was pushed out");
    }
    assert_eq!(
        b.dropped(),
        Dropped {
            malformed: 1,
            unknown_key: 0,
            replayed: 1,
            forged: 2,
        }
    );
    assert_eq!(b.dropped().total(), 4);
}

#[test]
fn who_left_cannot_read_what_follows_and_who_joined_cannot_read_what_went_before() {
    // Epoch 1: members 0, 1, 2.
    let mut a = keys(1, 11, 0, &[0, 1, 2]);
    let mut b = keys(1, 11, 1, &[0, 1, 2]);
    let mut c = keys(1, 11, 2, &[0, 1, 2]);
    let before = a.seal(b"said while c was there").expect("seal");
    assert!(c.open(&before, 0).is_some());
    // Epoch 2 removes c: a and b move on; c has no epoch-2 secret.
    advance(&mut a, 2, 22, 0, &[0, 1], 1_000);
    advance(&mut b, 2, 22, 1, &[0, 1], 1_000);
    let after = a.seal(b"said after c left").expect("seal");
    assert_eq!(
        b.open(&after, 1_001).map(|o| o.payload),
        Some(b"said after c left".to_vec())
    );
    assert_eq!(c.open(&after, 1_001), None, "who left reads on");
    // Held for an epoch c will never reach, then dropped.
    assert_eq!(c.dropped().unknown_key, 0);
    assert_eq!(c.open(&after, 1_002 + EARLY_HOLD_MS), None);
    assert_eq!(c.dropped().unknown_key, 1);
    // Epoch 3 adds d, who gets only epoch 3's secret.
    advance(&mut a, 3, 33, 0, &[0, 1, 3], 2_000);
    advance(&mut b, 3, 33, 1, &[0, 1, 3], 2_000);
    let mut d = keys(3, 33, 3, &[0, 1, 3]);
    for old in [&before, &after] {
        assert_eq!(d.open(old, 2_001), None, "who joined reads back");
    }
    let now = a.seal(b"hello d").expect("seal");
    assert_eq!(d.open(&now, 2_001).map(|o| o.sender), Some(0));
    // Even one who left but guesses the next epoch's number, with its old
    // secret, makes keys that do not open the new frames.
    let mut stale = keys(3, 11, 2, &[0, 1, 2]);
    assert_eq!(stale.open(&now, 2_001), None);
    assert_eq!(stale.dropped().forged, 1);
}

#[test]
fn frames_sent_just_before_a_change_play_during_the_grace_and_not_after() {
    let mut a = keys(5, 1, 0, &[0, 1]);
    let mut b = keys(5, 1, 1, &[0, 1]);
    let in_flight: Vec<Vec<u8>> = (0..2u8).map(|i| a.seal(&[i; 20]).expect("seal")).collect();
    advance(&mut b, 6, 2, 1, &[0, 1], 10_000);
    assert_eq!(b.epoch(), 6);
    assert!(
        b.open(&in_flight[0], 10_000 + PREVIOUS_EPOCH_GRACE_MS - 1)
            .is_some()
    );
    assert_eq!(
        b.open(&in_flight[1], 10_000 + PREVIOUS_EPOCH_GRACE_MS),
        None
    );
    assert_eq!(b.dropped().unknown_key, 1);
}

#[test]
fn frames_from_a_committer_one_epoch_ahead_wait_for_us_and_only_for_a_while() {
    let mut a = keys(4, 1, 0, &[0, 1]);
    let mut b = keys(4, 1, 1, &[0, 1]);
    // a committed a join and seals under epoch 5 at once; b gets the commit
    // a little later.
    advance(&mut a, 5, 2, 0, &[0, 1, 2], 1_000);
    let early: Vec<Vec<u8>> = (0..3u8).map(|i| a.seal(&[i; 20]).expect("seal")).collect();
    for f in &early {
        assert_eq!(b.open(f, 1_010), None);
    }
    assert_eq!(b.dropped().total(), 0, "held, not dropped");
    advance(&mut b, 5, 2, 1, &[0, 1, 2], 1_050);
    let held = b.take_early();
    assert_eq!(held.len(), 3);
    for (i, (at, f)) in held.iter().enumerate() {
        let opened = b.open(f, *at).expect("opens under the new epoch");
        assert_eq!(opened.payload, vec![i as u8; 20]);
    }
    // Up to EPOCHS_AROUND ahead waits (several joins at once); beyond, or
    // held past EARLY_HOLD_MS, is dropped.
    for (n, secret) in [(6, 3), (7, 4)] {
        advance(&mut a, n, secret, 0, &[0, 1, 2], 2_000);
    }
    let two_on = a.seal(b"two epochs on").expect("seal");
    for (n, secret) in [(8, 5), (9, 6)] {
        advance(&mut a, n, secret, 0, &[0, 1, 2], 2_000);
    }
    let four_on = a.seal(b"four epochs on").expect("seal");
    assert_eq!(b.open(&two_on, 2_010), None);
    assert_eq!(b.open(&four_on, 2_010), None);
    assert_eq!(b.dropped().unknown_key, 1, "four on is dropped");
    for (n, secret) in [(6, 3), (7, 4)] {
        advance(&mut b, n, secret, 1, &[0, 1, 2], 2_100);
    }
    let held = b.take_early();
    assert_eq!(held.len(), 1);
    assert_eq!(
        b.open(&held[0].1, held[0].0).map(|o| o.payload),
        Some(b"two epochs on".to_vec())
    );
    let mut c = keys(8, 5, 1, &[0, 1, 2]);
    assert_eq!(c.open(&four_on, 2_010), None);
    assert_eq!(c.open(&four_on, 2_011 + EARLY_HOLD_MS), None);
    assert_eq!(c.dropped().unknown_key, 1, "the first copy expired");
    assert_eq!(c.take_early().len(), 1, "the second is held");
}

#[test]
fn a_member_several_epochs_behind_is_still_heard_during_the_grace() {
    // Three join at once: a moves 1 -> 4 before b has moved at all; b's
    // frames under epoch 1 still open at a, as do a's at b once b is there.
    let mut a = keys(1, 1, 0, &[0, 1]);
    let mut b = keys(1, 1, 1, &[0, 1]);
    for (n, secret) in [(2, 2), (3, 3), (4, 4)] {
        advance(&mut a, n, secret, 0, &[0, 1, 2, 3, 4], 1_000);
    }
    let late = b.seal(b"b still in epoch 1").expect("seal");
    assert!(a.open(&late, 1_100).is_some(), "three epochs back");
    // Past the grace, it is gone.
    let later = b.seal(b"b still in epoch 1, later").expect("seal");
    assert_eq!(a.open(&later, 1_000 + PREVIOUS_EPOCH_GRACE_MS), None);
}

#[test]
fn who_was_removed_cannot_speak_during_the_grace() {
    let mut a = keys(1, 1, 0, &[0, 1, 2]);
    let mut b = keys(1, 1, 1, &[0, 1, 2]);
    let mut c = keys(1, 1, 2, &[0, 1, 2]);
    let in_flight = a.seal(b"sent just before c was removed").expect("seal");
    advance(&mut b, 2, 2, 1, &[0, 1], 1_000);
    // c, removed, still holds epoch 1's secret: its own frames are refused,
    // and so is a frame it makes under a's key (what it derives from that
    // secret as member 0), within the grace as after it.
    let from_c = c.seal(b"c after its removal").expect("seal");
    assert_eq!(b.open(&from_c, 1_001), None);
    let mut as_a = keys(1, 1, 0, &[0, 1, 2]);
    for _ in 0..5 {
        let _ = as_a.seal(b"skip ahead of a's counter").expect("seal");
    }
    let forged = as_a.seal(b"c speaking as a").expect("seal");
    assert_eq!(b.open(&forged, 1_001), None, "c spoke as a");
    // The price: a's frame from just before the change is lost too.
    assert_eq!(b.open(&in_flight, 1_001), None);
    assert_eq!(b.dropped().unknown_key, 3);
    // An epoch that only added someone keeps its grace.
    let from_a = a.seal(b"a, before d joined").expect("seal");
    advance(&mut b, 3, 3, 1, &[0, 1, 3], 2_000);
    let mut a2 = keys(2, 2, 0, &[0, 1]);
    let said = a2.seal(b"a in epoch 2").expect("seal");
    assert!(b.open(&said, 2_001).is_some(), "epoch 2 kept for the grace");
    assert_eq!(b.open(&from_a, 2_001), None, "epoch 1 stays gone");
}

#[test]
fn an_epoch_that_is_not_newer_is_refused_and_the_counter_never_restarts() {
    let mut a = keys(4, 1, 0, &[0, 1]);
    let mut b = keys(4, 1, 1, &[0, 1]);
    let first = a.seal(b"one").expect("seal");
    for number in [4, 3] {
        let refused = try_advance(&mut a, number, 1, 0, &[0, 1], 0);
        assert!(
            matches!(refused, Err(KeyError::NotNewer { .. })),
            "{refused:?}"
        );
    }
    // Sealing goes on under the same key with the next counter: the two
    // frames are told apart by it, so neither is taken for a replay.
    let second = a.seal(b"two").expect("seal");
    let ctr = |f: &[u8]| SframeHeader::deserialize(f).expect("header").counter();
    assert_eq!(ctr(&second), ctr(&first) + 1);
    assert!(b.open(&first, 0).is_some() && b.open(&second, 0).is_some());
}

#[test]
fn key_ids_that_come_round_again_start_fresh() {
    // Four epoch bits: epoch 17 has epoch 1's key ids.
    let mut a = keys(1, 1, 0, &[0, 1]);
    let mut b = keys(1, 1, 1, &[0, 1]);
    for i in 0..300u32 {
        let f = a.seal(&i.to_be_bytes()).expect("seal");
        assert!(b.open(&f, 0).is_some());
    }
    advance(&mut b, 17, 17, 1, &[0, 1], 1_000);
    // Member 0 of epoch 17 is a device that joined since (a counter
    // from zero): the window of the old key with the same id (at 299)
    // must not refuse it.
    let mut a = keys(17, 17, 0, &[0, 1]);
    let f = a.seal(b"after the wrap").expect("seal");
    assert_eq!(
        b.open(&f, 1_001).map(|o| o.payload),
        Some(b"after the wrap".to_vec())
    );
}

#[test]
fn a_member_index_beyond_a_key_id_is_left_out_and_a_failed_move_stops_sealing() {
    let mut a = keys(1, 1, 0, &[0, 1, 300]);
    let mut b = keys(1, 1, 1, &[0, 1, 300]);
    let f = a.seal(b"heard").expect("seal");
    assert!(b.open(&f, 0).is_some(), "the others still hear each other");
    let beyond = FrameKeys::new(&Epoch {
        number: 1,
        own_index: 300,
        members: &[0, 1, 300],
        exporter: &Exporter([1; 32]),
    });
    assert!(matches!(beyond, Err(KeyError::TooManyMembers(300))));
    // A move that fails leaves nothing sealed under the old key.
    let failed = try_advance(&mut a, 2, 2, 300, &[1, 300], 0);
    assert!(failed.is_err());
    assert_eq!(a.seal(b"after").err(), Some(SealError::NoKey));
}

#[test]
fn a_senders_counter_runs_on_across_epochs_as_its_frame_clock() {
    let mut a = keys(1, 1, 0, &[0, 1]);
    let mut b = keys(1, 1, 1, &[0, 1]);
    let counters = |a: &mut FrameKeys, b: &mut FrameKeys, now| {
        (0..3)
            .map(|_| {
                let f = a.seal(b"frame").expect("seal");
                b.open(&f, now).expect("opened").counter
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(counters(&mut a, &mut b, 0), [0, 1, 2]);
    advance(&mut a, 2, 2, 0, &[0, 1], 10);
    advance(&mut b, 2, 2, 1, &[0, 1], 10);
    // A new key, the same clock: receivers keep the sender's timing.
    assert_eq!(counters(&mut a, &mut b, 11), [3, 4, 5]);
}

//! STUN/TURN codec on arbitrary bytes: `Message::decode` and every accessor,
//! `verify_integrity`, `demux`, `frame_len`/`split_frames`, `ChannelData::decode`.
//!
//! Invariants beyond "no panic":
//! - a decoded message's attributes, re-encoded with `MessageBuilder`, decode to the same
//!   values (codec symmetry);
//! - a decoded ChannelData re-encodes (padded or not) and decodes to itself;
//! - `frame_len` never claims fewer bytes than a header, and `split_frames` consumes only
//!   whole frames that `demux` then accepts or rejects without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umbra_turn::credentials::rest;
use umbra_turn::{
    Attribute, ChannelData, Message, MessageBuilder, Packet, demux, frame_len, split_frames,
    userhash,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        exercise_message(&msg);
    }

    match demux(data) {
        Ok(Packet::Stun(m)) => assert_eq!(m.as_bytes(), data),
        Ok(Packet::ChannelData(cd)) => check_channel_data(cd),
        Err(_) => {}
    }

    if let Ok(cd) = ChannelData::decode(data) {
        check_channel_data(cd);
    }

    if let Ok(Some(n)) = frame_len(data) {
        assert!(n >= 4, "frame_len {n} shorter than any header");
    }
    if let Ok((frames, used)) = split_frames(data) {
        assert!(used <= data.len());
        let total: usize = frames.iter().map(|f| f.len()).sum();
        assert_eq!(total, used, "split_frames lost bytes");
        for f in frames {
            let _ = demux(f);
        }
    }

    // Credential helpers also see peer-supplied strings.
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = rest::check_username(s, 1_700_000_000);
        let _ = userhash(s, "umbra");
    }
});

fn exercise_message(msg: &Message<'_>) {
    let _ = msg.header();
    let _ = (msg.class(), msg.method(), msg.transaction_id());
    let _ = msg.unknown_comprehension_required();
    let _ = msg.username();
    let _ = msg.userhash();
    let _ = msg.realm();
    let _ = msg.nonce();
    let _ = msg.software();
    let _ = msg.error_code();
    let _ = msg.unknown_attributes();
    let _ = msg.mapped_address();
    let _ = msg.xor_mapped_address();
    let _ = msg.xor_relayed_address();
    let _ = msg.xor_peer_address();
    let _ = msg.xor_peer_addresses();
    let _ = msg.lifetime();
    let _ = msg.channel_number();
    let _ = msg.data();
    let _ = msg.requested_transport();
    let _ = msg.dont_fragment();
    let _ = msg.even_port();
    let _ = msg.reservation_token();
    let _ = msg.requested_address_family();
    let _ = msg.password_algorithms();
    let _ = msg.password_algorithm();
    let _ = msg.integrity_kind();
    let _ = msg.verify_integrity(b"");
    let _ = msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt");
    let _ = msg.verify_integrity(&[0x55; 16]);

    // Codec symmetry: what decodes must re-encode to the same values.
    let attrs: Vec<Attribute<'_>> = match msg.attributes().collect::<Result<_, _>>() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut b = MessageBuilder::new(msg.class(), msg.method(), msg.transaction_id());
    for a in &attrs {
        b = b.attr(a);
    }
    let Ok(bytes) = b.build() else {
        return;
    };
    let again = Message::decode(&bytes).expect("builder output must decode");
    assert_eq!(again.class(), msg.class());
    assert_eq!(again.method(), msg.method());
    assert_eq!(again.transaction_id(), msg.transaction_id());
    let attrs2: Vec<Attribute<'_>> = again
        .attributes()
        .collect::<Result<_, _>>()
        .expect("re-encoded attributes must decode");
    assert_eq!(attrs, attrs2, "attribute round trip changed values");
}

fn check_channel_data(cd: ChannelData<'_>) {
    for pad in [false, true] {
        let enc = cd.encode(pad).expect("decoded ChannelData must re-encode");
        assert_eq!(ChannelData::decode(&enc), Ok(cd));
        assert_eq!(frame_len(&enc).ok().flatten().map(|n| n >= enc.len()), Some(true));
    }
}

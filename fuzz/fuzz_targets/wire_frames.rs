//! Umbra's wire parsers on arbitrary bytes: `FrameBuffer` splitting a decrypted stream into
//! `ClientFrame`s (what the server parses) and `ServerFrame`s (what the client parses), fed
//! in fuzzer-chosen chunks with a fuzzer-chosen frame limit; and `Invite::parse`.
//!
//! Invariants beyond "no panic":
//! - a frame longer than the limit is refused before its body is buffered;
//! - every decoded frame re-encodes (`encode_frame`) and decodes to an equal value;
//! - `pending()` never exceeds the bytes fed;
//! - a parsed invite prints (`Display`) to a link that parses to the same invite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umbra_wire::frame::{FrameBuffer, encode_frame};
use umbra_wire::invite::Invite;
use umbra_wire::proto::{ClientFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    // Low bits pick the frame limit, high bits the chunk size.
    let max_frame = match ctl & 0x3 {
        0 => 16,
        1 => 256,
        2 => 64 * 1024,
        _ => usize::MAX,
    };
    let chunk = 1 + usize::from(ctl >> 2);

    frames::<ClientFrame>(rest, max_frame, chunk);
    frames::<ServerFrame>(rest, max_frame, chunk);

    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(invite) = Invite::parse(text) {
            let printed = invite.to_string();
            assert_eq!(Invite::parse(&printed).as_ref(), Ok(&invite), "invite round trip");
            let _ = invite.address();
        }
    }
});

fn frames<M>(bytes: &[u8], max_frame: usize, chunk: usize)
where
    M: prost::Message + Default + PartialEq + std::fmt::Debug,
{
    let mut buf = FrameBuffer::new(max_frame);
    let limit = max_frame.min(umbra_wire::MAX_FRAME_BYTES);
    let mut fed = 0usize;
    let mut taken = 0usize;
    'feed: for piece in bytes.chunks(chunk) {
        buf.extend(piece);
        fed += piece.len();
        assert!(buf.pending() <= fed - taken);
        loop {
            let before = buf.pending();
            match buf.next_frame::<M>() {
                Ok(Some(msg)) => {
                    let used = before - buf.pending();
                    assert!(used >= 4 && used - 4 <= limit, "frame over the limit accepted");
                    taken += used;
                    let mut enc = Vec::new();
                    encode_frame(&msg, &mut enc);
                    let mut again = FrameBuffer::new(usize::MAX);
                    again.extend(&enc);
                    let back = again
                        .next_frame::<M>()
                        .expect("re-encoded frame decodes")
                        .expect("re-encoded frame is whole");
                    assert_eq!(back, msg, "frame round trip");
                    assert_eq!(again.pending(), 0);
                }
                Ok(None) => break,
                // The connection would be closed here.
                Err(_) => break 'feed,
            }
        }
    }
}

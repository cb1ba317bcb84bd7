//! The proxy's admission check on arbitrary first bytes (`umbra_wire::proxy::peek`, which
//! every connection to a proxy goes through before anything else), and `ProxyLink::parse`.
//!
//! Invariants beyond "no panic":
//! - no forgery: whatever `peek` admits under the secret starts with exactly the preamble
//!   `preamble` makes from the time, nonce and target `peek` reports;
//! - a preamble made from fuzzer-chosen fields, followed by fuzzer bytes, is admitted with
//!   those fields under the right secret and refused under another; each of its proper
//!   prefixes asks for more bytes, so a short read never decides;
//! - a parsed link prints to a link that parses to the same link.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umbra_wire::proxy::{PREAMBLE_LEN, Peek, ProxyLink, Target, peek, preamble};

const SECRET: [u8; 32] = [0x5a; 32];
const OTHER: [u8; 32] = [0xa5; 32];

fuzz_target!(|data: &[u8]| {
    if let Peek::Valid(v) = peek(&SECRET, data) {
        let made = preamble(&SECRET, v.unix_time, v.nonce, v.target);
        assert_eq!(&data[..PREAMBLE_LEN], &made[..], "admitted bytes are a genuine preamble");
    }

    if data.len() >= 25 {
        let mut time = [0u8; 8];
        time.copy_from_slice(&data[..8]);
        let time = u64::from_be_bytes(time);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&data[8..24]);
        let target = if data[24] & 1 == 0 { Target::Messaging } else { Target::Relay };
        let made = preamble(&SECRET, time, nonce, target);
        let mut stream = made.to_vec();
        stream.extend_from_slice(&data[25..]);
        match peek(&SECRET, &stream) {
            Peek::Valid(v) => {
                assert_eq!((v.unix_time, v.nonce, v.target), (time, nonce, target));
            }
            other => panic!("a genuine preamble was not admitted: {other:?}"),
        }
        assert_eq!(peek(&OTHER, &stream), Peek::NotAdmitted, "wrong secret admitted");
        for n in 0..PREAMBLE_LEN {
            assert_eq!(peek(&SECRET, &made[..n]), Peek::NeedMore, "decided on {n} bytes");
        }
    }

    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(link) = ProxyLink::parse(text)
    {
        let printed = link.to_string();
        assert_eq!(ProxyLink::parse(&printed).ok().as_ref(), Some(&link), "link round trip");
        let _ = link.address();
    }
});

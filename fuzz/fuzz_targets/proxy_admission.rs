//! The proxy's admission check on arbitrary first bytes (`umbra_wire::proxy::peek`, which
//! every connection to a proxy goes through before anything else), and `ProxyLink::parse`.
//!
//! Invariants beyond "no panic":
//! - no forgery: whatever `peek` admits under the secret starts with exactly the preamble
//!   `preamble` makes from the time, nonce and target `peek` reports;
//! - a preamble made from fuzzer-chosen fields, followed by fuzzer bytes, is admitted with
//!   those fields under the right secret and refused under another; each of its proper
//!   prefixes asks for more bytes, so a short read never decides;
//! - a parsed link prints to a link that parses to the same link;
//! - the plain ports' upgrade (`umbra_wire::upgrade::peek`): whatever it admits carries in
//!   its request line exactly the token `request` makes from the time, nonce and target it
//!   reports; a request made from fuzzer-chosen fields (and host) is admitted with them,
//!   whole, under its secret only, and not while a part is missing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umbra_wire::proxy::{PREAMBLE_LEN, Peek, ProxyLink, Target, peek, preamble};
use umbra_wire::upgrade;

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

    if let upgrade::Peek::Valid { verified: v, head_len, .. } = upgrade::peek(&SECRET, data) {
        let head = std::str::from_utf8(&data[..head_len]).expect("an admitted head is text");
        let made = upgrade::request(&SECRET, "h", v.unix_time, v.nonce, v.target);
        let line = |r: &str| r.split("\r\n").next().map(str::to_string);
        assert_eq!(line(head), line(&made), "admitted: a genuine token for what it reports");
    }
    if data.len() >= 25 {
        let mut time = [0u8; 8];
        time.copy_from_slice(&data[..8]);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&data[8..24]);
        let target = if data[24] & 1 == 0 { Target::Messaging } else { Target::Relay };
        let host = String::from_utf8_lossy(&data[25..]).replace(['\r', '\n'], "");
        let made = upgrade::request(&SECRET, &host, u64::from_be_bytes(time), nonce, target);
        let bytes = made.as_bytes();
        if bytes.len() <= upgrade::MAX_HEAD {
            match upgrade::peek(&SECRET, bytes) {
                upgrade::Peek::Valid { verified: v, head_len, .. } => {
                    assert_eq!((v.unix_time, v.nonce, v.target), (u64::from_be_bytes(time), nonce, target));
                    assert_eq!(head_len, bytes.len());
                }
                other => panic!("a genuine upgrade was not admitted: {other:?}"),
            }
            assert_eq!(upgrade::peek(&OTHER, bytes), upgrade::Peek::NotAdmitted);
            for n in [0, bytes.len() / 2, bytes.len() - 1] {
                assert_eq!(upgrade::peek(&SECRET, &bytes[..n]), upgrade::Peek::NeedMore, "decided on {n} bytes");
            }
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

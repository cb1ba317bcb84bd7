//! Fronting mode's wire, without I/O: a TLS port that is, to everyone who
//! is not admitted, a real web site (`umbra proxy --front HOST:443`).
//!
//! A fronting proxy has no TLS of its own to show: every visitor's bytes,
//! from the first, go to the fronted site and back, so a prober gets that
//! site's handshake, certificate and pages. Admission therefore happens on
//! the client's first TLS record, before anything is answered:
//!
//! - The client makes an ordinary ClientHello (rustls's, for the fronted
//!   site's name) and overwrites its 32-byte random: the first 28 bytes are
//!   an HMAC of the secret over the target, the time and the whole record
//!   with the random zeroed, the last 4 the unix time XOR a pad (another
//!   HMAC of the record) ([`mark_hello`]); a censor who shifts the time of
//!   a captured hello breaks its tag. The HMAC covers the client's fresh key share and
//!   session id, so no two hellos share a random, and without the secret
//!   the random is as random as any.
//! - The proxy checks it on the whole first record ([`peek`]), with the
//!   time window and the replay cache of every port. A hello that fails —
//!   a browser's, a scanner's, a replayed one — is passed, byte for byte,
//!   to the fronted site, and so is everything after it.
//! - An admitted client gets a server flight shaped as the fronted site's
//!   ([`Template`], learned from the site): a ServerHello with the site's
//!   cipher suite and extensions, a change-cipher-spec, and application
//!   records of the sizes the site sends. Its random is an HMAC of the
//!   secret over the client's random, with the number of filler records
//!   folded into the last byte ([`server_random`]): the client checks it, so
//!   a censor who relays the client's hello to the real site cannot pass
//!   for the proxy. The client answers with a change-cipher-spec and one
//!   filler record the size of a Finished, as TLS 1.3 clients do.
//! - From then on both ways are TLS application-data records
//!   ([`Records`], [`app_data_header`]) whose payloads are the masked
//!   stream of a plain port (`crate::mask`).

use std::fmt;

use thiserror::Error;

use crate::mask::prf;
use crate::proxy::{Target, Verified};

/// A TLS record header's length.
pub const RECORD_HEADER: usize = 5;
/// The largest payload a record here carries (TLS's plaintext limit).
pub const MAX_PAYLOAD: usize = 16384;
/// A TLS 1.3 record may carry up to 256 bytes of expansion.
const MAX_RECORD_LEN: usize = MAX_PAYLOAD + 256;
/// Where the random starts in a ClientHello or ServerHello record: the
/// record header, the handshake type and length, the legacy version.
const RANDOM_AT: usize = RECORD_HEADER + 4 + 2;
const SESSION_ID_AT: usize = RANDOM_AT + 32;
/// The size of the filler that stands for a TLS 1.3 client's Finished
/// (SHA-256: 32-byte verify data, 4-byte header, content type, 16-byte tag).
pub const FINISHED_FILLER: usize = 53;

/// TLS content types.
pub const CHANGE_CIPHER_SPEC: u8 = 20;
/// An alert.
pub const ALERT: u8 = 21;
/// A handshake message.
pub const HANDSHAKE: u8 = 22;
/// Application data.
pub const APPLICATION_DATA: u8 = 23;

const LABEL_HELLO: &[u8] = b"umbra-proxy-v2 front hello";
const LABEL_SERVER: &[u8] = b"umbra-proxy-v2 front server";
const LABEL_PAD: &[u8] = b"umbra-proxy-v2 front time pad";

/// What can go wrong on a fronted connection.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrontError {
    /// The client's own ClientHello is not one record of the usual form.
    #[error("this device made a TLS hello the proxy's fronting cannot carry")]
    Hello,
    /// The answer is the fronted site's own handshake, not the proxy's.
    #[error(
        "the proxy answered as the site it fronts does, not as an Umbra proxy: its link has changed (ask for a new one) or this device's clock is more than two minutes off"
    )]
    TurnedAway,
    /// A record that TLS does not allow.
    #[error("the proxy's stream broke TLS record framing")]
    Framing,
    /// The other side closed the stream with a TLS alert.
    #[error("the proxy closed the stream")]
    Alert,
}

/// The tag over the hello (random zeroed), the time and the target.
fn hello_tag(secret: &[u8; 32], target: Target, time: [u8; 4], zeroed: &[u8]) -> [u8; 32] {
    let t = [match target {
        Target::Messaging => 0,
        Target::Relay => 1,
    }];
    prf(secret, &[LABEL_HELLO, &t, &time, zeroed])
}

/// The pad that hides the time.
fn time_pad(secret: &[u8; 32], zeroed: &[u8]) -> [u8; 32] {
    prf(secret, &[LABEL_PAD, zeroed])
}

/// The whole first record, if `record` holds one that could be a ClientHello.
fn client_hello(record: &[u8]) -> Option<usize> {
    if record.len() < RECORD_HEADER {
        return None;
    }
    let len = RECORD_HEADER + usize::from(u16::from_be_bytes([record[3], record[4]]));
    (record[0] == HANDSHAKE && len <= record.len() && len > SESSION_ID_AT && record[5] == 1)
        .then_some(len)
}

/// Marks a ClientHello record (the whole of it, as a TLS library wrote it)
/// as made with `secret` at `now_unix`, for `target`.
pub fn mark_hello(
    secret: &[u8; 32],
    record: &mut [u8],
    now_unix: u64,
    target: Target,
) -> Result<(), FrontError> {
    if client_hello(record) != Some(record.len()) {
        return Err(FrontError::Hello);
    }
    record[RANDOM_AT..SESSION_ID_AT].fill(0);
    let time = (now_unix as u32).to_be_bytes();
    let tag = hello_tag(secret, target, time, record);
    let pad = time_pad(secret, record);
    record[RANDOM_AT..RANDOM_AT + 28].copy_from_slice(&tag[..28]);
    for i in 0..4 {
        record[RANDOM_AT + 28 + i] = time[i] ^ pad[i];
    }
    Ok(())
}

/// What a fronting port's first bytes say.
#[derive(Clone, PartialEq, Eq)]
pub enum Peek {
    /// The first record is not complete.
    NeedMore,
    /// Not an admitted client's: pass everything to the fronted site.
    NotAdmitted,
    /// A marked hello.
    Valid {
        /// What the mark proved (the nonce: the first 16 bytes of the
        /// random, unique to the hello).
        verified: Verified,
        /// The hello record's length.
        record_len: usize,
        /// The client's random, which the server's answers.
        client_random: [u8; 32],
        /// The client's legacy session id, which the ServerHello echoes.
        session_id: Vec<u8>,
    },
}

impl fmt::Debug for Peek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peek::NeedMore => f.write_str("NeedMore"),
            Peek::NotAdmitted => f.write_str("NotAdmitted"),
            Peek::Valid { verified, .. } => write!(f, "Valid({:?})", verified.target),
        }
    }
}

/// Examines a fronting port's first bytes (constant time in the mark).
pub fn peek(secret: &[u8; 32], first: &[u8]) -> Peek {
    match first.first() {
        None => return Peek::NeedMore,
        Some(&b) if b != HANDSHAKE => return Peek::NotAdmitted,
        Some(_) => {}
    }
    if first.len() < RECORD_HEADER {
        return Peek::NeedMore;
    }
    let len = RECORD_HEADER + usize::from(u16::from_be_bytes([first[3], first[4]]));
    if len > RECORD_HEADER + MAX_RECORD_LEN {
        return Peek::NotAdmitted;
    }
    if first.len() < len {
        return Peek::NeedMore;
    }
    if client_hello(&first[..len]) != Some(len) {
        return Peek::NotAdmitted;
    }
    let record = &first[..len];
    let mut zeroed = record.to_vec();
    zeroed[RANDOM_AT..SESSION_ID_AT].fill(0);
    let pad = time_pad(secret, &zeroed);
    let mut time = [0u8; 4];
    for (i, t) in time.iter_mut().enumerate() {
        *t = record[RANDOM_AT + 28 + i] ^ pad[i];
    }
    let mut found = None;
    for target in [Target::Messaging, Target::Relay] {
        let tag = hello_tag(secret, target, time, &zeroed);
        let ok = subtle::ConstantTimeEq::ct_eq(&tag[..28], &record[RANDOM_AT..RANDOM_AT + 28]);
        if bool::from(ok) {
            found = Some(target);
        }
    }
    let Some(target) = found else {
        return Peek::NotAdmitted;
    };
    let sid_len = usize::from(record[SESSION_ID_AT]);
    let Some(session_id) = record.get(SESSION_ID_AT + 1..SESSION_ID_AT + 1 + sid_len) else {
        return Peek::NotAdmitted;
    };
    if sid_len > 32 {
        return Peek::NotAdmitted;
    }
    let mut client_random = [0u8; 32];
    client_random.copy_from_slice(&record[RANDOM_AT..SESSION_ID_AT]);
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&client_random[..16]);
    Peek::Valid {
        verified: Verified {
            unix_time: u64::from(u32::from_be_bytes(time)),
            nonce,
            target,
        },
        record_len: len,
        client_random,
        session_id: session_id.to_vec(),
    }
}

/// The server random that proves the proxy to the client whose random is
/// `client_random`, announcing `fillers` filler records after it.
pub fn server_random(secret: &[u8; 32], client_random: &[u8; 32], fillers: u8) -> [u8; 32] {
    let mut r = prf(secret, &[LABEL_SERVER, client_random]);
    r[31] ^= fillers;
    r
}

/// A record header for `len` bytes of application data.
pub fn app_data_header(len: usize) -> [u8; RECORD_HEADER] {
    let l = (len as u16).to_be_bytes();
    [APPLICATION_DATA, 3, 3, l[0], l[1]]
}

/// The record a TLS 1.3 peer sends for compatibility before its encrypted
/// records.
pub const CCS_RECORD: [u8; 6] = [CHANGE_CIPHER_SPEC, 3, 3, 0, 1, 1];

/// The shape of the fronted site's server flight, learned from it: its
/// ServerHello, and the sizes of the application records that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The ServerHello's bytes after the session id (cipher suite,
    /// compression, extensions).
    tail: Vec<u8>,
    /// Where in `tail` the key share's 32 bytes are, if it has one.
    key_at: Option<usize>,
    /// Whether the site sends a change-cipher-spec.
    ccs: bool,
    /// Sizes of the application records of its first flight.
    fillers: Vec<u16>,
}

impl Default for Template {
    /// What a common TLS 1.3 server sends when the site cannot be asked:
    /// TLS_AES_256_GCM_SHA384, an X25519 key share, TLS 1.3, and about 4 KB
    /// of encrypted extensions, certificate, verify and finished.
    fn default() -> Self {
        let mut tail = vec![0x13, 0x02, 0x00, 0x00, 0x2e];
        tail.extend_from_slice(&[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
        tail.extend_from_slice(&[0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
        let key_at = tail.len();
        tail.extend_from_slice(&[0; 32]);
        Self {
            tail,
            key_at: Some(key_at),
            ccs: true,
            fillers: vec![4096],
        }
    }
}

impl Template {
    /// Learns the shape from the records a site sent in answer to a hello:
    /// `None` if they do not start with a TLS 1.3-style ServerHello.
    pub fn learn(flight: &[u8]) -> Option<Self> {
        let mut records = Records::default();
        records.feed(flight);
        let mut payload = Vec::new();
        let (HANDSHAKE, hello) = (records.next_record(&mut payload).ok()??, payload.clone()) else {
            return None;
        };
        // type 2, length 3, version 2, random 32, session id.
        if hello.first() != Some(&2) || hello.len() < 39 {
            return None;
        }
        let sid_len = usize::from(hello[38]);
        let tail = hello.get(39 + sid_len..)?.to_vec();
        // A key share this proxy cannot renew on every flight would be the
        // same on all of them, which no real server's is: such a site's
        // shape is not taken.
        let key_at = Some(key_share_at(&tail)?);
        let (mut ccs, mut fillers) = (false, Vec::new());
        loop {
            payload.clear();
            match records.next_record(&mut payload) {
                Ok(Some(CHANGE_CIPHER_SPEC)) => ccs = true,
                Ok(Some(APPLICATION_DATA)) => fillers.push(payload.len() as u16),
                _ => break,
            }
        }
        if fillers.is_empty() || fillers.len() > usize::from(u8::MAX) {
            return None;
        }
        Some(Self {
            tail,
            key_at,
            ccs,
            fillers,
        })
    }

    /// The flight for an admitted client: the ServerHello (echoing its
    /// session id, with `key` as the key share), the change-cipher-spec,
    /// then fillers of `random` bytes (cut to size).
    pub fn flight(
        &self,
        secret: &[u8; 32],
        client_random: &[u8; 32],
        session_id: &[u8],
        key: &[u8; 32],
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Vec<u8> {
        let mut tail = self.tail.clone();
        if let Some(at) = self.key_at {
            tail[at..at + 32].copy_from_slice(key);
        }
        let body_len = 2 + 32 + 1 + session_id.len() + tail.len();
        let mut out = Vec::with_capacity(64 + body_len + 4096);
        out.extend_from_slice(&[HANDSHAKE, 3, 3]);
        out.extend_from_slice(&((body_len + 4) as u16).to_be_bytes());
        out.push(2);
        out.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[3, 3]);
        let fillers = self.fillers.len() as u8;
        out.extend_from_slice(&server_random(secret, client_random, fillers));
        out.push(session_id.len() as u8);
        out.extend_from_slice(session_id);
        out.extend_from_slice(&tail);
        if self.ccs {
            out.extend_from_slice(&CCS_RECORD);
        }
        for &len in &self.fillers {
            let len = usize::from(len);
            out.extend_from_slice(&app_data_header(len));
            let at = out.len();
            out.resize(at + len, 0);
            random(&mut out[at..]);
        }
        out
    }
}

/// Finds the 32-byte X25519 key of a key_share extension in a ServerHello
/// tail (cipher suite, compression, extensions).
fn key_share_at(tail: &[u8]) -> Option<usize> {
    let ext_len = usize::from(u16::from_be_bytes([*tail.get(3)?, *tail.get(4)?]));
    let mut at = 5;
    let end = (5 + ext_len).min(tail.len());
    while at + 4 <= end {
        let kind = u16::from_be_bytes([tail[at], tail[at + 1]]);
        let len = usize::from(u16::from_be_bytes([tail[at + 2], tail[at + 3]]));
        // key_share: group (x25519 = 0x001d), key length 32, key.
        if kind == 0x0033
            && len == 36
            && at + 8 + 32 <= tail.len()
            && tail.get(at + 4..at + 8) == Some(&[0x00, 0x1d, 0x00, 0x20])
        {
            return Some(at + 8);
        }
        at += 4 + len;
    }
    None
}

/// Reads the proxy's flight in answer to the hello whose random was
/// `client_random`: `Ok(None)` while incomplete, `Ok(Some(n))` once the
/// ServerHello, the change-cipher-spec and every filler it announced are in
/// (`n` bytes; what follows is the stream).
pub fn read_flight(
    secret: &[u8; 32],
    client_random: &[u8; 32],
    bytes: &[u8],
) -> Result<Option<usize>, FrontError> {
    let mut records = Records::default();
    records.feed(bytes);
    let mut payload = Vec::new();
    match records.next_record(&mut payload) {
        Ok(Some(HANDSHAKE)) if payload.first() == Some(&2) && payload.len() >= 38 => {}
        Ok(None) => return Ok(None),
        _ => return Err(FrontError::TurnedAway),
    }
    let expected = server_random(secret, client_random, 0);
    let got = &payload[6..38];
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..31], &got[..31])) {
        return Err(FrontError::TurnedAway);
    }
    let fillers = usize::from(got[31] ^ expected[31]);
    let mut seen = 0;
    while seen < fillers {
        payload.clear();
        match records.next_record(&mut payload)? {
            None => return Ok(None),
            Some(CHANGE_CIPHER_SPEC) => {}
            Some(APPLICATION_DATA) => seen += 1,
            Some(_) => return Err(FrontError::Framing),
        }
    }
    Ok(Some(records.consumed))
}

/// Splits a byte stream into TLS records.
#[derive(Debug, Default)]
pub struct Records {
    buf: Vec<u8>,
    at: usize,
    /// Bytes of whole records taken so far.
    pub consumed: usize,
}

impl Records {
    /// Takes bytes as they came off the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Appends the next whole record's payload to `out` and returns its
    /// content type; `Ok(None)` until one is whole.
    pub fn next_record(&mut self, out: &mut Vec<u8>) -> Result<Option<u8>, FrontError> {
        let rest = &self.buf[self.at..];
        if rest.len() < RECORD_HEADER {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest[1] != 3
            || len > MAX_RECORD_LEN
            || !(CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&rest[0])
        {
            return Err(FrontError::Framing);
        }
        let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            return Ok(None);
        };
        let kind = rest[0];
        out.extend_from_slice(payload);
        self.at += RECORD_HEADER + len;
        self.consumed += RECORD_HEADER + len;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 64 * 1024 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        Ok(Some(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record of the usual form (its contents do not matter
    /// here beyond the header, the random and the session id).
    fn hello(sid: u8) -> Vec<u8> {
        let mut body = vec![1, 0, 0, 0, 3, 3];
        body.extend_from_slice(&[0xEE; 32]);
        body.push(32);
        body.extend_from_slice(&[sid; 32]);
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00, 0x00, 0x00]);
        let n = body.len() - 4;
        body[1..4].copy_from_slice(&(n as u32).to_be_bytes()[1..]);
        let mut r = vec![HANDSHAKE, 3, 1];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(&body);
        r
    }

    #[test]
    fn a_marked_hello_is_admitted_with_its_fields_only_whole_and_only_with_the_secret() {
        let s = [4; 32];
        let mut h = hello(7);
        mark_hello(&s, &mut h, 1_800_000_000, Target::Relay).expect("mark");
        match peek(&s, &h) {
            Peek::Valid {
                verified,
                record_len,
                session_id,
                ..
            } => {
                assert_eq!(verified.unix_time, 1_800_000_000);
                assert_eq!(verified.target, Target::Relay);
                assert_eq!(record_len, h.len());
                assert_eq!(session_id, vec![7; 32]);
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..h.len() {
            assert_eq!(peek(&s, &h[..cut]), Peek::NeedMore, "cut {cut}");
        }
        assert_eq!(peek(&[5; 32], &h), Peek::NotAdmitted);
        // Any changed byte of the hello (key share, session id, random) fails.
        for i in RECORD_HEADER..h.len() {
            let mut bad = h.clone();
            bad[i] ^= 1;
            assert!(!matches!(peek(&s, &bad), Peek::Valid { .. }), "byte {i}");
        }
        // An unmarked hello, and what is not a hello, are not admitted.
        assert_eq!(peek(&s, &hello(7)), Peek::NotAdmitted);
        assert_eq!(peek(&s, b"GET / HTTP/1.1\r\n\r\n"), Peek::NotAdmitted);
    }

    #[test]
    fn the_flight_proves_the_proxy_and_is_read_whole() {
        let s = [4; 32];
        let client_random = [9; 32];
        let t = Template::default();
        let flight = t.flight(&s, &client_random, &[7; 32], &[1; 32], &mut |b| {
            b.fill(0x55)
        });
        let mut with_stream = flight.clone();
        with_stream.extend_from_slice(&app_data_header(3));
        with_stream.extend_from_slice(b"abc");
        assert_eq!(
            read_flight(&s, &client_random, &with_stream),
            Ok(Some(flight.len()))
        );
        for cut in [0, 10, flight.len() - 1] {
            assert_eq!(read_flight(&s, &client_random, &flight[..cut]), Ok(None));
        }
        assert_eq!(
            read_flight(&[5; 32], &client_random, &flight),
            Err(FrontError::TurnedAway)
        );
        assert_eq!(
            read_flight(&s, &[8; 32], &flight),
            Err(FrontError::TurnedAway)
        );
        // A ServerHello cut short inside its key share is no template (and
        // no panic); nor is one whose key share is not X25519's.
        let hello_len = RECORD_HEADER + usize::from(u16::from_be_bytes([flight[3], flight[4]]));
        let mut short = flight[..hello_len - 16].to_vec();
        let body = (short.len() - RECORD_HEADER) as u16;
        short[3..5].copy_from_slice(&body.to_be_bytes());
        short.extend_from_slice(&flight[hello_len..]);
        assert_eq!(Template::learn(&short), None);
        let mut other_group = flight.clone();
        let at = other_group
            .windows(4)
            .position(|w| w == [0x00, 0x1d, 0x00, 0x20])
            .expect("key share");
        other_group[at + 1] = 0x17;
        assert_eq!(Template::learn(&other_group), None);
        // The template learned from a flight makes the same shape again.
        let learned = Template::learn(&flight).expect("learn");
        assert_eq!(learned.fillers, t.fillers);
        assert_eq!(learned.key_at, t.key_at);
        assert!(learned.ccs);
    }

    #[test]
    fn records_split_in_any_chunks_and_bad_framing_is_refused() {
        let mut stream = Vec::new();
        for p in [&b"one"[..], b"", b"three"] {
            stream.extend_from_slice(&app_data_header(p.len()));
            stream.extend_from_slice(p);
        }
        let mut r = Records::default();
        let mut out = Vec::new();
        let mut kinds = 0;
        for b in stream.chunks(2) {
            r.feed(b);
            while let Some(k) = r.next_record(&mut out).expect("record") {
                assert_eq!(k, APPLICATION_DATA);
                kinds += 1;
            }
        }
        assert_eq!((kinds, out.as_slice()), (3, &b"onethree"[..]));
        let mut r = Records::default();
        r.feed(&[0x17, 0x03, 0x03, 0xFF, 0xFF]);
        assert_eq!(r.next_record(&mut out), Err(FrontError::Framing));
        let mut r = Records::default();
        r.feed(b"GET / ");
        assert_eq!(r.next_record(&mut out), Err(FrontError::Framing));
    }
}

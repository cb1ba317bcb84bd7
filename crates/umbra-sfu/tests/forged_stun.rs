//! What an on-path attacker can do with what it sees of ICE: a member's
//! checks carry the unit's ICE username in clear, so an attacker can send
//! a check under it from an address of its own. Without the connection's
//! ICE password the check teaches the unit nothing: the attacker's address
//! is not taken for the member's, and what it sends next goes nowhere,
//! while the member's own checks connect it as before. A check the member
//! did sign, replayed from elsewhere, claims no address either (the unit
//! remembers the checks it has seen). Sans-IO: time and datagrams passed in
//! by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use umbra_call::Engine;
use umbra_sfu::{JoinRequest, Limits, RoomId, Sfu, SfuConfig};
use umbra_turn::credentials::rest;
use umbra_turn::{Attribute, Class, MessageBuilder, Method, TransactionId};

#[test]
fn a_check_without_the_connections_password_claims_no_address() {
    let secret = b"forged-stun-test-secret-0123456789".to_vec();
    let public: SocketAddr = "127.0.0.1:3479".parse().expect("addr");
    let member: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let attacker: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
    let mut now = Instant::now();
    let mut sfu = Sfu::new(SfuConfig {
        public,
        secret: secret.clone(),
        limits: Limits::default(),
    });
    let mut engine = Engine::toward_unit(public, member, now).expect("engine");
    let offer = engine.create_offer(now).expect("offer");
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (username, password) = rest::credentials(&secret, unix + 600, "member");
    let joined = sfu
        .join(
            now,
            unix,
            &JoinRequest {
                room: RoomId([7; 16]),
                username: &username,
                password: &password,
                offer: &offer,
            },
        )
        .expect("joined");
    let ufrag = joined
        .answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("the answer's ufrag")
        .trim()
        .to_owned();
    engine.accept_answer(now, &joined.answer).expect("answer");

    // The attacker's check: the right username, a guessed password.
    let user = format!("{ufrag}:abcd");
    let forged = MessageBuilder::new(Class::Request, Method::BINDING, TransactionId([9; 12]))
        .attr(&Attribute::Username(&user))
        .message_integrity(b"a guess")
        .fingerprint()
        .build()
        .expect("forged check");
    sfu.handle_datagram(now, attacker, &forged);
    assert_eq!(sfu.stats().unknown_source, 1, "the forged check was taken");
    assert!(
        sfu.poll_transmit().is_none(),
        "the unit answered the forgery"
    );
    // What it sends next, as if it were the member, goes nowhere.
    let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    rtp.extend_from_slice(&[0; 40]);
    sfu.handle_datagram(now, attacker, &rtp);
    assert_eq!(sfu.stats().unknown_source, 2);

    // The member's own checks connect it.
    let mut signed = Vec::new();
    for _ in 0..300 {
        while let Some(d) = engine.poll_transmit() {
            assert_eq!(d.to, public, "the member sent somewhere else");
            if d.data.first().is_some_and(|&b| b < 2) {
                signed.push(d.data.clone());
            }
            sfu.handle_datagram(now, member, &d.data);
        }
        while let Some(d) = sfu.poll_transmit() {
            assert_ne!(d.to, attacker, "the unit sent to the attacker");
            if d.to == member {
                engine.handle_datagram(now, public, &d.data);
            }
        }
        if engine.is_connected() {
            break;
        }
        now += Duration::from_millis(10);
        engine.handle_timeout(now);
        sfu.handle_timeout(now);
    }
    assert!(engine.is_connected(), "the member never connected");
    assert_eq!(
        sfu.stats().unknown_source,
        2,
        "the member's checks were refused"
    );

    // Every check the member signed, replayed from five other addresses:
    // none teaches the unit an address, none is answered there, and the
    // member's own addresses stay as they were.
    assert!(!signed.is_empty(), "no check seen");
    let replayers: Vec<SocketAddr> = (0..5)
        .map(|i| format!("127.0.0.1:{}", 41000 + i).parse().expect("addr"))
        .collect();
    let before = sfu.stats().unknown_source;
    for (i, a) in replayers.iter().enumerate() {
        for check in &signed {
            sfu.handle_datagram(now, *a, check);
        }
        assert_eq!(
            sfu.stats().unknown_source,
            before + ((i + 1) * signed.len()) as u64,
            "a replayed check was taken"
        );
        while let Some(d) = sfu.poll_transmit() {
            assert!(!replayers.contains(&d.to), "the unit answered a replay");
        }
    }
    for _ in 0..50 {
        now += Duration::from_millis(20);
        engine.handle_timeout(now);
        sfu.handle_timeout(now);
        while let Some(d) = engine.poll_transmit() {
            sfu.handle_datagram(now, member, &d.data);
        }
        while let Some(d) = sfu.poll_transmit() {
            assert!(!replayers.contains(&d.to), "the unit sent to a replayer");
            if d.to == member {
                engine.handle_datagram(now, public, &d.data);
            }
        }
    }
    assert!(engine.is_connected(), "the member lost its connection");
}

//! Post-quantum groups (X-Wing) beside classical ones: a group's suite is
//! its creator's choice, every member's key package must be of it, a device
//! says in its (signed) leaf that it could join a post-quantum group, and a
//! Welcome or key package of a suite this version does not know is refused
//! by name, not as a decoding error.

mod common;

use common::{Person, person};
use openmls::prelude::Ciphersuite;
use umbra_crypto::CryptoError;
use umbra_crypto::mls::{self, Incoming, Processed};

fn package(p: &Person, suite: Ciphersuite) -> Vec<u8> {
    mls::new_key_package(&p.provider, &p.id, suite, false, None).expect("kp")
}

#[test]
fn a_post_quantum_group_talks_and_refuses_a_classical_package() {
    let (alice, bob, carol) = (person("alice"), person("bob"), person("carol"));
    let bob_kp = mls::verify_key_package(&alice.provider, &package(&bob, mls::POST_QUANTUM))
        .expect("verify");
    assert_eq!(bob_kp.suite, mls::POST_QUANTUM);
    assert!(bob_kp.supports_post_quantum);
    let mut ga =
        mls::create_group(&alice.provider, &alice.id, mls::POST_QUANTUM, None).expect("create");
    assert_eq!(mls::group_suite(&ga), mls::POST_QUANTUM);
    let c = mls::add_members(&alice.provider, &alice.id, &mut ga, &[bob_kp]).expect("add");
    let welcome = c.welcome.expect("welcome");
    let Incoming::Welcome(w) = mls::parse(&welcome).expect("parse") else {
        panic!("not a welcome")
    };
    let (mut gb, from) = mls::join(&bob.provider, *w).expect("join");
    assert_eq!(from.username, "alice");
    assert_eq!(mls::group_suite(&gb), mls::POST_QUANTUM);
    let ct = mls::encrypt(
        &alice.provider,
        &alice.id,
        &mut ga,
        b"after the quantum computer",
    )
    .expect("encrypt");
    let Incoming::Group { epoch, message, .. } = mls::parse(&ct).expect("parse") else {
        panic!("not a group message")
    };
    match mls::process(&bob.provider, &mut gb, epoch, *message).expect("process") {
        Processed::Application { data, .. } => assert_eq!(data, b"after the quantum computer"),
        other => panic!("{other:?}"),
    }
    // Carol's classical package cannot join it: MLS fixes a group's suite.
    let carol_kp =
        mls::verify_key_package(&alice.provider, &package(&carol, mls::CLASSICAL)).expect("verify");
    assert_eq!(carol_kp.suite, mls::CLASSICAL);
    assert!(
        carol_kp.supports_post_quantum,
        "this version's leaves say they support both suites"
    );
    assert!(mls::add_members(&alice.provider, &alice.id, &mut ga, &[carol_kp]).is_err());
}

#[test]
fn a_suite_this_version_does_not_know_is_named() {
    let (alice, bob) = (person("alice"), person("bob"));
    // A key package whose suite field says 0x7777 (a newer client's).
    let mut kp = package(&bob, mls::CLASSICAL);
    kp[2..4].copy_from_slice(&0x7777u16.to_be_bytes());
    let e = mls::verify_key_package(&alice.provider, &kp).expect_err("refused");
    assert!(matches!(e, CryptoError::UnsupportedSuite(0x7777)), "{e:?}");
    assert!(e.to_string().contains("update Umbra"), "{e}");
    // A Welcome of that suite: named before openmls would try to parse it.
    let bob_kp =
        mls::verify_key_package(&alice.provider, &package(&bob, mls::CLASSICAL)).expect("verify");
    let mut g = mls::create_group(&alice.provider, &alice.id, mls::CLASSICAL, None).expect("group");
    let c = mls::add_members(&alice.provider, &alice.id, &mut g, &[bob_kp]).expect("add");
    let mut welcome = c.welcome.expect("welcome");
    assert_eq!(
        &welcome[4..6],
        &0x0003u16.to_be_bytes(),
        "the suite's place"
    );
    welcome[4..6].copy_from_slice(&0x7777u16.to_be_bytes());
    assert!(matches!(
        mls::parse(&welcome),
        Err(CryptoError::UnsupportedSuite(0x7777))
    ));
    assert_eq!(mls::suite_code(mls::POST_QUANTUM), 0x004F);
    assert_eq!(mls::suite_code(mls::CLASSICAL), 0x0003);
}

//! MLS conversations between in-memory members: 1:1, groups, removal, epochs.

mod common;

use common::{Person, person};
use umbra_crypto::mls::{self, Incoming, Processed};

fn kp(p: &Person) -> mls::VerifiedKeyPackage {
    let bytes = mls::new_key_package(&p.provider, &p.id, mls::CLASSICAL, false, None).expect("kp");
    mls::verify_key_package(&p.provider, &bytes).expect("verify")
}

fn join(p: &Person, welcome: &[u8]) -> openmls::prelude::MlsGroup {
    match mls::parse(welcome).expect("parse") {
        Incoming::Welcome(w) => mls::join(&p.provider, *w).expect("join").0,
        other => panic!("expected welcome, got {other:?}"),
    }
}

fn receive(
    p: &Person,
    g: &mut openmls::prelude::MlsGroup,
    bytes: &[u8],
) -> Result<Processed, umbra_crypto::CryptoError> {
    match mls::parse(bytes)? {
        Incoming::Group { epoch, message, .. } => mls::process(&p.provider, g, epoch, *message),
        Incoming::Welcome(_) => panic!("unexpected welcome"),
    }
}

#[test]
fn one_to_one_and_group_lifecycle() {
    let alice = person("alice");
    let bob = person("bob");
    let carol = person("carol");

    let bob_kp = kp(&bob);
    assert_eq!(bob_kp.member.username, "bob");
    assert_eq!(bob_kp.member.identity_key, bob.id.identity_key());

    let mut ga =
        mls::create_group(&alice.provider, &alice.id, mls::CLASSICAL, None).expect("create");
    let c = mls::add_members(&alice.provider, &alice.id, &mut ga, &[bob_kp]).expect("add");
    let mut gb = join(&bob, c.welcome.as_deref().expect("welcome"));
    assert_eq!(mls::epoch(&ga), mls::epoch(&gb));

    let ct = mls::encrypt(&alice.provider, &alice.id, &mut ga, b"hi bob").expect("enc");
    assert!(!ct.windows(6).any(|w| w == b"hi bob"));
    assert!(
        !ct.windows(5).any(|w| w == b"alice"),
        "sender name must not be visible"
    );
    match receive(&bob, &mut gb, &ct).expect("process") {
        Processed::Application { sender, data } => {
            assert_eq!(sender.username, "alice");
            assert_eq!(sender.identity_key, alice.id.identity_key());
            assert_eq!(data, b"hi bob");
        }
        other => panic!("{other:?}"),
    }

    // Add carol; bob processes the commit; all converge.
    let c2 =
        mls::add_members(&alice.provider, &alice.id, &mut ga, &[kp(&carol)]).expect("add carol");
    let mut gc = join(&carol, c2.welcome.as_deref().expect("welcome"));
    match receive(&bob, &mut gb, &c2.commit).expect("commit") {
        Processed::Commit { added, .. } => assert_eq!(added[0].username, "carol"),
        other => panic!("{other:?}"),
    }
    assert_eq!(mls::epoch(&ga), mls::epoch(&gb));
    assert_eq!(mls::epoch(&ga), mls::epoch(&gc));
    assert_eq!(mls::members(&gc).len(), 3);

    // A message sent just before a commit is still readable after it.
    let in_flight = mls::encrypt(
        &carol.provider,
        &carol.id,
        &mut gc,
        b"sent before the commit",
    )
    .expect("enc");
    let c_upd = mls::add_members(&alice.provider, &alice.id, &mut ga, &[kp(&person("dave"))])
        .expect("add dave");
    match receive(&alice, &mut ga, &in_flight).expect("past epoch, sender still a member") {
        Processed::Application { data, .. } => assert_eq!(data, b"sent before the commit"),
        other => panic!("{other:?}"),
    }
    receive(&bob, &mut gb, &in_flight).expect("bob reads it in its epoch");
    receive(&bob, &mut gb, &c_upd.commit).expect("bob commit");
    receive(&carol, &mut gc, &c_upd.commit).expect("carol commit");

    // Remove bob. He learns it; he cannot read what follows, and what he
    // sends from his old epoch is rejected.
    let stale = mls::encrypt(&bob.provider, &bob.id, &mut gb, b"still here?").expect("enc");
    let c3 = mls::remove_members(&alice.provider, &alice.id, &mut ga, &["bob"]).expect("remove");
    match receive(&carol, &mut gc, &c3.commit).expect("commit") {
        Processed::Commit { removed, .. } => assert_eq!(
            removed
                .iter()
                .map(|m| m.username.as_str())
                .collect::<Vec<_>>(),
            vec!["bob"]
        ),
        other => panic!("{other:?}"),
    }
    match receive(&bob, &mut gb, &c3.commit).expect("commit") {
        Processed::Commit {
            we_were_removed, ..
        } => assert!(we_were_removed),
        other => panic!("{other:?}"),
    }
    let secret = mls::encrypt(&alice.provider, &alice.id, &mut ga, b"after bob").expect("enc");
    assert!(receive(&bob, &mut gb, &secret).is_err());
    assert!(matches!(
        receive(&carol, &mut gc, &stale),
        Err(umbra_crypto::CryptoError::WrongEpoch)
    ));
    match receive(&carol, &mut gc, &secret).expect("carol reads") {
        Processed::Application { data, .. } => assert_eq!(data, b"after bob"),
        other => panic!("{other:?}"),
    }
    // Replaying a message already processed fails.
    assert!(receive(&carol, &mut gc, &secret).is_err());
}

#[test]
fn last_resort_key_package_joins_and_can_be_reused() {
    let alice = person("alice");
    let carol = person("carol");
    let bob = person("bob");
    let bytes = mls::new_key_package(&bob.provider, &bob.id, mls::CLASSICAL, true, None)
        .expect("last resort");
    for creator in [&alice, &carol] {
        let kp = mls::verify_key_package(&creator.provider, &bytes).expect("verifies");
        let mut g = mls::create_group(&creator.provider, &creator.id, mls::CLASSICAL, None)
            .expect("create");
        let c = mls::add_members(&creator.provider, &creator.id, &mut g, &[kp]).expect("add");
        let mut gb = join(&bob, c.welcome.as_deref().expect("welcome"));
        let ct = mls::encrypt(&creator.provider, &creator.id, &mut g, b"hi").expect("enc");
        assert!(matches!(
            receive(&bob, &mut gb, &ct),
            Ok(Processed::Application { .. })
        ));
    }
}

#[test]
fn tampered_key_package_is_refused() {
    let bob = person("bob");
    let mut bytes =
        mls::new_key_package(&bob.provider, &bob.id, mls::CLASSICAL, true, None).expect("kp");
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    assert!(mls::verify_key_package(&bob.provider, &bytes).is_err());
    assert!(mls::parse(b"garbage").is_err());
}

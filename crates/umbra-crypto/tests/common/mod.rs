//! What the MLS tests share: a person with an identity and an in-memory
//! openmls provider.

use openmls_rust_crypto::OpenMlsRustCrypto;
use umbra_crypto::Identity;

pub struct Person {
    pub id: Identity,
    pub provider: OpenMlsRustCrypto,
}

pub fn person(name: &str) -> Person {
    Person {
        id: Identity::generate(name).expect("identity"),
        provider: OpenMlsRustCrypto::default(),
    }
}

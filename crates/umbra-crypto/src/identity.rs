//! A device's long-term keys.
//!
//! The Ed25519 identity key signs the device's MLS credential (so group
//! members can check who wrote a message) and its logins to the server. The
//! X25519 sealing key receives sealed envelopes. Both are generated on the
//! device and only their public halves leave it.

use openmls::prelude::{BasicCredential, CredentialWithKey, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::signatures::Signer;
use rand::rngs::OsRng;
use tls_codec::{Deserialize as _, Serialize as _};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::CryptoError;

/// The keys of one device, with the username it belongs to.
pub struct Identity {
    username: String,
    signer: SignatureKeyPair,
    sealing: StaticSecret,
    /// What the account key says of this device (an encoded
    /// `CertifiedDevice`), carried in every leaf of the device.
    certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// The secret halves, for the device's own storage.
pub struct IdentitySecrets {
    /// The Ed25519 key pair, TLS-serialized.
    pub identity_keypair: Vec<u8>,
    /// X25519 private key (32 bytes).
    pub sealing_private: [u8; 32],
}

impl Identity {
    /// Fresh keys for `username`.
    pub fn generate(username: &str) -> Result<Self, CryptoError> {
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519)
            .map_err(|e| CryptoError::Group(format!("key generation failed: {e:?}")))?;
        Ok(Self {
            username: username.to_string(),
            signer,
            sealing: StaticSecret::random_from_rng(OsRng),
            certificate: None,
        })
    }

    /// Rebuilds an identity from stored secrets.
    pub fn from_secrets(username: &str, secrets: &IdentitySecrets) -> Result<Self, CryptoError> {
        let signer = SignatureKeyPair::tls_deserialize_exact(&secrets.identity_keypair)
            .map_err(|_| CryptoError::InvalidKey)?;
        if signer.signature_scheme() != SignatureScheme::ED25519 || signer.public().len() != 32 {
            return Err(CryptoError::InvalidKey);
        }
        Ok(Self {
            username: username.to_string(),
            signer,
            sealing: StaticSecret::from(secrets.sealing_private),
            certificate: None,
        })
    }

    /// The secret halves, to store on the device.
    pub fn secrets(&self) -> Result<IdentitySecrets, CryptoError> {
        Ok(IdentitySecrets {
            identity_keypair: self
                .signer
                .tls_serialize_detached()
                .map_err(|_| CryptoError::InvalidKey)?,
            sealing_private: self.sealing.to_bytes(),
        })
    }

    /// Gives the device the certificate its account key signed for it.
    pub fn set_certificate(&mut self, certificate: Vec<u8>) {
        self.certificate = Some(certificate);
    }

    /// The device's certificate, once it has one.
    pub fn certificate(&self) -> Option<&[u8]> {
        self.certificate.as_deref()
    }

    /// The account name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Ed25519 public identity key.
    pub fn identity_key(&self) -> Vec<u8> {
        self.signer.public().to_vec()
    }

    /// X25519 public sealing key.
    pub fn sealing_key(&self) -> [u8; 32] {
        PublicKey::from(&self.sealing).to_bytes()
    }

    /// The secret that opens envelopes sealed to this device.
    pub fn sealing_secret(&self) -> &StaticSecret {
        &self.sealing
    }

    /// Signs `message` with the identity key (plain Ed25519).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.signer
            .sign(message)
            .map_err(|e| CryptoError::Group(format!("signing failed: {e:?}")))
    }

    /// The MLS signer.
    pub fn signer(&self) -> &SignatureKeyPair {
        &self.signer
    }

    /// The MLS credential: the username, bound to the identity key.
    pub fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.username.as_bytes().to_vec()).into(),
            signature_key: self.signer.public().into(),
        }
    }
}

/// An account's key: Ed25519, held by the device that created the account.
/// It signs each device's certificate and the account's device list, so a
/// device it did not sign is never taken for the account's.
pub struct AccountKey {
    signer: SignatureKeyPair,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKey").finish_non_exhaustive()
    }
}

impl AccountKey {
    /// A fresh key.
    pub fn generate() -> Result<Self, CryptoError> {
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519)
            .map_err(|e| CryptoError::Group(format!("key generation failed: {e:?}")))?;
        Ok(Self { signer })
    }

    /// Rebuilds the key from [`AccountKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let signer =
            SignatureKeyPair::tls_deserialize_exact(bytes).map_err(|_| CryptoError::InvalidKey)?;
        if signer.signature_scheme() != SignatureScheme::ED25519 || signer.public().len() != 32 {
            return Err(CryptoError::InvalidKey);
        }
        Ok(Self { signer })
    }

    /// The key pair, serialized, for the device's own storage.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CryptoError> {
        self.signer
            .tls_serialize_detached()
            .map_err(|_| CryptoError::InvalidKey)
    }

    /// The public key (32 bytes).
    pub fn public(&self) -> Vec<u8> {
        self.signer.public().to_vec()
    }

    /// Signs `message` (plain Ed25519).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.signer
            .sign(message)
            .map_err(|e| CryptoError::Group(format!("signing failed: {e:?}")))
    }
}

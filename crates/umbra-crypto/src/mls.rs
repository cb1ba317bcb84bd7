//! Conversations as MLS groups (RFC 9420, openmls).
//!
//! Every conversation, 1:1 included, is an MLS group, so there is one
//! mechanism with forward secrecy and post-compromise security. Handshake and
//! application messages are both PrivateMessages (pure-ciphertext wire
//! format): the sender's leaf is encrypted too, so the server learns nothing
//! from them. Welcomes carry the ratchet tree, so joining needs no server
//! help. Each function here is one openmls operation; the caller wraps it in
//! one storage transaction.
//!
//! A member's credential is its username; its signature key is its device
//! identity key. Each device is a member of its own (one leaf per device), and
//! its leaf carries its certificate (extension [`CERTIFICATE_EXTENSION`],
//! opaque here): what the account key says of the device, which the caller
//! checks against the account key it pinned. A
//! business's device also carries its hosting statement in its leaf (an
//! extension of type `umbra_wire::hosting::EXTENSION_TYPE`, opaque here),
//! which the caller checks; every leaf lists that type among its
//! capabilities, as MLS requires of a leaf that carries it.
//!
//! Two ciphersuites, fixed for a group's life when it is made: the
//! post-quantum [`POST_QUANTUM`] (X-Wing) and the classical [`CLASSICAL`].
//! Every leaf says it supports both; a key package is of one. A Welcome or
//! key package of any other suite is refused as
//! [`CryptoError::UnsupportedSuite`] before openmls parses it, so the user
//! is told to update rather than shown a decoding error.

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;

use crate::{CryptoError, Identity};

/// The classical suite: every group made before post-quantum ones, and
/// groups too large for X-Wing's sizes.
pub const CLASSICAL: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

/// The post-quantum suite: X-Wing (ML-KEM-768 with X25519) as the KEM,
/// AES-128-GCM, SHA-256, Ed25519 signatures (so identities, certificates and
/// safety numbers are the same as in classical groups).
pub const POST_QUANTUM: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;

/// The most devices (leaves) a post-quantum group is made with or grows
/// to. Every leaf and every filled parent node of the ratchet tree holds an
/// X-Wing public key (1,216 bytes), and a Welcome carries the whole tree:
/// at this size a full tree's Welcome stays under the server's 128 KiB
/// envelope limit. Larger conversations are made classical.
pub const POST_QUANTUM_MAX_DEVICES: usize = 40;

/// Every suite a leaf supports, preferred first.
pub const SUITES: [Ciphersuite; 2] = [POST_QUANTUM, CLASSICAL];

/// A suite's code point (as key package uploads and claims name it).
pub fn suite_code(suite: Ciphersuite) -> u16 {
    suite.into()
}

/// The suite with this code point, if it is one of [`SUITES`].
pub fn suite_of(code: u16) -> Result<Ciphersuite, CryptoError> {
    SUITES
        .into_iter()
        .find(|s| suite_code(*s) == code)
        .ok_or(CryptoError::UnsupportedSuite(code))
}

/// The suite of a group.
pub fn group_suite(group: &MlsGroup) -> Ciphersuite {
    group.ciphersuite()
}

/// The wire format code point of a Welcome (RFC 9420, 6).
const WELCOME_WIRE_FORMAT: u16 = 0x0003;

/// Messages are padded to a multiple of this, hiding exact lengths.
const PADDING: usize = 64;
/// Application messages from this many past epochs can still be read, so a
/// message in flight while someone commits is not lost. Their sender must
/// still be a member (see [`process`]).
const PAST_EPOCHS: usize = 5;

/// The leaf node extension type of a business's hosting statement.
pub const HOSTING_EXTENSION: u16 = 0xF0B1;
/// The leaf node extension type of a device's certificate (what its
/// account key says of it; `umbra_wire::devices::CERTIFICATE_EXTENSION`).
pub const CERTIFICATE_EXTENSION: u16 = 0xF0B2;

/// A group member as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Account name from the credential.
    pub username: String,
    /// Ed25519 identity key the member signs with.
    pub identity_key: Vec<u8>,
    /// The hosting statement its leaf carries, unchecked (businesses only).
    pub hosting: Option<Vec<u8>>,
    /// The device certificate its leaf carries, unchecked.
    pub certificate: Option<Vec<u8>>,
}

impl Member {
    /// Whether `other` is the same account under the same key (whatever
    /// their leaves carry).
    pub fn is(&self, other: &Member) -> bool {
        self.username == other.username && self.identity_key == other.identity_key
    }
}

fn member_from(credential: &Credential, key: &[u8]) -> Result<Member, CryptoError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|e| CryptoError::InvalidCredential(format!("{e:?}")))?;
    let username = String::from_utf8(basic.identity().to_vec())
        .map_err(|_| CryptoError::InvalidCredential("username is not UTF-8".into()))?;
    Ok(Member {
        username,
        identity_key: key.to_vec(),
        hosting: None,
        certificate: None,
    })
}

/// The member a leaf node stands for, with its hosting statement and
/// certificate.
fn member_of_leaf(leaf: &LeafNode) -> Result<Member, CryptoError> {
    let mut m = member_from(leaf.credential(), leaf.signature_key().as_slice())?;
    m.hosting = hosting_of(leaf.extensions());
    m.certificate = certificate_of(leaf.extensions());
    Ok(m)
}

fn hosting_of(extensions: &Extensions<LeafNode>) -> Option<Vec<u8>> {
    extensions.unknown(HOSTING_EXTENSION).map(|u| u.0.clone())
}

fn certificate_of(extensions: &Extensions<LeafNode>) -> Option<Vec<u8>> {
    extensions
        .unknown(CERTIFICATE_EXTENSION)
        .map(|u| u.0.clone())
}

/// What every Umbra leaf says it supports: our ciphersuite, last-resort key
/// packages and hosting statements.
fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&SUITES),
        Some(&[
            ExtensionType::LastResort,
            ExtensionType::Unknown(HOSTING_EXTENSION),
            ExtensionType::Unknown(CERTIFICATE_EXTENSION),
        ]),
        None,
        None,
    )
}

/// The leaf extensions: the device's certificate, and `hosting` if any.
fn leaf_extensions(
    id: &Identity,
    hosting: Option<&[u8]>,
) -> Result<Extensions<LeafNode>, CryptoError> {
    let mut all = Vec::new();
    if let Some(c) = id.certificate() {
        all.push(Extension::Unknown(
            CERTIFICATE_EXTENSION,
            UnknownExtension(c.to_vec()),
        ));
    }
    if let Some(h) = hosting {
        all.push(Extension::Unknown(
            HOSTING_EXTENSION,
            UnknownExtension(h.to_vec()),
        ));
    }
    Extensions::from_vec(all).map_err(err)
}

fn err<E: std::fmt::Debug>(e: E) -> CryptoError {
    CryptoError::Group(format!("{e:?}"))
}

fn create_config(
    id: &Identity,
    suite: Ciphersuite,
    hosting: Option<&[u8]>,
) -> Result<MlsGroupCreateConfig, CryptoError> {
    Ok(MlsGroupCreateConfig::builder()
        .ciphersuite(suite)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .padding_size(PADDING)
        .max_past_epochs(PAST_EPOCHS)
        .capabilities(capabilities())
        .with_leaf_node_extensions(leaf_extensions(id, hosting)?)
        .map_err(err)?
        .build())
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .padding_size(PADDING)
        .max_past_epochs(PAST_EPOCHS)
        .build()
}

/// A new key package of `suite` for `id`, serialized, its leaf carrying
/// `hosting` (a business's statement) if given. A last-resort one may be
/// used by several joiners; the others are used once.
pub fn new_key_package<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    suite: Ciphersuite,
    last_resort: bool,
    hosting: Option<&[u8]>,
) -> Result<Vec<u8>, CryptoError> {
    // The leaf must list the last-resort extension among its capabilities,
    // or a key package carrying it fails verification.
    let mut builder = KeyPackage::builder()
        .leaf_node_capabilities(capabilities())
        .leaf_node_extensions(leaf_extensions(id, hosting)?);
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    let bundle = builder
        .build(suite, provider, id.signer(), id.credential_with_key())
        .map_err(err)?;
    bundle
        .key_package()
        .tls_serialize_detached()
        .map_err(|e| CryptoError::Group(format!("{e:?}")))
}

/// A key package whose signature verified.
#[derive(Debug, Clone)]
pub struct VerifiedKeyPackage {
    /// Who it belongs to, per its credential.
    pub member: Member,
    /// Its suite: the suite of any group it can join.
    pub suite: Ciphersuite,
    /// Whether its leaf says it supports the post-quantum suite (a device
    /// whose classical package says so could have joined a post-quantum
    /// group).
    pub supports_post_quantum: bool,
    key_package: KeyPackage,
}

/// Parses and verifies a key package someone uploaded.
pub fn verify_key_package<P: OpenMlsProvider>(
    provider: &P,
    bytes: &[u8],
) -> Result<VerifiedKeyPackage, CryptoError> {
    // A KeyPackage opens with its protocol version and then its suite.
    if let Some(code) = bytes.get(2..4) {
        suite_of(u16::from_be_bytes([code[0], code[1]]))?;
    }
    let kp_in = KeyPackageIn::tls_deserialize_exact(bytes)
        .map_err(|e| CryptoError::InvalidKeyPackage(format!("{e:?}")))?;
    let key_package = kp_in
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| CryptoError::InvalidKeyPackage(format!("{e:?}")))?;
    let suite = suite_of(suite_code(key_package.ciphersuite()))?;
    let member = member_of_leaf(key_package.leaf_node())?;
    let supports_post_quantum = key_package
        .leaf_node()
        .capabilities()
        .ciphersuites()
        .iter()
        .any(|s| s.value() == suite_code(POST_QUANTUM));
    Ok(VerifiedKeyPackage {
        member,
        suite,
        supports_post_quantum,
        key_package,
    })
}

/// Creates a group of `suite` with `id` as its only member, its leaf
/// carrying `hosting` if given.
pub fn create_group<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    suite: Ciphersuite,
    hosting: Option<&[u8]>,
) -> Result<MlsGroup, CryptoError> {
    MlsGroup::new(
        provider,
        id.signer(),
        &create_config(id, suite, hosting)?,
        id.credential_with_key(),
    )
    .map_err(err)
}

/// Loads a group from storage.
pub fn load_group<P: OpenMlsProvider>(
    provider: &P,
    group_id: &[u8],
) -> Result<Option<MlsGroup>, CryptoError> {
    MlsGroup::load(provider.storage(), &GroupId::from_slice(group_id))
        .map_err(|e| CryptoError::Storage(format!("{e:?}")))
}

/// The current members, with what their leaves carry.
pub fn members(group: &MlsGroup) -> Vec<Member> {
    group
        .members()
        .filter_map(|m| {
            let mut member = member_from(&m.credential, &m.signature_key).ok()?;
            if let Some(leaf) = group.public_group().leaf(m.index) {
                member.hosting = hosting_of(leaf.extensions());
                member.certificate = certificate_of(leaf.extensions());
            }
            Some(member)
        })
        .collect()
}

/// The hosting statement our own leaf carries now.
pub fn own_hosting(group: &MlsGroup) -> Option<Vec<u8>> {
    group
        .own_leaf()
        .and_then(|leaf| hosting_of(leaf.extensions()))
}

/// Replaces our own leaf (fresh encryption key, and `hosting` as its
/// statement, or none) and moves to the next epoch: what every member sees
/// when a business's hosting changes.
pub fn update_own_leaf<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    hosting: Option<&[u8]>,
) -> Result<Commit, CryptoError> {
    let commit = stage_update_own_leaf(provider, id, group, hosting)?;
    merge_own_commit(provider, group)?;
    Ok(commit)
}

/// [`update_own_leaf`], staged: the group stays in its epoch with the commit
/// pending until [`merge_own_commit`] or [`discard_own_commit`].
pub fn stage_update_own_leaf<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    hosting: Option<&[u8]>,
) -> Result<Commit, CryptoError> {
    let params = LeafNodeParameters::builder()
        .with_capabilities(capabilities())
        .with_extensions(leaf_extensions(id, hosting)?)
        .build();
    let bundle = group
        .self_update(provider, id.signer(), params)
        .map_err(err)?;
    Ok(Commit {
        commit: serialize(bundle.commit())?,
        welcome: None,
    })
}

/// Moves to the epoch our pending commit makes (once the commit is known to
/// be the one every member applies).
pub fn merge_own_commit<P: OpenMlsProvider>(
    provider: &P,
    group: &mut MlsGroup,
) -> Result<(), CryptoError> {
    group.merge_pending_commit(provider).map_err(err)
}

/// Forgets our pending commit (another commit took its epoch); the group
/// stays in its epoch.
pub fn discard_own_commit<P: OpenMlsProvider>(
    provider: &P,
    group: &mut MlsGroup,
) -> Result<(), CryptoError> {
    group.clear_pending_commit(provider.storage()).map_err(err)
}

/// Whether we have a commit pending in this group.
pub fn has_own_commit(group: &MlsGroup) -> bool {
    group.pending_commit().is_some()
}

/// Our own leaf position, and the lowest other one (used to pick who commits
/// a leaver's removal).
pub fn own_leaf_index(group: &MlsGroup) -> u32 {
    group.own_leaf_index().u32()
}

/// Leaf indices with their usernames.
pub fn leaves(group: &MlsGroup) -> Vec<(u32, String)> {
    group
        .members()
        .filter_map(|m| {
            member_from(&m.credential, &m.signature_key)
                .ok()
                .map(|mem| (m.index.u32(), mem.username))
        })
        .collect()
}

/// The outcome of a membership change we made.
#[derive(Debug)]
pub struct Commit {
    /// For the existing members.
    pub commit: Vec<u8>,
    /// For the new members, when members were added.
    pub welcome: Option<Vec<u8>>,
}

/// Adds members and moves to the next epoch.
pub fn add_members<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    key_packages: &[VerifiedKeyPackage],
) -> Result<Commit, CryptoError> {
    let commit = stage_add_members(provider, id, group, key_packages)?;
    merge_own_commit(provider, group)?;
    Ok(commit)
}

/// [`add_members`], staged (see [`stage_update_own_leaf`]).
pub fn stage_add_members<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    key_packages: &[VerifiedKeyPackage],
) -> Result<Commit, CryptoError> {
    let kps: Vec<KeyPackage> = key_packages.iter().map(|k| k.key_package.clone()).collect();
    let (commit, welcome, _info) = group
        .add_members(provider, id.signer(), &kps)
        .map_err(err)?;
    Ok(Commit {
        commit: serialize(&commit)?,
        welcome: Some(serialize(&welcome)?),
    })
}

/// Removes the members with these usernames and moves to the next epoch.
pub fn remove_members<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    usernames: &[&str],
) -> Result<Commit, CryptoError> {
    let commit = stage_remove_members(provider, id, group, usernames)?;
    merge_own_commit(provider, group)?;
    Ok(commit)
}

/// [`remove_members`], staged (see [`stage_update_own_leaf`]).
pub fn stage_remove_members<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    usernames: &[&str],
) -> Result<Commit, CryptoError> {
    let indices: Vec<LeafNodeIndex> = group
        .members()
        .filter(|m| {
            member_from(&m.credential, &m.signature_key)
                .map(|mem| usernames.contains(&mem.username.as_str()))
                .unwrap_or(false)
        })
        .map(|m| m.index)
        .collect();
    stage_remove_leaves(provider, id, group, &indices, "member")
}

/// Removes the devices with these identity keys (whoever's they are),
/// staged (see [`stage_update_own_leaf`]).
pub fn stage_remove_devices<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    identity_keys: &[Vec<u8>],
) -> Result<Commit, CryptoError> {
    let indices: Vec<LeafNodeIndex> = group
        .members()
        .filter(|m| identity_keys.contains(&m.signature_key))
        .map(|m| m.index)
        .collect();
    stage_remove_leaves(provider, id, group, &indices, "device")
}

fn stage_remove_leaves<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    indices: &[LeafNodeIndex],
    what: &str,
) -> Result<Commit, CryptoError> {
    if indices.is_empty() {
        return Err(CryptoError::Group(format!(
            "no such {what} in this conversation"
        )));
    }
    let (commit, _welcome, _info) = group
        .remove_members(provider, id.signer(), indices)
        .map_err(err)?;
    Ok(Commit {
        commit: serialize(&commit)?,
        welcome: None,
    })
}

/// Encrypts application data for the group's current members.
pub fn encrypt<P: OpenMlsProvider>(
    provider: &P,
    id: &Identity,
    group: &mut MlsGroup,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if !group.is_active() {
        return Err(CryptoError::NotAMember);
    }
    let msg = group
        .create_message(provider, id.signer(), plaintext)
        .map_err(err)?;
    serialize(&msg)
}

fn serialize(msg: &MlsMessageOut) -> Result<Vec<u8>, CryptoError> {
    msg.tls_serialize_detached()
        .map_err(|e| CryptoError::Group(format!("{e:?}")))
}

/// A received MLS message, before it is applied.
#[derive(Debug)]
pub enum Incoming {
    /// An invitation into a group.
    Welcome(Box<Welcome>),
    /// A message for a group we may be in.
    Group {
        /// The group it is for.
        group_id: Vec<u8>,
        /// The epoch it was sent in.
        epoch: u64,
        /// Whether it is a commit (said in clear by a PrivateMessage too).
        commit: bool,
        /// The message.
        message: Box<ProtocolMessage>,
    },
}

/// Parses a serialized MLS message.
pub fn parse(bytes: &[u8]) -> Result<Incoming, CryptoError> {
    // An MLSMessage opens with its version and wire format; a Welcome's
    // body with its suite. One of a suite we do not know is named as such.
    if let Some(head) = bytes.get(..6)
        && u16::from_be_bytes([head[2], head[3]]) == WELCOME_WIRE_FORMAT
    {
        suite_of(u16::from_be_bytes([head[4], head[5]]))?;
    }
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| CryptoError::MalformedMessage(format!("{e:?}")))?;
    match msg.extract() {
        MlsMessageBodyIn::Welcome(w) => Ok(Incoming::Welcome(Box::new(w))),
        MlsMessageBodyIn::PrivateMessage(p) => {
            let message = ProtocolMessage::from(p);
            Ok(Incoming::Group {
                group_id: message.group_id().as_slice().to_vec(),
                epoch: message.epoch().as_u64(),
                commit: message.content_type() == ContentType::Commit,
                message: Box::new(message),
            })
        }
        _ => Err(CryptoError::MalformedMessage(
            "only Welcome and PrivateMessage are accepted".into(),
        )),
    }
}

/// Joins a group from a Welcome. Returns the group and who added us.
pub fn join<P: OpenMlsProvider>(
    provider: &P,
    welcome: Welcome,
) -> Result<(MlsGroup, Member), CryptoError> {
    let staged = StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None)
        .map_err(|e| CryptoError::Rejected(format!("{e:?}")))?;
    let sender = staged
        .welcome_sender()
        .map_err(err)
        .and_then(member_of_leaf)?;
    let group = staged.into_group(provider).map_err(err)?;
    Ok((group, sender))
}

/// What applying a group message did.
#[derive(Debug)]
pub enum Processed {
    /// Application data from a member.
    Application {
        /// The authenticated sender.
        sender: Member,
        /// The plaintext.
        data: Vec<u8>,
    },
    /// A membership change, already merged.
    Commit {
        /// Who made it.
        sender: Member,
        /// New members.
        added: Vec<Member>,
        /// Devices removed.
        removed: Vec<Member>,
        /// We were removed: the group is no longer usable.
        we_were_removed: bool,
    },
    /// Something we do not act on (a standalone proposal).
    Ignored,
}

/// Decrypts, authenticates and applies a group message.
pub fn process<P: OpenMlsProvider>(
    provider: &P,
    group: &mut MlsGroup,
    epoch: u64,
    message: ProtocolMessage,
) -> Result<Processed, CryptoError> {
    if !group.is_active() {
        return Err(CryptoError::NotAMember);
    }
    let current = group.epoch().as_u64();
    if epoch > current {
        return Err(CryptoError::FutureEpoch);
    }
    let processed = group
        .process_message(provider, message)
        .map_err(|e| match e {
            ProcessMessageError::ValidationError(
                ValidationError::WrongEpoch | ValidationError::NoPastEpochData,
            ) => CryptoError::WrongEpoch,
            ProcessMessageError::ValidationError(ValidationError::UnknownMember) => {
                CryptoError::Rejected("sender is not a member".into())
            }
            other => CryptoError::Rejected(format!("{other:?}")),
        })?;
    // The sender's own leaf (several devices of one account share a
    // credential, so the leaf index says which). A message from a past
    // epoch whose author's leaf is gone (or now holds someone else) is
    // not accepted: its author has been removed since.
    let sender = match processed.sender() {
        Sender::Member(index) => group
            .public_group()
            .leaf(*index)
            .filter(|leaf| leaf.credential() == processed.credential())
            .map(member_of_leaf)
            .transpose()?,
        _ => None,
    };
    let Some(sender) = sender else {
        return Err(if epoch < current {
            CryptoError::WrongEpoch
        } else {
            CryptoError::Rejected("sender is not a member".into())
        });
    };
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => Ok(Processed::Application {
            sender,
            data: app.into_bytes(),
        }),
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            let added = staged
                .add_proposals()
                .filter_map(|p| member_of_leaf(p.add_proposal().key_package().leaf_node()).ok())
                .collect();
            let removed = staged
                .remove_proposals()
                .filter_map(|p| {
                    group
                        .public_group()
                        .leaf(p.remove_proposal().removed())
                        .and_then(|leaf| member_of_leaf(leaf).ok())
                })
                .collect();
            let we_were_removed = staged.self_removed();
            group.merge_staged_commit(provider, *staged).map_err(err)?;
            Ok(Processed::Commit {
                sender,
                added,
                removed,
                we_were_removed,
            })
        }
        _ => Ok(Processed::Ignored),
    }
}

/// The group id, as bytes.
pub fn group_id(group: &MlsGroup) -> Vec<u8> {
    group.group_id().as_slice().to_vec()
}

/// A secret for another protocol, bound to the group's current epoch (the
/// MLS exporter, RFC 9420 §8.5): every member of this epoch derives the
/// same bytes, nobody outside it can.
pub fn export_secret<P: OpenMlsProvider>(
    provider: &P,
    group: &MlsGroup,
    label: &str,
    context: &[u8],
    len: usize,
) -> Result<Vec<u8>, CryptoError> {
    group
        .export_secret(provider.crypto(), label, context, len)
        .map_err(err)
}

/// The current epoch.
pub fn epoch(group: &MlsGroup) -> u64 {
    group.epoch().as_u64()
}

/// Forgets a group (after leaving or being removed).
pub fn delete_group<P: OpenMlsProvider>(
    provider: &P,
    group: &mut MlsGroup,
) -> Result<(), CryptoError> {
    group
        .delete(provider.storage())
        .map_err(|e| CryptoError::Storage(format!("{e:?}")))
}

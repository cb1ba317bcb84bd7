//! `umbra bench mls`: what a conversation's MLS costs as it grows, with the
//! classical ciphersuite Umbra uses and with a hybrid post-quantum one
//! (X-Wing: ML-KEM-768 with X25519), side by side.
//!
//! For each size N: a key package (bytes, time to make); the commit and the
//! Welcome that add the N-th member to a group of N-1 (bytes, time to make,
//! time for the new member to join from the Welcome, which carries the
//! ratchet tree as Umbra's do); and a member's self-update at N members (the
//! commit of a key rotation or a change of leaf: bytes, time to make, time
//! for another member to apply). Groups are configured as Umbra's
//! conversations are (every message a PrivateMessage padded to 64 bytes,
//! the tree in the Welcome). Everything runs in memory in this process; the
//! other N-2 members exist as key packages only, since only the committer
//! and the joiner need state.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Args;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_rust_crypto::OpenMlsRustCrypto;
use serde::Serialize;
use umbra_crypto::Identity;

/// Flags of `umbra bench mls`.
#[derive(Debug, Clone, Args)]
pub struct MlsBenchArgs {
    /// Group sizes to measure (members, at least 2).
    #[arg(long, value_delimiter = ',', default_value = "2,10,100,1000")]
    pub sizes: Vec<usize>,
    /// Times each timed step is repeated (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
}

/// The two ciphersuites compared.
const SUITES: [(&str, Ciphersuite); 2] = [
    (
        "classical (X25519, ChaCha20-Poly1305)",
        Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
    ),
    (
        "post-quantum (X-Wing: ML-KEM-768 + X25519, AES-128-GCM)",
        Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519,
    ),
];

/// One size under one suite.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Which suite.
    pub suite: &'static str,
    /// Members.
    pub members: usize,
    /// A key package, bytes.
    pub key_package_bytes: usize,
    /// Time to make a key package, ms.
    pub key_package_ms: f64,
    /// The commit adding the N-th member, bytes.
    pub add_commit_bytes: usize,
    /// Its Welcome, bytes.
    pub welcome_bytes: usize,
    /// Time to make the add (commit and Welcome), ms.
    pub add_ms: f64,
    /// Time for the new member to join from the Welcome, ms.
    pub join_ms: f64,
    /// A self-update commit at N members, bytes.
    pub update_commit_bytes: usize,
    /// Time to make it, ms.
    pub update_ms: f64,
    /// Time for another member to apply it, ms.
    pub apply_ms: f64,
}

/// What `umbra bench mls` reports.
#[derive(Debug, Clone, Serialize)]
pub struct MlsReport {
    /// Every suite at every size.
    pub rows: Vec<Row>,
}

/// Runs the measurement.
pub fn run(args: &MlsBenchArgs) -> anyhow::Result<MlsReport> {
    let mut rows = Vec::new();
    for (name, suite) in SUITES {
        for &n in &args.sizes {
            if n < 2 {
                return Err(anyhow!("a group size is at least 2 (got {n})"));
            }
            crate::note!("{name}: {n} members");
            rows.push(measure(name, suite, n, args.repeat.max(1))?);
        }
    }
    Ok(MlsReport { rows })
}

fn config(suite: Ciphersuite) -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(suite)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .padding_size(64)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .padding_size(64)
        .build()
}

/// A member with its own key store.
struct Device {
    id: Identity,
    provider: OpenMlsRustCrypto,
}

impl Device {
    fn new(name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            id: Identity::generate(name).map_err(|e| anyhow!("{e}"))?,
            provider: OpenMlsRustCrypto::default(),
        })
    }

    fn key_package(&self, suite: Ciphersuite) -> anyhow::Result<KeyPackage> {
        let bundle = KeyPackage::builder()
            .build(
                suite,
                &self.provider,
                self.id.signer(),
                self.id.credential_with_key(),
            )
            .map_err(|e| anyhow!("key package: {e:?}"))?;
        Ok(bundle.key_package().clone())
    }
}

fn bytes(msg: &MlsMessageOut) -> anyhow::Result<Vec<u8>> {
    msg.tls_serialize_detached()
        .map_err(|e| anyhow!("serialize: {e:?}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(name: &'static str, suite: Ciphersuite, n: usize, repeat: usize) -> anyhow::Result<Row> {
    let creator = Device::new("creator")?;
    let others = Device::new("others")?;
    // Key packages: size, and the median time to make one.
    let mut kp_times = Vec::new();
    let mut kp = None;
    for _ in 0..repeat {
        let t = Instant::now();
        kp = Some(others.key_package(suite)?);
        kp_times.push(ms(t.elapsed()));
    }
    let kp_bytes = kp
        .context("no key package")?
        .tls_serialize_detached()
        .map_err(|e| anyhow!("{e:?}"))?
        .len();
    // A group of N-1 (the creator and N-2 members known by key package).
    let mut group = MlsGroup::new(
        &creator.provider,
        creator.id.signer(),
        &config(suite),
        creator.id.credential_with_key(),
    )
    .map_err(|e| anyhow!("new group: {e:?}"))?;
    if n > 2 {
        let kps: Vec<KeyPackage> = (0..n - 2)
            .map(|i| {
                let d = Device::new(&format!("m{i}"))?;
                d.key_package(suite)
            })
            .collect::<anyhow::Result<_>>()?;
        group
            .add_members(&creator.provider, creator.id.signer(), &kps)
            .map_err(|e| anyhow!("add: {e:?}"))?;
        group
            .merge_pending_commit(&creator.provider)
            .map_err(|e| anyhow!("merge: {e:?}"))?;
    }
    // The N-th member: the add, timed (each try but the last undone).
    let joiner = Device::new("joiner")?;
    let mut add_times = Vec::new();
    let mut out = None;
    for i in 0..repeat {
        let kp = joiner.key_package(suite)?;
        let t = Instant::now();
        let (commit, welcome, _) = group
            .add_members(&creator.provider, creator.id.signer(), &[kp])
            .map_err(|e| anyhow!("add: {e:?}"))?;
        add_times.push(ms(t.elapsed()));
        if i + 1 < repeat {
            group
                .clear_pending_commit(creator.provider.storage())
                .map_err(|e| anyhow!("clear: {e:?}"))?;
        } else {
            out = Some((bytes(&commit)?, bytes(&welcome)?));
        }
    }
    let (add_commit, welcome) = out.context("no add")?;
    group
        .merge_pending_commit(&creator.provider)
        .map_err(|e| anyhow!("merge: {e:?}"))?;
    let t = Instant::now();
    let welcome_in = MlsMessageIn::tls_deserialize_exact(welcome.as_slice())
        .map_err(|e| anyhow!("welcome: {e:?}"))?;
    let MlsMessageBodyIn::Welcome(w) = welcome_in.extract() else {
        return Err(anyhow!("not a welcome"));
    };
    let mut joined = StagedWelcome::new_from_welcome(&joiner.provider, &join_config(), w, None)
        .map_err(|e| anyhow!("join: {e:?}"))?
        .into_group(&joiner.provider)
        .map_err(|e| anyhow!("join: {e:?}"))?;
    let join_ms = ms(t.elapsed());
    // Self-updates by the creator, applied by the joiner.
    let (mut update_times, mut apply_times, mut update_bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..repeat {
        let t = Instant::now();
        let bundle = group
            .self_update(
                &creator.provider,
                creator.id.signer(),
                LeafNodeParameters::default(),
            )
            .map_err(|e| anyhow!("update: {e:?}"))?;
        let commit = bytes(bundle.commit())?;
        update_times.push(ms(t.elapsed()));
        update_bytes = commit.len();
        group
            .merge_pending_commit(&creator.provider)
            .map_err(|e| anyhow!("merge: {e:?}"))?;
        let t = Instant::now();
        let msg = MlsMessageIn::tls_deserialize_exact(commit.as_slice())
            .map_err(|e| anyhow!("commit: {e:?}"))?
            .try_into_protocol_message()
            .map_err(|e| anyhow!("commit: {e:?}"))?;
        let processed = joined
            .process_message(&joiner.provider, msg)
            .map_err(|e| anyhow!("apply: {e:?}"))?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(anyhow!("not a commit"));
        };
        joined
            .merge_staged_commit(&joiner.provider, *staged)
            .map_err(|e| anyhow!("apply: {e:?}"))?;
        apply_times.push(ms(t.elapsed()));
    }
    Ok(Row {
        suite: name,
        members: n,
        key_package_bytes: kp_bytes,
        key_package_ms: median(kp_times),
        add_commit_bytes: add_commit.len(),
        welcome_bytes: welcome.len(),
        add_ms: median(add_times),
        join_ms,
        update_commit_bytes: update_bytes,
        update_ms: median(update_times),
        apply_ms: median(apply_times),
    })
}

impl fmt::Display for MlsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>7} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>11} {:>9} {:>9}  suite",
            "members",
            "KP bytes",
            "KP ms",
            "add bytes",
            "welcome B",
            "add ms",
            "join ms",
            "update B",
            "update ms",
            "apply ms"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:>7} {:>9} {:>9.2} {:>10} {:>10} {:>9.2} {:>9.2} {:>11} {:>9.2} {:>9.2}  {}",
                r.members,
                r.key_package_bytes,
                r.key_package_ms,
                r.add_commit_bytes,
                r.welcome_bytes,
                r.add_ms,
                r.join_ms,
                r.update_commit_bytes,
                r.update_ms,
                r.apply_ms,
                r.suite
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_suites_build_join_and_update_and_post_quantum_costs_more() {
        let report = run(&MlsBenchArgs {
            sizes: vec![2, 4],
            repeat: 1,
        })
        .expect("measured");
        assert_eq!(report.rows.len(), 4);
        let (classical, pq): (Vec<&Row>, Vec<&Row>) = report
            .rows
            .iter()
            .partition(|r| r.suite.starts_with("classical"));
        for (c, p) in classical.iter().zip(&pq) {
            assert_eq!(c.members, p.members);
            // An X-Wing public key alone is 1,216 bytes.
            assert!(c.key_package_bytes < 400, "{c:?}");
            assert!(p.key_package_bytes > 2_000, "{p:?}");
            assert!(
                p.update_commit_bytes > 4 * c.update_commit_bytes,
                "{c:?} {p:?}"
            );
            assert!(p.welcome_bytes > c.welcome_bytes, "{c:?} {p:?}");
        }
        assert!(
            run(&MlsBenchArgs {
                sizes: vec![1],
                repeat: 1
            })
            .is_err()
        );
    }
}

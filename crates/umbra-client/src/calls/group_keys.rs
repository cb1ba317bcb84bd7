//! A group call's own MLS group: the devices in the call, and nobody else.
//! Its epochs are the call's keys (`umbra-call::e2ee`, SFrame keyed from
//! the MLS exporter): a join or a leave is a commit, so a new epoch and new
//! frame keys; who left holds nothing for what follows, who joined nothing
//! for what went before.
//!
//! The group lives in memory for the call's length (nothing of a call is
//! kept). A device that wants in makes a fresh key package under its own
//! identity key ([`JoinRequest`]), sends it end to end through the
//! conversation, and one member admits it: the member with the lowest
//! leaf index among those not leaving ([`CallGroup::is_committer`]), so
//! two members never commit the same epoch, and a commit from anyone else
//! is refused. A member cannot commit its own removal, so when the
//! committer leaves, the next one in line removes it. The admitting member checks that the key
//! package is signed by the key the conversation already authenticated for
//! its sender, so nobody can slip a device of their own into the call
//! under another member's name.

use std::collections::BTreeSet;

use openmls::prelude::MlsGroup;
use openmls_rust_crypto::OpenMlsRustCrypto;
use umbra_call::e2ee::{Epoch, EpochSecret, MlsExporter};
use umbra_crypto::mls::{self, Commit, Incoming, Member, Processed};
use umbra_crypto::{CryptoError, Identity};

use crate::ClientError;

/// A device asking into a call: its key package, and the private half it
/// needs to read the Welcome.
pub struct JoinRequest {
    provider: OpenMlsRustCrypto,
    /// The key package to send to the call (end to end).
    pub key_package: Vec<u8>,
}

/// This device's view of a call's group.
pub struct CallGroup {
    provider: OpenMlsRustCrypto,
    group: MlsGroup,
    /// Members who said they are leaving, until their removal is committed.
    leaving: BTreeSet<String>,
}

/// What applying a call group message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Who joined.
    pub added: Vec<String>,
    /// Who left.
    pub removed: Vec<String>,
    /// We are out of the call.
    pub we_were_removed: bool,
}

/// The group's exporter, as SFrame asks for it.
struct Exporter<'a>(&'a CallGroup);

impl MlsExporter for Exporter<'_> {
    // Wiped when dropped, like every copy of the call's keys.
    type BaseKey = zeroize::Zeroizing<Vec<u8>>;
    type Error = CryptoError;

    fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        len: usize,
    ) -> Result<Self::BaseKey, CryptoError> {
        mls::export_secret(&self.0.provider, &self.0.group, label, context, len)
            .map(zeroize::Zeroizing::new)
    }
}

impl JoinRequest {
    /// A fresh key package under `id` (used once, for this call).
    pub fn new(id: &Identity) -> Result<Self, ClientError> {
        let provider = OpenMlsRustCrypto::default();
        let key_package = mls::new_key_package(&provider, id, mls::CLASSICAL, false, None)?;
        Ok(Self {
            provider,
            key_package,
        })
    }

    /// Enters the call from the Welcome a member sent back.
    pub fn accept(self, welcome: &[u8]) -> Result<CallGroup, ClientError> {
        let Incoming::Welcome(w) = mls::parse(welcome)? else {
            return Err(ClientError::Protocol("expected the call's welcome".into()));
        };
        let (group, _) = mls::join(&self.provider, *w)?;
        Ok(CallGroup {
            provider: self.provider,
            group,
            leaving: BTreeSet::new(),
        })
    }
}

impl CallGroup {
    /// Starts a call's group with this device alone in it.
    pub fn start(id: &Identity) -> Result<Self, ClientError> {
        let provider = OpenMlsRustCrypto::default();
        let group = mls::create_group(&provider, id, mls::CLASSICAL, None)?;
        Ok(Self {
            provider,
            group,
            leaving: BTreeSet::new(),
        })
    }

    /// Admits the device whose key package `from` sent (`from` as the
    /// conversation authenticated it): a commit for the others and a
    /// Welcome for it. A member already in the call (a device that crashed
    /// and came back) must first be removed with [`CallGroup::remove`].
    pub fn admit(
        &mut self,
        id: &Identity,
        key_package: &[u8],
        from: &Member,
    ) -> Result<Commit, ClientError> {
        let kp = mls::verify_key_package(&self.provider, key_package)?;
        if !kp.member.is(from) {
            return Err(ClientError::Protocol(format!(
                "a call join request from {} carries someone else's key",
                from.username
            )));
        }
        if mls::members(&self.group)
            .iter()
            .any(|m| m.username == from.username)
        {
            return Err(ClientError::Protocol(format!(
                "{} is already in the call",
                from.username
            )));
        }
        Ok(mls::add_members(
            &self.provider,
            id,
            &mut self.group,
            &[kp],
        )?)
    }

    /// Removes `username` from the call (it left, or came back from a
    /// crash under a new key package).
    pub fn remove(&mut self, id: &Identity, username: &str) -> Result<Commit, ClientError> {
        let commit = mls::remove_members(&self.provider, id, &mut self.group, &[username])?;
        self.leaving.remove(username);
        Ok(commit)
    }

    /// Notes that `username` said it is leaving: it no longer commits, and
    /// the committer removes it.
    pub fn mark_leaving(&mut self, username: &str) {
        if self.has(username) {
            self.leaving.insert(username.to_owned());
        }
    }

    /// Whether `username` is in the call.
    pub fn has(&self, username: &str) -> bool {
        mls::leaves(&self.group).iter().any(|(_, u)| u == username)
    }

    /// Applies a commit that `from` (as the conversation authenticated it)
    /// sent. Only the current committer's commits are taken: anyone else's
    /// would fork the call's keys.
    pub fn apply(&mut self, commit: &[u8], from: &str) -> Result<Applied, ClientError> {
        if self.committer().as_deref() != Some(from) {
            return Err(ClientError::Protocol(format!(
                "a call group commit from {from}, who does not commit for this call"
            )));
        }
        let Incoming::Group { epoch, message, .. } = mls::parse(commit)? else {
            return Err(ClientError::Protocol("expected a call group commit".into()));
        };
        match mls::process(&self.provider, &mut self.group, epoch, *message)? {
            Processed::Commit {
                sender,
                added,
                removed,
                we_were_removed,
            } => {
                if sender.username != from {
                    return Err(ClientError::Protocol(format!(
                        "a call group commit signed by {} arrived from {from}",
                        sender.username
                    )));
                }
                let removed: Vec<String> = removed.into_iter().map(|m| m.username).collect();
                for r in &removed {
                    self.leaving.remove(r);
                }
                Ok(Applied {
                    added: added.into_iter().map(|m| m.username).collect(),
                    removed,
                    we_were_removed,
                })
            }
            _ => Err(ClientError::Protocol(
                "a call group message that is not a commit".into(),
            )),
        }
    }

    /// The current epoch's frame key material, for the call's media task.
    pub fn epoch_secret(&self) -> Result<EpochSecret, ClientError> {
        let members: Vec<u32> = mls::leaves(&self.group)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        let exporter = Exporter(self);
        EpochSecret::export(&Epoch {
            number: mls::epoch(&self.group),
            own_index: mls::own_leaf_index(&self.group),
            members: &members,
            exporter: &exporter,
        })
        .map_err(|e| ClientError::Invalid(e.to_string()))
    }

    /// Who is in the call, by leaf index.
    pub fn members(&self) -> Vec<(u32, String)> {
        mls::leaves(&self.group)
    }

    /// The group's epoch.
    pub fn epoch(&self) -> u64 {
        mls::epoch(&self.group)
    }

    /// Who commits joins and leaves: the member at the lowest leaf index
    /// that has not said it is leaving.
    pub fn committer(&self) -> Option<String> {
        mls::leaves(&self.group)
            .into_iter()
            .filter(|(_, u)| !self.leaving.contains(u))
            .min_by_key(|&(i, _)| i)
            .map(|(_, u)| u)
    }

    /// Whether `username` commits for the call now.
    pub fn commits(&self, username: &str) -> bool {
        self.committer().as_deref() == Some(username)
    }

    /// The epoch a commit was made in, if it is a group message at all.
    pub fn commit_epoch(commit: &[u8]) -> Option<u64> {
        match mls::parse(commit).ok()? {
            Incoming::Group { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    /// Whether this device is the committer.
    pub fn is_committer(&self) -> bool {
        let own = mls::own_leaf_index(&self.group);
        mls::leaves(&self.group)
            .into_iter()
            .filter(|(_, u)| !self.leaving.contains(u))
            .min_by_key(|&(i, _)| i)
            .is_some_and(|(i, _)| i == own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_call::e2ee::FrameKeys;

    fn member(id: &Identity) -> Member {
        Member {
            username: id.username().to_owned(),
            identity_key: id.identity_key(),
            hosting: None,
            certificate: None,
        }
    }

    /// `id` asks in and `admitter` lets it in; `others` apply the commit.
    fn join(
        admitter: &mut CallGroup,
        admitter_id: &Identity,
        id: &Identity,
        others: &mut [&mut CallGroup],
    ) -> CallGroup {
        let request = JoinRequest::new(id).expect("request");
        let commit = admitter
            .admit(admitter_id, &request.key_package, &member(id))
            .expect("admit");
        for o in others.iter_mut() {
            let applied = o
                .apply(&commit.commit, admitter_id.username())
                .expect("apply");
            assert_eq!(applied.added, vec![id.username().to_owned()]);
        }
        request
            .accept(commit.welcome.as_deref().expect("welcome"))
            .expect("joined")
    }

    fn keys(g: &CallGroup) -> FrameKeys {
        FrameKeys::new(&g.epoch_secret().expect("secret").epoch()).expect("keys")
    }

    #[test]
    fn joins_and_leaves_move_everyone_to_keys_only_the_members_hold() {
        let ids: Vec<Identity> = ["ann", "bob", "cat", "dan"]
            .iter()
            .map(|n| Identity::generate(n).expect("id"))
            .collect();
        let mut a = CallGroup::start(&ids[0]).expect("start");
        let mut b = join(&mut a, &ids[0], &ids[1], &mut []);
        let mut c = join(&mut a, &ids[0], &ids[2], &mut [&mut b]);
        assert!(a.is_committer() && !b.is_committer() && !c.is_committer());
        assert_eq!(a.epoch(), 2);
        let (mut ka, mut kb, mut kc) = (keys(&a), keys(&b), keys(&c));
        let said = ka.seal(b"before anyone left").expect("seal");
        assert_eq!(
            kb.open(&said, 0).expect("b hears").payload,
            b"before anyone left"
        );
        assert_eq!(kc.open(&said, 0).expect("c hears").sender, 0);
        // Dan joins late: nothing said before is his to read.
        let mut d = join(&mut a, &ids[0], &ids[3], &mut [&mut b, &mut c]);
        let mut kd = keys(&d);
        assert!(kd.open(&said, 0).is_none(), "a late joiner read the past");
        // Cat leaves: the others move on, and what follows is not hers.
        let commit = a.remove(&ids[0], "cat").expect("remove");
        for g in [&mut b, &mut d] {
            assert_eq!(
                g.apply(&commit.commit, "ann").expect("apply").removed,
                vec!["cat".to_owned()]
            );
        }
        let gone = c
            .apply(&commit.commit, "ann")
            .expect("cat sees her removal");
        assert!(gone.we_were_removed);
        for (k, g) in [(&mut ka, &a), (&mut kb, &b), (&mut kd, &d)] {
            k.advance(&g.epoch_secret().expect("secret").epoch(), 10)
                .expect("advance");
        }
        let after = ka.seal(b"after cat left").expect("seal");
        assert_eq!(kb.open(&after, 20).expect("b").payload, b"after cat left");
        assert_eq!(kd.open(&after, 20).expect("d").payload, b"after cat left");
        assert!(kc.open(&after, 20).is_none(), "who left still hears");
        // Held a moment for an epoch she might reach, then dropped.
        let wait = umbra_call::e2ee::EARLY_HOLD_MS;
        assert!(kc.open(&after, 21 + wait).is_none(), "who left still hears");
        assert!(kc.dropped().total() > 0);
        // Every member derived the same epoch; the secret travels as a
        // value, not a reference into the group.
        let epochs: Vec<u64> = [&a, &b, &d].iter().map(|g| g.epoch()).collect();
        assert_eq!(epochs, vec![4, 4, 4]);
    }

    #[test]
    fn a_join_request_under_someone_elses_name_is_refused() {
        let ann = Identity::generate("ann").expect("id");
        let bob = Identity::generate("bob").expect("id");
        let eve = Identity::generate("bob").expect("id");
        let mut a = CallGroup::start(&ann).expect("start");
        // Eve's key package claims bob, but the conversation authenticated
        // the request as coming from the real bob, with his key.
        let forged = JoinRequest::new(&eve).expect("request");
        let e = a
            .admit(&ann, &forged.key_package, &member(&bob))
            .expect_err("refused");
        assert!(e.to_string().contains("someone else's key"), "{e}");
        assert_eq!(a.epoch(), 0, "nothing was committed");
        let garbage = a.admit(&ann, b"not a key package", &member(&bob));
        assert!(garbage.is_err());
    }

    #[test]
    fn when_the_committer_leaves_the_next_member_commits_and_no_one_else_may() {
        let ids: Vec<Identity> = ["ann", "bob", "cat"]
            .iter()
            .map(|n| Identity::generate(n).expect("id"))
            .collect();
        let mut a = CallGroup::start(&ids[0]).expect("start");
        let mut b = join(&mut a, &ids[0], &ids[1], &mut []);
        let mut c = join(&mut a, &ids[0], &ids[2], &mut [&mut b]);
        // Cat is not the committer: her commit is refused before it is read.
        let rogue = c.remove(&ids[2], "bob").expect("cat commits locally");
        let e = b.apply(&rogue.commit, "cat").expect_err("refused");
        assert!(e.to_string().contains("does not commit"), "{e}");
        // A commit relayed under another member's name is refused too.
        let mut c = {
            let request = JoinRequest::new(&ids[2]).expect("request");
            let commit = a.remove(&ids[0], "cat").expect("remove");
            b.apply(&commit.commit, "ann").expect("apply");
            let commit = a
                .admit(&ids[0], &request.key_package, &member(&ids[2]))
                .expect("re-admit");
            b.apply(&commit.commit, "ann").expect("apply");
            request
                .accept(commit.welcome.as_deref().expect("welcome"))
                .expect("cat is back")
        };
        // Ann leaves: Bob is next in line and removes her; Cat takes it.
        // Bob's commit can reach Cat before Ann's Left does: until it does,
        // Bob does not commit for her (the call loop keeps the commit).
        b.mark_leaving("ann");
        assert!(b.is_committer() && !c.is_committer());
        let commit = b.remove(&ids[1], "ann").expect("bob removes ann");
        assert!(!c.commits("bob") && c.commits("ann"));
        assert_eq!(CallGroup::commit_epoch(&commit.commit), Some(c.epoch()));
        assert_eq!(CallGroup::commit_epoch(b"not a commit"), None);
        c.mark_leaving("ann");
        assert!(c.commits("bob"));
        let e = c.apply(&commit.commit, "ann").expect_err("not from ann");
        assert!(e.to_string().contains("does not commit"), "{e}");
        let applied = c.apply(&commit.commit, "bob").expect("from bob");
        assert_eq!(applied.removed, vec!["ann".to_owned()]);
        assert!(b.is_committer() && c.has("bob") && !c.has("ann"));
        assert_eq!(b.epoch(), c.epoch());
    }
}

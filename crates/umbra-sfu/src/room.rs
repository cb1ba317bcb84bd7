//! Rooms and the limits on joining them: which connections forward to
//! which, and how many a room, a credential and the whole unit may hold.
//! A room is a random id the members chose; the unit knows nothing else of
//! it (not the group, not the members' names). Pure bookkeeping: no I/O,
//! no WebRTC.

use std::collections::HashMap;

use thiserror::Error;

/// A room's id: 16 random bytes chosen by the member who starts the call,
/// sent to the others end to end. Its `Debug` shows nothing, so it never
/// reaches a log line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomId(pub [u8; 16]);

impl std::fmt::Debug for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomId(..)")
    }
}

/// One connection to the unit (a member's device in a call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// How much the unit takes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections in one room.
    pub per_room: usize,
    /// Connections open at once under one credential (a device, a rejoin).
    pub per_credential: usize,
    /// Connections in all rooms together.
    pub total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_room: 64,
            per_credential: 2,
            total: 2_000,
        }
    }
}

/// Why a join was refused for want of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The room holds as many as it may.
    #[error("the call is full ({0} connections)")]
    RoomFull(usize),
    /// The credential already has as many connections as it may.
    #[error("this credential already has {0} connections open (ask the server for another)")]
    CredentialBusy(usize),
    /// The unit holds as many as it may.
    #[error("the forwarding unit is at its limit of {0} connections: try again later")]
    Busy(usize),
}

struct Member {
    room: RoomId,
    credential: String,
}

/// Every room and who is in it.
#[derive(Default)]
pub struct Rooms {
    limits: Limits,
    rooms: HashMap<RoomId, Vec<PeerId>>,
    members: HashMap<PeerId, Member>,
    per_credential: HashMap<String, usize>,
    next: u64,
}

impl Rooms {
    /// No rooms yet, under `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Adds a connection to `room` (created by its first), under
    /// `credential` (the credential's username: it is what the limit
    /// counts).
    pub fn admit(&mut self, room: RoomId, credential: &str) -> Result<PeerId, Refusal> {
        let l = self.limits;
        if self.members.len() >= l.total {
            return Err(Refusal::Busy(l.total));
        }
        if self.rooms.get(&room).is_some_and(|r| r.len() >= l.per_room) {
            return Err(Refusal::RoomFull(l.per_room));
        }
        if self
            .per_credential
            .get(credential)
            .is_some_and(|&n| n >= l.per_credential)
        {
            return Err(Refusal::CredentialBusy(l.per_credential));
        }
        self.next += 1;
        let peer = PeerId(self.next);
        self.rooms.entry(room).or_default().push(peer);
        *self
            .per_credential
            .entry(credential.to_string())
            .or_default() += 1;
        self.members.insert(
            peer,
            Member {
                room,
                credential: credential.to_string(),
            },
        );
        Ok(peer)
    }

    /// Removes a connection; a room goes with its last. Returns whether
    /// it was there.
    pub fn remove(&mut self, peer: PeerId) -> bool {
        let Some(m) = self.members.remove(&peer) else {
            return false;
        };
        if let Some(r) = self.rooms.get_mut(&m.room) {
            r.retain(|&p| p != peer);
            if r.is_empty() {
                self.rooms.remove(&m.room);
            }
        }
        if let Some(n) = self.per_credential.get_mut(&m.credential) {
            *n -= 1;
            if *n == 0 {
                self.per_credential.remove(&m.credential);
            }
        }
        true
    }

    /// Everyone in `peer`'s room, `peer` included (empty if it is gone).
    pub fn room_of(&self, peer: PeerId) -> &[PeerId] {
        self.members
            .get(&peer)
            .and_then(|m| self.rooms.get(&m.room))
            .map_or(&[], Vec::as_slice)
    }

    /// Rooms with anyone in them.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Connections in all rooms.
    pub fn peers(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            per_room: 3,
            per_credential: 2,
            total: 5,
        }
    }

    #[test]
    fn rooms_fill_and_empty() {
        let mut r = Rooms::new(limits());
        let a = RoomId([1; 16]);
        let b = RoomId([2; 16]);
        let p1 = r.admit(a, "c1").expect("p1");
        let p2 = r.admit(a, "c2").expect("p2");
        let p3 = r.admit(a, "c3").expect("p3");
        assert_eq!(r.admit(a, "c4"), Err(Refusal::RoomFull(3)));
        assert_eq!(r.room_of(p2), &[p1, p2, p3]);
        let q1 = r.admit(b, "c1").expect("q1");
        // c1 has two connections open: a third is refused, in any room.
        assert_eq!(r.admit(b, "c1"), Err(Refusal::CredentialBusy(2)));
        r.admit(b, "c5").expect("q2");
        assert_eq!(r.admit(b, "c6"), Err(Refusal::Busy(5)));
        assert_eq!((r.rooms(), r.peers()), (2, 5));
        assert!(r.remove(p1) && !r.remove(p1));
        assert_eq!(r.room_of(p1), &[] as &[PeerId]);
        assert_eq!(r.room_of(p3), &[p2, p3]);
        // c1's slot is free again.
        r.admit(b, "c1").expect("c1 again");
        assert!(r.remove(q1));
        for p in [p2, p3] {
            r.remove(p);
        }
        assert_eq!(r.rooms(), 1, "an empty room goes");
        assert_eq!(format!("{a:?}"), "RoomId(..)");
    }
}

//! Which ICE candidates a call may use, and filtering of the other side's
//! SDP and trickled candidates by that rule.
//!
//! With "protect IP address" in force (either side asked for it, and every
//! call until the callee has answered and both sides allow a direct path) a
//! call is relay-only: this side gathers and sends only its relay candidate,
//! and a host or server-reflexive candidate from the other side is never
//! handed to ICE, so no connectivity check ever goes to the other side's own
//! address.

use std::net::SocketAddr;

use str0m::{Candidate, CandidateKind};

use crate::CallError;

/// A remote candidate we accepted: ICE gets it, the relay gets a permission.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The parsed candidate.
    pub candidate: Candidate,
    /// Its transport address.
    pub addr: SocketAddr,
}

/// Parses one candidate line (`candidate:…`, with or without `a=`).
pub fn parse(line: &str) -> Result<Candidate, CallError> {
    let line = line.trim().trim_start_matches("a=");
    Candidate::from_sdp_string(line)
        .map_err(|e| CallError::Signalling(format!("bad ICE candidate `{line}`: {e}")))
}

/// Whether a remote candidate may be used under the relay-only rule.
pub fn allowed(c: &Candidate, relay_only: bool) -> bool {
    !relay_only || c.kind() == CandidateKind::Relayed
}

/// Removes from `sdp` every candidate line the rule forbids, and returns the
/// filtered SDP with the candidates that stay. A malformed candidate line is
/// an error (the whole offer or answer is refused with it).
pub fn filter_sdp(sdp: &str, relay_only: bool) -> Result<(String, Vec<Accepted>), CallError> {
    filter_sdp_by(sdp, |c| allowed(c, relay_only))
}

/// [`filter_sdp`] with any rule: keeps the candidate lines `keep` allows.
pub fn filter_sdp_by(
    sdp: &str,
    keep: impl Fn(&Candidate) -> bool,
) -> Result<(String, Vec<Accepted>), CallError> {
    let mut out = String::with_capacity(sdp.len());
    let mut kept = Vec::new();
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if let Some(rest) = bare.strip_prefix("a=candidate:") {
            let c = parse(&format!("candidate:{rest}"))?;
            if !keep(&c) {
                continue;
            }
            kept.push(Accepted {
                addr: c.addr(),
                candidate: c,
            });
        }
        out.push_str(line);
    }
    Ok((out, kept))
}

/// The addresses of every candidate line in `sdp` (to check what an SDP
/// would reveal).
pub fn addresses(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|rest| parse(&format!("candidate:{rest}")).ok())
        .map(|c| c.addr())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SDP: &str = "v=0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=candidate:1 1 udp 2130706431 192.0.2.10 5000 typ host\r\n\
        a=candidate:2 1 udp 1694498815 198.51.100.7 6000 typ srflx raddr 192.0.2.10 rport 5000\r\n\
        a=candidate:3 1 udp 16777215 203.0.113.5 49152 typ relay raddr 0.0.0.0 rport 0\r\n\
        a=sendrecv\r\n";

    #[test]
    fn relay_only_keeps_only_relay_candidates() {
        let (sdp, kept) = filter_sdp(SDP, true).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].addr, "203.0.113.5:49152".parse().unwrap());
        assert!(!sdp.contains("192.0.2.10 5000"));
        assert!(!sdp.contains("198.51.100.7"));
        assert!(sdp.contains("a=sendrecv"));
        let (sdp, kept) = filter_sdp(SDP, false).unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(sdp, SDP);
    }

    #[test]
    fn malformed_candidates_are_refused_with_a_reason() {
        let bad = "a=candidate:1 1 udp nonsense\r\n";
        let e = filter_sdp(bad, true).unwrap_err();
        assert!(e.to_string().contains("bad ICE candidate"), "{e}");
        assert!(parse("candidate:x").is_err());
        assert_eq!(addresses(SDP).len(), 3);
    }
}

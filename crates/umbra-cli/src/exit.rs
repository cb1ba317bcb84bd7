//! Exit codes: distinct for what a script may want to act on (listed in the
//! README), 1 for everything else.

use std::process::ExitCode;

use umbra_client::ClientError;
use umbra_client::NetError;
use umbra_wire::WireError;
use umbra_wire::front::FrontError;
use umbra_wire::invite::InviteError;
use umbra_wire::proxy::ProxyLinkError;
use umbra_wire::upgrade::AnswerError;

/// What went wrong, for a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Anything not below.
    Other = 1,
    /// A flag, an argument or a link on the command line is not valid (as
    /// clap's own usage errors).
    Usage = 2,
    /// The profile holds no account: `umbra register` first.
    NotRegistered = 3,
    /// The server (or the proxy in front of it) could not be reached, or
    /// went away; what was being sent is kept and sent again by the next
    /// command.
    Unreachable = 4,
    /// The server, or the proxy, answered and refused: a wrong key in the
    /// invite, an unknown user, a name taken, a message over the server's
    /// size limit, a changed proxy link.
    Refused = 5,
    /// The profile is locked with a passphrase, and none or a wrong one was
    /// given: nothing was changed.
    Locked = 6,
}

impl From<Failure> for ExitCode {
    fn from(f: Failure) -> Self {
        ExitCode::from(f as u8)
    }
}

/// The failure `e` is, from the first error in its chain that says.
pub fn failure(e: &anyhow::Error) -> Failure {
    e.chain()
        .find_map(|cause| {
            if let Some(c) = cause.downcast_ref::<ClientError>() {
                return Some(client(c));
            }
            if let Some(n) = cause.downcast_ref::<NetError>() {
                return Some(net(n));
            }
            if let Some(w) = cause.downcast_ref::<WireError>() {
                return Some(wire(w));
            }
            (cause.is::<ProxyLinkError>()
                || cause.is::<InviteError>()
                || cause.is::<crate::unlock::NoPassphraseGiven>())
            .then_some(Failure::Usage)
        })
        .unwrap_or(Failure::Other)
}

fn client(e: &ClientError) -> Failure {
    match e {
        ClientError::NotRegistered(_) => Failure::NotRegistered,
        ClientError::PassphraseNeeded(_) | ClientError::WrongPassphrase(_) => Failure::Locked,
        ClientError::Unreachable { .. } | ClientError::Queued(..) => Failure::Unreachable,
        ClientError::Server { .. }
        | ClientError::UnknownUser(_)
        | ClientError::Unlinked(_)
        | ClientError::UnitRefused(_)
        | ClientError::TooLarge { .. } => Failure::Refused,
        ClientError::ProxyLink(_) | ClientError::Invite(_) | ClientError::Invalid(_) => {
            Failure::Usage
        }
        ClientError::Net(n) => net(n),
        _ => Failure::Other,
    }
}

fn net(e: &NetError) -> Failure {
    match e {
        NetError::Io(_)
        | NetError::Timeout(_)
        | NetError::ClosedDuringHandshake
        | NetError::Closed
        | NetError::Proxy(_) => Failure::Unreachable,
        NetError::Wire(w) => wire(w),
        NetError::ProxyAnswer(a) => match a {
            AnswerError::TurnedAway => Failure::Refused,
            AnswerError::ServerUnreachable | AnswerError::Closed => Failure::Unreachable,
            _ => Failure::Other,
        },
        NetError::Front(f) => match f {
            FrontError::TurnedAway => Failure::Refused,
            _ => Failure::Unreachable,
        },
        _ => Failure::Other,
    }
}

fn wire(e: &WireError) -> Failure {
    match e {
        WireError::ServerKeyMismatch | WireError::ServerNotAuthenticated => Failure::Refused,
        _ => Failure::Other,
    }
}

//! `umbra bench`: load against a running Umbra server.
//!
//! Phase 1 (throughput and latency): `clients` receivers register and log in;
//! `clients` anonymous senders send pre-built opaque envelopes (random bytes
//! with the send time in the first 8 bytes) to the receivers' mailboxes with
//! their delivery tokens, pipelining up to `window` requests each. Receivers
//! ack what they get and record end-to-end latency (send → push) in an HDR
//! histogram. Reports delivered messages/s and p50/p99 latency.
//!
//! Phase 2 (memory): with `--server-pid`, reads the server's VmRSS from
//! `/proc/<pid>/status`, opens `idle_connections` logged-in sessions, reads it
//! again and divides the growth by the number of sessions.
//!
//! Everything is bounded: a fixed message count, a deadline, and a fixed
//! number of sessions. Only the addresses in the invite links are contacted.
//!
//! Layout: [`args`] (flags), [`session`] (protocol client), [`throughput`]
//! (phase 1), [`memory`] (phase 2), [`progress`] (status line), [`report`];
//! [`proxy_bench`] is `umbra bench proxy`, the proxy against HAProxy;
//! [`relay_bench`] is `umbra bench relay`, the call relay against coturn;
//! [`call_bench`] is `umbra bench call`, calls between two users (time to
//! audio, RTT per relay hop, endpoint CPU and memory, audio under impairment);
//! [`sfu_bench`] is `umbra bench sfu`, the group call forwarding unit as
//! rooms grow, beside Janus's VideoRoom with `--janus` ([`janus`] runs
//! Janus and speaks its HTTP API, `janus_peer` is a member's peer
//! connection toward it, `sfu_janus` its members and network namespace);
//! [`business_bench`] is `umbra bench business`, the business host's API
//! (messages a second to distinct customers, delay to their devices and to
//! the webhooks; [`business_load`] its customers, calls and receiver);
//! [`xmpp_bench`] is `umbra bench xmpp`, the same workload against an XMPP
//! server ([`ejabberd`] runs a private one, [`xmpp`] is the load client);
//! [`cpu`] reads processes' CPU time for both; [`mls_bench`] is `umbra bench
//! mls`, a conversation's MLS costs as it grows, classical beside
//! post-quantum (in memory, no server); [`ledger_bench`] is `umbra bench
//! groups`, how long a group change takes when members make them at once;
//! [`devices_bench`] is `umbra bench devices`, what a message costs as users
//! have more devices; [`attachments_bench`] is `umbra bench attachments`, a
//! large file up and down beside curl and nginx.

pub mod args;
pub mod attachments_bench;
pub mod business_bench;
pub mod business_load;
pub mod call_bench;
pub mod cpu;
pub mod devices_bench;
pub mod ejabberd;
mod janus;
mod janus_peer;
pub mod ledger_bench;
pub mod memory;
pub mod mls_bench;
pub mod progress;
pub mod proxy_bench;
pub mod relay_bench;
pub mod report;
pub mod session;
pub mod sfu_bench;
mod sfu_janus;
pub mod throughput;
mod util;
pub mod xmpp;
pub mod xmpp_bench;

pub use args::BenchArgs;
pub use report::{MemoryReport, Report};

use anyhow::Context;
use umbra_wire::invite::Invite;

/// Runs both phases against the server named by `args.invite`.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let link = args
        .invite
        .as_deref()
        .context("name the server to load: umbra bench --invite LINK (or `umbra bench proxy`)")?;
    let invite = Invite::parse(link).context("parsing the invite link")?;
    let mut nodes = vec![invite.clone()];
    for other in &args.also_invite {
        nodes.push(Invite::parse(other).context("parsing an --also-invite link")?);
    }
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let throughput = throughput::run(&nodes, args).await?;
    let memory = match (args.server_pid, args.idle_connections) {
        (Some(pid), k) if k > 0 => {
            // Leave room for the bench's own descriptors.
            let fit = usize::try_from(fd_limit.saturating_sub(200)).unwrap_or(usize::MAX);
            let k = k.min(fit);
            Some(memory::run(&invite, pid, k, args.progress()).await?)
        }
        _ => None,
    };
    Ok(Report { throughput, memory })
}

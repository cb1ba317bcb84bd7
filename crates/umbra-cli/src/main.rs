//! `umbra`: one binary for the operator's daemons and the user's commands.
//!
//! - `daemon`: `serve` (all-in-one node) and `server` (messaging server alone).
//! - `commands`: the client commands (register, send, group, listen, ...).
//! - `calling`: the call commands (call, the call half of listen, calls, settings).
//! - `server_admin`: the operator's commands beside a running server.
//! - `output`: human-readable and `--json` rendering.
//! - `demo`: a guided tour on a temporary node.
//! - `exit`: exit codes for scripts.
//! - `unlock`: the profile's passphrase (where it comes from) and
//!   `umbra passphrase`.
//! - `flags`: the client flags (`--profile`, `--json`, `--proxy`), on the
//!   commands they mean something to.

/// `println!` for the command's output, ending the command quietly when the
/// reader has gone (see `output::line`).
macro_rules! say {
    () => { $crate::output::line(format_args!("")) };
    ($($t:tt)*) => { $crate::output::line(format_args!($($t)*)) };
}

/// `eprintln!` for what the user is told beside the output (see `output::tell`).
macro_rules! tell {
    ($($t:tt)*) => { $crate::output::tell(format_args!($($t)*)) };
}

mod attach;
mod business_host;
mod calling;
mod commands;
mod daemon;
mod demo;
mod devices;
mod exit;
mod flags;
mod output;
mod server_admin;
mod unlock;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc: less fragmentation than the system allocator when the daemons
/// mix many small long-lived allocations (idle connections) with short-lived
/// ones, which is most of what an idle connection costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Umbra: private messaging. End-to-end encrypted chats and groups; the
/// server sees neither what you say nor who sends it.
#[derive(Debug, Parser)]
#[command(name = "umbra", version, propagate_version = true)]
struct Cli {
    // The client flags are also taken before the command (`umbra --profile
    // DIR send ...`), as earlier versions took them; each client command
    // lists them in its own help (see `flags`).
    #[arg(long, hide = true, value_name = "DIR")]
    profile: Option<PathBuf>,
    #[arg(long, hide = true)]
    json: bool,
    #[arg(long, hide = true, value_name = "LINK")]
    proxy: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run an all-in-one Umbra node: the messaging server and the call relay
    /// (which share a generated secret, so clients get relay credentials).
    Serve(daemon::ServeArgs),
    /// Run the messaging server alone.
    Server(server_admin::ServerCommand),
    /// Run the call relay alone: a standard TURN server (UDP, TCP, TLS) with
    /// time-limited REST credentials, as coturn's static-auth-secret.
    Relay(umbra_relay::RelayArgs),
    /// Run a censorship-circumvention proxy (volunteers: see the README's
    /// tutorial), or check one with `umbra proxy doctor`.
    Proxy(commands::ProxyCommand),
    /// Network settings of this profile: the proxy to go through.
    #[command(subcommand)]
    Network(commands::NetworkCommand),
    /// Create an account on a server, from the invite link its operator shared.
    Register {
        /// The server's invite link (umbra://join?...), printed by `umbra serve`.
        #[arg(long, env = "UMBRA_INVITE")]
        invite: String,
        /// The username to take: 3-32 characters a-z, 0-9, '_', '.', '-'.
        username: String,
        /// Keep the profile without a passphrase: it is still encrypted, but
        /// its key lies beside it, so anyone who copies the directory reads
        /// it. Without this flag a passphrase is asked on the terminal (or
        /// taken from UMBRA_PASSPHRASE / --passphrase-fd).
        #[arg(long)]
        no_passphrase: bool,
    },
    /// Send a 1:1 message (starts the conversation if needed): text, a
    /// file (--file), a voice message (--voice) or a location (--location).
    Send {
        /// Recipient's username.
        to: String,
        /// The message text (a caption, with --file or --voice).
        #[arg(required_unless_present_any = ["file", "voice", "location"])]
        text: Option<String>,
        #[command(flatten)]
        attach: attach::Attach,
    },
    /// Group conversations.
    #[command(subcommand)]
    Group(commands::GroupCommand),
    /// Receive messages and calls as they arrive, until Ctrl-C. An incoming
    /// call asks whether to answer (or answers itself with --auto-answer).
    Listen {
        /// Answer every call that rings (for scripts and headless machines).
        #[arg(long)]
        auto_answer: bool,
        #[command(flatten)]
        media: calling::MediaArgs,
    },
    /// Call USER: rings them, says whether the call is direct or relayed,
    /// shows live quality; Ctrl-C hangs up. Or start or join the call in
    /// the group GROUP (always relayed through the forwarding unit): shows
    /// who is in it, each one's level and loss; Ctrl-C leaves.
    Call {
        /// Who to call: a username, or a group conversation's name.
        #[arg(value_name = "USER|GROUP")]
        user: String,
        #[command(flatten)]
        media: calling::MediaArgs,
        #[command(flatten)]
        ring: calling::RingArgs,
    },
    /// The call log: answered, missed, declined, silenced calls.
    Calls {
        /// Most calls to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Settings: protect IP address in calls, who can call you, read
    /// receipts, attachments fetched on arrival.
    #[command(subcommand)]
    Settings(calling::SettingsCommand),
    /// Receive what is waiting, then exit.
    Sync,
    /// Show message history (after fetching what is waiting).
    History {
        /// Only this conversation (a username for 1:1, or a group name).
        conversation: Option<String>,
        /// Most messages to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Do not contact the server first.
        #[arg(long)]
        offline: bool,
    },
    /// List the people you have talked to, with their key fingerprints.
    Contacts,
    /// Block USER: nothing from them is shown (messages, calls, receipts),
    /// no receipt goes back to them, and nothing can be sent to them.
    Block {
        /// Their username.
        user: String,
    },
    /// Unblock USER.
    Unblock {
        /// Their username.
        user: String,
    },
    /// List the accounts you blocked.
    Blocked,
    /// Business accounts: make this one a business (its name and card), or
    /// look at another's; run the business host (`serve`) and its tokens.
    #[command(subcommand)]
    Business(commands::BusinessCommand),
    /// List conversations and their members.
    Conversations,
    /// List the files and voice messages received and sent, with the ids
    /// `umbra save` and `umbra play` take; or delete one you sent from the
    /// server.
    Attachments {
        #[command(subcommand)]
        cmd: Option<attach::AttachmentsCommand>,
    },
    /// Play a voice message (fetching it first if needed) on the speaker,
    /// or export it as a WAV file with --out.
    Play {
        /// The message id (a prefix is enough), from `umbra attachments`.
        id: String,
        /// `speaker` (needs a build with the `audio-device` feature), or a
        /// path to write a 48 kHz mono WAV file to.
        #[arg(long, value_name = "speaker|PATH.wav", default_value = "speaker")]
        out: String,
    },
    /// Fetch an attachment, check it, and write it to PATH (default: its
    /// name, in the current directory).
    Save {
        /// The message id (a prefix is enough), from `umbra attachments`.
        id: String,
        /// Where to write it (a directory keeps its name).
        path: Option<std::path::PathBuf>,
    },
    /// Show the safety number to compare with USER out of band.
    Verify {
        /// The other person's username.
        user: String,
        /// Record that you compared the numbers and they matched.
        #[arg(long)]
        mark_verified: bool,
    },
    /// Show this profile's account and server.
    Whoami,
    /// This account's devices: list them (no subcommand), link a new one,
    /// unlink one.
    Devices {
        #[command(subcommand)]
        cmd: Option<devices::DevicesCommand>,
    },
    /// Make this machine one of your devices: give it the link (or code)
    /// `umbra devices link` shows on a device you already use, then
    /// confirm there the fingerprint this one prints.
    Link {
        /// The link (umbra://link?...), or the code with --invite.
        link: String,
        /// The server's invite link, when LINK is a bare code.
        #[arg(long, env = "UMBRA_INVITE")]
        invite: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Keep the profile without a passphrase (see `umbra register`).
        #[arg(long)]
        no_passphrase: bool,
    },
    /// The passphrase that locks this profile: status, set or change, remove.
    #[command(subcommand)]
    Passphrase(unlock::PassphraseCommand),
    /// Print WebRTC `iceServers` for the server's call relay, with
    /// time-limited credentials (any WebRTC app can use them).
    IceServers,
    /// A guided tour: a temporary server and three scripted users (alice,
    /// bob, carol) exchange 1:1 and group messages, one of them offline for
    /// a while; then it shows what the server stored.
    Demo,
    /// Load-test a running `umbra server`: delivered messages/s, end-to-end
    /// latency (p50/p99) and server memory per idle connection.
    Bench(BenchCommand),
}

/// `umbra bench` (the messaging server) or `umbra bench proxy`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct BenchCommand {
    #[command(subcommand)]
    which: Option<BenchWhich>,
    #[command(flatten)]
    args: umbra_bench::BenchArgs,
}

#[derive(Debug, Subcommand)]
enum BenchWhich {
    /// The Umbra proxy side by side with HAProxy: bulk throughput, new
    /// connections/s, memory per idle connection.
    Proxy(umbra_bench::proxy_bench::ProxyBenchArgs),
    /// The Umbra call relay side by side with coturn: relayed packets/s, CPU per
    /// packet, round-trip latency, against a raw UDP forwarder.
    Relay(umbra_bench::relay_bench::RelayBenchArgs),
    /// Calls between two users on this machine: time to audio, RTT through
    /// zero, one and two relays, the caller's CPU and memory, and audio under
    /// a userspace impairer (loss and jitter).
    Call(umbra_bench::call_bench::CallBenchArgs),
    /// The group call forwarding unit: forwarded streams per core and delay
    /// as rooms grow, the largest room and the most rooms of 4 it holds.
    Sfu(umbra_bench::sfu_bench::SfuBenchArgs),
    /// The business host: messages a second one business sends through the
    /// API to distinct customers, and the delay to their devices and to the
    /// `sent` webhook, beside WhatsApp Cloud API's tiers.
    Business(umbra_bench::business_bench::BusinessBenchArgs),
    /// `umbra bench`'s workload against an XMPP server (a private ejabberd
    /// by default): delivered messages/s, latency, memory per idle session.
    Xmpp(umbra_bench::xmpp_bench::XmppBenchArgs),
    /// A conversation's MLS costs as it grows (key package, add and Welcome,
    /// self-update: bytes and time), the classical ciphersuite beside a
    /// post-quantum one (X-Wing), in memory.
    Mls(umbra_bench::mls_bench::MlsBenchArgs),
    /// How long a group change takes when several members make one at the
    /// same moment (the epoch ledger): delay and lost claims per change.
    Groups(umbra_bench::ledger_bench::LedgerBenchArgs),
    /// What a message costs when each user has several devices (each its
    /// own member): envelopes, bytes and send time per message.
    Devices(umbra_bench::devices_bench::DevicesBenchArgs),
    /// One large file uploaded and downloaded as an attachment, beside the
    /// same bytes through curl and a local nginx: MiB/s and CPU per MiB.
    Attachments(umbra_bench::attachments_bench::AttachmentsBenchArgs),
}

fn default_profile() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("umbra").join("profile");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/umbra/profile"),
        None => PathBuf::from(".umbra-profile"),
    }
}

fn main() -> std::process::ExitCode {
    let (cli, flags) = flags::parse();
    // A client command is a few small structures (plus a call's buffers).
    // With transparent huge pages the allocator's arena is backed 2 MiB at a
    // time, which nearly doubled a client's memory (`umbra whoami`: 26.8 MB
    // with, 14.5 MB without). Set before the runtime's threads exist.
    let daemon = matches!(
        cli.command,
        Command::Serve(_)
            | Command::Server(_)
            | Command::Relay(_)
            | Command::Proxy(_)
            | Command::Bench(_)
            | Command::Demo
            | Command::Business(
                commands::BusinessCommand::Serve(_) | commands::BusinessCommand::ReceiveWebhooks(_)
            )
    );
    if !daemon {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tell!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let json = flags.json;
    let result = runtime.block_on(run(cli, flags));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            output::error(json, &e);
            exit::failure(&e).into()
        }
    }
}

/// Runs one bench and prints its report.
async fn bench(b: BenchCommand, out: output::Output) -> anyhow::Result<()> {
    match b.which {
        Some(BenchWhich::Proxy(args)) => {
            let report = umbra_bench::proxy_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Relay(args)) => {
            let report = umbra_bench::relay_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Call(args)) => {
            let report = umbra_bench::call_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Sfu(args)) => {
            let report = umbra_bench::sfu_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Business(args)) => {
            let report = umbra_bench::business_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Mls(args)) => {
            let report =
                tokio::task::spawn_blocking(move || umbra_bench::mls_bench::run(&args)).await??;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Groups(args)) => {
            let report = umbra_bench::ledger_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Devices(args)) => {
            let report = umbra_bench::devices_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Attachments(args)) => {
            let report = umbra_bench::attachments_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        Some(BenchWhich::Xmpp(args)) => {
            let report = umbra_bench::xmpp_bench::run(&args).await?;
            out.value(&report, &report.to_string());
        }
        None => {
            let report = umbra_bench::run(&b.args).await?;
            out.value(&report, &report.to_string());
        }
    }
    Ok(())
}

async fn run(cli: Cli, flags: flags::ClientFlags) -> anyhow::Result<()> {
    let profile = flags.profile.unwrap_or_else(default_profile);
    let out = output::Output { json: flags.json };
    let proxy = match &flags.proxy {
        Some(text) => Some(umbra_wire::proxy::ProxyLink::parse(text)?),
        None => None,
    };
    match cli.command {
        Command::Serve(args) => daemon::serve_all(args).await,
        Command::Server(s) => match s.admin {
            // Blocking database work (PostgreSQL's client runs its own
            // runtime), off the async one.
            Some(server_admin::ServerAdmin::Business(cmd)) => {
                tokio::task::spawn_blocking(move || server_admin::run(cmd)).await?
            }
            Some(server_admin::ServerAdmin::Doctor(args)) => {
                server_admin::doctor(args, output::Output { json: false }).await
            }
            Some(server_admin::ServerAdmin::Backup { to, args }) => {
                tokio::task::spawn_blocking(move || server_admin::backup(&to, &args)).await?
            }
            None => daemon::serve(s.args).await,
        },
        Command::Relay(args) => daemon::relay(args).await,
        Command::Business(commands::BusinessCommand::Serve(args)) => {
            daemon::init_logging("info");
            business_host::serve(args).await
        }
        Command::Business(commands::BusinessCommand::Token(cmd)) => business_host::token(cmd, out),
        Command::Business(commands::BusinessCommand::ReceiveWebhooks(args)) => {
            daemon::init_logging("info");
            business_host::receive(args).await
        }
        Command::Proxy(p) => daemon::proxy(p).await,
        Command::Demo => {
            daemon::init_logging("warn");
            demo::run(out).await
        }
        Command::Bench(b) => {
            daemon::init_logging("warn");
            umbra_bench::progress::set_quiet(out.json);
            // Stopped by Ctrl-C or SIGTERM, a bench drops what it started:
            // its servers are killed and its scratch files removed.
            tokio::select! {
                r = bench(b, out) => r,
                _ = daemon::shutdown_signal() => {
                    anyhow::bail!("interrupted: the servers the bench started are stopped")
                }
            }
        }
        Command::Devices { cmd } => {
            daemon::init_logging("warn");
            devices::run(cmd, &profile, &proxy, flags.passphrase_fd, out).await
        }
        Command::Link {
            link,
            invite,
            timeout,
            no_passphrase,
        } => {
            daemon::init_logging("warn");
            let passphrase = unlock::for_new_profile(&profile, flags.passphrase_fd, no_passphrase)?;
            let passphrase = passphrase.as_deref().map(|p| p.as_str());
            devices::join(
                &link,
                invite.as_deref(),
                timeout,
                &profile,
                proxy,
                passphrase,
                out,
            )
            .await
        }
        other => {
            daemon::init_logging("warn");
            commands::run(other, &profile, proxy, flags.passphrase_fd, out).await
        }
    }
}

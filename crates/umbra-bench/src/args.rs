//! Flags of `umbra bench`.

/// Load test options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Invite link of the server to load (the only address contacted).
    #[arg(long, env = "UMBRA_INVITE")]
    pub invite: Option<String>,
    /// Another node of the same service (nodes sharing one database), to
    /// spread the load over; repeat for each. Receivers take the nodes in
    /// turn and each sender sits on the node after its receiver's, so most
    /// messages cross between nodes (their delay is reported apart).
    #[arg(long = "also-invite", value_name = "LINK")]
    pub also_invite: Vec<String>,
    /// Receiving clients; as many anonymous senders run alongside.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Envelopes to deliver in phase 1.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Size of each sealed envelope in bytes (at least 16).
    #[arg(long, default_value_t = 256)]
    pub envelope_bytes: usize,
    /// Sends each sender keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Total sends per second across all senders (0: as fast as the window allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Phase 1 stops after this many seconds even if not everything arrived.
    #[arg(long, default_value_t = 120)]
    pub max_secs: u64,
    /// Logged-in idle connections for the memory phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
    /// Process id of the server, for the memory phase (which is skipped
    /// without it). E.g. `--server-pid $(pidof umbra)`.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Do not draw the progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    /// Defaults for `invite` (as the flags would give).
    pub fn new(invite: String) -> Self {
        Self {
            invite: Some(invite),
            also_invite: Vec::new(),
            clients: 50,
            messages: 200_000,
            envelope_bytes: 256,
            window: 64,
            rate: 0,
            max_secs: 120,
            idle_connections: 10_000,
            server_pid: None,
            quiet: false,
        }
    }

    /// Whether to draw progress.
    pub fn progress(&self) -> bool {
        !self.quiet
    }
}

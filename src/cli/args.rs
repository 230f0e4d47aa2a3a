//! The command line: every subcommand and flag of `otpgate`, as clap reads them.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{Args, Parser, Subcommand};

use otpgate_actors::ComputerId;
use otpgate_protocol::admin::{OptionNameView, OptionsView, RoleView};
use otpgate_protocol::version::{self, Versions};

use crate::agent::link::ServerAddr;
use crate::agent::socket::{DEFAULT_PER_USER_PER_SECOND, DEFAULT_SOCKET};
use crate::agent::spool::{DEFAULT_SPOOL, DEFAULT_SPOOL_MIB};
use crate::server::INITIAL_ADMIN;
use crate::server::config::DEFAULT_DATA_DIR;
use crate::server::service::DEFAULT_GENERATE_COMMENT;

/// What `--version` prints: the software's version, and the versions of each
/// wire it speaks (see `otpgate_protocol::version`).
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let range = |v: Versions| format!("{}-{}", v.oldest, v.newest);
    format!(
        "{} (agent protocol {}, local socket {}, admin socket {})",
        env!("CARGO_PKG_VERSION"),
        range(version::AGENT),
        range(version::LOCAL),
        range(version::ADMIN),
    )
});

#[derive(Parser)]
#[command(
    version = VERSION.as_str(),
    about = "Gates logins to client computers behind one-time passwords"
)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand)]
pub(super) enum Command {
    /// Run the server.
    Serve {
        /// A TOML configuration file; without it the embedded defaults apply.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data folder (database, PKI, outbox).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The address to listen on for agents.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Issue certificates.
    #[command(subcommand)]
    Certs(Certs),
    /// Run the agent of a client computer.
    Agent {
        /// The server, as HOST:PORT; HOST must be a name in its certificate.
        #[arg(long)]
        server: ServerAddr,
        /// The folder that `otpgate certs client` wrote for this computer.
        #[arg(long)]
        identity: PathBuf,
        /// Where to serve the login prompt.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Login requests each local OS user may send per second (bursts of
        /// twice that); more are answered with the time to wait.
        #[arg(long, default_value_t = DEFAULT_PER_USER_PER_SECOND)]
        per_user_per_second: NonZeroU32,
        /// Where terminal recordings wait for the server (made root's only).
        #[arg(long, default_value = DEFAULT_SPOOL)]
        spool: PathBuf,
        /// The most the spool holds, in MiB; past it new recording output is
        /// refused (what is spooled is kept).
        #[arg(long, default_value_t = DEFAULT_SPOOL_MIB)]
        spool_mib: u64,
    },
    /// Run a shell (or COMMAND) under a pseudo-terminal and record what it
    /// shows, for the server (through the local agent). Meant as sshd's
    /// `ForceCommand`: without COMMAND it runs what the SSH client asked for,
    /// else the user's login shell. Exits with the command's status.
    Record {
        /// The agent's socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Record typed input too (passwords typed at prompts included),
        /// whatever the computer's `record_input` option says.
        #[arg(long)]
        input: bool,
        /// The most recording held in memory while the agent does not take
        /// it, in MiB; past it output is left out of the recording (which is
        /// marked incomplete), never out of the terminal.
        #[arg(long, default_value_t = 16)]
        buffer_mib: usize,
        /// Internal: hand recording chunks read from stdin to the agent.
        #[arg(long, hide = true)]
        deliver: bool,
        /// The command and its arguments.
        #[arg(last = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// The login prompt, talking to the local agent: interactive without a
    /// subcommand. Exits 0 on success, 1 when refused or denied, 2 on an error.
    Login {
        /// The agent's socket.
        #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Act for another OS user (root only).
        #[arg(long, global = true)]
        os_user: Option<String>,
        /// Print one JSON document.
        #[arg(long, global = true)]
        json: bool,
        /// Interactive: how long to wait for the approvers' decision on an
        /// access request, in seconds (0: tell the person to come back).
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        approval_wait: u64,
        #[command(subcommand)]
        step: Option<Login>,
    },
    /// Load-test a server it starts itself, over real mutual TLS on loopback.
    #[command(subcommand)]
    Bench(Bench),
    /// The Management Tool on the command line, talking to the running server.
    /// Exits 0 on success, 1 when refused, 2 on an error.
    Admin {
        /// The server's data folder (its admin socket is there).
        #[arg(long, global = true, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Print one JSON document.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: Admin,
    },
}

#[derive(Subcommand)]
pub(super) enum Certs {
    /// Issue a client computer's certificate and key, with the CA certificate.
    Client {
        /// The computer's name; it becomes its identity.
        name: ComputerId,
        /// The folder to write client.pem, client.key and ca.pem into.
        #[arg(long)]
        out: PathBuf,
        /// The server's data folder, which holds the CA.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Revoke every certificate issued so far to a client computer: the
    /// running server closes its connections at once and refuses them, resumed
    /// sessions included. Issue a new one to let the computer back in.
    Revoke {
        /// The computer's name.
        name: ComputerId,
        /// The server's data folder.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub(super) enum Login {
    /// What the prompt would show: options, the request's state, validity.
    Status,
    /// Whether the agent is connected, and who it takes you for.
    Agent,
    /// Request a one-time password.
    Request {
        /// With your email address (an access request to the approvers).
        #[arg(long, conflicts_with_all = ["ad", "internal"])]
        email: Option<String>,
        /// As an Active Directory user: the directory knows your address.
        #[arg(long)]
        ad: bool,
        /// As internal user LOGIN; the password is read from standard input.
        #[arg(long, value_name = "LOGIN")]
        internal: Option<String>,
        /// I need emergency access to computer (with --email).
        #[arg(long, requires = "email")]
        emergency: bool,
    },
    /// Email the valid one-time password again.
    Resend,
    /// Check a one-time password, read from standard input.
    Verify {
        /// The email address it was sent to.
        #[arg(long)]
        email: String,
    },
    /// Log out: end your client session.
    Logout {
        /// One session in particular.
        #[arg(long)]
        session: Option<u64>,
    },
}

#[derive(Subcommand)]
pub(super) enum Bench {
    /// N agents connect at once and hold their connections with heartbeats.
    Hold {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Seconds to hold once all are connected.
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// N agents connect; the server is restarted under them; time their return.
    Reconnect {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Stop the server with SIGKILL instead of SIGTERM.
        #[arg(long)]
        kill: bool,
    },
    /// Agents log in over and over: request (auto-send), OTP from the mail,
    /// verify, log out. Each agent does one login at a time, and the server's
    /// flood control lets one connection send 20 requests a second (a login is
    /// three): run at least one agent per 6 logins a second of target rate.
    Logins {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        storm: StormArgs,
    },
    /// Attackers send wrong OTPs as fast as they can while the other agents log in.
    Flood {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        storm: StormArgs,
        /// How many of the agents attack.
        #[arg(long, default_value_t = 10)]
        attackers: usize,
    },
    /// How long the [ldap] directory of a server's configuration takes to
    /// answer for one account, cache cold and warm.
    Directory {
        /// The server's configuration file (its [ldap] section).
        #[arg(long)]
        config: PathBuf,
        /// The account to look up.
        #[arg(long)]
        account: String,
        /// Lookups in each run.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// What `otpgate record` costs a terminal: keystroke-to-echo time and the
    /// throughput of a `cat` of a large file, straight and recorded.
    Record {
        /// Keystrokes, one at a time, in each run.
        #[arg(long, default_value_t = 2000)]
        keys: u64,
        /// The size of the file printed, in MiB.
        #[arg(long, default_value_t = 100)]
        mebibytes: u64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// What every bench scenario is run with.
#[derive(Args)]
pub(super) struct FleetArgs {
    /// How many agents.
    #[arg(long, default_value_t = 1000)]
    pub(super) agents: usize,
    /// How many 127.0.0.x source addresses to spread them over.
    #[arg(long, default_value_t = 8)]
    pub(super) sources: u8,
    /// The server's heartbeat interval, in seconds.
    #[arg(long, default_value_t = 30)]
    pub(super) heartbeat: u64,
    /// Where the server's data and the agents' identities are kept between runs.
    #[arg(long, default_value = "./otpgate-bench")]
    pub(super) work_dir: PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    pub(super) json: bool,
}

impl FleetArgs {
    pub(super) fn options(&self) -> crate::bench::FleetOptions {
        crate::bench::FleetOptions {
            agents: self.agents,
            sources: self.sources,
            heartbeat: std::time::Duration::from_secs(self.heartbeat.max(1)),
            work_dir: self.work_dir.clone(),
        }
    }
}

/// How hard a login storm goes.
#[derive(Args)]
pub(super) struct StormArgs {
    /// Logins started per second; without it, as fast as the agents can.
    #[arg(long)]
    pub(super) rate: Option<f64>,
    /// Logins in all, at most.
    #[arg(long, default_value_t = 10_000)]
    pub(super) count: usize,
    /// Seconds after which no login starts.
    #[arg(long, default_value_t = 30)]
    pub(super) duration: u64,
}

impl StormArgs {
    pub(super) fn options(&self) -> crate::bench::LoginOptions {
        crate::bench::LoginOptions {
            count: self.count,
            rate: self.rate.filter(|r| *r > 0.0),
            duration: std::time::Duration::from_secs(self.duration),
        }
    }
}

#[derive(Subcommand)]
pub(super) enum Admin {
    /// System Settings.
    #[command(subcommand)]
    Settings(AdminSettings),
    /// Client computers.
    #[command(subcommand)]
    Clients(AdminClients),
    /// Client groups.
    #[command(subcommand)]
    Groups(AdminGroups),
    /// Internal users.
    #[command(subcommand)]
    Users(AdminUsers),
    /// Access requests.
    #[command(subcommand)]
    Requests(AdminRequests),
    /// One-time passwords.
    #[command(subcommand)]
    Otp(AdminOtp),
    /// Client sessions.
    #[command(subcommand)]
    Sessions(AdminSessions),
    /// The audit log.
    #[command(subcommand)]
    Audit(AdminAudit),
    /// Mail delivery.
    #[command(subcommand)]
    Mail(AdminMail),
    /// The directory of Active Directory accounts.
    #[command(subcommand)]
    Directory(AdminDirectory),
    /// Terminal recordings.
    #[command(subcommand)]
    Recordings(AdminRecordings),
}

#[derive(Subcommand)]
pub(super) enum AdminDirectory {
    /// What the directory holds on an OS account (asked afresh), and how long
    /// it took.
    Test {
        /// The account: name, DOMAIN\name or name@realm.
        account: String,
    },
}

#[derive(Subcommand)]
pub(super) enum AdminMail {
    /// Messages given up on (a 5xx from the relay, or too many tries).
    Failures(PageArgs),
    /// Messages waiting to be delivered, with their failed tries so far.
    Queue(PageArgs),
    /// Send a test message now and show what the relay said.
    Test {
        /// The recipient.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
pub(super) enum AdminSettings {
    /// Show them.
    Get,
    /// Change those named.
    Set {
        /// Access Request Expiration Time.
        #[arg(long)]
        expiration_minutes: Option<u64>,
        /// Shortest time between two new OTPs for one computer and user.
        #[arg(long)]
        new_otp_interval_minutes: Option<u64>,
        /// Digits per OTP (6 to 12).
        #[arg(long)]
        otp_length: Option<u8>,
        /// Wrong attempts after which an OTP is locked.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Failures allowed per computer and per account within the window.
        #[arg(long)]
        max_failures: Option<u32>,
        /// The window over which failures are counted.
        #[arg(long)]
        failure_window_minutes: Option<u64>,
        /// Shortest time between two emails of the same OTP.
        #[arg(long)]
        resend_gap_secs: Option<u64>,
        /// New OTPs and access requests one computer may cause within the
        /// failure window.
        #[arg(long)]
        max_new_per_computer: Option<u32>,
        /// How long a client session stays open while its computer's agent is
        /// not heard from.
        #[arg(long)]
        session_timeout_minutes: Option<u64>,
        /// How long the audit log, ended sessions, decided requests and
        /// given-up messages are kept.
        #[arg(long)]
        retention_days: Option<u64>,
    },
}

/// The options of a group or a computer; what is not given stays.
#[derive(Args)]
pub(super) struct OptionArgs {
    /// Allow the use of one-time passwords.
    #[arg(long)]
    pub(super) allow_otp: Option<bool>,
    /// Users Who Can Approve Access: internal login names, or directory
    /// accounts and groups as CORP\name (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub(super) approvers: Option<Vec<String>>,
    /// Automatically send one-time passwords to Active Directory users.
    #[arg(long)]
    pub(super) auto_ad: Option<bool>,
    /// Automatically send one-time passwords to internal users.
    #[arg(long)]
    pub(super) auto_internal: Option<bool>,
    /// Record typed input in recorded terminals (passwords typed at prompts
    /// too).
    #[arg(long)]
    pub(super) record_input: Option<bool>,
    /// Put these options back to inherit (from the group, or the defaults).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(super) inherit: Vec<OptionArg>,
}

/// An option's name on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum OptionArg {
    AllowOtp,
    Approvers,
    AutoAd,
    AutoInternal,
    RecordInput,
}

impl OptionArgs {
    pub(super) fn view(self) -> OptionsView {
        OptionsView {
            allow_otp: self.allow_otp,
            approvers: self
                .approvers
                .map(|a| a.into_iter().filter(|s| !s.is_empty()).collect()),
            auto_directory: self.auto_ad,
            auto_internal: self.auto_internal,
            record_input: self.record_input,
            inherit: self
                .inherit
                .into_iter()
                .map(|name| match name {
                    OptionArg::AllowOtp => OptionNameView::AllowOtp,
                    OptionArg::Approvers => OptionNameView::Approvers,
                    OptionArg::AutoAd => OptionNameView::AutoDirectory,
                    OptionArg::AutoInternal => OptionNameView::AutoInternal,
                    OptionArg::RecordInput => OptionNameView::RecordInput,
                })
                .collect(),
        }
    }
}

#[derive(Subcommand)]
pub(super) enum AdminClients {
    /// List them.
    List(PageArgs),
    /// Change one.
    Set {
        /// The computer.
        name: String,
        /// Put it in this group.
        #[arg(long, conflicts_with = "no_group")]
        group: Option<String>,
        /// Take it out of its group.
        #[arg(long)]
        no_group: bool,
        #[command(flatten)]
        options: OptionArgs,
    },
}

#[derive(Subcommand)]
pub(super) enum AdminGroups {
    /// List them.
    List,
    /// Create or change one.
    Set {
        /// The group.
        name: String,
        #[command(flatten)]
        options: OptionArgs,
    },
}

#[derive(Subcommand)]
pub(super) enum AdminUsers {
    /// List them.
    List(PageArgs),
    /// Add one; the password is read from standard input.
    Add {
        /// The login name.
        login: String,
        /// The email address.
        #[arg(long)]
        email: String,
        /// administrator or user.
        #[arg(long, value_enum, default_value = "user")]
        role: RoleArg,
    },
    /// Change one.
    Set {
        /// The login name.
        login: String,
        /// A new email address.
        #[arg(long)]
        email: Option<String>,
        /// A new role.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Read a new password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Disable (true: their password opens nothing, they approve nothing)
        /// or enable again (false).
        #[arg(long)]
        disabled: Option<bool>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum RoleArg {
    Administrator,
    User,
}

impl From<RoleArg> for RoleView {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Administrator => Self::Administrator,
            RoleArg::User => Self::User,
        }
    }
}

#[derive(Subcommand)]
pub(super) enum AdminRequests {
    /// List the pending ones (or all).
    List {
        /// All, not only the pending ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Approve one: its OTP is emailed.
    Approve(DecideArgs),
    /// Deny one.
    Deny(DecideArgs),
}

/// Which request to decide, and as whom.
#[derive(Args)]
pub(super) struct DecideArgs {
    /// The request (or give --token).
    #[arg(required_unless_present = "token")]
    pub(super) id: Option<u64>,
    /// The token of the link in an approver's mail (it names the request, the
    /// decision and the approver).
    #[arg(long, conflicts_with = "id")]
    pub(super) token: Option<String>,
    /// A comment, for the person.
    #[arg(long)]
    pub(super) comment: Option<String>,
    /// The internal user deciding.
    #[arg(long = "as", default_value = INITIAL_ADMIN)]
    pub(super) by: String,
}

#[derive(Subcommand)]
pub(super) enum AdminOtp {
    /// Generate an OTP without a request, and email it.
    Generate {
        /// The client computer.
        #[arg(long)]
        client: String,
        /// The OS user.
        #[arg(long)]
        os_user: String,
        /// Where it goes.
        #[arg(long)]
        email: String,
        /// Why.
        #[arg(long, default_value = DEFAULT_GENERATE_COMMENT)]
        comment: String,
        /// The administrator generating it; their password is read from
        /// standard input.
        #[arg(long = "as", default_value = INITIAL_ADMIN)]
        by: String,
        /// Generate it even for a computer the server has never seen (its
        /// agent has not connected yet).
        #[arg(long)]
        new_client: bool,
    },
}

#[derive(Subcommand)]
pub(super) enum AdminSessions {
    /// List the open ones (or all).
    List {
        /// All, not only the open ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Replay a session's terminal recording here, with its timing.
    Play {
        /// The client session.
        session: u64,
        /// Faster (2) or slower (0.5).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Start this many seconds in (what came before is shown at once).
        #[arg(long, default_value_t = 0.0)]
        from: f64,
        /// Which of the session's recordings, when it has several (default:
        /// the first).
        #[arg(long)]
        recording: Option<u64>,
    },
}

#[derive(Subcommand)]
pub(super) enum AdminRecordings {
    /// The recordings, newest first.
    List {
        /// Only those of this client session.
        #[arg(long)]
        session: Option<u64>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Check recordings against their hash chains and the server's seal;
    /// exits 1 when one was altered.
    Verify {
        /// This one only (default: all).
        id: Option<u64>,
    },
    /// Write a recording as an asciicast v2 file (`asciinema play` reads it)
    /// to standard output.
    Export {
        /// The recording.
        id: u64,
    },
    /// Where TEXT shows in the recordings (escapes left out, case ignored).
    Search {
        /// The text.
        text: String,
    },
}

#[derive(Subcommand)]
pub(super) enum AdminAudit {
    /// The newest entries.
    List {
        /// The newest this many (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// How much of a list to print: everything unless `--limit` says less.
#[derive(Args)]
pub(super) struct PageArgs {
    /// At most this many entries (0: all).
    #[arg(long)]
    pub(super) limit: Option<usize>,
}

/// Which entries of a list to print.
#[derive(Args)]
pub(super) struct FilterArgs {
    /// Only those of this client computer.
    #[arg(long)]
    pub(super) computer: Option<String>,
    /// Only those of this person (OS user, email address or login name).
    #[arg(long)]
    pub(super) user: Option<String>,
    /// Only those at or after this time (RFC 3339, e.g. 2026-11-29T08:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub(super) since: Option<u64>,
    /// Only those before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub(super) until: Option<u64>,
}

/// An RFC 3339 time as milliseconds since the Unix epoch.
fn parse_time(text: &str) -> Result<u64, String> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|err| format!("not an RFC 3339 time ({err})"))?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| "a time before 1970".to_owned())
}

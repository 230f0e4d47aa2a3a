//! The command line: every subcommand and flag of `otpgate`, as clap reads them.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{Parser, Subcommand};

use otpgate_actors::ComputerId;
use otpgate_protocol::version::{self, Versions};

use crate::agent::link::ServerAddr;
use crate::agent::socket::{DEFAULT_SOCKET, Limits};
use crate::agent::spool::{DEFAULT_SPOOL, DEFAULT_SPOOL_MIB};
use crate::server::config::DEFAULT_DATA_DIR;

mod admin;
mod bench;

pub(super) use admin::*;
pub(super) use bench::*;

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
    /// Run the agent of a client computer (or, with `enroll`, enroll it).
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Agent {
        #[command(subcommand)]
        action: Option<AgentAction>,
        /// The server, as HOST:PORT (HOST must be a name in its certificate),
        /// or several, comma-separated: the agent holds one connection, to
        /// the first that takes it, and moves to the next when that one goes.
        /// Every address a name resolves to is tried.
        #[arg(long, value_delimiter = ',', required = true)]
        server: Vec<ServerAddr>,
        /// The computer's identity folder: what `otpgate certs client` wrote,
        /// or what enrollment writes.
        #[arg(long, required = true)]
        identity: Option<PathBuf>,
        /// A file holding a join token: when the identity folder holds no
        /// identity yet, the agent enrolls with it first (see `otpgate agent
        /// enroll`); the environment variable OTPGATE_JOIN_TOKEN does too.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Where to serve the login prompt.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Login requests each local OS user may send per second (bursts of
        /// twice that); more are answered with the time to wait.
        #[arg(long, default_value_t = Limits::default().logins_per_second)]
        per_user_per_second: NonZeroU32,
        /// Recording chunks each local OS user may hand over per second
        /// (bursts of twice that); their recorders keep the rest and try again.
        #[arg(long, default_value_t = Limits::default().chunks_per_second)]
        chunks_per_second: NonZeroU32,
        /// Connections each local OS user but root may hold open on the socket;
        /// one past it is closed at once.
        #[arg(long, default_value_t = Limits::default().connections)]
        connections_per_user: NonZeroUsize,
        /// Seconds a connection of a user but root may wait for its next
        /// request before the agent closes it.
        #[arg(long, default_value_t = NonZeroU64::new(Limits::default().idle.as_secs()).unwrap_or(NonZeroU64::MIN))]
        idle_secs: NonZeroU64,
        /// Where terminal recordings wait for the server (made root's only).
        #[arg(long, default_value = DEFAULT_SPOOL)]
        spool: PathBuf,
        /// The most the spool holds, in MiB; past it new recording output is
        /// refused (what is spooled is kept).
        #[arg(long, default_value_t = DEFAULT_SPOOL_MIB)]
        spool_mib: u64,
        /// Serve the agent's Prometheus metrics (connected, spool bytes,
        /// queued notices) at http://ADDRESS/metrics, e.g. 127.0.0.1:9465.
        #[arg(long, value_name = "ADDRESS")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Take offline codes (PAM's `on_unreachable=offline`) for at most
        /// this many days after the last contact with the server.
        #[arg(long, default_value_t = crate::agent::offline::DEFAULT_MAX_DAYS)]
        offline_max_days: u32,
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
    /// What is wrong with this server (or, `doctor agent`, this computer's
    /// agent): each check OK, WARN or FAIL with the fix; exits 1 when one
    /// failed. Reads and asks, changes nothing, sends no mail (unless
    /// --send-test).
    Doctor {
        /// A TOML configuration file; without it the embedded defaults apply.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data folder.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Send a test message to this address through the configured
        /// relay (by default the relay is reached and logged in to only).
        #[arg(long, value_name = "ADDRESS")]
        send_test: Option<String>,
        /// Print one JSON document.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        agent: Option<DoctorAgent>,
    },
    /// Rebuild a data folder from a backup (`otpgate admin backup`), with no
    /// server running on it: the checksum and the seal are checked first;
    /// every OTP live when the backup was made is void afterwards.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data folder to rebuild: absent or empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// A data folder (or a copy of its secret.key and pki/) holding the
        /// site's keys: needed for a backup made --without-keys, and proves
        /// that a backup with keys was made by this site.
        #[arg(long, value_name = "DIR")]
        keys_from: Option<PathBuf>,
    },
    /// Write the man pages or shell completions (for packagers).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// `otpgate generate`: files made from this command line, for packages.
#[derive(Subcommand)]
pub(super) enum Generate {
    /// A man page per command (otpgate.1, otpgate-serve.1, ...).
    Man {
        /// The folder to write them into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Completions for bash, zsh and fish.
    Completions {
        /// The folder to write them into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `otpgate doctor agent`.
#[derive(Subcommand)]
pub(super) enum DoctorAgent {
    /// Check this computer's agent: its identity and whether each server
    /// welcomes it.
    Agent {
        /// The server, as HOST:PORT, or several, comma-separated (as the
        /// agent is given them): each is checked.
        #[arg(long, value_delimiter = ',', required = true)]
        server: Vec<ServerAddr>,
        /// The agent's identity folder.
        #[arg(long)]
        identity: PathBuf,
    },
}

#[derive(Subcommand)]
pub(super) enum AgentAction {
    /// Enroll this computer with a join token: its key pair is made here and
    /// never sent; the server is checked against the CA the token names
    /// before anything is sent; the identity folder is written for the agent
    /// to run with. The token is read from --token-file or the environment
    /// variable OTPGATE_JOIN_TOKEN, never from the command line.
    Enroll {
        /// The server, as HOST:PORT, or several, comma-separated: the first
        /// that answers enrolls the computer.
        #[arg(long, value_delimiter = ',', required = true)]
        server: Vec<ServerAddr>,
        /// A file holding the join token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The identity folder to write (it must hold no identity yet).
        #[arg(long)]
        identity: PathBuf,
        /// The computer's name; by default its host name.
        #[arg(long)]
        name: Option<String>,
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
    /// Join tokens, with which client computers enroll themselves (through
    /// the running server).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The certificates the running server issued to enrolled computers:
    /// serial, expiry, enrollment.
    List {
        /// The server's data folder.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Make a join token and print it (shown this once).
    Create {
        /// How long it may be used: a number and s, m, h or d.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: u64,
        /// How many computers may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// The client group its computers join.
        #[arg(long)]
        group: Option<String>,
        /// The names its computers may take: `*` any run of characters, `?`
        /// any one (quote it from the shell).
        #[arg(long)]
        name_pattern: Option<String>,
        /// Let a computer take a name another enrolled computer holds (that
        /// computer's certificates are revoked).
        #[arg(long)]
        replace: bool,
        /// The server's data folder.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// The join tokens made, newest first (never their secrets).
    List {
        /// The server's data folder.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Revoke a join token: no computer enrolls with it from now on.
    Revoke {
        /// The token's id, as `list` shows it.
        id: u64,
        /// The server's data folder.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

/// Seconds in `text`: a number and s, m, h or d (`24h`).
fn parse_duration(text: &str) -> Result<u64, String> {
    let unit = text.chars().last().filter(char::is_ascii_alphabetic);
    let number = unit.map_or(text, |unit| &text[..text.len() - unit.len_utf8()]);
    let seconds = match unit {
        None | Some('s') => 1,
        Some('m') => 60,
        Some('h') => 60 * 60,
        Some('d') => 24 * 60 * 60,
        Some(other) => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
        .ok_or_else(|| format!("{text:?} is not a duration like 30m, 24h or 7d"))
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

//! `otpgate admin`: the Management Tool's commands, their options, pages
//! and filters.

use clap::{Args, Subcommand};

use otpgate_protocol::admin::{OptionNameView, OptionsView, RoleView};

use crate::server::INITIAL_ADMIN;
use crate::server::service::DEFAULT_GENERATE_COMMENT;

#[derive(Subcommand)]
pub(in crate::cli) enum Admin {
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
    /// Offline codes: one-time codes a client computer checks by itself
    /// while the server cannot be reached (PAM's `on_unreachable=offline`).
    #[command(subcommand)]
    Offline(AdminOffline),
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
    /// Make a backup while the server serves (no login waits more than the
    /// moment its store is copied): settings, groups, users, computers,
    /// OTPs, requests, sessions, audit, outbox, recordings, the PKI and the
    /// secret, compressed and sealed with a key derived from the secret.
    /// `otpgate restore` puts it back.
    Backup {
        /// Where to write it: a new file, the owner's only.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Leave out the secret and the private keys (CA, server): the
        /// backup can then be kept where the keys may not go, and restoring
        /// it needs the site's keys (`restore --keys-from`).
        #[arg(long)]
        without_keys: bool,
    },
    /// The store's database.
    #[command(subcommand)]
    Store(AdminStore),
}

#[derive(Subcommand)]
pub(in crate::cli) enum AdminStore {
    /// Copy a site's sled store, with its server stopped, into a new and
    /// empty PostgreSQL database in one transaction, then check the copy
    /// (records and a SHA-256 per table, read back from both); then set
    /// `[store] backend = "postgres"` and start the server.
    Copy {
        /// The server's data folder (or its `db` folder).
        #[arg(long, value_name = "DIR")]
        from: std::path::PathBuf,
        /// The database, as `[store] url` takes it (libpq's key=value or a
        /// postgresql:// URL); give its password with --password-file or
        /// --password-env, not here.
        #[arg(long, value_name = "URL")]
        to: String,
        /// A file whose first line is the database password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<std::path::PathBuf>,
        /// An environment variable holding the database password.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// The CA certificates that sign the database server's (TLS is
        /// required unless every host is loopback).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
pub(in crate::cli) enum AdminDirectory {
    /// What the directory holds on an OS account (asked afresh), and how long
    /// it took.
    Test {
        /// The account: name, DOMAIN\name or name@realm.
        account: String,
    },
}

#[derive(Subcommand)]
pub(in crate::cli) enum AdminMail {
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
pub(in crate::cli) enum AdminSettings {
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
pub(in crate::cli) struct OptionArgs {
    /// Allow the use of one-time passwords.
    #[arg(long)]
    pub(in crate::cli) allow_otp: Option<bool>,
    /// Users Who Can Approve Access: internal login names, or directory
    /// accounts and groups as CORP\name (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub(in crate::cli) approvers: Option<Vec<String>>,
    /// Automatically send one-time passwords to Active Directory users.
    #[arg(long)]
    pub(in crate::cli) auto_ad: Option<bool>,
    /// Automatically send one-time passwords to internal users.
    #[arg(long)]
    pub(in crate::cli) auto_internal: Option<bool>,
    /// Record typed input in recorded terminals (passwords typed at prompts
    /// too).
    #[arg(long)]
    pub(in crate::cli) record_input: Option<bool>,
    /// Put these options back to inherit (from the group, or the defaults).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(in crate::cli) inherit: Vec<OptionArg>,
}

/// An option's name on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(in crate::cli) enum OptionArg {
    AllowOtp,
    Approvers,
    AutoAd,
    AutoInternal,
    RecordInput,
}

impl OptionArgs {
    pub(in crate::cli) fn view(self) -> OptionsView {
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
pub(in crate::cli) enum AdminClients {
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
pub(in crate::cli) enum AdminGroups {
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
pub(in crate::cli) enum AdminUsers {
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
pub(in crate::cli) enum RoleArg {
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
pub(in crate::cli) enum AdminRequests {
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
pub(in crate::cli) struct DecideArgs {
    /// The request (or give --token).
    #[arg(required_unless_present = "token")]
    pub(in crate::cli) id: Option<u64>,
    /// The token of the link in an approver's mail (it names the request, the
    /// decision and the approver).
    #[arg(long, conflicts_with = "id")]
    pub(in crate::cli) token: Option<String>,
    /// A comment, for the person.
    #[arg(long)]
    pub(in crate::cli) comment: Option<String>,
    /// The internal user deciding.
    #[arg(long = "as", default_value = INITIAL_ADMIN)]
    pub(in crate::cli) by: String,
}

#[derive(Subcommand)]
pub(in crate::cli) enum AdminOtp {
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
pub(in crate::cli) enum AdminOffline {
    /// Issue a set of offline codes for one OS user on one client computer,
    /// replacing theirs there: printed this once (hand them to the person),
    /// kept by the server and the computer only as slow hashes.
    Issue {
        /// The client computer.
        #[arg(long)]
        client: String,
        /// The OS user they let in.
        #[arg(long)]
        os_user: String,
        /// The person's address, for their client sessions.
        #[arg(long)]
        email: String,
        /// How many codes.
        #[arg(long, default_value_t = otpgate_actors::offline::DEFAULT_CODES)]
        count: u32,
        /// For how many days they work.
        #[arg(long, default_value_t = otpgate_actors::offline::DEFAULT_VALID_DAYS)]
        valid_days: u32,
    },
    /// A client computer's offline codes: how many are left, which were
    /// used and when.
    List {
        /// The client computer.
        #[arg(long)]
        client: String,
    },
    /// Void a client computer's offline codes: one OS user's, or every
    /// one's.
    Void {
        /// The client computer.
        #[arg(long)]
        client: String,
        /// The OS user; every one's when left out.
        #[arg(long)]
        os_user: Option<String>,
    },
}

#[derive(Subcommand)]
pub(in crate::cli) enum AdminSessions {
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
        /// Which of the session's recordings, when it has several (default:
        /// the first).
        #[arg(long)]
        recording: Option<u64>,
        #[command(flatten)]
        play: PlayArgs,
    },
}

/// How a recording is replayed.
#[derive(Args, Debug, Clone, Copy)]
pub(in crate::cli) struct PlayArgs {
    /// Faster (2) or slower (0.5).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Start this many seconds in (what came before is shown at once).
    #[arg(long, default_value_t = 0.0)]
    pub from: f64,
    #[command(flatten)]
    pub force: ForceArg,
}

/// Whether a recording that does not verify is handed out anyway.
#[derive(Args, Debug, Clone, Copy)]
pub(in crate::cli) struct ForceArg {
    /// Hand it out even if it does not verify (altered since it was stored),
    /// with a warning on standard error; without it, such a recording is
    /// refused.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand)]
pub(in crate::cli) enum AdminRecordings {
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
        #[command(flatten)]
        force: ForceArg,
    },
    /// Replay a recording here, with its timing (one made outside an OTP
    /// login's session too).
    Play {
        /// The recording.
        id: u64,
        #[command(flatten)]
        play: PlayArgs,
    },
    /// Where TEXT shows in the recordings (escapes left out, case ignored).
    Search {
        /// The text.
        text: String,
    },
}

#[derive(Subcommand)]
pub(in crate::cli) enum AdminAudit {
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
pub(in crate::cli) struct PageArgs {
    /// At most this many entries (0: all).
    #[arg(long)]
    pub(in crate::cli) limit: Option<usize>,
}

/// Which entries of a list to print.
#[derive(Args)]
pub(in crate::cli) struct FilterArgs {
    /// Only those of this client computer.
    #[arg(long)]
    pub(in crate::cli) computer: Option<String>,
    /// Only those of this person (OS user, email address or login name).
    #[arg(long)]
    pub(in crate::cli) user: Option<String>,
    /// Only those at or after this time (RFC 3339, e.g. 2026-11-29T08:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub(in crate::cli) since: Option<u64>,
    /// Only those before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub(in crate::cli) until: Option<u64>,
}

/// An RFC 3339 time as milliseconds since the Unix epoch.
fn parse_time(text: &str) -> Result<u64, String> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|err| format!("not an RFC 3339 time ({err})"))?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| "a time before 1970".to_owned())
}

//! What the admin wire shows of things: settings, clients and groups, users,
//! access requests, sessions, mail, audit entries, recordings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The System Settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsView {
    /// Access Request Expiration Time, in seconds.
    pub expiration_secs: u64,
    /// Shortest time between two new OTPs for one computer and OS user, in seconds.
    pub new_otp_interval_secs: u64,
    /// Digits per OTP.
    pub otp_length: u8,
    /// Wrong attempts after which an OTP is locked.
    pub max_attempts: u32,
    /// Failures allowed per client computer and per account within the window.
    pub max_failures: u32,
    /// The window over which failures are counted, in seconds.
    pub failure_window_secs: u64,
    /// Shortest time between two emails of the same OTP, in seconds.
    pub resend_gap_secs: u64,
    /// New OTPs and access requests one computer may cause within the window.
    pub max_new_per_computer: u32,
    /// How long a client session stays open without its agent, in seconds.
    pub session_timeout_secs: u64,
    /// How long the audit log and finished records are kept, in days.
    pub retention_days: u64,
}

/// Changes to the System Settings; what is `None` stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsPatch {
    /// Access Request Expiration Time, in seconds.
    pub expiration_secs: Option<u64>,
    /// Shortest time between two new OTPs, in seconds.
    pub new_otp_interval_secs: Option<u64>,
    /// Digits per OTP.
    pub otp_length: Option<u8>,
    /// Wrong attempts after which an OTP is locked.
    pub max_attempts: Option<u32>,
    /// Failures allowed per computer and per account within the window (a
    /// person on one computer: a tenth of it).
    pub max_failures: Option<u32>,
    /// The window over which failures are counted, in seconds.
    pub failure_window_secs: Option<u64>,
    /// Shortest time between two emails of the same OTP, in seconds.
    pub resend_gap_secs: Option<u64>,
    /// New OTPs and access requests one computer may cause within the window.
    pub max_new_per_computer: Option<u32>,
    /// How long a client session stays open without its agent, in seconds.
    pub session_timeout_secs: Option<u64>,
    /// How long the audit log and finished records are kept, in days.
    pub retention_days: Option<u64>,
}

/// A group's or computer's options; `None` inherits (in a patch: stays).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionsView {
    /// Allow the use of one-time passwords.
    pub allow_otp: Option<bool>,
    /// Users Who Can Approve Access.
    pub approvers: Option<Vec<String>>,
    /// Automatically send one-time passwords to Active Directory users.
    pub auto_directory: Option<bool>,
    /// Automatically send one-time passwords to internal users.
    pub auto_internal: Option<bool>,
    /// Record typed input in recorded terminals.
    pub record_input: Option<bool>,
    /// In a change: the options that go back to inherit (from the group, or
    /// the defaults); empty elsewhere.
    pub inherit: Vec<OptionNameView>,
}

/// One option of a group or computer, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionNameView {
    /// Allow the use of one-time passwords.
    AllowOtp,
    /// Users Who Can Approve Access.
    Approvers,
    /// Automatically send one-time passwords to Active Directory users.
    AutoDirectory,
    /// Automatically send one-time passwords to internal users.
    AutoInternal,
    /// Record typed input in recorded terminals.
    RecordInput,
}

/// A client computer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientView {
    /// Its name.
    pub computer: String,
    /// Its group.
    pub group: Option<String>,
    /// Since when its agent is connected, if it is.
    pub connected_since: Option<u64>,
    /// When its agent was last heard from.
    pub last_seen: u64,
    /// The host name its agent reported.
    pub host_name: String,
    /// Its own options.
    pub options: OptionsView,
    /// The options in force, inheritance resolved (every field set).
    pub effective: OptionsView,
    /// The software version its agent reported when it last connected (empty
    /// if it never did, or through a version 1 answer).
    pub agent_version: String,
    /// The agent link version its agent spoke when it last connected.
    pub protocol: Option<u8>,
}

impl ClientView {
    /// Its agent, for the operator's eyes: `0.2.0 (protocol 2)`; `-` before it
    /// ever connected, `?` for what an older server did not say.
    pub fn agent(&self) -> String {
        match (self.agent_version.as_str(), self.protocol) {
            ("", None) => "-".to_owned(),
            (version, protocol) => format!(
                "{} (protocol {})",
                if version.is_empty() { "?" } else { version },
                protocol.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ),
        }
    }
}

/// What the directory answered for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryView {
    /// Whether it found the account (once).
    pub found: bool,
    /// Its email address, if it has one.
    pub email: Option<String>,
    /// Disabled in the directory.
    pub disabled: bool,
    /// The groups it is a member of.
    pub groups: Vec<String>,
    /// Why the directory could not answer, if it could not.
    pub error: Option<String>,
    /// How long the answer took, in microseconds.
    pub micros: u64,
}

/// A terminal recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingView {
    /// Its number.
    pub id: u64,
    /// The client computer.
    pub computer: String,
    /// The OS user.
    pub os_user: String,
    /// The client session of the OTP login it ran in, if known.
    pub session: Option<u64>,
    /// When it started, in Unix milliseconds.
    pub started: u64,
    /// When it ended, once it has.
    pub ended: Option<u64>,
    /// The exit status of what ran, once it has ended.
    pub status: Option<i32>,
    /// What ran.
    pub command: String,
    /// Terminal columns and rows at the start.
    pub width: u16,
    /// Terminal rows at the start.
    pub height: u16,
    /// Chunks stored.
    pub chunks: u64,
    /// Event bytes stored.
    pub bytes: u64,
    /// Output was dropped on the client computer.
    pub incomplete: bool,
}

/// Part of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingPartView {
    /// The recording.
    pub recording: RecordingView,
    /// Its asciicast header line (with the first part only).
    pub header: Option<String>,
    /// Event lines.
    pub events: String,
    /// The chunk the next part starts at, if there is more.
    pub next: Option<u64>,
}

/// What verification found for one recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedView {
    /// The recording; `u64::MAX`, which no recording has, for the
    /// recordings as a whole (some removed, added or rolled back, or lost).
    pub id: u64,
    /// What is wrong with it; `None`: intact.
    pub problem: Option<String>,
}

/// A place where searched text shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitView {
    /// The recording.
    pub recording: RecordingView,
    /// Milliseconds from its start.
    pub offset_ms: u64,
    /// The line of text it is on.
    pub line: String,
}

/// A client group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// Its name.
    pub name: String,
    /// Its options.
    pub options: OptionsView,
}

/// An internal user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleView {
    /// Configures everything, approves anything, generates OTPs.
    Administrator,
    /// Requests OTPs, approves where listed.
    User,
}

/// An internal user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// The login name.
    pub login: String,
    /// The email address.
    pub email: String,
    /// The role.
    pub role: RoleView,
    /// Their password was made for them and opens nothing until they choose
    /// their own.
    pub password_change_due: bool,
    /// Disabled: their password opens nothing, they approve nothing.
    pub disabled: bool,
}

/// An access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// Its id.
    pub id: u64,
    /// The client computer.
    pub computer: String,
    /// The OS user.
    pub os_user: String,
    /// The address given.
    pub email: String,
    /// Emergency access.
    pub emergency: bool,
    /// When it was made.
    pub created: u64,
    /// When it expires unless decided.
    pub expires: u64,
    /// Where it stands.
    pub state: Decision,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Their comment.
    pub comment: Option<String>,
    /// Why a message about it could not be delivered, if one could not.
    pub mail_failure: Option<String>,
}

/// An approver's choice on an access request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Send the person an OTP.
    Approve,
    /// Refuse.
    Deny,
}

/// Where an access request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Waiting for an approver.
    Pending,
    /// Approved: an OTP was sent.
    Approve,
    /// Denied.
    Deny,
    /// Nobody decided in time.
    Expire,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pending => "pending",
            Self::Approve => "approved",
            Self::Deny => "denied",
            Self::Expire => "expired",
        })
    }
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMailView {
    /// The message's id.
    pub id: u64,
    /// The recipient.
    pub to: String,
    /// When it was queued.
    pub queued: u64,
    /// Failed tries so far.
    pub attempts: u32,
    /// Not tried again before this.
    pub next_try: u64,
}

/// A message given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailFailureView {
    /// The message's id.
    pub id: u64,
    /// The recipient.
    pub to: String,
    /// When it was given up.
    pub at: u64,
    /// Why.
    pub reason: String,
    /// The computer it concerned.
    pub computer: Option<String>,
    /// The access request it belonged to.
    pub request: Option<u64>,
}

/// A client session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Its id.
    pub id: u64,
    /// The client computer.
    pub computer: String,
    /// `<logged in user> (<email>)`.
    pub user_name: String,
    /// When it started.
    pub started: u64,
    /// When the agent last reported it alive.
    pub last_activity: u64,
    /// When it ended, if it has.
    pub ended: Option<u64>,
    /// Why it ended, if it has.
    pub end_reason: Option<String>,
}

/// An audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    /// When.
    pub at: u64,
    /// Who.
    pub who: String,
    /// The computer concerned.
    pub computer: Option<String>,
    /// What.
    pub action: String,
    /// How it ended.
    pub outcome: String,
}

/// A backup the server made, waiting in its data folder for `otpgate admin
/// backup` to take it away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupView {
    /// Where it is.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// When it was made.
    pub made_at: u64,
    /// Whether it holds the keys (the secret and the PKI's private keys).
    pub keys: bool,
    /// The files of the data folder it holds.
    pub files: Vec<String>,
    /// Each tree of the databases (`database/tree`) and its records.
    pub trees: Vec<(String, u64)>,
    /// How long the store's writes waited for its copy, in microseconds.
    pub store_paused_us: u64,
    /// How long recording chunks waited for the recordings' copy, in
    /// microseconds.
    pub recordings_paused_us: u64,
}

/// What a join token is to allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// How long it may be used, in seconds.
    pub ttl_secs: u64,
    /// How many computers may enroll with it.
    pub uses: u32,
    /// The client group its computers join.
    pub group: Option<String>,
    /// The names its computers may take (`*` any run of characters, `?` any
    /// one; case ignored); any name when none.
    pub name_pattern: Option<String>,
    /// Whether a computer may take a name another enrolled computer holds
    /// (whose certificates are then revoked).
    pub replace: bool,
}

/// A join token, as the lists show it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its id.
    pub id: u64,
    /// What it allows.
    pub spec: TokenSpec,
    /// When it was made.
    pub created_at: u64,
    /// When it ends.
    pub expires_at: u64,
    /// How many computers enrolled with it.
    pub used: u32,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
    /// Who made it.
    pub created_by: String,
}

/// What offline codes are to be issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineSpec {
    /// The client computer they work on.
    pub computer: String,
    /// The OS user they let in.
    pub os_user: String,
    /// The person's address, for their client sessions.
    pub email: String,
    /// How many codes.
    pub count: u32,
    /// For how many days they work.
    pub valid_days: u32,
}

/// One OS user's offline codes on a computer, as the lists show them
/// (never a code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineView {
    /// The set's id.
    pub set: u64,
    /// The client computer.
    pub computer: String,
    /// The OS user.
    pub os_user: String,
    /// The person's address.
    pub email: String,
    /// When they were issued.
    pub issued_at: u64,
    /// When they stop working.
    pub expires_at: u64,
    /// Who issued them.
    pub issued_by: String,
    /// How many codes the set holds.
    pub codes: u32,
    /// The codes used: their place (from 1) and when.
    pub used: Vec<(u32, u64)>,
}

impl OfflineView {
    /// How many codes are left at `now` (milliseconds since the Unix
    /// epoch): none once they expired.
    pub fn left(&self, now: u64) -> usize {
        if now < self.expires_at {
            (self.codes as usize).saturating_sub(self.used.len())
        } else {
            0
        }
    }
}

/// The certificate an enrolled computer holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertView {
    /// The computer.
    pub computer: String,
    /// The certificate's serial number, hex.
    pub serial: String,
    /// When the computer enrolled.
    pub enrolled_at: u64,
    /// When the certificate ends (renewed before).
    pub expires_at: u64,
    /// The join token it enrolled with.
    pub token: u64,
}

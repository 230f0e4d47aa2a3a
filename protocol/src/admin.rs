//! The Management Tool's command-line channel: `otpgate admin` talks to the
//! running daemon over a Unix socket in its data folder (mode 0600, so only the
//! daemon's own account may use it), in the same frames as the agent protocol.
//!
//! Times are milliseconds since the Unix epoch; durations are seconds.
//!
//! Each request carries the version it is written in; the daemon answers in the
//! same one (see [`crate::version`]). Version 2 shows each client's agent
//! versions in [`ClientView`]; [`v1`] keeps the shape version 1 has.

use std::fmt;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError, encode_as};
use crate::login::Secret;
use crate::version::{self, Message, Versions};

/// What the administrator's command asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The System Settings.
    SettingsGet,
    /// Change the System Settings named.
    SettingsSet(SettingsPatch),
    /// Client computers, by name.
    ClientsList {
        /// Which page.
        page: PageRequest,
    },
    /// Change a client computer's group or options.
    ClientSet {
        /// The computer.
        computer: String,
        /// `Some(None)` takes it out of its group.
        group: Option<Option<String>>,
        /// The options to set.
        options: OptionsView,
    },
    /// Every client group.
    GroupsList,
    /// Create or change a client group.
    GroupSet {
        /// The group.
        name: String,
        /// The options to set.
        options: OptionsView,
    },
    /// Internal users, by login name.
    UsersList {
        /// Which page.
        page: PageRequest,
    },
    /// Create an internal user.
    UserAdd {
        /// The login name.
        login: String,
        /// The email address.
        email: String,
        /// Administrator or user.
        role: RoleView,
        /// The password.
        password: Secret,
    },
    /// Change an internal user.
    UserSet {
        /// The login name.
        login: String,
        /// A new email address.
        email: Option<String>,
        /// A new role.
        role: Option<RoleView>,
        /// A new password.
        password: Option<Secret>,
        /// Disable (their password opens nothing, they approve nothing) or
        /// enable again.
        disabled: Option<bool>,
    },
    /// Access requests (the pending ones, or all), by computer then age.
    RequestsList {
        /// All, not only the pending ones.
        all: bool,
        /// Which ones.
        filter: ListFilter,
        /// Which page.
        page: PageRequest,
    },
    /// Approve or deny an access request.
    RequestDecide {
        /// The request.
        id: u64,
        /// The internal user deciding.
        by: String,
        /// Their password: whoever reaches the socket is not every approver.
        password: Secret,
        /// Approve or deny.
        choice: Choice,
        /// A comment.
        comment: Option<String>,
    },
    /// Approve or deny an access request with the token of a link in an
    /// approver's mail; the approver is the link's, and the choice must be too.
    RequestDecideToken {
        /// The token.
        token: String,
        /// Approve or deny: refused unless it is the link's.
        choice: Choice,
        /// A comment.
        comment: Option<String>,
    },
    /// Generate an OTP without a request.
    OtpGenerate {
        /// The client computer.
        computer: String,
        /// The OS user.
        os_user: String,
        /// Where it goes.
        email: String,
        /// Why; "Generated without request." when not given.
        comment: Option<String>,
        /// The administrator generating it.
        by: String,
        /// Their password: whoever reaches the socket is not every administrator.
        password: Secret,
        /// Generate it even for a computer the server has never seen.
        new_client: bool,
    },
    /// Client sessions (the open ones, or all), by computer then age.
    SessionsList {
        /// All, not only the open ones.
        all: bool,
        /// Which ones.
        filter: ListFilter,
        /// Which page.
        page: PageRequest,
    },
    /// Messages given up on (a 5xx from the relay, or too many tries), oldest
    /// first.
    MailFailures {
        /// Which page.
        page: PageRequest,
    },
    /// Messages waiting in the outbox, with their failed tries so far, oldest
    /// first.
    MailQueue {
        /// Which page.
        page: PageRequest,
    },
    /// Send a test message now, bypassing the outbox, and report what the relay
    /// (or the outbox folder) said.
    MailTest {
        /// The recipient.
        to: String,
    },
    /// Revoke every certificate issued so far to a client computer, and close
    /// its connections.
    CertRevoke {
        /// The client computer.
        computer: String,
    },
    /// What the directory holds on an OS account, asked afresh, and how long
    /// it took.
    DirectoryTest {
        /// The OS account (`name`, `DOMAIN\\name` or `name@realm`).
        account: String,
    },
    /// Audit entries, newest first.
    AuditList {
        /// Which ones.
        filter: ListFilter,
        /// Which page.
        page: PageRequest,
    },
    /// Terminal recordings, newest first.
    RecordingsList {
        /// Only those of this client session.
        session: Option<u64>,
        /// Which page.
        page: PageRequest,
    },
    /// Part of a recording's asciicast events, from chunk `from` on.
    RecordingRead {
        /// The recording.
        id: u64,
        /// The first chunk wanted (0 at first, then the part's `next`).
        from: u64,
    },
    /// Checks recordings against their hash chains and the server's seal.
    RecordingsVerify {
        /// This one only; `None`: all.
        id: Option<u64>,
    },
    /// Where text shows in the recordings (escapes left out, case ignored).
    RecordingsSearch {
        /// The text.
        text: String,
    },
}

/// The entries a page holds unless the request says otherwise.
pub const DEFAULT_PAGE: u32 = 100;
/// The most entries a page holds; fewer when they would not fit in one frame.
pub const MAX_PAGE: u32 = 1000;

/// Which page of a list: up to `limit` entries (0: [`DEFAULT_PAGE`]) after
/// cursor `after`, the `next` of the page before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// The most entries wanted; 0 for the default.
    pub limit: u32,
    /// Where the page starts: the previous page's `next`, or `None` for the first.
    pub after: Option<Vec<u8>>,
}

/// One page of a list. The server may return fewer entries than asked for, to
/// fit in one frame; `next` says where the following page starts, if one does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The entries.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<Vec<u8>>,
}

/// Which entries of a list, all of what is given holding; `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// On this client computer.
    pub computer: Option<String>,
    /// Of this person: their OS user, email address or login name.
    pub user: Option<String>,
    /// At or after this time.
    pub since: Option<u64>,
    /// Before this time.
    pub until: Option<u64>,
}

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
    /// The recording.
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

/// The daemon's answer to an [`AdminRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminResponse {
    /// The System Settings.
    Settings(SettingsView),
    /// Client computers.
    Clients(Page<ClientView>),
    /// Client groups.
    Groups(Vec<GroupView>),
    /// Internal users.
    Users(Page<UserView>),
    /// Access requests.
    Requests(Page<RequestView>),
    /// An OTP was generated and emailed.
    Generated {
        /// Until when it is valid.
        valid_until: u64,
    },
    /// Client sessions.
    Sessions(Page<SessionView>),
    /// Audit entries, newest first.
    Audit(Page<AuditView>),
    /// Messages given up on.
    MailFailures(Page<MailFailureView>),
    /// Messages waiting in the outbox.
    MailQueue(Page<QueuedMailView>),
    /// One access request, as decided.
    Decided(Box<RequestView>),
    /// The test message was taken; what the transport said.
    MailSent {
        /// The relay's reply, or where the file was written.
        said: String,
    },
    /// A computer's certificates were revoked.
    Revoked {
        /// How many of its connections were closed.
        disconnected: u32,
    },
    /// Done.
    Done,
    /// The answer to [`AdminRequest::DirectoryTest`].
    DirectoryAccount(DirectoryView),
    /// Terminal recordings.
    Recordings(Page<RecordingView>),
    /// Part of a recording.
    RecordingPart(Box<RecordingPartView>),
    /// What verification found.
    Verified(Vec<VerifiedView>),
    /// Where searched text shows (at most 100 places).
    Hits(Vec<HitView>),
    /// Refused or failed.
    Fail(AdminError),
}

/// Why an admin request was not done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    /// What kind of failure.
    pub code: AdminErrorCode,
    /// For the administrator's eyes.
    pub message: String,
}

/// The kinds of admin failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminErrorCode {
    /// No such thing.
    NotFound,
    /// A value is not acceptable.
    Invalid,
    /// The named user may not do this.
    Forbidden,
    /// It was already done, or cannot be done in its state.
    Conflict,
    /// Something failed in the daemon; it has been logged there.
    Internal,
    /// The answer would not fit in one frame.
    TooLarge,
    /// Something it needs (the directory) cannot be reached now; try again.
    Unavailable,
    /// The request is not one this daemon knows (a newer client's, say).
    /// Since version 2.
    Unsupported,
}

impl<T> Page<T> {
    /// The same page, each entry turned into a `U`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// The shapes of version 1 that differ from today's.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use super::OptionsView;

    /// A client computer as version 1 shows it: without its agent's versions.
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
    }

    impl From<super::ClientView> for ClientView {
        fn from(client: super::ClientView) -> Self {
            Self {
                computer: client.computer,
                group: client.group,
                connected_since: client.connected_since,
                last_seen: client.last_seen,
                host_name: client.host_name,
                options: client.options,
                effective: client.effective,
            }
        }
    }

    impl From<ClientView> for super::ClientView {
        fn from(client: ClientView) -> Self {
            Self {
                computer: client.computer,
                group: client.group,
                connected_since: client.connected_since,
                last_seen: client.last_seen,
                host_name: client.host_name,
                options: client.options,
                effective: client.effective,
                agent_version: String::new(),
                protocol: None,
            }
        }
    }
}

/// The variant index of [`AdminResponse::Clients`], the one whose shape
/// differs in version 1: bincode writes a variant as its index then its
/// content, so `(CLIENTS, page)` is that variant of version 1.
const CLIENTS: u32 = 1;

impl Message for AdminRequest {
    const VERSIONS: Versions = version::ADMIN;

    fn encode(&self, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_as(self, Self::VERSIONS.check(version)?, dst)
    }

    fn decode(frame: &Frame) -> Result<Self, FrameError> {
        Self::VERSIONS.check(frame.version)?;
        frame.decode()
    }
}

impl Message for AdminResponse {
    const VERSIONS: Versions = version::ADMIN;

    fn encode(&self, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
        let version = Self::VERSIONS.check(version)?;
        match self {
            Self::Clients(page) if version < 2 => {
                let page = page.clone().map(v1::ClientView::from);
                encode_as(&(CLIENTS, page), version, dst)
            }
            Self::Fail(AdminError {
                code: AdminErrorCode::Unsupported,
                message,
            }) if version < 2 => {
                let fail = Self::Fail(AdminError {
                    code: AdminErrorCode::Invalid,
                    message: message.clone(),
                });
                encode_as(&fail, version, dst)
            }
            _ => encode_as(self, version, dst),
        }
    }

    fn decode(frame: &Frame) -> Result<Self, FrameError> {
        let version = Self::VERSIONS.check(frame.version)?;
        if version < 2 && frame.prefix::<u32>() == Some(CLIENTS) {
            let (_, page): (u32, Page<v1::ClientView>) = frame.decode()?;
            return Ok(Self::Clients(page.map(ClientView::from)));
        }
        frame.decode()
    }
}

//! The Management Tool's command-line channel: `otpgate admin` talks to the
//! running daemon over a Unix socket in its data folder (mode 0600, so only the
//! daemon's own account may use it), in the same frames as the agent protocol.
//!
//! Times are milliseconds since the Unix epoch; durations are seconds.
//!
//! Each request carries the version it is written in; the daemon answers in the
//! same one (see [`crate::version`]). Version 2 shows each client's agent
//! versions in [`ClientView`]; [`v1`] keeps the shape version 1 has.

pub mod v1;
mod views;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError, encode_as};
use crate::login::Secret;
use crate::version::{self, Message, Versions};

pub use views::*;

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
    /// Make a backup of the data folder while the server serves, for the
    /// administrator's command to take away. Since version 2.
    Backup {
        /// With the secret and the PKI's private keys.
        keys: bool,
    },
    /// Make a join token for client computers to enroll with. Since
    /// version 2.
    TokenCreate(TokenSpec),
    /// The join tokens made, newest first. Since version 2.
    TokensList,
    /// Revoke join token `id`: refused from now on. Since version 2.
    TokenRevoke {
        /// The token's id.
        id: u64,
    },
    /// The certificates issued to enrolled computers, by computer. Since
    /// version 2.
    CertsList,
    /// Issue offline codes: answered with the codes, shown this once (the
    /// server keeps only their verifiers). Since version 2.
    OfflineIssue(OfflineSpec),
    /// A computer's offline codes, by OS user (never a code). Since
    /// version 2.
    OfflineList {
        /// The client computer.
        computer: String,
    },
    /// Void a computer's offline codes: an OS user's, or every one's.
    /// Since version 2.
    OfflineVoid {
        /// The client computer.
        computer: String,
        /// The OS user; `None`: every one.
        os_user: Option<String>,
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
    /// A backup was made. Since version 2.
    BackedUp(Box<BackupView>),
    /// A join token was made: the token itself, shown this once (the server
    /// keeps only a hash of its secret). Since version 2.
    TokenMade {
        /// The token, to give to the computers' enrollment.
        token: Secret,
        /// What it allows.
        view: TokenView,
    },
    /// Join tokens. Since version 2.
    Tokens(Vec<TokenView>),
    /// Certificates of enrolled computers. Since version 2.
    Certs(Vec<CertView>),
    /// Offline codes were issued: the codes, shown this once. Since
    /// version 2.
    OfflineIssued {
        /// The codes, in their order.
        codes: Vec<Secret>,
        /// What was issued.
        view: OfflineView,
    },
    /// A computer's offline codes. Since version 2.
    Offline(Vec<OfflineView>),
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

/// The variant index of [`AdminResponse::Clients`], the one whose shape
/// differs in version 1: bincode writes a variant as its index then its
/// content, so `(CLIENTS, page)` is that variant of version 1.
const CLIENTS: u32 = 1;

impl Message for AdminRequest {
    const VERSIONS: Versions = version::ADMIN;

    fn encode(&self, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
        let version = Self::VERSIONS.check(version)?;
        match self {
            Self::Backup { .. }
            | Self::TokenCreate(_)
            | Self::TokensList
            | Self::TokenRevoke { .. }
            | Self::CertsList
            | Self::OfflineIssue(_)
            | Self::OfflineList { .. }
            | Self::OfflineVoid { .. }
                if version < 2 =>
            {
                Err(FrameError::NotInVersion { version })
            }
            _ => encode_as(self, version, dst),
        }
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
            Self::BackedUp(_)
            | Self::TokenMade { .. }
            | Self::Tokens(_)
            | Self::Certs(_)
            | Self::OfflineIssued { .. }
            | Self::Offline(_)
                if version < 2 =>
            {
                Err(FrameError::NotInVersion { version })
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

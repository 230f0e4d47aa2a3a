//! The Management Tool's operations: one typed service behind every front end.
//! The admin socket (`otpgate admin`, [`crate::server::admin`]) and the web
//! pages ([`crate::server::web`]) are thin adapters over it; neither holds the
//! store.
//!
//! Each method takes the [`Principal`] asking and checks, itself, that they
//! may: administrators configure and see everything, the others see and decide
//! the requests, sessions and recordings of the computers they approve. It does
//! the work (a computer's changes through its actor, settings, groups and users
//! through the policy's owner), writes its own audit entry, and answers with
//! typed values, or a [`ServiceError`]: a refusal for the asker's eyes, or a
//! failure logged here.
//!
//! One file per family of operations, as mini-redis's `cmd/`: settings,
//! clients (computers, groups, certificates), users, requests (lists,
//! decisions, OTPs generated), sessions, mail, audit, people (sign-in, the
//! directory), recordings, backups, join tokens.

mod audit;
mod backup;
mod clients;
mod mail;
mod offline;
mod people;
mod recordings;
mod requests;
mod sessions;
mod settings;
mod tokens;
mod users;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::warn;

use otpgate_actors::audit::{Action, AuditEntry, Who};
use otpgate_actors::directory::{Directory, DirectoryPerson, Role, UserRecord};
use otpgate_actors::mail::MailTransport;
use otpgate_actors::otp::OtpKeys;
use otpgate_actors::rules::{self, Decider};
use otpgate_actors::store::{self, BATCH, ComputerRecord};
use otpgate_actors::{CallError, Clock, ComputerId, Computers, Store, StoreError, policy};
use otpgate_protocol::admin::{AdminError, AdminErrorCode};

use crate::server::live::Live;
use crate::server::recordings::Shelf;
use crate::tls::revoked::Revocations;

pub use people::{MAX_COMMENT, SignInError};
pub use requests::{Client, DEFAULT_GENERATE_COMMENT, Generate, Which};
pub use sessions::Open;
pub(crate) use users::hash_off_runtime;
pub use users::{NewUser, UserChange};

/// The Management Tool's operations, and what they work with.
pub struct AdminService {
    /// Where state is kept, for the lists.
    pub(crate) store: Arc<dyn Store>,
    /// The settings, groups and users, and the one way to change them.
    pub(crate) policy: policy::Owner,
    /// The computers' actors.
    pub(crate) computers: Computers,
    /// Where time comes from.
    pub(crate) clock: Arc<dyn Clock>,
    /// Opens the tokens of approvers' links.
    pub(crate) keys: Arc<OtpKeys>,
    /// Where mail goes, for test messages.
    pub(crate) transport: Arc<dyn MailTransport>,
    /// The host name in Message-IDs.
    pub(crate) host: String,
    /// Revoked client certificates.
    pub(crate) revocations: Arc<Revocations>,
    /// The agent connections open now.
    pub(crate) live: Arc<Live>,
    /// Enrolls computers; makes and revokes their join tokens.
    pub(crate) enroller: Arc<crate::server::enroll::Enroller>,
    /// Terminal recordings.
    pub(crate) recordings: Shelf,
    /// Backups of the data folder.
    pub(crate) backups: Arc<crate::backup::make::Backups>,
    /// Who people are: sign-in with a directory account, `directory test`.
    pub(crate) directory: Arc<dyn Directory>,
    /// Wrong directory passwords lately, per account (see
    /// [`people::WrongBinds`]).
    pub(crate) wrong_binds: people::WrongBinds,
    /// The file the first administrator's password was written to at the
    /// first start; removed once they have chosen their own.
    pub(crate) initial_password_file: PathBuf,
}

/// Who asks the service for something, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who.
    pub identity: Identity,
    /// From where.
    pub via: Via,
    /// For an internal user who signed in with their password: which password
    /// it was. Once it changes (they chose another, or an administrator reset
    /// it) the principal no longer stands.
    pub credential: Option<Credential>,
}

/// Which password an internal user signed in with: a fingerprint of its hash,
/// never the hash itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential(u64);

impl Credential {
    /// The fingerprint of `user`'s password now.
    fn of(user: &UserRecord) -> Self {
        let digest = otpgate_actors::digest::sha256(user.password_hash.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }
}

/// Who a principal is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Identity {
    /// The account the daemon runs as, on the admin socket (mode 0600, so only
    /// it reaches it): an administrator.
    Operator,
    /// An internal user, by login name; their role is read on every call, so
    /// that a demoted or disabled user loses what they had at once.
    User(String),
    /// A directory person, with their groups as read when they signed in.
    Person(DirectoryPerson),
}

/// Where a principal asks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The admin socket, by the process of this user id.
    Socket {
        /// The caller's user id, from the socket's peer credentials.
        uid: Option<u32>,
    },
    /// The web Management Tool, from this address.
    Web {
        /// The browser's address.
        address: Option<IpAddr>,
    },
}

impl Principal {
    /// The daemon's own account on the admin socket.
    pub fn operator(uid: Option<u32>) -> Self {
        Self {
            identity: Identity::Operator,
            via: Via::Socket { uid },
            credential: None,
        }
    }

    /// The name this principal decides as and is mailed as: an internal
    /// user's login, a directory person's canonical account.
    pub fn name(&self) -> &str {
        match &self.identity {
            Identity::Operator => "operator",
            Identity::User(login) => login,
            Identity::Person(person) => &person.account,
        }
    }

    /// Who they decide access requests as; the operator decides as nobody.
    fn decider(&self) -> Option<Decider> {
        match &self.identity {
            Identity::Operator => None,
            Identity::User(login) => Some(Decider::User(login.clone())),
            Identity::Person(person) => Some(Decider::Person(person.clone())),
        }
    }

    /// How the audit log names who acted: on the socket, the operator's
    /// account (whoever they act as, which the entry's outcome says); on the
    /// web, the person signed in.
    pub fn who(&self) -> Who {
        match self.via {
            Via::Socket { uid } => Who::Operator { uid },
            Via::Web { .. } => Who::Web {
                login: self.name().to_owned(),
                address: None,
            },
        }
    }
}

/// Why the service did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Refused, or not possible as asked: the reason is for the asker's eyes.
    #[error("{}", .0.message)]
    Refused(AdminError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A computer's actor could not be asked.
    #[error(transparent)]
    Call(#[from] CallError),
}

impl ServiceError {
    /// What the asker is told: the refusal, or that something failed in the
    /// daemon (logged here, once).
    pub fn told(self) -> AdminError {
        match self {
            Self::Refused(refused) => refused,
            failed => {
                warn!(error = %failed, "a Management Tool operation failed");
                AdminError {
                    code: AdminErrorCode::Internal,
                    message: "the server could not do it; see its log".into(),
                }
            }
        }
    }

    /// Whether it is a refusal of this kind.
    pub fn is(&self, code: AdminErrorCode) -> bool {
        matches!(self, Self::Refused(refused) if refused.code == code)
    }
}

/// What a service method answers.
pub type Answer<T> = Result<T, ServiceError>;

/// A refusal with `code` and `message`.
pub fn refusal(code: AdminErrorCode, message: impl Into<String>) -> ServiceError {
    ServiceError::Refused(AdminError {
        code,
        message: message.into(),
    })
}

/// Refuses with `code` and `message`.
fn refuse<T>(code: AdminErrorCode, message: impl Into<String>) -> Answer<T> {
    Err(refusal(code, message))
}

impl AdminService {
    /// Whether `who` is an administrator now.
    pub fn is_admin(&self, who: &Principal) -> bool {
        match &who.identity {
            Identity::Operator => true,
            Identity::User(login) => self
                .policy
                .snapshot()
                .user(login)
                .is_some_and(|user| !user.disabled && user.role == Role::Administrator),
            Identity::Person(_) => false,
        }
    }

    /// Whether `who` still stands: an internal user who exists and is
    /// enabled, with the password they signed in with; a directory person; the
    /// operator. A web session of one who no longer stands opens nothing.
    pub fn stands(&self, who: &Principal) -> bool {
        match &who.identity {
            Identity::User(login) => self.policy.snapshot().user(login).is_some_and(|user| {
                !user.disabled
                    && who
                        .credential
                        .is_none_or(|signed| signed == Credential::of(user))
            }),
            Identity::Operator | Identity::Person(_) => true,
        }
    }

    /// Refuses unless `who` is an administrator.
    fn require_admin(&self, who: &Principal) -> Answer<()> {
        if self.is_admin(who) {
            Ok(())
        } else {
            refuse(AdminErrorCode::Forbidden, "this is for administrators")
        }
    }

    /// Whether `who` may decide for some client computer (administrators:
    /// all of them).
    async fn approves_any(&self, who: &Principal) -> Answer<bool> {
        let visible = self.visibility(who).await?;
        Ok(visible.all || !visible.computers.is_empty())
    }

    /// Which computers `who` may see and decide for: administrators all, the
    /// others those whose approvers name them (every computer read once).
    async fn visibility(&self, who: &Principal) -> Answer<Visibility> {
        let all = self.is_admin(who);
        let mut computers = HashSet::new();
        if !all {
            let policy = self.policy.snapshot();
            for (id, record) in store::all(|after| self.store.computers_from(after, BATCH)).await? {
                if self.decides_for(who, &policy, &record) {
                    computers.insert(id.to_string());
                }
            }
        }
        Ok(Visibility { all, computers })
    }

    /// Whether `who` may see and decide what concerns computer `computer`.
    async fn covers(&self, who: &Principal, computer: &ComputerId) -> Answer<bool> {
        if self.is_admin(who) {
            return Ok(true);
        }
        Ok(match self.store.computer(computer).await? {
            Some(record) => self.decides_for(who, &self.policy.snapshot(), &record),
            None => false,
        })
    }

    /// Whether the approvers of the computer `record` describes name `who`.
    fn decides_for(
        &self,
        who: &Principal,
        policy: &policy::Snapshot,
        record: &ComputerRecord,
    ) -> bool {
        let options = policy.effective(record);
        match &who.identity {
            Identity::Operator => true,
            Identity::User(login) => rules::may_decide(policy.user(login), &options),
            Identity::Person(person) => {
                rules::person_may_decide(person, &options, |entry| self.directory.canonical(entry))
            }
        }
    }

    /// Appends an audit entry of `who` doing `action` (with `outcome`), and
    /// flushes it before the answer leaves.
    async fn audit(
        &self,
        who: &Principal,
        action: Action,
        computer: Option<&ComputerId>,
        outcome: String,
    ) -> Answer<()> {
        self.store
            .append_audit(&self.entry(who, action, computer, outcome))?;
        self.store.flush().await?;
        Ok(())
    }

    /// The audit entry of `who` doing `action`, now.
    fn entry(
        &self,
        who: &Principal,
        action: Action,
        computer: Option<&ComputerId>,
        outcome: String,
    ) -> AuditEntry {
        AuditEntry {
            at: self.clock.now(),
            who: who.who(),
            computer: computer.map(ToString::to_string),
            action,
            outcome,
        }
    }
}

/// Which computers one principal may see: see [`AdminService::visibility`].
/// It owns what it holds, so that work off the runtime can take it along.
struct Visibility {
    all: bool,
    computers: HashSet<String>,
}

impl Visibility {
    /// Whether the principal may see and decide what concerns `computer`.
    fn covers(&self, computer: &str) -> bool {
        self.all || self.computers.contains(computer)
    }
}

//! The login rules of DESIGN.md 1.2, as plain code. Each rule takes one
//! computer's login state ([`Logins`]), the policy in force ([`Policy`]), what
//! was looked up before the call (failure windows, a directory answer, a password
//! check, a fresh id) and `now`; it changes the state in memory and returns the
//! answer, pushing what must be written or sent as [`Effect`]s. No store, no
//! actor, no clock: the [`ComputerActor`](crate::ComputerActor) loads the state,
//! looks things up, calls a rule, applies its effects in one commit and replies.
//!
//! Where each rule lives:
//! - an OTP works once, only for the computer, OS user and email it was made
//!   for, and locks after too many wrong attempts: [`Otp::check`];
//! - OTPs and unprocessed access requests expire: [`Logins::expire_due`], and
//!   the timer for the next expiry: [`Logins::next_expiry`];
//! - a new OTP at most once per interval, the live one resent instead, resends
//!   spaced out: [`Logins::admit`], [`Logins::resend`];
//! - failure limits per computer and per account: [`throttled`], counted by
//!   [`Effect::Count`];
//! - who may decide a request and generate an OTP: [`may_decide`],
//!   [`may_generate`]; approvers are notified: [`Logins::open_request`].

mod approvals;
mod limits;
mod logins;

use crate::audit::{Action, Who};
use crate::clock::Timestamp;
use crate::id::ComputerId;
use crate::login::{LoginRequest, LoginResponse, Logout, Requested, Verdict};
use crate::mail::outbox::MailKind;
use crate::metrics::{LoginOutcome, RequestOutcome, Tally};
use crate::otp::{Binding, Code, OtpKeys};
use crate::request::{AccessRequest, Choice};
use crate::session::ClientSession;
use crate::settings::{Effective, SystemSettings};

pub use approvals::{Decider, approvers, enabled, may_decide, may_generate, person_may_decide};
pub use limits::{Bucket, Failure, LimitKey, PERSON_SHARE, throttled};
pub(crate) use logins::otp_mail;
pub use logins::{Admit, Logins, status_of};

/// The policy in force for one computer, read from memory.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The System Settings.
    pub settings: &'a SystemSettings,
    /// The computer's options, its group's and the defaults resolved.
    pub options: &'a Effective,
}

/// What the rules of one actor turn work with: the computer, the policy in
/// force for it, the keys its OTPs are made with, and the time of the turn.
#[derive(Clone, Copy)]
pub struct Turn<'a> {
    /// The client computer.
    pub computer: &'a ComputerId,
    /// Its policy.
    pub policy: Policy<'a>,
    /// The keys OTPs are hashed and sealed with.
    pub keys: &'a OtpKeys,
    /// Now.
    pub now: Timestamp,
}

impl<'a> Turn<'a> {
    /// What an OTP of `os_user` sent to `email` on this computer is bound to.
    fn binding(&self, os_user: &'a str, email: &'a str) -> Binding<'a> {
        Binding {
            computer: self.computer,
            os_user,
            email,
        }
    }
}

/// What a person typed at the prompt to log in.
#[derive(Clone, Copy)]
pub struct Typed<'a> {
    /// The OS user, from the agent.
    pub os_user: &'a str,
    /// The address typed.
    pub email: &'a str,
    /// The OTP typed.
    pub code: &'a Code,
}

/// Whether an access request is for emergency access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A plain request with an email address.
    Normal,
    /// "I need emergency access to computer".
    Emergency,
}

/// An access request to open.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    /// Its id.
    pub id: u64,
    /// The OS user asking.
    pub os_user: &'a str,
    /// The address they gave.
    pub email: &'a str,
    /// Emergency access or not.
    pub access: Access,
}

/// An approver's decision on an access request.
#[derive(Clone)]
pub struct Ruling<'a> {
    /// Who decides: an approver's name.
    pub by: &'a str,
    /// Who the audit log says decided (and through what: the web, the
    /// admin socket).
    pub seen_as: &'a Who,
    /// Approve or deny.
    pub choice: Choice,
    /// Their comment.
    pub comment: Option<String>,
}

/// Something a rule decided must be written, sent or counted. The actor applies
/// a call's effects together and makes them durable before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Save the OTP slot of this OS user, as it now is in the state.
    SaveSlot(String),
    /// Save this access request.
    SaveRequest(AccessRequest),
    /// Queue a message.
    QueueMail {
        /// The recipient.
        to: String,
        /// What it says.
        kind: MailKind,
        /// The access request it belongs to, if any.
        request: Option<u64>,
    },
    /// Append to the audit log.
    Audit {
        /// Who acted.
        who: Who,
        /// What was done.
        action: Action,
        /// What came of it; never a secret.
        outcome: String,
    },
    /// Count a failure against this key.
    Count(LimitKey),
    /// Count this for the operators' metrics.
    Tally(Tally),
}

impl Effect {
    /// An entry for the audit log.
    pub fn audit(who: &Who, action: Action, outcome: &str) -> Self {
        Self::Audit {
            who: who.clone(),
            action,
            outcome: outcome.to_owned(),
        }
    }
}

/// What `requested` came to, for the metrics.
pub fn request_outcome(requested: &Requested) -> RequestOutcome {
    match requested {
        Requested::Send { .. } => RequestOutcome::Sent,
        Requested::Resend { .. } => RequestOutcome::Resent,
        Requested::AwaitApproval { .. } => RequestOutcome::AwaitingApproval,
        Requested::Throttle { .. } => RequestOutcome::Throttled,
        Requested::DirectoryUnavailable => RequestOutcome::DirectoryUnavailable,
        Requested::TooSoon { .. }
        | Requested::NoLiveOtp
        | Requested::Disabled
        | Requested::NotRequired
        | Requested::ResendLater { .. }
        | Requested::Refuse => RequestOutcome::Refused,
    }
}

/// The outcome of a request, for the audit log; never the OTP.
pub fn describe(requested: &Requested) -> String {
    match requested {
        Requested::Send { to, .. } => format!("OTP sent to {to}"),
        Requested::Resend { to, .. } => format!("OTP resent to {to}"),
        Requested::AwaitApproval { request, .. } => format!("request {request} to approvers"),
        Requested::TooSoon { .. } => "too soon for a new OTP".into(),
        Requested::NoLiveOtp => "no live OTP".into(),
        Requested::Disabled => "not enabled".into(),
        Requested::NotRequired => "OTPs not required".into(),
        Requested::ResendLater { to, .. } => format!("OTP sent to {to} moments ago"),
        Requested::Refuse => "refused".into(),
        Requested::DirectoryUnavailable => "refused: the directory cannot be reached".into(),
        Requested::Throttle { .. } => "throttled".into(),
    }
}

/// How a person appears in the audit log.
pub fn person(os_user: &str, computer: &ComputerId) -> Who {
    Who::os_user(os_user, computer)
}

/// The answer to a call from an OS user name that breaks its rule
/// ([`is_os_account`](crate::names::is_os_account)): refused as any other refusal looks, counted against the
/// computer, and audited without the name.
pub fn invalid_caller(computer: &ComputerId, call: &LoginRequest) -> (LoginResponse, Vec<Effect>) {
    let answer = match call {
        LoginRequest::Status | LoginRequest::Request(_) | LoginRequest::Resend => {
            LoginResponse::Requested(Requested::Refuse)
        }
        LoginRequest::Verify { .. } => LoginResponse::Verified(Verdict::Deny),
        LoginRequest::Logout { .. } => LoginResponse::LoggedOut(Logout::NothingOpen),
        LoginRequest::Exempt { .. } => LoginResponse::Noted,
    };
    let mut effects = vec![
        Effect::Count(LimitKey::Computer(computer.clone())),
        Effect::audit(
            &Who::os_user("(invalid OS user name)", computer),
            Action::Verify,
            "refused: invalid OS user name",
        ),
    ];
    if let LoginRequest::Verify { .. } = call {
        effects.push(Effect::Tally(Tally::Login(LoginOutcome::DenyInvalidOsUser)));
    }
    (answer, effects)
}

/// When `session` ends unless its computer's agent is heard from: the session
/// timeout after its last activity. A connected agent's heartbeats keep moving
/// it on.
pub fn session_ends_at(session: &ClientSession, settings: &SystemSettings) -> Timestamp {
    session.last_activity.after(settings.session_timeout)
}

#[cfg(test)]
mod tests;

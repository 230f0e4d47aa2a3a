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

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{Action, Who};
use crate::clock::Timestamp;
use crate::directory::{DirectoryPerson, Recipient, Role, UserRecord, is_directory_name};
use crate::id::ComputerId;
use crate::login::{
    LoginAnswer, LoginCall, Logout, Mode, PromptState, RequestState, Requested, Verdict,
};
use crate::mail::outbox::MailKind;
use crate::names::{is_email_address, masked};
use crate::otp::{Binding, Check, Code, Origin, Otp, OtpKeys, OtpState, Slot};
use crate::request::{AccessRequest, Choice, Decision, Refusal, Resolution};
use crate::session::ClientSession;
use crate::settings::{Effective, SystemSettings};

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

/// What is counted, each in a [`Bucket`] of its own. Failures: first against
/// the person (an OS user on one computer), whose limit is the lowest, so that
/// nobody can spend anyone else's; then, with limits aimed at spraying, against
/// the computer, the email address and the internal login, whatever computer
/// they were tried from. And the new OTPs and access requests of a computer,
/// whatever OS user names it makes up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// One OS user on one computer.
    Person(ComputerId, String),
    /// Everything that failed on one computer.
    Computer(ComputerId),
    /// Wrong codes typed with one email address, on any computer.
    Email(String),
    /// Wrong passwords for one internal login, on any computer.
    Login(String),
    /// New OTPs sent at once and access requests opened on one computer.
    NewOnComputer(ComputerId),
}

/// A person's share of [`SystemSettings::max_failures`]: one in this many.
pub const PERSON_SHARE: u32 = 10;

impl LimitKey {
    /// The key under which the store counts it.
    pub fn key(&self) -> String {
        match self {
            Self::Person(id, os_user) => format!("person:{id}\0{os_user}"),
            Self::Computer(id) => format!("computer:{id}"),
            Self::Email(email) => format!("email:{}", email.to_lowercase()),
            Self::Login(login) => format!("login:{}", login.to_lowercase()),
            Self::NewOnComputer(id) => format!("new:{id}"),
        }
    }

    /// The failures it takes within one failure window before it is throttled:
    /// `max_failures` for a computer or an account, a [`PERSON_SHARE`] of it for
    /// a person.
    pub fn limit(&self, settings: &SystemSettings) -> u32 {
        match self {
            Self::Person(..) => (settings.max_failures / PERSON_SHARE).max(1),
            Self::Computer(_) | Self::Email(_) | Self::Login(_) => settings.max_failures,
            Self::NewOnComputer(_) => settings.max_new_per_computer,
        }
    }

    /// What it is, for the audit log.
    pub fn describe(&self) -> String {
        match self {
            Self::Person(..) => "this user on this computer".into(),
            Self::Computer(_) => "this computer".into(),
            Self::Email(email) => email.to_lowercase(),
            Self::Login(login) => format!("login {login}"),
            Self::NewOnComputer(_) => "new OTPs on this computer".into(),
        }
    }
}

/// Thousandths of a failure: a bucket drains by fractions.
const UNIT: u64 = 1000;

/// The failures against one key, as a leaky bucket: each failure adds one, and
/// the bucket drains its key's limit in every failure window. A key is throttled
/// while its bucket is full, that is once it took its limit within any stretch
/// of one window's length: no window edge lets twice the limit through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Failures in it, in thousandths.
    level: u64,
    /// When it was last drained.
    at: Timestamp,
}

impl Default for Bucket {
    /// An empty bucket.
    fn default() -> Self {
        Self {
            level: 0,
            at: Timestamp::from_unix_millis(0),
        }
    }
}

impl Bucket {
    /// The bucket at `now`, drained at `limit` per `window`.
    fn at(self, now: Timestamp, limit: u32, window: Duration) -> Self {
        let elapsed = u128::from(now.unix_millis().saturating_sub(self.at.unix_millis()));
        let drained = elapsed * u128::from(limit) * u128::from(UNIT) / window.as_millis().max(1);
        Self {
            level: self
                .level
                .saturating_sub(u64::try_from(drained).unwrap_or(u64::MAX)),
            at: now.max(self.at),
        }
    }

    /// The bucket with one more failure at `now`.
    pub fn fail(self, now: Timestamp, limit: u32, window: Duration) -> Self {
        let bucket = self.at(now, limit, window);
        Self {
            level: bucket.level.saturating_add(UNIT),
            ..bucket
        }
    }

    /// Whether it has drained by `now`: untouched for two windows (it never
    /// holds more than its limit and a few racing failures, and drains its
    /// limit in one).
    pub fn drained_by(&self, now: Timestamp, window: Duration) -> bool {
        now >= self.at.after(window * 2)
    }

    /// How long until it takes a failure again, if it is full at `now` (one more
    /// would overflow it).
    pub fn full_for(self, now: Timestamp, limit: u32, window: Duration) -> Option<Duration> {
        let capacity = u64::from(limit) * UNIT;
        let over = self.level.saturating_add(UNIT).saturating_sub(capacity);
        let per_window = u128::from(limit) * u128::from(UNIT);
        let draining = (u128::from(over) * window.as_millis()).div_ceil(per_window);
        let free = u128::from(self.at.unix_millis()) + draining;
        let wait = free.saturating_sub(u128::from(now.unix_millis()));
        (wait > 0).then(|| Duration::from_millis(u64::try_from(wait).unwrap_or(u64::MAX)))
    }
}

/// The longest wait among the full buckets of `failures`, with its key.
pub fn throttled<'k>(
    failures: impl IntoIterator<Item = &'k (LimitKey, Bucket)>,
    settings: &SystemSettings,
    now: Timestamp,
) -> Option<(Duration, &'k LimitKey)> {
    failures
        .into_iter()
        .filter_map(|(key, bucket)| {
            let wait = bucket.full_for(now, key.limit(settings), settings.failure_window)?;
            Some((wait, key))
        })
        .max_by_key(|(wait, _)| *wait)
}

/// Who decides an access request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    /// An internal user, by login name.
    User(String),
    /// A person of the directory, signed in with their directory password (or
    /// holding a link the server signed for them).
    Person(DirectoryPerson),
}

impl Decider {
    /// Their name, as the request records who decided it.
    pub fn name(&self) -> &str {
        match self {
            Self::User(login) => login,
            Self::Person(person) => &person.name,
        }
    }
}

/// Whether `user` may decide the access requests of a computer whose options
/// are `options`: administrators always, others when they are its approvers.
pub fn may_decide(user: Option<&UserRecord>, options: &Effective) -> bool {
    user.is_some_and(|user| {
        !user.disabled
            && (user.role == Role::Administrator || options.approvers.contains(&user.login))
    })
}

/// Whether directory person `person` may decide the access requests of a
/// computer whose options are `options`: when one of its approver entries
/// names them or a group of theirs, compared in the spelling `canonical`
/// gives.
pub fn person_may_decide(
    person: &DirectoryPerson,
    options: &Effective,
    canonical: impl Fn(&str) -> String,
) -> bool {
    options
        .approvers
        .iter()
        .filter(|entry| is_directory_name(entry))
        .any(|entry| person.is_named_by(&canonical(entry)))
}

/// Whether `user` may generate an OTP without a request: administrators only.
pub fn may_generate(user: Option<&UserRecord>) -> bool {
    user.is_some_and(|user| !user.disabled && user.role == Role::Administrator)
}

/// Who is told of a computer's access requests: its internal approvers and
/// the people its directory entries reach (`found`), once each; or the
/// administrators when that is nobody. Disabled users never.
pub fn approvers<'u>(
    users: impl IntoIterator<Item = &'u UserRecord> + Clone,
    options: &Effective,
    found: Vec<Recipient>,
) -> Vec<Recipient> {
    let recipient = |user: &UserRecord| Recipient {
        name: user.login.clone(),
        email: user.email.clone(),
    };
    let mut named: Vec<Recipient> = users
        .clone()
        .into_iter()
        .filter(|user| !user.disabled && options.approvers.contains(&user.login))
        .map(recipient)
        .collect();
    for person in found {
        if !named.iter().any(|known| known.name == person.name) {
            named.push(person);
        }
    }
    if !named.is_empty() {
        return named;
    }
    users
        .into_iter()
        .filter(|user| !user.disabled && user.role == Role::Administrator)
        .map(recipient)
        .collect()
}

/// Whether a computer with `options` takes requests in `mode`: by email only
/// when neither auto-send option is on; Active Directory and internal users only
/// when their option is; emergency access always.
pub fn enabled(mode: &Mode, options: &Effective) -> bool {
    match mode {
        Mode::Email(_) => !options.auto_directory && !options.auto_internal,
        Mode::Directory => options.auto_directory,
        Mode::Internal { .. } => options.auto_internal,
        Mode::Emergency(_) => true,
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
pub fn invalid_caller(computer: &ComputerId, call: &LoginCall) -> (LoginAnswer, Vec<Effect>) {
    let answer = match call {
        LoginCall::Status | LoginCall::Request(_) | LoginCall::Resend => {
            LoginAnswer::Requested(Requested::Refuse)
        }
        LoginCall::Verify { .. } => LoginAnswer::Verified(Verdict::Deny),
        LoginCall::Logout { .. } => LoginAnswer::LoggedOut(Logout::NothingOpen),
        LoginCall::Exempt { .. } => LoginAnswer::Noted,
    };
    let effects = vec![
        Effect::Count(LimitKey::Computer(computer.clone())),
        Effect::audit(
            &Who::os_user("(invalid OS user name)", computer),
            Action::Verify,
            "refused: invalid OS user name",
        ),
    ];
    (answer, effects)
}

/// When `session` ends unless its computer's agent is heard from: the session
/// timeout after its last activity. A connected agent's heartbeats keep moving
/// it on.
pub fn session_ends_at(session: &ClientSession, settings: &SystemSettings) -> Timestamp {
    session.last_activity.after(settings.session_timeout)
}

/// What [`Logins::admit`] found: a new OTP may be asked for, or the answer is
/// already known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Go on: look up what the mode needs, then issue or open a request.
    New,
    /// The answer, without a new OTP.
    Answer(Requested),
}

/// The login state of one client computer: OTP slots and the latest access
/// request, per OS user.
#[derive(Debug, Clone, Default)]
pub struct Logins {
    /// OTP state per OS user.
    pub slots: HashMap<String, Slot>,
    /// The latest access request per OS user.
    pub latest: HashMap<String, AccessRequest>,
}

impl Logins {
    /// Expires what is due at `now` for `os_user`: the OTP, and a pending access
    /// request (whose requester is told). Says whether anything expired.
    pub fn expire_due(
        &mut self,
        computer: &ComputerId,
        os_user: &str,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let who = person(os_user, computer);
        let otp_expired = self
            .slots
            .get_mut(os_user)
            .and_then(|slot| slot.otp.as_mut())
            .is_some_and(|otp| otp.expire_if_due(now));
        if otp_expired {
            effects.push(Effect::SaveSlot(os_user.to_owned()));
            effects.push(Effect::audit(&who, Action::Expire, "OTP expired"));
        }
        let request_expired = self
            .latest
            .get_mut(os_user)
            .is_some_and(|request| request.expire_if_due(now));
        if request_expired && let Some(request) = self.latest.get(os_user) {
            expired(computer, request, effects);
        }
        otp_expired || request_expired
    }

    /// Expires everything due at `now`; says whether anything expired.
    pub fn expire_all_due(
        &mut self,
        computer: &ComputerId,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let mut users: Vec<String> = self
            .slots
            .keys()
            .chain(self.latest.keys())
            .cloned()
            .collect();
        users.sort_unstable();
        users.dedup();
        let mut changed = false;
        for os_user in users {
            changed |= self.expire_due(computer, &os_user, now, effects);
        }
        changed
    }

    /// When the next live OTP or pending request expires, if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        let otps = self
            .slots
            .values()
            .filter_map(|slot| slot.otp.as_ref())
            .filter(|otp| otp.state == OtpState::Live)
            .map(|otp| otp.valid_until);
        let requests = self
            .latest
            .values()
            .filter(|r| r.decision == Decision::Pending)
            .map(|r| r.expires);
        otps.chain(requests).min()
    }

    /// What the login prompt of `os_user` shows.
    pub fn prompt_state(&self, policy: Policy<'_>, os_user: &str, now: Timestamp) -> PromptState {
        let slot = self.slots.get(os_user);
        let live = slot
            .and_then(|slot| slot.otp.as_ref())
            .filter(|otp| otp.is_live(now));
        let request = self.latest.get(os_user);
        PromptState {
            allow_otp: policy.options.allow_otp,
            auto_directory: policy.options.auto_directory,
            auto_internal: policy.options.auto_internal,
            record_input: policy.options.record_input,
            // An address the person typed is theirs to see again; one from the
            // directory or the user list is not shown.
            email: match live {
                Some(otp) if otp.origin == Origin::AutoSend => None,
                Some(otp) => Some(otp.email.clone()),
                None => request.map(|r| r.email.clone()),
            },
            request: request.map(|r| (r.id, status_of(r))),
            otp_valid_until: live.map(|otp| otp.valid_until),
            next_new_at: self
                .next_new_at(policy.settings, os_user)
                .filter(|&next| next > now),
        }
    }

    /// When `os_user` may next ask for a new OTP, if they ever asked for one.
    fn next_new_at(&self, settings: &SystemSettings, os_user: &str) -> Option<Timestamp> {
        Some(
            self.slots
                .get(os_user)?
                .last_new?
                .after(settings.new_otp_interval),
        )
    }

    /// Whether `os_user` may ask for a new OTP in a mode that is `enabled`, given
    /// the `failures` of the person and the computer: not needed while OTPs are
    /// off; not while this mode is off or they are throttled; while a request of
    /// theirs is pending, that request; within the interval since an OTP was
    /// last issued to them, the live OTP resent or the time a new one may be
    /// asked for.
    pub fn admit(
        &mut self,
        turn: &Turn<'_>,
        enabled: bool,
        failures: &[(LimitKey, Bucket)],
        os_user: &str,
        effects: &mut Vec<Effect>,
    ) -> Admit {
        let (policy, now) = (turn.policy, turn.now);
        if !policy.options.allow_otp {
            return Admit::Answer(Requested::NotRequired);
        }
        if !enabled {
            return Admit::Answer(Requested::Disabled);
        }
        let new = |(key, _): &&(LimitKey, Bucket)| matches!(key, LimitKey::NewOnComputer(_));
        let failed = failures.iter().filter(|entry| !new(entry));
        if let Some((retry_after, _)) = throttled(failed, policy.settings, now) {
            return Admit::Answer(Requested::Throttle { retry_after });
        }
        if let Some(request) = self.latest.get(os_user)
            && request.decision == Decision::Pending
        {
            return Admit::Answer(Requested::AwaitApproval {
                request: request.id,
                expires: request.expires,
            });
        }
        let Some(next_at) = self
            .next_new_at(policy.settings, os_user)
            .filter(|&next| now < next)
        else {
            // Something new: unless the computer has made too much of it.
            return match throttled(failures.iter().filter(new), policy.settings, now) {
                Some((retry_after, _)) => Admit::Answer(Requested::Throttle { retry_after }),
                None => Admit::New,
            };
        };
        Admit::Answer(match self.resend(turn, os_user, effects) {
            Requested::NoLiveOtp => Requested::TooSoon { next_at },
            other => other,
        })
    }

    /// Emails the live OTP of `os_user` again, unless the last email is more
    /// recent than the resend gap (then it says when it may be sent again).
    pub fn resend(
        &mut self,
        turn: &Turn<'_>,
        os_user: &str,
        effects: &mut Vec<Effect>,
    ) -> Requested {
        let (computer, policy, now) = (turn.computer, turn.policy, turn.now);
        if !policy.options.allow_otp {
            return Requested::NotRequired;
        }
        let Some(slot) = self.slots.get_mut(os_user) else {
            return Requested::NoLiveOtp;
        };
        let Some(otp) = slot.otp.as_ref().filter(|otp| otp.is_live(now)) else {
            return Requested::NoLiveOtp;
        };
        let to = if otp.origin == Origin::AutoSend {
            masked(&otp.email)
        } else {
            otp.email.clone()
        };
        let valid_until = otp.valid_until;
        if let Some(next_at) = slot
            .last_sent
            .map(|sent| sent.after(policy.settings.resend_gap))
            .filter(|&next_at| now < next_at)
        {
            return Requested::ResendLater { to, next_at };
        }
        if let Some(sealed) = otp.sealed() {
            effects.push(Effect::QueueMail {
                to: otp.email.clone(),
                kind: otp_mail(computer, os_user, sealed.to_vec(), valid_until),
                request: otp.origin.request(),
            });
            slot.last_sent = Some(now);
            effects.push(Effect::SaveSlot(os_user.to_owned()));
        }
        Requested::Resend { to, valid_until }
    }

    /// Issues a new OTP `code` for `os_user` and `email`, replacing any other, and
    /// queues its email. One the person asked for (sent at once, or approved)
    /// starts the interval; one an administrator generated does not.
    pub fn issue(
        &mut self,
        turn: &Turn<'_>,
        os_user: &str,
        email: &str,
        code: &Code,
        origin: Origin,
        effects: &mut Vec<Effect>,
    ) -> Timestamp {
        let (computer, now) = (turn.computer, turn.now);
        let valid_until = now.after(turn.policy.settings.expiration);
        let asked = !matches!(origin, Origin::Generated { .. });
        // Sent at once: new on this computer (an approval's request counted).
        let origin_counts = origin == Origin::AutoSend;
        let binding = turn.binding(os_user, email);
        let otp = Otp::new(turn.keys, binding, code, now, valid_until, origin);
        effects.push(Effect::QueueMail {
            to: email.to_owned(),
            kind: otp_mail(
                computer,
                os_user,
                otp.sealed().map(<[u8]>::to_vec).unwrap_or_default(),
                valid_until,
            ),
            request: otp.origin.request(),
        });
        if origin_counts {
            effects.push(Effect::Count(LimitKey::NewOnComputer(computer.clone())));
        }
        let slot = self.slots.entry(os_user.to_owned()).or_default();
        slot.otp = Some(otp);
        slot.last_sent = Some(now);
        if asked {
            slot.last_new = Some(now);
        }
        effects.push(Effect::SaveSlot(os_user.to_owned()));
        valid_until
    }

    /// Opens the access request `ask` says, and notifies `approvers` (see
    /// [`approvers`]). Only an approval, which issues an OTP, starts the
    /// interval. Refused when the email is not an address.
    pub fn open_request(
        &mut self,
        turn: &Turn<'_>,
        approvers: &[Recipient],
        ask: Ask<'_>,
        effects: &mut Vec<Effect>,
    ) -> Requested {
        let (computer, now) = (turn.computer, turn.now);
        let Ask {
            id,
            os_user,
            email,
            access,
        } = ask;
        let emergency = access == Access::Emergency;
        if !is_email_address(email) {
            effects.push(Effect::Count(LimitKey::Person(
                computer.clone(),
                os_user.to_owned(),
            )));
            effects.push(Effect::Count(LimitKey::Computer(computer.clone())));
            return Requested::Refuse;
        }
        let request = AccessRequest {
            id,
            computer: computer.clone(),
            os_user: os_user.to_owned(),
            email: email.to_owned(),
            emergency,
            created: now,
            expires: now.after(turn.policy.settings.expiration),
            decision: Decision::Pending,
        };
        effects.push(Effect::SaveRequest(request.clone()));
        effects.push(Effect::Count(LimitKey::NewOnComputer(computer.clone())));
        for approver in approvers {
            effects.push(Effect::QueueMail {
                to: approver.email.clone(),
                kind: MailKind::Approval {
                    approver: approver.name.clone(),
                    request: id,
                    computer: computer.clone(),
                    os_user: os_user.to_owned(),
                    requester: email.to_owned(),
                    emergency,
                    expires: request.expires,
                },
                request: Some(id),
            });
        }
        let answer = Requested::AwaitApproval {
            request: id,
            expires: request.expires,
        };
        self.latest.insert(os_user.to_owned(), request);
        answer
    }

    /// Checks `code` typed by `os_user` with `email`, given the `failures` of the
    /// person, the computer and the email; not needed while OTPs are off. On Allow the OTP is used up and client
    /// session `session` may start; every wrong answer looks the same to the
    /// caller and is counted.
    pub fn verify(
        &mut self,
        turn: &Turn<'_>,
        failures: &[(LimitKey, Bucket)],
        session: u64,
        typed: Typed<'_>,
        effects: &mut Vec<Effect>,
    ) -> Verdict {
        let (computer, policy, now) = (turn.computer, turn.policy, turn.now);
        let Typed {
            os_user,
            email,
            code,
        } = typed;
        if !policy.options.allow_otp {
            return Verdict::NotRequired;
        }
        let who = person(os_user, computer);
        if !is_email_address(email) {
            // Not an address: a denial like any other, counted, never written out.
            effects.push(Effect::Count(LimitKey::Person(
                computer.clone(),
                os_user.to_owned(),
            )));
            effects.push(Effect::Count(LimitKey::Computer(computer.clone())));
            effects.push(Effect::audit(
                &who,
                Action::Verify,
                "denied (not an email address)",
            ));
            return Verdict::Deny;
        }
        if let Some((retry_after, key)) = throttled(failures, policy.settings, now) {
            let outcome = format!("throttled: too many failures for {}", key.describe());
            effects.push(Effect::audit(&who, Action::Verify, &outcome));
            return Verdict::Throttle { retry_after };
        }
        // A user with no OTP gets no slot: names the agent sends cost no storage.
        let check = match self
            .slots
            .get_mut(os_user)
            .and_then(|slot| slot.otp.as_mut())
        {
            Some(otp) => {
                effects.push(Effect::SaveSlot(os_user.to_owned()));
                let binding = turn.binding(os_user, email);
                otp.check(turn.keys, binding, code, now, policy.settings.max_attempts)
            }
            None => Check::NotLive,
        };
        match check {
            Check::Allow => {
                effects.push(Effect::audit(
                    &who,
                    Action::Verify,
                    &format!("allowed ({email})"),
                ));
                Verdict::Allow { session }
            }
            Check::Wrong { .. } | Check::NotLive => {
                for key in [
                    LimitKey::Person(computer.clone(), os_user.to_owned()),
                    LimitKey::Computer(computer.clone()),
                    LimitKey::Email(email.to_owned()),
                ] {
                    effects.push(Effect::Count(key));
                }
                effects.push(Effect::audit(
                    &who,
                    Action::Verify,
                    &format!("denied ({email})"),
                ));
                if check == (Check::Wrong { locked: true }) {
                    effects.push(Effect::audit(
                        &who,
                        Action::Lock,
                        "locked after too many wrong attempts",
                    ));
                }
                Verdict::Deny
            }
        }
    }

    /// Decides pending access request `request` as `choice` (by `by`, who may
    /// decide it). Approval issues OTP `code`; denial tells the requester. Says
    /// whether it was still pending; one that expired meanwhile is expired now.
    pub fn decide(
        &mut self,
        turn: &Turn<'_>,
        request: &mut AccessRequest,
        ruling: Ruling<'_>,
        code: &Code,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let (computer, now) = (turn.computer, turn.now);
        let Ruling {
            by,
            choice,
            comment,
        } = ruling;
        if request.expire_if_due(now) {
            expired(computer, request, effects);
        }
        if request.decision != Decision::Pending {
            self.remember(request);
            return false;
        }
        let resolution = Resolution {
            by: by.to_owned(),
            at: now,
            comment: comment.clone(),
        };
        let who = Who::User {
            login: by.to_owned(),
        };
        let id = request.id;
        match choice {
            Choice::Approve => {
                let origin = Origin::Approval { request: id };
                self.issue(
                    turn,
                    &request.os_user,
                    &request.email,
                    code,
                    origin,
                    effects,
                );
                request.decision = Decision::Approve(resolution);
                effects.push(Effect::audit(
                    &who,
                    Action::Approve,
                    &format!("request {id} approved"),
                ));
            }
            Choice::Deny => {
                request.decision = Decision::Deny(resolution);
                effects.push(Effect::QueueMail {
                    to: request.email.clone(),
                    kind: MailKind::Outcome {
                        computer: computer.clone(),
                        refusal: Refusal::Deny,
                        comment,
                    },
                    request: Some(id),
                });
                effects.push(Effect::audit(
                    &who,
                    Action::Deny,
                    &format!("request {id} denied"),
                ));
            }
        }
        effects.push(Effect::SaveRequest(request.clone()));
        self.remember(request);
        true
    }

    /// Keeps `request` as the latest of its OS user, if it is that one.
    fn remember(&mut self, request: &AccessRequest) {
        if let Some(latest) = self.latest.get_mut(&request.os_user)
            && latest.id == request.id
        {
            latest.clone_from(request);
        }
    }
}

/// Records that `request` expired and tells its requester.
fn expired(computer: &ComputerId, request: &AccessRequest, effects: &mut Vec<Effect>) {
    effects.push(Effect::SaveRequest(request.clone()));
    effects.push(Effect::QueueMail {
        to: request.email.clone(),
        kind: MailKind::Outcome {
            computer: computer.clone(),
            refusal: Refusal::Expire,
            comment: None,
        },
        request: Some(request.id),
    });
    effects.push(Effect::audit(
        &person(&request.os_user, computer),
        Action::Expire,
        &format!("request {} expired", request.id),
    ));
}

pub(crate) fn otp_mail(
    computer: &ComputerId,
    os_user: &str,
    sealed: Vec<u8>,
    valid_until: Timestamp,
) -> MailKind {
    MailKind::Otp {
        computer: computer.clone(),
        os_user: os_user.to_owned(),
        sealed,
        valid_until,
    }
}

/// Where an access request stands, for the prompt.
pub fn status_of(request: &AccessRequest) -> RequestState {
    match &request.decision {
        Decision::Pending => RequestState::Pending {
            expires: request.expires,
        },
        Decision::Approve(_) => RequestState::Approve,
        Decision::Deny(resolution) => RequestState::Deny {
            comment: resolution.comment.clone(),
        },
        Decision::Expire => RequestState::Expire,
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;

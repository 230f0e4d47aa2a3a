//! The actor that owns one client computer: its agent connections, OTPs, access
//! requests, client sessions, expiry timer and failure counts. Every decision
//! about one computer goes through its mailbox, so they are serialised without
//! locks. This file is the actor's I/O only: it loads state, looks up what a
//! rule needs, calls the rule in [`crate::rules`], applies the effects the rule
//! returns and replies.
//!
//! Its state is loaded from the [`Store`] in `pre_start`, so a restart by the
//! supervisor is just a respawn. A change that someone will rely on (an OTP
//! issued or used, a request decided, a mail queued) is flushed before the reply
//! leaves and before the mailer is woken.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::audit::{Action, AuditEntry, Who};
use crate::clock::{Clock, Timestamp};
use crate::directory::{Directory, PasswordCheck, Recipient, check_login, is_directory_name};
use crate::id::ComputerId;
use crate::login::{LoginAnswer, LoginCall, Mode, Requested, Verdict};
use crate::mail::{MailKind, MailerHandle, OutboxEntry};
use crate::mailbox::Waiting;
use crate::names;
use crate::otp::{Code, Origin, OtpKeys};
use crate::policy;
use crate::request::{AccessRequest, Choice};
use crate::rules::{self, Admit, Bucket, Decider, Effect, LimitKey, Logins, Policy};
use crate::session::{ClientSession, SessionEnd};
use crate::settings::{Options, OptionsPatch, SystemSettings};
use crate::store::{ComputerRecord, Store, StoreError};
use crate::timer::Timer;

/// The longest PAM service name an exempt login's record keeps.
const MAX_SERVICE: usize = 64;

/// What every computer's actor works with.
pub struct Services {
    /// Where state is kept.
    pub store: Arc<dyn Store>,
    /// Where wall-clock time comes from.
    pub clock: Arc<dyn Clock>,
    /// The keys that protect stored OTPs.
    pub keys: Arc<OtpKeys>,
    /// The settings, groups and users in force, and the one way to change them.
    pub policy: policy::Owner,
    /// Where Active Directory accounts' emails come from.
    pub directory: Arc<dyn Directory>,
    /// Woken when mail is queued.
    pub mailer: Option<MailerHandle>,
}

/// What a [`ComputerActor`] is asked to do.
pub enum ComputerMsg {
    /// An agent connection for this computer was established.
    Connect {
        /// Which connection.
        conn: ConnectionId,
        /// What the agent said of itself.
        info: AgentInfo,
        /// Answered once the connection is recorded.
        reply: RpcReplyPort<Result<(), ComputerError>>,
    },
    /// The agent on connection `conn` is alive: recorded, not answered (the
    /// connection answers heartbeats itself, so a busy actor never looks like a
    /// dead server to its agent).
    Heartbeat {
        /// Which connection.
        conn: ConnectionId,
        /// Freed once this heartbeat is handled: a connection never has more
        /// than one waiting.
        pending: Waiting,
    },
    /// Connection `conn` has closed (the computer's sessions go on).
    Disconnect {
        /// Which connection.
        conn: ConnectionId,
    },
    /// The login prompt of OS user `os_user`.
    Login {
        /// The OS user, as the agent read it from the prompt's peer credentials.
        os_user: String,
        /// What is asked.
        call: LoginCall,
        /// The answer.
        reply: RpcReplyPort<Result<LoginAnswer, ComputerError>>,
    },
    /// A [`ComputerMsg::Login`] again, with what the directory said for it
    /// (looked up outside the actor's turn, so a slow directory holds up only
    /// this call).
    Looked {
        /// As in [`ComputerMsg::Login`].
        os_user: String,
        /// As in [`ComputerMsg::Login`].
        call: LoginCall,
        /// What the directory said.
        found: Found,
        /// As in [`ComputerMsg::Login`].
        reply: RpcReplyPort<Result<LoginAnswer, ComputerError>>,
    },
    /// Approve or deny access request `request`.
    Decide {
        /// The access request.
        request: u64,
        /// Who decides.
        by: Decider,
        /// Approve or deny.
        choice: Choice,
        /// Their comment.
        comment: Option<String>,
        /// What became of it.
        reply: RpcReplyPort<Result<Decided, ComputerError>>,
    },
    /// Generate an OTP without a request (administrators only).
    Generate {
        /// The OS user it is for.
        os_user: String,
        /// Where it goes.
        email: String,
        /// Why.
        comment: String,
        /// The administrator's login name.
        by: String,
        /// Until when it is valid, or why not.
        reply: RpcReplyPort<Result<Generated, ComputerError>>,
    },
    /// Change the computer's group and options.
    Configure {
        /// `Some(None)` leaves its group; `Some(Some(g))` puts it in group `g`.
        group: Option<Option<String>>,
        /// The options to set.
        options: OptionsPatch,
        /// Who changes them, for the audit log.
        by: Who,
        /// The record as changed.
        reply: RpcReplyPort<Result<ComputerRecord, ComputerError>>,
    },
    /// What is known of this computer.
    Record(RpcReplyPort<ComputerRecord>),
    /// Expire what is due: sent by the actor's own timer.
    Sweep,
    /// Panics in the handler, to prove that the supervisor respawns the actor.
    #[cfg(feature = "fault-injection")]
    Panic,
}

impl ComputerMsg {
    /// Whether this is a call whose caller no longer waits for the answer.
    fn caller_gone(&self) -> bool {
        match self {
            Self::Connect { reply, .. } => reply.is_closed(),
            Self::Login { reply, .. } | Self::Looked { reply, .. } => reply.is_closed(),
            Self::Decide { reply, .. } => reply.is_closed(),
            Self::Generate { reply, .. } => reply.is_closed(),
            Self::Configure { reply, .. } => reply.is_closed(),
            _ => false,
        }
    }
}

/// What a request needs from the directory before the actor's turn.
#[derive(Debug, Default)]
struct Lookup {
    /// The OS account's email (Active Directory auto-send).
    requester: bool,
    /// The approver entries naming directory accounts or groups.
    entries: Vec<String>,
}

impl Lookup {
    fn is_empty(&self) -> bool {
        !self.requester && self.entries.is_empty()
    }

    /// Asks the directory (each lookup bounded by its timeout).
    async fn run(self, directory: &dyn Directory, os_user: &str) -> Found {
        let requester = if self.requester {
            Some(directory.email_of(os_user).await)
        } else {
            None
        };
        let mut recipients = Vec::new();
        for entry in &self.entries {
            match directory.recipients(entry).await {
                Ok(found) => recipients.extend(found.unwrap_or_default()),
                Err(err) => {
                    tracing::warn!(%entry, error = %err, "approvers could not be looked up")
                }
            }
        }
        Found {
            requester,
            recipients,
        }
    }
}

/// What the directory said for a request.
#[derive(Debug, Default)]
pub struct Found {
    /// The OS account's email, if it was looked up.
    requester: Option<Result<Option<String>, crate::directory::DirectoryError>>,
    /// Whom the approver entries naming the directory reach.
    recipients: Vec<Recipient>,
}

/// What became of a [`ComputerMsg::Decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Decided as asked.
    Done(AccessRequest),
    /// It was already decided, or had expired.
    NotPending(AccessRequest),
    /// No such request on this computer.
    NotFound,
    /// The user may not decide requests of this computer.
    NotAllowed,
}

/// What became of a [`ComputerMsg::Generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generated {
    /// Sent; valid until then.
    Send {
        /// Until when it is valid.
        valid_until: Timestamp,
    },
    /// Only administrators may do this.
    NotAllowed,
}

/// Tells one agent connection from another, within one server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// What an agent says of itself when it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentInfo {
    /// The host name the agent reported.
    pub host_name: String,
    /// The agent's software version.
    pub agent_version: String,
    /// The agent link version its connection speaks.
    pub protocol: u8,
}

/// Why a [`ComputerActor`] could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComputerError {
    /// The store failed.
    #[error("storage failed")]
    Store(#[from] StoreError),
    /// The directory could not answer.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    /// The computer has [`MAX_CONNECTIONS_PER_COMPUTER`] connections already.
    #[error("too many connections of this computer")]
    TooManyConnections,
}

/// The most connections one computer identity may hold at once: its agent, and
/// room for reconnections whose old connection has not been noticed gone yet.
pub const MAX_CONNECTIONS_PER_COMPUTER: usize = 4;

/// How often at most a live connection's `last_seen` (and its sessions' last
/// activity) is written: heartbeats come more often, and need no disk.
pub const SEEN_WRITE_EVERY: Duration = Duration::from_secs(30);

/// The actor; stateless, as ractor wants: its state is [`ComputerState`].
pub struct ComputerActor;

/// What a [`ComputerActor`] is started with.
pub struct ComputerArgs {
    /// Which computer it serves.
    pub id: ComputerId,
    /// What it works with.
    pub services: Arc<Services>,
}

/// A [`ComputerActor`]'s state.
pub struct ComputerState {
    id: ComputerId,
    svc: Arc<Services>,
    record: ComputerRecord,
    /// The open connections of this computer's agent. More than one is normal for
    /// a moment: a reconnecting agent may arrive before its old connection has
    /// been noticed as dead.
    connections: HashSet<ConnectionId>,
    /// OTP slots and the latest access request, per OS user.
    logins: Logins,
    /// Open client sessions: they outlive connections and restarts.
    sessions: HashMap<u64, ClientSession>,
    /// The expiry timer; cancelled when the state drops with the actor.
    timer: Timer<ComputerMsg>,
    /// Whether mail was queued since the last commit.
    mail_queued: bool,
    /// When a heartbeat last wrote `last_seen`.
    last_saved: Option<Timestamp>,
}

type Result<T, E = ComputerError> = std::result::Result<T, E>;

impl Actor for ComputerActor {
    type Msg = ComputerMsg;
    type State = ComputerState;
    type Arguments = ComputerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ComputerArgs,
    ) -> Result<ComputerState, ActorProcessingErr> {
        let ComputerArgs { id, services: svc } = args;
        let now = svc.clock.now();
        let record = match svc.store.computer(&id)? {
            // A restart forgets the connections, which re-register with their next
            // heartbeat; until then the computer is not connected.
            Some(record) => ComputerRecord {
                connected_since: None,
                ..record
            },
            None => ComputerRecord {
                first_seen: now,
                connected_since: None,
                last_seen: now,
                host_name: String::new(),
                agent_version: String::new(),
                group: None,
                options: Options::default(),
                protocol: None,
            },
        };
        let mut logins = Logins {
            slots: svc.store.slots(&id)?.into_iter().collect(),
            latest: HashMap::new(),
        };
        for request in svc.store.requests_of(&id)? {
            logins.latest.insert(request.os_user.clone(), request);
        }
        let mut state = ComputerState {
            id,
            svc,
            record,
            connections: HashSet::new(),
            logins,
            sessions: HashMap::new(),
            timer: Timer::idle(),
            mail_queued: false,
            last_saved: None,
        };
        // Sessions open when the server stopped are still open: the people are
        // still logged in. Those whose agent was gone too long end in the sweep.
        for session in state.svc.store.sessions_of(&state.id)? {
            if session.ended.is_none() {
                state.sessions.insert(session.id, session);
            }
        }
        state.sweep(&myself, false).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: ComputerMsg,
        state: &mut ComputerState,
    ) -> Result<(), ActorProcessingErr> {
        if message.caller_gone() {
            // Its call timed out while this waited in the mailbox: nothing is done
            // that the caller would not know of, such as an OTP used up or issued
            // behind an "unavailable".
            tracing::warn!(computer = %state.id, "dropped a call whose caller gave up");
            return Ok(());
        }
        match message {
            ComputerMsg::Connect { conn, info, reply } => {
                if state.connections.len() >= MAX_CONNECTIONS_PER_COMPUTER {
                    let _ = reply.send(Err(ComputerError::TooManyConnections));
                    return Ok(());
                }
                // Sessions whose agent was gone too long ended when it went.
                state.sweep(&myself, false).await?;
                state.record.host_name = info.host_name;
                state.record.agent_version = info.agent_version;
                state.record.protocol = Some(info.protocol);
                // A new connection is recorded at once, whatever the last write.
                state.last_saved = None;
                let _ = reply.send(state.seen(conn));
            }
            ComputerMsg::Heartbeat { conn, pending } => {
                pending.handled();
                if let Err(err) = state.seen(conn) {
                    tracing::error!(computer = %state.id, error = %err, "cannot record a heartbeat");
                }
            }
            ComputerMsg::Disconnect { conn } => {
                if let Err(err) = state.disconnect(conn).await {
                    tracing::error!(computer = %state.id, error = %err, "cannot record disconnection");
                }
            }
            ComputerMsg::Login {
                os_user,
                call,
                reply,
            } => {
                let lookup = state.lookup(&call);
                if lookup.is_empty() {
                    let answer = state.login(&os_user, call, Found::default()).await;
                    let _ = reply.send(answer);
                    state.schedule(&myself);
                } else {
                    let directory = Arc::clone(&state.svc.directory);
                    tokio::spawn(async move {
                        let found = lookup.run(&*directory, &os_user).await;
                        let again = ComputerMsg::Looked {
                            os_user,
                            call,
                            found,
                            reply,
                        };
                        // Gone: the actor stopped; the caller hears so.
                        let _ = myself.cast(again);
                    });
                }
            }
            ComputerMsg::Looked {
                os_user,
                call,
                found,
                reply,
            } => {
                let answer = state.login(&os_user, call, found).await;
                let _ = reply.send(answer);
                state.schedule(&myself);
            }
            ComputerMsg::Decide {
                request,
                by,
                choice,
                comment,
                reply,
            } => {
                let _ = reply.send(state.decide(request, &by, choice, comment).await);
                state.schedule(&myself);
            }
            ComputerMsg::Generate {
                os_user,
                email,
                comment,
                by,
                reply,
            } => {
                let _ = reply.send(state.generate(&os_user, &email, comment, &by).await);
                state.schedule(&myself);
            }
            ComputerMsg::Configure {
                group,
                options,
                by,
                reply,
            } => {
                let _ = reply.send(state.configure(group, &options, &by).await);
            }
            ComputerMsg::Record(reply) => {
                let _ = reply.send(state.record.clone());
            }
            ComputerMsg::Sweep => state.sweep(&myself, false).await?,
            #[cfg(feature = "fault-injection")]
            ComputerMsg::Panic => panic!("fault injected into computer {}", state.id),
        }
        Ok(())
    }
}

impl ComputerState {
    fn now(&self) -> Timestamp {
        self.svc.clock.now()
    }

    fn audit(&self, who: &Who, action: Action, outcome: &str) -> Result<()> {
        Ok(self.svc.store.append_audit(&AuditEntry {
            at: self.now(),
            who: who.clone(),
            computer: Some(self.id.to_string()),
            action,
            outcome: outcome.to_owned(),
        })?)
    }

    /// The failures counted against each of `keys`, for the rules to check.
    fn failures(
        &self,
        keys: impl IntoIterator<Item = LimitKey>,
    ) -> Result<Vec<(LimitKey, Bucket)>> {
        keys.into_iter()
            .map(|key| {
                let bucket = self.svc.store.failures(&key.key())?;
                Ok((key, bucket))
            })
            .collect()
    }

    /// Writes what a rule decided; [`ComputerState::commit`] makes it durable.
    fn apply(&mut self, settings: &SystemSettings, effects: Vec<Effect>) -> Result<()> {
        let now = self.now();
        let store = Arc::clone(&self.svc.store);
        for effect in effects {
            match effect {
                Effect::SaveSlot(os_user) => {
                    if let Some(slot) = self.logins.slots.get(&os_user) {
                        store.put_slot(&self.id, &os_user, slot)?;
                    }
                }
                Effect::SaveRequest(request) => store.put_request(&request)?,
                Effect::QueueMail { to, kind, request } => self.queue(&to, kind, request)?,
                Effect::Audit {
                    who,
                    action,
                    outcome,
                } => self.audit(&who, action, &outcome)?,
                Effect::Count(key) => {
                    let (limit, window) = (key.limit(settings), settings.failure_window);
                    store.count_failure(&key.key(), &|bucket| bucket.fail(now, limit, window))?;
                }
            }
        }
        Ok(())
    }

    fn queue(&mut self, to: &str, kind: MailKind, request: Option<u64>) -> Result<()> {
        let now = self.now();
        let entry = OutboxEntry {
            id: self.svc.store.next_id()?,
            to: to.to_owned(),
            queued: now,
            kind,
            request,
            attempts: 0,
            next_try: now,
        };
        self.svc.store.queue_mail(&entry)?;
        self.mail_queued = true;
        Ok(())
    }

    /// Makes every change so far durable, then lets the mailer send what was queued.
    async fn commit(&mut self) -> Result<()> {
        self.svc.store.flush().await?;
        if std::mem::take(&mut self.mail_queued)
            && let Some(mailer) = &self.svc.mailer
        {
            mailer.wake();
        }
        Ok(())
    }

    /// Records that connection `conn` is alive now: in memory each time, in the
    /// store at most every [`SEEN_WRITE_EVERY`].
    fn seen(&mut self, conn: ConnectionId) -> Result<()> {
        let now = self.now();
        self.connections.insert(conn);
        self.record.connected_since.get_or_insert(now);
        self.record.last_seen = now;
        if self
            .last_saved
            .is_some_and(|saved| now < saved.after(SEEN_WRITE_EVERY))
        {
            return Ok(());
        }
        self.last_saved = Some(now);
        for session in self.sessions.values_mut() {
            session.last_activity = now;
            self.svc.store.put_session(session)?;
        }
        self.save_record()
    }

    fn save_record(&self) -> Result<()> {
        Ok(self.svc.store.put_computer(&self.id, &self.record)?)
    }

    /// Connection `conn` closed; the computer's sessions go on.
    async fn disconnect(&mut self, conn: ConnectionId) -> Result<()> {
        if self.connections.remove(&conn) && self.connections.is_empty() {
            self.record.connected_since = None;
            self.save_record()?;
        }
        self.commit().await
    }

    fn start_session(&mut self, id: u64, os_user: &str, email: &str) -> Result<()> {
        let now = self.now();
        let session = ClientSession {
            id,
            computer: self.id.clone(),
            os_user: os_user.to_owned(),
            email: email.to_owned(),
            started: now,
            last_activity: now,
            ended: None,
        };
        self.svc.store.put_session(&session)?;
        self.audit(&session.who(), Action::SessionStart, "started")?;
        self.sessions.insert(id, session);
        Ok(())
    }

    /// Ends session `id` at `at`, for `why`.
    fn end_session(&mut self, id: u64, at: Timestamp, why: SessionEnd) -> Result<()> {
        if let Some(mut session) = self.sessions.remove(&id) {
            session.ended = Some((at, why));
            self.svc.store.put_session(&session)?;
            self.audit(&session.who(), Action::SessionEnd, &why.to_string())?;
        }
        Ok(())
    }

    /// What `call` needs from the directory, as the options stand now (they
    /// are read again in the turn that answers it).
    fn lookup(&self, call: &LoginCall) -> Lookup {
        let LoginCall::Request(mode) = call else {
            return Lookup::default();
        };
        let options = self.svc.policy.snapshot().effective(&self.record);
        match mode {
            Mode::Directory => Lookup {
                requester: rules::enabled(mode, &options),
                entries: Vec::new(),
            },
            Mode::Email(_) | Mode::Emergency(_) if rules::enabled(mode, &options) => Lookup {
                requester: false,
                entries: options
                    .approvers
                    .iter()
                    .filter(|entry| is_directory_name(entry))
                    .cloned()
                    .collect(),
            },
            _ => Lookup::default(),
        }
    }

    async fn login(&mut self, os_user: &str, call: LoginCall, found: Found) -> Result<LoginAnswer> {
        let snapshot = self.svc.policy.snapshot();
        let settings = &snapshot.settings;
        if !names::is_os_account(os_user) {
            let (answer, effects) = rules::invalid_caller(&self.id, &call);
            self.apply(settings, effects)?;
            self.commit().await?;
            return Ok(answer);
        }
        let options = snapshot.effective(&self.record);
        let policy = Policy {
            settings,
            options: &options,
        };
        let (id, keys, now) = (self.id.clone(), Arc::clone(&self.svc.keys), self.now());
        let who = rules::person(os_user, &id);
        let mut effects = Vec::new();
        self.logins.expire_due(&id, os_user, now, &mut effects);
        let mut started = None;
        let answer = match call {
            LoginCall::Status => {
                LoginAnswer::Status(self.logins.prompt_state(policy, os_user, now))
            }
            LoginCall::Request(mode) => {
                let requested = self
                    .request(&snapshot, policy, os_user, mode, found, &mut effects)
                    .await?;
                effects.push(Effect::audit(
                    &who,
                    Action::Request,
                    &rules::describe(&requested),
                ));
                LoginAnswer::Requested(requested)
            }
            LoginCall::Resend => {
                let requested = self.logins.resend(&id, policy, os_user, now, &mut effects);
                effects.push(Effect::audit(
                    &who,
                    Action::Resend,
                    &rules::describe(&requested),
                ));
                LoginAnswer::Requested(requested)
            }
            LoginCall::Verify { email, code } => {
                let failures = self.failures([
                    LimitKey::Person(id.clone(), os_user.to_owned()),
                    LimitKey::Computer(id.clone()),
                    LimitKey::Email(email.clone()),
                ])?;
                let session = self.svc.store.next_id()?;
                let verdict = self.logins.verify(
                    &keys,
                    &id,
                    policy,
                    &failures,
                    session,
                    os_user,
                    &email,
                    &code,
                    now,
                    &mut effects,
                );
                if let Verdict::Allow { session } = verdict {
                    started = Some((session, email));
                }
                LoginAnswer::Verified(verdict)
            }
            LoginCall::Logout { session } => {
                let ending: Vec<u64> = self
                    .sessions
                    .iter()
                    .filter(|(id, s)| {
                        s.os_user == os_user && session.is_none_or(|want| want == **id)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ending {
                    self.end_session(*id, now, SessionEnd::Logout)?;
                }
                LoginAnswer::LoggedOut(!ending.is_empty())
            }
            LoginCall::Exempt { service } => {
                let service = if names::is_plain_text(&service, MAX_SERVICE) {
                    service
                } else {
                    "(an invalid service name)".to_owned()
                };
                effects.push(Effect::audit(
                    &who,
                    Action::Exempt,
                    &format!("logged in without an OTP (exempt group) at {service}"),
                ));
                LoginAnswer::Noted
            }
        };
        self.apply(settings, effects)?;
        if let Some((session, email)) = started {
            self.start_session(session, os_user, &email)?;
        }
        self.commit().await?;
        Ok(answer)
    }

    /// A request for an OTP: admitted by the rules, then looked up as its mode
    /// needs (directory, password), then issued or sent to the approvers.
    async fn request(
        &mut self,
        snapshot: &policy::Snapshot,
        policy: Policy<'_>,
        os_user: &str,
        mode: Mode,
        found: Found,
        effects: &mut Vec<Effect>,
    ) -> Result<Requested> {
        let (id, now) = (self.id.clone(), self.now());
        let person = LimitKey::Person(id.clone(), os_user.to_owned());
        let computer = LimitKey::Computer(id.clone());
        let failures = self.failures([
            person.clone(),
            computer.clone(),
            LimitKey::NewOnComputer(id.clone()),
        ])?;
        let enabled = rules::enabled(&mode, policy.options);
        match self
            .logins
            .admit(&id, policy, enabled, &failures, os_user, now, effects)
        {
            Admit::Answer(answer) => return Ok(answer),
            Admit::New => {}
        }
        let (email, emergency) = match mode {
            Mode::Email(email) => (email, false),
            Mode::Emergency(email) => (email, true),
            Mode::Directory => {
                let email = match found.requester {
                    Some(email) => email,
                    // The options changed since the lookup was decided.
                    None => self.svc.directory.email_of(os_user).await,
                };
                return Ok(match email {
                    Ok(Some(email)) => self.send_new(policy, os_user, &email, effects),
                    Ok(None) => {
                        effects.push(Effect::Count(person));
                        effects.push(Effect::Count(computer));
                        Requested::Refuse
                    }
                    // Not the person's failure: said, logged, audited, not
                    // counted against them.
                    Err(err) => {
                        tracing::warn!(computer = %id, error = %err, "directory lookup failed");
                        Requested::DirectoryUnavailable
                    }
                });
            }
            Mode::Internal { login, .. } if !names::is_login(&login) => {
                effects.push(Effect::Count(person));
                effects.push(Effect::Count(computer));
                return Ok(Requested::Refuse);
            }
            Mode::Internal { login, password } => {
                let account = LimitKey::Login(login.clone());
                let failures = self.failures([account.clone()])?;
                if let Some((retry_after, _)) = rules::throttled(&failures, policy.settings, now) {
                    return Ok(Requested::Throttle { retry_after });
                }
                let user = snapshot.user(&login).cloned();
                return Ok(match check_login(user, password).await {
                    PasswordCheck::ChangeDue => {
                        // Right, but a password made for them: not a guess,
                        // so not counted; it opens nothing until changed.
                        effects.push(Effect::audit(
                            &rules::person(os_user, &self.id),
                            Action::Request,
                            &format!("refused: {login} must change the password first"),
                        ));
                        Requested::Refuse
                    }
                    PasswordCheck::Right(user) => {
                        self.send_new(policy, os_user, &user.email, effects)
                    }
                    PasswordCheck::Refused => {
                        effects.push(Effect::Count(person));
                        effects.push(Effect::Count(computer));
                        effects.push(Effect::Count(account));
                        Requested::Refuse
                    }
                });
            }
        };
        let approvers = rules::approvers(snapshot.users.values(), policy.options, found.recipients);
        let request = self.svc.store.next_id()?;
        Ok(self.logins.open_request(
            &id, policy, &approvers, request, os_user, &email, emergency, now, effects,
        ))
    }

    /// A new OTP the person asked for, sent at once.
    fn send_new(
        &mut self,
        policy: Policy<'_>,
        os_user: &str,
        email: &str,
        effects: &mut Vec<Effect>,
    ) -> Requested {
        let valid_until = self.issue(policy, os_user, email, Origin::AutoSend, effects);
        // The address came from the directory or the user list, not from the
        // person: the client is shown only enough of it to recognise.
        Requested::Send {
            to: names::masked(email),
            valid_until,
        }
    }

    /// Issues a fresh OTP for `os_user` and `email` (see [`Logins::issue`]).
    fn issue(
        &mut self,
        policy: Policy<'_>,
        os_user: &str,
        email: &str,
        origin: Origin,
        effects: &mut Vec<Effect>,
    ) -> Timestamp {
        let code = Code::generate(policy.settings.otp_length);
        let now = self.now();
        self.logins.issue(
            &self.svc.keys,
            &self.id,
            policy,
            os_user,
            email,
            &code,
            origin,
            now,
            effects,
        )
    }

    async fn decide(
        &mut self,
        request: u64,
        by: &Decider,
        choice: Choice,
        comment: Option<String>,
    ) -> Result<Decided> {
        let found = match self.logins.latest.values().find(|r| r.id == request) {
            Some(found) => Some(found.clone()),
            None => self.svc.store.request(request)?,
        };
        let Some(mut found) = found.filter(|found| found.computer == self.id) else {
            return Ok(Decided::NotFound);
        };
        let snapshot = self.svc.policy.snapshot();
        let settings = &snapshot.settings;
        let options = snapshot.effective(&self.record);
        let allowed = match by {
            Decider::User(login) => rules::may_decide(snapshot.user(login), &options),
            Decider::Person(person) => rules::person_may_decide(person, &options, |entry| {
                self.svc.directory.canonical(entry)
            }),
        };
        if !allowed {
            return Ok(Decided::NotAllowed);
        }
        let policy = Policy {
            settings,
            options: &options,
        };
        let code = Code::generate(settings.otp_length);
        let mut effects = Vec::new();
        let pending = self.logins.decide(
            &self.svc.keys,
            &self.id,
            policy,
            &mut found,
            by.name(),
            choice,
            comment,
            &code,
            self.svc.clock.now(),
            &mut effects,
        );
        self.apply(settings, effects)?;
        self.commit().await?;
        Ok(if pending {
            Decided::Done(found)
        } else {
            Decided::NotPending(found)
        })
    }

    async fn generate(
        &mut self,
        os_user: &str,
        email: &str,
        comment: String,
        by: &str,
    ) -> Result<Generated> {
        let snapshot = self.svc.policy.snapshot();
        if !rules::may_generate(snapshot.user(by)) {
            return Ok(Generated::NotAllowed);
        }
        let settings = &snapshot.settings;
        let options = snapshot.effective(&self.record);
        let policy = Policy {
            settings,
            options: &options,
        };
        let mut effects = Vec::new();
        let origin = Origin::Generated {
            by: by.to_owned(),
            comment: comment.clone(),
        };
        let valid_until = self.issue(policy, os_user, email, origin, &mut effects);
        effects.push(Effect::audit(
            &Who::User {
                login: by.to_owned(),
            },
            Action::Generate,
            &format!("for {os_user} ({email}): {comment}"),
        ));
        self.apply(settings, effects)?;
        self.commit().await?;
        Ok(Generated::Send { valid_until })
    }

    async fn configure(
        &mut self,
        group: Option<Option<String>>,
        options: &OptionsPatch,
        by: &Who,
    ) -> Result<ComputerRecord> {
        if let Some(group) = group {
            self.record.group = group;
        }
        self.record.options.apply(options);
        self.save_record()?;
        self.audit(by, Action::Configure, "client changed")?;
        self.commit().await?;
        Ok(self.record.clone())
    }

    /// Expires everything that is due, then sets the timer for what is next.
    /// Flushes only when something changed (`changed` says what the caller
    /// already changed), so that spawning an idle computer costs no fsync.
    async fn sweep(&mut self, myself: &ActorRef<ComputerMsg>, changed: bool) -> Result<()> {
        let now = self.now();
        let snapshot = self.svc.policy.snapshot();
        let mut effects = Vec::new();
        let expired = self.logins.expire_all_due(&self.id, now, &mut effects);
        if expired {
            self.apply(&snapshot.settings, effects)?;
        }
        let gone: Vec<(u64, Timestamp)> = self
            .sessions
            .values()
            .map(|session| {
                (
                    session.id,
                    rules::session_ends_at(session, &snapshot.settings),
                )
            })
            .filter(|&(_, ends)| ends <= now)
            .collect();
        for &(id, at) in &gone {
            self.end_session(id, at, SessionEnd::AgentGone)?;
        }
        if changed || expired || !gone.is_empty() {
            self.commit().await?;
        }
        self.schedule(myself);
        Ok(())
    }

    /// Sets the timer for the next OTP or request that will expire, or session
    /// whose agent will have been gone too long.
    fn schedule(&mut self, myself: &ActorRef<ComputerMsg>) {
        let snapshot = self.svc.policy.snapshot();
        let sessions = self
            .sessions
            .values()
            .map(|session| rules::session_ends_at(session, &snapshot.settings));
        match self.logins.next_expiry().into_iter().chain(sessions).min() {
            Some(next) => {
                let wait = next.unix_millis().saturating_sub(self.now().unix_millis());
                let wait = Duration::from_millis(wait);
                self.timer.set(myself, wait, || ComputerMsg::Sweep);
            }
            None => self.timer.cancel(),
        }
    }
}

#[cfg(test)]
#[path = "computer_tests.rs"]
mod tests;

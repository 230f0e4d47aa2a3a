//! The actor that owns one client computer: its agent connections, OTPs, access
//! requests, client sessions, expiry timer and failure counts. Every decision
//! about one computer goes through its mailbox, so they are serialised without
//! locks; the rules themselves live in [`crate::otp`], [`crate::request`] and
//! [`crate::settings`].
//!
//! Its state is loaded from the [`Store`] in `pre_start`, so a restart by the
//! supervisor is just a respawn. A change that someone will rely on (an OTP
//! issued or used, a request decided, a mail queued) is flushed before the reply
//! leaves and before the mailer is woken.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::audit::{Action, AuditEntry};
use crate::clock::{Clock, Timestamp};
use crate::directory::{Directory, Role, UserRecord, verify_password};
use crate::id::ComputerId;
use crate::login::{LoginAnswer, LoginCall, Mode, PromptState, RequestStatus, Requested, Verdict};
use crate::mail::{MailKind, MailerMsg, OutboxEntry, is_email_address};
use crate::otp::{Check, Code, Origin, Otp, OtpKeys, OtpState, Slot};
use crate::request::{AccessRequest, Decision, Resolution};
use crate::session::{ClientSession, SessionEnd};
use crate::settings::{Effective, Options, SystemSettings};
use crate::store::{ComputerRecord, Store, StoreError};
use crate::timer::Timer;

/// The window over which failures per computer and per account are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60 * 60);

/// The shortest time between two emails of the same OTP.
pub const RESEND_GAP: Duration = Duration::from_secs(30);

/// What every computer's actor works with.
pub struct Services {
    /// Where state is kept.
    pub store: Arc<dyn Store>,
    /// Where wall-clock time comes from.
    pub clock: Arc<dyn Clock>,
    /// The keys that protect stored OTPs.
    pub keys: Arc<OtpKeys>,
    /// Where Active Directory accounts' emails come from.
    pub directory: Arc<dyn Directory>,
    /// Woken when mail is queued.
    pub mailer: Option<ActorRef<MailerMsg>>,
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
    },
    /// Connection `conn` has closed: its client sessions end.
    Disconnect {
        /// Which connection.
        conn: ConnectionId,
    },
    /// The login prompt of OS user `os_user`, through connection `conn`.
    Login {
        /// Which connection.
        conn: ConnectionId,
        /// The OS user, as the agent read it from the prompt's peer credentials.
        os_user: String,
        /// What is asked.
        call: LoginCall,
        /// The answer.
        reply: RpcReplyPort<Result<LoginAnswer, ComputerError>>,
    },
    /// Approve or deny access request `request`.
    Decide {
        /// The access request.
        request: u64,
        /// The deciding internal user's login name.
        by: String,
        /// Approve (`true`) or deny.
        approve: bool,
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
        options: Options,
        /// Who changes them, for the audit log.
        by: String,
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
}

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
    /// OTP state per OS user.
    slots: HashMap<String, Slot>,
    /// The latest access request per OS user.
    latest: HashMap<String, AccessRequest>,
    /// Open client sessions, with the connection they live on.
    sessions: HashMap<u64, (ClientSession, ConnectionId)>,
    /// The expiry timer; cancelled when the state drops with the actor.
    timer: Timer<ComputerMsg>,
    /// Whether mail was queued since the last commit.
    mail_queued: bool,
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
            },
        };
        let slots = svc.store.slots(&id)?.into_iter().collect();
        let mut latest = HashMap::new();
        for request in svc.store.requests_of(&id)? {
            latest.insert(request.os_user.clone(), request);
        }
        let mut state = ComputerState {
            id,
            svc,
            record,
            connections: HashSet::new(),
            slots,
            latest,
            sessions: HashMap::new(),
            timer: Timer::idle(),
            mail_queued: false,
        };
        // Sessions that were open when the server stopped lived on connections
        // that are gone.
        let mut ended = false;
        for mut session in state.svc.store.sessions_of(&state.id)? {
            if session.ended.is_none() {
                session.ended = Some((now, SessionEnd::ServerRestart));
                state.svc.store.put_session(&session)?;
                state.audit(&session.user_name(), Action::SessionEnd, "server restarted")?;
                ended = true;
            }
        }
        state.sweep(&myself, ended).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: ComputerMsg,
        state: &mut ComputerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ComputerMsg::Connect { conn, info, reply } => {
                state.record.host_name = info.host_name;
                state.record.agent_version = info.agent_version;
                let _ = reply.send(state.seen(conn));
            }
            ComputerMsg::Heartbeat { conn } => {
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
                conn,
                os_user,
                call,
                reply,
            } => {
                let answer = state.login(conn, &os_user, call).await;
                let _ = reply.send(answer);
                state.schedule(&myself);
            }
            ComputerMsg::Decide {
                request,
                by,
                approve,
                comment,
                reply,
            } => {
                let _ = reply.send(state.decide(request, &by, approve, comment).await);
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

    fn effective(&self) -> Result<Effective> {
        Ok(self.record.effective(self.svc.store.as_ref())?)
    }

    fn audit(&self, who: &str, action: Action, outcome: &str) -> Result<()> {
        Ok(self.svc.store.append_audit(&AuditEntry {
            at: self.now(),
            who: who.to_owned(),
            computer: Some(self.id.to_string()),
            action,
            outcome: outcome.to_owned(),
        })?)
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
            // A mailer that is gone finds the queue when it starts again.
            let _ = mailer.cast(MailerMsg::Wake);
        }
        Ok(())
    }

    /// Records that connection `conn` is alive now.
    fn seen(&mut self, conn: ConnectionId) -> Result<()> {
        let now = self.now();
        self.connections.insert(conn);
        self.record.connected_since.get_or_insert(now);
        self.record.last_seen = now;
        for (session, on) in self.sessions.values_mut() {
            if *on == conn {
                session.last_activity = now;
                self.svc.store.put_session(session)?;
            }
        }
        self.save_record()
    }

    fn save_record(&self) -> Result<()> {
        Ok(self.svc.store.put_computer(&self.id, &self.record)?)
    }

    async fn disconnect(&mut self, conn: ConnectionId) -> Result<()> {
        let ended: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, (_, on))| *on == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.end_session(id, SessionEnd::ConnectionLost)?;
        }
        if self.connections.remove(&conn) && self.connections.is_empty() {
            self.record.connected_since = None;
            self.save_record()?;
        }
        self.commit().await
    }

    fn end_session(&mut self, id: u64, why: SessionEnd) -> Result<()> {
        if let Some((mut session, _)) = self.sessions.remove(&id) {
            session.ended = Some((self.now(), why));
            self.svc.store.put_session(&session)?;
            self.audit(&session.user_name(), Action::SessionEnd, &why.to_string())?;
        }
        Ok(())
    }

    fn slot(&mut self, os_user: &str) -> &mut Slot {
        self.slots.entry(os_user.to_owned()).or_default()
    }

    fn save_slot(&self, os_user: &str) -> Result<()> {
        match self.slots.get(os_user) {
            Some(slot) => Ok(self.svc.store.put_slot(&self.id, os_user, slot)?),
            None => Ok(()),
        }
    }

    /// How long until the first of `keys` is below its failure limit again, if
    /// any of them is at it.
    fn throttled(&self, settings: &SystemSettings, keys: &[String]) -> Result<Option<Duration>> {
        let now = self.now();
        let mut wait = None;
        for key in keys {
            let window = self.svc.store.failures(key, now, FAILURE_WINDOW)?;
            if window.count >= settings.max_failures_per_hour {
                let until = window.start.after(FAILURE_WINDOW);
                let left = Duration::from_millis(until.unix_millis() - now.unix_millis());
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        Ok(wait)
    }

    fn count_failures(&self, keys: &[String]) -> Result<()> {
        let now = self.now();
        for key in keys {
            self.svc.store.count_failure(key, now, FAILURE_WINDOW)?;
        }
        Ok(())
    }

    fn computer_key(&self) -> String {
        format!("computer:{}", self.id)
    }

    async fn login(
        &mut self,
        conn: ConnectionId,
        os_user: &str,
        call: LoginCall,
    ) -> Result<LoginAnswer> {
        // Committed with the answer below.
        self.expire_user(os_user)?;
        let answer = match call {
            LoginCall::Status => LoginAnswer::Status(self.prompt_state(os_user)?),
            LoginCall::Request(mode) => LoginAnswer::Requested(self.request(os_user, mode).await?),
            LoginCall::Resend => {
                let who = person(os_user, &self.id);
                let requested = self.resend(os_user)?;
                self.audit(&who, Action::Resend, &describe(&requested))?;
                LoginAnswer::Requested(requested)
            }
            LoginCall::Verify { email, code } => {
                LoginAnswer::Verified(self.verify(conn, os_user, &email, &code)?)
            }
            LoginCall::Logout { session } => {
                let ending: Vec<u64> = self
                    .sessions
                    .iter()
                    .filter(|(id, (s, _))| {
                        s.os_user == os_user && session.is_none_or(|want| want == **id)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ending {
                    self.end_session(*id, SessionEnd::Logout)?;
                }
                LoginAnswer::LoggedOut(!ending.is_empty())
            }
        };
        self.commit().await?;
        Ok(answer)
    }

    fn prompt_state(&mut self, os_user: &str) -> Result<PromptState> {
        let effective = self.effective()?;
        let settings = self.svc.store.settings()?;
        let now = self.now();
        let slot = self.slots.get(os_user).cloned().unwrap_or_default();
        let live = slot.otp.as_ref().filter(|otp| otp.is_live(now));
        let request = self.latest.get(os_user);
        Ok(PromptState {
            allow_otp: effective.allow_otp,
            auto_directory: effective.auto_directory,
            auto_internal: effective.auto_internal,
            email: live
                .map(|otp| otp.email.clone())
                .or_else(|| request.map(|r| r.email.clone())),
            request: request.map(|r| (r.id, status_of(r))),
            otp_valid_until: live.map(|otp| otp.valid_until),
            next_new_at: slot
                .last_new
                .map(|at| at.after(settings.new_otp_interval))
                .filter(|&next| next > now),
        })
    }

    async fn request(&mut self, os_user: &str, mode: Mode) -> Result<Requested> {
        let who = person(os_user, &self.id);
        let settings = self.svc.store.settings()?;
        let effective = self.effective()?;
        let enabled = match &mode {
            Mode::Email(_) => !effective.auto_directory && !effective.auto_internal,
            Mode::Directory => effective.auto_directory,
            Mode::Internal { .. } => effective.auto_internal,
            Mode::Emergency(_) => true,
        };
        let requested = if !effective.allow_otp || !enabled {
            Requested::Disabled
        } else if let Some(retry_after) = self.throttled(&settings, &[self.computer_key()])? {
            Requested::Throttle { retry_after }
        } else if let Some(within) = self.within_interval(os_user, &settings) {
            within?
        } else {
            self.request_new(os_user, mode, &settings).await?
        };
        self.audit(&who, Action::Request, &describe(&requested))?;
        Ok(requested)
    }

    /// Inside the interval since the last new OTP: resend the live one, point at
    /// the pending request, or say when a new one may be asked for. `None` when a
    /// new one may be asked for now.
    fn within_interval(
        &mut self,
        os_user: &str,
        settings: &SystemSettings,
    ) -> Option<Result<Requested>> {
        let now = self.now();
        let next_at = self
            .slots
            .get(os_user)?
            .last_new?
            .after(settings.new_otp_interval);
        if now >= next_at {
            return None;
        }
        if let Some(request) = self.latest.get(os_user)
            && request.decision == Decision::Pending
        {
            return Some(Ok(Requested::AwaitApproval {
                request: request.id,
                expires: request.expires,
            }));
        }
        Some(match self.resend(os_user) {
            Ok(Requested::NoLiveOtp) => Ok(Requested::TooSoon { next_at }),
            other => other,
        })
    }

    /// Emails the live OTP again, if there is one and the last email is not too recent.
    fn resend(&mut self, os_user: &str) -> Result<Requested> {
        let now = self.now();
        let Some(slot) = self.slots.get_mut(os_user) else {
            return Ok(Requested::NoLiveOtp);
        };
        let Some(otp) = slot.otp.as_ref().filter(|otp| otp.is_live(now)) else {
            return Ok(Requested::NoLiveOtp);
        };
        let (to, valid_until) = (otp.email.clone(), otp.valid_until);
        let request = otp.origin.request();
        let sealed = otp.sealed().map(<[u8]>::to_vec);
        let recently = slot
            .last_sent
            .is_some_and(|sent| now < sent.after(RESEND_GAP));
        if !recently && let Some(sealed) = sealed {
            slot.last_sent = Some(now);
            self.save_slot(os_user)?;
            self.queue(&to, self.otp_mail(os_user, sealed, valid_until), request)?;
        }
        Ok(Requested::Resend { to, valid_until })
    }

    fn otp_mail(&self, os_user: &str, sealed: Vec<u8>, valid_until: Timestamp) -> MailKind {
        MailKind::Otp {
            computer: self.id.clone(),
            os_user: os_user.to_owned(),
            sealed,
            valid_until,
        }
    }

    async fn request_new(
        &mut self,
        os_user: &str,
        mode: Mode,
        settings: &SystemSettings,
    ) -> Result<Requested> {
        let (email, emergency) = match mode {
            Mode::Email(email) => (email, false),
            Mode::Emergency(email) => (email, true),
            Mode::Directory => match self.svc.directory.email_of(os_user).await? {
                Some(email) => return self.issue_for_request(os_user, &email, settings),
                None => {
                    self.count_failures(&[self.computer_key()])?;
                    return Ok(Requested::Refuse);
                }
            },
            Mode::Internal { login, password } => {
                let account = format!("login:{}", login.to_lowercase());
                if let Some(retry_after) =
                    self.throttled(settings, std::slice::from_ref(&account))?
                {
                    return Ok(Requested::Throttle { retry_after });
                }
                let user = self.svc.store.user(&login)?;
                let checked = user.clone();
                let right = tokio::task::spawn_blocking(move || {
                    verify_password(checked.as_ref(), &password)
                })
                .await
                .unwrap_or(false);
                return match user {
                    Some(user) if right => self.issue_for_request(os_user, &user.email, settings),
                    _ => {
                        self.count_failures(&[self.computer_key(), account])?;
                        Ok(Requested::Refuse)
                    }
                };
            }
        };
        if !is_email_address(&email) {
            return Ok(Requested::Refuse);
        }
        let now = self.now();
        let request = AccessRequest {
            id: self.svc.store.next_id()?,
            computer: self.id.clone(),
            os_user: os_user.to_owned(),
            email: email.clone(),
            emergency,
            created: now,
            expires: now.after(settings.expiration),
            decision: Decision::Pending,
        };
        self.svc.store.put_request(&request)?;
        self.slot(os_user).last_new = Some(now);
        self.save_slot(os_user)?;
        for approver in self.approvers()? {
            self.queue(
                &approver.email,
                MailKind::Approval {
                    approver: approver.login,
                    request: request.id,
                    computer: self.id.clone(),
                    os_user: os_user.to_owned(),
                    requester: email.clone(),
                    emergency,
                    expires: request.expires,
                },
                Some(request.id),
            )?;
        }
        let requested = Requested::AwaitApproval {
            request: request.id,
            expires: request.expires,
        };
        self.latest.insert(os_user.to_owned(), request);
        Ok(requested)
    }

    /// The users who are told of this computer's requests: its approvers, or the
    /// administrators when it names none.
    fn approvers(&self) -> Result<Vec<UserRecord>> {
        let approvers = self.effective()?.approvers;
        Ok(self
            .svc
            .store
            .users()?
            .into_iter()
            .filter(|user| {
                approvers.contains(&user.login)
                    || (approvers.is_empty() && user.role == Role::Administrator)
            })
            .collect())
    }

    /// A new OTP asked for by the person: it starts the interval.
    fn issue_for_request(
        &mut self,
        os_user: &str,
        email: &str,
        settings: &SystemSettings,
    ) -> Result<Requested> {
        let valid_until = self.issue(os_user, email, settings, Origin::AutoSend)?;
        self.slot(os_user).last_new = Some(self.now());
        self.save_slot(os_user)?;
        Ok(Requested::Send {
            to: email.to_owned(),
            valid_until,
        })
    }

    /// Generates an OTP for `os_user` and `email`, replacing any other, and queues
    /// its email.
    fn issue(
        &mut self,
        os_user: &str,
        email: &str,
        settings: &SystemSettings,
        origin: Origin,
    ) -> Result<Timestamp> {
        let now = self.now();
        let valid_until = now.after(settings.expiration);
        let code = Code::generate(settings.otp_length);
        let otp = Otp::new(
            &self.svc.keys,
            &self.id,
            os_user,
            email,
            &code,
            now,
            valid_until,
            origin,
        );
        let sealed = otp.sealed().map(<[u8]>::to_vec).unwrap_or_default();
        let request = otp.origin.request();
        let slot = self.slot(os_user);
        slot.otp = Some(otp);
        slot.last_sent = Some(now);
        self.save_slot(os_user)?;
        self.queue(email, self.otp_mail(os_user, sealed, valid_until), request)?;
        Ok(valid_until)
    }

    fn verify(
        &mut self,
        conn: ConnectionId,
        os_user: &str,
        email: &str,
        code: &Code,
    ) -> Result<Verdict> {
        let who = person(os_user, &self.id);
        let settings = self.svc.store.settings()?;
        let keys = [
            self.computer_key(),
            format!("email:{}", email.to_lowercase()),
        ];
        if let Some(retry_after) = self.throttled(&settings, &keys)? {
            self.audit(&who, Action::Verify, "throttled")?;
            return Ok(Verdict::Throttle { retry_after });
        }
        let now = self.now();
        let (svc, id) = (self.svc.clone(), self.id.clone());
        // A user with no OTP gets no slot: names the agent sends cost no storage.
        let check = match self
            .slots
            .get_mut(os_user)
            .and_then(|slot| slot.otp.as_mut())
        {
            Some(otp) => otp.check(
                &svc.keys,
                &id,
                os_user,
                email,
                code,
                now,
                settings.max_attempts,
            ),
            None => Check::NotLive,
        };
        self.save_slot(os_user)?;
        match check {
            Check::Allow => {
                let session = ClientSession {
                    id: self.svc.store.next_id()?,
                    computer: self.id.clone(),
                    os_user: os_user.to_owned(),
                    email: email.to_owned(),
                    started: now,
                    last_activity: now,
                    ended: None,
                };
                self.svc.store.put_session(&session)?;
                self.audit(&who, Action::Verify, &format!("allowed ({email})"))?;
                self.audit(&session.user_name(), Action::SessionStart, "started")?;
                let id = session.id;
                self.sessions.insert(id, (session, conn));
                Ok(Verdict::Allow { session: id })
            }
            Check::Wrong { locked } => {
                self.count_failures(&keys)?;
                self.audit(&who, Action::Verify, &format!("denied ({email})"))?;
                if locked {
                    self.audit(&who, Action::Lock, "locked after too many wrong attempts")?;
                }
                Ok(Verdict::Deny)
            }
            Check::NotLive => {
                self.count_failures(&keys)?;
                self.audit(&who, Action::Verify, &format!("denied ({email})"))?;
                Ok(Verdict::Deny)
            }
        }
    }

    async fn decide(
        &mut self,
        request: u64,
        by: &str,
        approve: bool,
        comment: Option<String>,
    ) -> Result<Decided> {
        let found = match self.latest.values().find(|r| r.id == request) {
            Some(found) => Some(found.clone()),
            None => self
                .svc
                .store
                .requests_of(&self.id)?
                .into_iter()
                .find(|r| r.id == request),
        };
        let Some(mut found) = found else {
            return Ok(Decided::NotFound);
        };
        let allowed = match self.svc.store.user(by)? {
            Some(user) => {
                user.role == Role::Administrator
                    || self.effective()?.approvers.contains(&user.login)
            }
            None => false,
        };
        if !allowed {
            return Ok(Decided::NotAllowed);
        }
        let now = self.now();
        if found.expire_if_due(now) {
            self.expired_request(&found)?;
        }
        if found.decision != Decision::Pending {
            self.commit().await?;
            return Ok(Decided::NotPending(found));
        }
        let resolution = Resolution {
            by: by.to_owned(),
            at: now,
            comment: comment.clone(),
        };
        let who = format!("user:{by}");
        if approve {
            let settings = self.svc.store.settings()?;
            self.issue(
                &found.os_user,
                &found.email,
                &settings,
                Origin::Approval { request },
            )?;
            found.decision = Decision::Approve(resolution);
            self.audit(
                &who,
                Action::Approve,
                &format!("request {request} approved"),
            )?;
        } else {
            found.decision = Decision::Deny(resolution);
            self.queue(
                &found.email,
                MailKind::Outcome {
                    computer: self.id.clone(),
                    denied: true,
                    comment,
                },
                Some(request),
            )?;
            self.audit(&who, Action::Deny, &format!("request {request} denied"))?;
        }
        self.svc.store.put_request(&found)?;
        if self
            .latest
            .get(&found.os_user)
            .is_some_and(|r| r.id == found.id)
        {
            self.latest.insert(found.os_user.clone(), found.clone());
        }
        self.commit().await?;
        Ok(Decided::Done(found))
    }

    async fn generate(
        &mut self,
        os_user: &str,
        email: &str,
        comment: String,
        by: &str,
    ) -> Result<Generated> {
        let admin = self
            .svc
            .store
            .user(by)?
            .is_some_and(|user| user.role == Role::Administrator);
        if !admin {
            return Ok(Generated::NotAllowed);
        }
        let settings = self.svc.store.settings()?;
        let origin = Origin::Generated {
            by: by.to_owned(),
            comment: comment.clone(),
        };
        let valid_until = self.issue(os_user, email, &settings, origin)?;
        self.audit(
            &format!("user:{by}"),
            Action::Generate,
            &format!("for {os_user} ({email}): {comment}"),
        )?;
        self.commit().await?;
        Ok(Generated::Send { valid_until })
    }

    async fn configure(
        &mut self,
        group: Option<Option<String>>,
        options: &Options,
        by: &str,
    ) -> Result<ComputerRecord> {
        if let Some(group) = group {
            self.record.group = group;
        }
        self.record.options.apply(options);
        self.save_record()?;
        self.audit(&format!("user:{by}"), Action::Configure, "client changed")?;
        self.commit().await?;
        Ok(self.record.clone())
    }

    /// Expires what is due for `os_user`.
    /// Says whether anything expired.
    fn expire_user(&mut self, os_user: &str) -> Result<bool> {
        let now = self.now();
        let expired_otp = self
            .slots
            .get_mut(os_user)
            .and_then(|slot| slot.otp.as_mut())
            .is_some_and(|otp| otp.expire_if_due(now));
        if expired_otp {
            self.save_slot(os_user)?;
            self.audit(&person(os_user, &self.id), Action::Expire, "OTP expired")?;
        }
        let mut expired_request = None;
        if let Some(request) = self.latest.get_mut(os_user)
            && request.expire_if_due(now)
        {
            expired_request = Some(request.clone());
        }
        let expired = expired_otp || expired_request.is_some();
        if let Some(request) = expired_request {
            self.expired_request(&request)?;
        }
        Ok(expired)
    }

    fn expired_request(&mut self, request: &AccessRequest) -> Result<()> {
        self.svc.store.put_request(request)?;
        if self
            .latest
            .get(&request.os_user)
            .is_some_and(|r| r.id == request.id)
        {
            self.latest.insert(request.os_user.clone(), request.clone());
        }
        self.queue(
            &request.email,
            MailKind::Outcome {
                computer: self.id.clone(),
                denied: false,
                comment: None,
            },
            Some(request.id),
        )?;
        self.audit(
            &person(&request.os_user, &self.id),
            Action::Expire,
            &format!("request {} expired", request.id),
        )
    }

    /// Expires everything that is due, then sets the timer for what is next.
    /// Flushes only when something changed (`changed` says what the caller
    /// already changed), so that spawning an idle computer costs no fsync.
    async fn sweep(&mut self, myself: &ActorRef<ComputerMsg>, mut changed: bool) -> Result<()> {
        let users: HashSet<String> = self
            .slots
            .keys()
            .chain(self.latest.keys())
            .cloned()
            .collect();
        for os_user in users {
            changed |= self.expire_user(&os_user)?;
        }
        if changed {
            self.commit().await?;
        }
        self.schedule(myself);
        Ok(())
    }

    /// Sets the timer for the next OTP or request that will expire.
    fn schedule(&mut self, myself: &ActorRef<ComputerMsg>) {
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
        match otps.chain(requests).min() {
            Some(next) => {
                let wait = next.unix_millis().saturating_sub(self.now().unix_millis());
                let wait = Duration::from_millis(wait);
                self.timer.set(myself, wait, || ComputerMsg::Sweep);
            }
            None => self.timer.cancel(),
        }
    }
}

fn status_of(request: &AccessRequest) -> RequestStatus {
    match &request.decision {
        Decision::Pending => RequestStatus::Pending {
            expires: request.expires,
        },
        Decision::Approve(_) => RequestStatus::Approve,
        Decision::Deny(resolution) => RequestStatus::Deny {
            comment: resolution.comment.clone(),
        },
        Decision::Expire => RequestStatus::Expire,
    }
}

/// How a person appears in the audit log.
fn person(os_user: &str, computer: &ComputerId) -> String {
    format!("{os_user}@{computer}")
}

/// The outcome of a request, for the audit log; never the OTP.
fn describe(requested: &Requested) -> String {
    match requested {
        Requested::Send { to, .. } => format!("OTP sent to {to}"),
        Requested::Resend { to, .. } => format!("OTP resent to {to}"),
        Requested::AwaitApproval { request, .. } => format!("request {request} to approvers"),
        Requested::TooSoon { .. } => "too soon for a new OTP".into(),
        Requested::NoLiveOtp => "no live OTP".into(),
        Requested::Disabled => "not enabled".into(),
        Requested::Refuse => "refused".into(),
        Requested::Throttle { .. } => "throttled".into(),
    }
}

#[cfg(test)]
#[path = "computer_tests.rs"]
mod tests;

//! The actor that owns one client computer: its agent connections, OTPs, access
//! requests, client sessions, expiry timer and failure counts. Every decision
//! about one computer goes through its mailbox, so they are serialised without
//! locks. The actor is I/O only: it loads state, looks up what a rule needs
//! ([`lookups`]), calls the rule in [`crate::rules`], applies the effects the
//! rule returns ([`effects`]) and replies. Its use cases are split by whom
//! they serve: the login prompt ([`logins`]), approvers and administrators
//! ([`management`]), and connections, sessions and timers ([`sessions`]).
//!
//! Its state is loaded from the [`Store`] in `pre_start`, so a restart by the
//! supervisor is just a respawn. A change that someone will rely on (an OTP
//! issued or used, a request decided, a mail queued) is flushed before the reply
//! leaves and before the mailer is woken.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::audit::Who;
use crate::clock::{Clock, Timestamp};
use crate::directory::Directory;
use crate::id::ComputerId;
use crate::login::{LoginRequest, LoginResponse};
use crate::mail::MailerHandle;
use crate::mailbox::Waiting;
use crate::metrics::Tally;
use crate::offline::OfflineSet;
use crate::otp::OtpKeys;
use crate::policy;
use crate::request::{AccessRequest, Choice};
use crate::rules::{Decider, Logins};
use crate::session::ClientSession;
use crate::settings::{Options, OptionsPatch};
use crate::store::{self, ComputerRecord, Owner, Store, StoreError};
use crate::timer::Timer;

mod effects;
mod logins;
mod lookups;
mod management;
mod offline;
mod sessions;

use lookups::Found;
pub use offline::OfflineLogin;

/// The longest PAM service name an exempt or offline login's record keeps.
const MAX_SERVICE: usize = 64;

/// A PAM service's name as the agent said it, fit for the audit log.
fn service_name(service: String) -> String {
    if crate::names::is_plain_text(&service, MAX_SERVICE) {
        service
    } else {
        "(an invalid service name)".to_owned()
    }
}

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
        call: LoginRequest,
        /// The answer.
        reply: RpcReplyPort<Result<LoginResponse, ComputerError>>,
    },
    /// A [`ComputerMsg::Login`] again, with what the directory said for it
    /// (looked up outside the actor's turn, so a slow directory holds up only
    /// this call).
    Looked {
        /// As in [`ComputerMsg::Login`].
        os_user: String,
        /// As in [`ComputerMsg::Login`].
        call: LoginRequest,
        /// What the directory said.
        found: Found,
        /// As in [`ComputerMsg::Login`].
        reply: RpcReplyPort<Result<LoginResponse, ComputerError>>,
    },
    /// Approve or deny access request `request`.
    Decide {
        /// The access request.
        request: u64,
        /// Who decides.
        by: Decider,
        /// Who the audit log says decided.
        seen_as: Who,
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
    /// Keep a set of offline codes (made outside the actor: that is slow),
    /// replacing its OS user's.
    OfflineIssue {
        /// The set.
        set: OfflineSet,
        /// Who issued it.
        by: Who,
        /// Answered once it is durable.
        reply: RpcReplyPort<Result<(), ComputerError>>,
    },
    /// Void the offline codes of an OS user, or of every one.
    OfflineVoid {
        /// The OS user; `None`: every one.
        os_user: Option<String>,
        /// Who voids them.
        by: Who,
        /// How many sets went.
        reply: RpcReplyPort<Result<usize, ComputerError>>,
    },
    /// The agent's offline logins, answered with the sets it is to keep.
    OfflineSync {
        /// What the agent reports.
        logins: Vec<OfflineLogin>,
        /// The sets with codes left.
        reply: RpcReplyPort<Result<Vec<OfflineSet>, ComputerError>>,
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
            Self::OfflineIssue { reply, .. } => reply.is_closed(),
            Self::OfflineVoid { reply, .. } => reply.is_closed(),
            Self::OfflineSync { reply, .. } => reply.is_closed(),
            _ => false,
        }
    }
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
    /// Offline codes, per OS user.
    offline: HashMap<String, OfflineSet>,
    /// The expiry timer; cancelled when the state drops with the actor.
    timer: Timer<ComputerMsg>,
    /// Whether mail was queued since the last commit.
    mail_queued: bool,
    /// What this turn's rules tallied, counted once it is durable.
    tallies: Vec<Tally>,
    /// When a heartbeat last wrote `last_seen`.
    last_saved: Option<Timestamp>,
    /// This node's hold on the computer, which every turn's writes carry.
    owner: Owner,
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
        Ok(ComputerState::load(args.id, args.services, &myself).await?)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: ComputerMsg,
        state: &mut ComputerState,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed: ractor keeps room for this future in every actor, idle or
        // not, and a turn's is kilobytes; a turn allocates it instead.
        Box::pin(Self::handle_message(myself, message, state)).await
    }
}

impl ComputerState {
    /// Takes computer `id` for this node and loads what is kept of it: its
    /// record, OTP slots, latest requests and open sessions; then expires
    /// what is due, as a turn of its own.
    async fn load(
        id: ComputerId,
        svc: Arc<Services>,
        myself: &ActorRef<ComputerMsg>,
    ) -> Result<Self> {
        // Taken before anything is read: what a node that held it before
        // committed is read, and what it commits from now on is left out.
        let owner = svc.store.own(&id).await?;
        let now = svc.clock.now();
        let record = match svc.store.computer(&id).await? {
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
            slots: svc.store.slots(&id).await?.into_iter().collect(),
            latest: HashMap::new(),
        };
        for request in svc.store.requests_of(&id).await? {
            logins.latest.insert(request.os_user.clone(), request);
        }
        let offline = svc
            .store
            .offline_sets(&id)
            .await?
            .into_iter()
            .map(|set| (set.os_user.clone(), set))
            .collect();
        let mut state = ComputerState {
            id,
            svc,
            record,
            connections: HashSet::new(),
            logins,
            sessions: HashMap::new(),
            offline,
            timer: Timer::idle(),
            mail_queued: false,
            tallies: Vec::new(),
            last_saved: None,
            owner,
        };
        // Sessions open when the server stopped are still open: the people are
        // still logged in. Those whose agent was gone too long end in the sweep.
        for session in state.svc.store.sessions_of(&state.id).await? {
            if session.ended.is_none() {
                state.sessions.insert(session.id, session);
            }
        }
        store::turn(state.owner.clone(), state.sweep(myself, false)).await?;
        Ok(state)
    }

    /// Takes the computer back from the node that took it, and loads it
    /// again; its connections here stay, and are recorded with their next
    /// heartbeat.
    async fn reload(&mut self, myself: &ActorRef<ComputerMsg>) -> Result<()> {
        let mut loaded = Self::load(self.id.clone(), Arc::clone(&self.svc), myself).await?;
        loaded.connections = std::mem::take(&mut self.connections);
        if !loaded.connections.is_empty() {
            loaded.record.connected_since = self.record.connected_since;
        }
        *self = loaded;
        Ok(())
    }
}

impl ComputerActor {
    /// What [`Actor::handle`] does.
    async fn handle_message(
        myself: ActorRef<ComputerMsg>,
        message: ComputerMsg,
        state: &mut ComputerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.svc.store.fenced_out(&state.owner) {
            match &message {
                // A connection here went, most likely as its agent moved to
                // the node that took the computer: that one knows it is
                // connected; nothing is taken back or written for this.
                ComputerMsg::Disconnect { conn } => {
                    state.connections.remove(conn);
                    return Ok(());
                }
                // Expiring is the holder's to do.
                ComputerMsg::Sweep => return Ok(()),
                // Nobody waits for what it would do.
                _ if message.caller_gone() => return Ok(()),
                _ => {}
            }
            // Another node took the computer since (an approver there
            // decided, its agent went there): what this holds may be behind
            // what that one wrote. Taken back and loaded again, as a
            // respawned actor would, before anything is answered.
            tracing::info!(computer = %state.id, "another server took this computer; loading it again");
            if let Err(err) = state.reload(&myself).await {
                // The caller hears "unavailable"; the next message tries again.
                tracing::error!(computer = %state.id, error = %err, "cannot load this computer again");
                if let ComputerMsg::Heartbeat { pending, .. } = message {
                    pending.handled();
                }
                return Ok(());
            }
        }
        let owner = state.owner.clone();
        store::turn(owner, Self::handle_turn(myself, message, state)).await
    }

    /// Handles `message`, as one turn (see [`store::turn`]).
    async fn handle_turn(
        myself: ActorRef<ComputerMsg>,
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
        // A turn that failed before its commit counted nothing.
        state.tallies.clear();
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
                let os_user = state.person(os_user);
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
                seen_as,
                choice,
                comment,
                reply,
            } => {
                let decided = state.decide(request, (&by, &seen_as), choice, comment);
                let _ = reply.send(decided.await);
                state.schedule(&myself);
            }
            ComputerMsg::Generate {
                os_user,
                email,
                comment,
                by,
                reply,
            } => {
                let os_user = state.person(os_user);
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
            ComputerMsg::OfflineIssue { mut set, by, reply } => {
                set.os_user = state.person(set.os_user);
                let _ = reply.send(state.offline_issue(set, &by).await);
            }
            ComputerMsg::OfflineVoid { os_user, by, reply } => {
                let os_user = os_user.map(|os_user| state.person(os_user));
                let _ = reply.send(state.offline_void(os_user.as_deref(), &by).await);
            }
            ComputerMsg::OfflineSync { logins, reply } => {
                let _ = reply.send(state.offline_sync(logins).await);
                state.schedule(&myself);
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

#[cfg(test)]
mod tests;

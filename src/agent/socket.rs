//! The agent's prompt socket, where the login prompt (`otpgate login`) asks for
//! things on behalf of the OS user who runs it, the PAM gate ties sessions, and
//! the recorder (`otpgate record`) hands over its chunks.
//!
//! Any local user may connect (the socket is mode 0666). The agent knows each
//! caller by the socket's peer credentials, which the kernel fills in; nothing the
//! caller says about itself is believed.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};

use nix::unistd::{Uid, User};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use otpgate_protocol::local::{AgentStatus, LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, LoginResponse, Verdict};
use otpgate_protocol::offline::OfflineVerdict;
use otpgate_protocol::{ErrorCode, Request, Response};
use zeroize::Zeroizing;

use crate::agent::link::{Link, LinkError};
use crate::agent::offline::{self, Offline};
use crate::agent::sessions::Sessions;
use crate::agent::spool::{Spool, SpoolError};
use crate::flood::twice_in_bursts;
use crate::places::{Place, Places};
use crate::unix;

/// Where the agent serves the login prompt by default.
pub const DEFAULT_SOCKET: &str = "/run/otpgate/agent.sock";

/// What each local OS user may take of the agent: a user who floods the socket
/// waits, or loses their own connections, and leaves the rest to everyone
/// else (root's, the PAM gate's for everyone who logs in, first of all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Login requests per second (bursts of twice that), by the OS user acted
    /// for; the rest are answered with the time to wait.
    pub logins_per_second: NonZeroU32,
    /// Recording chunks per second (bursts of twice that), by uid; the rest
    /// are refused for now, and the recorder keeps them and tries again.
    pub chunks_per_second: NonZeroU32,
    /// Connections open at once, by uid; one past it is closed at once.
    /// Root's are not capped: root is the PAM gate of every login.
    pub connections: NonZeroUsize,
    /// How long a connection may wait for its next request before it is
    /// closed. Root's are not closed: the PAM module of the release before
    /// does not connect again, and a person may sit at its prompt (su, a
    /// display manager) for as long as they like.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            logins_per_second: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            // A chunk is at most 48 KiB, and a recorder sends one every half
            // second unless output fills one first: up to 96 MiB/s of
            // output, more than a busy terminal makes (a lower pace makes a
            // fast command's recording lose output).
            chunks_per_second: NonZeroU32::new(2048).unwrap_or(NonZeroU32::MIN),
            connections: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            idle: unix::IDLE,
        }
    }
}

/// Serves login prompts, the PAM gate and recorders on `listener` until
/// `cancel` fires.
pub async fn serve(listener: UnixListener, agent: Agent, cancel: CancellationToken) {
    unix::accept("agent", listener, cancel.clone(), |stream| {
        let agent = agent.clone();
        let cancel = cancel.clone();
        async move {
            let Some((caller, _place)) = caller(&stream, &agent.open).await else {
                return;
            };
            let name = caller.as_ref().map_or("?", |c| c.name.as_str()).to_owned();
            let span = info_span!("local", os_user = name);
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve_caller(stream, caller, &agent).instrument(span) => {}
            }
        }
    })
    .await;
}

/// What serves the local connections.
#[derive(Clone)]
pub struct Agent {
    link: Link,
    sessions: Arc<Sessions>,
    spool: Arc<Spool>,
    offline: Arc<Offline>,
    idle: Duration,
    /// Login requests, by the name of the OS user acted for.
    logins: Arc<DefaultKeyedRateLimiter<String>>,
    /// Recording chunks, by uid.
    chunks: Arc<DefaultKeyedRateLimiter<u32>>,
    /// New recordings (their first chunks), by uid.
    recordings: Arc<DefaultKeyedRateLimiter<u32>>,
    open: Arc<Open>,
}

/// How many recordings one uid may start a second (bursts of twice that):
/// each is a recording the server keeps, so it is held to a person's pace of
/// opening terminals, not to the pace of a terminal's output.
const NEW_RECORDINGS_PER_SECOND: NonZeroU32 = NonZeroU32::new(5).expect("not 0");

impl Agent {
    /// Serves through `link`, ties sessions in `sessions`, spools recordings
    /// in `spool`, checks offline codes in `offline`, and gives each local
    /// OS user `limits`.
    pub fn new(
        link: Link,
        sessions: Arc<Sessions>,
        spool: Arc<Spool>,
        offline: Arc<Offline>,
        limits: Limits,
    ) -> Self {
        Self {
            link,
            sessions,
            spool,
            offline,
            idle: limits.idle,
            logins: Arc::new(RateLimiter::keyed(twice_in_bursts(
                limits.logins_per_second,
            ))),
            chunks: Arc::new(RateLimiter::keyed(twice_in_bursts(
                limits.chunks_per_second,
            ))),
            recordings: Arc::new(RateLimiter::keyed(twice_in_bursts(
                NEW_RECORDINGS_PER_SECOND,
            ))),
            open: Arc::new(Open::new(limits.connections)),
        }
    }
}

/// The connections each uid has open, against the cap.
struct Open {
    cap: usize,
    places: Arc<Places<u32>>,
    /// When turning a user's connections away was last logged, per uid (once
    /// a minute at most, however the user cycles connections).
    warned: Mutex<HashMap<u32, Instant>>,
}

/// How often turning a user's connections away is logged, at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl Open {
    fn new(cap: NonZeroUsize) -> Self {
        Self {
            cap: cap.get(),
            places: Places::new(),
            warned: Mutex::default(),
        }
    }

    /// A place for one more connection of `uid`, or `None` when it has `cap`
    /// open already (root never does).
    fn take(&self, uid: u32) -> Option<Place<u32>> {
        let place = self
            .places
            .take(uid, |_, of_uid| uid == 0 || of_uid < self.cap);
        if place.is_none() {
            let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
            if warned.get(&uid).is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                warned.insert(uid, Instant::now());
                warn!(
                    uid,
                    cap = self.cap,
                    "a local user has as many connections open as allowed; \
                     closing the ones past it"
                );
            }
        }
        place
    }
}

/// The OS account and process on the other end of a local connection.
struct Caller {
    uid: u32,
    name: String,
    pid: Option<i32>,
}

/// The OS account on the other end of `stream`, from the kernel's peer
/// credentials, with the place its connection takes in `open`; `None` when it
/// has no place left (the connection is then closed), an inner `None` when it
/// is not known (answered as such).
async fn caller(stream: &UnixStream, open: &Open) -> Option<(Option<Caller>, Option<Place<u32>>)> {
    let Ok(credentials) = stream.peer_cred() else {
        return Some((None, None));
    };
    let (uid, pid) = (credentials.uid(), credentials.pid());
    let place = open.take(uid)?;
    // Name lookups may go to the network (NSS), so keep them off the runtime.
    let user = tokio::task::spawn_blocking(move || User::from_uid(Uid::from_raw(uid)))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let caller = user.map(|user| Caller {
        uid,
        name: user.name,
        pid,
    });
    Some((caller, Some(place)))
}

async fn serve_caller(stream: UnixStream, caller: Option<Caller>, agent: &Agent) {
    let refuse = |_| LocalResponse::Fail(LocalError::Unsupported);
    let idle = match &caller {
        Some(caller) if caller.uid == 0 => None,
        _ => Some(agent.idle),
    };
    unix::serve_requests(stream, idle, refuse, |request| async {
        match &caller {
            None => LocalResponse::Fail(LocalError::UnknownCaller),
            Some(caller) => answer(request, caller, agent).await,
        }
    })
    .await;
}

/// The answer to a request not sent on: try again after `wait` (whole seconds,
/// at least one).
fn throttled(wait: Duration) -> LocalResponse {
    let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    LocalResponse::Login(LoginResponse::Throttled {
        retry_after: retry_after.max(1),
    })
}

/// Serves one request of `caller`, the OS account on the socket's other end.
async fn answer(request: LocalRequest, caller: &Caller, agent: &Agent) -> LocalResponse {
    let root = caller.uid == 0;
    match request {
        LocalRequest::Login { os_user, request } => {
            let os_user = match os_user {
                Some(other) if other != caller.name && !root => {
                    return LocalResponse::Fail(LocalError::Forbidden);
                }
                Some(other) => other,
                None => caller.name.clone(),
            };
            if let Err(not_until) = agent.logins.check_key(&os_user) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return throttled(wait);
            }
            let answer = agent
                .link
                .call(Request::Login {
                    os_user: os_user.clone(),
                    request,
                })
                .await;
            match answer {
                Ok(Response::Login(response)) => {
                    if let (LoginResponse::Verified(Verdict::Allow { session }), Some(pid)) =
                        (&response, caller.pid)
                    {
                        agent.sessions.allowed(&os_user, *session, pid);
                    }
                    LocalResponse::Login(response)
                }
                // The connection's share is spent for now: a wait, not a failure.
                Ok(Response::Fail(ErrorCode::TooManyRequests)) => throttled(Duration::from_secs(1)),
                Ok(_) => LocalResponse::Fail(LocalError::Unavailable),
                Err(LinkError::NotConnected | LinkError::Stopped) => {
                    LocalResponse::Fail(LocalError::NotConnected)
                }
                Err(LinkError::Lost) => LocalResponse::Fail(LocalError::Unavailable),
            }
        }
        LocalRequest::SessionOpen { .. }
        | LocalRequest::SessionClose { .. }
        | LocalRequest::Exempt { .. }
        | LocalRequest::Offline { .. }
            if !root =>
        {
            LocalResponse::Fail(LocalError::Forbidden)
        }
        LocalRequest::SessionOpen { os_user } => LocalResponse::SessionOpened {
            session: caller
                .pid
                .and_then(|pid| agent.sessions.open(&os_user, pid)),
        },
        LocalRequest::SessionClose { os_user } => {
            if let Some(pid) = caller.pid {
                agent.sessions.close(&os_user, pid);
            }
            LocalResponse::Done
        }
        LocalRequest::Exempt { os_user, service } => {
            agent
                .sessions
                .notify(&os_user, LoginRequest::Exempt { service });
            LocalResponse::Done
        }
        LocalRequest::Offline {
            os_user,
            service,
            code,
        } => {
            // Only while the server cannot be reached.
            if agent.link.status().connected {
                return LocalResponse::Offline(OfflineVerdict::Online);
            }
            if let Err(not_until) = agent.logins.check_key(&os_user) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return throttled(wait);
            }
            let offline = Arc::clone(&agent.offline);
            let code = Zeroizing::new(code.0);
            let user = os_user.clone();
            let checked = tokio::task::spawn_blocking(move || {
                offline.check(&user, &service, &code, offline::now_ms())
            })
            .await;
            let Ok(verdict) = checked else {
                return LocalResponse::Fail(LocalError::Internal);
            };
            if let (OfflineVerdict::Allow { session }, Some(pid)) = (verdict, caller.pid) {
                agent.sessions.allowed(&os_user, session, pid);
            }
            LocalResponse::Offline(verdict)
        }
        LocalRequest::Record(chunk) => {
            if !chunk.is_well_formed() {
                return LocalResponse::Fail(LocalError::Malformed);
            }
            let starts = chunk.seq == 0;
            if agent.chunks.check_key(&caller.uid).is_err()
                || (starts && agent.recordings.check_key(&caller.uid).is_err())
            {
                return LocalResponse::Fail(LocalError::Unavailable);
            }
            // The recording is the caller's own terminal: it runs under the
            // OS session its OTP login opened.
            let session = caller
                .pid
                .filter(|_| starts)
                .and_then(|pid| agent.sessions.session_of(&caller.name, pid));
            let spool = Arc::clone(&agent.spool);
            let os_user = caller.name.clone();
            let spooled =
                tokio::task::spawn_blocking(move || spool.put(&os_user, session, chunk)).await;
            match spooled {
                Ok(Ok(())) => LocalResponse::Done,
                Ok(Err(SpoolError::Full)) => LocalResponse::Fail(LocalError::Unavailable),
                Ok(Err(SpoolError::Io(err))) => {
                    warn!(error = %err, "cannot spool a recording");
                    LocalResponse::Fail(LocalError::Internal)
                }
                Err(_) => LocalResponse::Fail(LocalError::Internal),
            }
        }
        LocalRequest::Status => {
            let status = agent.link.status();
            let started = Instant::now();
            let server_rtt_us = match agent.link.call(Request::Heartbeat).await {
                Ok(Response::Heartbeat) => {
                    Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
                }
                _ => None,
            };
            LocalResponse::Status(AgentStatus {
                os_user: caller.name.clone(),
                client_id: status.client_id,
                connected: status.connected,
                server_rtt_us,
            })
        }
    }
}

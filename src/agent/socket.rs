//! The agent's prompt socket, where the login prompt (`otpgate login`) asks for
//! things on behalf of the OS user who runs it, the PAM gate ties sessions, and
//! the recorder (`otpgate record`) hands over its chunks.
//!
//! Any local user may connect (the socket is mode 0666). The agent knows each
//! caller by the socket's peer credentials, which the kernel fills in; nothing the
//! caller says about itself is believed.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use nix::unistd::{Uid, User};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use otpgate_protocol::local::{AgentStatus, LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, LoginResponse, Verdict};
use otpgate_protocol::{ErrorCode, Request, Response};

use crate::agent::link::{Link, LinkError};
use crate::agent::sessions::Sessions;
use crate::agent::spool::{Spool, SpoolError};
use crate::unix;

/// Where the agent serves the login prompt by default.
pub const DEFAULT_SOCKET: &str = "/run/otpgate/agent.sock";

/// Login requests one OS user may send per second by default (in bursts of
/// twice that): one person's flood is theirs to wait out, and leaves the
/// connection's share (the server's flood control) to everyone else.
pub const DEFAULT_PER_USER_PER_SECOND: NonZeroU32 = NonZeroU32::new(5).unwrap();

/// Each local OS user's share of login requests, by the name of the user
/// acted for (root, the PAM gate, acts for everyone who logs in).
type PerUser = DefaultKeyedRateLimiter<String>;

/// Serves login prompts, the PAM gate and recorders on `listener` until
/// `cancel` fires.
pub async fn serve(listener: UnixListener, agent: Agent, cancel: CancellationToken) {
    unix::accept(listener, cancel.clone(), |stream| {
        let agent = agent.clone();
        let cancel = cancel.clone();
        async move {
            let caller = caller(&stream).await;
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
    per_user: Arc<PerUser>,
}

impl Agent {
    /// Serves through `link`, ties sessions in `sessions`, spools recordings
    /// in `spool`, and lets each local OS user send `per_second` login
    /// requests (bursts of twice that).
    pub fn new(
        link: Link,
        sessions: Arc<Sessions>,
        spool: Arc<Spool>,
        per_second: NonZeroU32,
    ) -> Self {
        let quota = Quota::per_second(per_second)
            .allow_burst(per_second.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN)));
        Self {
            link,
            sessions,
            spool,
            per_user: Arc::new(RateLimiter::keyed(quota)),
        }
    }
}

/// The OS account and process on the other end of a local connection.
struct Caller {
    uid: u32,
    name: String,
    pid: Option<i32>,
}

/// The OS account on the other end of `stream`, from the kernel's peer credentials.
async fn caller(stream: &UnixStream) -> Option<Caller> {
    let credentials = stream.peer_cred().ok()?;
    let (uid, pid) = (credentials.uid(), credentials.pid());
    // Name lookups may go to the network (NSS), so keep them off the runtime.
    let user = tokio::task::spawn_blocking(move || User::from_uid(Uid::from_raw(uid)))
        .await
        .ok()?
        .ok()??;
    Some(Caller {
        uid,
        name: user.name,
        pid,
    })
}

async fn serve_caller(stream: UnixStream, caller: Option<Caller>, agent: &Agent) {
    let refuse = |_| LocalResponse::Fail(LocalError::Unsupported);
    unix::serve_requests(stream, refuse, |request| async {
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
            if let Err(not_until) = agent.per_user.check_key(&os_user) {
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
        LocalRequest::Record(chunk) => {
            if !chunk.is_well_formed() {
                return LocalResponse::Fail(LocalError::Malformed);
            }
            // The recording is the caller's own terminal: it runs under the
            // OS session its OTP login opened.
            let session = caller
                .pid
                .filter(|_| chunk.seq == 0)
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

//! Client sessions tied to the OS sessions that the PAM gate opens.
//!
//! A login is allowed in one process (PAM's `auth`: sshd runs it in a child of
//! the connection's process) and its OS session opened, and later closed, in
//! another (PAM's `session`, in the connection's process). The module cannot
//! carry the client session between them, so the agent does: it remembers each
//! Allow with the process that asked, binds the one that process (or its
//! parent) was given to the process that opens the OS session, and ends the
//! client session when that process closes it, or exits without doing so (a
//! dropped SSH connection, a killed `login`).
//!
//! What the server must hear of (the end of a session, an exempt login) is
//! queued and sent as soon as the link is up, oldest first.
//!
//! The ties and the queue are kept in a file beside the agent's socket (0600),
//! rewritten on every change: a restarted agent goes on watching the sessions
//! it tied, and still sends what it had not sent.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use otpgate_protocol::login::LoginRequest;
use otpgate_protocol::{Request, Response};

use crate::agent::link::Link;
use crate::agent::offline::Offline;

/// How long an Allow waits for its OS session to open.
const BIND_WITHIN: Duration = Duration::from_secs(10 * 60);
/// The most Allows kept waiting; the oldest go first.
const MAX_ALLOWED: usize = 1024;
/// The most notices kept for the server while it cannot be reached.
const MAX_NOTICES: usize = 4096;
/// How far up its ancestors a process is followed to find its session.
const MAX_ANCESTORS: usize = 64;
/// How often bound processes are looked at, and undelivered notices retried.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// A process, told apart from a later one with its pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Process {
    pid: i32,
    /// Clock ticks after boot (`/proc/PID/stat`, field 22).
    start: u64,
}

impl Process {
    /// Process `pid` as it is now, with its parent's pid; `None` once gone.
    fn read(pid: i32) -> Option<(Self, i32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ... starttime ...": comm may hold anything,
        // so fields are counted from its closing parenthesis.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let parent = fields.get(1)?.parse().ok()?;
        let start = fields.get(19)?.parse().ok()?;
        Some((Self { pid, start }, parent))
    }

    fn alive(self) -> bool {
        Self::read(self.pid).is_some_and(|(now, _)| now == self)
    }
}

/// An Allow whose OS session has not opened yet.
struct Allowed {
    os_user: String,
    session: u64,
    /// The process that asked, and its parent.
    asked_by: (i32, Option<i32>),
    at: Instant,
}

/// A client session bound to the process that holds its OS session.
#[derive(Serialize, Deserialize)]
struct Bound {
    os_user: String,
    session: u64,
    process: Process,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    /// Not kept: an Allow waits minutes at most for its OS session.
    #[serde(skip)]
    allowed: VecDeque<Allowed>,
    bound: Vec<Bound>,
    /// For the server, oldest first: (OS user, what to tell).
    notices: VecDeque<(String, LoginRequest)>,
}

/// The agent's record of PAM-opened sessions and of notices for the server.
#[derive(Default)]
pub struct Sessions {
    state: Mutex<State>,
    /// Wakes the delivery of notices.
    queued: Notify,
    /// Where the ties and the queue are kept, if anywhere.
    file: Option<PathBuf>,
}

impl Sessions {
    /// The record kept in `file`: what it holds, if it is there and readable.
    pub fn load(file: PathBuf) -> Self {
        let state = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                warn!(file = %file.display(), error = %err, "the session record is unreadable: starting afresh");
                State::default()
            }),
            Err(_) => State::default(),
        };
        Self {
            state: Mutex::new(state),
            queued: Notify::new(),
            file: Some(file),
        }
    }

    /// Writes the ties and the queue to the file, if there is one.
    fn save(&self, state: &State) {
        let Some(file) = &self.file else {
            return;
        };
        let written = serde_json::to_vec(state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::files::write_private(file, &bytes));
        if let Err(err) = written {
            warn!(file = %file.display(), error = %err, "the session record could not be written");
        }
    }

    /// How many notices wait for the server.
    pub fn queued_notices(&self) -> usize {
        self.state().notices.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data:
        // every change is one push or one remove.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers that process `pid` was allowed in as `os_user`, with client
    /// session `session`.
    pub fn allowed(&self, os_user: &str, session: u64, pid: i32) {
        let parent = Process::read(pid).map(|(_, parent)| parent);
        let mut state = self.state();
        let now = Instant::now();
        state
            .allowed
            .retain(|a| now.duration_since(a.at) < BIND_WITHIN);
        if state.allowed.len() >= MAX_ALLOWED {
            state.allowed.pop_front();
        }
        state.allowed.push_back(Allowed {
            os_user: os_user.to_owned(),
            session,
            asked_by: (pid, parent),
            at: now,
        });
    }

    /// Binds the client session of `os_user`'s Allow to process `pid`, which
    /// opens the OS session: the Allow that `pid` or its child asked for, else
    /// the oldest waiting one of `os_user`. The client session, if any.
    pub fn open(&self, os_user: &str, pid: i32) -> Option<u64> {
        let (process, _) = Process::read(pid)?;
        let mut state = self.state();
        let now = Instant::now();
        let mine = |a: &Allowed| {
            a.os_user == os_user
                && now.duration_since(a.at) < BIND_WITHIN
                && (a.asked_by.0 == pid || a.asked_by.1 == Some(pid))
        };
        let index = state.allowed.iter().position(mine).or_else(|| {
            state
                .allowed
                .iter()
                .position(|a| a.os_user == os_user && now.duration_since(a.at) < BIND_WITHIN)
        })?;
        let allowed = state.allowed.remove(index)?;
        state.bound.push(Bound {
            os_user: allowed.os_user,
            session: allowed.session,
            process,
        });
        self.save(&state);
        Some(allowed.session)
    }

    /// The client session of `os_user` whose OS session holds process `pid`:
    /// the one bound to `pid` or to one of its ancestors (a recorder runs
    /// under the shell's session).
    pub fn session_of(&self, os_user: &str, pid: i32) -> Option<u64> {
        let state = self.state();
        let mut pid = pid;
        for _ in 0..MAX_ANCESTORS {
            let (process, parent) = Process::read(pid)?;
            if let Some(bound) = state
                .bound
                .iter()
                .find(|b| b.os_user == os_user && b.process == process)
            {
                return Some(bound.session);
            }
            if parent <= 1 {
                return None;
            }
            pid = parent;
        }
        None
    }

    /// Ends the client sessions of `os_user` bound to process `pid`; how many.
    pub fn close(&self, os_user: &str, pid: i32) -> usize {
        let mut state = self.state();
        let (closing, kept): (Vec<Bound>, Vec<Bound>) = std::mem::take(&mut state.bound)
            .into_iter()
            .partition(|b| b.os_user == os_user && b.process.pid == pid);
        state.bound = kept;
        let count = closing.len();
        for bound in closing {
            push_notice(&mut state, bound.os_user, logout(bound.session));
        }
        self.save(&state);
        drop(state);
        self.queued.notify_one();
        count
    }

    /// Queues `request` about `os_user` for the server.
    pub fn notify(&self, os_user: &str, request: LoginRequest) {
        let mut state = self.state();
        push_notice(&mut state, os_user.to_owned(), request);
        self.save(&state);
        drop(state);
        self.queued.notify_one();
    }

    /// Ends the client sessions whose processes have exited.
    fn reap(&self) {
        let mut state = self.state();
        let (gone, alive): (Vec<Bound>, Vec<Bound>) = std::mem::take(&mut state.bound)
            .into_iter()
            .partition(|b| !b.process.alive());
        state.bound = alive;
        if gone.is_empty() {
            return;
        }
        for bound in gone {
            info!(
                os_user = bound.os_user,
                session = bound.session,
                "the OS session's process is gone: ending its client session"
            );
            push_notice(&mut state, bound.os_user, logout(bound.session));
        }
        self.save(&state);
    }

    /// Sends queued notices, oldest first (a logout of an offline login the
    /// server has not heard of yet waits), until none is left to send or
    /// the server cannot be reached.
    async fn deliver(&self, link: &Link, offline: &Offline) {
        // The server must know an offline login's session before it hears
        // that it ended: such a logout waits, the rest go on.
        let held = |(_, request): &(String, LoginRequest)| matches!(request, LoginRequest::Logout { session: Some(id) } if offline.unreported(*id));
        loop {
            let next = {
                let state = self.state();
                state.notices.iter().find(|notice| !held(notice)).cloned()
            };
            let Some((os_user, request)) = next else {
                return;
            };
            match link
                .call(Request::Login {
                    os_user: os_user.clone(),
                    request: request.clone(),
                })
                .await
            {
                Ok(Response::Login(_)) => {
                    // Found again: the oldest may have been dropped meanwhile.
                    let mut state = self.state();
                    let sent = (os_user, request);
                    if let Some(at) = state.notices.iter().position(|notice| *notice == sent) {
                        state.notices.remove(at);
                    }
                    self.save(&state);
                }
                Ok(other) => {
                    debug!(?other, "notice not taken yet");
                    return;
                }
                Err(err) => {
                    debug!(error = %err, "notice not delivered yet");
                    return;
                }
            }
        }
    }
}

fn logout(session: u64) -> LoginRequest {
    LoginRequest::Logout {
        session: Some(session),
    }
}

fn push_notice(state: &mut State, os_user: String, request: LoginRequest) {
    if state.notices.len() >= MAX_NOTICES {
        warn!("too many notices for the server: the oldest is dropped");
        state.notices.pop_front();
    }
    state.notices.push_back((os_user, request));
}

/// Watches bound processes and delivers notices until `cancel` fires.
pub async fn watch(
    sessions: Arc<Sessions>,
    link: Link,
    offline: Arc<Offline>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => sessions.reap(),
            () = sessions.queued.notified() => {}
        }
        sessions.deliver(&link, &offline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> i32 {
        i32::try_from(std::process::id()).unwrap()
    }

    #[test]
    fn a_process_is_read_with_its_parent_and_start() {
        let (me_now, parent) = Process::read(me()).unwrap();
        assert_eq!(Process::read(me()).unwrap().0, me_now, "the same start");
        assert_eq!(
            parent,
            i32::try_from(std::os::unix::process::parent_id()).unwrap()
        );
        assert!(me_now.alive());
        assert!(
            !Process {
                start: me_now.start + 1,
                ..me_now
            }
            .alive(),
            "a later process with the pid is another"
        );
    }

    #[test]
    fn a_process_belongs_to_the_session_bound_to_it_or_an_ancestor() {
        let sessions = Sessions::default();
        let parent = i32::try_from(std::os::unix::process::parent_id()).unwrap();
        assert_eq!(sessions.session_of("alice", me()), None);
        sessions.allowed("alice", 7, parent);
        assert_eq!(sessions.open("alice", parent), Some(7));
        assert_eq!(sessions.session_of("alice", me()), Some(7), "a child");
        assert_eq!(sessions.session_of("alice", parent), Some(7), "itself");
        assert_eq!(sessions.session_of("bob", me()), None, "another user's");
    }

    #[test]
    fn the_allow_of_the_opening_process_or_its_child_is_bound_first() {
        let sessions = Sessions::default();
        // Asked by another process, then by this one's child (sshd's auth).
        sessions.allowed("alice", 1, 1);
        sessions.state().allowed.back_mut().unwrap().asked_by = (1, Some(0));
        sessions.allowed("alice", 2, 1);
        sessions.state().allowed.back_mut().unwrap().asked_by = (12345, Some(me()));
        assert_eq!(sessions.open("alice", me()), Some(2));
        // Then the oldest that is left.
        assert_eq!(sessions.open("alice", me()), Some(1));
        assert_eq!(sessions.open("alice", me()), None);
        assert_eq!(sessions.close("alice", me()), 2);
        let notices: Vec<_> = sessions.state().notices.iter().cloned().collect();
        assert_eq!(
            notices,
            [
                ("alice".to_owned(), logout(2)),
                ("alice".to_owned(), logout(1))
            ]
        );
    }

    #[test]
    fn a_restarted_agent_keeps_its_ties_and_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.sessions");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let exempt = LoginRequest::Exempt {
            service: "sshd".into(),
        };
        {
            let sessions = Sessions::load(file.clone());
            sessions.allowed("carol", 9, pid);
            assert_eq!(sessions.open("carol", pid), Some(9));
            sessions.notify("dan", exempt.clone());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Sessions::load(file.clone());
        child.kill().unwrap();
        child.wait().unwrap();
        again.reap();
        let notices: Vec<_> = again.state().notices.iter().cloned().collect();
        assert_eq!(
            notices,
            [("dan".to_owned(), exempt), ("carol".to_owned(), logout(9))]
        );
        std::fs::write(&file, "not json").unwrap();
        assert!(Sessions::load(file).state().bound.is_empty(), "afresh");
    }

    #[test]
    fn a_session_whose_process_exited_is_ended() {
        let sessions = Sessions::default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        sessions.allowed("bob", 7, pid);
        assert_eq!(sessions.open("bob", pid), Some(7));
        sessions.reap();
        assert!(sessions.state().notices.is_empty(), "still running");
        child.kill().unwrap();
        child.wait().unwrap();
        sessions.reap();
        let notices: Vec<_> = sessions.state().notices.iter().cloned().collect();
        assert_eq!(notices, [("bob".to_owned(), logout(7))]);
    }
}

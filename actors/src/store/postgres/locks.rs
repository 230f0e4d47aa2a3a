//! Advisory locks held by sessions of a server's own (outside the pool),
//! which PostgreSQL frees when the session ends: the site lock, which every
//! server serving the database shares and a copy into it holds alone,
//! checked while it lives and taken again when its session ends (see
//! [`Pg::site`]); the sender's lock, which the
//! one node that sends mail holds (see [`Pg::sender`]); and the locks of
//! what one node at a time does ([`Alone`], see [`Pg::exclusive`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

use super::{Pg, Result, StoreError};

/// Shared (for their sessions) by the servers that serve the database;
/// held alone by a copy into it.
pub(in crate::store) const SITE_LOCK: i64 = 0x6f74_7067_6174_6532;
/// Held (for its session) by the node that sends mail.
const SENDER_LOCK: i64 = 0x6f74_7067_6174_6533;
/// What one node at a time does, across every node of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alone {
    /// Storing a recording's chunk: every node reads and writes the
    /// recordings' census and quotas.
    Recording,
    /// Making the first administrator, once.
    FirstStart,
    /// Changing the settings, groups or users: each change starts from what
    /// the database holds, and no other node's lands in between.
    Policy,
    /// Enrolling a computer: a token's uses and a name's holder are decided
    /// one enrollment at a time.
    Enroll,
}

impl Alone {
    /// Its advisory lock.
    fn lock(self) -> i64 {
        match self {
            Self::Recording => 0x6f74_7067_6174_6534,
            Self::FirstStart => 0x6f74_7067_6174_6535,
            Self::Policy => 0x6f74_7067_6174_6536,
            Self::Enroll => 0x6f74_7067_6174_6537,
        }
    }
}

/// The sessions that take the locks of [`Alone`], one per lock.
pub(in crate::store) type Sessions = std::sync::Mutex<HashMap<Alone, Arc<Mutex<Option<Held>>>>>;

/// This node's turn at what an [`Alone`] names, until dropped (or none to
/// take, in sled). Let go by a task of its own, so that a caller that stops
/// waiting lets go too; this node's next turn waits for that.
pub struct Exclusive {
    held: Option<(OwnedMutexGuard<Option<Held>>, i64)>,
}

impl Exclusive {
    /// A turn where no other node can be (sled).
    pub(in crate::store) fn only_node() -> Self {
        Self { held: None }
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        let Some((mut held, lock)) = self.held.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: the process is ending, and its sessions with it.
            return;
        };
        runtime.spawn(async move {
            let unlock = match held.as_ref() {
                Some(session) => session
                    .client
                    .query_one("SELECT pg_advisory_unlock($1)", &[&lock])
                    .await
                    .is_ok_and(|row| row.get::<_, bool>(0)),
                None => true,
            };
            if !unlock {
                // A session that could not let go is ended, and its lock with it.
                *held = None;
            }
        });
    }
}

/// How often a server whose session was lost tries to take the site lock
/// again.
const RELOCK_EVERY: Duration = Duration::from_secs(1);
/// How long the site lock is waited for before it is another server's.
const TAKE_WITHIN: Duration = Duration::from_secs(5);

/// How often the session holding the site lock is asked whether it is
/// there (and its TCP keepalive).
const PING_EVERY: Duration = Duration::from_secs(2);
/// How long a session of the server's own may sit idle before the
/// database ends it (and frees its locks): longer than the sending
/// mailer's rounds (`SWEEP_EVERY`, 10 s), which ask it whether it is there.
const IDLE_ENDS_AFTER: Duration = Duration::from_secs(15);

/// A session of the server's own: its client, its backend (pid and start,
/// which tell it from a later backend given the same pid), and the
/// task driving its connection, ended (and its locks freed) when this is
/// dropped.
pub(in crate::store) struct Held {
    client: tokio_postgres::Client,
    backend: Backend,
    session: tokio::task::JoinHandle<()>,
}

/// Ends when `client`'s session no longer answers within twice
/// [`PING_EVERY`].
pub(super) async fn unanswered(client: &tokio_postgres::Client) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        if !pinged(client).await {
            return;
        }
    }
}

/// Whether `client`'s session answers within twice [`PING_EVERY`].
async fn pinged(client: &tokio_postgres::Client) -> bool {
    let ping = client.simple_query("SELECT 1");
    matches!(tokio::time::timeout(2 * PING_EVERY, ping).await, Ok(Ok(_)))
}

/// Whether `held`'s session is there and answers (see [`pinged`]).
async fn answers(held: &Held) -> bool {
    !held.session.is_finished() && pinged(&held.client).await
}

/// A backend of the database: its pid, and when it started (in
/// microseconds since the epoch).
#[derive(Debug, Clone, Copy)]
struct Backend {
    pid: i32,
    started: i64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.session.abort();
    }
}

/// The session that holds (or tries for) the sender's lock.
pub(in crate::store) struct Sending {
    held: Held,
    /// Whether it holds the lock.
    locked: bool,
    /// When it was last known to be there.
    asked: Instant,
}

/// How a process holds the site lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Serving it, with every other server that does.
    Serving,
    /// Alone: copying a site into it, with no server on it.
    Alone,
}

/// Ends with why when the database was taken by another process.
pub type Taken = std::pin::Pin<Box<dyn std::future::Future<Output = StoreError> + Send>>;

impl Pg {
    /// Takes the site lock as `how` says, on a session of its own (outside
    /// the pool). The returned future ends, with why, only if a process that
    /// holds it alone took it while this one's session was gone (the
    /// database restarted, the network failed): until then it takes the
    /// lock again whenever its session ends; dropping it ends the session
    /// and frees the lock. Refused if the lock cannot be had for
    /// [`TAKE_WITHIN`] (a process that just stopped frees it sooner).
    pub(in crate::store) async fn site(self: &Arc<Self>, how: Site) -> Result<Taken> {
        let mut held = self.lock_site(how, None).await?;
        let pg = Arc::clone(self);
        Ok(Box::pin(async move {
            loop {
                // Ends when the session does (the lock goes with it), or when
                // it stops answering (a half-open connection holds nothing
                // the database still counts on).
                let Held {
                    client, session, ..
                } = &mut held;
                tokio::select! {
                    _ = session => {}
                    () = unanswered(client) => {}
                }
                // No commit lands while the lock is not held.
                let _no_commits = pg.committing.lock().await;
                tracing::warn!("the database session holding the site lock ended; taking it again");
                let previous = held.backend;
                drop(held);
                held = loop {
                    match pg.lock_site(how, Some(previous)).await {
                        Ok(held) => break held,
                        Err(err @ StoreError::Taken) => return err,
                        Err(_) => tokio::time::sleep(RELOCK_EVERY).await,
                    }
                };
            }
        }))
    }

    /// Whether this node is the one that sends mail now: it holds the
    /// sender's lock on a session of its own, taken now if no node holds
    /// it. A node whose session ended (or stopped answering) has lost it.
    pub(in crate::store) async fn sender(&self) -> Result<bool> {
        let mut sending = self.sending.lock().await;
        let held = match sending.take() {
            // Asked whether it is there at most every PING_EVERY: a mailer
            // woken for every message costs no round trip more.
            Some(kept)
                if kept.locked
                    && !kept.held.session.is_finished()
                    && kept.asked.elapsed() < PING_EVERY =>
            {
                *sending = Some(kept);
                return Ok(true);
            }
            Some(kept) if answers(&kept.held).await => {
                if kept.locked {
                    *sending = Some(Sending {
                        asked: Instant::now(),
                        ..kept
                    });
                    return Ok(true);
                }
                kept.held
            }
            _ => {
                // Whatever it held, it may hold no more.
                self.sends.store(false, Ordering::Relaxed);
                self.session().await?
            }
        };
        let locked: bool = held
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&SENDER_LOCK])
            .await?
            .get(0);
        *sending = Some(Sending {
            held,
            locked,
            asked: Instant::now(),
        });
        self.sends.store(locked, Ordering::Relaxed);
        Ok(locked)
    }

    /// This node's turn at `what`, once no other node has it (or the
    /// statement timeout passed: an error).
    pub(in crate::store) async fn exclusive(&self, what: Alone) -> Result<Exclusive> {
        let session = Arc::clone(
            self.exclusive
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(what)
                .or_default(),
        );
        let mut held = session.lock_owned().await;
        let session = match held.take() {
            Some(session) if !session.session.is_finished() => session,
            _ => self.session().await?,
        };
        session
            .client
            .execute("SELECT pg_advisory_lock($1)", &[&what.lock()])
            .await?;
        *held = Some(session);
        Ok(Exclusive {
            held: Some((held, what.lock())),
        })
    }

    /// A new session of the server's own, kept alive by TCP keepalives, and
    /// ended by the database once idle for [`IDLE_ENDS_AFTER`] (this process
    /// paused, say: its locks are then freed), where it can (14 and newer).
    async fn session(&self) -> Result<Held> {
        let mut config = self.config.clone();
        config.keepalives_idle(PING_EVERY);
        let (client, connection) = config
            .connect(self.tls.clone())
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let session = tokio::spawn(async move {
            let _ = connection.await;
        });
        let idle = format!("SET idle_session_timeout = {}", IDLE_ENDS_AFTER.as_millis());
        if let Err(err) = client.batch_execute(&idle).await {
            tracing::debug!(error = %err, "this PostgreSQL ends no idle session");
        }
        let row = client
            .query_one(
                "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::bigint
                 FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(Held {
            client,
            backend: Backend {
                pid: row.get(0),
                started: row.get(1),
            },
            session,
        })
    }

    /// A new session holding the site lock as `how` says, tried for
    /// [`TAKE_WITHIN`]. A session of this process's that lost its connection
    /// (`previous`, a backend the database has not noticed is gone yet) is
    /// ended first.
    async fn lock_site(&self, how: Site, previous: Option<Backend>) -> Result<Held> {
        let held = self.session().await?;
        if let Some(previous) = previous {
            held.client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE pid = $1
                       AND (extract(epoch FROM backend_start) * 1000000)::bigint = $2",
                    &[&previous.pid, &previous.started],
                )
                .await?;
        }
        let take = match how {
            Site::Serving => "SELECT pg_try_advisory_lock_shared($1)",
            Site::Alone => "SELECT pg_try_advisory_lock($1)",
        };
        let tried = tokio::time::Instant::now();
        loop {
            let locked: bool = held.client.query_one(take, &[&SITE_LOCK]).await?.get(0);
            if locked {
                return Ok(held);
            }
            if tried.elapsed() >= TAKE_WITHIN {
                return Err(StoreError::Taken);
            }
            tokio::time::sleep(RELOCK_EVERY / 4).await;
        }
    }
}

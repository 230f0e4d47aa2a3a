//! What other nodes change, heard through PostgreSQL's `LISTEN`/`NOTIFY`, so
//! that several nodes over one database act on one state within moments
//! rather than at their next write or restart.
//!
//! Five channels. [`OWNERS`]: a node that takes a computer from another
//! says so in the taking's transaction (`fence node computer`); every other
//! node then counts its own hold on that computer as fenced out, so that its
//! actor loads the computer again before it answers from what it holds in
//! memory (a prompt's status, say, after an approver on another node
//! decided). [`POLICY`] and [`REVOCATIONS`]: sent by triggers (migration 5)
//! when the settings, groups, users or revocations change, whoever wrote
//! them; [`OUTBOX`]: sent with a commit that queues mail on a node that does
//! not send it; [`OFFLINE`]: sent by a trigger (migration 7) with the
//! name of a computer whose offline codes changed. They reach the server
//! as [`Change`]s.
//!
//! Notifications sent while no session listened are lost; so a session
//! that ended is opened again, and then the owners table is read again and
//! [`Change::Missed`] is sent: anything may have changed meanwhile.

use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_postgres::AsyncMessage;

use super::locks::unanswered;
use super::{Pg, Result, StoreError};
use crate::id::ComputerId;
use crate::store::Change;

/// A computer taken from another node: `fence node computer`.
pub(super) const OWNERS: &str = "otpgate_owners";
/// The settings, a group or an internal user changed.
const POLICY: &str = "otpgate_policy";
/// A computer's certificates were revoked.
const REVOCATIONS: &str = "otpgate_revocations";
/// Mail was queued on a node that does not send it.
pub(super) const OUTBOX: &str = "otpgate_outbox";
/// A computer's offline codes changed: its name.
const OFFLINE: &str = "otpgate_offline";

/// How the listening sessions are named in `pg_stat_activity`.
pub(in crate::store) const APPLICATION: &str = "otpgate listening";
/// How long a node waits before it listens again after its session ended.
const LISTEN_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// The task that listens, ended when the store is dropped.
pub(super) struct Listening(tokio::task::JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Pg {
    /// Listens for what other nodes change from the moment this returns,
    /// until `self` is dropped.
    pub(in crate::store) async fn listen(self: &Arc<Self>) -> Result<()> {
        let session = Session::open(self).await?;
        let task = tokio::spawn(listening(Arc::downgrade(self), session));
        *self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Listening(task));
        Ok(())
    }

    /// What other nodes change, from now on.
    pub(in crate::store) fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Counts the holds of this node on `computer` with a fence below
    /// `fence` as fenced out: another node took it with that fence.
    fn taken_elsewhere(&self, computer: ComputerId, fence: i64) {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let newest = taken.entry(computer).or_insert(fence);
        *newest = (*newest).max(fence);
    }

    /// Takes in notification `payload` of channel `channel`.
    fn heard(&self, channel: &str, payload: &str) {
        match channel {
            OWNERS => {
                let mut parts = payload.splitn(3, ' ');
                let taken = (|| {
                    let fence = parts.next()?.parse::<i64>().ok()?;
                    let node = parts.next()?.parse::<i64>().ok()?;
                    let computer = parts.next()?.parse::<ComputerId>().ok()?;
                    Some((fence, node, computer))
                })();
                match taken {
                    Some((_, node, _)) if node == self.node => {}
                    Some((fence, _, computer)) => self.taken_elsewhere(computer, fence),
                    None => tracing::warn!(channel, "unreadable notification; ignored"),
                }
            }
            POLICY => {
                let _ = self.changes.send(Change::Policy);
            }
            REVOCATIONS => {
                let _ = self.changes.send(Change::Revocations);
            }
            OUTBOX => {
                let _ = self.changes.send(Change::Outbox);
            }
            OFFLINE => match payload.parse::<ComputerId>() {
                Ok(computer) => {
                    let _ = self.changes.send(Change::Offline(computer));
                }
                Err(_) => tracing::warn!(channel, "unreadable notification; ignored"),
            },
            _ => {}
        }
    }

    /// Reads which computers other nodes hold, after notifications may
    /// have been missed.
    async fn catch_up(&self) -> Result<()> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key, fence FROM owners WHERE node <> $1",
                &[&self.node],
            )
            .await?;
        for row in rows {
            let key: Vec<u8> = row.get(0);
            match String::from_utf8(key)
                .ok()
                .and_then(|name| name.parse::<ComputerId>().ok())
            {
                Some(computer) => self.taken_elsewhere(computer, row.get(1)),
                // No computer of that name can be loaded either.
                None => tracing::warn!("an unreadable computer in table owners; skipped"),
            }
        }
        Ok(())
    }
}

/// Listens for as long as the store `pg` lives, from `session` on, opening
/// a new session whenever one ends and catching up on what it missed.
async fn listening(pg: Weak<Pg>, mut session: Session) {
    loop {
        let ended = session.hear(&pg).await;
        tracing::warn!(error = %ended, "stopped hearing what other servers change; listening again");
        let mut tries = 0u32;
        session = loop {
            tokio::time::sleep(LISTEN_AGAIN_AFTER).await;
            let Some(store) = pg.upgrade() else { return };
            let caught_up = match Session::open(&store).await {
                Ok(session) => store.catch_up().await.map(|()| session),
                Err(err) => Err(err),
            };
            match caught_up {
                Ok(session) => {
                    tracing::info!("hearing what other servers change again");
                    let _ = store.changes.send(Change::Missed);
                    break session;
                }
                // Said once a minute while it lasts.
                Err(err) if tries.is_multiple_of(60) => {
                    tracing::warn!(error = %err, "cannot hear what other servers change yet");
                }
                Err(err) => tracing::debug!(error = %err, "cannot listen yet"),
            }
            tries += 1;
        };
    }
}

/// A session of its own (outside the pool) listening on every channel.
struct Session {
    client: tokio_postgres::Client,
    hearing: mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    _driving: Listening,
}

impl Session {
    /// A new session of `pg`'s database, listening once this returns.
    async fn open(pg: &Pg) -> Result<Self> {
        let mut config = pg.config.clone();
        config.keepalives_idle(LISTEN_AGAIN_AFTER * 2);
        config.application_name(APPLICATION);
        let (client, mut connection) = config
            .connect(pg.tls.clone())
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let (heard, hearing) = mpsc::unbounded_channel();
        let driving = tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(notice) = message {
                    let _ = heard.send(notice);
                }
            }
        });
        let session = Self {
            client,
            hearing,
            _driving: Listening(driving),
        };
        session
            .client
            .batch_execute(&format!(
                "LISTEN {OWNERS}; LISTEN {POLICY}; LISTEN {REVOCATIONS}; LISTEN {OUTBOX}; \
                 LISTEN {OFFLINE}"
            ))
            .await?;
        Ok(session)
    }

    /// Hands what is heard to `pg` until the session ends (or `pg` is
    /// dropped); why it ended.
    async fn hear(&mut self, pg: &Weak<Pg>) -> StoreError {
        loop {
            tokio::select! {
                notice = self.hearing.recv() => {
                    let Some(notice) = notice else {
                        return StoreError::Unavailable("the listening session ended".into());
                    };
                    let Some(store) = pg.upgrade() else {
                        return StoreError::Unavailable("the store was closed".into());
                    };
                    store.heard(notice.channel(), notice.payload());
                }
                () = unanswered(&self.client) => {
                    return StoreError::Unavailable("the listening session stopped answering".into());
                }
            }
        }
    }
}

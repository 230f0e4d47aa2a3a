//! The recordings as the server holds them: opened at start (or left
//! unavailable, with why), and the chunks agents ship taken in, each
//! acknowledged once it is durable.

use std::sync::Arc;

use otpgate_actors::audit::{Action, AuditEntry, Who};
use otpgate_actors::names::is_os_account;
use otpgate_actors::otp::OtpKeys;
use otpgate_actors::store::{Alone, SideDb, StoreError};
use otpgate_actors::{ComputerId, Store, Timestamp};
use otpgate_protocol::record::RecordChunk;
use otpgate_protocol::{ErrorCode, Response};
use tracing::warn;

use super::{Loss, Quotas, Recordings, Stored};

/// The recordings store as the server holds it: open, or unavailable (its
/// database could not be opened at start). Logins never depend on it: a
/// damaged recordings database leaves the server serving OTP logins, with
/// recordings refused (agents keep theirs in their spools) and said so.
#[derive(Clone)]
pub enum Shelf {
    /// Open.
    Open(Arc<Recordings>),
    /// Unavailable: why, with where and what to do.
    Unavailable(Arc<str>),
}

impl Shelf {
    /// Opens the recordings: in the store's PostgreSQL database `beside`
    /// when there is one, else in a sled database in folder `path`, which
    /// holds their anchor file either way (see [`Recordings::open`]).
    /// Recordings that cannot be opened are logged, with what to do, and
    /// left alone.
    pub async fn open(
        path: &std::path::Path,
        beside: Option<SideDb>,
        seal: Arc<OtpKeys>,
        quotas: Quotas,
    ) -> Self {
        let in_postgres = beside.is_some();
        let folder = path.to_owned();
        // Opened (the census read, sealed again) while no other node stores.
        let turn = match &beside {
            Some(db) => Some(db.alone(Alone::Recording).await),
            None => None,
        };
        let opening = tokio::task::spawn_blocking(move || {
            let _turn = turn.transpose().map_err(|err| with_sources(&err))?;
            crate::files::create_private_dir(&folder).map_err(|err| err.to_string())?;
            let db = match beside {
                Some(db) => db,
                None => SideDb::open(&folder).map_err(|err| with_sources(&err))?,
            };
            Recordings::open(db, &folder, seal, quotas).map_err(|err| with_sources(&err))
        });
        let opened = opening
            .await
            .unwrap_or_else(|err| Err(format!("opening them stopped: {err}")));
        match opened {
            Ok(recordings) => Self::Open(Arc::new(recordings)),
            Err(err) if in_postgres => {
                let why = format!(
                    "the recordings in PostgreSQL cannot be read ({err}); OTP logins go on, \
                     recordings wait in the agents' spools until the server is started again"
                );
                tracing::error!("{why}");
                Self::Unavailable(why.into())
            }
            Err(err) => {
                let why = format!(
                    "the recordings database in {} cannot be opened ({err}); OTP logins go on, \
                     recordings wait in the agents' spools. To start a new one, stop the \
                     server, move that folder aside (keep it: it may be recovered) and start \
                     the server again",
                    path.display()
                );
                tracing::error!("{why}");
                Self::Unavailable(why.into())
            }
        }
    }

    /// The store, or why it is unavailable.
    pub fn get(&self) -> Result<&Arc<Recordings>, &str> {
        match self {
            Self::Open(recordings) => Ok(recordings),
            Self::Unavailable(why) => Err(why),
        }
    }
}

/// `err` and what it came from, each after a colon.
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text = format!("{text}: {err}");
        source = err.source();
    }
    text
}

/// Takes a chunk that computer `computer`'s agent shipped, made for
/// `os_user` in client `session` (kept only if it is that computer's session
/// of that user: an agent speaks for its own computer alone), arrived at
/// `now`; the answer, sent once the chunk is durable. A first loss of output
/// goes to the audit log in `store`.
pub async fn receive(
    recordings: &Arc<Recordings>,
    store: &dyn Store,
    now: Timestamp,
    (computer, os_user, session): (&ComputerId, &str, Option<u64>),
    chunk: RecordChunk,
) -> Result<Response, StoreError> {
    if !is_os_account(os_user) {
        return Ok(Response::Fail(ErrorCode::Malformed));
    }
    let session = match session {
        Some(session) if chunk.seq == 0 => store
            .sessions_of(computer)
            .await?
            .iter()
            .any(|s| s.id == session && s.os_user == os_user)
            .then_some(session),
        _ => None,
    };
    let seq = chunk.seq;
    let _copying = recordings.copying.read().await;
    // Stored and committed while no other node stores one: all of them
    // count into one census and one set of quotas.
    let _alone = recordings.alone().await?;
    // Deflating and hashing take a moment: off the async runtime.
    let storing = {
        let (recordings, computer, os_user) =
            (Arc::clone(recordings), computer.clone(), os_user.to_owned());
        tokio::task::spawn_blocking(move || {
            recordings.store(&computer, &os_user, session, &chunk, now)
        })
    };
    let stored = match storing.await {
        Ok(stored) => stored?,
        Err(err) => {
            warn!(error = %err, "storing a recording's chunk stopped");
            return Ok(Response::Fail(ErrorCode::Internal));
        }
    };
    let lost = |outcome: String| AuditEntry {
        at: now,
        who: Who::os_user(os_user, computer),
        computer: Some(computer.to_string()),
        action: Action::Record,
        outcome,
    };
    Ok(match stored {
        Stored::Kept {
            id: recording,
            first_loss,
        } => {
            let why = match first_loss {
                Some(Loss::Client) => {
                    Some("output was dropped on the client computer (its buffer or spool was full)")
                }
                Some(Loss::Quota) => Some(
                    "output was left out: the recordings of this computer or user reached \
                     their quota",
                ),
                None => None,
            };
            if let Some(why) = why {
                store.append_audit(&lost(format!("recording {recording} incomplete: {why}")))?;
                store.flush().await?;
            }
            recordings.flush().await?;
            Response::Recorded
        }
        Stored::Refused { first } => {
            if first {
                store.append_audit(&lost(
                    "a recording not tied to a client session was not kept".into(),
                ))?;
                store.flush().await?;
            }
            recordings.flush().await?;
            Response::Recorded
        }
        Stored::OutOfOrder { expected } => {
            warn!(expected, got = seq, "a recording's chunk out of order");
            Response::Fail(ErrorCode::OutOfOrder)
        }
        Stored::Malformed => Response::Fail(ErrorCode::Malformed),
    })
}

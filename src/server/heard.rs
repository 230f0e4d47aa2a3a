//! What other servers over the same database change, put in force here
//! (see `Store::changes`): the settings, groups and users are read again,
//! and so are the revocations, whose computers' connections here are then
//! closed; mail queued wakes the mailer (which sends only on the node that
//! sends mail); a computer's offline codes changed are told to its agent if
//! it is connected here. A computer another server takes needs nothing here: its actor
//! loads it again before it next answers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use otpgate_actors::mail::MailerHandle;
use otpgate_actors::policy;
use otpgate_actors::store::Change;

use super::live::Live;
use crate::tls::revoked::Revocations;

/// How soon a reading that failed (the database away) is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What is read again when changes are heard.
pub(super) struct Followers {
    /// The settings, groups and users in force here.
    pub policy: policy::Owner,
    /// The revocations in force here.
    pub revocations: Arc<Revocations>,
    /// The connections here, closed when their computer is revoked, and
    /// told when its offline codes change.
    pub live: Arc<Live>,
    /// Woken when mail is queued.
    pub mailer: MailerHandle,
}

/// Puts in force what `changes` tells of, until `cancel` fires.
pub(super) async fn follow(
    mut changes: Receiver<Change>,
    followers: Followers,
    cancel: CancellationToken,
) {
    // What is still to be read again: (the policy, the revocations).
    let mut stale = (false, false);
    loop {
        let heard = tokio::select! {
            () = cancel.cancelled() => return,
            heard = changes.recv() => Some(heard),
            () = sleep(RETRY_AFTER), if stale != (false, false) => None,
        };
        match heard {
            Some(Ok(Change::Policy)) => stale.0 = true,
            Some(Ok(Change::Revocations)) => stale.1 = true,
            Some(Ok(Change::Outbox)) => followers.mailer.wake(),
            Some(Ok(Change::Offline(id))) => followers.live.offline_changed(&id),
            Some(Ok(Change::Missed) | Err(RecvError::Lagged(_))) => {
                stale = (true, true);
                followers.mailer.wake();
                // Whose offline codes changed meanwhile is not known: every
                // agent here asks again.
                followers.live.offline_changed_all();
            }
            Some(Err(RecvError::Closed)) => return,
            None => {}
        }
        if stale.0 {
            match followers.policy.reload().await {
                Ok(()) => stale.0 = false,
                Err(err) => tracing::warn!(error = %err, "cannot read the changed policy yet"),
            }
        }
        if stale.1 {
            let revocations = Arc::clone(&followers.revocations);
            match tokio::task::spawn_blocking(move || revocations.reload()).await {
                Ok(Ok(revoked)) => {
                    stale.1 = false;
                    for id in revoked {
                        let closed = followers.live.close_all(&id);
                        tracing::info!(computer = %id, closed, "revoked by another server; its connections here are closed");
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot read the changed revocations yet");
                }
                Err(err) => tracing::warn!(error = %err, "reading the revocations failed"),
            }
        }
    }
}

//! Upkeep while the server runs: what the retention settings no longer keep
//! is removed, at start and every hour.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use otpgate_actors::{Clock, SledStore, Store, policy};

use super::recordings::{Recordings, Shelf};

/// How often the store is pruned (see [`prune_every`]).
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Removes what the retention setting no longer keeps, and what is over (see
/// `Store::prune`), and the recordings past their own retention, at start and
/// every [`PRUNE_EVERY`], until `cancel` fires.
pub(super) async fn prune_every(
    store: Arc<SledStore>,
    policy: policy::Owner,
    clock: Arc<dyn Clock>,
    (recordings, recording_retention): (Shelf, Duration),
    cancel: CancellationToken,
) {
    loop {
        let settings = policy.snapshot().settings.clone();
        let now = clock.now();
        if let Ok(recordings) = recordings.get() {
            prune_recordings(recordings, now.before(recording_retention)).await;
        }
        let cutoff = now.before(settings.retention);
        let pruning = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.prune(cutoff, now, settings.failure_window))
        };
        match pruning.await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => match store.flush().await {
                Ok(()) => info!(removed, "pruned records past their retention"),
                Err(err) => warn!(error = %err, "cannot flush after pruning"),
            },
            Ok(Err(err)) => warn!(error = %err, "cannot prune the store"),
            Err(err) => warn!(error = %err, "pruning stopped"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = sleep(PRUNE_EVERY) => {}
        }
    }
}

/// Removes the recordings last written before `old`.
async fn prune_recordings(recordings: &Arc<Recordings>, old: otpgate_actors::Timestamp) {
    let pruning = {
        let recordings = Arc::clone(recordings);
        tokio::task::spawn_blocking(move || recordings.prune(old))
    };
    match pruning.await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => match recordings.flush().await {
            Ok(()) => info!(removed, "removed recordings past their retention"),
            Err(err) => warn!(error = %err, "cannot flush after removing recordings"),
        },
        Ok(Err(err)) => warn!(error = %err, "cannot remove old recordings"),
        Err(err) => warn!(error = %err, "removing old recordings stopped"),
    }
}

//! Upkeep while the server runs: what the retention settings no longer keep
//! is removed, at start and every hour.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use otpgate_actors::{Clock, KvStore, Store, StoreError, policy};

use super::recordings::Shelf;

/// How often the store is pruned (see [`prune_every`]).
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Removes what the retention setting no longer keeps, and what is over (see
/// `Store::prune`), and the recordings past their own retention, at start and
/// every [`PRUNE_EVERY`], until `cancel` fires.
pub(super) async fn prune_every(
    store: Arc<KvStore>,
    policy: policy::Owner,
    clock: Arc<dyn Clock>,
    (recordings, recording_retention): (Shelf, Duration),
    cancel: CancellationToken,
) {
    loop {
        let settings = policy.snapshot().settings.clone();
        let now = clock.now();
        if let Ok(recordings) = recordings.get() {
            let (recordings, old) = (Arc::clone(recordings), now.before(recording_retention));
            let flushed = Arc::clone(&recordings);
            // Removed and committed while no other node stores or removes
            // recordings (see `Recordings::alone`).
            match recordings.alone().await {
                Ok(turn) => {
                    // Reading and removing chunks takes a while: off the runtime.
                    let removed = async move {
                        tokio::task::spawn_blocking(move || recordings.prune(old))
                            .await
                            .unwrap_or(Err(StoreError::FlushAborted))
                    };
                    prune("recordings past their retention", removed, || async move {
                        flushed.flush().await
                    })
                    .await;
                    drop(turn);
                }
                Err(err) => warn!(error = %err, "cannot remove old recordings now"),
            }
        }
        let cutoff = now.before(settings.retention);
        prune(
            "records past their retention",
            store.prune(cutoff, now, settings.failure_window),
            || store.flush(),
        )
        .await;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = sleep(PRUNE_EVERY) => {}
        }
    }
}

/// Removes `what` (`removed` says how many went), then makes it durable with
/// `flush` if anything went; logs how it went.
async fn prune<F: Future<Output = Result<(), StoreError>>>(
    what: &'static str,
    removed: impl Future<Output = Result<usize, StoreError>>,
    flush: impl FnOnce() -> F,
) {
    match removed.await {
        Ok(0) => {}
        Ok(removed) => match flush().await {
            Ok(()) => info!(removed, what, "removed"),
            Err(err) => warn!(error = %err, what, "cannot flush after removing"),
        },
        Err(err) => warn!(error = %err, what, "cannot remove"),
    }
}

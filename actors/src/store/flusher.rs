//! Group commit: concurrent callers of `flush` share one commit.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Result;
use crate::metrics::metrics;

/// Group commit over a backend's commit (sled's flush, a PostgreSQL
/// transaction): one commit runs at a time, and callers that arrive while it
/// runs share the next.
#[derive(Default)]
pub(super) struct Flusher {
    /// Taken by each caller after its writes.
    tickets: AtomicU64,
    /// Held while committing; holds the last ticket made durable.
    durable: tokio::sync::Mutex<u64>,
}

impl Flusher {
    /// Makes every write made before this call durable, with `commit` (which
    /// makes durable every write made before it is called).
    pub(super) async fn flush<F: Future<Output = Result<()>>>(
        &self,
        commit: impl FnOnce() -> F,
    ) -> Result<()> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut durable = self.durable.lock().await;
        if *durable >= ticket {
            // A commit that began after this caller's writes has finished.
            return Ok(());
        }
        // Every ticket up to here was taken after its writes, so this commit
        // covers them all.
        let covered = self.tickets.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        commit().await?;
        metrics()
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        *durable = covered;
        Ok(())
    }
}

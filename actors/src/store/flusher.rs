//! Group commit: concurrent callers of `flush` share one sled flush.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Result, StoreError};
use crate::metrics::metrics;

/// Group commit over sled's flush. sled 0.34 runs each `flush_async` on its
/// own thread pool, where many at once can take every thread and deadlock
/// waiting for the log write that needs one; so one flush runs at a time, on
/// tokio's blocking pool (leaving sled's pool to sled's own I/O), and callers that
/// arrive while it runs share the next one.
#[derive(Default)]
pub(super) struct Flusher {
    /// Taken by each caller after its writes.
    tickets: AtomicU64,
    /// Held while flushing; holds the last ticket made durable.
    durable: tokio::sync::Mutex<u64>,
}

impl Flusher {
    pub(super) async fn flush(&self, db: &sled::Db) -> Result<()> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut durable = self.durable.lock().await;
        if *durable >= ticket {
            // A flush that began after this caller's writes has finished.
            return Ok(());
        }
        // Every ticket up to here was taken after its writes, so this flush
        // covers them all.
        let covered = self.tickets.load(Ordering::SeqCst);
        let db = db.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|_| StoreError::FlushAborted)??;
        metrics()
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        *durable = covered;
        Ok(())
    }
}

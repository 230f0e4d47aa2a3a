//! Pruning: what is older than the retention, or spent, leaves the store.

use std::time::Duration;

use super::Result;
use super::kv::KvStore;
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::mail::outbox::MailFailure;
use crate::request::{AccessRequest, Decision};
use crate::rules::Bucket;
use crate::session::ClientSession;

impl KvStore {
    /// Removes audit entries, ended sessions, decided requests and mail
    /// failures from before `cutoff`, failure buckets drained by `now` over
    /// `window`, and `mailed` marks of OTPs expired by `now`; how many went.
    pub(super) async fn prune_older(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        window: Duration,
    ) -> Result<usize> {
        // Audit keys begin with the time: the oldest come first.
        let mut removed = self
            .audit
            .remove_while(|entry: &AuditEntry| entry.at < cutoff)
            .await?;
        removed += self
            .sessions
            .remove_where(|s: &ClientSession| s.ended.is_some_and(|(at, _)| at < cutoff))
            .await?;
        let over = |request: &AccessRequest| {
            request.decision != Decision::Pending && request.created < cutoff
        };
        for (_, request) in self.requests.scan::<AccessRequest>("").await? {
            if over(&request) {
                self.request_index.remove(request.id.to_be_bytes())?;
            }
        }
        removed += self.requests.remove_where(over).await?;
        removed += self
            .mail_failures
            .remove_where(|f: &MailFailure| f.at < cutoff)
            .await?;
        removed += self
            .failures
            .remove_where(|bucket: &Bucket| bucket.drained_by(now, window))
            .await?;
        removed += self
            .mailed
            .remove_where(|valid_until: &Timestamp| *valid_until <= now)
            .await?;
        Ok(removed)
    }
}

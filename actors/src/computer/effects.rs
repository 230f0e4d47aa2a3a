//! Applying what a rule decided: its effects written in one batch (slots,
//! requests, mail queued, audit entries, failures counted), then made durable
//! before anyone is told.

use std::sync::Arc;

use crate::audit::{Action, AuditEntry, Who};
use crate::clock::Timestamp;
use crate::mail::{MailKind, OutboxEntry};
use crate::metrics::metrics;
use crate::rules::{Bucket, Effect, Failure, LimitKey};
use crate::settings::SystemSettings;

use super::{ComputerState, Result};

impl ComputerState {
    pub(super) fn now(&self) -> Timestamp {
        self.svc.clock.now()
    }

    pub(super) fn audit(&self, who: &Who, action: Action, outcome: &str) -> Result<()> {
        Ok(self.svc.store.append_audit(&AuditEntry {
            at: self.now(),
            who: who.clone(),
            computer: Some(self.id.to_string()),
            action,
            outcome: outcome.to_owned(),
        })?)
    }

    /// The failures counted against each of `keys`, for the rules to check.
    pub(super) async fn failures(
        &self,
        keys: impl IntoIterator<Item = LimitKey>,
    ) -> Result<Vec<(LimitKey, Bucket)>> {
        let keys: Vec<LimitKey> = keys.into_iter().collect();
        let names: Vec<String> = keys.iter().map(LimitKey::key).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let buckets = self.svc.store.failures(&names).await?;
        Ok(keys.into_iter().zip(buckets).collect())
    }

    /// Writes what a rule decided; [`ComputerState::commit`] makes it durable.
    pub(super) async fn apply(
        &mut self,
        settings: &SystemSettings,
        effects: Vec<Effect>,
    ) -> Result<()> {
        let now = self.now();
        let store = Arc::clone(&self.svc.store);
        for effect in effects {
            match effect {
                Effect::SaveSlot(os_user) => {
                    if let Some(slot) = self.logins.slots.get(&os_user) {
                        store.put_slot(&self.id, &os_user, slot)?;
                    }
                }
                Effect::SaveRequest(request) => store.put_request(&request)?,
                Effect::QueueMail { to, kind, request } => self.queue(&to, kind, request).await?,
                Effect::Audit {
                    who,
                    action,
                    outcome,
                } => self.audit(&who, action, &outcome)?,
                Effect::Count(key) => {
                    let (limit, window) = (key.limit(settings), settings.failure_window);
                    let failure = Failure {
                        at: now,
                        limit,
                        window,
                    };
                    store.count_failure(&key.key(), failure)?;
                }
                // Counted once the turn is durable (see commit).
                Effect::Tally(tally) => self.tallies.push(tally),
            }
        }
        Ok(())
    }

    pub(super) async fn queue(
        &mut self,
        to: &str,
        kind: MailKind,
        request: Option<u64>,
    ) -> Result<()> {
        let now = self.now();
        let entry = OutboxEntry {
            id: self.svc.store.next_id().await?,
            to: to.to_owned(),
            queued: now,
            kind,
            request,
            attempts: 0,
            next_try: now,
        };
        self.svc.store.queue_mail(&entry)?;
        self.mail_queued = true;
        Ok(())
    }

    /// Makes every change so far durable, then counts what the turn's rules
    /// tallied and lets the mailer send what was queued.
    pub(super) async fn commit(&mut self) -> Result<()> {
        let tallies = std::mem::take(&mut self.tallies);
        self.svc.store.flush().await?;
        for tally in tallies {
            metrics().tally(tally);
        }
        if std::mem::take(&mut self.mail_queued)
            && let Some(mailer) = &self.svc.mailer
        {
            mailer.wake();
        }
        Ok(())
    }
}

//! The [`Mailer`] actor: delivers the outbox through a [`MailTransport`] (a folder
//! of `.eml` files, or SMTP), oldest first, in batches, retrying with backoff,
//! and removes a message only once the transport has kept it. With several
//! nodes over one database, one node's mailer sends at a time (see
//! [`Store::sender`]); the others look every second whether it is gone, and
//! the one that takes over first queues again what a crash lost.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::audit::{Action, AuditEntry, Who};
use crate::backoff::Backoff;
use crate::clock::{Clock, Timestamp};
use crate::mail::outbox::{MailFailure, MailKind, OutboxEntry};
use crate::mail::render::Mail;
use crate::mailbox::Waiting;
use crate::metrics::metrics;
use crate::otp::OtpKeys;
use crate::rules;
use crate::store::{Store, StoreError};
use crate::timer::Timer;

/// Why a transport did not take a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Trying again later may work.
    #[error("temporary delivery failure: {0}")]
    Temporary(String),
    /// Trying again will not help.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

/// A future returned by a [`MailTransport`].
/// On success, what the transport said (the relay's reply, say).
pub type DeliveryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, DeliveryError>> + Send + 'a>>;

/// A future returned by [`MailTransport::deliver_all`]: one answer per
/// message, in order.
pub type BatchFuture<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<String, DeliveryError>>> + Send + 'a>>;

/// Where messages go: a folder of `.eml` files, or an SMTP relay.
pub trait MailTransport: Send + Sync + 'static {
    /// Hands `mail` over; `Ok` means it was taken and kept (a relay answered
    /// 250, a file is durable): it must not be sent again. Carries what the
    /// transport said.
    fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a>;

    /// Hands a batch over, as [`deliver`] does each message; answers in
    /// the same order. By default all at once, each on its own; a transport
    /// that can keep a batch more cheaply than its messages one by one (one
    /// sync for many files) does so here.
    ///
    /// [`deliver`]: MailTransport::deliver
    fn deliver_all<'a>(&'a self, mails: &'a [Mail]) -> BatchFuture<'a> {
        Box::pin(futures_util::future::join_all(
            mails.iter().map(|mail| self.deliver(mail)),
        ))
    }

    /// How many messages it takes at once (at least 1).
    fn batch(&self) -> usize {
        DEFAULT_BATCH
    }
}

/// How the mailer spaces out retries of one message: from 2 seconds, doubling,
/// up to 10 minutes.
pub const BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(2),
    max: Duration::from_secs(10 * 60),
};
/// Tries of one message before it is given up, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// What the [`Mailer`] is asked to do.
pub enum MailerMsg {
    /// Something was queued, or a retry is due: deliver what is due.
    Wake,
}

/// Delivers the outbox through a [`MailTransport`], oldest first, in batches of
/// [`MailTransport::batch`] messages at a time,
/// retrying with backoff while the relay is unavailable.
pub struct Mailer;

/// What the [`Mailer`] is started with.
pub struct MailerArgs {
    /// Where the outbox is.
    pub store: Arc<dyn Store>,
    /// Where messages go.
    pub transport: Arc<dyn MailTransport>,
    /// Opens the OTPs in OTP messages.
    pub keys: Arc<OtpKeys>,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// The host name in Message-IDs.
    pub host: String,
    /// Where the Management Tool is, for the links in approvers' mail.
    pub management_url: String,
    /// Tries of one message before it is given up.
    pub max_attempts: u32,
    /// Whether a wake-up from a [`MailerHandle`] waits; freed as each is handled.
    pub waiting: Waiting,
}

/// How the computers' actors wake the [`Mailer`] when they queued mail: at most
/// one wake-up waits in its mailbox, however much is queued meanwhile.
#[derive(Clone)]
pub struct MailerHandle {
    actor: ActorRef<MailerMsg>,
    waiting: Waiting,
}

impl MailerHandle {
    /// The handle of `actor`, started with `waiting` in its [`MailerArgs`].
    pub fn new(actor: ActorRef<MailerMsg>, waiting: Waiting) -> Self {
        Self { actor, waiting }
    }

    /// Wakes the mailer, unless a wake-up waits already. A mailer that is gone
    /// finds the queue when it starts again.
    pub fn wake(&self) {
        if self.waiting.take() && self.actor.cast(MailerMsg::Wake).is_err() {
            self.waiting.handled();
        }
    }
}

/// The [`Mailer`]'s state.
pub struct MailerState {
    args: MailerArgs,
    /// The timer for the next retry; cancelled when the state drops.
    timer: Timer<MailerMsg>,
    /// Whether this node sent the mail when last woken (see
    /// [`Store::sender`]).
    sending: bool,
}

impl Actor for Mailer {
    type Msg = MailerMsg;
    type State = MailerState;
    type Arguments = MailerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MailerMsg>,
        args: MailerArgs,
    ) -> Result<MailerState, ActorProcessingErr> {
        // Whatever was queued before a restart goes out now.
        myself.send_message(MailerMsg::Wake)?;
        Ok(MailerState::new(args))
    }

    async fn handle(
        &self,
        myself: ActorRef<MailerMsg>,
        message: MailerMsg,
        state: &mut MailerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MailerMsg::Wake => {
                // Before draining: mail queued from now on wakes it again.
                state.args.waiting.handled();
                let next = match state.send_due().await {
                    Ok(next) => next,
                    Err(err) => {
                        tracing::error!(error = %err, "mail outbox unreadable; will retry");
                        Some(state.args.clock.now().after(BACKOFF.max))
                    }
                };
                match next {
                    Some(next) => {
                        let now = state.args.clock.now().unix_millis();
                        let wait = Duration::from_millis(next.unix_millis().saturating_sub(now));
                        state.timer.set(&myself, wait, || MailerMsg::Wake);
                    }
                    None => state.timer.cancel(),
                }
            }
        }
        Ok(())
    }
}

/// Queues again the mail of every live OTP that is neither in the outbox nor
/// recorded as having left it: a person told "sent" gets the mail even if the
/// store lost its outbox entry in a crash. Returns how many were queued again.
async fn requeue_unmailed(args: &MailerArgs) -> Result<usize, StoreError> {
    let now = args.clock.now();
    let mut queued = HashSet::new();
    for entry in args.store.outbox().await? {
        if let MailKind::Otp {
            computer,
            os_user,
            valid_until,
            ..
        } = entry.kind
        {
            queued.insert((computer, os_user, valid_until));
        }
    }
    let mut requeued = 0;
    for (computer, os_user, slot) in args.store.every_slot().await? {
        let Some(otp) = slot.otp.filter(|otp| otp.is_live(now)) else {
            continue;
        };
        let Some(sealed) = otp.sealed() else {
            continue;
        };
        let key = (computer, os_user, otp.valid_until);
        if queued.contains(&key)
            || args.store.mailed(&key.0, &key.1).await? == Some(otp.valid_until)
        {
            continue;
        }
        let (computer, os_user, valid_until) = key;
        tracing::error!(%computer, "the mail of a live OTP was neither queued nor sent; queued again");
        let entry = OutboxEntry {
            id: args.store.next_id().await?,
            to: otp.email.clone(),
            queued: now,
            kind: rules::otp_mail(&computer, &os_user, sealed.to_vec(), valid_until),
            request: otp.origin.request(),
            attempts: 0,
            next_try: now,
        };
        args.store.queue_mail(&entry)?;
        args.store.append_audit(&AuditEntry {
            at: now,
            who: Who::Server,
            computer: Some(computer.to_string()),
            action: Action::Mail,
            outcome: format!(
                "message {} to {}: queued again at start, the OTP's mail was lost",
                entry.id, entry.to
            ),
        })?;
        requeued += 1;
    }
    if requeued > 0 {
        args.store.flush().await?;
    }
    Ok(requeued)
}

/// How often a node whose mailer does not send looks whether the one that
/// did is gone.
const SENDER_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the sending mailer looks at the outbox unwoken.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How many messages the [`Mailer`] hands to a transport at once unless it says
/// otherwise: a relay should not see more connections from one client.
pub const DEFAULT_BATCH: usize = 4;

/// What became of one message handed to the transport.
enum Settled {
    /// Delivered, or given up for good: it has left the outbox.
    Done,
    /// The transport failed for now: tried again at this time.
    Retry(Timestamp),
}

impl MailerState {
    fn new(args: MailerArgs) -> Self {
        Self {
            args,
            timer: Timer::idle(),
            sending: false,
        }
    }

    /// Delivers what is due if this node is the one that sends mail (see
    /// [`Store::sender`]), having first queued again, when it has just
    /// become the sender, what a crash lost. Returns when to look again:
    /// soon while another node sends, and every [`SWEEP_EVERY`] at most.
    async fn send_due(&mut self) -> Result<Option<Timestamp>, StoreError> {
        let sender = match self.args.store.sender().await {
            Ok(sender) => sender,
            Err(err) => {
                // Not known: looked at again soon, as by a node that does
                // not send (and what a crash lost queued again if it does).
                tracing::warn!(error = %err, "cannot tell whether this node sends the mail");
                false
            }
        };
        if !sender {
            self.sending = false;
            return Ok(Some(self.args.clock.now().after(SENDER_CHECK_EVERY)));
        }
        if !self.sending {
            requeue_unmailed(&self.args).await?;
            self.sending = true;
        }
        // Mail another node queued without a word (it took itself for the
        // sender a moment too long) is found within this.
        let sweep = self.args.clock.now().after(SWEEP_EVERY);
        Ok(Some(
            self.drain().await?.map_or(sweep, |next| next.min(sweep)),
        ))
    }

    /// Delivers every message that is due, oldest first, in concurrent batches
    /// of [`MailTransport::batch`]; each batch's bookkeeping (audit, removal
    /// from the outbox) is made durable with one flush. Stops after a batch in
    /// which a delivery failed for now (the relay is likely down for all of
    /// them). Returns when the next try is due, if anything is left.
    async fn drain(&mut self) -> Result<Option<Timestamp>, StoreError> {
        let args = &self.args;
        let mut next: Option<Timestamp> = None;
        let mut later = |at: Timestamp| next = Some(next.map_or(at, |n: Timestamp| n.min(at)));
        let now = args.clock.now();
        let (due, waiting): (Vec<_>, Vec<_>) = args
            .store
            .outbox()
            .await?
            .into_iter()
            .partition(|entry| entry.next_try <= now);
        let queued = due.len() + waiting.len();
        metrics()
            .mail_queue
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        waiting.iter().for_each(|entry| later(entry.next_try));
        let mut due = due.into_iter().peekable();
        while due.peek().is_some() {
            let size = args.transport.batch().max(1);
            let batch: Vec<OutboxEntry> = due.by_ref().take(size).collect();
            let mut relay_down = false;
            let delivered = self.deliver(batch).await;
            for (mut entry, delivered) in delivered {
                if let Settled::Retry(at) = self.settle(&mut entry, delivered)? {
                    later(at);
                    relay_down = true;
                }
            }
            self.args.store.flush().await?;
            if relay_down {
                break;
            }
        }
        Ok(next)
    }

    /// Hands `batch` to the transport, all at once; answers in the same order.
    async fn deliver(
        &self,
        batch: Vec<OutboxEntry>,
    ) -> Vec<(OutboxEntry, Result<String, DeliveryError>)> {
        let args = &self.args;
        let mut mails = Vec::with_capacity(batch.len());
        let opened: Vec<bool> = batch
            .iter()
            .map(|entry| {
                let mail = entry.render(&args.keys, &args.host, &args.management_url);
                mail.map(|mail| mails.push(mail)).is_some()
            })
            .collect();
        let started = std::time::Instant::now();
        // In a task of its own: a transport that panics does not take the
        // mailer down; the batch is then tried one message at a time, each
        // on its own, so that only the message it panics on fails.
        let mails = Arc::new(mails);
        let transport = Arc::clone(&args.transport);
        let together = {
            let mails = Arc::clone(&mails);
            tokio::spawn(async move { transport.deliver_all(&mails).await })
        };
        let said = match together.await {
            Ok(said) => said,
            Err(err) => {
                tracing::error!(error = %err, "the mail transport failed on a batch; its messages go one by one");
                let mut said = Vec::with_capacity(mails.len());
                for i in 0..mails.len() {
                    let (transport, mails) = (Arc::clone(&args.transport), Arc::clone(&mails));
                    let one = tokio::spawn(async move { transport.deliver(&mails[i]).await });
                    said.push(
                        one.await
                            .unwrap_or_else(|err| Err(DeliveryError::Temporary(err.to_string()))),
                    );
                }
                said
            }
        };
        let mut delivered = said.into_iter();
        // Each message waited for the whole batch.
        let took = started.elapsed().as_secs_f64();
        batch
            .into_iter()
            .zip(opened)
            .map(|(entry, opened)| {
                let result = if opened {
                    metrics().mail_send_seconds.observe(took);
                    delivered.next().unwrap_or_else(|| {
                        Err(DeliveryError::Temporary(
                            "the transport did not answer".into(),
                        ))
                    })
                } else {
                    Err(DeliveryError::Permanent(
                        "the OTP can no longer be opened".into(),
                    ))
                };
                (entry, result)
            })
            .collect()
    }

    /// Records what became of `entry`: retried later, given up, or delivered.
    /// The caller flushes.
    fn settle(
        &self,
        entry: &mut OutboxEntry,
        delivered: Result<String, DeliveryError>,
    ) -> Result<Settled, StoreError> {
        let args = &self.args;
        let now = args.clock.now();
        let outcome = match delivered {
            Ok(said) => {
                metrics().mail_sent.inc();
                format!("delivered ({said})")
            }
            Err(DeliveryError::Permanent(reason)) => self.give_up(entry, reason)?,
            Err(DeliveryError::Temporary(reason)) => {
                entry.attempts += 1;
                if entry.attempts >= args.max_attempts {
                    let reason = format!("gave up after {} tries: {reason}", entry.attempts);
                    self.give_up(entry, reason)?
                } else {
                    metrics().mail_retried.inc();
                    entry.next_try = now.after(BACKOFF.pause(entry.attempts));
                    tracing::warn!(message = entry.id, attempts = entry.attempts, %reason, "mail delivery failed; will retry");
                    args.store.queue_mail(entry)?;
                    return Ok(Settled::Retry(entry.next_try));
                }
            }
        };
        args.store.append_audit(&AuditEntry {
            at: now,
            who: Who::Server,
            computer: entry.kind.computer().map(ToString::to_string),
            action: Action::Mail,
            outcome: format!("message {} to {}: {outcome}", entry.id, entry.to),
        })?;
        if let MailKind::Otp {
            computer,
            os_user,
            valid_until,
            ..
        } = &entry.kind
        {
            // Before the removal: a crash between the two sends it twice, never
            // not at all.
            args.store.put_mailed(computer, os_user, *valid_until)?;
        }
        args.store.remove_outbox(entry.id)?;
        metrics().mail_queue.dec();
        Ok(Settled::Done)
    }

    /// Records that `entry` will not be delivered, for the administrators; returns
    /// the outcome for the audit log.
    fn give_up(&self, entry: &OutboxEntry, reason: String) -> Result<String, StoreError> {
        tracing::error!(message = entry.id, %reason, "mail delivery failed for good");
        metrics().mail_given_up.inc();
        let outcome = format!("failed: {reason}");
        self.args.store.put_mail_failure(&MailFailure {
            id: entry.id,
            to: entry.to.clone(),
            at: self.args.clock.now(),
            reason,
            computer: entry.kind.computer().cloned(),
            request: entry.request,
        })?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;

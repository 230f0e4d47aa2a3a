//! Mail: the durable outbox, the messages it holds, and the [`Mailer`] actor that
//! hands them to a [`MailTransport`] (a folder of `.eml` files, or SMTP).
//!
//! An entry is written to the outbox before anyone is told a message is on its
//! way, and removed only once the transport has taken it. An OTP travels in the
//! outbox sealed, never in the clear; it is opened only to render the message.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

use crate::audit::{Action, AuditEntry};
use crate::clock::{Clock, Timestamp};
use crate::id::ComputerId;
use crate::otp::OtpKeys;
use crate::store::{Store, StoreError};
use crate::timer::Timer;

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Unique across the server's life; also the message's Message-ID.
    pub id: u64,
    /// The recipient.
    pub to: String,
    /// When it was queued.
    pub queued: Timestamp,
    /// What it says.
    pub kind: MailKind,
    /// The access request it belongs to, if any.
    pub request: Option<u64>,
    /// Failed deliveries so far.
    pub attempts: u32,
    /// Not to be tried again before this.
    pub next_try: Timestamp,
}

/// A message that could not be delivered, for the administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailFailure {
    /// The message's id.
    pub id: u64,
    /// The recipient.
    pub to: String,
    /// When it was given up.
    pub at: Timestamp,
    /// What the relay (or the renderer) said.
    pub reason: String,
    /// The computer it concerned.
    pub computer: Option<ComputerId>,
    /// The access request it belonged to, if any.
    pub request: Option<u64>,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailKind {
    /// An OTP for a person.
    Otp {
        /// The computer it is valid on.
        computer: ComputerId,
        /// The OS user it is valid for.
        os_user: String,
        /// The OTP, sealed with the OTP keys.
        sealed: Vec<u8>,
        /// Until when it is valid.
        valid_until: Timestamp,
    },
    /// An access request, for an approver.
    Approval {
        /// The approver's login name: the links in the message act for them.
        approver: String,
        /// The request.
        request: u64,
        /// The computer asked from.
        computer: ComputerId,
        /// The OS user there.
        os_user: String,
        /// The address the person gave.
        requester: String,
        /// Whether emergency access was asked for.
        emergency: bool,
        /// When the request expires.
        expires: Timestamp,
    },
    /// The person's request was denied or expired.
    Outcome {
        /// The computer asked from.
        computer: ComputerId,
        /// `true` when denied, `false` when it expired.
        denied: bool,
        /// The approver's comment, if any.
        comment: Option<String>,
    },
}

/// A message ready for a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Unique per message.
    pub message_id: String,
    /// The recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// When it was queued.
    pub date: Timestamp,
    /// The plain-text body.
    pub body: String,
    /// The same, as HTML.
    pub html: String,
}

/// What a message says, laid out once for both its text and its HTML part.
struct Content {
    subject: String,
    intro: String,
    /// Shown large: the OTP.
    highlight: Option<String>,
    facts: Vec<(&'static str, String)>,
    outro: Vec<String>,
}

impl Content {
    fn text(&self) -> String {
        let mut text = format!("{}\n\n", self.intro);
        if let Some(highlight) = &self.highlight {
            text.push_str(&format!("    {highlight}\n\n"));
        }
        for (label, value) in &self.facts {
            text.push_str(&format!("{label}: {value}\n"));
        }
        for line in &self.outro {
            text.push_str(&format!("\n{line}"));
        }
        text.push('\n');
        text
    }

    fn html(&self) -> String {
        let mut html = format!(
            "<!DOCTYPE html><html><body style=\"font-family:sans-serif\"><p>{}</p>",
            escape(&self.intro)
        );
        if let Some(highlight) = &self.highlight {
            html.push_str(&format!(
                "<p style=\"font-size:28px;font-weight:bold;letter-spacing:4px\">{}</p>",
                escape(highlight)
            ));
        }
        html.push_str("<table>");
        for (label, value) in &self.facts {
            html.push_str(&format!(
                "<tr><td>{}</td><td><b>{}</b></td></tr>",
                escape(label),
                escape(value)
            ));
        }
        html.push_str("</table>");
        for line in &self.outro {
            html.push_str(&format!("<p>{}</p>", escape(line)));
        }
        html.push_str("</body></html>");
        html
    }
}

/// `text` with the characters HTML gives meaning to escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl OutboxEntry {
    /// Renders the message. `None` when an OTP can no longer be opened (the server
    /// secret changed): such a message cannot be sent.
    pub fn render(&self, keys: &OtpKeys, host: &str, management_url: &str) -> Option<Mail> {
        let content = match &self.kind {
            MailKind::Otp {
                computer,
                os_user,
                sealed,
                valid_until,
            } => {
                let code = keys.open(computer, os_user, sealed)?;
                Content {
                    subject: format!("Your one-time password for {computer}"),
                    intro: "Your one-time password is:".into(),
                    highlight: Some(code.expose().to_owned()),
                    facts: vec![
                        ("Client computer", computer.to_string()),
                        ("User", os_user.clone()),
                        ("Valid until", rfc3339(*valid_until)),
                    ],
                    outro: vec![
                        "It works once, only on this computer and for this user.".into(),
                        "Nobody from IT will ever ask you for this code.".into(),
                    ],
                }
            }
            MailKind::Approval {
                approver,
                request,
                computer,
                os_user,
                requester,
                emergency,
                expires,
            } => {
                let link = |approve| {
                    let token = keys.decision_token(*request, approve, approver);
                    format!("{management_url}/requests/decide?token={token}")
                };
                let kind = if *emergency {
                    "EMERGENCY access request"
                } else {
                    "Access request"
                };
                Content {
                    subject: format!("{kind} for {computer} from {requester}"),
                    intro: format!("{kind} #{request}"),
                    highlight: None,
                    facts: vec![
                        ("From", requester.clone()),
                        ("Client computer", computer.to_string()),
                        ("User", os_user.clone()),
                        ("Emergency", if *emergency { "yes" } else { "no" }.into()),
                        ("Expires", rfc3339(*expires)),
                    ],
                    outro: vec![
                        format!("Approve: {}", link(true)),
                        format!("Deny: {}", link(false)),
                        "Each link works once, until the request expires.".into(),
                    ],
                }
            }
            MailKind::Outcome {
                computer,
                denied,
                comment,
            } => {
                let what = if *denied { "denied" } else { "expired" };
                Content {
                    subject: format!("Your access request for {computer} was {what}"),
                    intro: format!("Your access request for {computer} was {what}."),
                    highlight: None,
                    facts: comment
                        .iter()
                        .map(|comment| ("Comment", comment.clone()))
                        .collect(),
                    outro: Vec::new(),
                }
            }
        };
        Some(Mail {
            message_id: format!("<{}.{}@{host}>", self.id, self.queued.unix_millis()),
            to: self.to.clone(),
            subject: content.subject.clone(),
            date: self.queued,
            body: content.text(),
            html: content.html(),
        })
    }
}

/// Whether `text` can be used as an email address: a local part, one `@`, a
/// domain (dotted or not: on-premises mail often uses internal names), at most
/// 254 characters, no spaces or control characters. The one rule for every
/// address the server accepts, typed by people or set by administrators.
pub fn is_email_address(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && text.len() <= 254
                && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// A UTC timestamp as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(at: Timestamp) -> String {
    let secs = at.unix_millis() / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

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

/// A future returned by [`MailTransport::sync`].
pub type SyncFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>>;

/// Where messages go: a folder of `.eml` files, or an SMTP relay.
pub trait MailTransport: Send + Sync + 'static {
    /// Hands `mail` over; `Ok` means it was taken and, once [`sync`] has
    /// returned, must not be sent again. Carries what the transport said.
    ///
    /// [`sync`]: MailTransport::sync
    fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a>;

    /// Makes every message taken so far durable. The [`Mailer`] calls it once
    /// per batch, before it forgets the batch; a relay that answered 250 has
    /// nothing left to do.
    fn sync(&self) -> SyncFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    /// How many messages it takes at once (at least 1).
    fn batch(&self) -> usize {
        DEFAULT_BATCH
    }
}

/// The first pause after a failed delivery; it doubles with every failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// The longest pause between two tries of one message.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10 * 60);
/// Tries of one message before it is given up, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// The pause after failure number `attempts` (from 1): exponential, capped, and
/// drawn from its upper half so that retries spread out.
pub fn backoff(attempts: u32) -> Duration {
    let window = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(BACKOFF_MAX);
    let mut byte = [0u8; 1];
    // Without randomness the pause is simply the whole window.
    let fraction = match aws_lc_rs::rand::fill(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0,
        Err(_) => 1.0,
    };
    window / 2 + window.mul_f64(fraction / 2.0)
}

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
}

/// The [`Mailer`]'s state.
pub struct MailerState {
    args: MailerArgs,
    /// The timer for the next retry; cancelled when the state drops.
    timer: Timer<MailerMsg>,
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
        Ok(MailerState {
            args,
            timer: Timer::idle(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MailerMsg>,
        message: MailerMsg,
        state: &mut MailerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MailerMsg::Wake => {
                let next = match state.drain().await {
                    Ok(next) => next,
                    Err(err) => {
                        tracing::error!(error = %err, "mail outbox unreadable; will retry");
                        Some(state.args.clock.now().after(BACKOFF_MAX))
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
            .outbox()?
            .into_iter()
            .partition(|entry| entry.next_try <= now);
        waiting.iter().for_each(|entry| later(entry.next_try));
        let mut due = due.into_iter().peekable();
        while due.peek().is_some() {
            let size = args.transport.batch().max(1);
            let batch: Vec<OutboxEntry> = due.by_ref().take(size).collect();
            let mut relay_down = false;
            let mut delivered = self.deliver(batch).await;
            if let Err(err) = self.args.transport.sync().await {
                // Nothing of this batch is known to be kept: it is tried again.
                for (_, result) in &mut delivered {
                    if result.is_ok() {
                        *result = Err(DeliveryError::Temporary(format!("not kept: {err}")));
                    }
                }
            }
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
        let deliveries: Vec<_> = batch
            .iter()
            .map(|entry| {
                let mail = entry.render(&args.keys, &args.host, &args.management_url);
                let transport = Arc::clone(&args.transport);
                tokio::spawn(async move {
                    match mail {
                        Some(mail) => transport.deliver(&mail).await,
                        None => Err(DeliveryError::Permanent(
                            "the OTP can no longer be opened".into(),
                        )),
                    }
                })
            })
            .collect();
        let mut results = Vec::with_capacity(batch.len());
        for (entry, delivery) in batch.into_iter().zip(deliveries) {
            let delivered = delivery
                .await
                .unwrap_or_else(|err| Err(DeliveryError::Temporary(err.to_string())));
            results.push((entry, delivered));
        }
        results
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
            Ok(said) => format!("delivered ({said})"),
            Err(DeliveryError::Permanent(reason)) => self.give_up(entry, reason)?,
            Err(DeliveryError::Temporary(reason)) => {
                entry.attempts += 1;
                if entry.attempts >= args.max_attempts {
                    let reason = format!("gave up after {} tries: {reason}", entry.attempts);
                    self.give_up(entry, reason)?
                } else {
                    entry.next_try = now.after(backoff(entry.attempts));
                    tracing::warn!(message = entry.id, attempts = entry.attempts, %reason, "mail delivery failed; will retry");
                    args.store.queue_mail(entry)?;
                    return Ok(Settled::Retry(entry.next_try));
                }
            }
        };
        args.store.append_audit(&AuditEntry {
            at: now,
            who: "server".into(),
            computer: entry.kind.computer().map(ToString::to_string),
            action: Action::Mail,
            outcome: format!("message {} to {}: {outcome}", entry.id, entry.to),
        })?;
        args.store.remove_outbox(entry.id)?;
        Ok(Settled::Done)
    }

    /// Records that `entry` will not be delivered, for the administrators; returns
    /// the outcome for the audit log.
    fn give_up(&self, entry: &OutboxEntry, reason: String) -> Result<String, StoreError> {
        tracing::error!(message = entry.id, %reason, "mail delivery failed for good");
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

impl MailKind {
    /// The computer a message concerns.
    pub fn computer(&self) -> Option<&ComputerId> {
        match self {
            Self::Otp { computer, .. }
            | Self::Approval { computer, .. }
            | Self::Outcome { computer, .. } => Some(computer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::Code;

    #[test]
    fn backoff_doubles_within_jitter_up_to_the_cap() {
        for attempts in 1..20 {
            let window = BACKOFF_BASE
                .saturating_mul(2u32.saturating_pow(attempts - 1))
                .min(BACKOFF_MAX);
            let pause = backoff(attempts);
            assert!(
                pause >= window / 2 && pause <= window,
                "{attempts}: {pause:?}"
            );
        }
    }

    #[test]
    fn html_parts_escape_what_people_typed() {
        let entry = OutboxEntry {
            id: 1,
            to: "x@example.com".into(),
            queued: Timestamp::from_unix_millis(0),
            kind: MailKind::Outcome {
                computer: "ws-1".parse().unwrap(),
                denied: true,
                comment: Some("<script>alert('x')</script> & co".into()),
            },
            request: Some(7),
            attempts: 0,
            next_try: Timestamp::from_unix_millis(0),
        };
        let mail = entry
            .render(&OtpKeys::derive(&[1; 32]), "h", "https://m")
            .unwrap();
        assert!(
            mail.html
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co")
        );
        assert!(!mail.html.contains("<script>"));
        assert!(mail.body.contains("<script>"), "the text part is text");
    }

    #[test]
    fn one_rule_tells_addresses_from_other_text() {
        for good in ["alice@example.com", "admin@localhost", "a.b+c@corp"] {
            assert!(is_email_address(good), "{good}");
        }
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@.com",
            "alice@example.",
            "a@b@c",
            "alice @example.com",
            "alice@exa\nmple.com",
        ] {
            assert!(!is_email_address(bad), "{bad:?}");
        }
        assert!(!is_email_address(&format!(
            "{}@example.com",
            "a".repeat(250)
        )));
    }

    #[test]
    fn timestamps_render_as_utc() {
        assert_eq!(
            rfc3339(Timestamp::from_unix_millis(0)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_unix_millis(1_795_929_170_818)),
            "2026-11-29T05:12:50Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_unix_millis(951_782_400_000)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn an_otp_message_carries_the_code_computer_user_and_validity() {
        let keys = OtpKeys::derive(&[1; 32]);
        let computer: ComputerId = "ws-1".parse().unwrap();
        let code = Code::generate(8);
        let entry = OutboxEntry {
            id: 42,
            to: "alice@example.com".into(),
            queued: Timestamp::from_unix_millis(0),
            kind: MailKind::Otp {
                computer: computer.clone(),
                os_user: "alice".into(),
                sealed: keys.seal(&computer, "alice", code.expose()),
                valid_until: Timestamp::from_unix_millis(1_800_000),
            },
            request: None,
            attempts: 0,
            next_try: Timestamp::from_unix_millis(0),
        };
        assert!(
            !format!("{entry:?}").contains(code.expose()),
            "sealed in the outbox"
        );
        let mail = entry.render(&keys, "otp.example.com", "https://m").unwrap();
        assert_eq!(mail.message_id, "<42.0@otp.example.com>");
        assert!(mail.subject.contains("ws-1"));
        for part in [
            code.expose(),
            "ws-1",
            "alice",
            "1970-01-01T00:30:00Z",
            "Nobody",
        ] {
            assert!(mail.body.contains(part), "{part} in {}", mail.body);
        }
        assert!(
            entry
                .render(&OtpKeys::derive(&[2; 32]), "h", "https://m")
                .is_none()
        );
    }
}

#[cfg(test)]
mod mailer_tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::SledStore;

    /// Takes every message; its first sync fails, as a full disk would.
    #[derive(Default)]
    struct Flaky {
        taken: Mutex<Vec<String>>,
        synced_once: AtomicBool,
    }

    impl MailTransport for Flaky {
        fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a> {
            self.taken.lock().unwrap().push(mail.to.clone());
            Box::pin(async { Ok("taken".to_owned()) })
        }

        fn sync(&self) -> SyncFuture<'_> {
            let first = !self.synced_once.swap(true, Ordering::SeqCst);
            Box::pin(async move {
                if first {
                    Err(std::io::Error::other("disk full"))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn entry(id: u64, now: Timestamp) -> OutboxEntry {
        OutboxEntry {
            id,
            to: format!("user{id}@example.com"),
            queued: now,
            kind: MailKind::Outcome {
                computer: "ws-1".parse().unwrap(),
                denied: false,
                comment: None,
            },
            request: None,
            attempts: 0,
            next_try: now,
        }
    }

    #[tokio::test]
    async fn a_batch_leaves_the_outbox_only_once_the_transport_kept_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
        let batch = DEFAULT_BATCH;
        let count = batch as u64 + 3;
        for id in 1..=count {
            store.queue_mail(&entry(id, clock.now())).unwrap();
        }
        let transport = Arc::new(Flaky::default());
        let mut state = MailerState {
            args: MailerArgs {
                store: Arc::clone(&store),
                transport: transport.clone(),
                keys: Arc::new(OtpKeys::derive(&[2; 32])),
                clock: Arc::new(clock.clone()),
                host: "h".into(),
                management_url: "https://m".into(),
                max_attempts: 3,
            },
            timer: Timer::idle(),
        };

        // The first batch is handed over but not kept: it stays, to be retried,
        // and the rest waits for the next round.
        let next = state.drain().await.unwrap();
        assert_eq!(transport.taken.lock().unwrap().len(), batch);
        let left = store.outbox().unwrap();
        assert_eq!(left.len() as u64, count);
        assert!(left.iter().take(batch).all(|e| e.attempts == 1));
        assert!(next.is_some_and(|at| at > clock.now()));

        // Once its retry is due, everything goes.
        clock.advance(BACKOFF_MAX);
        assert_eq!(state.drain().await.unwrap(), None);
        assert!(store.outbox().unwrap().is_empty());
        assert_eq!(
            transport.taken.lock().unwrap().len() as u64,
            batch as u64 + count
        );
    }
}

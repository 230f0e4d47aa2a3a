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

/// How long the mailer waits before trying a failed delivery again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

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
}

impl OutboxEntry {
    /// Renders the message. `None` when an OTP can no longer be opened (the server
    /// secret changed): such a message cannot be sent.
    pub fn render(&self, keys: &OtpKeys, host: &str) -> Option<Mail> {
        let (subject, body) = match &self.kind {
            MailKind::Otp {
                computer,
                os_user,
                sealed,
                valid_until,
            } => {
                let code = keys.open(computer, os_user, sealed)?;
                (
                    format!("Your one-time password for {computer}"),
                    format!(
                        "Your one-time password is: {}\n\n\
                         Client computer: {computer}\n\
                         User: {os_user}\n\
                         Valid until: {}\n\n\
                         It works once, only on this computer and for this user.\n\
                         Nobody from IT will ever ask you for this code.\n",
                        code.expose(),
                        rfc3339(*valid_until)
                    ),
                )
            }
            MailKind::Approval {
                request,
                computer,
                os_user,
                requester,
                emergency,
                expires,
            } => {
                let kind = if *emergency {
                    "EMERGENCY access request"
                } else {
                    "Access request"
                };
                (
                    format!("{kind} for {computer} from {requester}"),
                    format!(
                        "{kind} #{request}\n\n\
                         From: {requester}\n\
                         Client computer: {computer}\n\
                         User: {os_user}\n\
                         Expires: {}\n\n\
                         Approve: otpgate admin requests approve {request}\n\
                         Deny:    otpgate admin requests deny {request}\n",
                        rfc3339(*expires)
                    ),
                )
            }
            MailKind::Outcome {
                computer,
                denied,
                comment,
            } => {
                let what = if *denied { "denied" } else { "expired" };
                let comment = comment
                    .as_deref()
                    .map(|c| format!("Comment: {c}\n"))
                    .unwrap_or_default();
                (
                    format!("Your access request for {computer} was {what}"),
                    format!("Your access request for {computer} was {what}.\n{comment}"),
                )
            }
        };
        Some(Mail {
            message_id: format!("<{}.{}@{host}>", self.id, self.queued.unix_millis()),
            to: self.to.clone(),
            subject,
            date: self.queued,
            body,
        })
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
pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// Where messages go: a folder of `.eml` files, or an SMTP relay.
pub trait MailTransport: Send + Sync + 'static {
    /// Hands `mail` over; `Ok` means it was taken and must not be sent again.
    fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a>;
}

/// What the [`Mailer`] is asked to do.
pub enum MailerMsg {
    /// Something was queued: deliver what is in the outbox.
    Wake,
}

/// Delivers the outbox through a [`MailTransport`], oldest first, one at a time.
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
}

/// The [`Mailer`]'s state.
pub struct MailerState {
    args: MailerArgs,
    /// Whether a retry is already scheduled.
    retrying: bool,
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
            retrying: false,
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
                state.retrying = false;
                if let Err(err) = state.drain().await {
                    tracing::warn!(error = %err, "mail delivery paused; will retry");
                    if !state.retrying {
                        state.retrying = true;
                        myself.send_after(RETRY_AFTER, || MailerMsg::Wake);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why the mailer stopped draining the outbox for now.
#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

impl MailerState {
    /// Delivers every queued message, oldest first, until the outbox is empty or a
    /// delivery fails for now.
    async fn drain(&mut self) -> Result<(), DrainError> {
        let args = &self.args;
        for entry in args.store.outbox()? {
            let outcome = match entry.render(&args.keys, &args.host) {
                Some(mail) => match args.transport.deliver(&mail).await {
                    Ok(()) => "delivered".to_owned(),
                    Err(DeliveryError::Permanent(reason)) => format!("failed: {reason}"),
                    Err(err) => return Err(err.into()),
                },
                None => "failed: the OTP can no longer be opened".to_owned(),
            };
            args.store.append_audit(&AuditEntry {
                at: args.clock.now(),
                who: "server".into(),
                computer: entry.kind.computer().map(ToString::to_string),
                action: Action::Mail,
                outcome: format!("message {} to {}: {outcome}", entry.id, entry.to),
            })?;
            args.store.remove_outbox(entry.id)?;
        }
        Ok(())
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
        };
        assert!(
            !format!("{entry:?}").contains(code.expose()),
            "sealed in the outbox"
        );
        let mail = entry.render(&keys, "otp.example.com").unwrap();
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
        assert!(entry.render(&OtpKeys::derive(&[2; 32]), "h").is_none());
    }
}

//! The outbox's records: a message waiting to be delivered, what it says, and a
//! message given up on. An entry is written to the outbox before anyone is told
//! a message is on its way. An OTP travels in the outbox sealed, never in the
//! clear.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::ComputerId;
use crate::request::Refusal;

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
        /// Denied, or expired.
        refusal: Refusal,
        /// The approver's comment, if any.
        comment: Option<String>,
    },
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

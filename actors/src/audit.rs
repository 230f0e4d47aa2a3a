//! The audit log: one entry for every decision, append-only.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// One audit entry: who did what, on which computer, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at: Timestamp,
    /// Who: an OS user on a computer, an internal user, or the server itself.
    pub who: String,
    /// The computer concerned, if any.
    pub computer: Option<String>,
    /// What was done.
    pub action: Action,
    /// How it ended.
    pub outcome: String,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// A person asked for an OTP.
    Request,
    /// An approver approved an access request.
    Approve,
    /// An approver denied an access request.
    Deny,
    /// An access request or OTP expired.
    Expire,
    /// An administrator generated an OTP without a request.
    Generate,
    /// The live OTP was emailed again.
    Resend,
    /// A typed OTP was checked.
    Verify,
    /// An OTP was locked after too many wrong attempts.
    Lock,
    /// A client session started.
    SessionStart,
    /// A client session ended.
    SessionEnd,
    /// A message was handed to the mail transport.
    Mail,
    /// An administrator changed settings, a client, a group or a user.
    Configure,
    /// A member of a computer's exempt group logged in without an OTP.
    Exempt,
    /// Someone signed in to the web Management Tool, or was refused.
    SignIn,
    /// Something befell a terminal recording (output lost on the client).
    Record,
}

impl Action {
    /// Its name, as the audit log shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Expire => "expire",
            Self::Generate => "generate",
            Self::Resend => "resend",
            Self::Verify => "verify",
            Self::Lock => "lock",
            Self::SessionStart => "session_start",
            Self::SessionEnd => "session_end",
            Self::Mail => "mail",
            Self::Configure => "configure",
            Self::Exempt => "exempt",
            Self::SignIn => "sign_in",
            Self::Record => "record",
        }
    }
}

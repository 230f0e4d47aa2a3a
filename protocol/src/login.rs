//! The login prompt's requests and their answers, as they travel from the prompt
//! to its agent (without the OS user, which the agent reads from the socket) and
//! from the agent to the server (with it).
//!
//! Times are milliseconds since the Unix epoch; durations are seconds.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret typed by a person (an OTP, a password). Never printed; the
/// protocol's owner wipes the bytes it decodes into as soon as it can.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How a person asks for an OTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestMode {
    /// With their email address: an access request to the approvers.
    Email(String),
    /// With nothing: the directory knows the OS account's email.
    Directory,
    /// With an internal user's login name and password.
    Internal {
        /// The login name.
        login: String,
        /// The password.
        password: Secret,
    },
    /// "I need emergency access to computer", with their email address.
    Emergency(String),
}

/// What the login prompt asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginRequest {
    /// What should the prompt show?
    Status,
    /// Ask for an OTP.
    Request(RequestMode),
    /// Email the live OTP again.
    Resend,
    /// Check a typed OTP.
    Verify {
        /// The email typed.
        email: String,
        /// The OTP typed.
        code: Secret,
    },
    /// The person logged out: of client session `session`, or of every open
    /// session of this OS user on this computer.
    Logout {
        /// The session, if one in particular.
        session: Option<u64>,
    },
    /// The person logged in without an OTP as a member of the computer's
    /// exempt group (break-glass), at PAM service `service`: for the audit log.
    Exempt {
        /// The PAM service (`sshd`, `login`, ...).
        service: String,
    },
}

/// The answer to a [`LoginRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginResponse {
    /// The answer to [`LoginRequest::Status`].
    Status(PromptState),
    /// The answer to [`LoginRequest::Request`] and [`LoginRequest::Resend`].
    Requested(Requested),
    /// The answer to [`LoginRequest::Verify`].
    Verified(Verdict),
    /// The answer to [`LoginRequest::Logout`]: whether a session of this user ended.
    LoggedOut {
        /// Whether a session ended.
        ended: bool,
    },
    /// The answer to [`LoginRequest::Exempt`]: recorded.
    Noted,
    /// Not asked: too many requests from this OS user (or this computer) just
    /// now. Ask again after `retry_after` seconds.
    Throttled {
        /// Seconds to wait.
        retry_after: u64,
    },
}

/// What the prompt should show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptState {
    /// The OS user the answer is for.
    pub os_user: String,
    /// Allow the use of one-time passwords.
    pub allow_otp: bool,
    /// Automatically send one-time passwords to Active Directory users.
    pub auto_directory: bool,
    /// Automatically send one-time passwords to internal users.
    pub auto_internal: bool,
    /// Record typed input in recorded terminals (`otpgate record` asks).
    pub record_input: bool,
    /// The address to fill in, once known.
    pub email: Option<String>,
    /// The latest access request's id and state.
    pub request: Option<(u64, RequestState)>,
    /// Until when the live OTP is valid.
    pub otp_valid_until: Option<u64>,
    /// When a new OTP may be requested, if not now.
    pub next_new_at: Option<u64>,
}

/// What became of an access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for an approver until `expires`.
    Pending {
        /// When it expires.
        expires: u64,
    },
    /// Approved: the OTP was sent.
    Approve,
    /// Denied.
    Deny {
        /// The approver's comment.
        comment: Option<String>,
    },
    /// Nobody decided in time.
    Expire,
}

/// The answer to a request for an OTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requested {
    /// A new OTP was emailed.
    Send {
        /// The address.
        to: String,
        /// Until when it is valid.
        valid_until: u64,
    },
    /// The live OTP was emailed again.
    Resend {
        /// The address.
        to: String,
        /// Until when it is valid.
        valid_until: u64,
    },
    /// The request went to the approvers.
    AwaitApproval {
        /// The access request.
        request: u64,
        /// When it expires.
        expires: u64,
    },
    /// No new OTP before `next_at`, and none live to resend.
    TooSoon {
        /// When a new one may be requested.
        next_at: u64,
    },
    /// The live OTP was emailed to `to` moments ago; it may be sent again at
    /// `next_at`.
    ResendLater {
        /// The address.
        to: String,
        /// When it may be sent again.
        next_at: u64,
    },
    /// No live OTP to resend.
    NoLiveOtp,
    /// OTPs are not used on this computer: log in without one.
    NotRequired,
    /// This way of asking is not enabled on this computer.
    Disabled,
    /// Refused.
    Refuse,
    /// The directory cannot be reached now: try again, or ask for emergency
    /// access.
    DirectoryUnavailable,
    /// Too many failures: wait.
    Throttle {
        /// Seconds to wait.
        retry_after: u64,
    },
}

/// The answer to a typed OTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Log in: client session `session` has started.
    Allow {
        /// The client session.
        session: u64,
    },
    /// Access denied.
    Deny,
    /// OTPs are not used on this computer: log in without one.
    NotRequired,
    /// Too many failures: wait.
    Throttle {
        /// Seconds to wait.
        retry_after: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let secret = Secret("hunter2 correct horse".into());
        let request = LoginRequest::Verify {
            email: "alice@example.com".into(),
            code: secret.clone(),
        };
        for shown in [format!("{secret:?}"), format!("{request:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}

//! What the login prompt asks of a computer's actor, and what it is answered.
//! These are the domain's types; the daemon maps them to and from the wire.

use std::time::Duration;

use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::otp::Code;

/// How a person asks for an OTP.
#[derive(Debug, Clone)]
pub enum RequestMode {
    /// With their email address: an access request to the approvers.
    Email(String),
    /// With nothing: the directory knows their OS account's email.
    Directory,
    /// With an internal user's login name and password.
    Internal {
        /// The login name.
        login: String,
        /// The password; wiped when dropped.
        password: Zeroizing<String>,
    },
    /// "I need emergency access to computer", with their email address: an access
    /// request marked emergency.
    Emergency(String),
}

/// What the login prompt of one OS user asks. Cloning copies secrets into
/// containers that wipe them too.
#[derive(Debug, Clone)]
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
        code: Code,
    },
    /// The person logged out: of session `session`, or of all of theirs.
    Logout {
        /// The session, if one in particular.
        session: Option<u64>,
    },
    /// The person logged in without an OTP as a member of the computer's
    /// exempt group (break-glass): recorded, never refused.
    Exempt {
        /// Where: the PAM service (`sshd`, `login`, ...).
        service: String,
    },
}

/// The answer to a [`LoginRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginResponse {
    /// The answer to [`LoginRequest::Status`].
    Status(PromptState),
    /// The answer to [`LoginRequest::Request`] and [`LoginRequest::Resend`].
    Requested(Requested),
    /// The answer to [`LoginRequest::Verify`].
    Verified(Verdict),
    /// The answer to [`LoginRequest::Logout`].
    LoggedOut(Logout),
    /// The answer to [`LoginRequest::Exempt`]: recorded.
    Noted,
}

/// What a logout came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logout {
    /// A client session of the user ended.
    Ended,
    /// None was open.
    NothingOpen,
}

/// What the prompt should show to one OS user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptState {
    /// Allow the use of one-time passwords.
    pub allow_otp: bool,
    /// Automatically send one-time passwords to Active Directory users.
    pub auto_directory: bool,
    /// Automatically send one-time passwords to internal users.
    pub auto_internal: bool,
    /// Record typed input in recorded terminals.
    pub record_input: bool,
    /// The address of the live OTP or of the latest request, to fill in.
    pub email: Option<String>,
    /// The latest access request and what became of it.
    pub request: Option<(u64, RequestState)>,
    /// Until when the live OTP is valid, if there is one.
    pub otp_valid_until: Option<Timestamp>,
    /// When a new OTP may be requested, if not now.
    pub next_new_at: Option<Timestamp>,
}

/// What became of an access request, as the person is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting for an approver until `expires`.
    Pending {
        /// When it expires.
        expires: Timestamp,
    },
    /// Approved: the OTP was sent.
    Approve,
    /// Denied, with the approver's comment.
    Deny {
        /// The approver's comment.
        comment: Option<String>,
    },
    /// Nobody decided in time.
    Expire,
}

/// The answer to a request for an OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// A new OTP was emailed to `to`.
    Send {
        /// The address.
        to: String,
        /// Until when it is valid.
        valid_until: Timestamp,
    },
    /// The live OTP was emailed again to `to`.
    Resend {
        /// The address.
        to: String,
        /// Until when it is valid.
        valid_until: Timestamp,
    },
    /// The request went to the approvers.
    AwaitApproval {
        /// The access request.
        request: u64,
        /// When it expires.
        expires: Timestamp,
    },
    /// A new OTP may not be requested before `next_at`, and there is none live to
    /// resend.
    TooSoon {
        /// When a new one may be requested.
        next_at: Timestamp,
    },
    /// The live OTP was emailed to `to` moments ago; it may be sent again at
    /// `next_at`.
    ResendLater {
        /// The address.
        to: String,
        /// When it may be sent again.
        next_at: Timestamp,
    },
    /// There is no live OTP to resend.
    NoLiveOtp,
    /// OTPs are not used on this computer: log in without one.
    NotRequired,
    /// This way of asking is not enabled on this computer.
    Disabled,
    /// Refused: wrong login name or password, or no email known for the account.
    Refuse,
    /// The directory cannot be reached now: try again, or ask for emergency
    /// access.
    DirectoryUnavailable,
    /// Too many failures; try again after `retry_after`.
    Throttle {
        /// How long to wait.
        retry_after: Duration,
    },
}

/// The answer to a typed OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Log in; client session `session` has started.
    Allow {
        /// The new client session.
        session: u64,
    },
    /// Do not log in. Which check failed is not said.
    Deny,
    /// OTPs are not used on this computer: log in without one.
    NotRequired,
    /// Too many failures; try again after `retry_after`.
    Throttle {
        /// How long to wait.
        retry_after: Duration,
    },
}

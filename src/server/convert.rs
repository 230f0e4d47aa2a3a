//! Translation between the wire's types (`otpgate_protocol`) and the domain's
//! (`otpgate_actors`). Neither crate knows the other; this is where they meet.

use std::time::Duration;

use zeroize::Zeroizing;

use otpgate_actors::Timestamp;
use otpgate_actors::audit::AuditEntry;
use otpgate_actors::computer::OfflineLogin;
use otpgate_actors::directory::Role;
use otpgate_actors::login::{
    LoginRequest, LoginResponse, Logout, PromptState, RequestMode, RequestState, Requested, Verdict,
};
use otpgate_actors::mail::{MailFailure, OutboxEntry};
use otpgate_actors::offline::OfflineSet;
use otpgate_actors::otp::Code;
use otpgate_actors::request::{AccessRequest, Choice, Decision};
use otpgate_actors::session::ClientSession;
use otpgate_actors::settings::{Effective, OptionName, Options, OptionsPatch, SystemSettings};
use otpgate_protocol::admin::{
    self as admin, AuditView, MailFailureView, OptionNameView, OptionsView, QueuedMailView,
    RequestView, RoleView, SessionView, SettingsPatch, SettingsView,
};
use otpgate_protocol::login::{self as wire};
use otpgate_protocol::offline::{OfflineCodes, OfflineUse};

/// A login request off the wire, as the computer's actor takes it. The secrets
/// move into wiping containers.
pub fn login_request(request: wire::LoginRequest) -> LoginRequest {
    match request {
        wire::LoginRequest::Status => LoginRequest::Status,
        wire::LoginRequest::Request(mode) => LoginRequest::Request(match mode {
            wire::RequestMode::Email(email) => RequestMode::Email(email),
            wire::RequestMode::Directory => RequestMode::Directory,
            wire::RequestMode::Internal { login, password } => RequestMode::Internal {
                login,
                password: Zeroizing::new(password.0),
            },
            wire::RequestMode::Emergency(email) => RequestMode::Emergency(email),
        }),
        wire::LoginRequest::Resend => LoginRequest::Resend,
        wire::LoginRequest::Verify { email, code } => LoginRequest::Verify {
            email,
            code: Code::from_typed(&Zeroizing::new(code.0)),
        },
        wire::LoginRequest::Logout { session } => LoginRequest::Logout { session },
        wire::LoginRequest::Exempt { service } => LoginRequest::Exempt { service },
    }
}

/// The actor's answer, for the wire.
pub fn login_response(os_user: &str, answer: LoginResponse) -> wire::LoginResponse {
    match answer {
        LoginResponse::Status(state) => wire::LoginResponse::Status(prompt_state(os_user, state)),
        LoginResponse::Requested(requested) => wire::LoginResponse::Requested(match requested {
            Requested::Send { to, valid_until } => wire::Requested::Send {
                to,
                valid_until: valid_until.unix_millis(),
            },
            Requested::Resend { to, valid_until } => wire::Requested::Resend {
                to,
                valid_until: valid_until.unix_millis(),
            },
            Requested::AwaitApproval { request, expires } => wire::Requested::AwaitApproval {
                request,
                expires: expires.unix_millis(),
            },
            Requested::TooSoon { next_at } => wire::Requested::TooSoon {
                next_at: next_at.unix_millis(),
            },
            Requested::ResendLater { to, next_at } => wire::Requested::ResendLater {
                to,
                next_at: next_at.unix_millis(),
            },
            Requested::NoLiveOtp => wire::Requested::NoLiveOtp,
            Requested::NotRequired => wire::Requested::NotRequired,
            Requested::Disabled => wire::Requested::Disabled,
            Requested::Refuse => wire::Requested::Refuse,
            Requested::DirectoryUnavailable => wire::Requested::DirectoryUnavailable,
            Requested::Throttle { retry_after } => wire::Requested::Throttle {
                retry_after: seconds(retry_after),
            },
        }),
        LoginResponse::Verified(verdict) => wire::LoginResponse::Verified(match verdict {
            Verdict::Allow { session } => wire::Verdict::Allow { session },
            Verdict::Deny => wire::Verdict::Deny,
            Verdict::NotRequired => wire::Verdict::NotRequired,
            Verdict::Throttle { retry_after } => wire::Verdict::Throttle {
                retry_after: seconds(retry_after),
            },
        }),
        LoginResponse::LoggedOut(logout) => wire::LoginResponse::LoggedOut {
            ended: logout == Logout::Ended,
        },
        LoginResponse::Noted => wire::LoginResponse::Noted,
    }
}

fn prompt_state(os_user: &str, state: PromptState) -> wire::PromptState {
    wire::PromptState {
        os_user: os_user.to_owned(),
        allow_otp: state.allow_otp,
        auto_directory: state.auto_directory,
        auto_internal: state.auto_internal,
        record_input: state.record_input,
        email: state.email,
        request: state.request.map(|(id, status)| {
            let state = match status {
                RequestState::Pending { expires } => wire::RequestState::Pending {
                    expires: expires.unix_millis(),
                },
                RequestState::Approve => wire::RequestState::Approve,
                RequestState::Deny { comment } => wire::RequestState::Deny { comment },
                RequestState::Expire => wire::RequestState::Expire,
            };
            (id, state)
        }),
        otp_valid_until: state.otp_valid_until.map(|t| t.unix_millis()),
        next_new_at: state.next_new_at.map(|t| t.unix_millis()),
    }
}

/// Whole seconds, rounded up so that "retry after" is never too early.
fn seconds(duration: Duration) -> u64 {
    duration
        .as_millis()
        .div_ceil(1000)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The System Settings, for the admin channel.
pub fn settings_view(settings: &SystemSettings) -> SettingsView {
    SettingsView {
        expiration_secs: settings.expiration.as_secs(),
        new_otp_interval_secs: settings.new_otp_interval.as_secs(),
        otp_length: settings.otp_length,
        max_attempts: settings.max_attempts,
        max_failures: settings.max_failures,
        failure_window_secs: settings.failure_window.as_secs(),
        resend_gap_secs: settings.resend_gap.as_secs(),
        max_new_per_computer: settings.max_new_per_computer,
        session_timeout_secs: settings.session_timeout.as_secs(),
        retention_days: settings.retention.as_secs() / 86_400,
    }
}

/// `settings` with `patch` applied.
pub fn patch_settings(mut settings: SystemSettings, patch: &SettingsPatch) -> SystemSettings {
    if let Some(secs) = patch.expiration_secs {
        settings.expiration = Duration::from_secs(secs);
    }
    if let Some(secs) = patch.new_otp_interval_secs {
        settings.new_otp_interval = Duration::from_secs(secs);
    }
    if let Some(len) = patch.otp_length {
        settings.otp_length = len;
    }
    if let Some(n) = patch.max_attempts {
        settings.max_attempts = n;
    }
    if let Some(n) = patch.max_failures {
        settings.max_failures = n;
    }
    if let Some(secs) = patch.failure_window_secs {
        settings.failure_window = Duration::from_secs(secs);
    }
    if let Some(secs) = patch.resend_gap_secs {
        settings.resend_gap = Duration::from_secs(secs);
    }
    if let Some(n) = patch.max_new_per_computer {
        settings.max_new_per_computer = n;
    }
    if let Some(secs) = patch.session_timeout_secs {
        settings.session_timeout = Duration::from_secs(secs);
    }
    if let Some(days) = patch.retention_days {
        settings.retention = Duration::from_secs(days.saturating_mul(86_400));
    }
    settings
}

/// Options, for the admin channel.
pub fn options_view(options: &Options) -> OptionsView {
    OptionsView {
        allow_otp: options.allow_otp,
        approvers: options.approvers.clone(),
        auto_directory: options.auto_directory,
        auto_internal: options.auto_internal,
        record_input: options.record_input,
        inherit: Vec::new(),
    }
}

/// Options in force, for the admin channel (every field set).
pub fn effective_view(effective: &Effective) -> OptionsView {
    OptionsView {
        allow_otp: Some(effective.allow_otp),
        approvers: Some(effective.approvers.clone()),
        auto_directory: Some(effective.auto_directory),
        auto_internal: Some(effective.auto_internal),
        record_input: Some(effective.record_input),
        inherit: Vec::new(),
    }
}

/// A change of options off the admin channel.
pub fn options(view: &OptionsView) -> OptionsPatch {
    OptionsPatch {
        set: Options {
            allow_otp: view.allow_otp,
            approvers: view.approvers.clone(),
            auto_directory: view.auto_directory,
            auto_internal: view.auto_internal,
            record_input: view.record_input,
        },
        inherit: view
            .inherit
            .iter()
            .map(|name| match name {
                OptionNameView::AllowOtp => OptionName::AllowOtp,
                OptionNameView::Approvers => OptionName::Approvers,
                OptionNameView::AutoDirectory => OptionName::AutoDirectory,
                OptionNameView::AutoInternal => OptionName::AutoInternal,
                OptionNameView::RecordInput => OptionName::RecordInput,
            })
            .collect(),
    }
}

/// A role, for the admin channel.
pub fn role_view(role: Role) -> RoleView {
    match role {
        Role::Administrator => RoleView::Administrator,
        Role::User => RoleView::User,
    }
}

/// A role off the admin channel.
pub fn role(view: RoleView) -> Role {
    match view {
        RoleView::Administrator => Role::Administrator,
        RoleView::User => Role::User,
    }
}

/// An access request, for the admin channel, with the delivery failure of a
/// message about it from `failures`, if any.
pub fn request_view(request: &AccessRequest, failures: &[MailFailure]) -> RequestView {
    let (state, resolution) = match &request.decision {
        Decision::Pending => (admin::Decision::Pending, None),
        Decision::Approve(resolution) => (admin::Decision::Approve, Some(resolution)),
        Decision::Deny(resolution) => (admin::Decision::Deny, Some(resolution)),
        Decision::Expire => (admin::Decision::Expire, None),
    };
    RequestView {
        id: request.id,
        computer: request.computer.to_string(),
        os_user: request.os_user.clone(),
        email: request.email.clone(),
        emergency: request.emergency,
        created: request.created.unix_millis(),
        expires: request.expires.unix_millis(),
        state,
        decided_by: resolution.map(|r| r.by.clone()),
        comment: resolution.and_then(|r| r.comment.clone()),
        mail_failure: failures
            .iter()
            .find(|f| f.request == Some(request.id))
            .map(|f| format!("to {}: {}", f.to, f.reason)),
    }
}

/// An approver's choice off the admin channel.
pub fn choice(view: admin::Choice) -> Choice {
    match view {
        admin::Choice::Approve => Choice::Approve,
        admin::Choice::Deny => Choice::Deny,
    }
}

/// A message waiting in the outbox, for the admin channel.
pub fn queued_mail_view(entry: &OutboxEntry) -> QueuedMailView {
    QueuedMailView {
        id: entry.id,
        to: entry.to.clone(),
        queued: entry.queued.unix_millis(),
        attempts: entry.attempts,
        next_try: entry.next_try.unix_millis(),
    }
}

/// A message given up on, for the admin channel.
pub fn mail_failure_view(failure: &MailFailure) -> MailFailureView {
    MailFailureView {
        id: failure.id,
        to: failure.to.clone(),
        at: failure.at.unix_millis(),
        reason: failure.reason.clone(),
        computer: failure.computer.as_ref().map(ToString::to_string),
        request: failure.request,
    }
}

/// A client session, for the admin channel.
pub fn session_view(session: &ClientSession) -> SessionView {
    SessionView {
        id: session.id,
        computer: session.computer.to_string(),
        user_name: session.user_name(),
        started: session.started.unix_millis(),
        last_activity: session.last_activity.unix_millis(),
        ended: session.ended.map(|(at, _)| at.unix_millis()),
        end_reason: session.ended.map(|(_, why)| why.to_string()),
    }
}

/// An audit entry, for the admin channel.
pub fn audit_view(entry: &AuditEntry) -> AuditView {
    AuditView {
        at: entry.at.unix_millis(),
        who: entry.who.to_string(),
        computer: entry.computer.clone(),
        action: entry.action.name().to_owned(),
        outcome: entry.outcome.clone(),
    }
}

/// An offline login as the agent reported it.
pub fn offline_login(used: OfflineUse) -> OfflineLogin {
    OfflineLogin {
        set: used.set,
        code: usize::try_from(used.code).unwrap_or(usize::MAX),
        os_user: used.os_user,
        service: used.service,
        at: Timestamp::from_unix_millis(used.at_ms),
        session: used.session,
    }
}

/// Offline code set `set` as its agent keeps it: verifiers of the codes
/// left.
pub fn offline_codes(set: &OfflineSet) -> OfflineCodes {
    OfflineCodes {
        set: set.id,
        os_user: set.login_name.clone(),
        salt: set.salt,
        memory_kib: set.cost.memory_kib,
        passes: set.cost.passes,
        verifiers: set
            .codes
            .iter()
            .map(|code| code.used_at.is_none().then_some(code.verifier))
            .collect(),
        expires_ms: set.expires_at.unix_millis(),
    }
}

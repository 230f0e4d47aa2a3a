//! `pam_otpgate.so`: the PAM module that gates OS logins (sshd, login, su,
//! sudo, a display manager) behind otpgate's one-time passwords.
//!
//! `auth` walks the seed's screens (`otpgate_screens`) through the
//! PAM conversation, asking the local agent for `PAM_USER` as root; it succeeds
//! only on Allow, or when the computer does not use OTPs; when the agent or
//! the server cannot be reached it denies, allows, or (`on_unreachable=
//! offline`) asks for one of the person's offline codes, which the agent
//! checks. `session` ties the
//! client session the Allow started to the process that holds the OS session,
//! through the agent (sshd authenticates in another process than the one that
//! opens the session, so nothing is kept in the PAM handle).
//!
//! sshd runs the `auth` stack only for keyboard-interactive (and password)
//! logins: a key login skips it unless sshd_config says
//! `AuthenticationMethods publickey,keyboard-interactive` (see the README).
//!
//! Inside a host process: no threads, no runtime, blocking I/O with one
//! deadline per answer; no panic crosses into the host (`pam-bindings`
//! catches it and the login fails closed; the message goes to syslog, never to
//! the terminal); nothing reaches the person but through the conversation.

mod agent;
mod args;

use std::ffi::{CStr, CString};
use std::sync::Once;

use pam::constants::{
    PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SILENT, PAM_TEXT_INFO, PamFlag, PamResultCode,
};
use pam::conv::Conv;
use pam::items::Service;
use pam::module::{PamHandle, PamHooks};
use zeroize::Zeroizing;

use otpgate_protocol::local::{LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, LoginResponse, Secret};
use otpgate_protocol::offline::OfflineVerdict;
use otpgate_screens::{self as screens, Outcome, Waits, Window};

use agent::Agent;
use args::{Args, Unreachable};

struct OtpGate;
pam::pam_hooks!(OtpGate);

impl PamHooks for OtpGate {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        let args = start(&args);
        authenticate(pamh, &args, flags & PAM_SILENT != 0)
    }

    fn sm_setcred(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }

    fn sm_open_session(pamh: &mut PamHandle, args: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        let args = start(&args);
        let Ok(user) = pamh.get_user(None) else {
            return PamResultCode::PAM_SESSION_ERR;
        };
        match tell_agent(
            &args,
            LocalRequest::SessionOpen {
                os_user: user.clone(),
            },
        ) {
            Some(LocalResponse::SessionOpened {
                session: Some(session),
            }) => {
                log(
                    libc::LOG_INFO,
                    &format!("client session {session} of {user} tied to this session"),
                );
                PamResultCode::PAM_SUCCESS
            }
            _ => PamResultCode::PAM_IGNORE,
        }
    }

    fn sm_close_session(pamh: &mut PamHandle, args: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        let args = start(&args);
        let Ok(user) = pamh.get_user(None) else {
            return PamResultCode::PAM_SESSION_ERR;
        };
        match tell_agent(&args, LocalRequest::SessionClose { os_user: user }) {
            Some(LocalResponse::Done) => PamResultCode::PAM_SUCCESS,
            _ => PamResultCode::PAM_IGNORE,
        }
    }
}

/// What every hook does first: the panic hook installed, the arguments read
/// (and what was wrong with them logged), and, in test builds, the injected
/// panic.
fn start(args: &[&CStr]) -> Args {
    static QUIET_PANICS: Once = Once::new();
    // This library carries its own copy of std: the hook is ours alone, and
    // sends a panic's message to syslog instead of the host's stderr (which
    // may be the person's terminal).
    QUIET_PANICS.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            log(libc::LOG_ERR, &format!("panic, login refused: {info}"));
        }));
    });
    let (parsed, problems) = Args::parse(args.iter().filter_map(|arg| arg.to_str().ok()));
    for problem in problems {
        log(libc::LOG_WARNING, &problem);
    }
    assert!(!parsed.panic_for_test, "injected by the test build");
    parsed
}

/// The `auth` hook: exempt, or the screens; success only on Allow (or when the
/// computer does not use OTPs).
fn authenticate(pamh: &mut PamHandle, args: &Args, silent: bool) -> PamResultCode {
    let Ok(user) = pamh.get_user(None) else {
        return PamResultCode::PAM_AUTH_ERR;
    };
    let service = pamh
        .get_item::<Service>()
        .ok()
        .flatten()
        .map_or_else(|| "?".to_owned(), |s| s.to_string_lossy().into_owned());
    if let Some(group) = &args.exempt_group
        && is_member(&user, group)
    {
        log(
            libc::LOG_NOTICE,
            &format!("{user} passes without an OTP at {service}: member of {group}"),
        );
        tell_agent(
            args,
            LocalRequest::Exempt {
                os_user: user,
                service,
            },
        );
        return PamResultCode::PAM_SUCCESS;
    }
    let Ok(Some(conv)) = pamh.get_item::<Conv>() else {
        return PamResultCode::PAM_CONV_ERR;
    };
    let Ok(agent) = Agent::connect(&args.socket, args.timeout) else {
        return unreachable(&conv, args, &user, &service);
    };
    let mut gate = Gate {
        conv: &conv,
        agent,
        user: user.clone(),
        silent,
    };
    match screens::walk(&mut gate, Waits::up_to(args.approval_wait)) {
        Ok(Outcome::Allowed { session }) => {
            log(
                libc::LOG_INFO,
                &format!("{user} allowed at {service}: client session {session}"),
            );
            PamResultCode::PAM_SUCCESS
        }
        Ok(Outcome::NotRequired) => PamResultCode::PAM_SUCCESS,
        Ok(Outcome::Denied | Outcome::Throttled { .. }) => {
            log(libc::LOG_NOTICE, &format!("{user} denied at {service}"));
            PamResultCode::PAM_AUTH_ERR
        }
        Err(GateError::Unreachable) => unreachable(&conv, args, &user, &service),
        Err(GateError::Agent(error)) => {
            log(
                libc::LOG_WARNING,
                &format!("the agent refused to act for {user}: {error:?}"),
            );
            say(&conv, "Access denied.");
            PamResultCode::PAM_AUTH_ERR
        }
        Err(GateError::Conversation(code)) => {
            log(
                libc::LOG_NOTICE,
                &format!("{user}: the conversation ended ({code:?})"),
            );
            PamResultCode::PAM_AUTH_ERR
        }
    }
}

/// The agent or the server cannot be reached: deny, unless told to allow
/// or to ask for an offline code.
fn unreachable(conv: &Conv<'_>, args: &Args, user: &str, service: &str) -> PamResultCode {
    match args.on_unreachable {
        Unreachable::Offline => offline(conv, args, user, service),
        Unreachable::Deny => {
            log(
                libc::LOG_WARNING,
                &format!("{user} denied: the OTP server cannot be reached"),
            );
            say(conv, "The OTP server cannot be reached. Access denied.");
            PamResultCode::PAM_AUTH_ERR
        }
        Unreachable::Allow => {
            log(
                libc::LOG_WARNING,
                &format!("{user} let in without an OTP: the OTP server cannot be reached"),
            );
            PamResultCode::PAM_SUCCESS
        }
    }
}

/// The server cannot be reached: one of `user`'s offline codes, checked by
/// the agent, lets them in at `service`.
fn offline(conv: &Conv<'_>, args: &Args, user: &str, service: &str) -> PamResultCode {
    let Ok(answer) = conv.send(
        PAM_PROMPT_ECHO_OFF,
        "The OTP server cannot be reached. Offline code: ",
    ) else {
        return PamResultCode::PAM_CONV_ERR;
    };
    let code = Zeroizing::new(
        answer
            .and_then(|bytes| bytes.as_str().ok().map(str::to_owned))
            .unwrap_or_default(),
    );
    let request = LocalRequest::Offline {
        os_user: user.to_owned(),
        service: service.to_owned(),
        code: Secret(code.as_str().to_owned()),
    };
    let verdict = match tell_agent(args, request) {
        Some(LocalResponse::Offline(verdict)) => verdict,
        Some(LocalResponse::Login(LoginResponse::Throttled { retry_after })) => {
            say(
                conv,
                &format!("Too many tries; wait {retry_after} s. Access denied."),
            );
            return PamResultCode::PAM_AUTH_ERR;
        }
        other => {
            log(
                libc::LOG_WARNING,
                &format!("{user} denied: the agent cannot check offline codes ({other:?})"),
            );
            say(
                conv,
                "Offline codes cannot be checked on this computer now. Access denied.",
            );
            return PamResultCode::PAM_AUTH_ERR;
        }
    };
    let (said, logged) = match verdict {
        OfflineVerdict::Allow { session } => {
            log(
                libc::LOG_NOTICE,
                &format!(
                    "{user} let in with an offline code at {service}: client session {session}"
                ),
            );
            say(
                conv,
                "Accepted: the server hears of this offline login when it is back.",
            );
            return PamResultCode::PAM_SUCCESS;
        }
        // No code left says the same (the agent hashes and counts the try
        // all the same): a stranger at sshd does not learn who has codes.
        OfflineVerdict::Wrong | OfflineVerdict::NoCodes => (
            "Wrong offline code. Access denied.".to_owned(),
            if verdict == OfflineVerdict::Wrong {
                "a wrong offline code"
            } else {
                "no offline code left"
            },
        ),
        OfflineVerdict::Locked { until_ms } => (
            format!(
                "Too many wrong offline codes: none is taken until {}. Access denied.",
                local_time(until_ms)
            ),
            "offline codes locked",
        ),
        OfflineVerdict::AwayTooLong { since_ms } => (
            format!(
                "This computer has not reached the OTP server since {}: offline codes are no \
                 longer taken. Access denied.",
                if since_ms == 0 {
                    "it was set up".to_owned()
                } else {
                    local_time(since_ms)
                }
            ),
            "too long away from the server",
        ),
        OfflineVerdict::Online => (
            "The OTP server can be reached again: log in again to use an OTP.".to_owned(),
            "the server is back",
        ),
        OfflineVerdict::Unavailable => (
            "The offline login could not be recorded. Access denied.".to_owned(),
            "not recorded",
        ),
        OfflineVerdict::Damaged => (
            "Offline codes cannot be read on this computer until it reaches the OTP server \
             again. Access denied."
                .to_owned(),
            "the agent's offline codes are unreadable",
        ),
    };
    log(
        libc::LOG_NOTICE,
        &format!("{user} denied at {service}: {logged}"),
    );
    say(conv, &said);
    PamResultCode::PAM_AUTH_ERR
}

/// Sends one request to the agent, for what needs no conversation; `None` if
/// it could not be asked.
fn tell_agent(args: &Args, request: LocalRequest) -> Option<LocalResponse> {
    match Agent::connect(&args.socket, args.timeout).and_then(|mut agent| agent.ask(request)) {
        Ok(answer) => Some(answer),
        Err(err) => {
            log(
                libc::LOG_WARNING,
                &format!("the agent could not be told: {err}"),
            );
            None
        }
    }
}

/// Why the walk stopped.
#[derive(Debug)]
enum GateError {
    /// The agent, or through it the server, cannot be reached.
    Unreachable,
    /// The agent would not serve the request.
    Agent(LocalError),
    /// The conversation failed (the person hung up, say).
    Conversation(PamResultCode),
}

/// The screens in a PAM conversation, the agent behind them.
struct Gate<'a> {
    conv: &'a Conv<'a>,
    agent: Agent,
    user: String,
    /// `PAM_SILENT`: no notes, only prompts.
    silent: bool,
}

impl Window for Gate<'_> {
    type Error = GateError;

    fn ask_agent(&mut self, request: LoginRequest) -> Result<LoginResponse, GateError> {
        let request = LocalRequest::Login {
            os_user: Some(self.user.clone()),
            request,
        };
        match self.agent.ask(request) {
            Ok(LocalResponse::Login(response)) => Ok(response),
            Ok(LocalResponse::Fail(LocalError::NotConnected | LocalError::Unavailable))
            | Err(_) => Err(GateError::Unreachable),
            Ok(LocalResponse::Fail(error)) => Err(GateError::Agent(error)),
            Ok(_) => Err(GateError::Agent(LocalError::Internal)),
        }
    }

    fn read(&mut self, prompt: &str, hidden: bool) -> Result<Zeroizing<String>, GateError> {
        let style = if hidden {
            PAM_PROMPT_ECHO_OFF
        } else {
            PAM_PROMPT_ECHO_ON
        };
        let answer = self
            .conv
            .send(style, prompt)
            .map_err(GateError::Conversation)?;
        Ok(Zeroizing::new(
            answer
                .and_then(|bytes| bytes.as_str().ok().map(str::to_owned))
                .unwrap_or_default(),
        ))
    }

    fn say(&mut self, text: &str) -> Result<(), GateError> {
        if !self.silent {
            say(self.conv, text);
        }
        Ok(())
    }

    fn pause(&mut self, seconds: u64) -> Result<(), GateError> {
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        Ok(())
    }

    fn time(&self, unix_millis: u64) -> String {
        local_time(unix_millis)
    }
}

/// Shows `text` through the conversation (the walk's, already made fit for a
/// terminal, or the module's own).
fn say(conv: &Conv<'_>, text: &str) {
    let _ = conv.send(PAM_TEXT_INFO, text);
}

/// Whether OS account `user` belongs to `group` (as its primary group or
/// beside it).
fn is_member(user: &str, group: &str) -> bool {
    use nix::unistd::{Group, User, getgrouplist};
    let (Ok(Some(group)), Ok(Some(account))) = (Group::from_name(group), User::from_name(user))
    else {
        return false;
    };
    if account.gid == group.gid {
        return true;
    }
    CString::new(user)
        .ok()
        .and_then(|name| getgrouplist(&name, account.gid).ok())
        .is_some_and(|groups| groups.contains(&group.gid))
}

/// A time in milliseconds since the Unix epoch, in the computer's time zone.
fn local_time(unix_millis: u64) -> String {
    let seconds = libc::time_t::try_from(unix_millis / 1000).unwrap_or(libc::time_t::MAX);
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are
    // valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&seconds, &mut tm) }.is_null() {
        return format!("@{seconds}");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// Writes `message` to syslog (authpriv), as `pam_otpgate`.
fn log(priority: libc::c_int, message: &str) {
    let Ok(message) = CString::new(message.replace('\0', " ")) else {
        return;
    };
    // SAFETY: a constant format string whose one %s is a valid C string.
    unsafe {
        libc::syslog(
            libc::LOG_AUTHPRIV | priority,
            c"pam_otpgate: %s".as_ptr(),
            message.as_ptr(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_a_member_of_its_own_group_and_not_of_a_missing_one() {
        assert!(is_member("root", "root"));
        assert!(!is_member("root", "otpgate-no-such-group"));
        assert!(!is_member("otpgate-no-such-user", "root"));
    }

    #[test]
    fn times_are_shown_to_the_minute() {
        let shown = local_time(1_800_000_000_000);
        assert_eq!(shown.len(), "2027-01-15 08:00".len(), "{shown}");
    }
}

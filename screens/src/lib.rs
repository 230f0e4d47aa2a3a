//! The seed's login screens as one conversation, for every front end that shows
//! them (the terminal prompt, the PAM module): what is asked and said, in which
//! order, and what it comes to. The front end does the I/O through [`Window`];
//! nothing here touches a terminal or a socket.
//!
//! The walk: the first window asks for the email address (filled in once known)
//! and the one-time password; leaving either empty opens the second window,
//! which asks for an OTP the way the computer's options say. An access request
//! is then waited for, the approvers' verdict told, and the walk goes back to
//! the first window.
//!
//! Every text the walk shows passes [`for_terminal`] first: what comes from
//! the server (an address, an approver's comment) cannot move a terminal's
//! cursor, clear it or overwrite a line (a carriage return is escaped; line
//! breaks are kept), in any front end.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt::Write;

use zeroize::Zeroizing;

use otpgate_protocol::login::{
    LoginRequest, LoginResponse, PromptState, RequestMode, RequestState, Requested, Secret, Verdict,
};

/// What the walk says when this computer does not use OTPs.
const NOT_REQUIRED: &str =
    "One-time passwords are not required on this computer: log in without one.";

/// Where the screens are shown and the agent asked: a terminal, a PAM
/// conversation.
pub trait Window {
    /// Why the window or the agent failed; the walk stops with it.
    type Error;

    /// Sends `request` to the local agent and returns its answer.
    fn ask_agent(&mut self, request: LoginRequest) -> Result<LoginResponse, Self::Error>;

    /// Asks the person for one line (`hidden`: not echoed); an empty line is an
    /// answer.
    fn read(&mut self, prompt: &str, hidden: bool) -> Result<Zeroizing<String>, Self::Error>;

    /// Tells the person something.
    fn say(&mut self, text: &str) -> Result<(), Self::Error>;

    /// Waits `seconds` (while an access request is decided).
    fn pause(&mut self, seconds: u64) -> Result<(), Self::Error>;

    /// A time in milliseconds since the Unix epoch, as the person reads it.
    fn time(&self, unix_millis: u64) -> String;
}

/// How long the walk waits for approvers, and how often it looks and tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    /// The longest wait for a decision, in seconds; 0 tells the person to come
    /// back once it is approved.
    pub approval: u64,
    /// Seconds between two looks at the request.
    pub poll: u64,
    /// Seconds between two "still waiting" notes.
    pub note: u64,
}

impl Waits {
    /// Up to `approval` seconds, looking every 5 and telling every 30.
    pub fn up_to(approval: u64) -> Self {
        Self {
            approval,
            poll: 5,
            note: 30,
        }
    }
}

/// What the walk came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The OTP was right: client session `session` has started.
    Allowed {
        /// The client session.
        session: u64,
    },
    /// This computer does not use OTPs.
    NotRequired,
    /// Denied: a wrong OTP, a denied or expired request, or no answer.
    Denied,
    /// Too many failures or requests: try again after `retry_after` seconds.
    Throttled {
        /// Seconds to wait.
        retry_after: u64,
    },
}

/// The most windows one walk shows before it gives up: a person going round
/// in circles is not kept forever.
const MAX_ROUNDS: u32 = 10;

/// Walks the screens until access is granted or denied.
pub fn walk<W: Window>(window: &mut W, waits: Waits) -> Result<Outcome, W::Error> {
    walk_shown(&mut Shown(window), waits)
}

/// A window shown text made fit for a terminal ([`for_terminal`]).
struct Shown<'w, W>(&'w mut W);

impl<W: Window> Window for Shown<'_, W> {
    type Error = W::Error;

    fn ask_agent(&mut self, request: LoginRequest) -> Result<LoginResponse, W::Error> {
        self.0.ask_agent(request)
    }

    fn read(&mut self, prompt: &str, hidden: bool) -> Result<Zeroizing<String>, W::Error> {
        self.0.read(&for_terminal(prompt), hidden)
    }

    fn say(&mut self, text: &str) -> Result<(), W::Error> {
        self.0.say(&for_terminal(text))
    }

    fn pause(&mut self, seconds: u64) -> Result<(), W::Error> {
        self.0.pause(seconds)
    }

    fn time(&self, unix_millis: u64) -> String {
        self.0.time(unix_millis)
    }
}

/// `text` with every control character written as an escape (`\u{1b}`): one
/// field that cannot break a line or move a terminal's cursor.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape(text, |_| true)
}

/// Output for a terminal: every control character but line breaks and tabs
/// escaped, so that text from elsewhere cannot send escape sequences.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    escape(text, |c| !matches!(c, '\n' | '\t'))
}

/// `text` with the control characters `escaped` selects written as escapes.
fn escape(text: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && escaped(c);
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`walk`], in a window that shows only what is fit for a terminal.
fn walk_shown<W: Window>(window: &mut W, waits: Waits) -> Result<Outcome, W::Error> {
    // The masked address a directory OTP went to: a hint for the email field.
    let mut hint: Option<String> = None;
    for round in 0..MAX_ROUNDS {
        let status = match window.ask_agent(LoginRequest::Status)? {
            LoginResponse::Status(status) => status,
            other => return end(window, &other),
        };
        if !status.allow_otp {
            window.say(NOT_REQUIRED)?;
            return Ok(Outcome::NotRequired);
        }
        if round == 0 {
            let lines = status_lines(&status, &|t| window.time(t));
            for line in lines {
                window.say(&line)?;
            }
        }
        if let Some((id, RequestState::Pending { .. })) = status.request {
            if let Some(outcome) = wait_for_approval(window, id, waits)? {
                return Ok(outcome);
            }
            continue;
        }
        let email = match &status.email {
            Some(email) => {
                window.say(&format!("Email address: {email}"))?;
                email.clone()
            }
            None => {
                let prompt = match &hint {
                    Some(hint) => format!("Email address ({hint}): "),
                    None => "Email address (empty to request a one-time password): ".to_owned(),
                };
                window.read(&prompt, false)?.trim().to_owned()
            }
        };
        if email.is_empty() {
            if let Some(outcome) = request_window(window, &status, waits, &mut hint)? {
                return Ok(outcome);
            }
            continue;
        }
        let prompt = match &status.email {
            Some(email) => format!("One-time password for {email} (empty to request one): "),
            None => "One-time password (empty to request one): ".to_owned(),
        };
        let code = window.read(&prompt, true)?;
        if code.is_empty() {
            if let Some(outcome) = request_window(window, &status, waits, &mut hint)? {
                return Ok(outcome);
            }
            continue;
        }
        let verify = LoginRequest::Verify {
            email,
            code: Secret(code.to_string()),
        };
        drop(code);
        let answer = window.ask_agent(verify)?;
        return end(window, &answer);
    }
    window.say("Too many steps: start again.")?;
    Ok(Outcome::Denied)
}

/// Says what `answer` means and what the walk comes to with it.
fn end<W: Window>(window: &mut W, answer: &LoginResponse) -> Result<Outcome, W::Error> {
    let text = describe(answer, &|t| window.time(t));
    window.say(&text)?;
    Ok(match answer {
        LoginResponse::Verified(Verdict::Allow { session }) => {
            Outcome::Allowed { session: *session }
        }
        LoginResponse::Verified(Verdict::NotRequired)
        | LoginResponse::Requested(Requested::NotRequired) => Outcome::NotRequired,
        LoginResponse::Verified(Verdict::Throttle { retry_after })
        | LoginResponse::Requested(Requested::Throttle { retry_after })
        | LoginResponse::Throttled { retry_after } => Outcome::Throttled {
            retry_after: *retry_after,
        },
        _ => Outcome::Denied,
    })
}

/// The second window: an OTP asked for the way this computer allows. `None`
/// goes back to the first window; `Some` ends the walk.
fn request_window<W: Window>(
    window: &mut W,
    status: &PromptState,
    waits: Waits,
    hint: &mut Option<String>,
) -> Result<Option<Outcome>, W::Error> {
    window.say("Request One-Time Password")?;
    // An empty answer where a name is asked for goes back to the first window.
    let emergency = |window: &mut W| -> Result<Option<RequestMode>, W::Error> {
        let email = window.read(
            "I need emergency access to computer. Email address: ",
            false,
        )?;
        Ok(named(&email).map(RequestMode::Emergency))
    };
    let mode = if status.auto_directory {
        let answer = window.read(
            "Press Enter to have it sent to you (or type E for emergency access): ",
            false,
        )?;
        if answer.trim().eq_ignore_ascii_case("e") {
            emergency(window)?
        } else {
            Some(RequestMode::Directory)
        }
    } else if status.auto_internal {
        let login = window.read("Login name (or type E for emergency access): ", false)?;
        match named(&login) {
            Some(e) if e.eq_ignore_ascii_case("e") => emergency(window)?,
            Some(login) => {
                let password = window.read("Password: ", true)?;
                Some(RequestMode::Internal {
                    login,
                    password: Secret(password.to_string()),
                })
            }
            None => None,
        }
    } else {
        let email = window.read("Email address: ", false)?;
        named(&email).map(RequestMode::Email)
    };
    let Some(mode) = mode else {
        return Ok(None);
    };
    let answer = window.ask_agent(LoginRequest::Request(mode))?;
    let text = describe(&answer, &|t| window.time(t));
    window.say(&text)?;
    Ok(match answer {
        LoginResponse::Requested(Requested::Send { to, .. } | Requested::Resend { to, .. }) => {
            *hint = Some(to);
            None
        }
        LoginResponse::Requested(Requested::AwaitApproval { request, .. }) => {
            wait_for_approval(window, request, waits)?
        }
        LoginResponse::Requested(Requested::NotRequired) => Some(Outcome::NotRequired),
        LoginResponse::Requested(Requested::Throttle { retry_after })
        | LoginResponse::Throttled { retry_after } => Some(Outcome::Throttled { retry_after }),
        _ => None,
    })
}

/// `answer` trimmed, or `None` when nothing was typed.
fn named(answer: &str) -> Option<String> {
    let answer = answer.trim();
    (!answer.is_empty()).then(|| answer.to_owned())
}

/// Waits for the approvers' decision on request `id`, looking every
/// [`Waits::poll`] seconds. `None` once approved (the OTP is on its way: back to
/// the first window); `Some` ends the walk.
fn wait_for_approval<W: Window>(
    window: &mut W,
    id: u64,
    waits: Waits,
) -> Result<Option<Outcome>, W::Error> {
    let mut waited = 0;
    let mut noted = 0;
    loop {
        if waited >= waits.approval {
            window.say(
                "No decision yet. Once it is approved, the one-time password will be emailed \
                 to you: log in again then.",
            )?;
            return Ok(Some(Outcome::Denied));
        }
        let step = waits.poll.clamp(1, waits.approval - waited);
        window.pause(step)?;
        waited += step;
        let status = match window.ask_agent(LoginRequest::Status)? {
            LoginResponse::Status(status) => status,
            other => return end(window, &other).map(Some),
        };
        let state = match status.request {
            Some((request, state)) if request == id => state,
            // Another request took its place: start over from the first window.
            _ => return Ok(None),
        };
        match state {
            RequestState::Pending { .. } => {
                if waited - noted >= waits.note && waited < waits.approval {
                    window.say(&format!(
                        "Still waiting for approval ({} left)...",
                        seconds(waits.approval - waited)
                    ))?;
                    noted = waited;
                }
            }
            RequestState::Approve => {
                window.say(
                    "Your request was approved: the one-time password has been emailed to you.",
                )?;
                return Ok(None);
            }
            RequestState::Deny { comment } => {
                window.say(&match comment {
                    Some(comment) => format!("Your request was denied: {comment}"),
                    None => "Your request was denied.".to_owned(),
                })?;
                return Ok(Some(Outcome::Denied));
            }
            RequestState::Expire => {
                window.say("Your request expired without a decision.")?;
                return Ok(Some(Outcome::Denied));
            }
        }
    }
}

/// `n` seconds, in words.
fn seconds(n: u64) -> String {
    if n == 1 {
        "1 second".into()
    } else {
        format!("{n} seconds")
    }
}

/// An answer in words; `time` shows a time in milliseconds since the epoch.
pub fn describe(response: &LoginResponse, time: &dyn Fn(u64) -> String) -> String {
    match response {
        LoginResponse::Status(status) => {
            let mut lines = vec![format!("User: {}", status.os_user)];
            if !status.allow_otp {
                lines.push(NOT_REQUIRED.into());
            }
            if let Some(email) = &status.email {
                lines.push(format!("Email address: {email}"));
            }
            lines.extend(status_lines(status, time));
            lines.join("\n")
        }
        LoginResponse::Requested(requested) => match requested {
            Requested::Send { to, valid_until } => format!(
                "The one-time password has been sent to {to}. It is valid until {}.",
                time(*valid_until)
            ),
            Requested::Resend { to, valid_until } => format!(
                "The one-time password has been sent to {to} again. It is valid until {}.",
                time(*valid_until)
            ),
            Requested::AwaitApproval { request, expires } => format!(
                "Your request #{request} has been sent to the approvers. If it is approved, \
                 the one-time password will be emailed to you. It expires at {}.",
                time(*expires)
            ),
            Requested::TooSoon { next_at } => format!(
                "A new one-time password cannot be requested before {}.",
                time(*next_at)
            ),
            Requested::ResendLater { to, next_at } => format!(
                "The one-time password was sent to {to} moments ago. It can be sent again \
                 from {}.",
                time(*next_at)
            ),
            Requested::NoLiveOtp => "There is no valid one-time password to resend.".into(),
            Requested::NotRequired => NOT_REQUIRED.into(),
            Requested::Disabled => "This way of requesting is not enabled on this computer.".into(),
            Requested::Refuse => "The request was refused.".into(),
            Requested::DirectoryUnavailable => "The directory cannot be reached. Try again \
                 shortly, or ask for emergency access."
                .into(),
            Requested::Throttle { retry_after } => {
                format!(
                    "Too many failed attempts. Try again in {}.",
                    seconds(*retry_after)
                )
            }
        },
        LoginResponse::Verified(verdict) => match verdict {
            Verdict::Allow { session } => format!("Access granted (session {session})."),
            Verdict::Deny => "Access denied.".into(),
            Verdict::NotRequired => NOT_REQUIRED.into(),
            Verdict::Throttle { retry_after } => {
                format!(
                    "Too many failed attempts. Try again in {}.",
                    seconds(*retry_after)
                )
            }
        },
        LoginResponse::Throttled { retry_after } => {
            format!(
                "Too many requests just now. Try again in {}.",
                seconds(*retry_after)
            )
        }
        LoginResponse::LoggedOut { ended } => if *ended {
            "Logged out."
        } else {
            "No open session to log out of."
        }
        .into(),
        LoginResponse::Noted => "Recorded.".into(),
    }
}

/// What the prompt knows of the person's latest request and OTP, line by line.
fn status_lines(status: &PromptState, time: &dyn Fn(u64) -> String) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some((id, state)) = &status.request {
        lines.push(match state {
            RequestState::Pending { expires } => {
                format!(
                    "Request #{id} is waiting for approval until {}.",
                    time(*expires)
                )
            }
            RequestState::Approve => {
                format!("Request #{id} was approved: the one-time password has been sent.")
            }
            RequestState::Deny { comment } => match comment {
                Some(comment) => format!("Request #{id} was denied: {comment}"),
                None => format!("Request #{id} was denied."),
            },
            RequestState::Expire => format!("Request #{id} expired without a decision."),
        });
    }
    if let Some(until) = status.otp_valid_until {
        lines.push(format!(
            "Your one-time password is valid until {}.",
            time(until)
        ));
    }
    if let Some(next) = status.next_new_at {
        lines.push(format!(
            "A new one-time password can be requested from {}.",
            time(next)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A window that answers from scripts and records what it was asked.
    #[derive(Default)]
    struct Scripted {
        answers: VecDeque<LoginResponse>,
        typed: VecDeque<&'static str>,
        asked: Vec<LoginRequest>,
        prompts: Vec<String>,
        said: Vec<String>,
        paused: u64,
    }

    impl Window for Scripted {
        type Error = ();

        fn ask_agent(&mut self, request: LoginRequest) -> Result<LoginResponse, ()> {
            self.asked.push(request);
            self.answers.pop_front().ok_or(())
        }

        fn read(&mut self, prompt: &str, _: bool) -> Result<Zeroizing<String>, ()> {
            self.prompts.push(prompt.into());
            self.typed
                .pop_front()
                .map(|t| Zeroizing::new(t.into()))
                .ok_or(())
        }

        fn say(&mut self, text: &str) -> Result<(), ()> {
            self.said.push(text.into());
            Ok(())
        }

        fn pause(&mut self, seconds: u64) -> Result<(), ()> {
            self.paused += seconds;
            Ok(())
        }

        fn time(&self, unix_millis: u64) -> String {
            unix_millis.to_string()
        }
    }

    fn state(email: Option<&str>, request: Option<(u64, RequestState)>) -> LoginResponse {
        LoginResponse::Status(PromptState {
            os_user: "alice".into(),
            allow_otp: true,
            auto_directory: false,
            auto_internal: false,
            record_input: false,
            email: email.map(Into::into),
            request,
            otp_valid_until: None,
            next_new_at: None,
        })
    }

    #[test]
    fn an_access_request_is_waited_for_then_the_otp_is_asked() {
        let pending = RequestState::Pending { expires: 9 };
        let mut window = Scripted {
            answers: VecDeque::from([
                state(None, None),
                LoginResponse::Requested(Requested::AwaitApproval {
                    request: 7,
                    expires: 9,
                }),
                state(Some("a@example.com"), Some((7, pending))),
                state(Some("a@example.com"), Some((7, RequestState::Approve))),
                state(Some("a@example.com"), Some((7, RequestState::Approve))),
                LoginResponse::Verified(Verdict::Allow { session: 3 }),
            ]),
            typed: VecDeque::from(["", "a@example.com", "12345678"]),
            ..Scripted::default()
        };
        let outcome = walk(&mut window, Waits::up_to(60)).unwrap();
        assert_eq!(outcome, Outcome::Allowed { session: 3 });
        assert_eq!(window.paused, 10, "two looks, 5 s apart");
        assert_eq!(
            window.asked[1],
            LoginRequest::Request(RequestMode::Email("a@example.com".into()))
        );
        assert!(matches!(
            &window.asked[5],
            LoginRequest::Verify { email, code } if email == "a@example.com" && code.0 == "12345678"
        ));
        assert!(window.said.iter().any(|s| s.contains("was approved")));
    }

    #[test]
    fn without_a_wait_the_person_is_told_to_come_back() {
        let mut window = Scripted {
            answers: VecDeque::from([
                state(None, None),
                LoginResponse::Requested(Requested::AwaitApproval {
                    request: 7,
                    expires: 9,
                }),
            ]),
            typed: VecDeque::from(["", "a@example.com"]),
            ..Scripted::default()
        };
        assert_eq!(walk(&mut window, Waits::up_to(0)), Ok(Outcome::Denied));
        assert!(window.said.last().unwrap().contains("log in again"));
    }

    #[test]
    fn a_denial_says_the_approvers_comment() {
        let mut window = Scripted {
            answers: VecDeque::from([
                state(
                    Some("a@example.com"),
                    Some((7, RequestState::Pending { expires: 9 })),
                ),
                state(
                    Some("a@example.com"),
                    Some((
                        7,
                        RequestState::Deny {
                            comment: Some("not today".into()),
                        },
                    )),
                ),
            ]),
            ..Scripted::default()
        };
        assert_eq!(walk(&mut window, Waits::up_to(60)), Ok(Outcome::Denied));
        assert!(
            window
                .said
                .iter()
                .any(|s| s == "Your request was denied: not today")
        );
    }

    #[test]
    fn what_the_server_sends_is_shown_with_its_control_characters_escaped() {
        let email = "a\u{1b}[2J@example.com";
        let denied = RequestState::Deny {
            comment: Some("no\r\u{1b}[1A".into()),
        };
        let mut window = Scripted {
            answers: VecDeque::from([
                state(Some(email), None),
                LoginResponse::Verified(Verdict::Deny),
                state(Some(email), Some((7, denied))),
            ]),
            typed: VecDeque::from(["12345678"]),
            ..Scripted::default()
        };
        let _ = walk(&mut window, Waits::up_to(60));
        let shown = window.prompts.iter().chain(&window.said);
        assert!(
            shown
                .clone()
                .all(|text| !text.contains('\u{1b}') && !text.contains('\r')),
            "{:?} {:?}",
            window.prompts,
            window.said
        );
        assert!(
            shown
                .clone()
                .any(|text| text.contains("a\\u{1b}[2J@example.com"))
        );
    }

    #[test]
    fn control_characters_are_escaped_for_a_terminal() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(for_terminal("a\tb\n\u{7}"), "a\tb\n\\u{7}");
    }

    #[test]
    fn an_empty_name_goes_back_to_the_first_window_without_a_request() {
        let internal = LoginResponse::Status(PromptState {
            auto_internal: true,
            ..match state(None, None) {
                LoginResponse::Status(status) => status,
                _ => unreachable!(),
            }
        });
        let mut window = Scripted {
            answers: VecDeque::from([internal.clone(), internal]),
            typed: VecDeque::from(["", "", "x@example.com", "12345678"]),
            ..Scripted::default()
        };
        let _ = walk(&mut window, Waits::up_to(60));
        assert!(
            !window
                .asked
                .iter()
                .any(|asked| matches!(asked, LoginRequest::Request(_))),
            "{:?}",
            window.asked
        );
        assert!(!window.prompts.iter().any(|p| p == "Password: "));
        assert_eq!(
            window
                .prompts
                .iter()
                .filter(|p| p.starts_with("Email address"))
                .count(),
            2
        );
    }

    #[test]
    fn one_second_is_one_second() {
        let once = LoginResponse::Throttled { retry_after: 1 };
        assert_eq!(
            describe(&once, &|t| t.to_string()),
            "Too many requests just now. Try again in 1 second."
        );
    }
}

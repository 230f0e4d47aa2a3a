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

#![forbid(unsafe_code)]

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
    let emergency = |window: &mut W| -> Result<RequestMode, W::Error> {
        let email = window.read(
            "I need emergency access to computer. Email address: ",
            false,
        )?;
        Ok(RequestMode::Emergency(email.trim().to_owned()))
    };
    let mode = if status.auto_directory {
        let answer = window.read(
            "Press Enter to have it sent to you (or type E for emergency access): ",
            false,
        )?;
        if answer.trim().eq_ignore_ascii_case("e") {
            emergency(window)?
        } else {
            RequestMode::Directory
        }
    } else if status.auto_internal {
        let login = window.read("Login name (or type E for emergency access): ", false)?;
        if login.trim().eq_ignore_ascii_case("e") {
            emergency(window)?
        } else {
            let password = window.read("Password: ", true)?;
            RequestMode::Internal {
                login: login.trim().to_owned(),
                password: Secret(password.to_string()),
            }
        }
    } else {
        let email = window.read("Email address: ", false)?;
        RequestMode::Email(email.trim().to_owned())
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
                        "Still waiting for approval ({} seconds left)...",
                        waits.approval - waited
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
                format!("Too many failed attempts. Try again in {retry_after} seconds.")
            }
        },
        LoginResponse::Verified(verdict) => match verdict {
            Verdict::Allow { session } => format!("Access granted (session {session})."),
            Verdict::Deny => "Access denied.".into(),
            Verdict::NotRequired => NOT_REQUIRED.into(),
            Verdict::Throttle { retry_after } => {
                format!("Too many failed attempts. Try again in {retry_after} seconds.")
            }
        },
        LoginResponse::Throttled { retry_after } => {
            format!("Too many requests just now. Try again in {retry_after} seconds.")
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
        said: Vec<String>,
        paused: u64,
    }

    impl Window for Scripted {
        type Error = ();

        fn ask_agent(&mut self, request: LoginRequest) -> Result<LoginResponse, ()> {
            self.asked.push(request);
            self.answers.pop_front().ok_or(())
        }

        fn read(&mut self, _: &str, _: bool) -> Result<Zeroizing<String>, ()> {
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
}

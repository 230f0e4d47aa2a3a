//! `otpgate login`: the login prompt of the seed, on the terminal, talking to the
//! local agent. Interactive by default (the seed's screens as prompts); each step
//! is also a subcommand for scripts, with `--json`.
//!
//! Exit status: 0 on success, 1 when refused or denied, 2 on an error.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use otpgate_actors::names::{for_terminal, printable};
use zeroize::Zeroizing;

use otpgate_protocol::local::{LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, PromptState, RequestMode, RequestState, Requested, Secret, Verdict,
};

use crate::cli::args::Login;
use crate::cli::time;
use crate::unix::{self, PromptError};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Refused or denied.
pub const EXIT_REFUSED: u8 = 1;
/// Something went wrong.
pub const EXIT_ERROR: u8 = 2;

/// Why the prompt could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The agent could not be reached.
    #[error(transparent)]
    Agent(#[from] PromptError),
    /// The agent refused or could not serve the request.
    #[error("{}", describe_local(*.0))]
    Local(LocalError),
    /// The agent answered something unexpected.
    #[error("unexpected answer from the agent")]
    Unexpected,
    /// The terminal failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl LoginError {
    /// The exit status: refused (1) when the agent would not act for the
    /// caller, an error (2) otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Local(LocalError::Forbidden) => EXIT_REFUSED,
            _ => EXIT_ERROR,
        }
    }
}

fn describe_local(error: LocalError) -> &'static str {
    match error {
        LocalError::NotConnected => "the agent is not connected to the server; try again shortly",
        LocalError::Forbidden => "only root may act for another user",
        LocalError::UnknownCaller => "the agent cannot tell who you are",
        LocalError::Unavailable => "the server could not answer; try again shortly",
        _ => "the agent could not serve the request",
    }
}

/// Where the prompt talks to, and as whom.
pub struct Prompt<'a> {
    /// The agent's socket.
    pub socket: &'a Path,
    /// Another OS user to act for (root only).
    pub os_user: Option<String>,
}

impl Prompt<'_> {
    /// Sends one login request through the agent.
    pub async fn ask(&self, request: LoginRequest) -> Result<LoginResponse, LoginError> {
        let request = LocalRequest::Login {
            os_user: self.os_user.clone(),
            request,
        };
        match unix::ask(self.socket, &request).await? {
            LocalResponse::Login(response) => Ok(response),
            LocalResponse::Fail(error) => Err(LoginError::Local(error)),
            LocalResponse::Status(_) => Err(LoginError::Unexpected),
        }
    }
}

/// What the prompt says when this computer does not use OTPs.
const NOT_REQUIRED: &str =
    "One-time passwords are not required on this computer: log in without one.";

/// The exit status for an answer: 0 when the login may go on (or a request is
/// on its way), 1 when refused or denied.
pub fn exit_code(response: &LoginResponse) -> u8 {
    let ok = match response {
        LoginResponse::Status(_) => true,
        LoginResponse::Requested(requested) => matches!(
            requested,
            Requested::Send { .. }
                | Requested::Resend { .. }
                | Requested::ResendLater { .. }
                | Requested::AwaitApproval { .. }
                | Requested::NotRequired
        ),
        LoginResponse::Verified(verdict) => {
            matches!(verdict, Verdict::Allow { .. } | Verdict::NotRequired)
        }
        LoginResponse::LoggedOut { ended } => *ended,
        LoginResponse::Throttled { .. } => false,
    };
    if ok { EXIT_OK } else { EXIT_REFUSED }
}

/// Prints an answer for a person or, with `json`, for a script; returns the
/// exit status.
pub fn report(response: &LoginResponse, json: bool) -> ExitCode {
    if json {
        match serde_json::to_string(response) {
            Ok(text) => println!("{text}"),
            Err(_) => return ExitCode::from(EXIT_ERROR),
        }
    } else {
        println!("{}", for_terminal(&describe(response)));
    }
    ExitCode::from(exit_code(response))
}

/// An answer in words.
pub fn describe(response: &LoginResponse) -> String {
    match response {
        LoginResponse::Status(status) => describe_status(status),
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
    }
}

fn describe_status(status: &PromptState) -> String {
    let mut lines = vec![format!("User: {}", status.os_user)];
    if !status.allow_otp {
        lines.push(NOT_REQUIRED.into());
    }
    if let Some(email) = &status.email {
        lines.push(format!("Email address: {email}"));
    }
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
    lines.join("\n")
}

/// Reads one line from standard input, without echo when it is a terminal.
pub fn read_secret(prompt: &str) -> io::Result<Zeroizing<String>> {
    let stdin = io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprint!("{prompt}");
        io::stderr().flush()?;
    }
    let saved = if interactive {
        hide_input(&stdin)
    } else {
        None
    };
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &saved);
        eprintln!();
    }
    read?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// Turns terminal echo off; returns the settings to restore.
fn hide_input(stdin: &io::Stdin) -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let saved = tcgetattr(stdin).ok()?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(stdin, SetArg::TCSANOW, &quiet).ok()?;
    Some(saved)
}

fn read_line(prompt: &str) -> io::Result<String> {
    eprint!("{prompt}");
    io::stderr().flush()?;
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "no more input",
        ));
    }
    Ok(line.trim().to_owned())
}

/// The interactive prompt: the seed's pop-up windows as terminal screens.
pub async fn interactive(prompt: &Prompt<'_>) -> Result<ExitCode, LoginError> {
    loop {
        let LoginResponse::Status(status) = prompt.ask(LoginRequest::Status).await? else {
            return Err(LoginError::Unexpected);
        };
        if !status.allow_otp {
            eprintln!("{NOT_REQUIRED}");
            return Ok(ExitCode::from(EXIT_OK));
        }
        eprintln!("\n=== One-time password required ===");
        eprintln!("{}", for_terminal(&describe_status(&status)));
        let email = match &status.email {
            Some(email) => email.clone(),
            None => read_line("Email address (empty to request a one-time password): ")?,
        };
        if email.is_empty() {
            request_screen(prompt, &status).await?;
            continue;
        }
        let code = read_secret("Password (one-time password; empty to request one): ")?;
        if code.is_empty() {
            request_screen(prompt, &status).await?;
            continue;
        }
        let response = prompt
            .ask(LoginRequest::Verify {
                email,
                code: Secret(code.to_string()),
            })
            .await?;
        eprintln!("{}", for_terminal(&describe(&response)));
        if let LoginResponse::Verified(Verdict::Allow { .. }) = response {
            return Ok(ExitCode::from(EXIT_OK));
        }
        if let LoginResponse::Verified(Verdict::Throttle { .. }) = response {
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
    }
}

/// The second window: how this computer lets a person ask for an OTP.
async fn request_screen(prompt: &Prompt<'_>, status: &PromptState) -> Result<(), LoginError> {
    eprintln!("\n=== Request One-Time Password ===");
    let emergency = || -> io::Result<RequestMode> {
        Ok(RequestMode::Emergency(read_line(
            "I need emergency access to computer. Email address: ",
        )?))
    };
    let mode = if status.auto_directory {
        let answer = read_line("Press Enter to request (or type E for emergency access): ")?;
        if answer.eq_ignore_ascii_case("e") {
            emergency()?
        } else {
            RequestMode::Directory
        }
    } else if status.auto_internal {
        let login = read_line("Login name (or type E for emergency access): ")?;
        if login.eq_ignore_ascii_case("e") {
            emergency()?
        } else {
            let password = read_secret("Password: ")?;
            RequestMode::Internal {
                login,
                password: Secret(password.to_string()),
            }
        }
    } else {
        RequestMode::Email(read_line("Email address: ")?)
    };
    let response = prompt.ask(LoginRequest::Request(mode)).await?;
    eprintln!("{}", describe(&response));
    Ok(())
}

/// Runs one step of the login (or, without one, walks through the screens).
pub(super) async fn step(
    prompt: &Prompt<'_>,
    step: Option<Login>,
    json: bool,
) -> Result<ExitCode, LoginError> {
    let request = match step {
        None => return interactive(prompt).await,
        Some(Login::Agent) => {
            return match unix::ask(prompt.socket, &LocalRequest::Status).await? {
                LocalResponse::Status(status) => {
                    if json {
                        println!("{}", serde_json::to_string(&status).unwrap_or_default());
                    } else {
                        let client = status.client_id.as_deref().unwrap_or("(not yet known)");
                        let link = match (status.connected, status.server_rtt_us) {
                            (true, Some(rtt)) => format!("connected, round trip {rtt} µs"),
                            (true, None) => "connected, server not answering".to_owned(),
                            (false, _) => "not connected".to_owned(),
                        };
                        println!("user:     {}", printable(&status.os_user));
                        println!("computer: {}", printable(client));
                        println!("server:   {link}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                LocalResponse::Fail(error) => Err(LoginError::Local(error)),
                LocalResponse::Login(_) => Err(LoginError::Unexpected),
            };
        }
        Some(Login::Status) => LoginRequest::Status,
        Some(Login::Request {
            email,
            ad,
            internal,
            emergency,
        }) => LoginRequest::Request(match (email, ad, internal) {
            (Some(email), _, _) if emergency => RequestMode::Emergency(email),
            (Some(email), _, _) => RequestMode::Email(email),
            (None, true, _) => RequestMode::Directory,
            (None, false, Some(login)) => RequestMode::Internal {
                login,
                password: Secret(read_secret("Password: ")?.to_string()),
            },
            (None, false, None) => {
                eprintln!(
                    "otpgate: say how: --email, --ad, --internal LOGIN or --emergency --email"
                );
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        }),
        Some(Login::Resend) => LoginRequest::Resend,
        Some(Login::Verify { email }) => LoginRequest::Verify {
            email,
            code: Secret(read_secret("One-time password: ")?.to_string()),
        },
        Some(Login::Logout { session }) => LoginRequest::Logout { session },
    };
    Ok(report(&prompt.ask(request).await?, json))
}

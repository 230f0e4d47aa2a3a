//! `otpgate login`: the login prompt of the seed, on the terminal, talking to the
//! local agent. Interactive by default (the seed's screens as prompts); each step
//! is also a subcommand for scripts, with `--json`.
//!
//! Exit status: 0 on success, 1 when refused or denied, 2 on an error.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use zeroize::Zeroizing;

use otpgate_protocol::local::{LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};
use otpgate_screens::{self as screens, Outcome, Waits, Window, for_terminal, printable};

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
#[derive(Clone)]
pub struct Prompt {
    /// The agent's socket.
    pub socket: PathBuf,
    /// Another OS user to act for (root only).
    pub os_user: Option<String>,
}

impl Prompt {
    /// Sends one login request through the agent.
    pub async fn ask(&self, request: LoginRequest) -> Result<LoginResponse, LoginError> {
        let request = LocalRequest::Login {
            os_user: self.os_user.clone(),
            request,
        };
        match unix::ask(&self.socket, &request).await? {
            LocalResponse::Login(response) => Ok(response),
            LocalResponse::Fail(error) => Err(LoginError::Local(error)),
            _ => Err(LoginError::Unexpected),
        }
    }
}

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
        LoginResponse::Noted => true,
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
        println!("{}", for_terminal(&screens::describe(response, &time)));
    }
    ExitCode::from(exit_code(response))
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

/// The interactive prompt: the seed's pop-up windows as terminal screens
/// (see [`screens::walk`]), on a blocking thread: the terminal is read there.
/// An access request's decision is waited for up to `approval_wait` seconds.
pub async fn interactive(prompt: &Prompt, approval_wait: u64) -> Result<ExitCode, LoginError> {
    let mut window = Terminal {
        prompt: prompt.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let waits = Waits::up_to(approval_wait);
    let outcome = tokio::task::spawn_blocking(move || screens::walk(&mut window, waits))
        .await
        .map_err(|_| LoginError::Unexpected)??;
    Ok(ExitCode::from(match outcome {
        Outcome::Allowed { .. } | Outcome::NotRequired => EXIT_OK,
        Outcome::Denied | Outcome::Throttled { .. } => EXIT_REFUSED,
    }))
}

/// The screens on this terminal: prompts and notes on standard error, answers
/// from standard input.
struct Terminal {
    prompt: Prompt,
    runtime: tokio::runtime::Handle,
}

impl Window for Terminal {
    type Error = LoginError;

    fn ask_agent(&mut self, request: LoginRequest) -> Result<LoginResponse, LoginError> {
        self.runtime.block_on(self.prompt.ask(request))
    }

    fn read(&mut self, prompt: &str, hidden: bool) -> Result<Zeroizing<String>, LoginError> {
        Ok(if hidden {
            read_secret(prompt)?
        } else {
            Zeroizing::new(read_line(prompt)?)
        })
    }

    fn say(&mut self, text: &str) -> Result<(), LoginError> {
        eprintln!("{text}");
        Ok(())
    }

    fn pause(&mut self, seconds: u64) -> Result<(), LoginError> {
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        Ok(())
    }

    fn time(&self, unix_millis: u64) -> String {
        time(unix_millis)
    }
}

/// Runs one step of the login (or, without one, walks through the screens,
/// waiting up to `approval_wait` seconds for an access request's decision).
pub(super) async fn step(
    prompt: &Prompt,
    step: Option<Login>,
    json: bool,
    approval_wait: u64,
) -> Result<ExitCode, LoginError> {
    let request = match step {
        None => return interactive(prompt, approval_wait).await,
        Some(Login::Agent) => {
            return match unix::ask(&prompt.socket, &LocalRequest::Status).await? {
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
                _ => Err(LoginError::Unexpected),
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

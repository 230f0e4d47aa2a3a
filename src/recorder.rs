//! `otpgate record`: runs the person's shell (or a command) under a
//! pseudo-terminal and records what it shows, with timing, as asciicast v2;
//! window resizes included, typed input only when asked for.
//!
//! The terminal never waits on the recording. The thread that copies the
//! shell's output to the person's terminal hands each piece to the recorder
//! without blocking; the recorder cuts the events into chunks and hands them
//! to the local agent, which acknowledges a chunk once it is on disk (see
//! `agent::spool`). Chunks not acknowledged yet are held in memory, up to a
//! bound; past it, output is dropped from the recording (never from the
//! terminal) and the next chunk says so, which marks the recording incomplete
//! on the server. When the shell exits, what the agent has not taken yet is
//! handed to a detached `otpgate record --deliver`, which keeps trying.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

use otpgate_protocol::local::{LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, LoginResponse};
use otpgate_protocol::record::{
    MAX_CHUNK_EVENTS, RecordChunk, RecordingEnd, RecordingKey, RecordingStart,
};

use crate::cast::{self, Kind};
use crate::records;
use crate::unix;

/// How long events wait before they are sent as a chunk, at most.
const CHUNK_EVERY: Duration = Duration::from_millis(500);
/// How long after the command's exit its terminal's last output is waited
/// for (something it left running in the background may hold the terminal).
const LAST_OUTPUT_WITHIN: Duration = Duration::from_secs(1);
/// How long the recorder keeps trying to hand over the last chunks before it
/// leaves them to a detached deliverer.
const FINISH_WITHIN: Duration = Duration::from_secs(5);
/// How long the detached deliverer keeps trying.
const DELIVER_WITHIN: Duration = Duration::from_secs(24 * 60 * 60);
/// How long one exchange with the agent may take.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to record.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The agent's socket.
    pub socket: PathBuf,
    /// What to run; empty: the command sshd was asked for
    /// (`SSH_ORIGINAL_COMMAND`) by the user's shell, else the user's login
    /// shell.
    pub command: Vec<OsString>,
    /// Record typed input too, whatever the computer's options say (they
    /// are asked through the agent: `record_input`).
    pub input: bool,
    /// The most bytes of chunks held while the agent has not taken them.
    pub buffer_limit: usize,
}

/// Why recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The pseudo-terminal or the command could not be set up.
    #[error("cannot start the recorded command: {0}")]
    Start(String),
}

/// Something the terminal did, when.
enum Seen {
    Output(Instant, Vec<u8>),
    Input(Instant, Vec<u8>),
    Resize(Instant, u16, u16),
    /// The command exited with this status.
    Exit(i32),
    /// The terminal was closed: its last output has been seen.
    Closed,
}

/// The command line to run, and how it is named in the recording.
fn command_line(config: &RecorderConfig) -> (std::process::Command, String) {
    if let Some((program, args)) = config.command.split_first() {
        let mut command = std::process::Command::new(program);
        command.args(args);
        let named = config
            .command
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        return (command, named);
    }
    let shell = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|user| user.shell)
        .filter(|shell| !shell.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    let mut command = std::process::Command::new(&shell);
    match std::env::var_os("SSH_ORIGINAL_COMMAND") {
        Some(asked) => {
            let named = asked.to_string_lossy().into_owned();
            command.arg("-c").arg(asked);
            (command, named)
        }
        None => {
            command.arg("-l");
            (command, shell.display().to_string())
        }
    }
}

/// The size of terminal `fd`, or 80x24 when it is not one.
fn size_of(fd: impl std::os::fd::AsFd) -> (u16, u16) {
    rustix::termios::tcgetwinsize(fd).map_or((80, 24), |size| {
        if size.ws_col == 0 || size.ws_row == 0 {
            (80, 24)
        } else {
            (size.ws_col, size.ws_row)
        }
    })
}

/// Puts the person's terminal in raw mode while it lives (the shell under the
/// pseudo-terminal does the echoing and line editing), and back after.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Self(None);
        }
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        Self(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// Whether the computer's options (through the agent and the server) say to
/// record typed input; no when they cannot be asked.
async fn input_wanted(socket: &Path) -> bool {
    let status = LocalRequest::Login {
        os_user: None,
        request: LoginRequest::Status,
    };
    matches!(
        timeout(AGENT_TIMEOUT, unix::ask(socket, &status)).await,
        Ok(Ok(LocalResponse::Login(LoginResponse::Status(state)))) if state.record_input
    )
}

/// Runs and records; the command's exit status.
pub async fn run(mut config: RecorderConfig) -> Result<i32, RecordError> {
    config.input = config.input || input_wanted(&config.socket).await;
    let failed = |err: &dyn std::fmt::Display| RecordError::Start(err.to_string());
    let (width, height) = size_of(std::io::stdout());
    let (pty, pts) = pty_process::blocking::open().map_err(|e| failed(&e))?;
    pty.resize(pty_process::Size::new(height, width))
        .map_err(|e| failed(&e))?;
    let (command, named) = command_line(&config);
    let signals = take_signals();
    let mut child = pty_process::blocking::Command::new(command.get_program())
        .args(command.get_args())
        .spawn(pts)
        .map_err(|e| failed(&e))?;
    let started = Instant::now();
    forward_signals(signals, &child);
    let start = RecordingStart {
        width,
        height,
        started_ms: unix_millis(),
        command: named,
        term: std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        input: config.input,
    };
    let (seen, events) = mpsc::unbounded_channel();
    let raw = RawMode::enter();

    // The shell's output to the terminal, and to the recording.
    let mut output: File = pty.as_fd_clone().map_err(|e| failed(&e))?;
    let to_recording = seen.clone();
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buffer = vec![0; 16 * 1024];
        // EIO once the shell and its children have closed the terminal.
        while let Ok(n @ 1..) = output.read(&mut buffer) {
            let _ = stdout.write_all(&buffer[..n]);
            let _ = stdout.flush();
            let _ = to_recording.send(Seen::Output(Instant::now(), buffer[..n].to_vec()));
        }
        let _ = to_recording.send(Seen::Closed);
    });
    // What the person types, to the shell.
    let mut input: File = pty.as_fd_clone().map_err(|e| failed(&e))?;
    let typed = config.input.then(|| seen.clone());
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = vec![0; 4096];
        while let Ok(n @ 1..) = stdin.read(&mut buffer) {
            // Into the recording before the shell has it: what it answers
            // (its exit too) is recorded after what it was typed.
            if let Some(typed) = &typed {
                let _ = typed.send(Seen::Input(Instant::now(), buffer[..n].to_vec()));
            }
            if input.write_all(&buffer[..n]).is_err() {
                return;
            }
        }
        // The person's side ended (`ssh host cmd < file`, a closed
        // connection): the command reads an end of file too.
        let _ = input.write_all(&[END_OF_FILE]);
    });
    // The command's end.
    let exited = seen.clone();
    std::thread::spawn(move || {
        let status = child.wait().map_or(1, |status| {
            use std::os::unix::process::ExitStatusExt;
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
        });
        let _ = exited.send(Seen::Exit(status));
    });
    // The person's window, to the shell's terminal.
    let resized = seen;
    let resizer = tokio::spawn(async move {
        let Ok(mut changes) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while changes.recv().await.is_some() {
            let (width, height) = size_of(std::io::stdout());
            let _ = pty.resize(pty_process::Size::new(height, width));
            let _ = resized.send(Seen::Resize(Instant::now(), width, height));
        }
    });

    let mut recording = Recording::new(start, started, config.buffer_limit);
    let status = recording.record(events, &config.socket).await;
    resizer.abort();
    drop(raw);
    recording.finish(&config.socket).await;
    Ok(status)
}

/// The terminal's end-of-file character (Ctrl-D).
const END_OF_FILE: u8 = 0x04;

/// The signals the recorder takes in the command's place: when the person's
/// terminal hangs up (a dropped SSH connection) or the recorder is asked to
/// stop, the command's process group is hung up in turn, instead of the
/// recorder dying with what it still holds: the command ends, and the
/// recording is finished and handed over as usual.
///
/// They are taken before the command is spawned: a signal a process catches
/// is back to its default action in a program it executes, while one it
/// ignores stays ignored. So a recorder started where hang-ups are ignored
/// (under nohup, say) still starts its command with the default action, and
/// a hang-up ends it: the recorder does not pass nohup on.
fn take_signals() -> Vec<(tokio::signal::unix::Signal, Signal)> {
    use tokio::signal::unix::{SignalKind, signal};
    [SignalKind::hangup(), SignalKind::terminate()]
        .into_iter()
        .filter_map(|kind| Some((signal(kind).ok()?, Signal::SIGHUP)))
        .collect()
}

/// Passes each of `signals` on to `child`'s process group (see
/// [`take_signals`]).
fn forward_signals(
    signals: Vec<(tokio::signal::unix::Signal, Signal)>,
    child: &std::process::Child,
) {
    let Ok(group) = i32::try_from(child.id()) else {
        return;
    };
    // The command leads a session of its own: its group is its pid.
    let group = nix::unistd::Pid::from_raw(group);
    for (mut taken, passed) in signals {
        tokio::spawn(async move {
            while taken.recv().await.is_some() {
                let _ = nix::sys::signal::killpg(group, passed);
            }
        });
    }
}

/// Milliseconds since the Unix epoch, now.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Dup'ing the pseudo-terminal's descriptor: one for reading, one for writing.
trait CloneFd {
    fn as_fd_clone(&self) -> std::io::Result<File>;
}

impl CloneFd for pty_process::blocking::Pty {
    fn as_fd_clone(&self) -> std::io::Result<File> {
        use std::os::fd::AsFd;
        Ok(File::from(self.as_fd().try_clone_to_owned()?))
    }
}

/// A recording being made: events cut into chunks, and the chunks the agent
/// has not taken yet.
pub struct Recording {
    key: RecordingKey,
    started: Instant,
    start: Option<RecordingStart>,
    /// Event lines not in a chunk yet.
    lines: String,
    /// Since when `lines` has waited.
    waiting_since: Option<Instant>,
    /// Output bytes that end in the middle of a character.
    carry: Vec<u8>,
    next_seq: u64,
    /// Chunks not taken by the agent yet, oldest first, and their bytes.
    unsent: VecDeque<RecordChunk>,
    held: usize,
    limit: usize,
    /// Output was dropped since the last chunk.
    lost: bool,
    agent: Option<AgentLink>,
}

impl Recording {
    /// A recording that starts as `start`, at `started`, holding at most
    /// `limit` bytes for the agent.
    pub fn new(start: RecordingStart, started: Instant, limit: usize) -> Self {
        Self {
            key: rand::random(),
            started,
            start: Some(start),
            lines: String::new(),
            waiting_since: None,
            carry: Vec::new(),
            next_seq: 0,
            unsent: VecDeque::new(),
            held: 0,
            limit,
            lost: false,
            agent: None,
        }
    }

    fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64()
    }

    /// Takes events until the command has exited and its terminal has shown
    /// its last output (or a moment after the exit, when something it left
    /// running keeps the terminal open); the command's status.
    async fn record(&mut self, mut events: mpsc::UnboundedReceiver<Seen>, socket: &Path) -> i32 {
        let mut exit: Option<(i32, Instant)> = None;
        let mut closed = false;
        loop {
            if let Some((status, at)) = exit
                && (closed || at.elapsed() >= LAST_OUTPUT_WITHIN)
            {
                let end = RecordingEnd {
                    at_ms: unix_millis(),
                    status,
                };
                self.cut(Some(end));
                return status;
            }
            let mut wait = match self.waiting_since {
                Some(since) => CHUNK_EVERY.saturating_sub(since.elapsed()),
                None => Duration::from_secs(3600),
            };
            // Chunks the agent refused for now are offered again soon,
            // whether or not the terminal shows anything more.
            if !self.unsent.is_empty() {
                wait = wait.min(CHUNK_EVERY);
            }
            if let Some((_, at)) = exit {
                wait = wait.min(LAST_OUTPUT_WITHIN.saturating_sub(at.elapsed()));
            }
            tokio::select! {
                seen = events.recv() => match seen {
                    Some(Seen::Output(at, bytes)) => self.output(at, &bytes),
                    Some(Seen::Input(at, bytes)) => {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        self.push(cast::event(self.seconds(at), Kind::Input, &text));
                    }
                    Some(Seen::Resize(at, width, height)) => {
                        self.push(cast::event(self.seconds(at), Kind::Resize, &format!("{width}x{height}")));
                    }
                    Some(Seen::Exit(status)) => exit = Some((status, Instant::now())),
                    Some(Seen::Closed) => closed = true,
                    // Everyone who reports is gone: nothing more will come.
                    None => {
                        closed = true;
                        exit.get_or_insert((1, Instant::now()));
                    }
                },
                () = sleep(wait) => self.cut(None),
            }
            self.send(socket).await;
        }
    }

    /// Output `bytes` seen at `at`: whole characters now, a cut one with the
    /// next output.
    fn output(&mut self, at: Instant, bytes: &[u8]) {
        self.carry.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest: &[u8] = &self.carry;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(err) => {
                    let (valid, after) = rest.split_at(err.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match err.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // Cut in the middle: the rest comes with the next read.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.carry = rest.to_vec();
        if !text.is_empty() {
            self.push(cast::event(self.seconds(at), Kind::Output, &text));
        }
    }

    /// Adds an event line; a full chunk is cut.
    fn push(&mut self, line: String) {
        if self.lines.len() + line.len() > MAX_CHUNK_EVENTS {
            self.cut(None);
        }
        // One event longer than a chunk: cut into several.
        if line.len() > MAX_CHUNK_EVENTS {
            return self.push_long(&line);
        }
        self.lines.push_str(&line);
        self.waiting_since.get_or_insert_with(Instant::now);
    }

    /// An output event too long for one chunk, as several shorter ones.
    fn push_long(&mut self, line: &str) {
        let Some(event) = cast::parse(line.trim_end()) else {
            return;
        };
        let kind = event.kind.unwrap_or(Kind::Output);
        let mut data = event.data.as_str();
        while !data.is_empty() {
            // A quarter of a chunk of text stays under it once escaped
            // (JSON escapes a byte in at most 6).
            let mut cut = data.len().min(MAX_CHUNK_EVENTS / 8);
            while !data.is_char_boundary(cut) {
                cut -= 1;
            }
            self.push(cast::event(event.seconds, kind, &data[..cut]));
            data = &data[cut..];
        }
    }

    /// Makes a chunk of the lines waiting (and the end, if it is one), held
    /// for the agent; dropped, and the loss noted, when too much is held.
    fn cut(&mut self, end: Option<RecordingEnd>) {
        self.waiting_since = None;
        if self.lines.is_empty() && end.is_none() && self.start.is_none() {
            return;
        }
        let events = std::mem::take(&mut self.lines).into_bytes();
        if self.held + events.len() > self.limit && self.next_seq > 0 && end.is_none() {
            self.lost = true;
            return;
        }
        let chunk = RecordChunk {
            recording: self.key,
            seq: self.next_seq,
            start: self.start.take(),
            events,
            lost: std::mem::take(&mut self.lost),
            end,
        };
        self.next_seq += 1;
        self.held += chunk.events.len();
        self.unsent.push_back(chunk);
    }

    /// Hands what is held to the agent, oldest first, while it takes them.
    async fn send(&mut self, socket: &Path) {
        while let Some(chunk) = self.unsent.front() {
            let link = match self.agent.as_mut() {
                Some(link) => link,
                None => match AgentLink::connect(socket).await {
                    Some(link) => self.agent.insert(link),
                    None => return,
                },
            };
            match link.hand(chunk.clone()).await {
                Some(true) => {
                    self.held -= chunk.events.len();
                    self.unsent.pop_front();
                }
                // Refused for now (the spool is full): held, tried later.
                Some(false) => return,
                None => {
                    self.agent = None;
                    return;
                }
            }
        }
    }

    /// After the command: hands over what is left, for a while, then leaves
    /// the rest to a detached deliverer.
    async fn finish(&mut self, socket: &PathBuf) {
        let deadline = Instant::now() + FINISH_WITHIN;
        while !self.unsent.is_empty() && Instant::now() < deadline {
            // Bounded as a whole, not per chunk: a slow agent, or one pacing
            // this user's chunks, does not keep the recorder past its time.
            // A chunk cut short is handed over again (the agent and the server
            // take a chunk they have once).
            let left = deadline.saturating_duration_since(Instant::now());
            if timeout(left, self.send(socket)).await.is_err() {
                self.agent = None;
                break;
            }
            if !self.unsent.is_empty() {
                sleep(Duration::from_millis(200).min(left)).await;
            }
        }
        if self.unsent.is_empty() {
            return;
        }
        let left: Vec<RecordChunk> = self.unsent.drain(..).collect();
        if let Err(err) = hand_to_deliverer(socket, &left) {
            eprintln!("otpgate record: the recording's last part could not be kept: {err}");
        }
    }
}

/// Starts `otpgate record --deliver` on its own, fed `chunks` on its stdin.
fn hand_to_deliverer(socket: &PathBuf, chunks: &[RecordChunk]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let bytes = records::encode(&chunks).map_err(std::io::Error::other)?;
    let mut deliverer = std::process::Command::new(std::env::current_exe()?)
        .arg("record")
        .arg("--socket")
        .arg(socket)
        .arg("--deliver")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: the session's end does not signal it.
        .process_group(0)
        .spawn()?;
    if let Some(mut stdin) = deliverer.stdin.take() {
        stdin.write_all(&bytes)?;
    }
    Ok(())
}

/// `otpgate record --deliver`: hands the chunks on stdin to the agent, trying
/// for up to a day.
pub async fn deliver(socket: PathBuf) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    let chunks: Vec<RecordChunk> =
        records::decode("deliverer", &bytes).map_err(std::io::Error::other)?;
    let mut unsent: VecDeque<RecordChunk> = chunks.into();
    let deadline = Instant::now() + DELIVER_WITHIN;
    let mut agent: Option<AgentLink> = None;
    while let Some(chunk) = unsent.front() {
        if Instant::now() > deadline {
            return Err(std::io::Error::other(
                "the agent did not take the recording",
            ));
        }
        let link = match agent.as_mut() {
            Some(link) => link,
            None => match AgentLink::connect(&socket).await {
                Some(link) => agent.insert(link),
                None => {
                    sleep(Duration::from_secs(2)).await;
                    continue;
                }
            },
        };
        match link.hand(chunk.clone()).await {
            Some(true) => {
                unsent.pop_front();
            }
            Some(false) => sleep(Duration::from_secs(2)).await,
            None => agent = None,
        }
    }
    Ok(())
}

/// A connection to the agent's socket.
struct AgentLink(unix::Client<LocalRequest, LocalResponse>);

impl AgentLink {
    async fn connect(socket: &Path) -> Option<Self> {
        let client = timeout(AGENT_TIMEOUT, unix::Client::connect(socket));
        Some(Self(client.await.ok()?.ok()?))
    }

    /// Hands `chunk` over: done with it (`true`: taken, or refused as
    /// malformed, which it would always be), refused for now (`false`: the
    /// spool is full), or the connection failed (`None`).
    async fn hand(&mut self, chunk: RecordChunk) -> Option<bool> {
        let request = LocalRequest::Record(chunk);
        match timeout(AGENT_TIMEOUT, self.0.ask(&request)).await.ok()? {
            Ok(LocalResponse::Done | LocalResponse::Fail(LocalError::Malformed)) => Some(true),
            Ok(LocalResponse::Fail(_)) => Some(false),
            _ => None,
        }
    }
}

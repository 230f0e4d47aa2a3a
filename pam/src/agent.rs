//! The module's side of the agent's socket: blocking std I/O, one request and
//! its answer at a time, every read and write bounded by a timeout. No threads,
//! no runtime: the module runs inside sshd, login, su.
//!
//! Requests are written in the newest version of the local wire this module
//! speaks; an agent of an older release answers in its own, and the module
//! connects again and asks again in that one (`Versions::fall_back`).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use zeroize::Zeroize;

use otpgate_protocol::frame::split;
use otpgate_protocol::local::{LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, RequestMode};
use otpgate_protocol::{Frame, FrameError, Message};

/// Why the agent gave no answer.
#[derive(Debug)]
pub enum AgentError {
    /// The socket failed, timed out, or closed.
    Io(io::Error),
    /// The agent sent something that is not an answer.
    Frame(FrameError),
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(err) => write!(f, "the agent's socket: {err}"),
            Self::Frame(err) => write!(f, "the agent's answer: {err}"),
        }
    }
}

impl From<io::Error> for AgentError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<FrameError> for AgentError {
    fn from(err: FrameError) -> Self {
        Self::Frame(err)
    }
}

/// A connection to the local agent.
pub struct Agent {
    stream: UnixStream,
    buffer: BytesMut,
    /// Where the agent's socket is, to connect again in an older version.
    path: std::path::PathBuf,
    timeout: Duration,
    /// The version requests are written in.
    version: u8,
    /// Whether the agent has answered in `version`.
    confirmed: bool,
}

impl Agent {
    /// Connects to the agent's socket at `path` within `timeout` (a blocking
    /// connect would wait as long as the agent's backlog stays full); every
    /// later answer must come whole within `timeout` too.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, AgentError> {
        Ok(Self::over(connect_within(path, timeout)?, path, timeout))
    }

    /// Asks over `stream`, a connection to `path`.
    fn over(stream: UnixStream, path: &Path, timeout: Duration) -> Self {
        Self {
            stream,
            buffer: BytesMut::with_capacity(1024),
            path: path.to_owned(),
            timeout,
            version: LocalRequest::VERSIONS.newest,
            confirmed: false,
        }
    }

    /// Sends `request` and waits for its answer. The secrets it carries are
    /// wiped, in the request and in the bytes that carried them.
    pub fn ask(&mut self, mut request: LocalRequest) -> Result<LocalResponse, AgentError> {
        let answer = self.ask_in_turn(&request);
        wipe(&mut request);
        answer
    }

    /// Asks `request` in our version, then, if the agent answers in an older
    /// one, again in that.
    fn ask_in_turn(&mut self, request: &LocalRequest) -> Result<LocalResponse, AgentError> {
        loop {
            let asked = self.version;
            let frame = self.exchange(request)?;
            let answered = frame.as_ref().map(|frame| frame.version);
            let older = match answered {
                None if self.confirmed => None,
                answered => LocalRequest::VERSIONS.fall_back(asked, answered),
            };
            match (older, frame) {
                (Some(older), _) => {
                    self.version = older;
                    self.stream = connect_within(&self.path, self.timeout)?;
                    self.buffer.clear();
                }
                (None, Some(frame)) => {
                    self.confirmed = true;
                    return Ok(LocalResponse::decode(&frame)?);
                }
                (None, None) => return Err(AgentError::Io(io::ErrorKind::UnexpectedEof.into())),
            }
        }
    }

    /// Writes `request` in our version and reads the frame that answers it;
    /// `None` when the agent closed the connection first. A connection the
    /// agent closed while it sat idle (the person reading their mail) is made
    /// again first.
    fn exchange(&mut self, request: &LocalRequest) -> Result<Option<Frame>, AgentError> {
        if closed_by_peer(&self.stream) {
            self.stream = connect_within(&self.path, self.timeout)?;
            self.buffer.clear();
        }
        let deadline = Instant::now() + self.timeout;
        let mut frame = BytesMut::new();
        let encoded = request.encode(self.version, &mut frame);
        let sent = encoded
            .map_err(AgentError::from)
            .and_then(|()| Ok(send_all(&self.stream, &frame)?));
        frame.zeroize();
        sent?;
        loop {
            if let Some(frame) = split(&mut self.buffer)? {
                return Ok(Some(frame));
            }
            // One deadline for the whole answer: an agent that sends a byte
            // now and then does not hold the login open past it.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AgentError::Io(io::ErrorKind::TimedOut.into()));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Ok(None);
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// A connection to the Unix socket at `path`, tried without blocking until
/// `timeout` has passed. Close-on-exec: a child the host forks never holds it.
fn connect_within(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;

    let deadline = Instant::now() + timeout;
    let address = UnixAddr::new(path).map_err(io::Error::from)?;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(io::Error::from)?;
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                return Ok(stream);
            }
            // The agent's backlog is full: try again until the deadline.
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Writes all of `bytes` to `stream` without raising SIGPIPE when the agent
/// has gone (the host process may not ignore it, and would die of it):
/// EPIPE instead. The stream's write timeout bounds each send.
fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    use nix::sys::socket::{MsgFlags, send};
    use std::os::fd::AsRawFd;
    while !bytes.is_empty() {
        match send(stream.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) => bytes = &bytes[sent..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Whether the other end of `stream` has closed it (or broken it): between
/// requests nothing is there to read, so a peek that finds the end says so.
fn closed_by_peer(stream: &UnixStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(read) => read == 0,
        Err(errno) => errno != nix::errno::Errno::EAGAIN,
    }
}

/// Wipes the secrets `request` carries (an OTP, a password).
fn wipe(request: &mut LocalRequest) {
    match request {
        LocalRequest::Login { request, .. } => match request {
            LoginRequest::Verify { code, .. } => code.0.zeroize(),
            LoginRequest::Request(RequestMode::Internal { password, .. }) => password.0.zeroize(),
            _ => {}
        },
        LocalRequest::Offline { code, .. } => code.0.zeroize(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpgate_protocol::local::LocalError;
    use otpgate_protocol::login::Secret;
    use std::io::Write;

    /// Reads one request off `stream`, as `(version, request)`.
    fn read_request(stream: &mut UnixStream) -> Option<(u8, LocalRequest)> {
        let mut buffer = BytesMut::new();
        let mut chunk = [0u8; 256];
        loop {
            if let Some(frame) = split(&mut buffer).unwrap() {
                return Some((frame.version, frame.decode().unwrap()));
            }
            let read = stream.read(&mut chunk).unwrap();
            if read == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// `response` as a frame of `version`.
    fn answer(response: &LocalResponse, version: u8) -> BytesMut {
        let mut frame = BytesMut::new();
        response.encode(version, &mut frame).unwrap();
        frame
    }

    #[test]
    fn an_answer_comes_back_over_the_socket_in_pieces() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let agent_side = std::thread::spawn(move || {
            let mut theirs = theirs;
            let (version, request) = read_request(&mut theirs).unwrap();
            let frame = answer(&LocalResponse::Fail(LocalError::NotConnected), version);
            for byte in frame.iter() {
                theirs.write_all(&[*byte]).unwrap();
            }
            request
        });
        let mut agent = Agent::over(ours, Path::new("unused"), Duration::from_secs(5));
        let mut request = LocalRequest::Login {
            os_user: Some("alice".into()),
            request: LoginRequest::Verify {
                email: "alice@example.com".into(),
                code: Secret("12345678".into()),
            },
        };
        let sent = request.clone();
        assert_eq!(
            agent.ask(request.clone()).unwrap(),
            LocalResponse::Fail(LocalError::NotConnected)
        );
        assert_eq!(agent_side.join().unwrap(), sent);
        wipe(&mut request);
        let LocalRequest::Login {
            request: LoginRequest::Verify { code, .. },
            ..
        } = request
        else {
            unreachable!()
        };
        assert!(code.0.is_empty(), "wiped (zeroize clears what it zeroes)");
    }

    #[test]
    fn an_agent_of_the_first_release_is_asked_again_in_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // As the first release's agent does: a frame of a version it does not
        // know is refused as malformed, in version 1, and the connection closed.
        let agent_side = std::thread::spawn(move || {
            let (mut first, _) = listener.accept().unwrap();
            let (version, _) = read_request(&mut first).unwrap();
            assert_eq!(version, LocalRequest::VERSIONS.newest);
            first
                .write_all(&answer(&LocalResponse::Fail(LocalError::Malformed), 1))
                .unwrap();
            drop(first);
            let (mut second, _) = listener.accept().unwrap();
            let mut asked = Vec::new();
            while let Some((version, request)) = read_request(&mut second) {
                asked.push((version, request));
                second.write_all(&answer(&LocalResponse::Done, 1)).unwrap();
            }
            asked
        });
        let mut agent = Agent::connect(&path, Duration::from_secs(5)).unwrap();
        let close = LocalRequest::SessionClose {
            os_user: "alice".into(),
        };
        assert_eq!(agent.ask(close.clone()).unwrap(), LocalResponse::Done);
        assert_eq!(agent.ask(close.clone()).unwrap(), LocalResponse::Done);
        drop(agent);
        assert_eq!(
            agent_side.join().unwrap(),
            [(1, close.clone()), (1, close)],
            "asked again, then on, in version 1"
        );
    }

    #[test]
    fn connecting_to_a_full_backlog_gives_up_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        // A listener that never accepts: its backlog fills, then connects wait.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        let mut held = Vec::new();
        let refused = loop {
            match connect_within(&path, Duration::from_millis(200)) {
                Ok(stream) => held.push(stream),
                Err(err) => break err,
            }
            assert!(held.len() < 10_000, "the backlog never filled");
        };
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock, "{refused}");
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(connect_within(&dir.path().join("none.sock"), Duration::from_millis(200)).is_err());
    }

    #[test]
    fn an_agent_that_sends_a_byte_now_and_then_is_given_up_on_at_the_deadline() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let dribble = std::thread::spawn(move || {
            let _ = read_request(&mut theirs);
            let status = otpgate_protocol::local::AgentStatus {
                os_user: "a".repeat(200),
                client_id: None,
                connected: true,
                server_rtt_us: None,
            };
            let frame = answer(
                &LocalResponse::Status(status),
                LocalRequest::VERSIONS.newest,
            );
            // Over six seconds in all, a byte well within each read's timeout.
            for byte in frame.iter() {
                std::thread::sleep(Duration::from_millis(30));
                if theirs.write_all(&[*byte]).is_err() {
                    break;
                }
            }
        });
        let mut agent = Agent::over(ours, Path::new("unused"), Duration::from_millis(100));
        let started = Instant::now();
        let err = agent.ask(LocalRequest::Status).unwrap_err();
        assert!(
            matches!(&err, AgentError::Io(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "given up at the deadline, not per byte"
        );
        drop(agent);
        dribble.join().unwrap();
    }

    #[test]
    fn a_connection_the_agent_closed_while_idle_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (closed, was_closed) = std::sync::mpsc::channel();
        let agent_side = std::thread::spawn(move || {
            let mut served = 0;
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let (version, _) = read_request(&mut stream).unwrap();
                stream
                    .write_all(&answer(&LocalResponse::Done, version))
                    .unwrap();
                served += 1;
                // As the agent does with a connection left idle.
                drop(stream);
                closed.send(()).unwrap();
            }
            served
        });
        let mut agent = Agent::connect(&path, Duration::from_secs(5)).unwrap();
        let close = LocalRequest::SessionClose {
            os_user: "alice".into(),
        };
        assert_eq!(agent.ask(close.clone()).unwrap(), LocalResponse::Done);
        was_closed.recv().unwrap();
        assert_eq!(agent.ask(close).unwrap(), LocalResponse::Done);
        assert_eq!(agent_side.join().unwrap(), 2);
    }

    #[test]
    fn a_silent_agent_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut agent = Agent::over(ours, Path::new("unused"), Duration::from_millis(50));
        let err = agent.ask(LocalRequest::Status).unwrap_err();
        assert!(
            matches!(err, AgentError::Io(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut)
        );
    }
}

//! The module's side of the agent's socket: blocking std I/O, one request and
//! its answer at a time, every read and write bounded by a timeout. No threads,
//! no runtime: the module runs inside sshd, login, su.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use zeroize::Zeroize;

use otpgate_protocol::local::{LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, RequestMode};
use otpgate_protocol::{FrameError, decode, encode};

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
}

impl Agent {
    /// Connects to the agent's socket at `path` within `timeout` (a blocking
    /// connect would wait as long as the agent's backlog stays full); every
    /// later read and write gives up after `timeout` too.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, AgentError> {
        let stream = connect_within(path, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            stream,
            buffer: BytesMut::with_capacity(1024),
        })
    }

    /// Sends `request` and waits for its answer. The secrets it carries are
    /// wiped, in the request and in the bytes that carried them.
    pub fn ask(&mut self, mut request: LocalRequest) -> Result<LocalResponse, AgentError> {
        let mut frame = BytesMut::new();
        let encoded = encode(&request, &mut frame);
        wipe(&mut request);
        let sent = encoded
            .map_err(AgentError::from)
            .and_then(|()| Ok(self.stream.write_all(&frame)?));
        frame.zeroize();
        sent?;
        loop {
            if let Some(response) = decode::<LocalResponse>(&mut self.buffer)? {
                return Ok(response);
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(AgentError::Io(io::ErrorKind::UnexpectedEof.into()));
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

/// Wipes the secrets `request` carries (an OTP, a password).
fn wipe(request: &mut LocalRequest) {
    if let LocalRequest::Login { request, .. } = request {
        match request {
            LoginRequest::Verify { code, .. } => code.0.zeroize(),
            LoginRequest::Request(RequestMode::Internal { password, .. }) => password.0.zeroize(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpgate_protocol::local::LocalError;
    use otpgate_protocol::login::Secret;

    #[test]
    fn an_answer_comes_back_over_the_socket_in_pieces() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let agent_side = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut buffer = BytesMut::new();
            let mut chunk = [0u8; 256];
            let request = loop {
                if let Some(request) = decode::<LocalRequest>(&mut buffer).unwrap() {
                    break request;
                }
                let read = theirs.read(&mut chunk).unwrap();
                buffer.extend_from_slice(&chunk[..read]);
            };
            let mut frame = BytesMut::new();
            encode(&LocalResponse::Fail(LocalError::NotConnected), &mut frame).unwrap();
            for byte in frame.iter() {
                theirs.write_all(&[*byte]).unwrap();
            }
            request
        });
        let mut agent = Agent {
            stream: ours,
            buffer: BytesMut::new(),
        };
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
    fn a_silent_agent_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut agent = Agent {
            stream: ours,
            buffer: BytesMut::new(),
        };
        let err = agent.ask(LocalRequest::Status).unwrap_err();
        assert!(
            matches!(err, AgentError::Io(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut)
        );
    }
}

//! The messages between the login prompt (`otpgate login`) and the agent on the
//! same computer, carried over the agent's Unix socket in the same frames as the
//! network protocol.
//!
//! The prompt never says who it runs as: the agent reads the caller's user from
//! the socket's peer credentials.
//!
//! Each request carries the version it is written in; the agent answers in the
//! same one (see [`crate::version`]).

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError, encode_as};
use crate::login::{LoginRequest, LoginResponse, Secret};
use crate::offline::OfflineVerdict;
use crate::record::RecordChunk;
use crate::version::{self, Message, Versions};

/// What the login prompt asks of its local agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalRequest {
    /// How is the agent doing, and who am I to it?
    Status,
    /// A login prompt request, for the caller's own OS user, or for `os_user`
    /// when the caller is root.
    Login {
        /// Another OS user to act for; only root may name one.
        os_user: Option<String>,
        /// What is asked.
        request: LoginRequest,
    },
    /// PAM's session open (root only): ties the client session that `os_user`'s
    /// latest Allow started to the calling process, which holds the OS
    /// session; the client session ends when that process closes it or exits.
    SessionOpen {
        /// The OS user whose session opens.
        os_user: String,
    },
    /// PAM's session close (root only): ends the client sessions of `os_user`
    /// tied to the calling process.
    SessionClose {
        /// The OS user whose session closes.
        os_user: String,
    },
    /// PAM let `os_user` in without an OTP as a member of the exempt group
    /// (root only): for the server's audit log, sent on as soon as it can be.
    Exempt {
        /// The OS user.
        os_user: String,
        /// The PAM service (`sshd`, `login`, ...).
        service: String,
    },
    /// A piece of the caller's terminal recording (`otpgate record`): answered
    /// [`LocalResponse::Done`] once the agent holds it on disk, so the
    /// recorder may forget it; [`LocalError::Unavailable`] when the spool is
    /// full.
    Record(RecordChunk),
    /// PAM could not reach the server and asks whether `code`, typed by
    /// `os_user` at PAM service `service`, is one of their offline codes
    /// (root only), answered with [`LocalResponse::Offline`]. Since version
    /// 2, and answered with `Unsupported` by agents of that version built
    /// before it.
    Offline {
        /// The OS user.
        os_user: String,
        /// The PAM service (`sshd`, `login`, ...).
        service: String,
        /// What they typed.
        code: Secret,
    },
}

/// The agent's answer to a [`LocalRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalResponse {
    /// The answer to [`LocalRequest::Status`].
    Status(AgentStatus),
    /// The server's answer to [`LocalRequest::Login`].
    Login(LoginResponse),
    /// The answer to [`LocalRequest::SessionOpen`]: the client session now tied
    /// to the caller, if one was waiting.
    SessionOpened {
        /// The client session.
        session: Option<u64>,
    },
    /// Done: the answer to [`LocalRequest::SessionClose`],
    /// [`LocalRequest::Exempt`] and [`LocalRequest::Record`].
    Done,
    /// The request could not be served.
    Fail(LocalError),
    /// The answer to [`LocalRequest::Offline`].
    Offline(OfflineVerdict),
}

/// What the agent knows of itself and of its caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The OS account the agent sees on the other end of the socket.
    pub os_user: String,
    /// The client computer's identity, once the server has welcomed the agent.
    pub client_id: Option<String>,
    /// Whether the agent holds a live connection to the server.
    pub connected: bool,
    /// The round trip of a heartbeat sent for this status, in microseconds.
    pub server_rtt_us: Option<u64>,
}

/// Why the agent could not serve a local request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LocalError {
    /// The request was not understood.
    Malformed,
    /// The caller's OS account could not be determined.
    UnknownCaller,
    /// Only root may act for another OS user.
    Forbidden,
    /// The agent is not connected to the server right now.
    NotConnected,
    /// The server could not serve the request; try again later.
    Unavailable,
    /// Something went wrong in the agent; it has been logged there.
    Internal,
    /// The request is not one this agent knows (a newer client's, say), or
    /// the server it is connected to does not serve it. Since version 2.
    Unsupported,
}

impl Message for LocalRequest {
    const VERSIONS: Versions = version::LOCAL;

    fn encode(&self, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
        let version = Self::VERSIONS.check(version)?;
        match self {
            Self::Offline { .. } if version < 2 => Err(FrameError::NotInVersion { version }),
            _ => encode_as(self, version, dst),
        }
    }

    fn decode(frame: &Frame) -> Result<Self, FrameError> {
        Self::VERSIONS.check(frame.version)?;
        frame.decode()
    }
}

impl Message for LocalResponse {
    const VERSIONS: Versions = version::LOCAL;

    fn encode(&self, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
        let version = Self::VERSIONS.check(version)?;
        match self {
            // A client of version 1 knows no better word for it.
            Self::Fail(LocalError::Unsupported) if version < 2 => {
                encode_as(&Self::Fail(LocalError::Malformed), version, dst)
            }
            Self::Offline(_) if version < 2 => Err(FrameError::NotInVersion { version }),
            _ => encode_as(self, version, dst),
        }
    }

    fn decode(frame: &Frame) -> Result<Self, FrameError> {
        Self::VERSIONS.check(frame.version)?;
        frame.decode()
    }
}

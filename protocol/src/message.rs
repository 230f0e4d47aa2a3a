//! The messages an agent and the server exchange over one connection.
//!
//! An agent opens with [`AgentMessage::Hello`], naming the range of protocol
//! versions it speaks; the server answers [`ServerMessage::Welcome`] with the one
//! both will use (see [`negotiate`]). After that the agent sends requests, each
//! with a [`RequestId`] that the server echoes in its response, so several may be
//! in flight at once. The server may push [`ServerMessage::Ping`] at any time.
//!
//! A message never names the client computer it comes from: the server takes the
//! computer's identity from the agent's TLS certificate.
//!
//! Hello and Welcome are the fixed points: their shapes never change and they
//! travel in frames of version 1, which every build reads, because neither side
//! knows the other's versions before them. Every later frame is written in the
//! version agreed (see [`crate::version`] for how versions differ and grow).

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError, encode_as};
use crate::login::{LoginRequest, LoginResponse};
use crate::offline::{OfflineCodes, OfflineUse};
use crate::record::RecordChunk;
use crate::version::{self, Message};

/// The oldest protocol version this build speaks.
pub const MIN_PROTOCOL_VERSION: u16 = version::AGENT.oldest as u16;
/// The newest protocol version this build speaks.
pub const MAX_PROTOCOL_VERSION: u16 = version::AGENT.newest as u16;

/// The version of the frames that carry [`AgentMessage::Hello`] and
/// [`ServerMessage::Welcome`].
pub const HANDSHAKE_VERSION: u8 = 1;

/// How many requests an agent may have in flight on one connection; the server
/// answers [`ErrorCode::TooManyRequests`] beyond it, so agents queue the rest.
pub const MAX_IN_FLIGHT: usize = 32;

/// Pairs a response with the request it answers; chosen by the agent.
pub type RequestId = u64;

/// What an agent sends to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// The first frame on every connection.
    Hello(Hello),
    /// A request; the server answers with a [`ServerMessage::Response`] of the same id.
    Request {
        /// Chosen by the agent, echoed by the server.
        id: RequestId,
        /// What is asked.
        request: Request,
    },
    /// The answer to a [`ServerMessage::Ping`].
    Pong {
        /// The nonce of the ping being answered.
        nonce: u64,
    },
}

/// The agent's opening frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The oldest protocol version the agent speaks.
    pub min_version: u16,
    /// The newest protocol version the agent speaks.
    pub max_version: u16,
    /// The agent's software version, for the operator's eyes.
    pub agent_version: String,
    /// The computer's host name as it sees itself, for the operator's eyes; the
    /// computer's identity comes from its certificate, not from this.
    pub host_name: String,
}

/// The longest software version an agent may report.
pub const MAX_AGENT_VERSION: usize = 64;

impl Hello {
    /// Whether what the agent says of itself keeps the rules: a host name of
    /// [`is_host_name`], a software version of at most [`MAX_AGENT_VERSION`]
    /// bytes.
    pub fn is_well_formed(&self) -> bool {
        is_host_name(&self.host_name) && self.agent_version.len() <= MAX_AGENT_VERSION
    }
}

/// Whether `name` can be the host name an agent reports: empty (unknown), or up
/// to 253 bytes of dot-separated labels of 1 to 63 letters, digits, `-` and `_`.
pub fn is_host_name(name: &str) -> bool {
    name.is_empty()
        || (name.len() <= 253
            && name.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            }))
}

/// What an agent may ask of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "I am still here": keeps the connection, the computer's last-seen time and
    /// its client sessions' activity fresh.
    Heartbeat,
    /// The login prompt of OS user `os_user` asks something.
    Login {
        /// The OS user, from the prompt's socket peer credentials.
        os_user: String,
        /// What the prompt asks.
        request: LoginRequest,
    },
    /// A piece of a terminal recording made on this computer, answered with
    /// [`Response::Recorded`] once the server holds it durably.
    Record {
        /// The OS user whose terminal it records, from the recorder's socket
        /// peer credentials.
        os_user: String,
        /// The client session of the OTP login it runs in, if the agent tied
        /// it to one.
        session: Option<u64>,
        /// The piece.
        chunk: RecordChunk,
    },
    /// The server's clock, answered with [`Response::Time`]: how far the
    /// computer's is from it (`otpgate doctor agent`). Since version 2, and
    /// answered with `Unsupported` by servers of that version built before it.
    Time,
    /// A new certificate for this computer, for the key of `csr` (a PKCS #10
    /// request signed with it, DER), answered with [`Response::Renewed`]; only
    /// a computer that enrolled may ask. Since version 2, and answered with
    /// `Unsupported` by servers of that version built before it.
    Renew {
        /// The request.
        csr: Vec<u8>,
    },
    /// A heartbeat that also says how the agent is: the recording bytes
    /// waiting in its spool, for the server's metrics (summed over the
    /// agents connected, never per computer). Answered as
    /// [`Request::Heartbeat`] is. Since version 2, and answered with
    /// `Unsupported` by servers of that version built before it: the agent
    /// then sends plain heartbeats on that connection.
    Status {
        /// Recording bytes in the spool.
        spool_bytes: u64,
    },
    /// This computer's offline codes, answered with [`Response::Offline`];
    /// with it, the offline logins not yet told, which the server takes
    /// (each once) before it answers. Asked on every connection, after
    /// [`ServerMessage::OfflineChanged`] and after an offline login. Since
    /// version 2, and answered with `Unsupported` by servers of that
    /// version built before it.
    Offline {
        /// Offline logins the server has not taken yet, oldest first.
        used: Vec<OfflineUse>,
    },
}

/// What the server sends to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The answer to [`AgentMessage::Hello`]: the connection is established.
    Welcome(Welcome),
    /// The answer to the request with the same id.
    Response {
        /// The id of the request answered.
        id: RequestId,
        /// The answer.
        response: Response,
    },
    /// A liveness check; the agent answers [`AgentMessage::Pong`] with the same nonce.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// The connection is being closed by the server, for this reason.
    Close(ErrorCode),
    /// This computer's offline codes changed (issued, void): ask for them
    /// again ([`Request::Offline`]). Since version 2, and sent only to
    /// agents that asked for them on this connection (an agent of that
    /// version built before it lets it pass).
    OfflineChanged,
}

/// The server's half of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version both sides use from now on.
    pub version: u16,
    /// The client computer's identity, as read from its certificate.
    pub client_id: String,
    /// The server's software version, for the operator's eyes.
    pub server_version: String,
    /// How often the agent should send a heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u32,
}

/// The server's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The heartbeat was recorded.
    Heartbeat,
    /// The answer to [`Request::Login`].
    Login(LoginResponse),
    /// The answer to [`Request::Record`]: the piece is stored durably (or was
    /// already); the agent may forget it.
    Recorded,
    /// The request could not be served; the connection stays open.
    Fail(ErrorCode),
    /// The answer to [`Request::Time`]: the server's clock when it answered,
    /// in milliseconds since the Unix epoch.
    Time(u64),
    /// The answer to [`Request::Renew`]: the new certificate (DER).
    Renewed {
        /// The certificate.
        certificate: Vec<u8>,
        /// When it ends, in milliseconds since the Unix epoch.
        expires_ms: u64,
    },
    /// The answer to [`Request::Offline`]: this computer's offline codes
    /// with codes left, one set per OS user; what it holds replaces what
    /// the agent kept.
    Offline(Vec<OfflineCodes>),
}

/// Why a request failed or a connection is being closed. Codes, not text: a peer
/// never sees our internal error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A frame declared a length over the maximum.
    FrameTooLarge,
    /// The stream ended in the middle of a frame.
    FrameTruncated,
    /// A frame carried a version byte we do not speak.
    UnsupportedFrameVersion,
    /// A frame's payload was not a valid message.
    Malformed,
    /// A valid message arrived where it makes no sense (a second Hello, say).
    UnexpectedMessage,
    /// The agent's and the server's protocol version ranges do not overlap.
    UnsupportedProtocolVersion,
    /// The agent did not say Hello in time, or went silent.
    Timeout,
    /// The agent has too many requests in flight, or sends them too fast (flood
    /// control); the connection stays open.
    TooManyRequests,
    /// The part of the server that serves this computer is not available right now;
    /// trying again later may work.
    Unavailable,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// This computer has as many connections as it may hold; the others must
    /// close first.
    TooManyConnections,
    /// The client certificate has been revoked, or has expired (a resumed TLS
    /// session is checked too).
    CertificateRefused,
    /// Something went wrong on the server; it has been logged there.
    Internal,
    /// A recording's chunk came before the ones it follows; send those first.
    OutOfOrder,
    /// The request is not one this server knows (a newer agent's, say): the
    /// connection stays open. Since version 2.
    Unsupported,
}

/// Picks the protocol version for a connection: the newest that both the agent's
/// range and ours contain, or `None` when they do not overlap.
pub fn negotiate(hello: &Hello) -> Option<u8> {
    let version = hello.max_version.min(MAX_PROTOCOL_VERSION);
    (version >= hello.min_version.max(MIN_PROTOCOL_VERSION))
        .then(|| u8::try_from(version).ok())
        .flatten()
}

/// What can be read of a frame whose message does not decode whole: enough to
/// answer it without closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// A request (or, from the server, a response) with this id: a newer
    /// peer's, or one broken inside; the stream is still in step.
    Request(RequestId),
    /// A message this build does not know at all, after the ones it knows: a
    /// newer peer's, to be let pass.
    Unknown,
    /// Not a message at all: the peer is broken or hostile.
    Garbage,
}

/// Reads the envelope of a frame that did not decode: the variant index of
/// the outer enum (`Request`/`Response` is 1, with its id next), and how many
/// variants this build knows of it.
fn unreadable(frame: &Frame, known: u32) -> Unreadable {
    match frame.prefix::<(u32, u64)>() {
        Some((1, id)) => Unreadable::Request(id),
        _ => match frame.prefix::<u32>() {
            Some(index) if index >= known => Unreadable::Unknown,
            _ => Unreadable::Garbage,
        },
    }
}

impl AgentMessage {
    /// What can be read of `frame`, whose message did not decode.
    pub fn unreadable(frame: &Frame) -> Unreadable {
        unreadable(frame, 3)
    }
}

impl ServerMessage {
    /// What can be read of `frame`, whose message did not decode.
    pub fn unreadable(frame: &Frame) -> Unreadable {
        unreadable(frame, 4)
    }
}

impl ErrorCode {
    /// The code an agent of `version` knows that says the most of this one.
    fn in_version(self, version: u8) -> Self {
        match self {
            Self::Unsupported if version < 2 => Self::Malformed,
            code => code,
        }
    }
}

impl Request {
    /// The first version of the agent link that has this request.
    pub fn since(&self) -> u8 {
        match self {
            Self::Heartbeat | Self::Login { .. } | Self::Record { .. } => 1,
            Self::Time | Self::Renew { .. } | Self::Status { .. } | Self::Offline { .. } => 2,
        }
    }
}

impl Message for AgentMessage {
    const VERSIONS: version::Versions = version::AGENT;

    fn encode(&self, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
        let version = match self {
            Self::Hello(_) => HANDSHAKE_VERSION,
            Self::Request { request, .. } if version < request.since() => {
                return Err(FrameError::NotInVersion { version });
            }
            _ => Self::VERSIONS.check(version)?,
        };
        encode_as(self, version, dst)
    }

    fn decode(frame: &Frame) -> Result<Self, FrameError> {
        Self::VERSIONS.check(frame.version)?;
        frame.decode()
    }
}

impl Message for ServerMessage {
    const VERSIONS: version::Versions = version::AGENT;

    fn encode(&self, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
        match self {
            Self::Welcome(_) => encode_as(self, HANDSHAKE_VERSION, dst),
            Self::Response {
                id,
                response: Response::Fail(code),
            } => {
                let version = Self::VERSIONS.check(version)?;
                let response = Response::Fail(code.in_version(version));
                encode_as(&Self::Response { id: *id, response }, version, dst)
            }
            Self::Close(code) => {
                let version = Self::VERSIONS.check(version)?;
                encode_as(&Self::Close(code.in_version(version)), version, dst)
            }
            Self::Response {
                response: Response::Time(_) | Response::Renewed { .. } | Response::Offline(_),
                ..
            }
            | Self::OfflineChanged
                if version < 2 =>
            {
                Err(FrameError::NotInVersion { version })
            }
            _ => encode_as(self, Self::VERSIONS.check(version)?, dst),
        }
    }

    fn decode(frame: &Frame) -> Result<Self, FrameError> {
        Self::VERSIONS.check(frame.version)?;
        frame.decode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_says_of_itself_only_what_keeps_the_rules() {
        for good in ["", "ws-1", "ws-1.corp.example", "WS_7"] {
            assert!(is_host_name(good), "{good}");
        }
        for bad in ["ws 1", "ws..corp", ".ws", "ws\r\n", &"a".repeat(64)] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
        let hello = |agent_version: String| Hello {
            min_version: 1,
            max_version: 2,
            agent_version,
            host_name: "ws-1".into(),
        };
        assert!(hello("0.2.0".into()).is_well_formed());
        assert!(!hello("v".repeat(MAX_AGENT_VERSION + 1)).is_well_formed());
    }

    fn hello(min_version: u16, max_version: u16) -> Hello {
        Hello {
            min_version,
            max_version,
            agent_version: String::new(),
            host_name: String::new(),
        }
    }

    #[test]
    fn the_time_is_neither_asked_nor_told_in_version_1() {
        let time = AgentMessage::Request {
            id: 1,
            request: Request::Time,
        };
        let mut buf = BytesMut::new();
        assert!(matches!(
            time.encode(1, &mut buf),
            Err(FrameError::NotInVersion { version: 1 })
        ));
        assert!(time.encode(2, &mut buf).is_ok());
        let answer = ServerMessage::Response {
            id: 1,
            response: Response::Time(1),
        };
        assert!(matches!(
            answer.encode(1, &mut buf),
            Err(FrameError::NotInVersion { version: 1 })
        ));
        assert!(answer.encode(2, &mut buf).is_ok());
    }

    #[test]
    fn negotiation_picks_the_newest_common_version() {
        assert_eq!(negotiate(&hello(1, 1)), Some(1));
        assert_eq!(negotiate(&hello(1, 9)), Some(version::AGENT.newest));
        assert_eq!(negotiate(&hello(0, 1)), Some(1));
    }

    #[test]
    fn envelopes_of_unreadable_frames_name_the_request() {
        let mut buf = BytesMut::new();
        // A request whose kind (index 9) this build does not know.
        encode_as(&(1u32, 77u64, 9u32, "x"), 2, &mut buf).unwrap();
        let frame = crate::frame::split(&mut buf).unwrap().unwrap();
        assert!(AgentMessage::decode(&frame).is_err());
        assert_eq!(AgentMessage::unreadable(&frame), Unreadable::Request(77));
        encode_as(&(7u32, "a push of a newer server"), 2, &mut buf).unwrap();
        let frame = crate::frame::split(&mut buf).unwrap().unwrap();
        assert_eq!(ServerMessage::unreadable(&frame), Unreadable::Unknown);
        encode_as(&(2u32, "not a pong"), 2, &mut buf).unwrap();
        let frame = crate::frame::split(&mut buf).unwrap().unwrap();
        assert_eq!(AgentMessage::unreadable(&frame), Unreadable::Garbage);
    }

    #[test]
    fn an_older_agent_is_told_a_code_it_knows() {
        let mut buf = BytesMut::new();
        let close = ServerMessage::Close(ErrorCode::Unsupported);
        close.encode(1, &mut buf).unwrap();
        assert_eq!(
            crate::decode::<ServerMessage>(&mut buf).unwrap(),
            Some(ServerMessage::Close(ErrorCode::Malformed))
        );
        close.encode(2, &mut buf).unwrap();
        assert_eq!(
            crate::decode::<ServerMessage>(&mut buf).unwrap(),
            Some(close)
        );
    }

    #[test]
    fn negotiation_fails_without_overlap() {
        assert_eq!(negotiate(&hello(MAX_PROTOCOL_VERSION + 1, 9)), None);
        assert_eq!(negotiate(&hello(0, 0)), None);
        assert_eq!(negotiate(&hello(5, 2)), None);
    }
}

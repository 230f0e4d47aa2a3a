//! otpgate's wire protocol: the frame format and the typed messages that agents,
//! the server and the local login prompt exchange.
//!
//! This crate only turns bytes into messages and back, in every version of each
//! wire that this build speaks ([`version`] says how versions are agreed and
//! grown). It never touches a socket, so the same code runs over TLS in
//! production and over in-memory pipes in tests.

#![forbid(unsafe_code)]

pub mod admin;
pub mod enroll;
pub mod frame;
pub mod local;
pub mod login;
pub mod message;
pub mod offline;
pub mod record;
pub mod version;

pub use frame::{Frame, FrameError, MAX_FRAME_LEN, encoded_len};
pub use message::{
    AgentMessage, ErrorCode, HANDSHAKE_VERSION, Hello, MAX_IN_FLIGHT, MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION, Request, RequestId, Response, ServerMessage, Unreadable, Welcome,
    negotiate,
};
pub use version::{Message, Versions, decode, encode};

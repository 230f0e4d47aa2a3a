//! otpgate: gates logins to client computers behind one-time passwords.
//!
//! This library is the daemon's wiring, shared by the `otpgate` binary and the
//! black-box tests: configuration, PKI and TLS, the agent-facing server, the agent
//! itself and its local socket. The wire format lives in `otpgate_protocol` and the
//! domain rules in `otpgate_actors`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod bench;
pub mod config;
pub mod conn;
pub mod convert;
pub mod directory;
pub mod files;
pub mod local;
pub mod mail;
pub mod pki;
pub mod prompt;
pub mod server;
pub mod tickets;
pub mod tls;

/// A time in milliseconds since the Unix epoch, as people read it (UTC).
pub fn mail_time(unix_millis: u64) -> String {
    otpgate_actors::mail::rfc3339(otpgate_actors::Timestamp::from_unix_millis(unix_millis))
}

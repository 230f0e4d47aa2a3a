//! otpgate: gates logins to client computers behind one-time passwords.
//!
//! This library is the daemon's programs, shared by the `otpgate` binary and the
//! black-box tests, one folder each: the [`server`], the [`agent`], the command
//! line ([`cli`]), the terminal [`recorder`] and the load generator
//! ([`bench`]); beside them the few pieces they share: [`frames`] over any byte
//! stream, the [`accept`] loops' pause after a failure, counted [`places`], [`flood`] control's quotas, local [`unix`] sockets, private [`files`] and the client's
//! versioned [`records`] in them, asciicast recordings ([`cast`]), and the PKI
//! and TLS set-up both ends of the wire use ([`tls`]).
//! The wire format lives in `otpgate_protocol` and the domain rules in
//! `otpgate_actors`.

#![forbid(unsafe_code)]

pub mod accept;
pub mod agent;
pub mod backup;
pub mod bench;
pub mod cast;
pub mod cli;
pub mod files;
pub mod flood;
pub mod frames;
pub mod metrics;
pub mod places;
pub mod recorder;
pub mod records;
pub mod server;
pub mod tls;
pub mod unix;

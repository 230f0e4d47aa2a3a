//! Helpers for the black-box tests, one file per thing they set up, each
//! starting a real component on 127.0.0.1 and cleaning it up on drop: a server in
//! this process or as a child process ([`server`]), agents, login desks and raw
//! TLS clients ([`agent`]), the `.eml` outbox ([`mail`]), a real SMTP relay
//! ([`smtp`]), the machine's accounts, groups and PAM services with the PAM
//! module ([`system`]), an HTTPS client of the Management Tool ([`web`]), and
//! a real headless Chromium ([`browser`]), a real OpenLDAP ([`slapd`]), the
//! terminal recorder under a pseudo-terminal ([`recorder`]), `pamtester` at a
//! PAM service's prompts ([`pamtester`]), and the previous release built from
//! the repository's history ([`release`]).

#![allow(dead_code)] // Each test file uses its own part of these helpers.

pub mod agent;
pub mod browser;
pub mod mail;
pub mod pamtester;
pub mod recorder;
pub mod release;
pub mod server;
pub mod slapd;
pub mod smtp;
pub mod system;
pub mod web;

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep};

/// A heartbeat interval short enough that tests see many of them.
pub const HEARTBEAT_MS: u64 = 100;

/// Sends the server's and agents' logs to the test's output (shown when it fails).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `condition` every few milliseconds until it holds, failing the test
/// with `what` if it does not within `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// The OS user running the tests: the login prompt's caller.
pub fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name
}

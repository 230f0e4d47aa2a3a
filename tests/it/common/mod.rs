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

/// Says that `test` (or a part of it) cannot run here, and `why`. It is
/// counted as skipped in `scripts/test`'s closing line (a file in
/// `$OTPGATE_SKIPPED`), not as passed; where every test must run
/// (`OTPGATE_NO_SKIP=1`, as `.ci/run` sets: CI runs as root with everything
/// installed) it fails instead.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("OTPGATE_NO_SKIP").is_none(),
        "{test} cannot run here ({why}), and OTPGATE_NO_SKIP says every test must"
    );
    eprintln!("{test}: skipped, {why}");
    if let Some(dir) = std::env::var_os("OTPGATE_SKIPPED") {
        let _ = std::fs::write(std::path::Path::new(&dir).join(test), why);
    }
}

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

/// A port on 127.0.0.1 that was free a moment ago, for a child that binds its
/// own (sshd, slapd, chromedriver take no socket handed to them) or a server
/// that is stopped and started again on the same address: another process
/// may take it meanwhile, so start such a child with [`retry_start`].
///
/// Taken below the kernel's ephemeral range, so that neither a client's
/// connection nor another test's `:0` listener lands on it while it is free
/// between a stop and a start (the suite's thousand agents use up ephemeral
/// ports fast); each port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if below <= FIRST + 1_000 {
        return any_port();
    }
    let span = below - FIRST;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).expect("below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    any_port()
}

/// A port the kernel picks, free a moment ago.
fn any_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:` a [`free_port`]: the address of a server a test stops and
/// starts again on the same address.
pub fn restartable_listen() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Starts `what`, a child that binds ports from [`free_port`]: a start that
/// fails (the port was taken meanwhile, say) is tried again with new ports,
/// up to five times.
pub fn retry_start<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut why = String::new();
    for _ in 0..5 {
        match start() {
            Ok(started) => return started,
            Err(err) => {
                eprintln!("{what} did not start, trying again: {err}");
                why = err;
            }
        }
    }
    panic!("{what} did not start: {why}")
}

/// Runs `program` with `args`, `stdin` on its standard input, and waits.
pub fn run(program: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The OS user running the tests: the login prompt's caller.
pub fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name
}

/// The address the test directory gives the OS user running the tests.
pub fn my_email() -> String {
    format!("{}@example.com", me())
}

/// A client computer's options with OTPs sent at once to internal users
/// only (not to Active Directory users), the rest as they are.
pub fn auto_internal_only() -> otpgate_protocol::admin::OptionsView {
    otpgate_protocol::admin::OptionsView {
        auto_directory: Some(false),
        auto_internal: Some(true),
        ..Default::default()
    }
}

/// A client computer's options with "automatically send OTPs to Active
/// Directory users" on, the rest as they are.
pub fn auto_directory() -> otpgate_protocol::admin::OptionsView {
    otpgate_protocol::admin::OptionsView {
        auto_directory: Some(true),
        ..Default::default()
    }
}

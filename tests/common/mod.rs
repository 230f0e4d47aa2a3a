//! Helpers for the black-box tests: a server in this process or as a child
//! process, client identities, agents and raw TLS clients, all on 127.0.0.1.

#![allow(dead_code)] // Each test file uses its own part of these helpers.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use otpgate::agent::AgentConfig;
use otpgate::agent::link::{Link, ServerAddr};
use otpgate::cli::prompt::Prompt;
use otpgate::server::config::{Overrides, ServerConfig};
use otpgate::server::{self, Server};
use otpgate::tls::{self, pki};
use otpgate::unix;
use otpgate_actors::{Clock, Computers, SystemClock};
use otpgate_protocol::admin::{AdminRequest, AdminResponse, AuditView};
use otpgate_protocol::login::{LoginRequest, LoginResponse};

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

/// A handshake (and Hello) timeout short enough for tests to see it.
pub const HANDSHAKE_MS: u64 = 2000;

/// Writes a test configuration into `dir` and returns its path: heartbeats every
/// `heartbeat_ms`, handshakes within `handshake_ms`, then `extra` TOML sections.
pub fn write_config(dir: &Path, heartbeat_ms: u64, handshake_ms: u64, extra: &str) -> PathBuf {
    let path = dir.join("otpgate.toml");
    let directory = dir.join("directory.toml");
    std::fs::write(
        &directory,
        format!(
            "[accounts]\n\"{me}\" = \"{me}@example.com\"\n\"alice\" = \"alice@example.com\"\n",
            me = me()
        ),
    )
    .unwrap();
    std::fs::write(
        &path,
        format!(
            "heartbeat_interval_ms = {heartbeat_ms}\nhandshake_timeout_ms = {handshake_ms}\n\
             directory_file = {directory:?}\nadmin_email = \"admin@example.com\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// The OS user running the tests: the login prompt's caller.
pub fn me() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name
}

/// A server running in this process, on a port of its own.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data: tempfile::TempDir,
    pub computers: Computers,
    clock: Arc<dyn Clock>,
    extra: String,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl TestServer {
    /// A server on the system clock.
    pub async fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// A server whose wall-clock time is `clock`'s.
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::start_with(clock, "").await
    }

    /// A server whose wall-clock time is `clock`'s, with `extra` configuration.
    pub async fn start_with(clock: Arc<dyn Clock>, extra: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        Self::open(data, "127.0.0.1:0", clock, extra.to_owned()).await
    }

    /// A server on the system clock with `extra` configuration (an `[smtp]`
    /// section, say).
    pub async fn start_with_config(extra: &str) -> Self {
        Self::start_with(Arc::new(SystemClock), extra).await
    }

    async fn open(
        data: tempfile::TempDir,
        listen: &str,
        clock: Arc<dyn Clock>,
        extra: String,
    ) -> Self {
        init_logs();
        let overrides = Overrides {
            data_dir: Some(data.path().join("data")),
            listen: Some(listen.into()),
        };
        let path = write_config(data.path(), HEARTBEAT_MS, HANDSHAKE_MS, &extra);
        let config = ServerConfig::load(Some(&path), overrides).unwrap();
        let server = Server::open_with_clock(&config, clock.clone())
            .await
            .unwrap();
        let computers = server.computers();
        let listener = server::bind(config.listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.run(listener, cancel.clone().cancelled_owned()));
        Self {
            addr,
            data,
            computers,
            clock,
            extra,
            cancel,
            task,
        }
    }

    /// Stops the server gracefully and starts it again on the same data folder,
    /// port and clock.
    pub async fn restart(self) -> Self {
        let (addr, clock, extra) = (self.addr, self.clock.clone(), self.extra.clone());
        let data = self.stop().await;
        Self::open(data, &addr.to_string(), clock, extra).await
    }

    /// Asks the running server's admin socket.
    pub async fn admin(&self, request: AdminRequest) -> AdminResponse {
        admin_ask(&self.data_dir(), request).await
    }

    /// The newest `limit` entries of the audit log.
    pub async fn audit(&self, limit: u32) -> Vec<AuditView> {
        let AdminResponse::Audit(entries) = self.admin(AdminRequest::AuditList { limit }).await
        else {
            panic!("no audit");
        };
        entries
    }

    /// The OTPs mailed to `to`, oldest first, once there are at least `count`.
    pub async fn codes_for(&self, to: &str, count: usize) -> Vec<String> {
        codes_for(&self.data_dir(), to, count).await
    }

    /// Starts client computer `name`: its identity, and its agent serving a
    /// login socket.
    pub async fn desk(&self, name: &str) -> Desk {
        Desk::start(
            &self.identity(name),
            self.addr,
            self.data.path().join(format!("{name}.sock")),
        )
        .await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// Issues client computer `name`'s identity and returns its folder.
    pub fn identity(&self, name: &str) -> PathBuf {
        issue(&self.data_dir(), self.data.path(), name)
    }

    /// Starts an agent link for identity folder `identity`.
    pub fn agent(&self, identity: &Path) -> Agent {
        Agent::start(identity, self.addr)
    }

    /// Stops the server the way SIGTERM would, and waits for it.
    pub async fn stop(self) -> tempfile::TempDir {
        self.cancel.cancel();
        self.task.await.unwrap();
        self.data
    }
}

/// Issues client computer `name`'s identity from the CA in `data_dir` into a
/// folder under `parent`.
pub fn issue(data_dir: &Path, parent: &Path, name: &str) -> PathBuf {
    let out = parent.join("identities").join(name);
    pki::issue_client(data_dir, &name.parse().unwrap(), &out).unwrap();
    out
}

/// An agent's link to a server, stopped when dropped.
pub struct Agent {
    pub link: Link,
    cancel: CancellationToken,
}

impl Agent {
    pub fn start(identity: &Path, server: SocketAddr) -> Self {
        init_logs();
        let tls = tls::client_config(identity).unwrap();
        let addr: ServerAddr = format!("localhost:{}", server.port()).parse().unwrap();
        let cancel = CancellationToken::new();
        let (link, _task) = Link::spawn(tls, addr, cancel.clone()).unwrap();
        Self { link, cancel }
    }

    /// Waits until the server has welcomed this agent `welcomes` times in all.
    pub async fn welcomed(&self, welcomes: u64, within: Duration) {
        let mut watch = self.link.watch();
        let reached = watch.wait_for(|s| s.connected && s.welcomes >= welcomes);
        tokio::time::timeout(within, reached)
            .await
            .unwrap_or_else(|_| panic!("not welcomed {welcomes} times: {:?}", self.link.status()))
            .unwrap();
    }
}

impl Agent {
    /// Asserts that this agent is still served on its first connection: its
    /// heartbeats keep being acknowledged and it never had to reconnect.
    pub async fn still_served(&self, within: Duration) {
        let heartbeats = self.link.status().heartbeats;
        let mut watch = self.link.watch();
        tokio::time::timeout(within, watch.wait_for(|s| s.heartbeats > heartbeats + 2))
            .await
            .expect("heartbeats still acknowledged")
            .unwrap();
        assert_eq!(self.link.status().welcomes, 1, "never reconnected");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A TLS connection opened by hand, to send whatever bytes a test wants.
pub type RawTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens a TLS connection to `server` with `config`.
pub async fn connect_tls(
    config: Arc<rustls::ClientConfig>,
    server: SocketAddr,
) -> std::io::Result<RawTls> {
    let tcp = TcpStream::connect(server).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// The server binary, run as a child process on a data folder of its own.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub child: Child,
    pub dir: PathBuf,
    /// The first administrator's password, if this start created them.
    pub initial_password: Option<String>,
    /// Kept open so that the server never writes into a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl ServerProcess {
    /// Starts `otpgate serve` on folder `dir` (configuration, data, log) listening
    /// on `listen`, and waits until it says where it listens.
    pub fn start(dir: &Path, listen: &str) -> Self {
        Self::start_with(dir, listen, HEARTBEAT_MS, HANDSHAKE_MS)
    }

    /// As [`ServerProcess::start`], with heartbeats every `heartbeat_ms` and
    /// handshakes within `handshake_ms`.
    pub fn start_with(dir: &Path, listen: &str, heartbeat_ms: u64, handshake_ms: u64) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_otpgate"))
            .arg("serve")
            .arg("--config")
            .arg(write_config(dir, heartbeat_ms, handshake_ms, ""))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut initial_password = None;
        let addr = loop {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            if let Some(addr) = line.trim().strip_prefix("otpgate listening on ") {
                break addr.parse().unwrap();
            }
            match line.split_once("with password ") {
                Some((_, rest)) => {
                    initial_password = rest.split_whitespace().next().map(String::from)
                }
                None => panic!("server did not start: {line:?}; see {}", dir.display()),
            }
        };
        Self {
            addr,
            child,
            dir: dir.to_owned(),
            initial_password,
            _stdout: stdout,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's resident and peak memory, in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let usage = otpgate::bench::Usage::of(self.child.id()).unwrap();
        (usage.rss_kib, usage.peak_rss_kib)
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks the admin socket of the server whose data folder is `data_dir`.
pub async fn admin_ask(data_dir: &Path, request: AdminRequest) -> AdminResponse {
    unix::ask(&otpgate::server::admin::socket_path(data_dir), &request)
        .await
        .unwrap()
}

/// The OTPs mailed to `to` in the outbox of data folder `data_dir`, oldest
/// first, waiting until there are at least `count`.
pub async fn codes_for(data_dir: &Path, to: &str, count: usize) -> Vec<String> {
    let mut codes = Vec::new();
    wait_until(
        Duration::from_secs(20),
        &format!("{count} OTPs mailed to {to}"),
        || {
            codes = read_codes(&data_dir.join("outbox"), to);
            let enough = codes.len() >= count;
            async move { enough }
        },
    )
    .await;
    codes
}

/// The messages in outbox folder `outbox` addressed to `to`, oldest first.
pub fn messages_to(outbox: &Path, to: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(outbox) else {
        return Vec::new();
    };
    let mut messages: Vec<(u64, String)> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let id = path
                .file_name()?
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            let text = std::fs::read_to_string(&path).ok()?;
            let message = mail_parser::MessageParser::default().parse(text.as_bytes())?;
            let addressed = message.to()?.first()?.address()? == to;
            addressed.then_some((id, text))
        })
        .collect();
    messages.sort();
    messages.into_iter().map(|(_, text)| text).collect()
}

fn read_codes(outbox: &Path, to: &str) -> Vec<String> {
    messages_to(outbox, to)
        .iter()
        .filter_map(|text| otpgate::bench::read_otp_mail(text).map(|mail| mail.code))
        .collect()
}

/// A client computer: its agent, running as in production, with its login socket.
pub struct Desk {
    pub socket: PathBuf,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Desk {
    pub async fn start(identity: &Path, server: SocketAddr, socket: PathBuf) -> Self {
        let config = AgentConfig {
            server: format!("localhost:{}", server.port()).parse().unwrap(),
            identity: identity.to_owned(),
            socket: socket.clone(),
        };
        let cancel = CancellationToken::new();
        let agent = otpgate::agent::run(config, cancel.clone());
        let task = tokio::spawn(async move { agent.await.unwrap() });
        let desk = Self {
            socket,
            cancel,
            task,
        };
        desk.connected().await;
        desk
    }

    /// Waits until the agent is connected to the server.
    pub async fn connected(&self) {
        self.until_connected(true).await;
    }

    /// Waits until the agent has noticed that its connection is gone.
    pub async fn disconnected(&self) {
        self.until_connected(false).await;
    }

    async fn until_connected(&self, connected: bool) {
        use otpgate_protocol::local::{LocalRequest, LocalResponse};
        let socket = self.socket.clone();
        wait_until(
            Duration::from_secs(20),
            "the agent's connection changes",
            || {
                let socket = socket.clone();
                async move {
                    matches!(
                        unix::ask(&socket, &LocalRequest::Status).await,
                        Ok(LocalResponse::Status(status)) if status.connected == connected
                    )
                }
            },
        )
        .await;
    }

    /// The login prompt, as the OS user running the tests.
    pub async fn login(&self, request: LoginRequest) -> LoginResponse {
        let prompt = Prompt {
            socket: &self.socket,
            os_user: None,
        };
        prompt.ask(request).await.unwrap()
    }

    /// Stops the agent, as when the computer goes away.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

/// A real SMTP server (Debian's aiosmtpd) on a loopback port, for as long as
/// this lives.
pub struct SmtpServer {
    pub port: u16,
    pub out: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl SmtpServer {
    /// A free loopback port for a server that is not started yet.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A server on `port` writing into `out`, with `args` (`--tls-cert`, `--user`…);
    /// not started.
    pub fn new(port: u16, out: PathBuf, args: &[&str]) -> Self {
        Self {
            port,
            out,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Starts it and waits until it listens.
    pub fn start(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        // Debian's python3, which has python3-aiosmtpd (scripts/test installs it).
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &self.port.to_string(), "--out"])
            .arg(&self.out)
            .args(&self.args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 with aiosmtpd (apt-get install python3-aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        self.child = Some(child);
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The messages it accepted, in order of arrival.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.out) else {
            return Vec::new();
        };
        let mut messages: Vec<(u128, String)> = entries
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                (path.extension()? == "eml").then_some(())?;
                let arrival = path
                    .file_stem()?
                    .to_str()?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                Some((arrival, std::fs::read_to_string(&path).ok()?))
            })
            .collect();
        messages.sort();
        messages.into_iter().map(|(_, text)| text).collect()
    }

    /// Waits until it has accepted at least `count` messages, and returns them.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<String> {
        let mut messages = Vec::new();
        wait_until(
            within,
            &format!("{count} messages at the SMTP server"),
            || {
                messages = self.messages();
                let enough = messages.len() >= count;
                async move { enough }
            },
        )
        .await;
        messages
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

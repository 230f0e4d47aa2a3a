//! Clients of a server under test: an agent's link ([`Agent`]), a whole client
//! computer with its login socket ([`Desk`]), and raw TLS connections.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::{init_logs, wait_until};
use otpgate::agent::AgentConfig;
use otpgate::agent::link::{Link, ServerAddr};
use otpgate::agent::socket::Limits;
use otpgate::cli::prompt::Prompt;
use otpgate::tls;
use otpgate::unix;
use otpgate_protocol::login::{LoginRequest, LoginResponse, RequestMode, Requested};

/// An agent's link to a server, stopped when dropped.
pub struct Agent {
    pub link: Link,
    cancel: CancellationToken,
}

impl Agent {
    pub fn start(identity: &Path, server: SocketAddr) -> Self {
        Self::start_many(identity, &[server])
    }

    /// An agent's link to the first of `servers` that takes it, and to the
    /// next when that one goes.
    pub fn start_many(identity: &Path, servers: &[SocketAddr]) -> Self {
        init_logs();
        let tls = tls::client_config(identity).unwrap();
        let servers: Vec<ServerAddr> = servers
            .iter()
            .map(|server| format!("localhost:{}", server.port()).parse().unwrap())
            .collect();
        let cancel = CancellationToken::new();
        let (link, _task) = Link::spawn(tls, servers, cancel.clone()).unwrap();
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
        self.still_served_since(self.link.status().heartbeats, within)
            .await;
    }

    /// [`Agent::still_served`], counting from `heartbeats` acknowledged: so that
    /// many agents can be checked over the same stretch of time.
    pub async fn still_served_since(&self, heartbeats: u64, within: Duration) {
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

/// Waits until the agent serving `socket` says it is connected to its server
/// (or, with `connected` false, that it is not).
async fn until_connected(socket: &Path, connected: bool) {
    use otpgate_protocol::local::{LocalRequest, LocalResponse};
    wait_until(
        Duration::from_secs(20),
        "the agent's connection changes",
        || async move {
            matches!(
                unix::ask(socket, &LocalRequest::Status).await,
                Ok(LocalResponse::Status(status)) if status.connected == connected
            )
        },
    )
    .await;
}

/// An agent run as a process of binary `otpgate` (another release's, say),
/// serving a login socket in a folder of the test's; killed on drop.
pub struct AgentProcess {
    pub socket: PathBuf,
    child: std::process::Child,
}

impl AgentProcess {
    /// Starts the agent of `identity` for `server`, its socket, spool and log
    /// (`agent.log`) in `dir`, and waits until it is connected.
    pub async fn start(otpgate: &Path, identity: &Path, server: SocketAddr, dir: &Path) -> Self {
        Self::start_under(&[], &[], otpgate, identity, server, dir).await
    }

    /// As [`AgentProcess::start`], the agent run by the command `wrapper`
    /// (`prlimit --nofile=...`, say), with the options `extra` besides.
    pub async fn start_under(
        wrapper: &[&str],
        extra: &[&str],
        otpgate: &Path,
        identity: &Path,
        server: SocketAddr,
        dir: &Path,
    ) -> Self {
        let socket = dir.join("agent.sock");
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let mut command = match wrapper {
            [program, args @ ..] => {
                let mut command = std::process::Command::new(program);
                command.args(args).arg(otpgate);
                command
            }
            [] => std::process::Command::new(otpgate),
        };
        let child = command
            .arg("agent")
            .args(["--server", &format!("localhost:{}", server.port())])
            .arg("--identity")
            .arg(identity)
            .arg("--socket")
            .arg(&socket)
            .arg("--spool")
            .arg(dir.join("spool"))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let agent = Self { socket, child };
        agent.connected().await;
        agent
    }

    /// Waits until the agent is connected to the server.
    pub async fn connected(&self) {
        until_connected(&self.socket, true).await;
    }

    /// Waits until the agent has noticed that its connection is gone.
    pub async fn disconnected(&self) {
        until_connected(&self.socket, false).await;
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A client computer: its agent, running as in production, with its login socket.
pub struct Desk {
    pub socket: PathBuf,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The agent's per-user limits in tests that are not about them: out of the
/// way.
pub fn unlimited() -> Limits {
    let plenty = NonZeroU32::new(1_000_000).unwrap();
    Limits {
        logins_per_second: plenty,
        chunks_per_second: plenty,
        ..Limits::default()
    }
}

impl Desk {
    /// A client computer whose agent lets each OS user send as much as they like.
    pub async fn start(identity: &Path, server: SocketAddr, socket: PathBuf) -> Self {
        Self::start_with(identity, server, socket, unlimited()).await
    }

    /// A client computer whose agent gives each OS user `limits`.
    pub async fn start_with(
        identity: &Path,
        server: SocketAddr,
        socket: PathBuf,
        limits: Limits,
    ) -> Self {
        Self::start_configured(Self::config(identity, server, socket, limits)).await
    }

    /// A client computer whose agent runs with `config`, once connected.
    pub async fn start_configured(config: AgentConfig) -> Self {
        let desk = Self::spawn(config).await;
        desk.connected().await;
        desk
    }

    /// A client computer whose agent runs with `config`, connected or not
    /// (once its socket answers).
    pub async fn spawn(config: AgentConfig) -> Self {
        let socket = config.socket.clone();
        let cancel = CancellationToken::new();
        let agent = otpgate::agent::run(config, cancel.clone());
        let task = tokio::spawn(async move { agent.await.unwrap() });
        let answers = socket.clone();
        wait_until(
            Duration::from_secs(20),
            "the agent's socket answers",
            || {
                let answers = answers.clone();
                async move {
                    unix::ask::<_, otpgate_protocol::local::LocalResponse>(
                        &answers,
                        &otpgate_protocol::local::LocalRequest::Status,
                    )
                    .await
                    .is_ok()
                }
            },
        )
        .await;
        Self {
            socket,
            cancel,
            task,
        }
    }

    /// The configuration of an agent of computer `identity` for `server`,
    /// serving `socket`, with `limits`.
    pub fn config(
        identity: &Path,
        server: SocketAddr,
        socket: PathBuf,
        limits: Limits,
    ) -> AgentConfig {
        AgentConfig {
            servers: vec![format!("localhost:{}", server.port()).parse().unwrap()],
            identity: identity.to_owned(),
            socket: socket.clone(),
            limits,
            spool: socket.with_extension("spool"),
            spool_limit: 64 << 20,
            metrics: None,
            offline_max_away: otpgate::agent::offline::max_away(
                otpgate::agent::offline::DEFAULT_MAX_DAYS,
            ),
        }
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
        until_connected(&self.socket, connected).await;
    }

    /// Asks for an OTP at the login prompt.
    pub async fn request(&self, mode: RequestMode) -> Requested {
        match self.login(LoginRequest::Request(mode)).await {
            LoginResponse::Requested(requested) => requested,
            other => panic!("{other:?}"),
        }
    }

    /// The login prompt, as the OS user running the tests.
    pub async fn login(&self, request: LoginRequest) -> LoginResponse {
        self.ask(request).await.unwrap()
    }

    /// [`Desk::login`], a refusal of the agent's included.
    pub async fn ask(
        &self,
        request: LoginRequest,
    ) -> Result<LoginResponse, otpgate::cli::prompt::LoginError> {
        let prompt = Prompt {
            socket: self.socket.clone(),
            os_user: None,
        };
        prompt.ask(request).await
    }

    /// Stops the agent, as when the computer goes away.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

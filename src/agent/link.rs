//! The agent's link to the server: one persistent connection (Hello, heartbeats,
//! answers to pings), reconnected by itself with exponential backoff and jitter,
//! resuming TLS sessions so that reconnecting is cheap, carrying the login
//! prompt's requests to the server. [`Link`] is the handle on it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow::{self, Break, Continue};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, timeout};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use otpgate_actors::backoff::Backoff;
use otpgate_protocol::version as protocol_version;
use otpgate_protocol::{
    AgentMessage, ErrorCode, FrameError, HANDSHAKE_VERSION, Hello, MAX_IN_FLIGHT,
    MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, Message, Request, Response, ServerMessage,
    Unreadable, Welcome,
};

use crate::frames::{FrameReader, FrameWriter, WriteError};
use crate::tls::{self, TlsError};

/// How long connecting, the TLS handshake and the Welcome may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How the agent spaces out reconnections: from a quarter second, doubling, up to
/// 30 seconds, so that agents cut off together do not come back together.
pub const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    max: Duration::from_secs(30),
};
/// After this many heartbeat intervals without a word from the server, the
/// connection is taken for dead.
const SILENCE_INTERVALS: u32 = 3;
/// How many local requests may wait for the link at once.
const QUEUE: usize = 64;

/// Where the server is: `HOST:PORT`. The host is also the name its certificate
/// must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    host: String,
    port: u16,
}

/// A server address that is not `HOST:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not HOST:PORT")]
pub struct InvalidServerAddr(String);

impl ServerAddr {
    /// Its host: a name or an address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ServerAddr {
    type Err = InvalidServerAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidServerAddr(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(invalid)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(invalid());
        }
        Ok(Self {
            host: host.to_owned(),
            port: port.parse().map_err(|_| invalid())?,
        })
    }
}

/// What the link is doing, for the login prompt and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// Whether the server has welcomed us on a live connection.
    pub connected: bool,
    /// Our identity as the server read it from our certificate.
    pub client_id: Option<String>,
    /// How many times the server has welcomed us since the agent started.
    pub welcomes: u64,
    /// How many heartbeats the server has acknowledged since the agent started.
    pub heartbeats: u64,
    /// Whether the current connection resumed an earlier TLS session.
    pub resumed: bool,
    /// The server of the current connection, or of the last one.
    pub server: Option<String>,
    /// Connection attempts that failed and connections that ended, by why.
    pub failures: Failures,
    /// Whether the server refused our certificate (revoked or expired) at
    /// the last try.
    pub refused: bool,
    /// How many times the server said this computer's offline codes
    /// changed.
    pub offline_changes: u64,
}

/// Why a connection attempt failed or a welcomed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nobody listens at the server's address (it is down or restarting).
    Refused,
    /// Connecting took too long, or the server went silent.
    Timeout,
    /// The TLS handshake failed.
    Tls,
    /// The server closed the connection with an error code (shutting down, say).
    Closed,
    /// The connection broke.
    Lost,
    /// Anything else.
    Other,
}

impl Failure {
    fn of_io(err: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::ConnectionRefused => Self::Refused,
            ErrorKind::TimedOut => Self::Timeout,
            // What tokio-rustls reports a failed handshake as.
            ErrorKind::InvalidData => Self::Tls,
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => Self::Lost,
            _ => Self::Other,
        }
    }
}

/// How many connection attempts failed and connections ended, by [`Failure`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// See [`Failure::Refused`].
    pub refused: u64,
    /// See [`Failure::Timeout`].
    pub timeout: u64,
    /// See [`Failure::Tls`].
    pub tls: u64,
    /// See [`Failure::Closed`].
    pub closed: u64,
    /// See [`Failure::Lost`].
    pub lost: u64,
    /// See [`Failure::Other`].
    pub other: u64,
}

impl Failures {
    fn add(&mut self, failure: Failure) {
        let count = match failure {
            Failure::Refused => &mut self.refused,
            Failure::Timeout => &mut self.timeout,
            Failure::Tls => &mut self.tls,
            Failure::Closed => &mut self.closed,
            Failure::Lost => &mut self.lost,
            Failure::Other => &mut self.other,
        };
        *count += 1;
    }

    /// Each kind with its count, the kinds that never happened left out.
    pub fn by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("refused", self.refused),
            ("timeout", self.timeout),
            ("tls", self.tls),
            ("closed", self.closed),
            ("lost", self.lost),
            ("other", self.other),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
    }
}

/// Why a request through the link got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// There is no connection to the server right now.
    #[error("not connected to the server")]
    NotConnected,
    /// The connection was lost before the server answered.
    #[error("connection lost before the server answered")]
    Lost,
    /// The link has stopped.
    #[error("the agent is stopping")]
    Stopped,
}

/// A request from a local caller, waiting to go out.
struct Outgoing {
    request: Request,
    reply: oneshot::Sender<Result<Response, LinkError>>,
}

/// The handle on the agent's connection to the server.
#[derive(Clone)]
pub struct Link {
    status: watch::Receiver<LinkStatus>,
    requests: mpsc::Sender<Outgoing>,
    /// The TLS configuration of the next connection (a renewed certificate).
    tls: Arc<watch::Sender<Arc<ClientConfig>>>,
    /// The recording bytes in the agent's spool, said with each heartbeat.
    spooled: Arc<AtomicU64>,
}

impl Link {
    /// Starts keeping a connection to one of `servers` with TLS configuration
    /// `tls`, until `cancel` fires: the first that takes it, and when that
    /// one goes, the next (see [`Maintainer::run`]).
    pub fn spawn(
        tls: Arc<ClientConfig>,
        servers: Vec<ServerAddr>,
        cancel: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), TlsError> {
        Self::spawn_from(tls, servers, None, cancel)
    }

    /// [`Link::spawn`], connecting from local address `source` when given (a load
    /// generator spreads its connections over several, so as not to run out of
    /// ports).
    pub fn spawn_from(
        tls: Arc<ClientConfig>,
        servers: Vec<ServerAddr>,
        source: Option<IpAddr>,
        cancel: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), TlsError> {
        let servers = servers
            .into_iter()
            .map(|server| Ok((tls::server_name(&server.host)?, server)))
            .collect::<Result<Vec<_>, TlsError>>()?;
        if servers.is_empty() {
            return Err(TlsError::NoServer);
        }
        let (status_tx, status) = watch::channel(LinkStatus::default());
        let (requests, requests_rx) = mpsc::channel(QUEUE);
        let (tls_tx, identity) = watch::channel(Arc::clone(&tls));
        let spooled = Arc::new(AtomicU64::new(0));
        let task = Maintainer {
            spooled: Arc::clone(&spooled),
            connector: TlsConnector::from(tls),
            identity,
            servers,
            current: 0,
            source,
            status: status_tx,
            requests: requests_rx,
            cancel,
        };
        let link = Self {
            status,
            requests,
            tls: Arc::new(tls_tx),
            spooled,
        };
        Ok((link, tokio::spawn(task.run())))
    }

    /// Connects with `tls` from the next connection on (the one open now is
    /// kept): a renewed certificate, with no session of the old one to
    /// resume.
    pub fn use_tls(&self, tls: Arc<ClientConfig>) {
        self.tls.send_replace(tls);
    }

    /// Says, with the heartbeats from now on, that the agent's spool holds
    /// `bytes` of recordings (for the server's metrics).
    pub fn spooled(&self, bytes: u64) {
        self.spooled.store(bytes, Ordering::Relaxed);
    }

    /// What the link is doing now.
    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of status.
    pub fn watch(&self) -> watch::Receiver<LinkStatus> {
        self.status.clone()
    }

    /// Sends `request` to the server and waits for its answer.
    pub async fn call(&self, request: Request) -> Result<Response, LinkError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Outgoing { request, reply })
            .await
            .map_err(|_| LinkError::Stopped)?;
        answer.await.unwrap_or(Err(LinkError::Lost))
    }
}

/// The task behind a [`Link`].
struct Maintainer {
    connector: TlsConnector,
    /// The configuration to connect with, when it changes.
    identity: watch::Receiver<Arc<ClientConfig>>,
    /// The servers, each with the name its certificate must carry.
    servers: Vec<(ServerName<'static>, ServerAddr)>,
    /// The one tried or connected to now.
    current: usize,
    source: Option<IpAddr>,
    status: watch::Sender<LinkStatus>,
    requests: mpsc::Receiver<Outgoing>,
    cancel: CancellationToken,
    /// See [`Link::spooled`].
    spooled: Arc<AtomicU64>,
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A connection the server has welcomed.
struct Established {
    reader: FrameReader<tokio::io::ReadHalf<TlsStream>>,
    writer: FrameWriter<tokio::io::WriteHalf<TlsStream>>,
    welcome: Welcome,
    /// The protocol version agreed, that our frames are written in.
    version: u8,
    resumed: bool,
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("server closed the connection: {0:?}")]
    Refused(ErrorCode),
    #[error("server did not welcome us")]
    NoWelcome,
    #[error("the server has no address of the source address's family")]
    NoAddress,
}

impl ConnectError {
    fn failure(&self) -> Failure {
        match self {
            Self::Io(err) => Failure::of_io(err),
            Self::Refused(_) => Failure::Closed,
            Self::NoWelcome => Failure::Lost,
            Self::NoAddress => Failure::Other,
        }
    }
}

impl Maintainer {
    /// Connects, serves the connection until it ends, and again. A failed
    /// attempt moves on to the next server at once; a lost connection, after
    /// a jittered moment; once every server has failed in a row, each round
    /// waits longer (backoff with jitter), so that agents cut off together
    /// neither spin nor come back together. With one server: the backoff
    /// after each failure, as ever.
    async fn run(mut self) {
        // Failed attempts since the last connection a server welcomed.
        let mut failures: u32 = 0;
        loop {
            // A renewed certificate is used from the next connection on.
            if self.identity.has_changed().unwrap_or(false) {
                self.connector = TlsConnector::from(Arc::clone(&self.identity.borrow_and_update()));
            }
            let attempt = tokio::select! {
                () = self.cancel.cancelled() => return,
                attempt = timeout(CONNECT_TIMEOUT, self.connect()) => attempt,
            };
            let (failure, welcomed) = match attempt {
                Ok(Ok(established)) => {
                    failures = 0;
                    match self.session(established).await {
                        Break(()) => return,
                        Continue(ended) => (ended, true),
                    }
                }
                Ok(Err(err)) => {
                    debug!(error = %err, "cannot connect to the server");
                    if let ConnectError::Refused(ErrorCode::CertificateRefused) = err {
                        self.status.send_modify(|status| status.refused = true);
                    }
                    (err.failure(), false)
                }
                Err(_) => {
                    debug!("connecting to the server timed out");
                    (Failure::Timeout, false)
                }
            };
            self.status
                .send_modify(|status| status.failures.add(failure));
            failures += 1;
            self.current = (self.current + 1) % self.servers.len();
            let servers = u32::try_from(self.servers.len()).unwrap_or(u32::MAX);
            // After a connection ends, a jittered moment (agents cut off
            // together spread out, and servers that welcome and close at once
            // are not hammered); after a whole round of failures, longer.
            let pause = if welcomed || failures.is_multiple_of(servers) {
                BACKOFF.pause(failures.div_ceil(servers))
            } else {
                Duration::ZERO
            };
            let pause = sleep(pause);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = &mut pause => break,
                    Some(outgoing) = self.requests.recv() => {
                        let _ = outgoing.reply.send(Err(LinkError::NotConnected));
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<Established, ConnectError> {
        let (name, server) = &self.servers[self.current];
        // Every address the name resolves to is tried, in turn.
        let target = (server.host.as_str(), server.port);
        let tcp = match self.source {
            None => TcpStream::connect(target).await?,
            Some(source) => {
                let server = tokio::net::lookup_host(target)
                    .await?
                    .find(|addr| addr.is_ipv4() == source.is_ipv4())
                    .ok_or(ConnectError::NoAddress)?;
                let socket = if source.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(source, 0))?;
                socket.connect(server).await?
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls = self.connector.connect(name.clone(), tcp).await?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let (read, write) = tokio::io::split(tls);
        let mut reader = FrameReader::new(read);
        let mut writer = FrameWriter::new(write);
        let hello = AgentMessage::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: MAX_PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            // One the server would refuse is not sent: the name is informative only.
            host_name: nix::unistd::gethostname()
                .map(|name| name.to_string_lossy().into_owned())
                .ok()
                .filter(|name| otpgate_protocol::message::is_host_name(name))
                .unwrap_or_default(),
        });
        writer
            .write(&hello, HANDSHAKE_VERSION)
            .await
            .map_err(|_| ConnectError::NoWelcome)?;
        match reader.read::<ServerMessage>().await {
            Ok(Some(ServerMessage::Welcome(welcome))) => {
                // A server must pick from the range we offered.
                let version = u8::try_from(welcome.version)
                    .ok()
                    .filter(|&version| protocol_version::AGENT.contains(version))
                    .ok_or(ConnectError::NoWelcome)?;
                Ok(Established {
                    reader,
                    writer,
                    welcome,
                    version,
                    resumed,
                })
            }
            Ok(Some(ServerMessage::Close(code))) => Err(ConnectError::Refused(code)),
            Ok(_) | Err(_) => Err(ConnectError::NoWelcome),
        }
    }

    /// Runs one welcomed connection until it ends. `Break` means the agent is
    /// stopping; `Continue` says why the connection ended.
    async fn session(&mut self, mut conn: Established) -> ControlFlow<(), Failure> {
        let every = Duration::from_millis(conn.welcome.heartbeat_interval_ms.max(1).into());
        let server = self.servers[self.current].1.to_string();
        info!(
            %server,
            client = %conn.welcome.client_id,
            resumed = conn.resumed,
            version = conn.version,
            server_version = %conn.welcome.server_version,
            "connected to the server"
        );
        if conn.version < protocol_version::AGENT.newest {
            warn!(
                version = conn.version,
                server_version = %conn.welcome.server_version,
                "the server speaks an older protocol version: it is served in it, and what \
                 it does not know is answered as unsupported until the server is upgraded"
            );
        }
        self.status.send_modify(|status| {
            status.connected = true;
            status.client_id = Some(conn.welcome.client_id.clone());
            status.welcomes += 1;
            status.refused = false;
            status.resumed = conn.resumed;
            status.server = Some(server);
        });
        let mut ticks = interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_id: u64 = 0;
        let mut heartbeat: Option<u64> = None;
        // A server of version 2 built before `Status` answers it as
        // unsupported: plain heartbeats to that one.
        let mut plain = conn.version < 2;
        let mut last_heard = Instant::now();
        let mut callers: HashMap<u64, oneshot::Sender<Result<Response, LinkError>>> =
            HashMap::new();

        let flow = loop {
            let out = tokio::select! {
                () = self.cancel.cancelled() => break Break(()),
                _ = ticks.tick() => {
                    if last_heard.elapsed() > SILENCE_INTERVALS * every {
                        warn!("server silent for too long; reconnecting");
                        break Continue(Failure::Timeout);
                    }
                    if heartbeat.is_some() {
                        // The last one is still on its way; do not pile up more.
                        continue;
                    }
                    next_id += 1;
                    heartbeat = Some(next_id);
                    let request = if plain {
                        Request::Heartbeat
                    } else {
                        Request::Status { spool_bytes: self.spooled.load(Ordering::Relaxed) }
                    };
                    AgentMessage::Request { id: next_id, request }
                }
                // Beyond the server's limit, requests wait here in the queue.
                Some(outgoing) = self.requests.recv(), if callers.len() < MAX_IN_FLIGHT => {
                    next_id += 1;
                    callers.insert(next_id, outgoing.reply);
                    AgentMessage::Request { id: next_id, request: outgoing.request }
                }
                frame = conn.reader.read_frame() => {
                    let Ok(Some(frame)) = frame else {
                        info!("connection to the server lost");
                        break Continue(Failure::Lost);
                    };
                    last_heard = Instant::now();
                    let msg = match ServerMessage::decode(&frame) {
                        Ok(msg) => msg,
                        Err(err) => match ServerMessage::unreadable(&frame) {
                            // The answer of a newer server that we cannot read:
                            // that one request failed.
                            Unreadable::Request(id) => {
                                debug!(id, error = %err, "an answer we cannot read");
                                ServerMessage::Response {
                                    id,
                                    response: Response::Fail(ErrorCode::Unsupported),
                                }
                            }
                            Unreadable::Unknown => {
                                debug!("let pass a message of a newer server");
                                continue;
                            }
                            Unreadable::Garbage => {
                                warn!(error = %err, "the server sent what we cannot read; reconnecting");
                                break Continue(Failure::Other);
                            }
                        },
                    };
                    match msg {
                        ServerMessage::Response { id, response } => {
                            if heartbeat == Some(id) {
                                heartbeat = None;
                                match response {
                                    Response::Heartbeat => {
                                        self.status.send_modify(|status| status.heartbeats += 1);
                                    }
                                    Response::Fail(ErrorCode::Unsupported) => plain = true,
                                    _ => {}
                                }
                            } else if let Some(caller) = callers.remove(&id) {
                                let _ = caller.send(Ok(response));
                            }
                            continue;
                        }
                        ServerMessage::Ping { nonce } => AgentMessage::Pong { nonce },
                        ServerMessage::Close(code) => {
                            info!(?code, "server closed the connection");
                            if code == ErrorCode::CertificateRefused {
                                self.status.send_modify(|status| status.refused = true);
                            }
                            break Continue(Failure::Closed);
                        }
                        ServerMessage::OfflineChanged => {
                            self.status.send_modify(|status| status.offline_changes += 1);
                            continue;
                        }
                        ServerMessage::Welcome(_) => {
                            warn!("server sent a second Welcome; reconnecting");
                            break Continue(Failure::Other);
                        }
                    }
                }
            };
            match conn.writer.write(&out, conn.version).await {
                Ok(()) => {}
                // A request this server's version cannot carry: its caller does
                // without, and the connection goes on.
                Err(WriteError::Frame(FrameError::NotInVersion { .. })) => {
                    if let AgentMessage::Request { id, .. } = out
                        && let Some(caller) = callers.remove(&id)
                    {
                        let _ = caller.send(Ok(Response::Fail(ErrorCode::Unsupported)));
                    }
                }
                Err(_) => {
                    info!("connection to the server lost");
                    break Continue(Failure::Lost);
                }
            }
        };
        self.status.send_modify(|status| status.connected = false);
        let _ = conn.writer.shutdown().await;
        // Callers still waiting learn that the connection was lost when their
        // senders drop here.
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind() {
        use std::io::{Error, ErrorKind};
        let mut failures = Failures::default();
        for err in [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionRefused,
            ErrorKind::InvalidData,
        ] {
            failures.add(Failure::of_io(&Error::from(err)));
        }
        failures.add(ConnectError::Refused(ErrorCode::ShuttingDown).failure());
        failures.add(Failure::of_io(&Error::from(ErrorKind::UnexpectedEof)));
        let kinds: Vec<_> = failures.by_kind().collect();
        assert_eq!(
            kinds,
            [("refused", 2), ("tls", 1), ("closed", 1), ("lost", 1)]
        );
    }

    #[test]
    fn server_addresses_parse() {
        let addr: ServerAddr = "otp.example.com:7443".parse().unwrap();
        assert_eq!((addr.host.as_str(), addr.port), ("otp.example.com", 7443));
        let addr: ServerAddr = "[::1]:7443".parse().unwrap();
        assert_eq!(addr.host, "::1");
        for bad in ["nohost", ":7443", "host:", "host:99999"] {
            assert!(bad.parse::<ServerAddr>().is_err(), "{bad}");
        }
    }
}

//! The server: opens the data folder, accepts agents over mutual TLS and serves
//! each connection, handing every request to the actor of the computer the
//! agent's certificate names.
//!
//! One task per connection reads frames, runs the requests it receives
//! concurrently (at most `MAX_IN_FLIGHT` at once, and no faster than the
//! configured requests per second: flood control) and writes their responses.
//! A connection that sends a bad frame is told why with an [`ErrorCode`] and
//! closed; nothing it sends can stop the server serving the others.

pub mod admin;
pub mod config;
mod convert;
pub mod directory;
mod gate;
pub mod ldap;
pub(crate) mod live;
pub mod mail;
mod pages;
pub mod recordings;
pub mod service;
pub mod web;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use governor::{Quota, RateLimiter};
use otpgate_actors::audit::{Action, AuditEntry};
use otpgate_actors::directory::{Directory, Role, UserRecord};
use otpgate_actors::mail::{MailTransport, Mailer, MailerArgs, MailerHandle, MailerMsg};
use otpgate_actors::names::is_host_name;
use otpgate_actors::otp::OtpKeys;
use otpgate_actors::policy;
use otpgate_actors::{
    AgentInfo, CallError, Clock, ComputerError, ComputerId, Computers, ConnectionId, Services,
    SledStore, Store, StoreError, SystemClock, Waiting,
};
use otpgate_protocol::version as protocol_version;
use otpgate_protocol::{
    AgentMessage, ErrorCode, FrameError, HANDSHAKE_VERSION, Hello, MAX_IN_FLIGHT, Message, Request,
    Response, ServerMessage, Unreadable, Welcome, negotiate,
};
use ractor::{Actor, ActorRef};
use rand::RngExt;
use zeroize::Zeroizing;

use crate::frames::{FrameReader, FrameWriter};
use crate::tls::revoked::Revocations;
use crate::tls::{self, ALPN, TlsError, pki};
use config::ServerConfig;
use directory::{DirectoryFileError, StaticDirectory};
use gate::Handshakes;
use live::{Live, Warned};
use mail::{EmlDir, Sender, Smtp, SmtpSetupError};
use recordings::Recordings;
use service::AdminService;

/// How long shutdown waits for connections and actors to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Open files the server needs besides its connections: the database, the
/// listeners, the outbox, the blocking pool's files.
pub const RESERVED_FILES: u64 = 256;

/// The listen backlog: agents reconnecting all at once queue here.
const LISTEN_BACKLOG: u32 = 8192;

/// How long to pause accepting after the process ran out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The longest agent version string a Hello may carry.
const MAX_AGENT_VERSION: usize = 64;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The PKI or TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The database could not be opened (another server may hold it).
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    /// A folder or socket in the data folder could not be created.
    #[error("cannot create {}: {source}", path.display())]
    DataDir {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The actors could not be started.
    #[error("cannot start the actors: {0}")]
    Actors(#[from] ractor::SpawnErr),
    /// The directory file is unusable.
    #[error(transparent)]
    Directory(#[from] DirectoryFileError),
    /// The SMTP relay's settings are unusable.
    #[error("smtp: {0}")]
    Smtp(#[from] SmtpSetupError),
    /// The web Management Tool cannot start.
    #[error(transparent)]
    Web(#[from] web::WebError),
    /// The LDAP directory's settings are unusable.
    #[error(transparent)]
    Ldap(#[from] ldap::LdapSetupError),
}

impl OpenError {
    /// Whether the configuration is at fault (exit status 64) rather than the
    /// environment.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Tls(_)
                | Self::Directory(_)
                | Self::Smtp(_)
                | Self::Ldap(_)
                | Self::Web(web::WebError::Identity { .. })
        )
    }
}

/// Binds `addr` with a backlog deep enough for a reconnect storm.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A server with its data folder open, ready to serve a listener.
pub struct Server {
    shared: Arc<Shared>,
    store: Arc<SledStore>,
    /// How long recordings are kept after their last write.
    recording_retention: Duration,
    policy: policy::Owner,
    clock: Arc<dyn Clock>,
    keys: Arc<OtpKeys>,
    transport: Arc<dyn MailTransport>,
    host: String,
    supervisor: JoinHandle<()>,
    mailer: ActorRef<MailerMsg>,
    max_connections: usize,
    admin_socket: std::path::PathBuf,
    admin_listener: tokio::net::UnixListener,
    initial_password: Option<Zeroizing<String>>,
    initial_password_file: std::path::PathBuf,
    web: Option<web::Web>,
    directory: Arc<dyn Directory>,
}

/// What every connection task needs.
struct Shared {
    acceptor: TlsAcceptor,
    /// Handshakes in flight, in all and per source address.
    handshakes: Arc<Handshakes>,
    /// Revoked client certificates, checked on every connection.
    revocations: Arc<Revocations>,
    /// The connections open now, for revocations to close.
    live: Arc<Live>,
    /// The computers whose agent was found to speak an older protocol.
    old_agents: Warned,
    computers: Computers,
    /// Terminal recordings, stored as agents ship them.
    recordings: Arc<Recordings>,
    /// The audit log (a recording that lost output) and client sessions (a
    /// recording's tie).
    store: Arc<SledStore>,
    clock: Arc<dyn Clock>,
    handshake_timeout: Duration,
    heartbeat_interval: Duration,
    /// Flood control: how fast one connection may send requests.
    request_quota: Quota,
    next_conn: AtomicU64,
}

impl Server {
    /// Checks what the configuration names (directory file, PKI, SMTP relay's CA),
    /// then creates what is missing in the data folder (PKI, database, the first
    /// administrator), opens it and starts the actors.
    pub async fn open(config: &ServerConfig) -> Result<Self, OpenError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Server::open`], with wall-clock time from `clock` (tests move it).
    pub async fn open_with_clock(
        config: &ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpenError> {
        let data_dir = |path: &std::path::Path| {
            crate::files::create_private_dir(path).map_err(|source| OpenError::DataDir {
                path: path.to_owned(),
                source,
            })
        };
        data_dir(&config.data_dir)?;
        tighten_data_dir(&config.data_dir)?;
        // The dummy password hash that unknown logins are checked against is
        // made now, beside the rest of the start, not by the first unknown login.
        drop(tokio::task::spawn_blocking(
            otpgate_actors::directory::prepare,
        ));
        let directory: Arc<dyn Directory> = match (&config.ldap, &config.directory_file) {
            (Some(ldap), _) => Arc::new(ldap::LdapDirectory::new(ldap.clone())?),
            (None, Some(path)) => Arc::new(StaticDirectory::load(path)?),
            (None, None) => Arc::new(StaticDirectory::default()),
        };
        let pki =
            pki::ensure_server(&config.data_dir, &config.server_names).map_err(TlsError::from)?;
        let keys = Arc::new(OtpKeys::derive(pki.secret.expose()));
        let web = config
            .web
            .as_ref()
            .map(|web| web::Web::bind(web, pki.chain.clone(), pki.key.clone_key()))
            .transpose()?;
        let acceptor = TlsAcceptor::from(tls::server_config(pki)?);
        let revocations = Arc::new(Revocations::load(&config.data_dir).map_err(TlsError::from)?);
        let from = Sender::parse(&config.mail_from);
        let transport: Arc<dyn MailTransport> = match &config.smtp {
            Some(smtp) => Arc::new(Smtp::new(smtp, from)?),
            None => {
                let outbox = config.data_dir.join("outbox");
                let dir =
                    EmlDir::new(outbox.clone(), from).map_err(|source| OpenError::DataDir {
                        path: outbox,
                        source,
                    })?;
                Arc::new(dir)
            }
        };
        // Everything the configuration names is checked above; only now is the
        // database opened.
        let db = config.data_dir.join("db");
        data_dir(&db)?;
        let store = Arc::new(SledStore::open(&db)?);
        data_dir(&config.data_dir.join(RECORDINGS))?;
        let recordings = Arc::new(Recordings::open(
            &config.data_dir.join(RECORDINGS),
            Arc::clone(&keys),
        )?);
        let policy = policy::Owner::load(store.clone())?;
        let initial_password = bootstrap_admin(&policy, config, clock.as_ref()).await?;
        let host = config
            .server_names
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".to_owned());
        let waiting = Waiting::default();
        let mailer_args = MailerArgs {
            store: store.clone(),
            transport: transport.clone(),
            keys: keys.clone(),
            clock: clock.clone(),
            host: host.clone(),
            management_url: config.management_url.clone(),
            max_attempts: config
                .smtp
                .as_ref()
                .map_or(otpgate_actors::mail::DEFAULT_MAX_ATTEMPTS, |smtp| {
                    smtp.max_attempts
                }),
            waiting: waiting.clone(),
        };
        let (mailer, _) = Actor::spawn(None, Mailer, mailer_args).await?;
        let services_keys = keys.clone();
        let services = Services {
            policy: policy.clone(),
            store: store.clone(),
            clock: clock.clone(),
            keys,
            directory: Arc::clone(&directory),
            mailer: Some(MailerHandle::new(mailer.clone(), waiting)),
        };
        let (computers, supervisor) = Computers::start(Arc::new(services)).await?;
        let admin_socket = admin::socket_path(&config.data_dir);
        let admin_listener = admin::bind(&admin_socket).map_err(|source| OpenError::DataDir {
            path: admin_socket.clone(),
            source,
        })?;
        Ok(Self {
            shared: Arc::new(Shared {
                acceptor,
                handshakes: Handshakes::new(
                    config.max_handshakes,
                    config.max_handshakes_per_source,
                ),
                revocations: revocations.clone(),
                live: Arc::default(),
                old_agents: Warned::default(),
                computers,
                recordings,
                store: store.clone(),
                clock: clock.clone(),
                handshake_timeout: config.handshake_timeout,
                heartbeat_interval: config.heartbeat_interval,
                request_quota: Quota::per_second(config.requests_per_second).allow_burst(
                    config
                        .requests_per_second
                        .saturating_mul(NonZeroU32::new(2).expect("2 is not 0")),
                ),
                next_conn: AtomicU64::new(0),
            }),
            store,
            recording_retention: config.recording_retention,
            policy,
            clock,
            keys: services_keys,
            transport,
            host,
            supervisor,
            mailer,
            max_connections: config.max_connections,
            admin_socket,
            admin_listener,
            initial_password,
            initial_password_file: config.data_dir.join(INITIAL_PASSWORD_FILE),
            web,
            directory,
        })
    }

    /// The first administrator's password, once, if this start created them.
    pub fn take_initial_password(&mut self) -> Option<Zeroizing<String>> {
        self.initial_password.take()
    }

    /// Where the web Management Tool listens, unless it is turned off.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().and_then(|web| web.local_addr().ok())
    }

    /// The handle on the computers' actors, for the parts of the daemon (and the
    /// tests) that act on a computer outside an agent's connection.
    pub fn computers(&self) -> Computers {
        self.shared.computers.clone()
    }

    /// Serves agents on `listener` until `shutdown` resolves, then stops in order:
    /// stop accepting, close every connection, stop the actors, flush the database.
    /// Says whether every step finished within its grace.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Stopped {
        let mut stopped = Stopped::Clean;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let service = Arc::new(AdminService {
            recordings: self.shared.recordings.clone(),
            store: self.store.clone(),
            policy: self.policy.clone(),
            computers: self.shared.computers.clone(),
            clock: self.clock.clone(),
            keys: self.keys.clone(),
            transport: self.transport.clone(),
            host: self.host.clone(),
            revocations: self.shared.revocations.clone(),
            live: self.shared.live.clone(),
            initial_password_file: self.initial_password_file.clone(),
            directory: self.directory.clone(),
        });
        tracker.spawn(prune_every(
            self.store.clone(),
            self.policy.clone(),
            self.clock.clone(),
            (self.shared.recordings.clone(), self.recording_retention),
            cancel.child_token(),
        ));
        if let Some(web) = self.web {
            tracker.spawn(web.serve(service.clone(), cancel.child_token()));
        }
        tracker.spawn(admin::serve(
            self.admin_listener,
            service,
            cancel.child_token(),
        ));
        let permits = Arc::new(Semaphore::new(self.max_connections));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, or a connection reset while
                        // queued: nothing to do but wait a little and go on.
                        warn!(error = %err, "accept failed");
                        sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            let shared = self.shared.clone();
            let cancel = cancel.child_token();
            let span = info_span!("conn", %peer, client = tracing::field::Empty);
            tracker.spawn(serve_tcp(shared, tcp, peer, cancel, permit).instrument(span));
        }

        info!("shutting down");
        drop(listener);
        cancel.cancel();
        tracker.close();
        if timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
            warn!("connections did not close in time");
            stopped = Stopped::Late("connections");
        }
        self.shared.computers.stop(SHUTDOWN_GRACE).await;
        if let Err(err) = self.supervisor.await {
            warn!(error = %err, "supervisor task failed");
        }
        // Queued mail stays in the outbox for the next start.
        if self
            .mailer
            .stop_and_wait(None, Some(SHUTDOWN_GRACE))
            .await
            .is_err()
        {
            warn!("mailer did not stop in time");
            stopped = Stopped::Late("mailer");
        }
        let _ = std::fs::remove_file(&self.admin_socket);
        // Everything anyone was told about is durable already; this flushes the
        // rest (last-seen times), bounded like the other steps.
        let recordings = Arc::clone(&self.shared.recordings);
        drop(self.shared);
        let flushed = async {
            self.store.flush().await?;
            recordings.flush().await
        };
        match timeout(SHUTDOWN_GRACE, flushed).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(error = %err, "final flush failed");
                stopped = Stopped::Late("final flush");
            }
            Err(_) => {
                tracing::error!("final flush did not finish in time");
                stopped = Stopped::Late("final flush");
            }
        }
        // An actor reports that it stopped a moment before its state (which
        // holds the database) is dropped: wait, bounded, until nothing else
        // holds the databases, so that they are closed (and their locks
        // released) when this returns.
        drop(self.policy);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let held = || Arc::strong_count(&self.store) > 1 || Arc::strong_count(&recordings) > 1;
        while held() && Instant::now() < deadline {
            sleep(Duration::from_millis(5)).await;
        }
        if held() {
            warn!("the database is still held by a stopping task");
            stopped = Stopped::Late("database release");
        }
        info!("stopped");
        stopped
    }
}

/// How [`Server::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every step of the shutdown finished within its grace.
    Clean,
    /// This step (the last that did not) was cut short by its grace.
    Late(&'static str),
}

/// Serves one accepted TCP connection: TLS handshake, identity, then the session.
async fn serve_tcp(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let Some(place) = shared.handshakes.enter(peer.ip()) else {
        debug!("too many handshakes in flight; closed");
        return;
    };
    // Frames are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let tls = tokio::select! {
        () = cancel.cancelled() => return,
        handshake = timeout(shared.handshake_timeout, shared.acceptor.accept(tcp)) => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                debug!(error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                return;
            }
        },
    };
    drop(place);
    let (_, session) = tls.get_ref();
    if session.alpn_protocol() != Some(ALPN) {
        debug!("client did not negotiate ALPN otpgate/1");
        return;
    }
    // A resumed session carries the certificate of its first handshake, which
    // rustls does not check again: its expiry and revocation are checked here,
    // on every connection.
    let cert = match session.peer_certificates().and_then(|certs| certs.first()) {
        Some(cert) => match pki::client_cert(cert) {
            Ok(cert) => cert,
            Err(err) => {
                warn!(error = %err, "refused a certificate");
                return;
            }
        },
        // The verifier requires a certificate; this cannot happen, but must not panic.
        None => return,
    };
    tracing::Span::current().record("client", cert.id.as_str());
    let (read, write) = tokio::io::split(tls);
    let mut writer = FrameWriter::new(write);
    // Entered before the check: a revocation either shows in the check or
    // finds this connection to close.
    let conn = ConnectionId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let live = shared.live.enter(&cert.id, conn);
    let now = SystemClock.now().unix_seconds();
    if cert.expires < now || shared.revocations.refuses(&cert) {
        warn!(
            expired = cert.expires < now,
            "refused a revoked or expired certificate"
        );
        let refused = ServerMessage::Close(ErrorCode::CertificateRefused);
        let _ = writer.write(&refused, HANDSHAKE_VERSION).await;
        return;
    }
    let mut session = Session {
        shared,
        id: cert.id,
        conn,
        reader: FrameReader::new(read),
        writer,
        version: HANDSHAKE_VERSION,
        revoked: live.revoked.clone(),
    };
    session.run(&cancel).await;
}

/// One agent's connection after the TLS handshake.
struct Session<R, W> {
    shared: Arc<Shared>,
    id: ComputerId,
    conn: ConnectionId,
    reader: FrameReader<R>,
    writer: FrameWriter<W>,
    /// The protocol version agreed at Hello, that our frames are written in.
    version: u8,
    /// Fires when the computer's certificates are revoked.
    revoked: CancellationToken,
}

/// How a session ended.
enum End {
    /// The agent closed the connection, or it broke.
    Gone,
    /// We close it, telling the agent why.
    Close(ErrorCode),
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    async fn run(&mut self, cancel: &CancellationToken) {
        let end = match self.hello().await {
            Ok(hello) => {
                let end = self.serve(hello, cancel).await;
                self.shared.computers.disconnect(&self.id, self.conn);
                end
            }
            Err(end) => end,
        };
        if let End::Close(code) = end {
            debug!(?code, "closing connection");
            // The agent may be gone already; nothing more to do if so.
            let _ = self
                .writer
                .write(&ServerMessage::Close(code), self.version)
                .await;
        }
        let _ = self.writer.shutdown().await;
        info!("agent disconnected");
    }

    /// Waits for the agent's Hello and agrees on a protocol version.
    async fn hello(&mut self) -> Result<(Hello, u8), End> {
        let hello = match timeout(self.shared.handshake_timeout, self.reader.read()).await {
            Err(_) => return Err(End::Close(ErrorCode::Timeout)),
            Ok(Ok(Some(AgentMessage::Hello(hello)))) => hello,
            Ok(Ok(Some(_))) => return Err(End::Close(ErrorCode::UnexpectedMessage)),
            Ok(Ok(None)) => return Err(End::Gone),
            Ok(Err(err)) => return Err(err.code().map_or(End::Gone, End::Close)),
        };
        if !is_host_name(&hello.host_name) || hello.agent_version.len() > MAX_AGENT_VERSION {
            warn!("refused a Hello with an invalid host name or agent version");
            return Err(End::Close(ErrorCode::Malformed));
        }
        match negotiate(&hello) {
            Some(version) => Ok((hello, version)),
            None => Err(End::Close(ErrorCode::UnsupportedProtocolVersion)),
        }
    }

    /// Registers the connection with the computer's actor, welcomes the agent, then
    /// serves its requests until it leaves, misbehaves or we shut down.
    async fn serve(&mut self, (hello, version): (Hello, u8), cancel: &CancellationToken) -> End {
        let info = AgentInfo {
            host_name: hello.host_name,
            agent_version: hello.agent_version,
            protocol: version,
        };
        let conn = self.conn;
        let connected = self
            .shared
            .computers
            .connect(&self.id, conn, info.clone())
            .await;
        if let Err(err) = connected {
            warn!(error = %err, "cannot register connection");
            return End::Close(code_for(&err));
        }
        let welcome = ServerMessage::Welcome(Welcome {
            version: version.into(),
            client_id: self.id.to_string(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            heartbeat_interval_ms: u32::try_from(self.shared.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
        });
        if self.writer.write(&welcome, version).await.is_err() {
            return End::Gone;
        }
        self.version = version;
        info!(version, host = %info.host_name, "agent connected");
        if version < protocol_version::AGENT.newest && self.shared.old_agents.first(&self.id) {
            warn!(
                version,
                agent_version = %info.agent_version,
                "this agent speaks an older protocol version; it is served, but upgrade it \
                 (see \"Upgrading\" in the README)"
            );
        }

        let interval = self.shared.heartbeat_interval;
        let idle = sleep(2 * interval);
        tokio::pin!(idle);
        let mut ping: Option<u64> = None;
        let mut in_flight = JoinSet::new();
        let flood = RateLimiter::direct(self.shared.request_quota);
        let heartbeat = Waiting::default();
        loop {
            let out = tokio::select! {
                biased;
                () = cancel.cancelled() => return End::Close(ErrorCode::ShuttingDown),
                () = self.revoked.cancelled() => return End::Close(ErrorCode::CertificateRefused),
                Some(done) = in_flight.join_next() => match done {
                    Ok(out) => out,
                    Err(err) => {
                        tracing::error!(error = %err, "request task failed");
                        continue;
                    }
                },
                () = &mut idle => {
                    if ping.is_some() {
                        return End::Close(ErrorCode::Timeout);
                    }
                    let nonce = rand::random();
                    ping = Some(nonce);
                    idle.as_mut().reset(Instant::now() + interval);
                    ServerMessage::Ping { nonce }
                }
                frame = self.reader.read_frame() => {
                    let frame = match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return End::Gone,
                        Err(err) => return err.code().map_or(End::Gone, End::Close),
                    };
                    idle.as_mut().reset(Instant::now() + 2 * interval);
                    ping = None;
                    // What cannot be read but answered is answered at once.
                    let msg = match AgentMessage::decode(&frame) {
                        Ok(msg) => Ok(msg),
                        Err(FrameError::UnsupportedVersion { .. }) => {
                            return End::Close(ErrorCode::UnsupportedFrameVersion);
                        }
                        Err(_) => match AgentMessage::unreadable(&frame) {
                            // A newer agent's request, or one broken inside: the
                            // frame said how long it was, so the rest is in step.
                            Unreadable::Request(id) => {
                                debug!(id, "answered a request we cannot read");
                                let response = if flood.check().is_err() {
                                    Response::Fail(ErrorCode::TooManyRequests)
                                } else {
                                    Response::Fail(ErrorCode::Unsupported)
                                };
                                Err(ServerMessage::Response { id, response })
                            }
                            Unreadable::Unknown => {
                                debug!("let pass a message we do not know");
                                continue;
                            }
                            Unreadable::Garbage => return End::Close(ErrorCode::Malformed),
                        },
                    };
                    match msg {
                        Err(answer) => answer,
                        Ok(AgentMessage::Hello(_)) => return End::Close(ErrorCode::UnexpectedMessage),
                        Ok(AgentMessage::Pong { .. }) => continue,
                        Ok(AgentMessage::Request { id, request: Request::Heartbeat }) => {
                            let response = if flood.check().is_err() {
                                Response::Fail(ErrorCode::TooManyRequests)
                            } else {
                                self.shared.computers.heartbeat(&self.id, self.conn, &heartbeat);
                                Response::Heartbeat
                            };
                            ServerMessage::Response { id, response }
                        }
                        Ok(AgentMessage::Request { id, request }) => {
                            if in_flight.len() >= MAX_IN_FLIGHT || flood.check().is_err() {
                                let response = Response::Fail(ErrorCode::TooManyRequests);
                                ServerMessage::Response { id, response }
                            } else {
                                let shared = Arc::clone(&self.shared);
                                let computer = self.id.clone();
                                in_flight.spawn(
                                    async move {
                                        let response = respond(&shared, &computer, request).await;
                                        ServerMessage::Response { id, response }
                                    }
                                    .in_current_span(),
                                );
                                continue;
                            }
                        }
                    }
                }
            };
            if self.writer.write(&out, self.version).await.is_err() {
                return End::Gone;
            }
        }
    }
}

/// How often the store is pruned (see [`prune_every`]).
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Removes what the retention setting no longer keeps, and what is over (see
/// `Store::prune`), and the recordings past their own retention, at start and
/// every [`PRUNE_EVERY`], until `cancel` fires.
async fn prune_every(
    store: Arc<SledStore>,
    policy: policy::Owner,
    clock: Arc<dyn Clock>,
    (recordings, recording_retention): (Arc<Recordings>, Duration),
    cancel: CancellationToken,
) {
    loop {
        let settings = policy.snapshot().settings.clone();
        let now = clock.now();
        let old = now.before(recording_retention);
        let pruning = {
            let recordings = recordings.clone();
            tokio::task::spawn_blocking(move || recordings.prune(old))
        };
        match pruning.await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => match recordings.flush().await {
                Ok(()) => info!(removed, "removed recordings past their retention"),
                Err(err) => warn!(error = %err, "cannot flush after removing recordings"),
            },
            Ok(Err(err)) => warn!(error = %err, "cannot remove old recordings"),
            Err(err) => warn!(error = %err, "removing old recordings stopped"),
        }
        let cutoff = now.before(settings.retention);
        let pruning = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.prune(cutoff, now, settings.failure_window))
        };
        match pruning.await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => match store.flush().await {
                Ok(()) => info!(removed, "pruned records past their retention"),
                Err(err) => warn!(error = %err, "cannot flush after pruning"),
            },
            Ok(Err(err)) => warn!(error = %err, "cannot prune the store"),
            Err(err) => warn!(error = %err, "pruning stopped"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = sleep(PRUNE_EVERY) => {}
        }
    }
}

/// Serves one request of computer `id`.
async fn respond(shared: &Shared, id: &ComputerId, request: Request) -> Response {
    let answer = match request {
        // Answered by the connection itself; never spawned here.
        Request::Heartbeat => Ok(Response::Heartbeat),
        Request::Record {
            os_user,
            session,
            chunk,
        } => {
            return recordings::receive(
                &shared.recordings,
                shared.store.as_ref(),
                shared.clock.now(),
                (id, &os_user, session),
                chunk,
            )
            .await
            .unwrap_or_else(|err| {
                warn!(error = %err, "a recording's chunk could not be stored");
                Response::Fail(ErrorCode::Internal)
            });
        }
        Request::Login { os_user, request } => {
            let call = convert::login_call(request);
            shared
                .computers
                .login(id, &os_user, call)
                .await
                .map(|answer| Response::Login(convert::login_response(&os_user, answer)))
        }
    };
    answer.unwrap_or_else(|err| {
        warn!(error = %err, "request failed");
        Response::Fail(code_for(&err))
    })
}

/// The owner's only parts of a data folder, and the modes they must not exceed.
const PRIVATE: [(&str, u32); 9] = [
    ("", 0o700),
    ("db", 0o700),
    ("pki", 0o700),
    (RECORDINGS, 0o700),
    ("secret.key", 0o600),
    ("pki/ca.key", 0o600),
    ("pki/server.key", 0o600),
    ("pki/revoked.txt", 0o600),
    (INITIAL_PASSWORD_FILE, 0o600),
];

/// Takes away any permission others were given on the private parts of data
/// folder `data` (a copy or a restore may have widened them), and says so.
fn tighten_data_dir(data: &std::path::Path) -> Result<(), OpenError> {
    for (part, mode) in PRIVATE {
        let path = data.join(part);
        match crate::files::tighten(&path, mode) {
            Ok(Some(had)) => warn!(
                path = %path.display(),
                had = format_args!("{had:o}"),
                now = format_args!("{:o}", had & mode),
                "others could read this; tightened"
            ),
            Ok(None) => {}
            Err(source) => return Err(OpenError::DataDir { path, source }),
        }
    }
    Ok(())
}

/// The recordings' database folder, in the data folder.
const RECORDINGS: &str = "recordings";

/// The login name of the administrator created on first start.
pub const INITIAL_ADMIN: &str = "admin";

/// Where the first administrator's password is kept, in the data folder.
pub const INITIAL_PASSWORD_FILE: &str = "admin-password";

/// Creates the first administrator if there are no internal users yet, with a
/// random password that is returned once and kept in a 0600 file.
async fn bootstrap_admin(
    policy: &policy::Owner,
    config: &ServerConfig,
    clock: &dyn Clock,
) -> Result<Option<Zeroizing<String>>, OpenError> {
    let mut edit = policy.edit().await;
    if !edit.current().users.is_empty() {
        return Ok(None);
    }
    let password = random_password();
    let path = config.data_dir.join(INITIAL_PASSWORD_FILE);
    crate::files::write_private(&path, format!("{}\n", password.as_str()).as_bytes()).map_err(
        |source| OpenError::DataDir {
            path: path.clone(),
            source,
        },
    )?;
    let password_hash = service::hash_off_runtime(password.clone()).await;
    edit.put_user(UserRecord {
        login: INITIAL_ADMIN.to_owned(),
        email: config.admin_email.clone(),
        password_hash,
        role: Role::Administrator,
        password_change_due: true,
        disabled: false,
    });
    edit.commit(&AuditEntry {
        at: clock.now(),
        who: "server".into(),
        computer: None,
        action: Action::Configure,
        outcome: format!("administrator {INITIAL_ADMIN} created"),
    })
    .await?;
    Ok(Some(password))
}

/// 20 characters from a 57-letter alphabet without look-alikes: about 116 bits.
fn random_password() -> Zeroizing<String> {
    // No 0/O, 1/l/I: read off a screen and typed in.
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    const LENGTH: usize = 20;
    let mut rng = rand::rng();
    let mut password = Zeroizing::new(String::with_capacity(LENGTH));
    for _ in 0..LENGTH {
        password.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    password
}

/// The code a peer is given for a failed call; the details stay in our log.
fn code_for(err: &CallError) -> ErrorCode {
    match err {
        CallError::Unavailable | CallError::Timeout => ErrorCode::Unavailable,
        CallError::Failed(ComputerError::TooManyConnections) => ErrorCode::TooManyConnections,
        _ => ErrorCode::Internal,
    }
}

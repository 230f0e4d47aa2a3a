//! One agent's connection: the TLS handshake (gated per source), the
//! identity its certificate gives (expiry and revocation checked on every
//! connection, resumed ones too), the Hello and the version agreed, then its
//! requests, each answered by the computer's actor (or, for recordings, the
//! recordings store), with flood control and heartbeats.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use otpgate_actors::computer::OfflineLogin;
use otpgate_actors::directory::{Directory, person_name};
use otpgate_actors::metrics::{Held, LoginOutcome, Share, Tally, TlsRefusal, metrics};
use otpgate_actors::{
    AgentInfo, CallError, Clock, ComputerError, ComputerId, Computers, ConnectionId, KvStore,
    SystemClock, Waiting,
};
use otpgate_protocol::version as protocol_version;
use otpgate_protocol::{
    AgentMessage, ErrorCode, FrameError, HANDSHAKE_VERSION, Hello, MAX_IN_FLIGHT, Message, Request,
    Response, ServerMessage, Unreadable, Welcome, negotiate,
};

use super::convert;
use super::enroll::Enroller;
use super::gate::Handshakes;
use super::live::{Live, Warned};
use super::recordings::{self, Shelf};
use crate::flood::twice_in_bursts;
use crate::frames::{FrameReader, FrameWriter};
use crate::tls::revoked::Revocations;
use crate::tls::{ALPN, pki};

/// How many recording chunks one connection may send a second, in bursts
/// of twice that: at most 48 KiB each, 96 MiB/s of terminal output.
const CHUNK_QUOTA: Quota = twice_in_bursts(NonZeroU32::new(2048).expect("not 0"));

/// How many recordings one connection may start a second (their first
/// chunks), in bursts of twice that: each is a recording the server keeps,
/// so they come at the pace people open terminals.
const START_QUOTA: Quota = twice_in_bursts(NonZeroU32::new(20).expect("not 0"));

/// What every connection task needs.
pub(super) struct Shared {
    pub(super) acceptor: TlsAcceptor,
    /// Handshakes in flight, in all and per source address.
    pub(super) handshakes: Arc<Handshakes>,
    /// Revoked client certificates, checked on every connection.
    pub(super) revocations: Arc<Revocations>,
    /// The connections open now, for revocations to close.
    pub(super) live: Arc<Live>,
    /// Enrolls computers that come with a join token.
    pub(super) enroller: Arc<Enroller>,
    /// The computers whose agent was found to speak an older protocol.
    pub(super) old_agents: Warned,
    pub(super) computers: Computers,
    /// Terminal recordings, stored as agents ship them.
    pub(super) recordings: Shelf,
    /// Who people are: a recording's OS user is named as its login was.
    pub(super) directory: Arc<dyn Directory>,
    /// The audit log (a recording that lost output) and client sessions (a
    /// recording's tie).
    pub(super) store: Arc<KvStore>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) handshake_timeout: Duration,
    pub(super) heartbeat_interval: Duration,
    /// Flood control: how fast one connection may send requests.
    pub(super) request_quota: Quota,
    pub(super) next_conn: AtomicU64,
}

/// Serves one accepted TCP connection: TLS handshake, identity, then the session.
pub(super) async fn serve_tcp(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let Some(place) = shared.handshakes.enter(peer.ip()) else {
        debug!("too many handshakes in flight; closed");
        metrics().tls_refused(TlsRefusal::Gate);
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
                metrics().tls_refused(TlsRefusal::Handshake);
                return;
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                metrics().tls_refused(TlsRefusal::Timeout);
                return;
            }
        },
    };
    drop(place);
    let (_, session) = tls.get_ref();
    match session.alpn_protocol() {
        Some(ALPN) => {}
        Some(otpgate_protocol::enroll::ALPN) => {
            shared.enroller.serve(tls, peer.ip()).await;
            return;
        }
        _ => {
            debug!("client did not negotiate ALPN otpgate/1");
            metrics().tls_refused(TlsRefusal::Handshake);
            return;
        }
    }
    // A resumed session carries the certificate of its first handshake, which
    // rustls does not check again: its expiry and revocation are checked here,
    // on every connection.
    let cert = match session.peer_certificates().and_then(|certs| certs.first()) {
        Some(cert) => match pki::client_cert(cert) {
            Ok(cert) => cert,
            Err(err) => {
                warn!(error = %err, "refused a certificate");
                metrics().tls_refused(TlsRefusal::Handshake);
                return;
            }
        },
        // Only an enrollment comes without one.
        None => {
            debug!("an agent came without a certificate");
            metrics().tls_refused(TlsRefusal::Handshake);
            return;
        }
    };
    tracing::Span::current().record("client", cert.id.as_str());
    let cert = Arc::new(cert);
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
        metrics().tls_refused(if cert.expires < now {
            TlsRefusal::Expired
        } else {
            TlsRefusal::Revoked
        });
        let refused = ServerMessage::Close(ErrorCode::CertificateRefused);
        let _ = writer.write(&refused, HANDSHAKE_VERSION).await;
        return;
    }
    let mut session = Session {
        shared,
        id: cert.id.clone(),
        cert,
        conn,
        reader: FrameReader::new(read),
        writer,
        version: HANDSHAKE_VERSION,
        revoked: live.revoked.clone(),
        offline: Arc::clone(&live.offline),
    };
    session.run(&cancel).await;
}

/// One agent's connection after the TLS handshake.
struct Session<R, W> {
    shared: Arc<Shared>,
    id: ComputerId,
    /// The certificate its connection showed.
    cert: Arc<pki::ClientCert>,
    conn: ConnectionId,
    reader: FrameReader<R>,
    writer: FrameWriter<W>,
    /// The protocol version agreed at Hello, that our frames are written in.
    version: u8,
    /// Fires when the computer's certificates are revoked.
    revoked: CancellationToken,
    /// Rings when the computer's offline codes change.
    offline: Arc<Notify>,
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
        if !hello.is_well_formed() {
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
        let _connected = Held::of(&metrics().agents_connected);
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
        // Recordings have a flood control of their own: a busy terminal's
        // output comes as many chunks, and must not crowd out logins, nor be
        // held to a login's pace; new recordings are held to fewer.
        let chunks = RateLimiter::direct(CHUNK_QUOTA);
        let starts = RateLimiter::direct(START_QUOTA);
        let heartbeat = Waiting::default();
        // What the agent last said its spool holds.
        let mut spooled = Share::of(&metrics().agents_spooled);
        // Whether the agent asked for its offline codes: only then is it
        // told when they change.
        let mut keeps_offline = false;
        let offline = Arc::clone(&self.offline);
        loop {
            let out = tokio::select! {
                biased;
                () = cancel.cancelled() => return End::Close(ErrorCode::ShuttingDown),
                () = self.revoked.cancelled() => return End::Close(ErrorCode::CertificateRefused),
                () = offline.notified(), if keeps_offline => ServerMessage::OfflineChanged,
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
                        // Not in the version agreed: as unknown.
                        Ok(AgentMessage::Request { id, request })
                            if self.version < request.since() =>
                        {
                            let response = if flood.check().is_err() {
                                Response::Fail(ErrorCode::TooManyRequests)
                            } else {
                                Response::Fail(ErrorCode::Unsupported)
                            };
                            ServerMessage::Response { id, response }
                        }
                        Ok(AgentMessage::Request {
                            id,
                            request: request @ (Request::Heartbeat | Request::Status { .. }),
                        }) => {
                            let response = if flood.check().is_err() {
                                Response::Fail(ErrorCode::TooManyRequests)
                            } else {
                                if let Request::Status { spool_bytes } = request {
                                    spooled.set(spool_bytes);
                                }
                                self.shared.computers.heartbeat(&self.id, self.conn, &heartbeat);
                                Response::Heartbeat
                            };
                            ServerMessage::Response { id, response }
                        }
                        Ok(AgentMessage::Request { id, request: Request::Time }) => {
                            let response = if flood.check().is_err() {
                                Response::Fail(ErrorCode::TooManyRequests)
                            } else {
                                Response::Time(self.shared.clock.now().unix_millis())
                            };
                            ServerMessage::Response { id, response }
                        }
                        Ok(AgentMessage::Request { id, request }) => {
                            let limit = match &request {
                                Request::Record { chunk, .. } if chunk.seq == 0 => &starts,
                                Request::Record { .. } => &chunks,
                                _ => &flood,
                            };
                            if in_flight.len() >= MAX_IN_FLIGHT || limit.check().is_err() {
                                let response = Response::Fail(ErrorCode::TooManyRequests);
                                ServerMessage::Response { id, response }
                            } else {
                                keeps_offline |= matches!(request, Request::Offline { .. });
                                let shared = Arc::clone(&self.shared);
                                let cert = Arc::clone(&self.cert);
                                in_flight.spawn(
                                    async move {
                                        let response = respond(&shared, &cert, request).await;
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

/// Serves one request of the computer whose connection showed `cert`.
async fn respond(shared: &Shared, cert: &pki::ClientCert, request: Request) -> Response {
    let id = &cert.id;
    let answer = match request {
        // Answered by the connection itself; never spawned here.
        Request::Heartbeat | Request::Status { .. } => Ok(Response::Heartbeat),
        Request::Time => Ok(Response::Time(shared.clock.now().unix_millis())),
        Request::Renew { csr } => return shared.enroller.renew(cert, &csr).await,
        Request::Offline { used } => {
            let logins: Vec<OfflineLogin> = used.into_iter().map(convert::offline_login).collect();
            shared
                .computers
                .offline_sync(id, &logins)
                .await
                .map(|sets| Response::Offline(sets.iter().map(convert::offline_codes).collect()))
        }
        Request::Record {
            os_user,
            session,
            chunk,
        } => {
            // Kept in the agent's spool until the recordings are back.
            let Ok(recordings) = shared.recordings.get() else {
                return Response::Fail(ErrorCode::Unavailable);
            };
            // The person, named as their login's session names them.
            let os_user = person_name(shared.directory.as_ref(), os_user);
            return recordings::receive(
                recordings,
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
            let verify = matches!(
                request,
                otpgate_protocol::login::LoginRequest::Verify { .. }
            );
            let call = convert::login_request(request);
            let answer = shared.computers.login(id, &os_user, call).await;
            if verify && answer.is_err() {
                metrics().tally(Tally::Login(LoginOutcome::Unavailable));
            }
            answer.map(|answer| Response::Login(convert::login_response(&os_user, answer)))
        }
    };
    answer.unwrap_or_else(|err| {
        warn!(error = %err, "request failed");
        Response::Fail(code_for(&err))
    })
}

/// The code a peer is given for a failed call; the details stay in our log.
fn code_for(err: &CallError) -> ErrorCode {
    match err {
        CallError::Unavailable | CallError::Timeout => ErrorCode::Unavailable,
        CallError::Failed(ComputerError::TooManyConnections) => ErrorCode::TooManyConnections,
        _ => ErrorCode::Internal,
    }
}

//! The server: opens the data folder, accepts agents over mutual TLS and serves
//! each connection, handing every request to the actor of the computer the
//! agent's certificate names.
//!
//! One task per connection reads frames, runs the requests it receives
//! concurrently (at most `MAX_IN_FLIGHT` at once, and no faster than the
//! configured requests per second, recordings' chunks at a pace of their
//! own: flood control) and writes their responses.
//! A connection that sends a bad frame is told why with an [`ErrorCode`] and
//! closed; nothing it sends can stop the server serving the others.

pub mod admin;
pub mod config;
mod connection;
mod convert;
mod data;
pub mod directory;
pub mod enroll;
mod gate;
mod heard;
pub mod ldap;
pub(crate) mod live;
pub mod mail;
mod pages;
pub mod recordings;
pub mod service;
mod upkeep;
pub mod web;

pub use data::{INITIAL_ADMIN, INITIAL_PASSWORD_FILE, RECORDINGS};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use otpgate_actors::audit::{Action, AuditEntry, Who};
use otpgate_actors::directory::Directory;
use otpgate_actors::mail::{MailTransport, Mailer, MailerArgs, MailerHandle, MailerMsg};
use otpgate_actors::metrics::metrics;
use otpgate_actors::otp::OtpKeys;
use otpgate_actors::policy;
use otpgate_actors::store::Site;
use otpgate_actors::{
    Clock, Computers, KvStore, Services, Store, StoreError, SystemClock, Waiting,
};
use ractor::{Actor, ActorRef};
use zeroize::Zeroizing;

use crate::accept;
use crate::backup::make::Backups;
use crate::flood::twice_in_bursts;
use crate::tls::revoked::Revocations;
use crate::tls::{self, TlsError, pki};
use config::{ServerConfig, StoreConfig};
use connection::{Shared, serve_tcp};
use data::{first_admin, same_site, tighten_data_dir};
use directory::{DirectoryFileError, StaticDirectory};
use gate::Handshakes;
use live::{Live, Warned};
use mail::{EmlDir, Sender, Smtp, SmtpSetupError};
use recordings::Shelf;
use service::AdminService;
use upkeep::prune_every;

/// How long shutdown waits for connections and actors to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Open files the server needs besides its connections: the database, the
/// listeners, the outbox, the blocking pool's files.
pub const RESERVED_FILES: u64 = 256;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The PKI or TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The database could not be opened.
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
    /// The server secret is not the one the database was first served
    /// with.
    #[error(
        "this data folder's secret.key is not the site's: the database was first served with \
         another; copy secret.key and pki/ca.pem and pki/ca.key from a server of the site"
    )]
    OtherSite,
    /// The agents' port could not be bound (another process holds it).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
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

/// The server's ports, bound before anything is written: a port in use stops a
/// start with nothing made in the data folder.
pub struct Listeners {
    /// Where agents connect.
    agents: TcpListener,
    /// Where the web Management Tool listens, unless it is turned off.
    web: Option<web::Listener>,
    /// Where the Prometheus endpoint listens, if it is asked for.
    metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the agents' port and the web Management Tool's (reading its own
    /// certificate and key, if the configuration names them).
    pub fn bind(config: &ServerConfig) -> Result<Self, OpenError> {
        let agents = accept::bind(config.listen).map_err(|source| OpenError::Listen {
            addr: config.listen,
            source,
        })?;
        let web = config.web.as_ref().map(web::Listener::bind).transpose()?;
        let metrics = config
            .metrics
            .map(|addr| accept::bind(addr).map_err(|source| OpenError::Listen { addr, source }))
            .transpose()?;
        Ok(Self {
            agents,
            web,
            metrics,
        })
    }

    /// Where agents connect.
    pub fn agent_addr(&self) -> io::Result<SocketAddr> {
        self.agents.local_addr()
    }
}

/// A server with its data folder open and its ports bound, ready to serve.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    store: Arc<KvStore>,
    backups: Arc<Backups>,
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
    /// The web Management Tool, and where its sessions are kept.
    web: Option<(web::Web, web::Sessions)>,
    metrics: Option<TcpListener>,
    directory: Arc<dyn Directory>,
    /// Ends if a copy into the store's database took it while this
    /// server's session was gone (see [`KvStore::connect_holding`]).
    taken: Option<otpgate_actors::store::Taken>,
    /// What other servers over the store's database change, heard from
    /// before anything was read.
    changes: Option<tokio::sync::broadcast::Receiver<otpgate_actors::store::Change>>,
    /// Wakes the mailer.
    wake_mailer: MailerHandle,
}

impl Server {
    /// Checks what the configuration names (directory, SMTP relay), then, on
    /// the ports `listeners` bound, creates what is missing in the data folder
    /// (the admin socket, PKI, database, the first administrator), opens it
    /// and starts the actors.
    pub async fn open(config: &ServerConfig, listeners: Listeners) -> Result<Self, OpenError> {
        Self::open_with_clock(config, listeners, Arc::new(SystemClock)).await
    }

    /// [`Server::open`], with wall-clock time from `clock` (tests move it).
    pub async fn open_with_clock(
        config: &ServerConfig,
        listeners: Listeners,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, OpenError> {
        // What the configuration names, checked before anything is written.
        let directory: Arc<dyn Directory> = match (&config.ldap, &config.directory_file) {
            (Some(ldap), _) => Arc::new(ldap::LdapDirectory::new(ldap.clone())?),
            (None, Some(path)) => Arc::new(StaticDirectory::load(path)?),
            (None, None) => Arc::new(StaticDirectory::default()),
        };
        let from = Sender::parse(&config.mail_from);
        let smtp = config
            .smtp
            .as_ref()
            .map(|smtp| Smtp::new(smtp, from.clone()))
            .transpose()?;
        // The dummy password hash that unknown logins are checked against is
        // made now, beside the rest of the start, not by the first unknown login.
        drop(tokio::task::spawn_blocking(
            otpgate_actors::directory::prepare,
        ));
        let data_dir = |path: &std::path::Path| {
            crate::files::create_private_dir(path).map_err(|source| OpenError::DataDir {
                path: path.to_owned(),
                source,
            })
        };
        data_dir(&config.data_dir)?;
        tighten_data_dir(&config.data_dir)?;
        // Another server on this data folder serves its admin socket: refused
        // here, before anything of theirs is touched.
        let admin_socket = admin::socket_path(&config.data_dir);
        let admin_listener = admin::bind(&admin_socket).map_err(|source| OpenError::DataDir {
            path: admin_socket.clone(),
            source,
        })?;
        let pki =
            pki::ensure_server(&config.data_dir, &config.server_names).map_err(TlsError::from)?;
        let keys = Arc::new(OtpKeys::derive(pki.secret.expose()));
        let web = listeners
            .web
            .map(|web| web::Web::new(web, pki.chain.clone(), pki.key.clone_key()))
            .transpose()?;
        let acceptor = TlsAcceptor::from(tls::server_config(pki)?);
        let mut revocations = Revocations::load(&config.data_dir).map_err(TlsError::from)?;
        let transport: Arc<dyn MailTransport> = match smtp {
            Some(smtp) => Arc::new(smtp),
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
        let (store, taken) = match &config.store {
            StoreConfig::Sled => {
                let db = config.data_dir.join("db");
                data_dir(&db)?;
                (KvStore::open(&db)?, None)
            }
            StoreConfig::Postgres(pg) => {
                let (store, taken) = KvStore::connect_holding(pg, Site::Serving).await?;
                (store, Some(taken))
            }
        };
        let first_turn = same_site(&store, &keys).await?;
        let changes = store.changes();
        if let Some(db) = store.side() {
            revocations = tokio::task::spawn_blocking(move || {
                revocations.keep_in(db)?;
                Ok::<_, pki::PkiError>(revocations)
            })
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?
            .map_err(TlsError::from)?;
        }
        let revocations = Arc::new(revocations);
        let web = match web {
            Some(web) => Some((web, web::Sessions::new(store.side(), clock.clone())?)),
            None => None,
        };
        let store = Arc::new(store);
        let recordings = Shelf::open(
            &config.data_dir.join(RECORDINGS),
            store.side(),
            Arc::clone(&keys),
            config.recording_quotas,
        )
        .await;
        let trouble = match recordings.get() {
            Err(why) => Some(format!("recordings unavailable: {why}")),
            Ok(recordings) => match recordings.found_gone() {
                0 => None,
                gone => {
                    let why = format!(
                        "{gone} recordings are gone from the recordings database (it was \
                         damaged, or put back from an earlier copy); `otpgate admin \
                         recordings verify` reports it until the database is replaced"
                    );
                    tracing::error!("{why}");
                    Some(why)
                }
            },
        };
        if let Some(outcome) = trouble {
            store.append_audit(&AuditEntry {
                at: clock.now(),
                who: Who::Server,
                computer: None,
                action: Action::Record,
                outcome,
            })?;
            store.flush().await?;
        }
        let policy = policy::Owner::load(store.clone()).await?;
        let initial_password = first_admin(&policy, config, clock.as_ref(), first_turn).await?;
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
        let wake_mailer = MailerHandle::new(mailer.clone(), waiting);
        let backups = Arc::new(Backups {
            store: store.clone(),
            recordings: recordings.clone(),
            data_dir: config.data_dir.clone(),
            keys: keys.clone(),
            making: tokio::sync::Mutex::default(),
        });
        let services_keys = keys.clone();
        let services = Services {
            policy: policy.clone(),
            store: store.clone(),
            clock: clock.clone(),
            keys,
            directory: Arc::clone(&directory),
            mailer: Some(wake_mailer.clone()),
        };
        let (computers, supervisor) = Computers::start(Arc::new(services)).await?;
        let live: Arc<Live> = Arc::default();
        let enroller = Arc::new(enroll::Enroller::new(
            store.clone(),
            computers.clone(),
            revocations.clone(),
            live.clone(),
            clock.clone(),
            pki::Ca::load(&config.data_dir).map_err(TlsError::from)?,
            config.client_lifetime,
        ));
        Ok(Self {
            listener: listeners.agents,
            shared: Arc::new(Shared {
                acceptor,
                handshakes: Handshakes::new(
                    config.max_handshakes,
                    config.max_handshakes_per_source,
                ),
                revocations: revocations.clone(),
                live,
                enroller,
                old_agents: Warned::default(),
                computers,
                recordings,
                directory: Arc::clone(&directory),
                store: store.clone(),
                clock: clock.clone(),
                handshake_timeout: config.handshake_timeout,
                heartbeat_interval: config.heartbeat_interval,
                request_quota: twice_in_bursts(config.requests_per_second),
                next_conn: AtomicU64::new(0),
            }),
            backups,
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
            metrics: listeners.metrics,
            directory,
            taken,
            changes,
            wake_mailer,
        })
    }

    /// The first administrator's password, once, if this start created them.
    pub fn take_initial_password(&mut self) -> Option<Zeroizing<String>> {
        self.initial_password.take()
    }

    /// Where the web Management Tool listens, unless it is turned off.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().and_then(|(web, _)| web.local_addr().ok())
    }

    /// The handle on the computers' actors, for the parts of the daemon (and the
    /// tests) that act on a computer outside an agent's connection.
    pub fn computers(&self) -> Computers {
        self.shared.computers.clone()
    }

    /// Where agents connect.
    pub fn agent_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves agents until `shutdown` resolves, then stops in order:
    /// stop accepting, close every connection, stop the actors, flush the database.
    /// Says whether every step finished within its grace.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Stopped {
        let listener = self.listener;
        let mut stopped = Stopped::Clean;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let service = Arc::new(AdminService {
            recordings: self.shared.recordings.clone(),
            backups: self.backups.clone(),
            store: self.store.clone(),
            policy: self.policy.clone(),
            computers: self.shared.computers.clone(),
            clock: self.clock.clone(),
            keys: self.keys.clone(),
            transport: self.transport.clone(),
            host: self.host.clone(),
            revocations: self.shared.revocations.clone(),
            live: self.shared.live.clone(),
            enroller: self.shared.enroller.clone(),
            initial_password_file: self.initial_password_file.clone(),
            wrong_binds: Default::default(),
            directory: self.directory.clone(),
        });
        tracker.spawn(prune_every(
            self.store.clone(),
            self.policy.clone(),
            self.clock.clone(),
            (self.shared.recordings.clone(), self.recording_retention),
            cancel.child_token(),
        ));
        if let Some(changes) = self.changes {
            let followers = heard::Followers {
                policy: self.policy.clone(),
                revocations: self.shared.revocations.clone(),
                live: self.shared.live.clone(),
                mailer: self.wake_mailer,
            };
            tracker.spawn(heard::follow(changes, followers, cancel.child_token()));
        }
        if let Some((web, sessions)) = self.web {
            tracker.spawn(web.serve(service.clone(), sessions, cancel.child_token()));
        }
        if let Some(listener) = self.metrics {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "metrics endpoint listening");
            }
            tracker.spawn(crate::metrics::serve(
                listener,
                metrics().registry(),
                cancel.child_token(),
            ));
        }
        tracker.spawn(admin::serve(
            self.admin_listener,
            service,
            cancel.child_token(),
        ));
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let mut pause = accept::Pause::new("agents");
        // Serving stops, as on a shutdown, if a copy took the database.
        let (taken, lost) = (self.taken, std::sync::atomic::AtomicBool::new(false));
        let lost_it = &lost;
        let shutdown = async move {
            let Some(taken) = taken else {
                return shutdown.await;
            };
            tokio::select! {
                () = shutdown => {}
                why = taken => {
                    tracing::error!(error = %why, "stopping: a site is being copied into the database");
                    lost_it.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        };
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
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = sleep(pause.failed(&err)) => continue,
                        }
                    }
                },
            };
            pause.accepted();
            let shared = self.shared.clone();
            let cancel = cancel.child_token();
            let span = info_span!("conn", %peer, client = tracing::field::Empty);
            tracker.spawn(serve_tcp(shared, tcp, peer, cancel, permit).instrument(span));
        }

        info!("shutting down");
        let lost = lost.load(std::sync::atomic::Ordering::Relaxed);
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
        let recordings = self.shared.recordings.get().ok().cloned();
        drop(self.shared);
        let flushed = async {
            // The database is another server's now: nothing more goes in.
            if !lost {
                self.store.flush().await?;
            }
            match &recordings {
                Some(recordings) => recordings.flush().await,
                None => Ok(()),
            }
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
        drop(self.backups);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let held = || {
            Arc::strong_count(&self.store) > 1
                || recordings
                    .as_ref()
                    .is_some_and(|r| Arc::strong_count(r) > 1)
        };
        while held() && Instant::now() < deadline {
            sleep(Duration::from_millis(5)).await;
        }
        if held() {
            warn!("the database is still held by a stopping task");
            stopped = Stopped::Late("database release");
        }
        info!("stopped");
        if lost { Stopped::Taken } else { stopped }
    }
}

/// How [`Server::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every step of the shutdown finished within its grace.
    Clean,
    /// A copy into the database took it while this server's session was
    /// gone: it stopped serving.
    Taken,
    /// This step (the last that did not) was cut short by its grace.
    Late(&'static str),
}

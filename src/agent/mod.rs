//! The agent: runs on each client computer, holds one connection to the server
//! ([`link`]), serves the login prompt, the PAM gate and the terminal recorder
//! on a local socket ([`socket`]), ends the client sessions whose OS sessions
//! end ([`sessions`]), and ships recordings to the server ([`spool`]).

pub mod enroll;
pub mod link;
mod metrics;
pub mod offline;
mod renew;
pub mod sessions;
pub mod socket;
pub mod spool;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::tls::{self, TlsError};
use link::{Link, ServerAddr};
use offline::Offline;
use sessions::Sessions;
use spool::Spool;

/// The agent's settings, from its command line.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the servers are: the first that takes the agent, and the next
    /// when it goes.
    pub servers: Vec<ServerAddr>,
    /// The folder with `client.pem`, `client.key` and `ca.pem`.
    pub identity: PathBuf,
    /// Where to serve the local login prompt.
    pub socket: PathBuf,
    /// What each local OS user may take of the agent's socket.
    pub limits: socket::Limits,
    /// Where recordings wait for the server (root's only).
    pub spool: PathBuf,
    /// The most bytes the spool holds.
    pub spool_limit: u64,
    /// Where to serve the agent's Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// How long after its last contact with the server the agent still
    /// takes offline codes.
    pub offline_max_away: std::time::Duration,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The identity folder is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The spool folder could not be opened.
    #[error("cannot use the spool {}: {source}", path.display())]
    Spool {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics port could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The local socket could not be created.
    #[error("cannot serve {}: {source}", path.display())]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `cancel` fires: the link to the server and the local
/// socket for the login prompt.
pub async fn run(config: AgentConfig, cancel: CancellationToken) -> Result<(), AgentError> {
    // A renewal a crash cut short is finished (or undone) first; only the
    // agent writes its identity folder.
    crate::tls::pki::ClientPaths::new(&config.identity)
        .settle()
        .map_err(|source| {
            TlsError::Pki(crate::tls::pki::PkiError::Io {
                path: config.identity.clone(),
                source,
            })
        })?;
    let tls = tls::client_config(&config.identity)?;
    let listener =
        crate::unix::bind(&config.socket, 0o666).map_err(|source| AgentError::Socket {
            path: config.socket.clone(),
            source,
        })?;
    let spool = Arc::new(
        Spool::open(&config.spool, config.spool_limit).map_err(|source| AgentError::Spool {
            path: config.spool.clone(),
            source,
        })?,
    );
    let metrics_listener = config
        .metrics
        .map(|addr| {
            crate::accept::bind(addr).map_err(|source| AgentError::Metrics { addr, source })
        })
        .transpose()?;
    let (link, task) = Link::spawn(tls, config.servers, cancel.clone())?;
    let renewer = tokio::spawn(renew::keep_renewed(
        config.identity.clone(),
        link.clone(),
        cancel.clone(),
    ));
    let shipper = tokio::spawn(Arc::clone(&spool).ship(link.clone(), cancel.clone()));
    // With what the server gave this computer, kept across reboots.
    let offline = Arc::new(Offline::load(
        config.identity.join(offline::FILE),
        config.offline_max_away,
    ));
    let keeper = tokio::spawn(offline::keep(
        Arc::clone(&offline),
        link.clone(),
        cancel.clone(),
    ));
    // Beside the socket: /run/otpgate/agent.sessions by default.
    let sessions = Arc::new(Sessions::load(config.socket.with_extension("sessions")));
    let watcher = tokio::spawn(sessions::watch(
        Arc::clone(&sessions),
        link.clone(),
        Arc::clone(&offline),
        cancel.clone(),
    ));
    let exporter = metrics_listener.map(|listener| {
        let registry = metrics::registry(link.clone(), Arc::clone(&spool), Arc::clone(&sessions));
        tokio::spawn(crate::metrics::serve(listener, registry, cancel.clone()))
    });
    socket::serve(
        listener,
        socket::Agent::new(link, sessions, spool, offline, config.limits),
        cancel,
    )
    .await;
    if let Some(exporter) = exporter {
        let _ = exporter.await;
    }
    let _ = watcher.await;
    let _ = keeper.await;
    let _ = renewer.await;
    let _ = shipper.await;
    let _ = task.await;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

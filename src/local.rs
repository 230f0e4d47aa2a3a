//! The agent's local Unix socket, where the login prompt (`otpgate login`) asks
//! for things, and the prompt's side of it.
//!
//! Any local user may connect (the socket is mode 0666). The agent knows each
//! caller by the socket's peer credentials, which the kernel fills in; nothing the
//! caller says about itself is believed.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::unistd::{Uid, User};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use otpgate_protocol::local::{AgentStatus, LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::{Request, Response};

use crate::agent::Link;
use crate::conn::{FrameReader, FrameWriter, ReadError, WriteError};

/// Where the agent serves the login prompt by default.
pub const DEFAULT_SOCKET: &str = "/run/otpgate/agent.sock";

/// Creates the socket at `path`, replacing a stale one left by a crash, and opens
/// it to every local user.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another agent is serving this socket",
            ));
        }
        fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves login prompts on `listener` until `cancel` fires.
pub async fn serve(listener: UnixListener, link: Link, cancel: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(error = %err, "local accept failed");
                    continue;
                }
            },
        };
        let link = link.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let caller = caller(&stream).await;
            let span = info_span!("local", os_user = caller.as_deref().unwrap_or("?"));
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve_caller(stream, caller, &link).instrument(span) => {}
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// The OS account on the other end of `stream`, from the kernel's peer credentials.
async fn caller(stream: &UnixStream) -> Option<String> {
    let uid = stream.peer_cred().ok()?.uid();
    // Name lookups may go to the network (NSS), so keep them off the runtime.
    tokio::task::spawn_blocking(move || User::from_uid(Uid::from_raw(uid)))
        .await
        .ok()?
        .ok()?
        .map(|user| user.name)
}

async fn serve_caller(stream: UnixStream, caller: Option<String>, link: &Link) {
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    loop {
        let request = match reader.read::<LocalRequest>().await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(err) => {
                debug!(error = %err, "bad local request");
                let _ = writer
                    .write(&LocalResponse::Fail(LocalError::Malformed))
                    .await;
                return;
            }
        };
        let response = match &caller {
            None => LocalResponse::Fail(LocalError::UnknownCaller),
            Some(os_user) => answer(request, os_user, link).await,
        };
        if writer.write(&response).await.is_err() {
            return;
        }
    }
}

async fn answer(request: LocalRequest, os_user: &str, link: &Link) -> LocalResponse {
    match request {
        LocalRequest::Status => {
            let status = link.status();
            let started = Instant::now();
            let server_rtt_us = match link.call(Request::Heartbeat).await {
                Ok(Response::Heartbeat) => {
                    Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
                }
                _ => None,
            };
            LocalResponse::Status(AgentStatus {
                os_user: os_user.to_owned(),
                client_id: status.client_id,
                connected: status.connected,
                server_rtt_us,
            })
        }
    }
}

/// Why the login prompt got no answer from its agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// The agent's socket could not be reached.
    #[error("cannot reach the otpgate agent at {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The agent's answer could not be read.
    #[error("the agent's answer could not be read: {0}")]
    Read(#[from] ReadError),
    /// The request could not be sent.
    #[error("the request could not be sent: {0}")]
    Write(#[from] WriteError),
    /// The agent closed the socket without answering.
    #[error("the agent closed the connection without answering")]
    NoAnswer,
}

/// Asks the agent at `socket` one request and returns its answer.
pub async fn ask(socket: &Path, request: &LocalRequest) -> Result<LocalResponse, PromptError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| PromptError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (read, write) = stream.into_split();
    FrameWriter::new(write).write(request).await?;
    FrameReader::new(read)
        .read()
        .await?
        .ok_or(PromptError::NoAnswer)
}

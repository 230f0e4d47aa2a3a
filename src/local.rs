//! The agent's local Unix socket, where the login prompt (`otpgate login`) asks
//! for things, and the prompt's side of it.
//!
//! Any local user may connect (the socket is mode 0666). The agent knows each
//! caller by the socket's peer credentials, which the kernel fills in; nothing the
//! caller says about itself is believed.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::unistd::{Uid, User};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use otpgate_protocol::local::{AgentStatus, LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::{Request, Response};

use crate::agent::{Link, LinkError};
use crate::conn::{FrameReader, FrameWriter, ReadError, WriteError};

/// Where the agent serves the login prompt by default.
pub const DEFAULT_SOCKET: &str = "/run/otpgate/agent.sock";

/// Creates the socket at `path` with permissions `mode`, replacing a stale one
/// left by a crash, but never one that another process still serves.
pub fn bind(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is serving this socket",
            ));
        }
        fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Accepts connections on `listener` until `cancel` fires, serving each with
/// `serve` in a task of its own; then waits for those tasks.
pub async fn accept<F, Fut>(listener: UnixListener, cancel: CancellationToken, serve: F)
where
    F: Fn(UnixStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(error = %err, "accept on a local socket failed");
                    continue;
                }
            },
        };
        tracker.spawn(serve(stream));
    }
    tracker.close();
    tracker.wait().await;
}

/// Serves login prompts on `listener` until `cancel` fires.
pub async fn serve(listener: UnixListener, link: Link, cancel: CancellationToken) {
    accept(listener, cancel.clone(), |stream| {
        let link = link.clone();
        let cancel = cancel.clone();
        async move {
            let caller = caller(&stream).await;
            let name = caller.as_ref().map_or("?", |c| c.name.as_str()).to_owned();
            let span = info_span!("local", os_user = name);
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve_caller(stream, caller, &link).instrument(span) => {}
            }
        }
    })
    .await;
}

/// The OS account on the other end of a local connection.
struct Caller {
    uid: u32,
    name: String,
}

/// The OS account on the other end of `stream`, from the kernel's peer credentials.
async fn caller(stream: &UnixStream) -> Option<Caller> {
    let uid = stream.peer_cred().ok()?.uid();
    // Name lookups may go to the network (NSS), so keep them off the runtime.
    let user = tokio::task::spawn_blocking(move || User::from_uid(Uid::from_raw(uid)))
        .await
        .ok()?
        .ok()??;
    Some(Caller {
        uid,
        name: user.name,
    })
}

async fn serve_caller(stream: UnixStream, caller: Option<Caller>, link: &Link) {
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
            Some(caller) => answer(request, caller, link).await,
        };
        if writer.write(&response).await.is_err() {
            return;
        }
    }
}

/// Serves one request of `caller`, the OS account on the socket's other end.
async fn answer(request: LocalRequest, caller: &Caller, link: &Link) -> LocalResponse {
    match request {
        LocalRequest::Login { os_user, request } => {
            let os_user = match os_user {
                Some(other) if other != caller.name && caller.uid != 0 => {
                    return LocalResponse::Fail(LocalError::Forbidden);
                }
                Some(other) => other,
                None => caller.name.clone(),
            };
            match link.call(Request::Login { os_user, request }).await {
                Ok(Response::Login(response)) => LocalResponse::Login(response),
                Ok(_) => LocalResponse::Fail(LocalError::Unavailable),
                Err(LinkError::NotConnected | LinkError::Stopped) => {
                    LocalResponse::Fail(LocalError::NotConnected)
                }
                Err(LinkError::Lost) => LocalResponse::Fail(LocalError::Unavailable),
            }
        }
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
                os_user: caller.name.clone(),
                client_id: status.client_id,
                connected: status.connected,
                server_rtt_us,
            })
        }
    }
}

/// Why a local client (the login prompt, `otpgate admin`) got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// The socket could not be reached.
    #[error("cannot reach {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The answer could not be read.
    #[error("the answer could not be read: {0}")]
    Read(#[from] ReadError),
    /// The request could not be sent.
    #[error("the request could not be sent: {0}")]
    Write(#[from] WriteError),
    /// The other side closed the socket without answering.
    #[error("the connection was closed without an answer")]
    NoAnswer,
}

/// Asks whoever serves Unix socket `socket` (the agent, or the daemon's admin
/// socket) one request and returns its answer.
pub async fn ask<Q: Serialize, A: DeserializeOwned>(
    socket: &Path,
    request: &Q,
) -> Result<A, PromptError> {
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

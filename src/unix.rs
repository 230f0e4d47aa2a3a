//! Local Unix sockets, shared by the agent's prompt socket and the daemon's admin
//! socket: binding one safely, accepting on it until shutdown, and the client
//! side that asks one request and reads one answer.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::frames::{FrameReader, FrameWriter, ReadError, WriteError};

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

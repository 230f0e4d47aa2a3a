//! Local Unix sockets, shared by the agent's prompt socket and the daemon's admin
//! socket: binding one safely, accepting on it until shutdown, serving one
//! connection's requests in the version each is written in, and the client
//! side that asks one request at a time and falls back to an older server's
//! version.

use std::fs;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::FutureExt;
use otpgate_protocol::{Frame, FrameError, Message};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::accept;
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

/// How long a connection to a local socket may wait for its next request
/// before the server closes it. Longer than a person takes at a login prompt
/// (sshd gives up after two minutes), so that clients of the release before,
/// which do not connect again, are not cut off; this release's clients
/// connect again when they find their connection closed.
pub const IDLE: Duration = Duration::from_secs(5 * 60);

/// Accepts connections on `listener` (named `what` in the log) until `cancel`
/// fires, serving each with `serve` in a task of its own; then waits for
/// those tasks.
pub async fn accept<F, Fut>(
    what: &'static str,
    listener: UnixListener,
    cancel: CancellationToken,
    serve: F,
) where
    F: Fn(UnixStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let mut pause = accept::Pause::new(what);
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(pause.failed(&err)) => continue,
                    }
                }
            },
        };
        pause.accepted();
        tracker.spawn(serve(stream));
    }
    tracker.close();
    tracker.wait().await;
}

/// Why a request on a local socket got no answer of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It could not be read: a newer client's request, or one broken inside
    /// (the frame said how long it was, so the connection goes on).
    Unreadable,
    /// Its answer, of `len` bytes, would not fit in a frame of `max`.
    TooLarge {
        /// The answer's length.
        len: usize,
        /// The most a frame holds.
        max: usize,
    },
}

/// Serves the requests of one local connection in turn, until the client
/// closes it, breaks the stream or sends no whole request for `idle` (if
/// given): each request is read in the version it is written in and answered, by `answer`, in the same version (or, when it is
/// newer than ours, in our newest, so that the client asks again in it); what
/// cannot be answered as asked is answered with `refuse`.
pub async fn serve_requests<Q, A, F, Fut>(
    stream: UnixStream,
    idle: Option<Duration>,
    refuse: fn(Refusal) -> A,
    answer: F,
) where
    Q: Message,
    A: Message,
    F: Fn(Q) -> Fut,
    Fut: Future<Output = A>,
{
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    loop {
        let read = async {
            match idle {
                Some(idle) => tokio::time::timeout(idle, reader.read_frame()).await,
                None => Ok(reader.read_frame().await),
            }
        };
        let frame = match read.await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return,
            Ok(Err(err)) => {
                debug!(error = %err, "a local connection broke its stream");
                return;
            }
            Err(_) => {
                debug!("a local connection sat idle; closed");
                return;
            }
        };
        let version = Q::VERSIONS.answering(frame.version);
        let response = match Q::decode(&frame) {
            Ok(request) => answer(request).await,
            Err(err) => {
                debug!(error = %err, version = frame.version, "a local request could not be read");
                refuse(Refusal::Unreadable)
            }
        };
        let written = match writer.write(&response, version).await {
            Err(WriteError::Frame(FrameError::TooLarge { len, max })) => {
                warn!(len, max, "an answer too large for a frame");
                writer
                    .write(&refuse(Refusal::TooLarge { len, max }), version)
                    .await
            }
            written => written,
        };
        if written.is_err() {
            return;
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
    /// The other side speaks only older versions of the socket's protocol,
    /// which cannot carry this request.
    #[error(
        "{} speaks version {speaks} of its protocol only, which cannot carry this \
         request: upgrade it",
        path.display()
    )]
    TooOld {
        /// The socket.
        path: PathBuf,
        /// The newest version it speaks.
        speaks: u8,
    },
}

/// A client's connection to a local socket (the agent's, or the daemon's admin
/// socket), asking one request at a time in the newest version of the socket's
/// protocol that both sides speak: it starts with ours and falls back, once
/// per version, when the server answers in an older one (see
/// `otpgate_protocol::version`). Connected on the first request, and again
/// after the server closed the connection (as it does with one left idle).
pub struct Client<Q, A> {
    socket: PathBuf,
    version: u8,
    /// Whether the server has answered in `version`: a connection closed
    /// without an answer is then only that, not a sign of an older server.
    confirmed: bool,
    conn: Option<(FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>)>,
    kinds: PhantomData<fn(Q) -> A>,
}

impl<Q: Message, A: Message> Client<Q, A> {
    /// A client of the socket at `socket`; nothing is connected yet.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            version: Q::VERSIONS.newest,
            confirmed: false,
            conn: None,
            kinds: PhantomData,
        }
    }

    /// A client of the socket at `socket`, connected now.
    pub async fn connect(socket: &Path) -> Result<Self, PromptError> {
        let mut client = Self::new(socket);
        client.connection().await?;
        Ok(client)
    }

    /// Sends `request` and waits for its answer.
    pub async fn ask(&mut self, request: &Q) -> Result<A, PromptError> {
        loop {
            let asked = self.version;
            let frame = self.exchange(request, asked).await?;
            let answered = frame.as_ref().map(|frame| frame.version);
            let older = match answered {
                None if self.confirmed => None,
                answered => Q::VERSIONS.fall_back(asked, answered),
            };
            match older {
                Some(older) => {
                    debug!(
                        asked,
                        speaks = older,
                        "the other side is older; asking again"
                    );
                    self.version = older;
                    self.conn = None;
                }
                None => {
                    let frame = frame.ok_or(PromptError::NoAnswer)?;
                    self.confirmed = true;
                    return Ok(A::decode(&frame).map_err(ReadError::from)?);
                }
            }
        }
    }

    /// The connection, made now if there is none or the server has closed
    /// the one there was (between requests, nothing else is there to read).
    async fn connection(
        &mut self,
    ) -> Result<&mut (FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>), PromptError> {
        if let Some((reader, _)) = &mut self.conn
            && reader.read_frame().now_or_never().is_some()
        {
            debug!("the server closed the connection; connecting again");
            self.conn = None;
        }
        if self.conn.is_none() {
            let stream =
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| PromptError::Connect {
                        path: self.socket.clone(),
                        source,
                    })?;
            let (read, write) = stream.into_split();
            self.conn = Some((FrameReader::new(read), FrameWriter::new(write)));
        }
        Ok(self.conn.as_mut().expect("made above"))
    }

    /// Writes `request` in `version` and reads the frame that answers it;
    /// `None` when the connection closed first (and is dropped).
    async fn exchange(&mut self, request: &Q, version: u8) -> Result<Option<Frame>, PromptError> {
        let socket = self.socket.clone();
        let (reader, writer) = self.connection().await?;
        match writer.write(request, version).await {
            Err(WriteError::Frame(FrameError::NotInVersion { .. })) => {
                return Err(PromptError::TooOld {
                    path: socket,
                    speaks: version,
                });
            }
            written => written?,
        }
        let frame = reader.read_frame().await;
        if !matches!(frame, Ok(Some(_))) {
            self.conn = None;
        }
        Ok(frame?)
    }
}

/// Asks whoever serves Unix socket `socket` (the agent, or the daemon's admin
/// socket) one request and returns its answer.
pub async fn ask<Q: Message, A: Message>(socket: &Path, request: &Q) -> Result<A, PromptError> {
    Client::new(socket).ask(request).await
}

#[cfg(test)]
mod tests {
    use otpgate_protocol::admin::{AdminRequest, AdminResponse};

    use super::*;

    /// A daemon of the first release: a frame of a version it does not know
    /// makes it close the connection without a word; it answers version 1.
    async fn first_release(listener: UnixListener) -> Vec<u8> {
        let mut asked_in = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let (read, write) = stream.into_split();
            let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
            while let Ok(Some(frame)) = reader.read_frame().await {
                asked_in.push(frame.version);
                if frame.version != 1 {
                    break;
                }
                writer.write(&AdminResponse::Done, 1).await.unwrap();
            }
            if asked_in.len() >= 3 {
                break;
            }
        }
        asked_in
    }

    #[tokio::test]
    async fn a_client_asks_a_first_release_daemon_again_in_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let daemon = tokio::spawn(first_release(bind(&socket, 0o600).unwrap()));
        let mut client = Client::<AdminRequest, AdminResponse>::new(&socket);
        for _ in 0..2 {
            let answer = client.ask(&AdminRequest::SettingsGet).await.unwrap();
            assert_eq!(answer, AdminResponse::Done);
        }
        drop(client);
        assert_eq!(daemon.await.unwrap(), [2, 1, 1], "once in 2, then in 1");
    }

    #[tokio::test]
    async fn a_connection_closed_after_an_answer_is_not_taken_for_an_older_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let listener = bind(&socket, 0o600).unwrap();
        let mut client = Client::<AdminRequest, AdminResponse>::new(&socket);
        let daemon = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, write) = stream.into_split();
            let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
            let frame = reader.read_frame().await.unwrap().unwrap();
            writer
                .write(&AdminResponse::Done, frame.version)
                .await
                .unwrap();
            // The next request finds the connection closed.
            let frame = reader.read_frame().await.unwrap().unwrap();
            frame.version
        });
        client.ask(&AdminRequest::SettingsGet).await.unwrap();
        let second = client.ask(&AdminRequest::SettingsGet).await;
        assert!(matches!(second, Err(PromptError::NoAnswer)), "{second:?}");
        assert_eq!(daemon.await.unwrap(), 2, "asked in 2 both times");
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let listener = bind(&socket, 0o600).unwrap();
        let idle = Duration::from_millis(50);
        let served = tokio::spawn(async move {
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                serve_requests(
                    stream,
                    Some(idle),
                    |_| AdminResponse::Done,
                    |_: AdminRequest| async { AdminResponse::Done },
                )
                .await;
            }
        });
        let mut client = Client::<AdminRequest, AdminResponse>::new(&socket);
        client.ask(&AdminRequest::SettingsGet).await.unwrap();
        tokio::time::sleep(idle * 4).await;
        let again = client.ask(&AdminRequest::SettingsGet).await;
        assert_eq!(again.unwrap(), AdminResponse::Done);
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the second connection was closed idle too")
            .unwrap();
    }
}

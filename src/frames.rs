//! Frames over any byte stream: [`FrameReader`] and [`FrameWriter`] wrap the two
//! halves of a connection (TLS in production, an in-memory pipe in tests) and
//! move whole messages with the codec of `otpgate_protocol::frame`, each in the
//! version of its wire the caller names.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use otpgate_protocol::{ErrorCode, Frame, FrameError, Message};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The code to tell the peer before closing, if the stream can still carry it.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Frame(FrameError::TooLarge { .. }) => Some(ErrorCode::FrameTooLarge),
            Self::Frame(FrameError::UnsupportedVersion { .. }) => {
                Some(ErrorCode::UnsupportedFrameVersion)
            }
            Self::Frame(_) => Some(ErrorCode::Malformed),
            Self::Truncated => Some(ErrorCode::FrameTruncated),
            Self::Io(_) => None,
        }
    }
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The message could not be encoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads whole frames from one half of a connection.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
        }
    }

    /// The next message, in whichever version of its wire it is written.
    /// `Ok(None)` is a clean end of stream, between frames.
    ///
    /// Cancel-safe: bytes read before a cancellation stay buffered for the next call.
    pub async fn read<M: Message>(&mut self) -> Result<Option<M>, ReadError> {
        match self.read_frame().await? {
            Some(frame) => Ok(Some(M::decode(&frame)?)),
            None => Ok(None),
        }
    }

    /// The next frame, its message not read yet: for a reader that answers
    /// what it cannot read. `Ok(None)` is a clean end of stream.
    ///
    /// Cancel-safe, as [`FrameReader::read`].
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = otpgate_protocol::frame::split(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }
}

/// Writes whole frames to one half of a connection.
pub struct FrameWriter<W> {
    inner: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Writes frames to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
        }
    }

    /// Writes `msg` as one frame of `version` and flushes it.
    pub async fn write<M: Message>(&mut self, msg: &M, version: u8) -> Result<(), WriteError> {
        self.buf.clear();
        msg.encode(version, &mut self.buf)?;
        self.inner.write_all(&self.buf).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Ends the stream; over TLS this sends close_notify.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use otpgate_protocol::{AgentMessage, Request};
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn messages_cross_a_pipe_and_a_clean_end_is_none() {
        let (client, server) = tokio::io::duplex(64);
        let mut writer = FrameWriter::new(client);
        let mut reader = FrameReader::new(server);
        let msgs: Vec<AgentMessage> = (0..100)
            .map(|id| AgentMessage::Request {
                id,
                request: Request::Heartbeat,
            })
            .collect();
        let sent = msgs.clone();
        let send = tokio::spawn(async move {
            for msg in &sent {
                writer.write(msg, 2).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        for msg in msgs {
            assert_eq!(reader.read::<AgentMessage>().await.unwrap(), Some(msg));
        }
        assert_eq!(reader.read::<AgentMessage>().await.unwrap(), None);
        send.await.unwrap();
    }

    #[tokio::test]
    async fn an_end_inside_a_frame_is_truncated() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 9, 1, 0]).await.unwrap();
        client.shutdown().await.unwrap();
        let err = FrameReader::new(server)
            .read::<AgentMessage>()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::FrameTruncated));
    }
}

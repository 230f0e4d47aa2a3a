//! The frame codec: how one message is laid out on a byte stream.
//!
//! ```text
//! +----------------+------------+-----------------------------+
//! | length: u32 BE | version: u8| bincode payload (length - 1)|
//! +----------------+------------+-----------------------------+
//! ```
//!
//! `length` counts the version byte and the payload. It is checked against
//! [`MAX_FRAME_LEN`] before anything is allocated. `version` is the version of
//! the wire the payload is written in (see [`crate::version`]): this layer
//! carries it and leaves it to the message types to read. Because every frame
//! says how long it is, a payload that cannot be read (a newer peer's message)
//! is skipped whole and the stream stays in step.
//!
//! The payload is decoded with bincode's limit on what it reads and reserves (a
//! string's room is reserved only once its length passed the limit) set by the
//! frame's own length, [`decode_limit`]: a hostile peer cannot make us reserve
//! more than a small multiple of what it sent. (serde itself reserves room for a
//! sequence of up to 1 MiB before reading it; only admin messages hold
//! sequences.)

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest `length` a frame may declare (version byte plus payload).
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// The most memory decoding one frame may reserve. Decoded values take more room
/// than their encoding (a string's 24-byte header for its 1-byte length, say),
/// so this is a multiple of [`MAX_FRAME_LEN`]: a frame that any sender of ours
/// can encode always decodes.
pub const MAX_DECODED: usize = 16 * MAX_FRAME_LEN;

/// The size of the length prefix.
const LENGTH_LEN: usize = 4;

/// The bincode configuration for encoding, and for decoding the largest frames.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODED>()
}

/// How much more a decoded value may take than its encoding.
const DECODE_FACTOR: usize = MAX_DECODED / MAX_FRAME_LEN;

/// The bincode limit for decoding a payload of `len` bytes: [`DECODE_FACTOR`]
/// times it, rounded up to a power of four from 1 KiB, at most [`MAX_DECODED`].
pub fn decode_limit(len: usize) -> usize {
    LIMITS
        .into_iter()
        .find(|&limit| len.saturating_mul(DECODE_FACTOR) <= limit)
        .unwrap_or(MAX_DECODED)
}

/// The limits [`decode_limit`] picks from, below [`MAX_DECODED`].
const LIMITS: [usize; 5] = [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18];

/// Decodes `payload` under [`decode_limit`] of its length (bincode's limit is a
/// type parameter: one configuration per limit).
fn decode_payload<M: DeserializeOwned>(
    payload: &[u8],
) -> Result<(M, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice;
    match decode_limit(payload.len()) {
        limit if limit == LIMITS[0] => {
            decode_from_slice(payload, standard().with_limit::<{ 1 << 10 }>())
        }
        limit if limit == LIMITS[1] => {
            decode_from_slice(payload, standard().with_limit::<{ 1 << 12 }>())
        }
        limit if limit == LIMITS[2] => {
            decode_from_slice(payload, standard().with_limit::<{ 1 << 14 }>())
        }
        limit if limit == LIMITS[3] => {
            decode_from_slice(payload, standard().with_limit::<{ 1 << 16 }>())
        }
        limit if limit == LIMITS[4] => {
            decode_from_slice(payload, standard().with_limit::<{ 1 << 18 }>())
        }
        _ => decode_from_slice(payload, config()),
    }
}

/// Why bytes could not be turned into a message, or a message into bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame declares more bytes than we accept.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The declared length.
        len: usize,
        /// The maximum accepted.
        max: usize,
    },
    /// The frame declares a length of zero: it cannot even hold a version byte.
    #[error("empty frame")]
    Empty,
    /// The frame is written in a version of its wire that this build does not
    /// speak (the frame itself was read whole: the stream is still in step).
    #[error("unsupported version {version}")]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The message does not exist in the version it was to be written in (a
    /// request an older peer does not know).
    #[error("this message does not exist in version {version}")]
    NotInVersion {
        /// The version asked for.
        version: u8,
    },
    /// The payload is not a valid encoding of the expected message.
    #[error("malformed payload")]
    Malformed(#[source] bincode::error::DecodeError),
    /// The payload decoded, but bytes were left over inside the frame.
    #[error("{extra} bytes left over after the message")]
    TrailingBytes {
        /// How many bytes were not consumed.
        extra: usize,
    },
    /// The message could not be encoded.
    #[error("message could not be encoded")]
    Encode(#[source] bincode::error::EncodeError),
}

/// One frame off a stream: the version its message is written in, and the
/// message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The version of the wire the payload is written in.
    pub version: u8,
    /// The encoded message.
    pub payload: BytesMut,
}

impl Frame {
    /// The whole payload as an `M` in bincode: nothing may be left over.
    pub fn decode<M: DeserializeOwned>(&self) -> Result<M, FrameError> {
        let (msg, used) = decode_payload(&self.payload).map_err(FrameError::Malformed)?;
        if used != self.payload.len() {
            return Err(FrameError::TrailingBytes {
                extra: self.payload.len() - used,
            });
        }
        Ok(msg)
    }

    /// What the start of the payload holds, read as a `P` with the rest left
    /// unread: the envelope of a message that does not decode whole.
    pub fn prefix<P: DeserializeOwned>(&self) -> Option<P> {
        decode_payload(&self.payload).ok().map(|(prefix, _)| prefix)
    }
}

/// Appends `msg` to `dst` as one frame of `version`, in bincode.
///
/// A message whose encoding would exceed [`MAX_FRAME_LEN`] is refused and `dst` is
/// left as it was.
pub fn encode_as<M: Serialize>(msg: &M, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    dst.put_u8(version);
    let mut writer = dst.writer();
    let written = bincode::serde::encode_into_std_write(msg, &mut writer, config());
    let dst = writer.into_inner();
    let len = dst.len() - start - LENGTH_LEN;
    let outcome = match written {
        Err(err) => Err(FrameError::Encode(err)),
        Ok(_) if len > MAX_FRAME_LEN => Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        }),
        Ok(_) => {
            // `len` fits in a u32: it is at most MAX_FRAME_LEN.
            dst[start..start + LENGTH_LEN].copy_from_slice(&(len as u32).to_be_bytes());
            return Ok(());
        }
    };
    dst.truncate(start);
    outcome
}

/// How many bytes of payload `msg` takes in a frame (the version byte aside):
/// for a sender that fills a frame entry by entry.
pub fn encoded_len<M: Serialize>(msg: &M) -> Result<usize, FrameError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(msg, &mut size, config()).map_err(FrameError::Encode)?;
    Ok(size.bytes_written)
}

/// Takes one frame off the front of `src`.
///
/// `Ok(None)` means the frame is not complete yet: read more bytes and call again.
/// On `Ok(Some(_))` the frame's bytes are consumed. On `Err` the stream can no
/// longer be trusted and the connection should be closed.
pub fn split(src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(header) = src.get(..LENGTH_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if src.len() < LENGTH_LEN + len {
        // Reserve only what the peer said it will send, which is bounded above.
        src.reserve(LENGTH_LEN + len - src.len());
        return Ok(None);
    }
    src.advance(LENGTH_LEN);
    let mut frame = src.split_to(len);
    let version = frame.get_u8();
    Ok(Some(Frame {
        version,
        payload: frame,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{AgentMessage, Request};
    use crate::version::decode;

    #[test]
    fn the_decode_limit_is_a_small_multiple_of_the_frame() {
        assert_eq!(decode_limit(1), 1 << 10);
        assert_eq!(decode_limit(64), 1 << 10);
        assert_eq!(decode_limit(65), 1 << 12);
        assert_eq!(decode_limit(MAX_FRAME_LEN), MAX_DECODED);
        for len in [1, 100, 1000, 5000, 40_000, MAX_FRAME_LEN] {
            let limit = decode_limit(len);
            assert!(limit >= len * DECODE_FACTOR, "{len}");
            assert!(limit <= (4 * len * DECODE_FACTOR).max(1 << 10), "{len}");
        }
    }

    fn frame(version: u8, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(payload.len() as u32 + 1);
        buf.put_u8(version);
        buf.put_slice(payload);
        buf
    }

    #[test]
    fn encoded_len_is_what_a_frame_carries() {
        let msg = AgentMessage::Request {
            id: 300,
            request: Request::Heartbeat,
        };
        let mut buf = BytesMut::new();
        encode_as(&msg, 1, &mut buf).unwrap();
        let declared = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(encoded_len(&msg).unwrap() + 1, declared);
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let mut whole = BytesMut::new();
        let msg = AgentMessage::Request {
            id: 7,
            request: Request::Heartbeat,
        };
        encode_as(&msg, 2, &mut whole).unwrap();
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert!(split(&mut part).unwrap().is_none(), "cut {cut}");
            assert_eq!(part.len(), cut, "nothing consumed at cut {cut}");
        }
        let frame = split(&mut whole).unwrap().unwrap();
        assert_eq!(frame.version, 2);
        assert_eq!(frame.decode::<AgentMessage>().unwrap(), msg);
        assert!(whole.is_empty());
    }

    #[test]
    fn two_frames_in_one_buffer_come_out_in_order() {
        let mut buf = BytesMut::new();
        let first = AgentMessage::Pong { nonce: 1 };
        let second = AgentMessage::Pong { nonce: 2 };
        encode_as(&first, 1, &mut buf).unwrap();
        encode_as(&second, 2, &mut buf).unwrap();
        assert_eq!(decode::<AgentMessage>(&mut buf).unwrap(), Some(first));
        assert_eq!(decode::<AgentMessage>(&mut buf).unwrap(), Some(second));
        assert_eq!(decode::<AgentMessage>(&mut buf).unwrap(), None);
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut buf = BytesMut::with_capacity(8);
        buf.put_u32(u32::MAX);
        buf.put_u8(1);
        let capacity = buf.capacity();
        assert!(matches!(
            split(&mut buf),
            Err(FrameError::TooLarge { len, max: MAX_FRAME_LEN }) if len == u32::MAX as usize
        ));
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn an_unknown_version_is_refused_and_the_frame_skipped() {
        let mut buf = frame(9, &[0]);
        buf.extend_from_slice(&frame(1, &[2, 5]));
        assert!(matches!(
            decode::<AgentMessage>(&mut buf),
            Err(FrameError::UnsupportedVersion { version: 9 })
        ));
        assert_eq!(
            decode::<AgentMessage>(&mut buf).unwrap(),
            Some(AgentMessage::Pong { nonce: 5 })
        );
    }

    #[test]
    fn empty_frame_is_refused() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(split(&mut buf), Err(FrameError::Empty)));
    }

    #[test]
    fn invalid_payload_is_malformed() {
        let mut buf = frame(1, &[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode::<AgentMessage>(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut buf = BytesMut::new();
        encode_as(&AgentMessage::Pong { nonce: 3 }, 1, &mut buf).unwrap();
        let mut payload = buf[5..].to_vec();
        payload.push(0);
        let mut buf = frame(1, &payload);
        assert!(matches!(
            decode::<AgentMessage>(&mut buf),
            Err(FrameError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn a_message_too_large_to_send_is_refused_and_leaves_the_buffer() {
        let mut buf = BytesMut::from(&b"kept"[..]);
        let huge = vec![0u8; MAX_FRAME_LEN];
        assert!(encode_as(&huge, 1, &mut buf).is_err());
        assert_eq!(&buf[..], b"kept");
    }

    #[test]
    fn a_payload_claiming_a_huge_string_is_refused() {
        // An enum tag for Hello, then varint lengths claiming 2^32 bytes.
        let mut buf = frame(1, &[0, 1, 1, 251, 0xff, 0xff]);
        assert!(decode::<AgentMessage>(&mut buf).is_err());
    }
}

//! What the fuzz targets share: the fuzzer's bytes as the payload of a
//! well-formed frame, so that a message decoder, not the length check, runs.

use bytes::{BufMut, BytesMut};
use otpgate_protocol::frame::MAX_FRAME_LEN;

/// The version byte of the frames: the newest, which every wire speaks.
const FRAME_VERSION: u8 = otpgate_protocol::version::AGENT.newest;

/// `payload` (cut to what a frame holds) in a frame whose length says what
/// follows.
pub fn framed(payload: &[u8]) -> BytesMut {
    let payload = &payload[..payload.len().min(MAX_FRAME_LEN - 1)];
    let mut buf = BytesMut::with_capacity(payload.len() + 5);
    buf.put_u32(payload.len() as u32 + 1);
    buf.put_u8(FRAME_VERSION);
    buf.put_slice(payload);
    buf
}

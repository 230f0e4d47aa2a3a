//! The message decoder for the server's admin socket, both ways: the fuzzer's bytes as the payload
//! of a well-formed frame, so that bincode's decoding is what runs.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use otpgate_protocol::frame::{FRAME_VERSION, MAX_FRAME_LEN};
use otpgate_protocol::decode;

/// `payload` in a frame whose length says what follows.
fn framed(payload: &[u8]) -> BytesMut {
    let payload = &payload[..payload.len().min(MAX_FRAME_LEN - 1)];
    let mut buf = BytesMut::with_capacity(payload.len() + 5);
    buf.put_u32(payload.len() as u32 + 1);
    buf.put_u8(FRAME_VERSION);
    buf.put_slice(payload);
    buf
}

fuzz_target!(|data: &[u8]| {
    let _ = decode::<otpgate_protocol::admin::AdminRequest>(&mut framed(data));
    let _ = decode::<otpgate_protocol::admin::AdminResponse>(&mut framed(data));
});

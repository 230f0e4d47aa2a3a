//! The frame decoder on raw bytes, as they arrive from a peer: length checks,
//! versions, partial frames, several frames in a row.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use otpgate_protocol::{AgentMessage, decode};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode::<AgentMessage>(&mut buf) {}
});

//! The message decoder for what the agent reads from the server, inside a
//! well-formed frame, and the envelope it reads of what does not decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpgate_fuzz::framed;
use otpgate_protocol::frame::split;
use otpgate_protocol::{Message, ServerMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(frame)) = split(&mut framed(data)) {
        if ServerMessage::decode(&frame).is_err() {
            let _ = ServerMessage::unreadable(&frame);
        }
    }
});

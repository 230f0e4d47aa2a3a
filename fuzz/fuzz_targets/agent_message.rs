//! The message decoder for what the server reads from agents, inside a
//! well-formed frame, and the envelope it reads of what does not decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpgate_fuzz::framed;
use otpgate_protocol::frame::split;
use otpgate_protocol::{AgentMessage, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(frame)) = split(&mut framed(data)) {
        if AgentMessage::decode(&frame).is_err() {
            let _ = AgentMessage::unreadable(&frame);
        }
    }
});

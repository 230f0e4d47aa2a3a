//! The message decoder for what the agent reads from the server, inside a well-formed frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpgate_fuzz::framed;
use otpgate_protocol::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<otpgate_protocol::ServerMessage>(&mut framed(data));
});

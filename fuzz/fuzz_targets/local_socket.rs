//! The message decoder for the agent's login socket, both ways, inside a well-formed frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpgate_fuzz::framed;
use otpgate_protocol::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<otpgate_protocol::local::LocalRequest>(&mut framed(data));
    let _ = decode::<otpgate_protocol::local::LocalResponse>(&mut framed(data));
});

//! The message decoder for the server's admin socket, both ways, inside a well-formed frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpgate_fuzz::framed;
use otpgate_protocol::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<otpgate_protocol::admin::AdminRequest>(&mut framed(data));
    let _ = decode::<otpgate_protocol::admin::AdminResponse>(&mut framed(data));
});

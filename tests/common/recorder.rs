//! `otpgate record` under a pseudo-terminal of the test's own, as sshd would
//! run it.

use std::io::Read;
use std::path::Path;

const OTPGATE: &str = env!("CARGO_BIN_EXE_otpgate");

/// Runs `otpgate record` with `command` under a pseudo-terminal of its own,
/// the way sshd would: what the terminal showed, and the exit status.
pub fn record(socket: &Path, command: &[&str]) -> (Vec<u8>, i32) {
    let (mut pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let mut child = pty_process::blocking::Command::new(OTPGATE)
        .arg("record")
        .arg("--socket")
        .arg(socket)
        .arg("--")
        .args(command)
        .spawn(pts)
        .unwrap();
    let mut shown = Vec::new();
    let mut buffer = [0; 4096];
    // EIO once the recorder has exited and closed the terminal.
    while let Ok(n @ 1..) = pty.read(&mut buffer) {
        shown.extend_from_slice(&buffer[..n]);
    }
    let status = child.wait().unwrap().code().unwrap_or(-1);
    (shown, status)
}

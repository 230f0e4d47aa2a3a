//! `otpgate record` under a pseudo-terminal of the test's own, as sshd would
//! run it.

use std::io::Read;
use std::path::Path;

const OTPGATE: &str = env!("CARGO_BIN_EXE_otpgate");

/// Runs `otpgate record` with `command` under a pseudo-terminal of its own,
/// the way sshd would: what the terminal showed, and the exit status.
pub fn record(socket: &Path, command: &[&str]) -> (Vec<u8>, i32) {
    run(socket, &[], command, b"", false)
}

/// [`record`], with `typed` typed at the terminal a second in.
pub fn record_typing(socket: &Path, command: &[&str], typed: &[u8]) -> (Vec<u8>, i32) {
    run(socket, &[], command, typed, false)
}

/// [`record`], with the recorder's own `options`.
pub fn record_with(socket: &Path, options: &[&str], command: &[&str]) -> (Vec<u8>, i32) {
    run(socket, options, command, b"", false)
}

/// [`record`], the terminal hung up (SIGHUP to the recorder) a second in.
pub fn record_hung_up(socket: &Path, command: &[&str]) -> (Vec<u8>, i32) {
    run(socket, &[], command, b"", true)
}

fn run(
    socket: &Path,
    options: &[&str],
    command: &[&str],
    typed: &[u8],
    hang_up: bool,
) -> (Vec<u8>, i32) {
    let (mut pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let mut child = pty_process::blocking::Command::new(OTPGATE)
        .arg("record")
        .arg("--socket")
        .arg(socket)
        .args(options)
        .arg("--")
        .args(command)
        .spawn(pts)
        .unwrap();
    if !typed.is_empty() {
        use std::os::fd::AsFd;
        let mut keyboard = std::fs::File::from(pty.as_fd().try_clone_to_owned().unwrap());
        let typed = typed.to_vec();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let _ = std::io::Write::write_all(&mut keyboard, &typed);
        });
    }
    if hang_up {
        let recorder = nix::unistd::Pid::from_raw(child.id() as i32);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let _ = nix::sys::signal::kill(recorder, nix::sys::signal::Signal::SIGHUP);
        });
    }
    let mut shown = Vec::new();
    let mut buffer = [0; 4096];
    // EIO once the recorder has exited and closed the terminal.
    while let Ok(n @ 1..) = pty.read(&mut buffer) {
        shown.extend_from_slice(&buffer[..n]);
    }
    let status = child.wait().unwrap().code().unwrap_or(-1);
    (shown, status)
}

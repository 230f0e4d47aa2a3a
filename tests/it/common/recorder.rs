//! `otpgate record` under a pseudo-terminal of the test's own, as sshd would
//! run it.

use std::io::Read;
use std::path::Path;

const OTPGATE: &str = env!("CARGO_BIN_EXE_otpgate");

/// Runs `otpgate record` with `command` under a pseudo-terminal of its own,
/// the way sshd would: what the terminal showed, and the exit status.
pub fn record(socket: &Path, command: &[&str]) -> (Vec<u8>, i32) {
    run(socket, &[], command, None)
}

/// [`record`], by the recorder of binary `otpgate` (another release's, say).
pub fn record_by(otpgate: &Path, socket: &Path, command: &[&str]) -> (Vec<u8>, i32) {
    run_by(otpgate, socket, &[], command, None)
}

/// [`record`], with `typed` typed at the terminal once it shows `prompt`.
pub fn record_typing(
    socket: &Path,
    command: &[&str],
    prompt: &str,
    typed: &[u8],
) -> (Vec<u8>, i32) {
    run(socket, &[], command, Some((prompt, Act::Type(typed))))
}

/// [`record`], with the recorder's own `options`.
pub fn record_with(socket: &Path, options: &[&str], command: &[&str]) -> (Vec<u8>, i32) {
    run(socket, options, command, None)
}

/// [`record`], the terminal hung up (SIGHUP to the recorder) once it shows
/// `shown`.
pub fn record_hung_up(socket: &Path, command: &[&str], shown: &str) -> (Vec<u8>, i32) {
    run(socket, &[], command, Some((shown, Act::HangUp)))
}

/// [`record_hung_up`], the recorder started where hang-ups are ignored (as
/// under nohup).
pub fn record_hung_up_where_ignored(
    socket: &Path,
    command: &[&str],
    shown: &str,
) -> (Vec<u8>, i32) {
    let (pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let child = pty_process::blocking::Command::new("/bin/sh")
        .arg("-c")
        .arg("trap '' HUP; exec \"$0\" \"$@\"")
        .arg(OTPGATE)
        .arg("record")
        .arg("--socket")
        .arg(socket)
        .arg("--")
        .args(command)
        .spawn(pts)
        .unwrap();
    watch(pty, child, Some((shown, Act::HangUp)))
}

/// What the person does at the terminal.
enum Act<'a> {
    Type(&'a [u8]),
    HangUp,
}

fn run(
    socket: &Path,
    options: &[&str],
    command: &[&str],
    when: Option<(&str, Act<'_>)>,
) -> (Vec<u8>, i32) {
    run_by(Path::new(OTPGATE), socket, options, command, when)
}

fn run_by(
    otpgate: &Path,
    socket: &Path,
    options: &[&str],
    command: &[&str],
    when: Option<(&str, Act<'_>)>,
) -> (Vec<u8>, i32) {
    let (pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let child = pty_process::blocking::Command::new(otpgate)
        .arg("record")
        .arg("--socket")
        .arg(socket)
        .args(options)
        .arg("--")
        .args(command)
        .spawn(pts)
        .unwrap();
    watch(pty, child, when)
}

/// What the terminal of `pty` shows until `child` has exited and closed it
/// (EIO), doing what `when` says once a text shows; and `child`'s status.
fn watch(
    mut pty: pty_process::blocking::Pty,
    mut child: std::process::Child,
    mut when: Option<(&str, Act<'_>)>,
) -> (Vec<u8>, i32) {
    use std::io::Write;
    let mut shown = Vec::new();
    let mut buffer = [0; 4096];
    while let Ok(n @ 1..) = pty.read(&mut buffer) {
        shown.extend_from_slice(&buffer[..n]);
        let Some((text, _)) = &when else {
            continue;
        };
        if !String::from_utf8_lossy(&shown).contains(text) {
            continue;
        }
        match when.take().map(|(_, act)| act) {
            Some(Act::Type(typed)) => pty.write_all(typed).unwrap(),
            Some(Act::HangUp) => {
                let recorder = nix::unistd::Pid::from_raw(child.id() as i32);
                nix::sys::signal::kill(recorder, nix::sys::signal::Signal::SIGHUP).unwrap();
            }
            None => {}
        }
    }
    let status = child.wait().unwrap().code().unwrap_or(-1);
    (shown, status)
}

/// What `program` with `args` prints on a terminal of its own that passes
/// its output through untouched (raw), and its exit status.
pub fn on_raw_terminal(program: &str, args: &[&Path]) -> (Vec<u8>, i32) {
    let (pty, pts) = pty_process::blocking::open().unwrap();
    {
        use std::os::fd::AsFd;
        let fd = pts.as_fd();
        let mut raw = rustix::termios::tcgetattr(fd).unwrap();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &raw).unwrap();
    }
    let child = pty_process::blocking::Command::new(program)
        .args(args)
        .spawn(pts)
        .unwrap();
    watch(pty, child, None)
}

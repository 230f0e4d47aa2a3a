//! The bench's mailbox: how the load generator gets each OTP without a person.
//! It reads the messages the server writes into its outbox folder (the embedded
//! mail transport, `<data>/outbox/*.eml`), as they land (inotify), and takes
//! each OTP message's recipient and code. The server has no benchmark hook: what
//! the bench measures is the real path, mail included.
//!
//! Messages are left in place while the bench runs (deleting thousands of small
//! files a second costs ext4 more than writing them) and cleared when the next
//! run opens the mailbox.
//!
//! A message is named after its Message-ID, `<id>.<queued ms>@<host>.eml`; a
//! login only takes a code queued after it asked, so a message left over from
//! an earlier run is never mistaken for a new one.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mail_parser::{HeaderName, MessageParser};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::oneshot;

/// What an OTP message says, as its recipient reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpMail {
    /// The recipient.
    pub to: String,
    /// The one-time password.
    pub code: String,
}

/// Reads an OTP message as the server writes it (an RFC 5322 message with a
/// plain-text part) with mail-parser. `None` for any other message.
pub fn read_otp_mail(text: &str) -> Option<OtpMail> {
    // Only what is read here: MIME structure and the recipient. The bench reads
    // a thousand messages a second on the cores the server runs on.
    let message = MessageParser::new()
        .with_mime_headers()
        .header_address(HeaderName::To)
        .parse(text.as_bytes())?;
    let to = message.to()?.first()?.address()?.to_owned();
    let body = message.body_text(0)?;
    // In the text part, the code stands alone on the first line after this.
    let code = body
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != "Your one-time password is:")
        .skip(1)
        .find(|line| !line.is_empty())?
        .to_owned();
    Some(OtpMail { to, code })
}

/// When the message in file `name` was queued, from its name.
fn queued_millis(name: &str) -> Option<u64> {
    name.strip_suffix(".eml")?
        .split_once('@')?
        .0
        .split_once('.')?
        .1
        .parse()
        .ok()
}

/// What one address's mailbox holds.
enum Slot {
    /// A code nobody has asked for yet.
    Arrived { code: String, queued: u64 },
    /// A login waiting for a code queued at `since` or later.
    Waiting {
        since: u64,
        reply: oneshot::Sender<String>,
    },
}

/// How often the reader looks up from the folder to see whether it should stop.
const STOP_CHECK_MS: u16 = 100;

/// The outbox folder, read as the bench agents' mail.
pub(super) struct Mailbox {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    stop: Arc<AtomicBool>,
}

impl Mailbox {
    /// Starts reading folder `outbox` (created if missing), on a thread of its
    /// own, after deleting the messages of earlier runs.
    pub(super) fn open(outbox: &Path) -> anyhow::Result<Self> {
        crate::files::create_private_dir(outbox)?;
        for entry in std::fs::read_dir(outbox)? {
            std::fs::remove_file(entry?.path())?;
        }
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // Messages are written under a temporary name and renamed into place.
        inotify.add_watch(outbox, AddWatchFlags::IN_MOVED_TO)?;
        let reader = Reader {
            dir: outbox.to_owned(),
            slots: Arc::default(),
        };
        let mailbox = Self {
            slots: Arc::clone(&reader.slots),
            stop: Arc::default(),
        };
        let stop = Arc::clone(&mailbox.stop);
        std::thread::Builder::new()
            .name("bench-mailbox".into())
            .spawn(move || reader.run(&inotify, &stop))?;
        Ok(mailbox)
    }

    /// The OTP mailed to `to` and queued at `since` (Unix ms) or later, waiting
    /// at most `wait` for it.
    pub(super) async fn otp_for(&self, to: &str, since: u64, wait: Duration) -> Option<String> {
        let answer = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.remove(to) {
                Some(Slot::Arrived { code, queued }) if queued >= since => return Some(code),
                _ => {
                    let (reply, answer) = oneshot::channel();
                    slots.insert(to.to_owned(), Slot::Waiting { since, reply });
                    answer
                }
            }
        };
        tokio::time::timeout(wait, answer).await.ok()?.ok()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The task that reads the folder.
struct Reader {
    dir: PathBuf,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Reader {
    fn run(&self, inotify: &Inotify, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, STOP_CHECK_MS) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(err) => {
                    eprintln!("bench: cannot watch the outbox: {err}");
                    return;
                }
            }
            match inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            self.scan();
                        } else if let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) {
                            self.take(name);
                        }
                    }
                }
                Err(Errno::EAGAIN) => {}
                Err(err) => {
                    eprintln!("bench: cannot watch the outbox: {err}");
                    return;
                }
            }
        }
    }

    /// Reads every message in the folder, when the kernel's event queue
    /// overflowed. Messages read before change nothing: a login only takes a
    /// code queued after it asked, and a newer code is never replaced by an
    /// older one.
    fn scan(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                self.take(name);
            }
        }
    }

    /// Reads message file `name` and hands its code over.
    fn take(&self, name: &str) {
        let Some(queued) = queued_millis(name) else {
            return;
        };
        let path = self.dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let Some(OtpMail { to, code }) = read_otp_mail(&text) else {
            return;
        };
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.remove(&to) {
            Some(kept) if !newer(&kept, queued) => {
                // An older message: the login waits for its own; a newer code stays.
                slots.insert(to, kept);
            }
            Some(Slot::Waiting { reply, .. }) => {
                // A login that gave up waiting dropped its end; the code goes with it.
                let _ = reply.send(code);
            }
            _ => {
                slots.insert(to, Slot::Arrived { code, queued });
            }
        }
    }
}

/// Whether a message queued at `queued` is for what `slot` holds or waits for.
fn newer(slot: &Slot, queued: u64) -> bool {
    match slot {
        Slot::Waiting { since, .. } => queued >= *since,
        Slot::Arrived { queued: held, .. } => queued > *held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_carry_when_they_were_queued() {
        assert_eq!(
            queued_millis("42.1764400000123@otpgate.example.eml"),
            Some(1_764_400_000_123)
        );
        assert_eq!(queued_millis("42.eml.tmp"), None);
        assert_eq!(queued_millis("notes.txt"), None);
    }

    #[test]
    fn an_otp_message_gives_its_recipient_and_code() {
        let text = "From: <otpgate@localhost>\r\nTo: <bench-000001@bench.test>\r\n\
                    Subject: Your one-time password for bench-000001\r\n\r\n\
                    Your one-time password is:\r\n\r\n    12345678\r\n\r\nClient computer: bench-000001\r\n";
        assert_eq!(
            read_otp_mail(text),
            Some(OtpMail {
                to: "bench-000001@bench.test".into(),
                code: "12345678".into()
            })
        );
        assert_eq!(
            read_otp_mail("To: <a@b.test>\r\n\r\nAccess request #1\r\n"),
            None
        );
    }
}

//! Bounds on what waits in an actor's mailbox. ractor's mailboxes are
//! unbounded; every message a computer's actor or the mailer is sent is bounded
//! by its sender: calls by each connection's requests in flight and flood
//! control, and the messages that are only told (a heartbeat, a mailer wake-up)
//! by [`Waiting`]: at most one of a kind from one sender waits at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// How long a message may wait before its sender sends another anyway (the
/// actor may have died with it in its mailbox).
const STALE: Duration = Duration::from_secs(10);

/// Whether a message of one kind from one sender waits in a mailbox: taken
/// before sending, freed by the actor once it handled the message.
#[derive(Debug, Clone, Default)]
pub struct Waiting(Arc<AtomicU64>);

impl Waiting {
    /// Milliseconds on a monotonic clock, from 1.
    fn now() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let elapsed = START.get_or_init(Instant::now).elapsed().as_millis();
        u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1
    }

    /// Claims it for a new message: false while one sent less than [`STALE`]
    /// ago waits.
    pub fn take(&self) -> bool {
        let now = Self::now();
        let sent = self.0.load(Ordering::Acquire);
        let stale = u64::try_from(STALE.as_millis()).unwrap_or(u64::MAX);
        if sent != 0 && now < sent.saturating_add(stale) {
            return false;
        }
        self.0
            .compare_exchange(sent, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The message has been handled (or was never sent): another may go.
    pub fn handled(&self) {
        self.0.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_message_waits() {
        let waiting = Waiting::default();
        assert!(waiting.take());
        assert!(!waiting.take(), "one waits already");
        waiting.handled();
        assert!(waiting.take());
    }
}

//! Listening: a TCP port bound with a deep backlog ([`bind`]), and what a
//! listener's accept loop does when `accept` fails: out of file
//! descriptors (`EMFILE`, `ENFILE`), out of memory, or a connection reset
//! while it was queued. The error comes back at once for as long as its cause
//! lasts, so trying again without a pause spins a core and floods the log:
//! each failure in a row pauses twice as long as the one before (up to a
//! second), and a run of failures is logged when it starts and when it ends.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};

/// The listen backlog: agents reconnecting all at once queue here.
const LISTEN_BACKLOG: u32 = 8192;

/// Binds `addr` with a backlog deep enough for a reconnect storm.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The pause after a first failure.
const FIRST: Duration = Duration::from_millis(10);

/// The longest pause: a freed descriptor is used within this.
const LONGEST: Duration = Duration::from_secs(1);

/// The state of one accept loop's failures.
#[derive(Debug)]
pub struct Pause {
    /// What the listener is, for the log.
    what: &'static str,
    /// The next pause, or `None` when the last accept succeeded.
    next: Option<Duration>,
    /// Failures in the current run.
    failures: u64,
}

impl Pause {
    /// The pause of the accept loop on `what` (as the log names it).
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            next: None,
            failures: 0,
        }
    }

    /// An accept succeeded: ends a run of failures.
    pub fn accepted(&mut self) {
        if self.next.take().is_some() {
            info!(
                listener = self.what,
                failures = self.failures,
                "accepting connections again"
            );
            self.failures = 0;
        }
    }

    /// An accept failed with `err`: how long to wait before the next one.
    pub fn failed(&mut self, err: &io::Error) -> Duration {
        self.failures += 1;
        let pause = match self.next {
            None => {
                warn!(
                    listener = self.what,
                    error = %err,
                    "accept failed; pausing before each new try until it succeeds"
                );
                FIRST
            }
            Some(pause) => pause,
        };
        self.next = Some((pause * 2).min(LONGEST));
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_pause_longer_up_to_a_second_and_a_success_starts_over() {
        let mut pause = Pause::new("test");
        let err = io::Error::from_raw_os_error(24);
        let pauses: Vec<Duration> = (0..10).map(|_| pause.failed(&err)).collect();
        assert_eq!(pauses[0], FIRST);
        assert_eq!(pauses[1], FIRST * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(pauses[9], LONGEST);
        pause.accepted();
        assert_eq!(pause.failed(&err), FIRST);
    }
}

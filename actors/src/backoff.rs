//! Exponential backoff with jitter, for everything that retries (the agent's
//! reconnections, the mailer's deliveries): the pause after failure number `n`
//! is drawn from the upper half of a window that doubles from `base` up to
//! `max`, so that those cut off together do not come back together.

use std::time::Duration;

use rand::RngExt;

/// A backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The window after the first failure.
    pub base: Duration,
    /// The widest window.
    pub max: Duration,
}

impl Backoff {
    /// The window after failure number `failures` (from 1).
    pub fn window(&self, failures: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
            .min(self.max)
    }

    /// The pause after failure number `failures` (from 1): somewhere in the upper
    /// half of its window.
    pub fn pause(&self, failures: u32) -> Duration {
        let window = self.window(failures);
        window / 2 + window.mul_f64(rand::rng().random_range(0.0..=0.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_within_jitter_up_to_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
        };
        let mut window = backoff.base;
        for failures in 1..40 {
            assert_eq!(backoff.window(failures), window);
            let pause = backoff.pause(failures);
            assert!(
                pause >= window / 2 && pause <= window,
                "{failures}: {pause:?} in {window:?}"
            );
            window = (window * 2).min(backoff.max);
        }
        assert_eq!(backoff.window(0), backoff.base, "no failure yet");
    }
}

//! Failure limits: what is counted ([`LimitKey`]), each in a leaky bucket
//! ([`Bucket`]) that drains steadily, and whether any of them is full
//! ([`throttled`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::ComputerId;
use crate::settings::SystemSettings;

/// What is counted, each in a [`Bucket`] of its own. Failures: first against
/// the person (an OS user on one computer), whose limit is the lowest, so that
/// nobody can spend anyone else's; then, with limits aimed at spraying, against
/// the computer, the email address and the internal login, whatever computer
/// they were tried from. And the new OTPs and access requests of a computer,
/// whatever OS user names it makes up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// One OS user on one computer.
    Person(ComputerId, String),
    /// Everything that failed on one computer.
    Computer(ComputerId),
    /// Wrong codes typed with one email address, on any computer.
    Email(String),
    /// Wrong passwords for one internal login, on any computer.
    Login(String),
    /// New OTPs sent at once and access requests opened on one computer.
    NewOnComputer(ComputerId),
}

/// A person's share of [`SystemSettings::max_failures`]: one in this many.
pub const PERSON_SHARE: u32 = 10;

impl LimitKey {
    /// The key under which the store counts it.
    pub fn key(&self) -> String {
        match self {
            Self::Person(id, os_user) => format!("person:{id}\0{os_user}"),
            Self::Computer(id) => format!("computer:{id}"),
            Self::Email(email) => format!("email:{}", email.to_lowercase()),
            Self::Login(login) => format!("login:{}", login.to_lowercase()),
            Self::NewOnComputer(id) => format!("new:{id}"),
        }
    }

    /// The failures it takes within one failure window before it is throttled:
    /// `max_failures` for a computer or an account, a [`PERSON_SHARE`] of it for
    /// a person.
    pub fn limit(&self, settings: &SystemSettings) -> u32 {
        match self {
            Self::Person(..) => (settings.max_failures / PERSON_SHARE).max(1),
            Self::Computer(_) | Self::Email(_) | Self::Login(_) => settings.max_failures,
            Self::NewOnComputer(_) => settings.max_new_per_computer,
        }
    }

    /// What it is, for the audit log.
    pub fn describe(&self) -> String {
        match self {
            Self::Person(..) => "this user on this computer".into(),
            Self::Computer(_) => "this computer".into(),
            Self::Email(email) => email.to_lowercase(),
            Self::Login(login) => format!("login {login}"),
            Self::NewOnComputer(_) => "new OTPs on this computer".into(),
        }
    }
}

/// Thousandths of a failure: a bucket drains by fractions.
const UNIT: u64 = 1000;

/// The failures against one key, as a leaky bucket: each failure adds one, and
/// the bucket drains its key's limit in every failure window. A key is throttled
/// while its bucket is full, that is once it took its limit within any stretch
/// of one window's length: no window edge lets twice the limit through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Failures in it, in thousandths.
    level: u64,
    /// When it was last drained.
    at: Timestamp,
}

impl Default for Bucket {
    /// An empty bucket.
    fn default() -> Self {
        Self {
            level: 0,
            at: Timestamp::from_unix_millis(0),
        }
    }
}

/// One failure to count against a key: at `at`, for a limit of `limit` a
/// `window`. Data, not a closure, so that a store may apply it where the
/// bucket is (in a database's transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// When.
    pub at: Timestamp,
    /// The limit of the key.
    pub limit: u32,
    /// The window the limit is counted over.
    pub window: Duration,
}

impl Failure {
    /// `bucket` with this failure counted.
    pub fn counted(self, bucket: Bucket) -> Bucket {
        bucket.fail(self.at, self.limit, self.window)
    }
}

impl Bucket {
    /// The bucket at `now`, drained at `limit` per `window`.
    fn at(self, now: Timestamp, limit: u32, window: Duration) -> Self {
        let elapsed = u128::from(now.unix_millis().saturating_sub(self.at.unix_millis()));
        let drained = elapsed * u128::from(limit) * u128::from(UNIT) / window.as_millis().max(1);
        Self {
            level: self
                .level
                .saturating_sub(u64::try_from(drained).unwrap_or(u64::MAX)),
            at: now.max(self.at),
        }
    }

    /// The bucket with one more failure at `now`.
    pub fn fail(self, now: Timestamp, limit: u32, window: Duration) -> Self {
        let bucket = self.at(now, limit, window);
        Self {
            level: bucket.level.saturating_add(UNIT),
            ..bucket
        }
    }

    /// Whether it has drained by `now`: untouched for two windows (it never
    /// holds more than its limit and a few racing failures, and drains its
    /// limit in one).
    pub fn drained_by(&self, now: Timestamp, window: Duration) -> bool {
        now >= self.at.after(window * 2)
    }

    /// How long until it takes a failure again, if it is full at `now` (one more
    /// would overflow it).
    pub fn full_for(self, now: Timestamp, limit: u32, window: Duration) -> Option<Duration> {
        let capacity = u64::from(limit) * UNIT;
        let over = self.level.saturating_add(UNIT).saturating_sub(capacity);
        let per_window = u128::from(limit) * u128::from(UNIT);
        let draining = (u128::from(over) * window.as_millis()).div_ceil(per_window);
        let free = u128::from(self.at.unix_millis()) + draining;
        let wait = free.saturating_sub(u128::from(now.unix_millis()));
        (wait > 0).then(|| Duration::from_millis(u64::try_from(wait).unwrap_or(u64::MAX)))
    }
}

/// The longest wait among the full buckets of `failures`, with its key.
pub fn throttled<'k>(
    failures: impl IntoIterator<Item = &'k (LimitKey, Bucket)>,
    settings: &SystemSettings,
    now: Timestamp,
) -> Option<(Duration, &'k LimitKey)> {
    failures
        .into_iter()
        .filter_map(|(key, bucket)| {
            let wait = bucket.full_for(now, key.limit(settings), settings.failure_window)?;
            Some((wait, key))
        })
        .max_by_key(|(wait, _)| *wait)
}

//! Answers kept a short while, so that every request to a computer does not
//! ask the directory again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most answers kept; past it the cache starts again.
const MAX_CACHED: usize = 10_000;

/// Answers kept a short while, by key; a time to live of zero keeps none.
pub(super) struct Cache<V> {
    ttl: Duration,
    pub(super) entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Cache<V> {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The answer kept for `key`, if it still holds.
    pub(super) fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, value)| value.clone())
    }

    /// Keeps `value` for `key` for the time to live.
    pub(super) fn keep(&self, key: String, value: &V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        entries.insert(key, (Instant::now() + self.ttl, value.clone()));
    }
}

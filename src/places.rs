//! Places counted per key and in all (TLS handshakes per source address,
//! local connections per uid), each given back when its holder is dropped:
//! the one counter behind the server's handshake gate and the agent socket's
//! cap per user.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Places taken, in all and per key.
#[derive(Debug)]
pub struct Places<K: Hash + Eq> {
    taken: Mutex<(usize, HashMap<K, usize>)>,
}

/// One place of `key`, given back when dropped.
#[derive(Debug)]
pub struct Place<K: Hash + Eq> {
    places: Arc<Places<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Places<K> {
    /// No place taken yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            taken: Mutex::new((0, HashMap::new())),
        })
    }

    /// One more place for `key`, if `fits` allows it, given how many are
    /// taken in all and of `key` now.
    pub fn take(
        self: &Arc<Self>,
        key: K,
        fits: impl FnOnce(usize, usize) -> bool,
    ) -> Option<Place<K>> {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_key) = &mut *taken;
        let of_key = by_key.get(&key).copied().unwrap_or(0);
        if !fits(*total, of_key) {
            return None;
        }
        *total += 1;
        by_key.insert(key.clone(), of_key + 1);
        Some(Place {
            places: Arc::clone(self),
            key,
        })
    }
}

impl<K: Hash + Eq> Drop for Place<K> {
    fn drop(&mut self) {
        let mut taken = self
            .places
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, by_key) = &mut *taken;
        *total -= 1;
        if let Some(count) = by_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_in_all_and_per_key_and_given_back() {
        let places = Places::new();
        let fits = |total: usize, of_key: usize| total < 3 && of_key < 2;
        let first = places.take('a', fits).unwrap();
        let _second = places.take('a', fits).unwrap();
        assert!(places.take('a', fits).is_none(), "two of one key");
        let _third = places.take('b', fits).unwrap();
        assert!(places.take('b', fits).is_none(), "three in all");
        drop(first);
        assert!(places.take('a', fits).is_some(), "a place given back");
    }
}

//! The gate before authentication: TLS handshakes in flight are capped in all
//! and per source address, apart from the cap on connections, so that clients
//! that connect and never finish a handshake (slow loris) cannot take every
//! place while the agents that authenticate wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Handshakes in flight, by source address.
#[derive(Debug)]
pub struct Handshakes {
    max: usize,
    per_source: usize,
    in_flight: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One handshake's place at the gate, given back when dropped.
#[derive(Debug)]
pub struct Place {
    gate: Arc<Handshakes>,
    source: IpAddr,
}

impl Handshakes {
    /// A gate for `max` handshakes at once, `per_source` from one address.
    pub fn new(max: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_source,
            in_flight: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a handshake from `source`, unless the gate is full for it.
    pub fn enter(self: &Arc<Self>, source: IpAddr) -> Option<Place> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, by_source) = &mut *in_flight;
        let from_source = by_source.get(&source).copied().unwrap_or(0);
        if *total >= self.max || from_source >= self.per_source {
            return None;
        }
        *total += 1;
        by_source.insert(source, from_source + 1);
        Some(Place {
            gate: Arc::clone(self),
            source,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut in_flight = self
            .gate
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, by_source) = &mut *in_flight;
        *total -= 1;
        if let Some(count) = by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_in_all_and_per_source_and_given_back() {
        let gate = Handshakes::new(3, 2);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = gate.enter(a).unwrap();
        let _second = gate.enter(a).unwrap();
        assert!(gate.enter(a).is_none(), "two from one source");
        let _third = gate.enter(b).unwrap();
        assert!(gate.enter(b).is_none(), "three in all");
        drop(first);
        assert!(gate.enter(a).is_some(), "a place given back");
    }
}

//! The gate before authentication: TLS handshakes in flight are capped in all
//! and per source address, apart from the cap on connections, so that clients
//! that connect and never finish a handshake (slow loris) cannot take every
//! place while the agents that authenticate wait.

use std::net::IpAddr;
use std::sync::Arc;

use crate::places::{Place as Taken, Places};

/// Handshakes in flight, by source address.
#[derive(Debug)]
pub struct Handshakes {
    max: usize,
    per_source: usize,
    in_flight: Arc<Places<IpAddr>>,
}

/// One handshake's place at the gate, given back when dropped.
pub type Place = Taken<IpAddr>;

impl Handshakes {
    /// A gate for `max` handshakes at once, `per_source` from one address.
    pub fn new(max: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_source,
            in_flight: Places::new(),
        })
    }

    /// A place for a handshake from `source`, unless the gate is full for it.
    pub fn enter(self: &Arc<Self>, source: IpAddr) -> Option<Place> {
        self.in_flight.take(source, |total, from_source| {
            total < self.max && from_source < self.per_source
        })
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

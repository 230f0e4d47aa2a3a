//! The agent connections open now, by client computer: what a revocation of
//! the computer's certificates closes at once, and what is told when its
//! offline codes change; and which computers a warning about their agent
//! was given for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use otpgate_actors::{ComputerId, ConnectionId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Open connections, each with the token that closes it and the bell that
/// says its computer's offline codes changed.
#[derive(Debug, Default)]
pub struct Live(Mutex<HashMap<ComputerId, HashMap<ConnectionId, Bells>>>);

/// What one connection is told by others.
#[derive(Debug, Clone, Default)]
struct Bells {
    /// Fires when its computer's certificates are revoked.
    revoked: CancellationToken,
    /// Rings when its computer's offline codes change.
    offline: Arc<Notify>,
}

/// One connection's entry, removed when dropped.
#[derive(Debug)]
pub struct Entry {
    live: Arc<Live>,
    id: ComputerId,
    conn: ConnectionId,
    /// Fires when the computer's certificates are revoked.
    pub revoked: CancellationToken,
    /// Rings when the computer's offline codes change.
    pub offline: Arc<Notify>,
}

impl Live {
    /// Records connection `conn` of computer `id`.
    pub fn enter(self: &Arc<Self>, id: &ComputerId, conn: ConnectionId) -> Entry {
        let bells = Bells::default();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.clone())
            .or_default()
            .insert(conn, bells.clone());
        Entry {
            live: Arc::clone(self),
            id: id.clone(),
            conn,
            revoked: bells.revoked,
            offline: bells.offline,
        }
    }

    /// Closes every connection of computer `id`; how many there were.
    pub fn close_all(&self, id: &ComputerId) -> usize {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(id).map_or(0, |conns| {
            conns.values().for_each(|bells| bells.revoked.cancel());
            conns.len()
        })
    }

    /// Tells every connection here that its computer's offline codes may
    /// have changed (which changed was not heard).
    pub fn offline_changed_all(&self) {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        open.values()
            .flat_map(HashMap::values)
            .for_each(|bells| bells.offline.notify_one());
    }

    /// Tells every connection of computer `id` that its offline codes
    /// changed.
    pub fn offline_changed(&self, id: &ComputerId) {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conns) = open.get(id) {
            conns.values().for_each(|bells| bells.offline.notify_one());
        }
    }
}

/// The computers a warning was given for, so that it is given once per
/// computer and run of the server.
#[derive(Debug, Default)]
pub struct Warned(Mutex<HashSet<ComputerId>>);

impl Warned {
    /// Whether `id` is warned about for the first time (it is now).
    pub fn first(&self, id: &ComputerId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut open = self.live.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conns) = open.get_mut(&self.id) {
            conns.remove(&self.conn);
            if conns.is_empty() {
                open.remove(&self.id);
            }
        }
    }
}

//! The agent connections open now, by client computer: what a revocation of
//! the computer's certificates closes at once; and which computers a warning
//! about their agent was given for.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use otpgate_actors::{ComputerId, ConnectionId};
use tokio_util::sync::CancellationToken;

/// Open connections, each with the token that closes it.
#[derive(Debug, Default)]
pub struct Live(Mutex<HashMap<ComputerId, HashMap<ConnectionId, CancellationToken>>>);

/// One connection's entry, removed when dropped.
#[derive(Debug)]
pub struct Entry {
    live: Arc<Live>,
    id: ComputerId,
    conn: ConnectionId,
    /// Fires when the computer's certificates are revoked.
    pub revoked: CancellationToken,
}

impl Live {
    /// Records connection `conn` of computer `id`.
    pub fn enter(self: &Arc<Self>, id: &ComputerId, conn: ConnectionId) -> Entry {
        let revoked = CancellationToken::new();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.clone())
            .or_default()
            .insert(conn, revoked.clone());
        Entry {
            live: Arc::clone(self),
            id: id.clone(),
            conn,
            revoked,
        }
    }

    /// Closes every connection of computer `id`; how many there were.
    pub fn close_all(&self, id: &ComputerId) -> usize {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(id).map_or(0, |conns| {
            conns.values().for_each(CancellationToken::cancel);
            conns.len()
        })
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

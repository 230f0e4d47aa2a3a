//! A computer's turns: the writes its actor makes while it handles one
//! message, committed together, and only while this node owns the computer.
//!
//! A node takes a computer ([`super::Store::own`]) before its actor loads
//! it: in PostgreSQL that raises the computer's fence number (table
//! `owners`), after every commit that holds the computer's row, so that the
//! new owner loads what the old one committed. The writes of a turn
//! ([`turn`]) are held until the turn flushes (or ends), then taken for the
//! next commit all together, tagged with the owner. A commit locks the rows
//! of the owners it carries (`FOR SHARE`) and leaves out the writes of every
//! owner whose fence is no longer the computer's: another node took the
//! computer since. That turn's flush fails with [`StoreError::Fenced`], so a
//! node that lost a computer (paused, cut off from the database) commits
//! nothing more for it and tells nobody that it did.
//!
//! A read in a turn of a table the turn wrote to first lets the turn's writes
//! go (they are then committed before the read, and the rest of the turn in
//! a later commit: still fenced, no longer one transaction). In sled (one
//! process, which holds the database alone) writes are made at once and
//! fences are not kept.

use std::cell::RefCell;
use std::sync::Arc;

use super::postgres::{Op, Pg};
use crate::id::ComputerId;

tokio::task_local! {
    static TURN: Turn;
}

/// A computer as this node took it: the fence number it took it with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The computer.
    pub computer: ComputerId,
    /// Raised each time a node takes the computer (0 in sled).
    pub fence: i64,
}

/// The turn under way in this task.
struct Turn {
    owner: Arc<Owner>,
    /// Its writes not yet taken, with the database each is for.
    held: RefCell<Vec<(Arc<Pg>, Op)>>,
}

/// Runs `work` as one turn of `owner`'s computer; what it wrote and did not
/// flush is taken for the next commit when it ends.
pub async fn turn<F: Future>(owner: Owner, work: F) -> F::Output {
    let turn = Turn {
        owner: Arc::new(owner),
        held: RefCell::default(),
    };
    TURN.scope(turn, async move {
        let done = work.await;
        let _ = release(None);
        done
    })
    .await
}

/// Holds `op`, a write to `pg`, for the turn under way; gives it back when
/// there is none.
pub(super) fn hold(pg: &Arc<Pg>, op: Op) -> Option<Op> {
    let mut op = Some(op);
    let _ = TURN.try_with(|turn| {
        if let Some(op) = op.take() {
            turn.held.borrow_mut().push((Arc::clone(pg), op));
        }
    });
    op
}

/// Whether the turn under way holds a write to `table` of `pg` (to its
/// `key`, if one is given).
pub(super) fn holds(pg: &Arc<Pg>, table: &str, key: Option<&[u8]>) -> bool {
    TURN.try_with(|turn| {
        turn.held.borrow().iter().any(|(to, op)| {
            Arc::ptr_eq(to, pg) && op.table() == table && key.is_none_or(|key| op.key() == key)
        })
    })
    .unwrap_or(false)
}

/// Takes the writes the turn under way holds (those to `pg`, or all) for
/// their databases' next commits, tagged with its owner; the owner, if a
/// turn is under way.
pub(super) fn release(pg: Option<&Arc<Pg>>) -> Option<Arc<Owner>> {
    TURN.try_with(|turn| {
        let held = std::mem::take(&mut *turn.held.borrow_mut());
        let (going, staying): (Vec<_>, Vec<_>) = held
            .into_iter()
            .partition(|(to, _)| pg.is_none_or(|pg| Arc::ptr_eq(to, pg)));
        *turn.held.borrow_mut() = staying;
        // Each database's writes taken together, in their order.
        let mut by_db: Vec<(Arc<Pg>, Vec<Op>)> = Vec::new();
        for (to, op) in going {
            match by_db.iter_mut().find(|(db, _)| Arc::ptr_eq(db, &to)) {
                Some((_, ops)) => ops.push(op),
                None => by_db.push((to, vec![op])),
            }
        }
        for (db, ops) in by_db {
            db.take_owned(ops, &turn.owner);
        }
        Arc::clone(&turn.owner)
    })
    .ok()
}

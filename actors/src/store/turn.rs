//! A computer's turns: the writes its actor makes while it handles one
//! message, committed together, and only while this node owns the computer.
//!
//! A node takes a computer ([`super::Store::own`]) before its actor loads
//! it: in PostgreSQL that raises the computer's fence number (table
//! `owners`), after every commit that holds the computer's row, so that the
//! new owner loads what the old one committed. The writes of a turn
//! ([`turn`]) are held until the turn flushes (or ends), then taken for the
//! next commit all together, tagged with the owner. A commit locks the rows
//! of the owners it carries (and renews their leases, see `Pg::own`) and
//! leaves out the writes of every owner whose fence is no longer the
//! computer's: another node took the computer since. That turn's flush fails
//! with [`StoreError::Fenced`], so a node that lost a computer (paused, cut
//! off from the database) commits nothing more for it and tells nobody that
//! it did.
//!
//! # Why no OTP is let in twice, and no hour rule broken, across nodes
//!
//! 1. Every rule about a computer (an OTP checked and marked used, a new OTP
//!    refused within the hour after the slot's last, a request decided) is
//!    applied by its actor, in one turn, to the state it holds; the answer
//!    leaves only once the turn's writes are committed.
//! 2. An actor's state is what it loaded right after its node took the
//!    computer, plus its own turns since, one at a time (its mailbox).
//! 3. Taking locks the computer's `owners` row `FOR UPDATE`, so it waits for
//!    every commit that holds the row, and raises the fence. A commit holds
//!    the row from its fence check to its end, in the transaction that
//!    writes. So every commit of the old fence either ended before the take
//!    (and the new holder loads it) or checks its fence after the take (and
//!    is left out whole). No take falls between a check and its writes.
//! 4. So the turns committed for a computer form one sequence in which each
//!    turn saw every turn committed before it: the turns of one hold in
//!    order, the first of a hold after all of the previous holds'.
//! 5. Two "allow"s of one OTP would be two committed turns that each saw it
//!    unused; by 4 the later one saw the earlier one mark it used.
//!    Likewise two new OTPs within the hour: the later saw the earlier's
//!    time in the slot. A reply lost with its node (the turn committed, the
//!    answer never sent) can only use an OTP up, never let it in again.
//!
//! Answers that change nothing (a prompt's status) are read from the
//! actor's state, which another node's taking makes it load again first
//! (see `super::postgres::notices`); they decide nothing.
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

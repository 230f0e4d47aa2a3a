//! The writes: taken at once into the pending list (a turn's when it
//! flushes or ends, tagged with its owner: see [`turn`]), committed together
//! in one transaction per flush (one statement per table and kind) less
//! those of owners whose computers another node took since, put back at the
//! head when a commit fails, and waited for by a read of what they wrote.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use super::super::record::{decode, encode};
use super::super::turn::{self, Owner};
use super::{LEASE, Pg, Result, StoreError, notices};
use crate::id::ComputerId;
use crate::rules::{Bucket, Failure};

/// How many times a commit makes and locks failure buckets that others
/// remove meanwhile before it gives up.
const COUNT_ROUNDS: usize = 3;
/// The outbox's table.
const OUTBOX: &str = "outbox";
/// A write taken, and the owner whose turn made it, if one did.
type Tagged = (Op, Option<Arc<Owner>>);

/// The writes taken and not yet committed.
#[derive(Default)]
pub(super) struct Pending {
    /// Waiting for the next commit, in order.
    ops: Vec<Tagged>,
    /// How many writes of each table are pending or being committed.
    tables: HashMap<&'static str, usize>,
    /// ... and of each key.
    keys: HashMap<(&'static str, Vec<u8>), usize>,
}

impl Pending {
    fn take(&mut self, op: Op, owner: Option<&Arc<Owner>>) {
        *self.tables.entry(op.table()).or_default() += 1;
        *self
            .keys
            .entry((op.table(), op.key().to_vec()))
            .or_default() += 1;
        self.ops.push((op, owner.cloned()));
    }

    /// Forgets `ops`, committed (or left out).
    fn settle(&mut self, ops: &[Tagged]) {
        for (op, _) in ops {
            if let Some(count) = self.tables.get_mut(op.table()) {
                *count -= 1;
            }
            let key = (op.table(), op.key().to_vec());
            if let Some(count) = self.keys.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.keys.remove(&key);
                }
            }
        }
    }
}

/// A write waiting for the next commit.
pub(in crate::store) enum Op {
    /// Insert or replace.
    Put {
        table: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Remove, if there.
    Remove { table: &'static str, key: Vec<u8> },
    /// Count a failure against a key of `table` (its bucket read and
    /// replaced under a row lock).
    Count {
        table: &'static str,
        key: Vec<u8>,
        failure: Failure,
    },
}

impl Op {
    pub(in crate::store) fn table(&self) -> &'static str {
        match self {
            Self::Put { table, .. } | Self::Remove { table, .. } | Self::Count { table, .. } => {
                table
            }
        }
    }

    pub(in crate::store) fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Remove { key, .. } | Self::Count { key, .. } => key,
        }
    }
}

/// What a commit does to one key: its last put or removal, if any (`Some(None)`
/// removes), then the failures counted after it.
#[derive(Default)]
struct Change<'a> {
    base: Option<Option<&'a [u8]>>,
    counts: Vec<Failure>,
}

/// What `ops` do, by table and key, both in order: the order in which every
/// node's commits lock rows, so that two never wait for each other.
fn changes<'a>(
    ops: impl IntoIterator<Item = &'a Op>,
) -> BTreeMap<&'static str, BTreeMap<&'a [u8], Change<'a>>> {
    let mut changes: BTreeMap<_, BTreeMap<_, Change<'_>>> = BTreeMap::new();
    for op in ops {
        let change = changes
            .entry(op.table())
            .or_default()
            .entry(op.key())
            .or_default();
        match op {
            Op::Put { value, .. } => {
                *change = Change {
                    base: Some(Some(value)),
                    counts: Vec::new(),
                }
            }
            Op::Remove { .. } => {
                *change = Change {
                    base: Some(None),
                    counts: Vec::new(),
                }
            }
            Op::Count { failure, .. } => change.counts.push(*failure),
        }
    }
    changes
}

impl Pg {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `op` for the next commit: held for the turn under way, if one
    /// is (see [`turn`]).
    pub(in crate::store) fn push(self: &Arc<Self>, op: Op) {
        if let Some(op) = turn::hold(self, op) {
            self.pending().take(op, None);
        }
    }

    /// Takes `ops` for the next commit, all of them in the same one.
    pub(in crate::store) fn push_all(&self, ops: impl IntoIterator<Item = Op>) {
        let mut pending = self.pending();
        for op in ops {
            pending.take(op, None);
        }
    }

    /// Takes `ops`, written in a turn of `owner`'s, for the next commit, all
    /// of them in the same one.
    pub(in crate::store) fn take_owned(&self, ops: Vec<Op>, owner: &Arc<Owner>) {
        let mut pending = self.pending();
        for op in ops {
            pending.take(op, Some(owner));
        }
    }

    /// Makes every write taken before this call durable (group commit), the
    /// turn's under way included; fails if a commit left that turn's writes
    /// out (see [`turn`]).
    pub(in crate::store) async fn flush(self: &Arc<Self>) -> Result<()> {
        let owner = turn::release(Some(self));
        self.group_commit().await?;
        match owner {
            Some(owner) if self.fenced().contains(&owner) => {
                Err(StoreError::Fenced(owner.computer.clone()))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn fenced(&self) -> std::sync::MutexGuard<'_, HashSet<Arc<Owner>>> {
        self.fenced.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether another node took `owner`'s computer since: a commit left
    /// out writes of `owner`'s, or another node said it took it.
    pub(in crate::store) fn fenced_out(&self, owner: &Owner) -> bool {
        self.fenced().contains(owner)
            || self
                .taken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&owner.computer)
                .is_some_and(|fence| *fence > owner.fence)
    }

    /// Commits every write taken before this call, with those of whoever
    /// else asks meanwhile.
    async fn group_commit(self: &Arc<Self>) -> Result<()> {
        self.flusher
            .flush(|| {
                // In a task of its own: a caller that stops waiting (a
                // request dropped) must not drop a commit halfway, with its
                // writes taken from the queue and not put back.
                let pg = Arc::clone(self);
                async move {
                    tokio::spawn(async move { pg.commit().await })
                        .await
                        .map_err(|_| StoreError::FlushAborted)?
                }
            })
            .await
    }

    /// Commits every pending write in one transaction, one commit at a time
    /// (one left running by a caller that stopped waiting included), so that
    /// commits land in the order their writes were taken.
    async fn commit(&self) -> Result<()> {
        let _alone = self.committing.lock().await;
        let ops = std::mem::take(&mut self.pending().ops);
        if ops.is_empty() {
            return Ok(());
        }
        let applied = self.apply(&ops).await;
        let mut pending = self.pending();
        match applied {
            Ok(left_out) => {
                pending.settle(&ops);
                drop(pending);
                self.fenced().extend(left_out);
                Ok(())
            }
            Err(err) => {
                let later = std::mem::replace(&mut pending.ops, ops);
                pending.ops.extend(later);
                Err(err)
            }
        }
    }

    /// Waits until this process's writes to `table` (to its `key`, if one is
    /// given) are committed, so that a read sees them, as a sled read does
    /// before its flush.
    pub(super) async fn settled(
        self: &Arc<Self>,
        table: &'static str,
        key: Option<&[u8]>,
    ) -> Result<()> {
        let unsettled = turn::holds(self, table, key) || {
            let pending = self.pending();
            match key {
                Some(key) => pending.keys.contains_key(&(table, key.to_vec())),
                None => pending.tables.get(table).is_some_and(|count| *count > 0),
            }
        };
        if unsettled {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Applies `ops` in one transaction: for each table, one statement for
    /// its removals, one for its puts, and three for its counts; those of
    /// owners whose computers another node took since left out. The owners
    /// left out.
    async fn apply(&self, ops: &[Tagged]) -> Result<Vec<Arc<Owner>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let began = Instant::now();
        let (left_out, renewed) = self.taken_since(&tx, ops, began).await?;
        let kept = ops.iter().filter_map(|(op, owner)| match owner {
            Some(owner) if left_out.contains(owner) => None,
            _ => Some(op),
        });
        for (table, changes) in changes(kept) {
            let (mut removed, mut put, mut values, mut counted) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (key, change) in &changes {
                match change.base {
                    Some(None) => removed.push(*key),
                    Some(Some(value)) => {
                        put.push(*key);
                        values.push(value);
                    }
                    None => {}
                }
                if !change.counts.is_empty() {
                    counted.push(*key);
                }
            }
            if !removed.is_empty() {
                let remove = tx
                    .prepare_cached(&format!("DELETE FROM {table} WHERE key = ANY($1)"))
                    .await?;
                tx.execute(&remove, &[&removed]).await?;
            }
            if !put.is_empty() {
                let upsert = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {table} (key, value)
                         SELECT * FROM unnest($1::bytea[], $2::bytea[])
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                    ))
                    .await?;
                tx.execute(&upsert, &[&put, &values]).await?;
            }
            if !counted.is_empty() {
                count(&tx, table, &counted, &changes).await?;
            }
            if table == OUTBOX && !put.is_empty() && !self.sends.load(Ordering::Relaxed) {
                // Mail queued here for the node that sends it.
                let tell = tx.prepare_cached("SELECT pg_notify($1, '')").await?;
                tx.execute(&tell, &[&notices::OUTBOX]).await?;
            }
        }
        tx.commit().await?;
        self.renewed()
            .extend(renewed.into_iter().map(|computer| (computer, began)));
        Ok(left_out)
    }
}

impl Pg {
    /// The owners of `ops` whose computers were taken with a newer fence
    /// since (or never), their rows locked against a new taking until `tx`
    /// ends; and the computers whose leases this node holds were renewed
    /// (see [`Pg::own`]), those more than half gone as this node last
    /// renewed them (or ever), so that most commits only lock the rows.
    async fn taken_since(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        ops: &[Tagged],
        now: Instant,
    ) -> Result<(Vec<Arc<Owner>>, Vec<ComputerId>)> {
        let mut owners: Vec<&Arc<Owner>> =
            ops.iter().filter_map(|(_, owner)| owner.as_ref()).collect();
        owners.sort_by(|a, b| (a.computer.as_str(), a.fence).cmp(&(b.computer.as_str(), b.fence)));
        owners.dedup();
        if owners.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let keys: Vec<&[u8]> = owners.iter().map(|owner| key_of(owner)).collect();
        let due: Vec<&Arc<Owner>> = {
            let renewed = self.renewed();
            owners
                .iter()
                .filter(|owner| {
                    renewed
                        .get(&owner.computer)
                        .is_none_or(|at| now.saturating_duration_since(*at) >= LEASE / 2)
                })
                .copied()
                .collect()
        };
        // Locked in key order, as every node's commits lock them.
        let rows = if due.is_empty() {
            let locked = tx
                .prepare_cached(
                    "SELECT key, fence FROM owners WHERE key = ANY($1) ORDER BY key FOR SHARE",
                )
                .await?;
            tx.query(&locked, &[&keys]).await?
        } else {
            let renewing = tx
                .prepare_cached(
                    "WITH locked AS (
                         SELECT key, fence, node FROM owners WHERE key = ANY($1)
                         ORDER BY key FOR UPDATE),
                     renewed AS (
                         UPDATE owners SET until = now() + $3 * interval '1 second'
                         FROM locked WHERE owners.key = locked.key AND locked.node = $2
                           AND locked.key = ANY($4))
                     SELECT key, fence FROM locked",
                )
                .await?;
            let due_keys: Vec<&[u8]> = due.iter().map(|owner| key_of(owner)).collect();
            let lease = LEASE.as_secs_f64();
            tx.query(&renewing, &[&keys, &self.node, &lease, &due_keys])
                .await?
        };
        let fences: HashMap<Vec<u8>, i64> = rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let held = |owner: &&Arc<Owner>| fences.get(key_of(owner)) == Some(&owner.fence);
        let renewed = due
            .iter()
            .filter(|owner| held(owner))
            .map(|owner| owner.computer.clone())
            .collect();
        let left_out = owners
            .into_iter()
            .filter(|owner| !held(owner))
            .cloned()
            .collect();
        Ok((left_out, renewed))
    }

    /// When this node last renewed (or took) each computer's lease.
    pub(super) fn renewed(&self) -> std::sync::MutexGuard<'_, HashMap<ComputerId, Instant>> {
        self.renewed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The key of `owner`'s computer in table `owners`.
fn key_of(owner: &Owner) -> &[u8] {
    owner.computer.as_str().as_bytes()
}

/// Counts the failures of `changes` against buckets `keys` of `table`, each
/// read and replaced under a row lock. A row lock needs a row: a missing
/// bucket is made first (waiting for another node's insert of it), so that
/// two nodes' counts are never both made from none.
async fn count(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &'static str,
    keys: &[&[u8]],
    changes: &BTreeMap<&[u8], Change<'_>>,
) -> Result<()> {
    let made = tx
        .prepare_cached(&format!(
            "INSERT INTO {table} (key, value) SELECT key, $2 FROM unnest($1::bytea[]) AS key
             ON CONFLICT (key) DO NOTHING"
        ))
        .await?;
    let locked = tx
        .prepare_cached(&format!(
            "SELECT key, value FROM {table} WHERE key = ANY($1) ORDER BY key FOR UPDATE"
        ))
        .await?;
    let none = encode(&Bucket::default())?;
    let mut buckets: BTreeMap<Vec<u8>, Bucket> = BTreeMap::new();
    let mut missing = keys.to_vec();
    // A bucket another node removed between this insert and this lock is
    // made again (then it is this transaction's own, and stays: a second
    // round is enough, a few more are not expected).
    for round in 0.. {
        if missing.is_empty() {
            break;
        }
        if round == COUNT_ROUNDS {
            return Err(StoreError::Unavailable(
                "failure buckets kept vanishing under this commit".into(),
            ));
        }
        tx.execute(&made, &[&missing, &none]).await?;
        for row in tx.query(&locked, &[&missing]).await? {
            let bucket = decode::<Bucket>(table, row.get(1)).unwrap_or_default();
            buckets.insert(row.get(0), bucket);
        }
        missing.retain(|key| !buckets.contains_key(*key));
    }
    let (mut counted, mut values) = (Vec::new(), Vec::new());
    for (key, mut bucket) in buckets {
        for failure in changes.get(key.as_slice()).map_or(&[][..], |c| &c.counts) {
            bucket = failure.counted(bucket);
        }
        values.push(encode(&bucket)?);
        counted.push(key);
    }
    let update = tx
        .prepare_cached(&format!(
            "UPDATE {table} SET value = counted.value
             FROM unnest($1::bytea[], $2::bytea[]) AS counted (key, value)
             WHERE {table}.key = counted.key"
        ))
        .await?;
    tx.execute(&update, &[&counted, &values]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_writes_each_key_as_its_last_write_left_it() {
        let failure = Failure {
            at: crate::Timestamp::from_unix_millis(1),
            limit: 5,
            window: std::time::Duration::from_secs(60),
        };
        let put = |key: &str, value: &str| Op::Put {
            table: "t",
            key: key.into(),
            value: value.into(),
        };
        let remove = |key: &str| Op::Remove {
            table: "t",
            key: key.into(),
        };
        let count = |key: &str| Op::Count {
            table: "t",
            key: key.into(),
            failure,
        };
        let ops = [
            put("a", "1"),
            remove("a"),
            put("b", "1"),
            put("b", "2"),
            count("c"),
            remove("c"),
            count("c"),
            count("d"),
            put("d", "3"),
            count("d"),
            count("d"),
        ];
        let changes = changes(&ops);
        let t = &changes["t"];
        let seen: Vec<_> = t
            .iter()
            .map(|(key, change)| (*key, change.base, change.counts.len()))
            .collect();
        assert_eq!(
            seen,
            [
                (&b"a"[..], Some(None), 0),
                (b"b", Some(Some(&b"2"[..])), 0),
                (b"c", Some(None), 1),
                (b"d", Some(Some(&b"3"[..])), 2),
            ]
        );
    }
}

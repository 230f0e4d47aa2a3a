//! One table of records of one type, each read in whichever schema it was
//! written in ([`Record`]) and written in the current one; in a sled tree or
//! in a PostgreSQL table of the same keys ([`super::postgres`]).
//!
//! In sled, every write holds the store's [`Gate`] shared, so that a
//! snapshot, which holds it alone, sees the database between two writes: a
//! state a crash could have left. In PostgreSQL a write waits for the next
//! commit.

use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::postgres::{Op, Pg};
use super::record::{Record, decode, encode};
use super::{BATCH, Batch, Records, Result};
use crate::rules::{Bucket, Failure};

/// Which way a table is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// In key order: creation order, for ids and zero-padded keys.
    Oldest,
    /// In reverse key order.
    Newest,
}

/// Held shared by every write of a sled store's tables, and alone by a
/// snapshot.
#[derive(Clone, Default)]
pub(super) struct Gate(Arc<RwLock<()>>);

impl Gate {
    fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds every write off until dropped.
    pub(super) fn alone(&self) -> RwLockWriteGuard<'_, ()> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where a table's records are.
#[derive(Clone)]
enum Tree {
    Sled { tree: sled::Tree, gate: Gate },
    Pg(Arc<Pg>),
}

/// One table of one kind of record.
#[derive(Clone)]
pub(super) struct Table {
    pub(super) name: &'static str,
    tree: Tree,
}

impl Table {
    /// Tree `name` of sled database `db`.
    pub(super) fn sled(db: &sled::Db, name: &'static str, gate: &Gate) -> Result<Self> {
        Ok(Self {
            name,
            tree: Tree::Sled {
                tree: db.open_tree(name)?,
                gate: gate.clone(),
            },
        })
    }

    /// Table `name` of database `pg`.
    pub(super) fn postgres(pg: &Arc<Pg>, name: &'static str) -> Self {
        Self {
            name,
            tree: Tree::Pg(Arc::clone(pg)),
        }
    }

    /// Its sled tree, when it is one.
    pub(super) fn sled_tree(&self) -> Option<&sled::Tree> {
        match &self.tree {
            Tree::Sled { tree, .. } => Some(tree),
            Tree::Pg(_) => None,
        }
    }

    pub(super) async fn get<T: Record>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        let bytes = match &self.tree {
            Tree::Sled { tree, .. } => tree.get(key)?.map(|bytes| bytes.to_vec()),
            Tree::Pg(pg) => pg.get(self.name, key.as_ref()).await?,
        };
        bytes.map(|bytes| decode(self.name, &bytes)).transpose()
    }

    /// The records at `keys`, in their order (one query in PostgreSQL).
    pub(super) async fn get_many<T: Record>(&self, keys: &[&[u8]]) -> Result<Vec<Option<T>>> {
        let found = match &self.tree {
            Tree::Sled { tree, .. } => keys
                .iter()
                .map(|key| Ok(tree.get(key)?.map(|bytes| bytes.to_vec())))
                .collect::<Result<Vec<_>>>()?,
            Tree::Pg(pg) => pg.get_many(self.name, keys).await?,
        };
        found
            .into_iter()
            .map(|bytes| bytes.map(|bytes| decode(self.name, &bytes)).transpose())
            .collect()
    }

    pub(super) fn put<T: Record>(&self, key: impl AsRef<[u8]>, record: &T) -> Result<()> {
        let value = encode(record)?;
        match &self.tree {
            Tree::Sled { tree, gate } => {
                let _writing = gate.writing();
                tree.insert(key.as_ref(), value)?;
            }
            Tree::Pg(pg) => pg.push(Op::Put {
                table: self.name,
                key: key.as_ref().to_vec(),
                value,
            }),
        }
        Ok(())
    }

    pub(super) fn remove(&self, key: impl AsRef<[u8]>) -> Result<()> {
        match &self.tree {
            Tree::Sled { tree, gate } => {
                let _writing = gate.writing();
                tree.remove(key)?;
            }
            Tree::Pg(pg) => pg.push(Op::Remove {
                table: self.name,
                key: key.as_ref().to_vec(),
            }),
        }
        Ok(())
    }

    /// Counts `failure` in the bucket at `key`, atomically.
    pub(super) fn count(&self, key: impl AsRef<[u8]>, failure: Failure) -> Result<()> {
        match &self.tree {
            Tree::Sled { tree, gate } => {
                let _writing = gate.writing();
                let mut failed = None;
                tree.update_and_fetch(key, |old| {
                    let bucket = old
                        .and_then(|bytes| decode::<Bucket>(self.name, bytes).ok())
                        .unwrap_or_default();
                    match encode(&failure.counted(bucket)) {
                        Ok(bytes) => Some(bytes),
                        Err(err) => {
                            failed = Some(err);
                            old.map(<[u8]>::to_vec)
                        }
                    }
                })?;
                failed.map_or(Ok(()), Err)
            }
            Tree::Pg(pg) => {
                pg.push(Op::Count {
                    table: self.name,
                    key: key.as_ref().to_vec(),
                    failure,
                });
                Ok(())
            }
        }
    }

    /// The records whose keys start with `prefix`, in key order.
    pub(super) async fn scan<T: Record>(&self, prefix: impl AsRef<[u8]>) -> Result<Batch<T>> {
        let pairs = match &self.tree {
            Tree::Sled { tree, .. } => tree
                .scan_prefix(prefix)
                .map(|pair| pair.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<sled::Result<Vec<_>>>()?,
            Tree::Pg(pg) => pg.scan(self.name, prefix.as_ref()).await?,
        };
        self.decoded(pairs)
    }

    pub(super) async fn values<T: Record>(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<T>> {
        Ok(self
            .scan(prefix)
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// At most `limit` records from `cursor` on (excluded) in `order`: after
    /// it in key order, or before it newest first.
    pub(super) async fn batch<T: Record + 'static>(
        &self,
        cursor: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Batch<T>> {
        match &self.tree {
            Tree::Sled { .. } => self.from(cursor, order).take(limit).collect(),
            Tree::Pg(pg) => {
                let pairs = pg.range(self.name, cursor, order, limit).await?;
                self.decoded(pairs)
            }
        }
    }

    /// At most `limit` pairs after `cursor` (excluded) in key order, as
    /// stored: what a copy moves.
    pub(super) async fn after(
        &self,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match &self.tree {
            Tree::Sled { tree, .. } => {
                let range = match cursor {
                    Some(after) => {
                        tree.range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded))
                    }
                    None => tree.iter(),
                };
                Ok(range
                    .take(limit)
                    .map(|pair| pair.map(|(key, value)| (key.to_vec(), value.to_vec())))
                    .collect::<sled::Result<_>>()?)
            }
            Tree::Pg(pg) => pg.range(self.name, cursor, Order::Oldest, limit).await,
        }
    }

    fn decoded<T: Record>(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Batch<T>> {
        pairs
            .into_iter()
            .map(|(key, value)| Ok((key, decode(self.name, &value)?)))
            .collect()
    }

    /// The records of a sled tree from `cursor` on (excluded) in `order`,
    /// one at a time (empty for a table of PostgreSQL: see [`Self::batch`]).
    pub(super) fn from<T: Record + 'static>(
        &self,
        cursor: Option<&[u8]>,
        order: Order,
    ) -> Records<'static, T> {
        let Tree::Sled { tree, .. } = &self.tree else {
            return Box::new(std::iter::empty());
        };
        let name = self.name;
        let range: sled::Iter = match (cursor, order) {
            (Some(after), Order::Oldest) => {
                tree.range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded))
            }
            (Some(before), Order::Newest) => tree.range::<&[u8], _>(..before),
            (None, _) => tree.iter(),
        };
        let decode_one = move |item: sled::Result<(sled::IVec, sled::IVec)>| {
            let (key, value) = item?;
            Ok((key.to_vec(), decode(name, &value)?))
        };
        match order {
            Order::Newest => Box::new(range.rev().map(decode_one)),
            Order::Oldest => Box::new(range.map(decode_one)),
        }
    }

    /// Removes every record for which `remove` says so, a batch at a time
    /// (letting other tasks run between batches); how many went.
    pub(super) async fn remove_where<T: Record + 'static>(
        &self,
        remove: impl Fn(&T) -> bool,
    ) -> Result<usize> {
        self.removing(remove, false).await
    }

    /// Removes records from the first on, in key order, while `remove` says
    /// so; how many went.
    pub(super) async fn remove_while<T: Record + 'static>(
        &self,
        remove: impl Fn(&T) -> bool,
    ) -> Result<usize> {
        self.removing(remove, true).await
    }

    async fn removing<T: Record + 'static>(
        &self,
        remove: impl Fn(&T) -> bool,
        stop_at_first_kept: bool,
    ) -> Result<usize> {
        let mut removed = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = self
                .batch::<T>(after.as_deref(), Order::Oldest, BATCH)
                .await?;
            let full = batch.len() >= BATCH;
            for (key, record) in batch {
                if remove(&record) {
                    self.remove(&key)?;
                    removed += 1;
                } else if stop_at_first_kept {
                    return Ok(removed);
                }
                after = Some(key);
            }
            if !full {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }
}

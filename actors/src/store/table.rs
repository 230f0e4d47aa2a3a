//! One sled tree of records of one type, each read in whichever schema it
//! was written in ([`Record`]) and written in the current one.
//!
//! Every write holds the store's [`Gate`] shared, so that a snapshot, which
//! holds it alone, sees the database between two writes: a state a crash
//! could have left.

use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::record::{Record, decode, encode};

/// Which way a table is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// In key order: creation order, for ids and zero-padded keys.
    Oldest,
    /// In reverse key order.
    Newest,
}
use super::{Batch, Records, Result};

/// Held shared by every write of a store's tables, and alone by a snapshot.
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

/// One sled tree of one kind of record.
#[derive(Clone)]
pub(super) struct Table {
    pub(super) name: &'static str,
    pub(super) tree: sled::Tree,
    gate: Gate,
}

impl Table {
    pub(super) fn open(db: &sled::Db, name: &'static str, gate: &Gate) -> Result<Self> {
        Ok(Self {
            name,
            tree: db.open_tree(name)?,
            gate: gate.clone(),
        })
    }

    pub(super) fn get<T: Record>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        self.tree
            .get(key)?
            .map(|bytes| decode(self.name, &bytes))
            .transpose()
    }

    pub(super) fn put<T: Record>(&self, key: impl AsRef<[u8]>, record: &T) -> Result<()> {
        let bytes = encode(record)?;
        let _writing = self.gate.writing();
        self.tree.insert(key.as_ref(), bytes)?;
        Ok(())
    }

    pub(super) fn remove(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let _writing = self.gate.writing();
        self.tree.remove(key)?;
        Ok(())
    }

    /// Replaces the value at `key` with `f` of it, atomically.
    pub(super) fn update(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<()> {
        let _writing = self.gate.writing();
        self.tree.update_and_fetch(key, f)?;
        Ok(())
    }

    pub(super) fn scan<T: Record>(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<(Vec<u8>, T)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|item| {
                let (key, value) = item?;
                Ok((key.to_vec(), decode(self.name, &value)?))
            })
            .collect()
    }

    /// The records from `cursor` on (excluded) in `order`: after it in key
    /// order, or before it newest first.
    pub(super) fn from<T: Record + 'static>(
        &self,
        cursor: Option<&[u8]>,
        order: Order,
    ) -> Records<'static, T> {
        let name = self.name;
        let range: sled::Iter = match (cursor, order) {
            (Some(after), Order::Oldest) => self
                .tree
                .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded)),
            (Some(before), Order::Newest) => self.tree.range::<&[u8], _>(..before),
            (None, _) => self.tree.iter(),
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

    /// At most `limit` records from `cursor` on (excluded) in `order`.
    pub(super) fn batch<T: Record + 'static>(
        &self,
        cursor: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Batch<T>> {
        self.from(cursor, order).take(limit).collect()
    }

    /// Removes every record for which `remove` says so; how many went.
    pub(super) fn remove_where<T: Record + 'static>(
        &self,
        remove: impl Fn(&T) -> bool,
    ) -> Result<usize> {
        let mut removed = 0;
        for item in self.from::<T>(None, Order::Oldest) {
            let (key, record) = item?;
            if remove(&record) {
                self.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub(super) fn values<T: Record>(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<T>> {
        Ok(self.scan(prefix)?.into_iter().map(|(_, v)| v).collect())
    }
}

//! Tables of bytes kept beside the store, for what the server keeps apart
//! from the actors' state (the terminal recordings; in PostgreSQL the
//! revoked certificates and the web sessions too): in a sled database of
//! their own, or in tables of the store's PostgreSQL database of the same
//! `(key, value)` shape ([`SIDE_TABLES`], [`REVOCATIONS`] and
//! [`WEB_SESSIONS`], made by the store's migrations).
//!
//! Reads and writes block: they are made on blocking threads, where the
//! work around them (deflating, hashing) runs too. A list of writes is made
//! atomically (one sled transaction; one PostgreSQL commit) and is durable
//! once [`SideDb::flush`] has returned. A read sees every write made before
//! it.

use std::collections::VecDeque;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use sled::Transactional;
use sled::transaction::TransactionError;

use super::copy::Ids;
use super::kv::{Engine, KvStore, open_sled};
use super::postgres::{Op, Pg};
use super::table::{Gate, Order, Table};
use super::{Result, StoreError};

/// The tables a side database may have in PostgreSQL (`002_recordings.sql`).
pub const SIDE_TABLES: [&str; 6] = [
    "recordings",
    "recording_chunks",
    "recording_keys",
    "recording_usage",
    "recording_refused",
    "recording_census",
];
/// The table of revoked certificates, in PostgreSQL (`004_revocations.sql`).
pub const REVOCATIONS: &str = "revocations";
/// The table of the web Management Tool's sessions, in PostgreSQL
/// (`006_sessions_tokens.sql`); not copied with a site, nor backed up.
pub const WEB_SESSIONS: &str = "web_sessions";

/// Pairs a PostgreSQL table's reader asks for at first, and at most.
const FIRST_PAGE: usize = 16;
const LARGEST_PAGE: usize = 256;

/// A side database.
#[derive(Clone)]
pub struct SideDb(Side);

#[derive(Clone)]
enum Side {
    /// A sled database of its own.
    Sled { db: sled::Db, ids: Ids },
    /// The store's PostgreSQL database.
    Pg(Arc<Pg>),
}

/// One table of a side database.
#[derive(Clone)]
pub struct SideTable {
    name: &'static str,
    place: Place,
}

#[derive(Clone)]
enum Place {
    Sled(sled::Tree),
    Pg(Arc<Pg>),
}

/// A write of [`SideDb::write`].
pub enum SideWrite<'a> {
    /// Puts `value` at `key` of the table.
    Put(&'a SideTable, &'a [u8], &'a [u8]),
    /// Removes `key` of the table, if there.
    Remove(&'a SideTable, &'a [u8]),
}

impl SideWrite<'_> {
    fn table(&self) -> &SideTable {
        match self {
            Self::Put(table, ..) | Self::Remove(table, _) => table,
        }
    }
}

/// Pairs read in order, a page at a time.
pub type Pairs = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send>;

impl KvStore {
    /// The side database in this store's PostgreSQL database, if it is in
    /// one (a sled store's side databases are folders of their own).
    pub fn side(&self) -> Option<SideDb> {
        match &self.engine {
            Engine::Pg { pg, .. } => Some(SideDb(Side::Pg(Arc::clone(pg)))),
            Engine::Sled { .. } => None,
        }
    }
}

impl SideDb {
    /// Opens (or creates) the sled database in folder `path`. Fails if
    /// another process holds it open.
    pub fn open(path: &Path) -> Result<Self> {
        let db = open_sled(&sled::Config::new().path(path))?;
        Ok(Self(Side::Sled {
            ids: Ids::open(&db)?,
            db,
        }))
    }

    /// Its sled database, if it is one.
    pub fn sled(&self) -> Option<&sled::Db> {
        match &self.0 {
            Side::Sled { db, .. } => Some(db),
            Side::Pg(_) => None,
        }
    }

    /// Table `name`: in PostgreSQL, one of [`SIDE_TABLES`], [`REVOCATIONS`]
    /// or [`WEB_SESSIONS`].
    pub fn table(&self, name: &'static str) -> Result<SideTable> {
        let place = match &self.0 {
            Side::Sled { db, .. } => Place::Sled(db.open_tree(name)?),
            Side::Pg(_)
                if !SIDE_TABLES.contains(&name) && ![REVOCATIONS, WEB_SESSIONS].contains(&name) =>
            {
                return Err(StoreError::Config(format!("no side table {name}")));
            }
            Side::Pg(pg) => Place::Pg(Arc::clone(pg)),
        };
        Ok(SideTable { name, place })
    }

    /// A new id, unique across the life of the database (in PostgreSQL,
    /// across the store's ids too).
    pub fn next_id(&self) -> Result<u64> {
        match &self.0 {
            Side::Sled { ids, .. } => ids.next(),
            Side::Pg(pg) => wait(pg.next_id()),
        }
    }

    /// Makes `writes` together: all of them, or (an error) none.
    pub fn write(&self, writes: &[SideWrite<'_>]) -> Result<()> {
        match &self.0 {
            Side::Sled { .. } => {
                let mut trees: Vec<&sled::Tree> = Vec::new();
                let mut names: Vec<&str> = Vec::new();
                for write in writes {
                    let table = write.table();
                    if !names.contains(&table.name) {
                        names.push(table.name);
                        trees.push(table.sled_tree()?);
                    }
                }
                let index = |table: &SideTable| {
                    names
                        .iter()
                        .position(|name| *name == table.name)
                        .expect("every table written is listed")
                };
                trees
                    .as_slice()
                    .transaction(|trees| {
                        for write in writes {
                            let tree = &trees[index(write.table())];
                            match write {
                                SideWrite::Put(_, key, value) => {
                                    tree.insert(*key, *value)?;
                                }
                                SideWrite::Remove(_, key) => {
                                    tree.remove(*key)?;
                                }
                            }
                        }
                        Ok(())
                    })
                    .map_err(|err: TransactionError<()>| match err {
                        TransactionError::Storage(err) => StoreError::Database(err),
                        TransactionError::Abort(()) => {
                            unreachable!("the transaction never aborts")
                        }
                    })
            }
            Side::Pg(pg) => {
                pg.push_all(writes.iter().map(|write| match write {
                    SideWrite::Put(table, key, value) => Op::Put {
                        table: table.name,
                        key: key.to_vec(),
                        value: value.to_vec(),
                    },
                    SideWrite::Remove(table, key) => Op::Remove {
                        table: table.name,
                        key: key.to_vec(),
                    },
                }));
                Ok(())
            }
        }
    }

    /// This node's turn at `what`, once no other node over the database
    /// has it: held until dropped.
    pub async fn alone(&self, what: super::Alone) -> Result<super::Exclusive> {
        match &self.0 {
            Side::Sled { .. } => Ok(super::Exclusive::only_node()),
            Side::Pg(pg) => pg.exclusive(what).await,
        }
    }

    /// [`Self::flush`], blocking.
    pub fn flush_blocking(&self) -> Result<()> {
        match &self.0 {
            Side::Sled { db, .. } => {
                db.flush()?;
                Ok(())
            }
            Side::Pg(pg) => wait(pg.flush()),
        }
    }

    /// Makes every write made so far durable.
    pub async fn flush(&self) -> Result<()> {
        match &self.0 {
            Side::Sled { db, .. } => {
                db.flush_async().await?;
                Ok(())
            }
            Side::Pg(pg) => pg.flush().await,
        }
    }

    /// Its tables named `names`, as the store's tables (for a copy).
    pub(super) fn tables(&self, names: &[&'static str]) -> Result<Vec<Table>> {
        match &self.0 {
            Side::Sled { db, .. } => {
                let gate = Gate::default();
                names
                    .iter()
                    .map(|name| Table::sled(db, name, &gate))
                    .collect()
            }
            Side::Pg(pg) => Ok(names.iter().map(|name| Table::postgres(pg, name)).collect()),
        }
    }
}

impl SideTable {
    fn sled_tree(&self) -> Result<&sled::Tree> {
        match &self.place {
            Place::Sled(tree) => Ok(tree),
            Place::Pg(_) => Err(StoreError::Config(format!("{} is not in sled", self.name))),
        }
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &self.place {
            Place::Sled(tree) => Ok(tree.get(key)?.map(|value| value.to_vec())),
            Place::Pg(pg) => wait(pg.get(self.name, key)),
        }
    }

    /// Whether it holds no pair.
    pub fn is_empty(&self) -> Result<bool> {
        match &self.place {
            Place::Sled(tree) => Ok(tree.is_empty()),
            Place::Pg(pg) => {
                let everything = (Bound::Unbounded, Bound::Unbounded);
                Ok(wait(pg.between(self.name, everything, Order::Oldest, 1))?.is_empty())
            }
        }
    }

    /// The pairs whose keys are within `bounds`, in `order`.
    pub fn range(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>), order: Order) -> Pairs {
        let owned = |bound: Bound<&[u8]>| bound.map(<[u8]>::to_vec);
        let (from, to) = (owned(bounds.0), owned(bounds.1));
        match &self.place {
            Place::Sled(tree) => {
                let range = tree.range::<Vec<u8>, _>((from, to));
                let pair = |pair: sled::Result<(sled::IVec, sled::IVec)>| {
                    let (key, value) = pair?;
                    Ok((key.to_vec(), value.to_vec()))
                };
                match order {
                    Order::Oldest => Box::new(range.map(pair)),
                    Order::Newest => Box::new(range.rev().map(pair)),
                }
            }
            Place::Pg(pg) => Box::new(Paged {
                pg: Arc::clone(pg),
                table: self.name,
                from,
                to,
                order,
                page: FIRST_PAGE,
                read: VecDeque::new(),
                done: false,
            }),
        }
    }
}

/// A PostgreSQL table's pairs within bounds, read a page at a time (pages
/// growing: a reader that stops early asks for few).
struct Paged {
    pg: Arc<Pg>,
    table: &'static str,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    order: Order,
    page: usize,
    read: VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl Iterator for Paged {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.read.is_empty() && !self.done {
            let bounds = (
                self.from.as_ref().map(Vec::as_slice),
                self.to.as_ref().map(Vec::as_slice),
            );
            let pairs = match wait(self.pg.between(self.table, bounds, self.order, self.page)) {
                Ok(pairs) => pairs,
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            };
            self.done = pairs.len() < self.page;
            self.page = (self.page * 2).min(LARGEST_PAGE);
            if let Some((last, _)) = pairs.last() {
                let past = Bound::Excluded(last.clone());
                match self.order {
                    Order::Oldest => self.from = past,
                    Order::Newest => self.to = past,
                }
            }
            self.read.extend(pairs);
        }
        self.read.pop_front().map(Ok)
    }
}

/// Waits for `work` on the runtime, from a blocking thread.
fn wait<T>(work: impl Future<Output = T>) -> T {
    tokio::runtime::Handle::current().block_on(work)
}

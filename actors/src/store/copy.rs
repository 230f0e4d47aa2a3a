//! A sled database copied out whole and loaded into a new folder: what a
//! backup holds of each of the server's databases ([`crate::KvStore`] and
//! the recordings'), and the ids that must keep growing across the copy.
//!
//! sled's id counter lives outside its trees, so a copy would start it again
//! at zero and hand out ids its records already hold. Each database keeps an
//! id floor in tree [`IDS`], set by [`Loader::finish`]: a copy's ids are its
//! own counter plus the floor, above every id the original had handed out.

use std::path::Path;

use super::kv::{Engine, KvStore};
use super::{Result, StoreError};

/// The tree holding a database's id floor.
pub const IDS: &str = "id_floor";
const FLOOR: &[u8] = b"floor";
/// sled's default tree, which otpgate never writes.
const DEFAULT_TREE: &[u8] = b"__sled__default";

/// Where a database's ids come from: sled's counter, raised by the floor a
/// restore left.
#[derive(Clone)]
pub struct Ids {
    db: sled::Db,
    floor: u64,
}

impl Ids {
    /// The ids of `db`.
    pub fn open(db: &sled::Db) -> Result<Self> {
        let floor = match db.open_tree(IDS)?.get(FLOOR)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::BadKey { tree: IDS })?,
            ),
            None => 0,
        };
        Ok(Self {
            db: db.clone(),
            floor,
        })
    }

    /// A new id, unique across the life of the database and of every copy
    /// it was loaded from.
    pub fn next(&self) -> Result<u64> {
        Ok(self.floor + self.db.generate_id()?)
    }
}

/// The trees of `db` a copy holds: all but sled's default one and the id
/// floor (a copy has a floor of its own).
/// In name order.
pub fn trees(db: &sled::Db) -> Result<Vec<sled::Tree>> {
    let mut names = db.tree_names();
    names.sort();
    names
        .into_iter()
        .filter(|name| name.as_ref() != DEFAULT_TREE && name.as_ref() != IDS.as_bytes())
        .map(|name| Ok(db.open_tree(name)?))
        .collect()
}

/// A database being loaded from a copy into a folder of its own.
pub struct Loader {
    db: sled::Db,
    tree: Option<sled::Tree>,
}

impl Loader {
    /// Creates the database in folder `path`, which must not hold one.
    pub fn create(path: &Path) -> Result<Self> {
        let db = sled::Config::new().path(path).create_new(true).open()?;
        Ok(Self { db, tree: None })
    }

    /// Starts tree `name`: the pairs put next go there.
    pub fn tree(&mut self, name: &[u8]) -> Result<()> {
        self.tree = Some(self.db.open_tree(name)?);
        Ok(())
    }

    /// Puts a pair into the tree started last.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let tree = self
            .tree
            .as_ref()
            .ok_or(StoreError::BadKey { tree: "(no tree)" })?;
        tree.insert(key, value)?;
        Ok(())
    }

    /// Sets the id floor to `next_id` (above every id the original handed
    /// out) and makes the copy durable.
    pub fn finish(self, next_id: u64) -> Result<()> {
        self.db
            .open_tree(IDS)?
            .insert(FLOOR, &next_id.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}

/// A copy of every tree of a sled store, taken by [`KvStore::snapshot`].
pub struct Snapshot {
    /// Each tree's name and its pairs, in key order.
    pub trees: Vec<(sled::IVec, Vec<(sled::IVec, sled::IVec)>)>,
    /// An id above every id the database had handed out.
    pub next_id: u64,
}

impl KvStore {
    /// Every record, as the database holds them between two writes (each
    /// write waits meanwhile: a copy in memory, then the writes go on), and an
    /// id above every id handed out so far: what a backup holds. Only of a
    /// sled store (a PostgreSQL database is backed up with its own tools).
    pub fn snapshot(&self) -> Result<Option<Snapshot>> {
        let Engine::Sled { db, ids, gate, .. } = &self.engine else {
            return Ok(None);
        };
        let _alone = gate.alone();
        let next_id = ids.next()?;
        let trees = trees(db)?
            .into_iter()
            .map(|tree| {
                let pairs = tree.iter().collect::<sled::Result<Vec<_>>>()?;
                Ok((tree.name(), pairs))
            })
            .collect::<Result<_>>()?;
        Ok(Some(Snapshot { trees, next_id }))
    }
}

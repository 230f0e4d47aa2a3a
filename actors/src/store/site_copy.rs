//! `otpgate admin store copy`: a site's sled store copied into an empty
//! PostgreSQL database in one transaction, then read back from both and
//! compared table by table (records and a SHA-256 of them in key order).

use aws_lc_rs::digest;

use super::kv::{Engine, KvStore};
use super::side::{SIDE_TABLES, SideDb};
use super::table::Table;
use super::{Result, Store, StoreError};

/// Pairs read and written at a time.
const COPY_BATCH: usize = 1024;

/// One table as copied: how many records, and the SHA-256 of every key and
/// value in key order (each preceded by its length), the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    pub records: u64,
    pub sha256: [u8; 32],
}

impl KvStore {
    /// Copies every table of this store, and of its side database `side`
    /// (the recordings') when there is one, into `target`, a PostgreSQL
    /// store with no record yet (held with [`KvStore::connect_holding`] alone, so
    /// that no server starts on it meanwhile), ids included (the target's go
    /// on above both); then checks that both hold the same. Nothing is
    /// written to the target unless all of it is.
    pub async fn copy_into(&self, target: &KvStore, side: Option<&SideDb>) -> Result<Vec<Copied>> {
        let (Engine::Pg { pg, .. }, Some(target_side)) = (&target.engine, target.side()) else {
            return Err(StoreError::Config(
                "a store is copied into PostgreSQL".into(),
            ));
        };
        let mut from = self.tables().to_vec();
        let mut to = target.tables().to_vec();
        let mut next_id = self.next_id().await?;
        to.extend(target_side.tables(&SIDE_TABLES)?);
        if let Some(side) = side {
            from.extend(side.tables(&SIDE_TABLES)?);
            next_id = next_id.max(side.next_id()?);
        }
        for table in &to {
            if !table.after(None, 1).await?.is_empty() {
                return Err(StoreError::Config(format!(
                    "the target database is not empty (table {} has records): \
                     copy into a new database",
                    table.name
                )));
            }
        }
        pg.load(&from, next_id, COPY_BATCH).await?;
        let mut copied = Vec::new();
        for to in &to {
            let here = match from.iter().find(|from| from.name == to.name) {
                Some(from) => summary(from).await?,
                None => Copied {
                    table: to.name,
                    records: 0,
                    sha256: empty_sha256(),
                },
            };
            let there = summary(to).await?;
            if here != there {
                return Err(StoreError::Config(format!(
                    "table {} differs after the copy ({} records here, {} there): \
                     the target is not to be used",
                    to.name, here.records, there.records
                )));
            }
            copied.push(here);
        }
        Ok(copied)
    }
}

/// The SHA-256 of a table with no record.
fn empty_sha256() -> [u8; 32] {
    let mut sha256 = [0; 32];
    sha256.copy_from_slice(digest::digest(&digest::SHA256, &[]).as_ref());
    sha256
}

/// `table`'s records counted and hashed, a batch at a time.
async fn summary(table: &Table) -> Result<Copied> {
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut records = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch = table.after(after.as_deref(), COPY_BATCH).await?;
        for (key, value) in &batch {
            for part in [key, value] {
                hash.update(&(part.len() as u64).to_be_bytes());
                hash.update(part);
            }
        }
        records += batch.len() as u64;
        if batch.len() < COPY_BATCH {
            break;
        }
        after = batch.last().map(|(key, _)| key.clone());
    }
    let mut sha256 = [0; 32];
    sha256.copy_from_slice(hash.finish().as_ref());
    Ok(Copied {
        table: table.name,
        records,
        sha256,
    })
}

//! `otpgate admin store copy`: a site's sled store copied into an empty
//! PostgreSQL database in one transaction, then read back from both and
//! compared table by table (records and a SHA-256 of them in key order).

use aws_lc_rs::digest;

use super::kv::{Engine, KvStore};
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
    /// Copies every table of this store into `target`, a PostgreSQL store
    /// with no record yet (held with [`KvStore::connect_alone`], so that no
    /// server starts on it meanwhile), ids included (the target's go on above this
    /// one's); then checks that both hold the same. Nothing is written to the
    /// target unless all of it is.
    pub async fn copy_into(&self, target: &KvStore) -> Result<Vec<Copied>> {
        let Engine::Pg { pg, .. } = &target.engine else {
            return Err(StoreError::Config(
                "a store is copied into PostgreSQL".into(),
            ));
        };
        for table in target.tables() {
            if !table.after(None, 1).await?.is_empty() {
                return Err(StoreError::Config(format!(
                    "the target database is not empty (table {} has records): \
                     copy into a new database",
                    table.name
                )));
            }
        }
        let next_id = self.next_id().await?;
        pg.load(&self.tables(), next_id, COPY_BATCH).await?;
        let mut copied = Vec::new();
        for (from, to) in self.tables().iter().zip(target.tables()) {
            let (here, there) = (summary(from).await?, summary(&to).await?);
            if here != there {
                return Err(StoreError::Config(format!(
                    "table {} differs after the copy ({} records here, {} there): \
                     the target is not to be used",
                    from.name, here.records, there.records
                )));
            }
            copied.push(here);
        }
        Ok(copied)
    }
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

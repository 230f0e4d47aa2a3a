//! Persistence: the [`Store`] trait the actors keep their state in, and its sled
//! implementation, [`SledStore`].
//!
//! Records are bincode behind a one-byte schema version, so a later release can
//! tell an old record from a new one and migrate it.
//!
//! ```text
//! +-------------------+------------------------+
//! | schema version u8 | bincode-encoded record |
//! +-------------------+------------------------+
//! ```
//!
//! Writes are not durable until [`Store::flush`] returns; sled also flushes by
//! itself every [`FLUSH_EVERY_MS`] milliseconds.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::ComputerId;

/// How often sled writes its buffers to disk without being asked.
pub const FLUSH_EVERY_MS: u64 = 500;

/// The schema version written in front of every record.
const SCHEMA_V1: u8 = 1;

/// What the server remembers of one client computer between connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerRecord {
    /// When this computer's agent first connected.
    pub first_seen: Timestamp,
    /// When the current run of connections began; `None` while no agent is connected.
    pub connected_since: Option<Timestamp>,
    /// When the agent was last heard from.
    pub last_seen: Timestamp,
    /// The host name the agent reported, for the operator's eyes.
    pub host_name: String,
    /// The agent's software version, for the operator's eyes.
    pub agent_version: String,
}

/// Why the store could not read or write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database error")]
    Database(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record in {tree}")]
    Corrupt {
        /// The tree the record is in.
        tree: &'static str,
        /// What the decoder said.
        #[source]
        source: bincode::error::DecodeError,
    },
    /// A stored record has a schema version this build does not know.
    #[error("record in {tree} has unknown schema version {version}")]
    UnknownSchema {
        /// The tree the record is in.
        tree: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// A record could not be encoded.
    #[error("record could not be encoded")]
    Encode(#[from] bincode::error::EncodeError),
}

/// A future returned by the store, boxed so that `Store` can be a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where the actors keep their state. Writes become durable once [`Store::flush`]
/// has returned.
pub trait Store: Send + Sync + 'static {
    /// The record of computer `id`, if it was ever seen.
    fn computer(&self, id: &ComputerId) -> Result<Option<ComputerRecord>, StoreError>;

    /// Replaces the record of computer `id`.
    fn put_computer(&self, id: &ComputerId, record: &ComputerRecord) -> Result<(), StoreError>;

    /// Makes every write made so far durable. Concurrent callers share one flush.
    fn flush(&self) -> StoreFuture<'_, ()>;
}

/// The embedded store: one sled database in the data folder.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    computers: sled::Tree,
}

impl SledStore {
    /// Opens (or creates) the database in folder `path`. Fails if another process
    /// holds it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()?;
        let computers = db.open_tree("computers")?;
        Ok(Self { db, computers })
    }
}

impl Store for SledStore {
    fn computer(&self, id: &ComputerId) -> Result<Option<ComputerRecord>, StoreError> {
        self.computers
            .get(id.as_str())?
            .map(|bytes| decode("computers", &bytes))
            .transpose()
    }

    fn put_computer(&self, id: &ComputerId, record: &ComputerRecord) -> Result<(), StoreError> {
        self.computers.insert(id.as_str(), encode(record)?)?;
        Ok(())
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.db.flush_async().await?;
            Ok(())
        })
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![SCHEMA_V1];
    bincode::serde::encode_into_std_write(record, &mut bytes, config())?;
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&SCHEMA_V1, body)) => bincode::serde::decode_from_slice(body, config())
            .map(|(record, _)| record)
            .map_err(|source| StoreError::Corrupt { tree, source }),
        Some((&version, _)) => Err(StoreError::UnknownSchema { tree, version }),
        None => Err(StoreError::UnknownSchema { tree, version: 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ComputerRecord {
        ComputerRecord {
            first_seen: Timestamp::from_unix_millis(1),
            connected_since: Some(Timestamp::from_unix_millis(2)),
            last_seen: Timestamp::from_unix_millis(3),
            host_name: "ws-1".into(),
            agent_version: "0.1.0".into(),
        }
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id: ComputerId = "ws-1".parse().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.computer(&id).unwrap(), None);
            store.put_computer(&id, &record()).unwrap();
            store.flush().await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.computer(&id).unwrap(), Some(record()));
    }

    #[test]
    fn unknown_schema_versions_are_refused() {
        let mut bytes = encode(&record()).unwrap();
        bytes[0] = 99;
        assert!(matches!(
            decode::<ComputerRecord>("computers", &bytes),
            Err(StoreError::UnknownSchema { version: 99, .. })
        ));
        assert!(matches!(
            decode::<ComputerRecord>("computers", &bytes[..1]),
            Err(StoreError::UnknownSchema { .. })
        ));
        bytes[0] = SCHEMA_V1;
        assert!(matches!(
            decode::<ComputerRecord>("computers", &bytes[..3]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

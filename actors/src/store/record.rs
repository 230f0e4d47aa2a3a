//! How a record is stored: a one-byte schema version, then bincode; and the
//! [`Record`] hook through which each stored type says which version it writes
//! and reads the bodies of its earlier ones (upgraded on read, written back in
//! the current version by the next write).
//!
//! ```text
//! +-------------------+------------------------+
//! | schema version u8 | bincode-encoded record |
//! +-------------------+------------------------+
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Result, StoreError};

/// The first schema version of every record.
pub const SCHEMA_V1: u8 = 1;

/// A type the store keeps in a table.
pub trait Record: Serialize + DeserializeOwned {
    /// The schema version this build writes.
    const VERSION: u8 = SCHEMA_V1;

    /// The record that `body`, of an earlier schema, holds, upgraded; an
    /// error for a version this build does not read.
    fn upgrade(body: Body<'_>) -> Result<Self> {
        Err(body.unknown())
    }
}

/// The body of a stored record, behind its schema version.
pub struct Body<'a> {
    /// The tree it is in.
    pub tree: &'static str,
    /// Its schema version.
    pub version: u8,
    bytes: &'a [u8],
}

impl Body<'_> {
    /// The body read as a `T` (the shape of its version).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        bincode::serde::decode_from_slice(self.bytes, config())
            .map(|(record, _)| record)
            .map_err(|source| StoreError::Corrupt {
                tree: self.tree,
                source,
            })
    }

    /// The error for a schema version this build does not read.
    pub fn unknown(&self) -> StoreError {
        StoreError::UnknownSchema {
            tree: self.tree,
            version: self.version,
        }
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// `record` as stored, in its current schema: how the tables, the server's
/// other databases (recordings) keep theirs.
pub fn encode<T: Record>(record: &T) -> Result<Vec<u8>> {
    encode_as(T::VERSION, record)
}

/// A record of `tree` as [`encode`] stored it, in whichever schema it reads.
pub fn decode<T: Record>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    let body = split(tree, bytes)?;
    if body.version == T::VERSION {
        body.decode()
    } else {
        T::upgrade(body)
    }
}

/// `record` as stored in schema `version` (tests write earlier schemas with it).
pub fn encode_as<T: Serialize>(version: u8, record: &T) -> Result<Vec<u8>> {
    let mut bytes = vec![version];
    bincode::serde::encode_into_std_write(record, &mut bytes, config())?;
    Ok(bytes)
}

/// A record's schema version and its body.
fn split<'a>(tree: &'static str, bytes: &'a [u8]) -> Result<Body<'a>> {
    match bytes.split_first() {
        Some((&version, bytes)) => Ok(Body {
            tree,
            version,
            bytes,
        }),
        None => Err(StoreError::UnknownSchema { tree, version: 0 }),
    }
}

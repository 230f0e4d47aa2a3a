//! The client programs' own files (the agent's spool, the recorder's handover
//! to its deliverer): each record bincode behind a one-byte schema version, so
//! that a later release reads what an earlier one left on the computer. The
//! same layout as the server's store (`otpgate_actors::store::record`), kept
//! here so that the client side does not depend on the server's domain.
//!
//! ```text
//! +-------------------+------------------------+
//! | schema version u8 | bincode-encoded record |
//! +-------------------+------------------------+
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The schema version these records are written in.
const SCHEMA_V1: u8 = 1;

/// Why a record could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// It could not be encoded.
    #[error("cannot encode a record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// Its body does not decode.
    #[error("corrupt {what}: {source}")]
    Corrupt {
        /// What the record is.
        what: &'static str,
        /// What the decoder said.
        #[source]
        source: bincode::error::DecodeError,
    },
    /// It was written in a schema this build does not read.
    #[error("{what} in unknown schema version {version}")]
    UnknownSchema {
        /// What the record is.
        what: &'static str,
        /// The version byte found (0 for an empty record).
        version: u8,
    },
}

/// `record` as a file keeps it.
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, RecordError> {
    let mut bytes = vec![SCHEMA_V1];
    bincode::serde::encode_into_std_write(record, &mut bytes, bincode::config::standard())?;
    Ok(bytes)
}

/// The `what` that `bytes` hold.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, RecordError> {
    match bytes.split_first() {
        Some((&SCHEMA_V1, body)) => {
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map(|(record, _)| record)
                .map_err(|source| RecordError::Corrupt { what, source })
        }
        Some((&version, _)) => Err(RecordError::UnknownSchema { what, version }),
        None => Err(RecordError::UnknownSchema { what, version: 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_other_schemas_are_refused() {
        let bytes = encode(&("alice", Some(4u64))).unwrap();
        assert_eq!(bytes[0], SCHEMA_V1);
        let read: (String, Option<u64>) = decode("test", &bytes).unwrap();
        assert_eq!(read, ("alice".to_owned(), Some(4)));
        let mut later = bytes.clone();
        later[0] = 2;
        assert!(matches!(
            decode::<(String, Option<u64>)>("test", &later),
            Err(RecordError::UnknownSchema { version: 2, .. })
        ));
        assert!(decode::<(String, Option<u64>)>("test", &[]).is_err());
    }
}

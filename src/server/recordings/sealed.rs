//! What keeps recordings honest.
//!
//! - Each recording's chunks form a hash chain (`head = SHA-256(head ‖ seq ‖
//!   SHA-256(events))`), and its summary (every field a reader relies on: who,
//!   where, the command, size, terminal, input flag, times, counts, the
//!   chain's head) is sealed with a key derived from the server's secret: a
//!   chunk altered, removed or added, or a summary rewritten, is found.
//! - The census, sealed too, counts the recordings stored and ever made and
//!   folds their seals together (XOR): a recording removed whole, or rolled
//!   back to an earlier sealed state, no longer matches it. It is written in
//!   the same transaction as every chunk.
//! - The anchor file (`made`, in the recordings folder, beside sled's own
//!   files when the recordings are in sled) says how many recordings were
//!   ever made, written once they are durable: a database that lost
//!   recordings (a damaged log that sled cuts short when it opens, a
//!   PostgreSQL put back from an earlier copy) is found at the next start,
//!   and stays reported. Moving the folder aside to start a new database
//!   moves it too.
//!
//! Not found: the whole database put back from an earlier copy together with
//! an anchor file of the same time.

use std::ops::Bound;
use std::path::Path;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use otpgate_actors::digest::sha256;
use serde::{Deserialize, Serialize};

use otpgate_actors::StoreError;
use otpgate_actors::otp::OtpKeys;
use otpgate_actors::store::record::{Body, SCHEMA_V1};
use otpgate_actors::store::{self, Record, SideWrite};
use otpgate_protocol::record::{RecordingEnd, RecordingKey, RecordingStart};

use super::{Recording, Recordings, inflate, seq_of};

/// The tree with the census, under [`CENSUS_KEY`].
pub(super) const CENSUS: &str = "recording_census";
pub(super) const CENSUS_KEY: &[u8] = b"census";

/// Why a stored recording, or the recordings as a whole, fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tampered {
    /// Its summary is not sealed by this server.
    #[error("its summary is not sealed by this server")]
    Seal,
    /// A chunk is missing.
    #[error("chunk {0} is missing")]
    Missing(u64),
    /// A chunk cannot be read.
    #[error("chunk {0} cannot be read")]
    Unreadable(u64),
    /// More chunks than the summary counts.
    #[error("it holds chunks the summary does not count")]
    Extra,
    /// The chunks do not hash to the sealed head.
    #[error("its chunks do not match their hash chain")]
    Chain,
    /// The census is missing or not sealed by this server.
    #[error("the census of recordings is missing or not sealed by this server")]
    CensusSeal,
    /// What is stored does not match the census.
    #[error(
        "the census counts {counted} recordings where {stored} are stored, or other \
         versions of them: recordings were removed, added or rolled back behind the \
         server's back"
    )]
    Census {
        /// Recordings the census counts.
        counted: u64,
        /// Recordings stored.
        stored: u64,
    },
    /// Recordings this server made are gone from the database.
    #[error("{0} recordings this server made are gone from the database (found at a start)")]
    Lost(u64),
}

/// The next head of the chain after `head`, for chunk `seq` holding `events`.
pub(super) fn chain(head: &[u8; 32], seq: u64, events: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(72);
    input.extend_from_slice(head);
    input.extend_from_slice(&seq.to_be_bytes());
    input.extend_from_slice(&sha256(events));
    sha256(&input)
}

/// `text`'s length, then its bytes.
fn put_text(body: &mut Vec<u8>, text: &str) {
    body.extend_from_slice(&(text.len() as u64).to_be_bytes());
    body.extend_from_slice(text.as_bytes());
}

impl Recording {
    /// What the seal covers.
    pub(super) fn summary(&self) -> Vec<u8> {
        if self.summary_v1 {
            return self.summary_v1();
        }
        let mut body = Vec::with_capacity(192);
        body.extend_from_slice(b"otpgate recording 2\0");
        body.extend_from_slice(&self.id.to_be_bytes());
        body.extend_from_slice(&self.key);
        put_text(&mut body, &self.computer);
        put_text(&mut body, &self.os_user);
        body.extend_from_slice(&self.session.unwrap_or(u64::MAX).to_be_bytes());
        let start = &self.start;
        body.extend_from_slice(&start.width.to_be_bytes());
        body.extend_from_slice(&start.height.to_be_bytes());
        body.extend_from_slice(&start.started_ms.to_be_bytes());
        put_text(&mut body, &start.command);
        put_text(&mut body, &start.term);
        body.push(u8::from(start.input));
        body.extend_from_slice(&self.chunks.to_be_bytes());
        body.extend_from_slice(&self.bytes.to_be_bytes());
        body.extend_from_slice(&self.updated.unix_millis().to_be_bytes());
        self.put_end(&mut body);
        body.push(u8::from(self.incomplete));
        body.extend_from_slice(&self.head);
        body
    }

    /// What the first release's seal covers: fewer fields (a recording of
    /// then is sealed again, whole, at its next chunk).
    fn summary_v1(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(&self.id.to_be_bytes());
        body.extend_from_slice(&self.key);
        put_text(&mut body, &self.computer);
        put_text(&mut body, &self.os_user);
        body.extend_from_slice(&self.session.unwrap_or(u64::MAX).to_be_bytes());
        body.extend_from_slice(&self.start.started_ms.to_be_bytes());
        body.extend_from_slice(&self.chunks.to_be_bytes());
        body.extend_from_slice(&self.bytes.to_be_bytes());
        self.put_end(&mut body);
        body.push(u8::from(self.incomplete));
        body.extend_from_slice(&self.head);
        body
    }

    fn put_end(&self, body: &mut Vec<u8>) {
        let (at, status) = self
            .end
            .map_or((u64::MAX, 0), |end| (end.at_ms, end.status));
        body.extend_from_slice(&at.to_be_bytes());
        body.extend_from_slice(&status.to_be_bytes());
    }
}

impl Record for Recording {
    /// Since the seal covers the whole summary.
    const VERSION: u8 = 2;

    fn upgrade(body: Body<'_>) -> Result<Self, StoreError> {
        match body.version {
            SCHEMA_V1 => Ok(body.decode::<RecordingV1>()?.into()),
            _ => Err(body.unknown()),
        }
    }
}

/// A recording as the first release stored it.
#[derive(Deserialize)]
struct RecordingV1 {
    id: u64,
    computer: String,
    key: RecordingKey,
    os_user: String,
    session: Option<u64>,
    start: RecordingStart,
    chunks: u64,
    bytes: u64,
    updated: otpgate_actors::Timestamp,
    end: Option<RecordingEnd>,
    incomplete: bool,
    head: [u8; 32],
    seal: Vec<u8>,
}

impl From<RecordingV1> for Recording {
    fn from(old: RecordingV1) -> Self {
        Self {
            id: old.id,
            computer: old.computer,
            key: old.key,
            os_user: old.os_user,
            session: old.session,
            start: old.start,
            chunks: old.chunks,
            bytes: old.bytes,
            updated: old.updated,
            end: old.end,
            incomplete: old.incomplete,
            head: old.head,
            seal: old.seal,
            summary_v1: true,
        }
    }
}

/// The recordings as a whole, sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Census {
    /// Recordings stored.
    pub count: u64,
    /// Recordings ever made (removed ones, pruned or lost, included).
    pub made: u64,
    /// Recordings found gone from the database at a start.
    pub lost: u64,
    /// Their seals, folded together with XOR.
    pub seals: [u8; 32],
    /// The server's seal over the fields above.
    pub seal: Vec<u8>,
}

impl Record for Census {}

impl Census {
    /// Folds `seal` in (or, folded in already, out).
    pub(super) fn fold(&mut self, seal: &[u8]) {
        for (folded, byte) in self.seals.iter_mut().zip(seal) {
            *folded ^= byte;
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut body = b"otpgate recordings census 1\0".to_vec();
        for n in [self.count, self.made, self.lost] {
            body.extend_from_slice(&n.to_be_bytes());
        }
        body.extend_from_slice(&self.seals);
        body
    }

    /// The census sealed with `keys`, as stored.
    pub(super) fn sealed(mut self, keys: &OtpKeys) -> Result<Vec<u8>, StoreError> {
        self.seal = keys.seal_recording(&self.body());
        store::encode(&self)
    }
}

/// The anchor file of the recordings database in folder `path`.
pub(super) fn anchor_of(path: &Path) -> std::path::PathBuf {
    path.join("made")
}

/// The count an anchor file holds: 0 when there is none yet, or when it
/// cannot be read (said in the log; it is written again with the next
/// recording), never a reason to leave the recordings unavailable.
fn read_anchor(path: &Path) -> u64 {
    let read = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(std::io::Error::other),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err),
    };
    read.unwrap_or_else(|err| {
        tracing::error!(path = %path.display(), error = %err, "the recordings' anchor file cannot be read; recordings lost before now may go unnoticed");
        0
    })
}

impl Recordings {
    /// The census as stored.
    pub(super) fn census(&self) -> Result<Option<Census>, StoreError> {
        self.census
            .get(CENSUS_KEY)?
            .map(|bytes| store::decode(CENSUS, &bytes))
            .transpose()
    }

    /// The recordings stored, counted and their seals folded.
    fn count(&self) -> Result<Census, StoreError> {
        let mut counted = Census::default();
        for entry in self.list(None) {
            let (_, recording) = entry?;
            counted.count += 1;
            counted.fold(&recording.seal);
        }
        Ok(counted)
    }

    /// Stores `census`, sealed (outside a chunk's transaction).
    fn put_census(&self, census: Census) -> Result<(), StoreError> {
        let made = census.made;
        let sealed = census.sealed(&self.seal)?;
        self.db
            .write(&[SideWrite::Put(&self.census, CENSUS_KEY, &sealed)])?;
        self.made.store(made, Ordering::Release);
        Ok(())
    }

    /// At opening: takes the census (counting a database of an earlier
    /// build's once) and holds it against the anchor file; how many
    /// recordings it finds gone.
    pub(super) fn take_census(&self, anchor: &Path) -> Result<u64, StoreError> {
        let mut census = match self.census()? {
            Some(census) => census,
            None => {
                let mut census = self.count()?;
                census.made = census.count;
                census
            }
        };
        let anchored = read_anchor(anchor);
        let gone = anchored.saturating_sub(census.made);
        census.lost += gone;
        census.made = census.made.max(anchored);
        *self.anchored.lock().unwrap_or_else(PoisonError::into_inner) = anchored;
        self.put_census(census)?;
        Ok(gone)
    }

    /// How many recordings were ever made, as stored now: what the anchor
    /// may say once what is stored now is durable.
    pub(super) fn made(&self) -> u64 {
        self.made.load(Ordering::Acquire)
    }

    /// Writes `made` (taken before the flush that made it durable) to the
    /// anchor file, if it is more than the file says; one writer at a time.
    pub(super) fn anchor(&self, made: u64) -> Result<(), StoreError> {
        let mut anchored = self.anchored.lock().unwrap_or_else(PoisonError::into_inner);
        if made > *anchored {
            crate::files::write_private(&self.anchor, made.to_string().as_bytes()).map_err(
                |source| StoreError::File {
                    path: self.anchor.clone(),
                    source,
                },
            )?;
            *anchored = made;
        }
        Ok(())
    }

    /// Checks `recording` against its chain and seal. Its chunks are read up
    /// to its count; one past it counts as added behind the server's back
    /// only if the recording, read again, has not grown meanwhile (a chunk
    /// and its summary are written in one transaction).
    pub fn verify(&self, recording: &Recording) -> Result<Result<(), Tampered>, StoreError> {
        if !self
            .seal
            .recording_sealed(&recording.summary(), &recording.seal)
        {
            return Ok(Err(Tampered::Seal));
        }
        let id = recording.id;
        let mut head = [0; 32];
        let mut expected = 0;
        for entry in self.chunks_between(id, 0, Bound::Excluded(recording.chunks)) {
            let (key, stored) = entry?;
            let seq = seq_of(&key);
            if seq != expected {
                return Ok(Err(Tampered::Missing(expected)));
            }
            let Ok(events) = inflate(&stored) else {
                return Ok(Err(Tampered::Unreadable(seq)));
            };
            head = chain(&head, seq, &events);
            expected += 1;
        }
        if expected < recording.chunks {
            return Ok(Err(Tampered::Missing(expected)));
        }
        if head != recording.head {
            return Ok(Err(Tampered::Chain));
        }
        if self.chunks_of(id, recording.chunks).next().is_some() {
            let grown = self
                .get(id)?
                .is_some_and(|now| now.chunks > recording.chunks);
            if !grown {
                return Ok(Err(Tampered::Extra));
            }
        }
        Ok(Ok(()))
    }

    /// Checks the recordings as a whole against the census (holding the
    /// store still while it reads the summaries, so that a chunk stored
    /// meanwhile is not taken for a change behind the server's back).
    pub fn verify_census(&self) -> Result<Result<(), Tampered>, StoreError> {
        let _still = self.storing.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(census) = self.census()? else {
            return Ok(Err(Tampered::CensusSeal));
        };
        if !self.seal.recording_sealed(&census.body(), &census.seal) {
            return Ok(Err(Tampered::CensusSeal));
        }
        let stored = self.count()?;
        if (stored.count, stored.seals) != (census.count, census.seals) {
            return Ok(Err(Tampered::Census {
                counted: census.count,
                stored: stored.count,
            }));
        }
        Ok(match census.lost {
            0 => Ok(()),
            lost => Err(Tampered::Lost(lost)),
        })
    }
}

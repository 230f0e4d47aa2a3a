//! Terminal recordings on the server: a sled database of its own in the data
//! folder (`recordings/`), apart from the state the actors keep, since it is
//! large and pruned on its own retention; or, with the store in PostgreSQL,
//! tables of that database (the same keys and values: see
//! [`otpgate_actors::store::SideDb`]).
//!
//! A recording is stored as its chunks, each deflated, under the number the
//! server gave it, with a summary: who, where, the client session, how many
//! chunks, and the head of a hash chain over them, sealed; a sealed census
//! counts the recordings (see [`sealed`] for what that finds). A chunk is
//! taken only in order (the next number, or one already stored, which is
//! acknowledged again), in one transaction with its summary and the census;
//! the caller flushes before acknowledging ([`receive`] does, for agents).
//!
//! What one computer and one OS user may fill is bounded ([`Quotas`]): past
//! it a chunk is acknowledged with its output left out, the recording marked
//! incomplete and the loss audited, so that an agent's spool drains and the
//! disk the logins need does not fill. A chunk is only ever added to a
//! recording of the OS user who began it; recordings not tied to a client
//! session may be refused whole.

use std::io::{Read, Write};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::{Deserialize, Serialize};

use otpgate_actors::metrics::metrics;
use otpgate_actors::otp::OtpKeys;
use otpgate_actors::store::{self, Order, Pairs, SideDb, SideTable, SideWrite, StoreError};
use otpgate_actors::{ComputerId, Timestamp};
use otpgate_protocol::record::{
    MAX_CHUNK_EVENTS, RecordChunk, RecordingEnd, RecordingKey, RecordingStart,
};

pub mod admin;
pub mod sealed;
mod search;
mod shelf;

pub use sealed::Tampered;
use sealed::chain;
pub use search::Hit;
pub use shelf::{Shelf, receive};

const META: &str = "recordings";
const CHUNKS: &str = "recording_chunks";
const KEYS: &str = "recording_keys";
/// Event bytes stored, per computer and per OS user of a computer.
const USAGE: &str = "recording_usage";
/// The recordings refused whole (not tied to a client session), by key, with
/// when they were last heard of: their later chunks are acknowledged and left.
const REFUSED: &str = "recording_refused";

/// The widest terminal a recording may claim: a player given more would
/// freeze its reader's page.
pub const MAX_COLUMNS: u16 = 1000;
/// The tallest terminal a recording may claim.
pub const MAX_ROWS: u16 = 500;

/// What the server keeps of recordings, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Event bytes one client computer's recordings may hold.
    pub per_computer: u64,
    /// Event bytes one OS user's recordings on one computer may hold.
    pub per_user: u64,
    /// Keep only recordings tied to a client session (an OTP login).
    pub session_only: bool,
}

/// What is kept of recordings unless the configuration says otherwise.
pub const DEFAULT_QUOTAS: Quotas = Quotas {
    per_computer: 2048 << 20,
    per_user: 512 << 20,
    session_only: false,
};

/// What is kept of one recording besides its chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// The server's number for it.
    pub id: u64,
    /// The client computer it was made on.
    pub computer: String,
    /// Its recorder's name for it.
    pub key: RecordingKey,
    /// The OS user whose terminal it is.
    pub os_user: String,
    /// The client session of the OTP login it ran in, if known.
    pub session: Option<u64>,
    /// Its header.
    pub start: RecordingStart,
    /// Chunks stored: the next one expected is this number.
    pub chunks: u64,
    /// Event bytes stored (before compression).
    pub bytes: u64,
    /// When the last chunk arrived.
    pub updated: Timestamp,
    /// How it ended, once it has.
    pub end: Option<RecordingEnd>,
    /// Output was dropped on the client computer (a full buffer or spool).
    pub incomplete: bool,
    /// The head of the hash chain over its chunks.
    pub head: [u8; 32],
    /// The server's seal over the fields above.
    pub seal: Vec<u8>,
    /// The seal covers the first release's summary, which left some of the
    /// fields out; sealed whole again at its next chunk.
    pub summary_v1: bool,
}

/// What became of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored now (or before): it may be forgotten by the sender.
    Kept {
        /// The recording's number.
        id: u64,
        /// Why this chunk is the first to leave output out, if it is.
        first_loss: Option<Loss>,
    },
    /// Its recording is not kept (not tied to a client session): it may be
    /// forgotten by the sender; `first` on the recording's first chunk.
    Refused {
        /// Whether this is the first chunk of the recording refused.
        first: bool,
    },
    /// Not the next in order: the sender must send `expected` first.
    OutOfOrder {
        /// The number expected next.
        expected: u64,
    },
    /// Its pieces do not agree (see `RecordChunk::is_well_formed`), or it
    /// names another OS user than the one whose recording it would extend.
    Malformed,
}

/// Why output is missing from a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Dropped on the client computer (its buffer or spool was full).
    Client,
    /// Left out here: the computer's or the user's quota was reached.
    Quota,
}

/// The recordings database.
pub struct Recordings {
    /// Held while a chunk is stored: a chunk sent again on a new connection
    /// while the first is still being stored must find it (never two
    /// recordings for one key, never two writers of one summary).
    storing: std::sync::Mutex<()>,
    /// Held shared while a chunk is received, alone while a backup copies
    /// the database: chunks then wait as tasks, not as threads of the
    /// blocking pool that the store's flushes need.
    copying: tokio::sync::RwLock<()>,
    db: SideDb,
    meta: SideTable,
    chunks: SideTable,
    keys: SideTable,
    usage: SideTable,
    refused: SideTable,
    census: SideTable,
    seal: Arc<OtpKeys>,
    quotas: Quotas,
    /// The anchor file (see [`sealed`]), and the count it holds.
    anchor: std::path::PathBuf,
    anchored: std::sync::Mutex<u64>,
    /// How many recordings were ever made, as last written to the census.
    made: AtomicU64,
    /// Recordings found gone from the database when it was opened.
    found_gone: u64,
}

fn chunk_key(id: u64, seq: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The chunk number in a key of [`chunk_key`].
fn seq_of(key: &[u8]) -> u64 {
    key.get(8..16)
        .and_then(|seq| seq.try_into().ok())
        .map_or(u64::MAX, u64::from_be_bytes)
}

fn recording_key(computer: &ComputerId, key: &RecordingKey) -> Vec<u8> {
    let mut full = computer.as_str().as_bytes().to_vec();
    full.push(0);
    full.extend_from_slice(key);
    full
}

/// The usage keys of `os_user` on `computer`: the computer's, and theirs.
fn usage_keys(computer: &str, os_user: &str) -> [Vec<u8>; 2] {
    let of_computer = format!("c\0{computer}").into_bytes();
    let of_user = format!("u\0{computer}\0{os_user}").into_bytes();
    [of_computer, of_user]
}

fn usage_of(table: &SideTable, key: &[u8]) -> Result<u64, StoreError> {
    Ok(table
        .get(key)?
        .and_then(|bytes| bytes.as_slice().try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

fn deflate(events: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
    encoder
        .write_all(events)
        .and_then(|()| encoder.finish())
        .expect("deflating into memory cannot fail")
}

fn inflate(stored: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut events = Vec::new();
    DeflateDecoder::new(stored)
        .take(4 * otpgate_protocol::record::MAX_CHUNK_EVENTS as u64)
        .read_to_end(&mut events)?;
    Ok(events)
}

impl Recordings {
    /// Opens the recordings in database `db`, with their anchor file in
    /// folder `folder` (see [`sealed`]), keeping recordings within `quotas`.
    /// Blocks: called on a blocking thread.
    pub fn open(
        db: SideDb,
        folder: &std::path::Path,
        seal: Arc<OtpKeys>,
        quotas: Quotas,
    ) -> Result<Self, StoreError> {
        let mut recordings = Self {
            storing: std::sync::Mutex::new(()),
            copying: tokio::sync::RwLock::new(()),
            meta: db.table(META)?,
            chunks: db.table(CHUNKS)?,
            keys: db.table(KEYS)?,
            usage: db.table(USAGE)?,
            refused: db.table(REFUSED)?,
            census: db.table(sealed::CENSUS)?,
            db,
            seal,
            quotas,
            anchor: sealed::anchor_of(folder),
            anchored: std::sync::Mutex::new(0),
            made: AtomicU64::new(0),
            found_gone: 0,
        };
        recordings.count_usage()?;
        recordings.found_gone = recordings.take_census(&sealed::anchor_of(folder))?;
        let made = recordings.made();
        recordings.db.flush_blocking()?;
        recordings.anchor(made)?;
        Ok(recordings)
    }

    /// How many recordings were found gone from the database when it was
    /// opened (see [`sealed`]).
    pub fn found_gone(&self) -> u64 {
        self.found_gone
    }

    /// Counts what the recordings of an older build hold (once: a database
    /// with recordings and usage counted is up to date, as every chunk is
    /// counted when stored).
    fn count_usage(&self) -> Result<(), StoreError> {
        if !self.usage.is_empty()? || self.meta.is_empty()? {
            return Ok(());
        }
        for entry in self.list(None) {
            let (_, recording) = entry?;
            for key in usage_keys(&recording.computer, &recording.os_user) {
                let used = usage_of(&self.usage, &key)? + recording.bytes;
                self.db
                    .write(&[SideWrite::Put(&self.usage, &key, &used.to_be_bytes())])?;
            }
        }
        Ok(())
    }

    /// Runs `copy` on the sled database (and an id above every id it handed
    /// out) with every write held off: a backup's copy, between two chunks.
    pub async fn copy_out<R: Send + 'static>(
        self: &Arc<Self>,
        copy: impl FnOnce(&sled::Db, u64) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let _copying = self.copying.write().await;
        let recordings = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _storing = recordings.storing.lock().unwrap_or_else(|p| p.into_inner());
            let db = recordings.db.sled().ok_or_else(|| {
                StoreError::Config("recordings in PostgreSQL are backed up with it".into())
            })?;
            Ok(copy(db, recordings.db.next_id()?))
        })
        .await
        .map_err(|_| StoreError::FlushAborted)?
    }

    /// This node's turn at storing or removing recordings, once no other
    /// node over the database has it: every node counts into one census
    /// and one set of quotas. Held until dropped, across the flush.
    pub async fn alone(&self) -> Result<store::Exclusive, StoreError> {
        self.db.alone(store::Alone::Recording).await
    }

    /// Makes what was stored durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // What is stored now is what this flush makes durable: the anchor
        // never counts a recording a crash could still take back.
        let made = self.made();
        self.db.flush().await?;
        self.anchor(made)
    }

    /// Stores `chunk` of computer `computer`'s recording, made for `os_user`
    /// in client `session`, arrived at `now`. Not durable until [`Self::flush`].
    pub fn store(
        &self,
        computer: &ComputerId,
        os_user: &str,
        session: Option<u64>,
        chunk: &RecordChunk,
        now: Timestamp,
    ) -> Result<Stored, StoreError> {
        if !chunk.is_well_formed() {
            return Ok(Stored::Malformed);
        }
        let _storing = self.storing.lock().unwrap_or_else(|p| p.into_inner());
        let key = recording_key(computer, &chunk.recording);
        let heard = now.unix_millis().to_be_bytes();
        if self.refused.get(&key)?.is_some() {
            self.db
                .write(&[SideWrite::Put(&self.refused, &key, &heard)])?;
            return Ok(Stored::Refused { first: false });
        }
        let known = match self.keys.get(&key)? {
            Some(id) => Some(self.get_by_bytes(&id)?),
            None => None,
        };
        let mut recording = match (known, &chunk.start) {
            // Only its own user's chunks extend a recording.
            (Some(recording), _) if recording.os_user != os_user => return Ok(Stored::Malformed),
            (Some(recording), _) => recording,
            (None, Some(_)) if self.quotas.session_only && session.is_none() => {
                self.db
                    .write(&[SideWrite::Put(&self.refused, &key, &heard)])?;
                return Ok(Stored::Refused { first: true });
            }
            (None, Some(start)) => Recording {
                id: self.db.next_id()?,
                computer: computer.to_string(),
                key: chunk.recording,
                os_user: os_user.to_owned(),
                session,
                start: RecordingStart {
                    width: start.width.clamp(1, MAX_COLUMNS),
                    height: start.height.clamp(1, MAX_ROWS),
                    ..start.clone()
                },
                chunks: 0,
                bytes: 0,
                updated: now,
                end: None,
                incomplete: false,
                head: [0; 32],
                seal: Vec::new(),
                summary_v1: false,
            },
            (None, None) => return Ok(Stored::OutOfOrder { expected: 0 }),
        };
        let id = recording.id;
        if chunk.seq < recording.chunks {
            return Ok(Stored::Kept {
                id,
                first_loss: None,
            });
        }
        if chunk.seq > recording.chunks || recording.end.is_some() {
            return Ok(Stored::OutOfOrder {
                expected: recording.chunks,
            });
        }
        let usage = usage_keys(computer.as_str(), os_user);
        let [used_by_computer, used_by_user] = [
            usage_of(&self.usage, &usage[0])?,
            usage_of(&self.usage, &usage[1])?,
        ];
        // Full once less room is left than a whole chunk takes: what comes
        // after is left out too, not kept piecemeal as small chunks fit.
        let whole = MAX_CHUNK_EVENTS as u64;
        let over = used_by_computer + whole > self.quotas.per_computer
            || used_by_user + whole > self.quotas.per_user;
        // Past a quota the chunk is taken with its output left out.
        let events: &[u8] = if over { &[] } else { &chunk.events };
        let loss = if over {
            Some(Loss::Quota)
        } else {
            chunk.lost.then_some(Loss::Client)
        };
        let first_loss = loss.filter(|_| !recording.incomplete);
        let kept = events.len() as u64;
        recording.head = chain(&recording.head, chunk.seq, events);
        recording.chunks += 1;
        recording.bytes += kept;
        recording.updated = now;
        recording.incomplete |= loss.is_some();
        recording.end = chunk.end;
        let mut census = self.census()?.unwrap_or_default();
        if recording.chunks == 1 {
            census.count += 1;
            census.made += 1;
        } else {
            census.fold(&recording.seal);
        }
        recording.summary_v1 = false;
        recording.seal = self.seal.seal_recording(&recording.summary());
        census.fold(&recording.seal);
        let made = census.made;
        let census = census.sealed(&self.seal)?;
        let meta = store::encode(&recording)?;
        let body = deflate(events);
        let used = [
            (used_by_computer + kept).to_be_bytes(),
            (used_by_user + kept).to_be_bytes(),
        ];
        let (number, chunk_at) = (id.to_be_bytes(), chunk_key(id, chunk.seq));
        self.db.write(&[
            SideWrite::Put(&self.meta, &number, &meta),
            SideWrite::Put(&self.chunks, &chunk_at, &body),
            SideWrite::Put(&self.keys, &key, &number),
            SideWrite::Put(&self.usage, &usage[0], &used[0]),
            SideWrite::Put(&self.usage, &usage[1], &used[1]),
            SideWrite::Put(&self.census, sealed::CENSUS_KEY, &census),
        ])?;
        self.made.store(made, Ordering::Release);
        metrics().recording_bytes.inc_by(kept);
        Ok(Stored::Kept { id, first_loss })
    }

    /// Removes recording `id` if it was last written before `cutoff`, as it
    /// stands under the store's lock (a chunk may have come since it was
    /// listed): its summary, name, usage and place in the census in one
    /// transaction, then its chunks (a crash in between leaves chunks no
    /// summary names, which nothing reads). Whether it was removed.
    fn remove_if_before(&self, id: u64, cutoff: Timestamp) -> Result<bool, StoreError> {
        let _storing = self.storing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(recording) = self.get(id)?.filter(|r| r.updated < cutoff) else {
            return Ok(false);
        };
        let id = recording.id;
        let usage = usage_keys(&recording.computer, &recording.os_user);
        let used = [
            usage_of(&self.usage, &usage[0])?.saturating_sub(recording.bytes),
            usage_of(&self.usage, &usage[1])?.saturating_sub(recording.bytes),
        ];
        let mut census = self.census()?.unwrap_or_default();
        census.count = census.count.saturating_sub(1);
        census.fold(&recording.seal);
        let census = census.sealed(&self.seal)?;
        let name = recording
            .computer
            .parse()
            .ok()
            .map(|computer| recording_key(&computer, &recording.key));
        let (number, used) = (id.to_be_bytes(), used.map(u64::to_be_bytes));
        let mut writes = vec![
            SideWrite::Remove(&self.meta, &number),
            SideWrite::Put(&self.usage, &usage[0], &used[0]),
            SideWrite::Put(&self.usage, &usage[1], &used[1]),
            SideWrite::Put(&self.census, sealed::CENSUS_KEY, &census),
        ];
        if let Some(name) = &name {
            writes.push(SideWrite::Remove(&self.keys, name));
        }
        self.db.write(&writes)?;
        let chunks: Vec<Vec<u8>> = self
            .chunks_of(id, 0)
            .map(|chunk| chunk.map(|(key, _)| key))
            .collect::<Result<_, _>>()?;
        for keys in chunks.chunks(store::BATCH) {
            let removals: Vec<_> = keys
                .iter()
                .map(|key| SideWrite::Remove(&self.chunks, key))
                .collect();
            self.db.write(&removals)?;
        }
        Ok(true)
    }

    fn get_by_bytes(&self, id: &[u8]) -> Result<Recording, StoreError> {
        match self.meta.get(id)? {
            Some(bytes) => store::decode(META, &bytes),
            None => Err(StoreError::BadKey { tree: META }),
        }
    }

    /// Recording `id`'s chunks from number `from` on, in order.
    fn chunks_of(&self, id: u64, from: u64) -> Pairs {
        self.chunks_between(id, from, Bound::Included(u64::MAX))
    }

    /// Recording `id`'s chunks from number `from` up to `to`, in order.
    fn chunks_between(&self, id: u64, from: u64, to: Bound<u64>) -> Pairs {
        let (from, to) = (chunk_key(id, from), to.map(|to| chunk_key(id, to)));
        self.chunks.range(
            (
                Bound::Included(from.as_slice()),
                to.as_ref().map(<[u8; 16]>::as_slice),
            ),
            Order::Oldest,
        )
    }

    /// Recording `id`, if there is one.
    pub fn get(&self, id: u64) -> Result<Option<Recording>, StoreError> {
        self.meta
            .get(&id.to_be_bytes())?
            .map(|bytes| store::decode(META, &bytes))
            .transpose()
    }

    /// The recordings, newest first, after cursor `after` (a number's bytes).
    pub fn list(&self, after: Option<&[u8]>) -> store::Records<'_, Recording> {
        let before = after.map_or(Bound::Unbounded, Bound::Excluded);
        let range = self.meta.range((Bound::Unbounded, before), Order::Newest);
        Box::new(range.map(|entry| {
            let (key, value) = entry?;
            Ok((key, store::decode(META, &value)?))
        }))
    }

    /// The event lines of recording `id` from chunk `from` on, whole chunks
    /// up to about `budget` bytes (at least one); and the chunk to read next,
    /// if any.
    pub fn read(
        &self,
        id: u64,
        from: u64,
        budget: usize,
    ) -> Result<(String, Option<u64>), StoreError> {
        let mut events = String::new();
        for entry in self.chunks_of(id, from) {
            let (key, stored) = entry?;
            let text = inflate(&stored).map_err(|_| StoreError::BadKey { tree: CHUNKS })?;
            let text = String::from_utf8_lossy(&text);
            if !events.is_empty() && events.len() + text.len() > budget {
                return Ok((events, Some(seq_of(&key))));
            }
            events.push_str(&text);
        }
        Ok((events, None))
    }

    /// Removes the recordings last written before `cutoff`; how many.
    pub fn prune(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.list(None) {
            let (_, recording) = entry?;
            if recording.updated < cutoff && self.remove_if_before(recording.id, cutoff)? {
                removed += 1;
            }
        }
        let everything = (Bound::Unbounded, Bound::Unbounded);
        for entry in self.refused.range(everything, Order::Oldest) {
            let (key, last) = entry?;
            let last = last.as_slice().try_into().map_or(0, u64::from_be_bytes);
            if Timestamp::from_unix_millis(last) < cutoff {
                let _storing = self.storing.lock().unwrap_or_else(|p| p.into_inner());
                self.db.write(&[SideWrite::Remove(&self.refused, &key)])?;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;

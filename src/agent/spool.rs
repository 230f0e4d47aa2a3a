//! Recordings on their way to the server. Each chunk a recorder hands over is
//! written to a file of its own in the spool folder (root's, 0700), synced,
//! before the recorder is told it may forget it; the shipper sends the files
//! over the link in order (recording by recording, chunk by chunk) and removes
//! one only once the server says it holds it durably. So a `kill -9` of the
//! agent loses nothing it acknowledged, and a server that is away only makes
//! the spool grow.
//!
//! The spool is bounded: when a chunk would take it past its size, or its OS
//! user past half of it (one person's flood leaves room for the others), the
//! chunk is refused (what is already spooled, the oldest, is kept); the recorder then
//! holds it, and if its own buffer fills, drops output and marks the recording
//! incomplete, which the server records in the audit log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use data_encoding::HEXLOWER;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use otpgate_protocol::record::RecordChunk;
use otpgate_protocol::{ErrorCode, Request, Response};

use crate::agent::link::Link;
use crate::records;

/// What a spooled file is called in errors.
const SPOOL: &str = "spool";
/// No OS user may hold more than this share of the spool (a half): one
/// person's flood leaves room for the others' recordings.
const USER_SHARE: u64 = 2;

/// Where the agent spools recordings by default.
pub const DEFAULT_SPOOL: &str = "/var/spool/otpgate";
/// The most the spool holds by default, in MiB.
pub const DEFAULT_SPOOL_MIB: u64 = 256;

/// How long the shipper waits before trying again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// A chunk file's ending.
const CHUNK: &str = "chunk";

/// Why a chunk could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool is at its size limit.
    #[error("the spool is full")]
    Full,
    /// The file could not be written.
    #[error("cannot write the spool: {0}")]
    Io(#[from] std::io::Error),
}

/// What a spooled file holds: the chunk and what the server is told with it.
#[derive(Serialize, Deserialize)]
struct Spooled {
    os_user: String,
    session: Option<u64>,
    chunk: RecordChunk,
}

/// What a chunk file is counted as at the least: the disk block (and inode)
/// it takes however small it is, so that a flood of tiny chunks fills a
/// user's share of the spool as soon as the same bytes in whole chunks would.
const FILE_AT_LEAST: u64 = 4096;

/// What a chunk file of `len` bytes counts for against the limits.
fn charged(len: u64) -> u64 {
    len.max(FILE_AT_LEAST)
}

/// Bytes in the spool's chunk files (each [`charged`]), in all and by OS user.
#[derive(Default)]
struct Usage {
    total: u64,
    by_user: HashMap<String, u64>,
}

impl Usage {
    fn add(&mut self, os_user: &str, len: u64) {
        let len = charged(len);
        self.total += len;
        *self.by_user.entry(os_user.to_owned()).or_default() += len;
    }

    fn take(&mut self, os_user: Option<&str>, len: u64) {
        let len = charged(len);
        self.total = self.total.saturating_sub(len);
        if let Some(held) = os_user.and_then(|user| self.by_user.get_mut(user)) {
            *held = held.saturating_sub(len);
        }
    }
}

/// The spool folder.
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    used: Mutex<Usage>,
    /// Wakes the shipper.
    queued: Notify,
    /// Whether the operator was told that the server does not take recordings.
    unsupported: AtomicBool,
}

impl Spool {
    /// The spool in folder `dir` (made root's only), at most `limit` bytes;
    /// what an earlier run left is kept, half-written files are removed.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Self> {
        crate::files::create_private_dir(dir)?;
        if let Some(had) = crate::files::tighten(dir, 0o700)? {
            warn!(path = %dir.display(), had = format_args!("{had:o}"), "others could read the spool; tightened");
        }
        let mut used = Usage::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let spooled = path
                .extension()
                .is_some_and(|e| e == CHUNK)
                .then(|| read(&path).ok())
                .flatten();
            match spooled {
                Some((spooled, len)) => used.add(&spooled.os_user, len),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            limit,
            used: Mutex::new(used),
            queued: Notify::new(),
            unsupported: AtomicBool::new(false),
        })
    }

    fn used(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes waiting for the server.
    pub fn backlog(&self) -> u64 {
        self.used().total
    }

    /// The file of chunk `seq` of `os_user`'s recording `key`: in sending
    /// order by name, and apart from any other user's (a chunk naming another
    /// user's recording never takes the place of theirs).
    fn path(&self, os_user: &str, chunk: &RecordChunk) -> PathBuf {
        let user = HEXLOWER.encode(os_user.as_bytes());
        let key = HEXLOWER.encode(&chunk.recording);
        self.dir
            .join(format!("{user}-{key}-{:016x}.{CHUNK}", chunk.seq))
    }

    /// Keeps `chunk` of `os_user`'s recording (in client `session`) on disk,
    /// synced; a chunk spooled before is kept once. Blocking: call it off the
    /// async runtime.
    pub fn put(
        &self,
        os_user: &str,
        session: Option<u64>,
        chunk: RecordChunk,
    ) -> Result<(), SpoolError> {
        let path = self.path(os_user, &chunk);
        if path.exists() {
            return Ok(());
        }
        let bytes = records::encode(&Spooled {
            os_user: os_user.to_owned(),
            session,
            chunk,
        })
        .map_err(std::io::Error::other)?;
        let len = bytes.len() as u64;
        {
            let mut used = self.used();
            let theirs = used.by_user.get(os_user).copied().unwrap_or(0);
            let charge = charged(len);
            if used.total + charge > self.limit || theirs + charge > self.limit / USER_SHARE {
                return Err(SpoolError::Full);
            }
            used.add(os_user, len);
        }
        // Whole or not at all, and durable, before the recorder may forget it.
        let written = crate::files::write_private(&path, &bytes);
        if written.is_err() {
            self.used().take(Some(os_user), len);
        }
        written?;
        self.queued.notify_one();
        Ok(())
    }

    /// The chunk files, in sending order.
    fn queue(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == CHUNK))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Removes chunk file `path`, of `os_user` if known.
    fn remove(&self, path: &Path, os_user: Option<&str>) {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        match std::fs::remove_file(path) {
            Ok(()) => self.used().take(os_user, len),
            Err(err) => warn!(error = %err, path = %path.display(), "cannot remove a sent chunk"),
        }
    }

    /// Sends what is spooled, in order, over `link`, until `cancel` fires.
    pub async fn ship(self: Arc<Self>, link: Link, cancel: CancellationToken) {
        loop {
            let delivered = self.ship_once(&link).await;
            link.spooled(self.backlog());
            let wait = if delivered {
                // Everything went: wait for more.
                Duration::from_secs(60)
            } else {
                RETRY_AFTER
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.queued.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over the spool; whether it is empty now.
    async fn ship_once(&self, link: &Link) -> bool {
        let files = match self.queue() {
            Ok(files) => files,
            Err(err) => {
                warn!(error = %err, "cannot read the spool");
                return false;
            }
        };
        // A recording whose chunk could not go now: its later ones wait too.
        let mut held: Option<[u8; 16]> = None;
        let mut all = true;
        for path in files {
            let spooled = match read(&path) {
                Ok((spooled, _)) => spooled,
                Err(err) => {
                    warn!(error = %err, path = %path.display(), "an unreadable spooled chunk, removed");
                    self.remove(&path, None);
                    continue;
                }
            };
            if held == Some(spooled.chunk.recording) {
                all = false;
                continue;
            }
            let recording = spooled.chunk.recording;
            let os_user = spooled.os_user.clone();
            let request = Request::Record {
                os_user: spooled.os_user,
                session: spooled.session,
                chunk: spooled.chunk,
            };
            match link.call(request).await {
                Ok(Response::Recorded) => {
                    debug!(path = %path.display(), "chunk delivered");
                    self.remove(&path, Some(&os_user));
                }
                // It can never be taken: keeping it would hold back the rest.
                Ok(Response::Fail(ErrorCode::Malformed)) => {
                    warn!(path = %path.display(), "the server refused a chunk as malformed; removed");
                    self.remove(&path, Some(&os_user));
                }
                Ok(Response::Fail(ErrorCode::OutOfOrder)) => {
                    warn!(path = %path.display(), "the server wants earlier chunks first");
                    held = Some(recording);
                    all = false;
                }
                // A server of a release that does not take recordings.
                Ok(Response::Fail(ErrorCode::Unsupported)) => {
                    if !self.unsupported.swap(true, Ordering::Relaxed) {
                        warn!(
                            "the server does not take recordings (it is of an older release): \
                             they wait in the spool until it is upgraded"
                        );
                    }
                    return false;
                }
                // Not connected, throttled, or the server could not store it now.
                _ => return false,
            }
        }
        all
    }
}

/// A spooled file, and its size.
fn read(path: &Path) -> Result<(Spooled, u64), String> {
    let bytes = std::fs::read(path).map_err(|err| err.to_string())?;
    let spooled = records::decode(SPOOL, &bytes).map_err(|err| err.to_string())?;
    Ok((spooled, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room for ten chunk files; five of one user.
    const LIMIT: u64 = 10 * FILE_AT_LEAST;

    fn chunk(key: u8, seq: u64) -> RecordChunk {
        RecordChunk {
            recording: [key; 16],
            seq,
            start: None,
            events: b"[0.5, \"o\", \"x\"]\n".to_vec(),
            lost: false,
            end: None,
        }
    }

    #[test]
    fn one_users_chunk_never_takes_the_place_of_anothers() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), LIMIT).unwrap();
        spool.put("alice", Some(4), chunk(1, 0)).unwrap();
        spool.put("mallory", None, chunk(1, 0)).unwrap();
        let owners: Vec<String> = spool
            .queue()
            .unwrap()
            .iter()
            .map(|path| read(path).unwrap().0.os_user)
            .collect();
        assert_eq!(owners, ["alice", "mallory"], "both kept, each its own");
    }

    #[test]
    fn chunks_wait_in_order_within_the_limit_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("spool");
        let spool = Spool::open(&folder, LIMIT).unwrap();
        for (key, seq) in [(2, 1), (1, 10), (2, 0), (1, 2)] {
            spool.put("alice", Some(4), chunk(key, seq)).unwrap();
        }
        spool.put("alice", Some(4), chunk(1, 2)).unwrap();
        // A tiny chunk takes a disk block whatever its size, and counts so.
        assert_eq!(spool.used().by_user["alice"], 4 * FILE_AT_LEAST);
        let names: Vec<String> = spool
            .queue()
            .unwrap()
            .iter()
            .map(|p| {
                // The user's and the key's names, but for the key's last byte.
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name[name.len() - 25..].to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "01-0000000000000002.chunk",
                "01-000000000000000a.chunk",
                "02-0000000000000000.chunk",
                "02-0000000000000001.chunk"
            ],
            "by recording, then by number; a chunk sent twice is kept once"
        );
        let mut seq = 0;
        while spool.put("alice", None, chunk(3, seq)).is_ok() {
            seq += 1;
        }
        assert!(matches!(
            spool.put("alice", None, chunk(3, 999)),
            Err(SpoolError::Full)
        ));
        assert!(
            spool.used().by_user["alice"] <= LIMIT / 2,
            "at most half is one user's"
        );
        // Another user still has room.
        spool.put("bob", None, chunk(4, 0)).unwrap();
        assert!(spool.used().total <= LIMIT);
        // A half-written file is removed at the next start; the rest counted,
        // each user's part too.
        std::fs::write(folder.join("x.tmp"), b"half").unwrap();
        let again = Spool::open(&folder, LIMIT).unwrap();
        assert_eq!(again.used().total, spool.used().total);
        assert_eq!(again.used().by_user, spool.used().by_user);
        assert!(!folder.join("x.tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = || std::fs::metadata(&folder).unwrap().permissions().mode();
        assert_eq!(mode() & 0o077, 0, "root's only");
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        Spool::open(&folder, LIMIT).unwrap();
        assert_eq!(mode() & 0o077, 0, "made root's only again");
    }
}

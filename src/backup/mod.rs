//! Backups of a server's data folder: one file, made by the running server
//! (`otpgate admin backup`, [`make`]) and put back into a new data folder by
//! `otpgate restore` while no server runs ([`restore`]).
//!
//! ```text
//! +----------+------------------------------+---------+-------------+
//! | MAGIC    | deflate stream of parts      | SHA-256 | HMAC-SHA256 |
//! | 16 bytes |                              | 32      | 32          |
//! +----------+------------------------------+---------+-------------+
//! ```
//!
//! Both trailers cover the magic and the stream. The SHA-256 finds a file
//! damaged without any key; the HMAC, keyed from the server secret
//! ([`OtpKeys::backup_key`]), finds one made or changed by someone without
//! it. Each part is a big-endian `u32` length and the bincode of a [`Part`]:
//! the header, the data folder's files (its keys unless left out), then each
//! database's trees and their pairs, the id to start from, and the end.

pub mod make;
pub mod restore;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::{constant_time, hmac};
use data_encoding::HEXLOWER;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use otpgate_actors::StoreError;
use otpgate_actors::otp::OtpKeys;

/// The first bytes of a backup, format version 1.
const MAGIC: &[u8; 16] = b"otpgate backup 1";
/// The two trailers' length.
const TRAILER: u64 = 64;
/// The most one part may hold: more is a damaged or hostile file.
const MAX_PART: u32 = 64 << 20;
/// Pairs are written in parts of about this many bytes.
const PAIRS_BYTES: usize = 1 << 20;

/// The secret's file in the data folder, and the first administrator's
/// password file: kept out of a backup made without keys, with every
/// `.key` file of the PKI.
const SECRET_FILE: &str = "secret.key";

/// Which of the server's databases a tree is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Database {
    /// The store (`db`).
    Store,
    /// The recordings (`recordings`).
    Recordings,
}

impl Database {
    /// Its folder in the data folder.
    pub fn folder(self) -> &'static str {
        match self {
            Self::Store => "db",
            Self::Recordings => crate::server::RECORDINGS,
        }
    }
}

/// One part of a backup.
#[derive(Serialize, Deserialize)]
enum Part {
    /// First: what the backup is.
    Header {
        /// When it was made, in milliseconds since the Unix epoch.
        made_at: u64,
        /// The release that made it.
        release: String,
        /// Whether it holds the keys.
        keys: bool,
    },
    /// A file of the data folder, by its path in it.
    File {
        path: String,
        mode: u32,
        bytes: Vec<u8>,
    },
    /// A tree begins; the pairs that follow are its.
    Tree { database: Database, name: Vec<u8> },
    /// Pairs of the tree begun last, in key order.
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// A database ends: its copy hands out ids from here.
    NextId { database: Database, next: u64 },
    /// Last.
    End,
}

/// Why a backup could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A database could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not a backup of this format.
    #[error("not an otpgate backup (or one of a newer format)")]
    NotABackup,
    /// The checksum does not match: the file is damaged.
    #[error("the file is damaged (its checksum does not match)")]
    Damaged,
    /// The seal does not match the secret it was checked with.
    #[error(
        "the seal does not match {0}: the backup was made by another site's server, or changed"
    )]
    Seal(String),
    /// A part could not be read.
    #[error("the backup is malformed: {0}")]
    Malformed(String),
    /// The backup holds no keys, and none were given.
    #[error(
        "the backup was made without keys: give --keys-from with the site's data folder (or a \
         copy of its secret.key and pki/)"
    )]
    NoKeys,
    /// The target is not an empty folder.
    #[error("{}: not empty; restore into a new folder (move the old one aside)", .0.display())]
    NotEmpty(PathBuf),
    /// Something else stood in the way.
    #[error("{0}")]
    Refused(String),
}

fn file_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::File {
        path: path.to_owned(),
        source,
    }
}

/// Whether the data folder's file `path` is key material.
fn is_key(path: &str) -> bool {
    path == SECRET_FILE || path.ends_with(".key") || path == crate::server::INITIAL_PASSWORD_FILE
}

/// What a backup holds, as its maker or its reader counted it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// The files, by path in the data folder.
    pub files: Vec<String>,
    /// Each tree, as `database/tree`, with its count of records.
    pub trees: Vec<(String, u64)>,
}

impl Contents {
    fn tree(&mut self, database: Database, name: &[u8]) {
        self.trees.push((
            format!("{}/{}", database.folder(), String::from_utf8_lossy(name)),
            0,
        ));
    }

    fn count(&mut self, pairs: u64) {
        if let Some((_, count)) = self.trees.last_mut() {
            *count += pairs;
        }
    }
}

/// A writer that hashes and MACs what passes through it.
struct Sealing<W> {
    inner: W,
    sum: digest::Context,
    mac: hmac::Context,
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        self.mac.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A backup being written.
pub struct Writer {
    path: PathBuf,
    out: DeflateEncoder<Sealing<BufWriter<File>>>,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    pairs_bytes: usize,
    contents: Contents,
}

impl Writer {
    /// Starts a backup at `path` (a new file, 0600), sealed with `keys`.
    fn create(
        path: &Path,
        keys: &OtpKeys,
        made_at: u64,
        with_keys: bool,
    ) -> Result<Self, BackupError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(file_error(path))?;
        let mut sealing = Sealing {
            inner: BufWriter::new(file),
            sum: digest::Context::new(&SHA256),
            mac: hmac::Context::with_key(keys.backup_key()),
        };
        sealing.write_all(MAGIC).map_err(file_error(path))?;
        let mut writer = Self {
            path: path.to_owned(),
            out: DeflateEncoder::new(sealing, Compression::fast()),
            pairs: Vec::new(),
            pairs_bytes: 0,
            contents: Contents::default(),
        };
        writer.part(&Part::Header {
            made_at,
            release: env!("CARGO_PKG_VERSION").to_owned(),
            keys: with_keys,
        })?;
        Ok(writer)
    }

    fn part(&mut self, part: &Part) -> Result<(), BackupError> {
        let bytes = bincode::serde::encode_to_vec(part, bincode::config::standard())
            .map_err(|err| BackupError::Malformed(err.to_string()))?;
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&len| len <= MAX_PART)
            .ok_or_else(|| BackupError::Malformed("a record too large".into()))?;
        let path = self.path.clone();
        self.out
            .write_all(&len.to_be_bytes())
            .and_then(|()| self.out.write_all(&bytes))
            .map_err(file_error(&path))
    }

    fn file(&mut self, path: String, mode: u32, bytes: Vec<u8>) -> Result<(), BackupError> {
        self.contents.files.push(path.clone());
        self.part(&Part::File { path, mode, bytes })
    }

    fn tree(&mut self, database: Database, name: &[u8]) -> Result<(), BackupError> {
        self.end_pairs()?;
        self.contents.tree(database, name);
        self.part(&Part::Tree {
            database,
            name: name.to_vec(),
        })
    }

    fn pair(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        self.pairs_bytes += key.len() + value.len();
        self.pairs.push((key.to_vec(), value.to_vec()));
        if self.pairs_bytes >= PAIRS_BYTES {
            self.end_pairs()?;
        }
        Ok(())
    }

    fn end_pairs(&mut self) -> Result<(), BackupError> {
        if self.pairs.is_empty() {
            return Ok(());
        }
        let pairs = std::mem::take(&mut self.pairs);
        self.pairs_bytes = 0;
        self.contents.count(pairs.len() as u64);
        self.part(&Part::Pairs(pairs))
    }

    fn next_id(&mut self, database: Database, next: u64) -> Result<(), BackupError> {
        self.end_pairs()?;
        self.part(&Part::NextId { database, next })
    }

    /// Ends the backup: its trailers written and the file on disk. Its
    /// checksum, hex, and what it holds.
    fn finish(mut self) -> Result<(String, Contents), BackupError> {
        self.end_pairs()?;
        self.part(&Part::End)?;
        let path = self.path.clone();
        let sealing = self.out.finish().map_err(file_error(&path))?;
        let sum = sealing.sum.finish();
        let mac = sealing.mac.sign();
        let mut file = sealing.inner;
        file.write_all(sum.as_ref())
            .and_then(|()| file.write_all(mac.as_ref()))
            .and_then(|()| file.flush())
            .map_err(file_error(&path))?;
        let file = file.into_inner().map_err(|err| BackupError::File {
            path: path.clone(),
            source: err.into_error(),
        })?;
        file.sync_all().map_err(file_error(&path))?;
        Ok((HEXLOWER.encode(sum.as_ref()), self.contents))
    }
}

/// A backup file whose checksum matched, held open: every later read is of
/// the file checked, whatever happens to its path meanwhile. What it holds is
/// read once its seal is checked ([`Self::check_seal`]).
pub struct Sealed {
    path: PathBuf,
    file: File,
    /// The checksum, hex.
    pub sum: String,
    mac: Vec<u8>,
    body: u64,
}

impl Sealed {
    /// Opens the backup at `path` and checks its checksum.
    pub fn open(path: &Path) -> Result<Self, BackupError> {
        let mut file = File::open(path).map_err(file_error(path))?;
        let len = file.metadata().map_err(file_error(path))?.len();
        let body = len
            .checked_sub(TRAILER)
            .filter(|&body| body >= MAGIC.len() as u64)
            .ok_or(BackupError::NotABackup)?;
        let mut magic = [0; MAGIC.len()];
        file.read_exact(&mut magic).map_err(file_error(path))?;
        if &magic != MAGIC {
            return Err(BackupError::NotABackup);
        }
        let mut sum = digest::Context::new(&SHA256);
        sum.update(MAGIC);
        each_block(&mut file, body - MAGIC.len() as u64, |block| {
            sum.update(block)
        })
        .map_err(file_error(path))?;
        let mut trailers = [0; TRAILER as usize];
        file.read_exact(&mut trailers).map_err(file_error(path))?;
        let (stored_sum, mac) = trailers.split_at(32);
        let sum = sum.finish();
        if constant_time::verify_slices_are_equal(sum.as_ref(), stored_sum).is_err() {
            return Err(BackupError::Damaged);
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            sum: HEXLOWER.encode(sum.as_ref()),
            mac: mac.to_vec(),
            body,
        })
    }

    /// The file, read from `offset`.
    fn at(&self, offset: u64) -> Result<File, BackupError> {
        let mut file = self.file.try_clone().map_err(file_error(&self.path))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(file_error(&self.path))?;
        Ok(file)
    }

    /// Checks the seal with `keys` (derived from the secret named `whose`, for
    /// the error).
    pub fn check_seal(&self, keys: &OtpKeys, whose: &str) -> Result<(), BackupError> {
        let mut mac = hmac::Context::with_key(keys.backup_key());
        each_block(&mut self.at(0)?, self.body, |block| mac.update(block))
            .map_err(file_error(&self.path))?;
        let mac = mac.sign();
        constant_time::verify_slices_are_equal(mac.as_ref(), &self.mac)
            .map_err(|_| BackupError::Seal(whose.to_owned()))
    }

    /// The parts, in order: read only once the seal is checked, but for
    /// [`Self::secret_inside`].
    fn parts(&self) -> Result<Parts, BackupError> {
        let stream =
            BufReader::new(self.at(MAGIC.len() as u64)?).take(self.body - MAGIC.len() as u64);
        Ok(Parts {
            path: self.path.clone(),
            stream: DeflateDecoder::new(stream),
        })
    }

    /// The secret a backup made with keys holds, read before its seal is
    /// checked (it is what the seal is checked with): only its first parts,
    /// and no more than [`PRELUDE`] bytes of them.
    fn secret_inside(&self) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        let mut parts = self.parts()?;
        let mut budget = PRELUDE;
        loop {
            match parts.next_within(&mut budget)? {
                Part::Header { keys: false, .. } => return Err(BackupError::NoKeys),
                Part::Header { .. } => {}
                Part::File { path, bytes, .. } if path == SECRET_FILE => {
                    return Ok(Zeroizing::new(bytes));
                }
                Part::File { bytes, .. } => drop(Zeroizing::new(bytes)),
                _ => return Err(BackupError::Malformed("no secret".into())),
            }
        }
    }
}

/// The most of a backup read before its seal is checked.
const PRELUDE: usize = 1 << 20;

/// Hands the next `len` bytes of `file` to `f`, a block at a time.
fn each_block(file: &mut File, len: u64, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    let mut left = len;
    let mut block = vec![0; 1 << 16];
    while left > 0 {
        let want = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        file.read_exact(&mut block[..want])?;
        f(&block[..want]);
        left -= want as u64;
    }
    Ok(())
}

/// The parts of a backup, read one at a time.
struct Parts {
    path: PathBuf,
    stream: DeflateDecoder<io::Take<BufReader<File>>>,
}

impl Parts {
    fn next(&mut self) -> Result<Part, BackupError> {
        self.next_within(&mut (MAX_PART as usize))
    }

    /// The next part, if it fits in `budget` (then taken from it).
    fn next_within(&mut self, budget: &mut usize) -> Result<Part, BackupError> {
        let malformed = |err: &dyn std::fmt::Display| BackupError::Malformed(err.to_string());
        let mut len = [0; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|err| malformed(&err))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > (*budget).min(MAX_PART as usize) {
            return Err(BackupError::Malformed(format!(
                "a record of {len} bytes in {}",
                self.path.display()
            )));
        }
        *budget -= len;
        let mut bytes = Zeroizing::new(vec![0; len]);
        self.stream
            .read_exact(&mut bytes)
            .map_err(|err| malformed(&err))?;
        let (part, _) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map_err(|err| malformed(&err))?;
        Ok(part)
    }
}

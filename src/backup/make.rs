//! Making a backup while the server serves.
//!
//! The store is copied between two of its writes: every write waits while
//! its trees are copied into memory (the pause, measured and reported), then
//! goes on while the copy is compressed. The recordings' database is copied
//! between two chunks: chunks wait (as tasks) while it is written out, logins
//! do not. What the backup holds of the store is so a state a `kill -9` could
//! have left, which the server is built to start from.
//!
//! The file is written in the data folder's `backups/` (the server's unit may
//! write nowhere else) and handed to `otpgate admin backup`, which moves it
//! where the operator asked; leftovers of a backup never collected are
//! removed when the next begins.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otpgate_actors::otp::OtpKeys;
use otpgate_actors::store::copy;
use otpgate_actors::{KvStore, Timestamp};

use super::{BackupError, Contents, Database, SECRET_FILE, Writer, file_error, is_key};
use crate::server::recordings::{Recordings, Shelf};

/// The folder, in the data folder, backups are made in.
pub const FOLDER: &str = "backups";

/// What a backup is made of: the server's databases and its data folder.
pub struct Backups {
    /// The store.
    pub store: Arc<KvStore>,
    /// The recordings.
    pub recordings: Shelf,
    /// The data folder.
    pub data_dir: PathBuf,
    /// The keys whose backup key seals it.
    pub keys: Arc<OtpKeys>,
    /// Held while one is made: one at a time.
    pub making: tokio::sync::Mutex<()>,
}

/// A backup made.
#[derive(Debug)]
pub struct Made {
    /// Where it is, in the data folder's `backups/`.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sum: String,
    /// What it holds.
    pub contents: Contents,
    /// How long the store's writes waited for its copy.
    pub store_paused: Duration,
    /// How long recording chunks waited for the recordings' copy.
    pub recordings_paused: Duration,
}

impl Backups {
    /// Makes a backup at `now`, with the keys or without.
    pub async fn make(&self, now: Timestamp, with_keys: bool) -> Result<Made, BackupError> {
        let Ok(_making) = self.making.try_lock() else {
            return Err(BackupError::Refused(
                "a backup is being made; ask again when it is done".into(),
            ));
        };
        let recordings = Arc::clone(self.recordings.get().map_err(|why| {
            BackupError::Refused(format!(
                "the recordings are unavailable ({why}); no backup made"
            ))
        })?);
        let path = self
            .data_dir
            .join(FOLDER)
            .join(format!("{}.otpgate-backup", now.unix_millis()));
        let made = self.write(&path, &recordings, now, with_keys).await;
        let (sum, contents, store_paused, recordings_paused) = match made {
            Ok(made) => made,
            Err(err) => {
                // A part-made backup may hold the keys: not left behind.
                let _ = std::fs::remove_file(&path);
                return Err(err);
            }
        };
        let bytes = std::fs::metadata(&path).map_err(file_error(&path))?.len();
        Ok(Made {
            path,
            bytes,
            sum,
            contents,
            store_paused,
            recordings_paused,
        })
    }

    /// Writes the backup at `path`: its checksum, what it holds, and how
    /// long the store's writes and the recordings' chunks waited.
    async fn write(
        &self,
        path: &Path,
        recordings: &Arc<Recordings>,
        now: Timestamp,
        with_keys: bool,
    ) -> Result<(String, Contents, Duration, Duration), BackupError> {
        let (store, keys, data_dir, path) = (
            Arc::clone(&self.store),
            Arc::clone(&self.keys),
            self.data_dir.clone(),
            path.to_owned(),
        );
        let started = tokio::task::spawn_blocking(move || {
            clear(path.parent().expect("a backup's path has a folder"))?;
            let mut writer = Writer::create(&path, &keys, now.unix_millis(), with_keys)?;
            files(&mut writer, &data_dir, with_keys)?;
            let waited = Instant::now();
            let snapshot = store.snapshot()?.ok_or_else(|| {
                BackupError::Refused(
                    "the store is in PostgreSQL: back it up with PostgreSQL's own tools \
                     (pg_dump, or a base backup with WAL archiving)"
                        .into(),
                )
            })?;
            let paused = waited.elapsed();
            for (name, pairs) in &snapshot.trees {
                writer.tree(Database::Store, name)?;
                for (key, value) in pairs {
                    writer.pair(key, value)?;
                }
            }
            writer.next_id(Database::Store, snapshot.next_id)?;
            Ok::<_, BackupError>((writer, paused))
        });
        let (mut writer, store_paused) = started.await.map_err(aborted)??;
        let (copied, recordings_paused) = recordings
            .copy_out(move |db, next| {
                let waited = Instant::now();
                let copied = copy_db(&mut writer, Database::Recordings, db, next);
                (copied.map(|()| writer), waited.elapsed())
            })
            .await?;
        let writer = copied?;
        let (sum, contents) = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(aborted)??;
        Ok((sum, contents, store_paused, recordings_paused))
    }
}

fn aborted(err: tokio::task::JoinError) -> BackupError {
    BackupError::Refused(format!("making the backup stopped: {err}"))
}

/// How long a backup waits in the data folder to be taken away: one older
/// was left by an `admin backup` that stopped before it took it.
const UNCLAIMED: Duration = Duration::from_secs(60 * 60);

/// Makes folder `folder` (the owner's only) if it is not there, and removes
/// the backups left unclaimed in it.
fn clear(folder: &Path) -> Result<(), BackupError> {
    crate::files::create_private_dir(folder).map_err(file_error(folder))?;
    for entry in std::fs::read_dir(folder).map_err(file_error(folder))? {
        let entry = entry.map_err(file_error(folder))?;
        let path = entry.path();
        let unclaimed = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > UNCLAIMED));
        if unclaimed {
            std::fs::remove_file(&path).map_err(file_error(&path))?;
        }
    }
    Ok(())
}

/// Writes the data folder's secret and PKI (its keys only `with_keys`).
fn files(writer: &mut Writer, data_dir: &Path, with_keys: bool) -> Result<(), BackupError> {
    let mut names = vec![
        SECRET_FILE.to_owned(),
        crate::server::INITIAL_PASSWORD_FILE.to_owned(),
    ];
    let pki = data_dir.join("pki");
    let mut in_pki = Vec::new();
    for entry in std::fs::read_dir(&pki).map_err(file_error(&pki))? {
        let entry = entry.map_err(file_error(&pki))?;
        if entry.file_type().map_err(file_error(&pki))?.is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            in_pki.push(format!("pki/{name}"));
        }
    }
    in_pki.sort();
    names.extend(in_pki);
    for name in names {
        if is_key(&name) && !with_keys {
            continue;
        }
        let path = data_dir.join(&name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(BackupError::File { path, source }),
        };
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path)
                .map_err(file_error(&path))?
                .permissions(),
        );
        writer.file(name, mode & 0o777, bytes)?;
    }
    Ok(())
}

/// Writes every tree of `db` as `database`'s, then the id its copy starts
/// from.
fn copy_db(
    writer: &mut Writer,
    database: Database,
    db: &sled::Db,
    next_id: u64,
) -> Result<(), BackupError> {
    for tree in copy::trees(db)? {
        writer.tree(database, &tree.name())?;
        for pair in tree.iter() {
            let (key, value) = pair.map_err(otpgate_actors::StoreError::from)?;
            writer.pair(&key, &value)?;
        }
    }
    writer.next_id(database, next_id)
}

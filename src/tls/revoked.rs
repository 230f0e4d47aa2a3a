//! Revoked client certificates, in `<data>/pki/revoked.txt`: one line per
//! revocation, `NAME UNIX_SECONDS`, meaning that every certificate of client
//! computer NAME issued at or before that second is refused, on every
//! connection, resumed or not. A certificate issued later for the same NAME (a
//! replacement) is not.
//!
//! With the store in PostgreSQL, revocations are kept in its table
//! `revocations` instead (the same name and second), and the file is still
//! read: what was revoked before the site moved, or by `certs revoke` while
//! no server ran, holds.

use std::collections::HashMap;
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use otpgate_actors::ComputerId;
use otpgate_actors::store::{Order, REVOCATIONS, SideDb, SideTable, SideWrite, StoreError};

use crate::tls::pki::{ClientCert, PkiError};

/// The revocation list of a data folder, in memory and on disk (or in
/// the store's database).
pub struct Revocations {
    path: PathBuf,
    /// Where revocations are written, when not to the file.
    table: Option<(SideDb, SideTable)>,
    /// Held while a revocation is written: two of one computer at once
    /// leave the later one stored.
    writing: Mutex<()>,
    /// The latest revocation of each computer.
    latest: RwLock<HashMap<ComputerId, i64>>,
}

impl Revocations {
    /// The list in data folder `data` (empty if it has none yet).
    pub fn load(data: &Path) -> Result<Self, PkiError> {
        let path = data.join("pki").join("revoked.txt");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(PkiError::Io { path, source }),
        };
        let mut revoked = Vec::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let parsed = line.split_once(' ').and_then(|(name, at)| {
                Some((
                    name.parse::<ComputerId>().ok()?,
                    at.trim().parse::<i64>().ok()?,
                ))
            });
            let Some((id, at)) = parsed else {
                return Err(PkiError::Revocations {
                    path,
                    line: line.to_owned(),
                });
            };
            revoked.push((id, at));
        }
        let list = Self {
            path,
            table: None,
            writing: Mutex::default(),
            latest: RwLock::default(),
        };
        for (id, at) in revoked {
            list.remember(id, at);
        }
        Ok(list)
    }

    /// [`Revocations::revoke`] of the certificates of `id` issued at or
    /// before Unix second `seconds`, on a blocking thread (its write
    /// blocks).
    pub async fn revoke_off_runtime(
        self: &Arc<Self>,
        id: &ComputerId,
        seconds: i64,
    ) -> Result<(), PkiError> {
        let (list, id) = (Arc::clone(self), id.clone());
        tokio::task::spawn_blocking(move || list.revoke(&id, seconds))
            .await
            .unwrap_or_else(|err| Err(StoreError::Unavailable(err.to_string()).into()))
    }

    /// Keeps revocations in table [`REVOCATIONS`] of `db` (the store's
    /// PostgreSQL database) from now on, with those it holds; the file's
    /// that it lacks are written to it. Blocks.
    pub fn keep_in(&mut self, db: SideDb) -> Result<(), PkiError> {
        let table = db.table(REVOCATIONS)?;
        let held = held_in(&table)?;
        let missing: Vec<(ComputerId, [u8; 8])> = self
            .latest()
            .iter()
            .filter(|(id, at)| held.get(*id).is_none_or(|held| held < *at))
            .map(|(id, at)| (id.clone(), at.to_be_bytes()))
            .collect();
        let writes: Vec<_> = missing
            .iter()
            .map(|(id, at)| SideWrite::Put(&table, id.as_str().as_bytes(), at))
            .collect();
        if !writes.is_empty() {
            db.write(&writes)?;
            db.flush_blocking()?;
        }
        for (id, at) in held {
            self.remember(id, at);
        }
        self.table = Some((db, table));
        Ok(())
    }

    /// Revokes every certificate of `id` issued at or before `at` (Unix
    /// seconds): written to disk and synced (or committed) before it takes
    /// effect. Blocks.
    pub fn revoke(&self, id: &ComputerId, at: i64) -> Result<(), PkiError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        match &self.table {
            Some((db, table)) => {
                let kept = self.latest().get(id).map_or(at, |&before| before.max(at));
                db.write(&[SideWrite::Put(
                    table,
                    id.as_str().as_bytes(),
                    &kept.to_be_bytes(),
                )])?;
                // In force from now on, even if the commit fails (it is
                // then retried with the next): refused rather than not.
                self.remember(id.clone(), at);
                return Ok(db.flush_blocking()?);
            }
            None => {
                let io_error = |source| PkiError::Io {
                    path: self.path.clone(),
                    source,
                };
                let mut file = crate::files::append_private(&self.path).map_err(io_error)?;
                writeln!(file, "{id} {at}").map_err(io_error)?;
                file.sync_all().map_err(io_error)?;
            }
        }
        self.remember(id.clone(), at);
        Ok(())
    }

    /// Reads the table again (another node revoked): the computers whose
    /// revocation is newer than the one known here, each now in force.
    /// Blocks.
    pub fn reload(&self) -> Result<Vec<ComputerId>, PkiError> {
        let Some((_, table)) = &self.table else {
            return Ok(Vec::new());
        };
        let newer: Vec<(ComputerId, i64)> = {
            let latest = self.latest();
            held_in(table)?
                .into_iter()
                .filter(|(id, at)| latest.get(id).is_none_or(|known| known < at))
                .collect()
        };
        Ok(newer
            .into_iter()
            .map(|(id, at)| {
                self.remember(id.clone(), at);
                id
            })
            .collect())
    }

    fn latest(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ComputerId, i64>> {
        self.latest.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the revocation of `id` at `at` in, the latest one counting.
    fn remember(&self, id: ComputerId, at: i64) {
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        let entry = latest.entry(id).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// Whether `cert` is revoked.
    pub fn refuses(&self, cert: &ClientCert) -> bool {
        self.latest()
            .get(&cert.id)
            .is_some_and(|&at| cert.issued <= at)
    }
}

/// The latest revocation of each computer in `table`. Blocks.
fn held_in(table: &SideTable) -> Result<HashMap<ComputerId, i64>, PkiError> {
    let mut held = HashMap::new();
    let everything = (Bound::Unbounded, Bound::Unbounded);
    for pair in table.range(everything, Order::Oldest) {
        let (name, at) = pair?;
        let revoked = std::str::from_utf8(&name)
            .ok()
            .and_then(|name| name.parse::<ComputerId>().ok())
            .zip(at.try_into().ok().map(i64::from_be_bytes));
        let Some((id, at)) = revoked else {
            return Err(StoreError::BadKey { tree: REVOCATIONS }.into());
        };
        held.insert(id, at);
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str, issued: i64) -> ClientCert {
        ClientCert {
            id: name.parse().unwrap(),
            issued,
            expires: issued + 1000,
            serial: "40".repeat(16),
        }
    }

    #[test]
    fn a_revocation_refuses_older_certificates_only_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pki")).unwrap();
        let list = Revocations::load(dir.path()).unwrap();
        assert!(!list.refuses(&cert("ws-1", 100)));
        list.revoke(&"ws-1".parse().unwrap(), 150).unwrap();
        for list in [list, Revocations::load(dir.path()).unwrap()] {
            assert!(list.refuses(&cert("ws-1", 100)));
            assert!(list.refuses(&cert("ws-1", 150)));
            assert!(!list.refuses(&cert("ws-1", 151)), "issued after it");
            assert!(!list.refuses(&cert("ws-2", 100)), "another computer");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("pki/revoked.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("pki/revoked.txt"), "ws-1 soon\n").unwrap();
        assert!(matches!(
            Revocations::load(dir.path()),
            Err(PkiError::Revocations { .. })
        ));
    }
}

//! Revoked client certificates, in `<data>/pki/revoked.txt`: one line per
//! revocation, `NAME UNIX_SECONDS`, meaning that every certificate of client
//! computer NAME issued at or before that second is refused, on every
//! connection, resumed or not. A certificate issued later for the same NAME (a
//! replacement) is not.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use otpgate_actors::ComputerId;

use crate::tls::pki::{ClientCert, PkiError};

/// The revocation list of a data folder, in memory and on disk.
#[derive(Debug)]
pub struct Revocations {
    path: PathBuf,
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
        let mut latest = HashMap::new();
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
            let entry = latest.entry(id).or_insert(at);
            *entry = (*entry).max(at);
        }
        Ok(Self {
            path,
            latest: RwLock::new(latest),
        })
    }

    /// Revokes every certificate of `id` issued at or before `at` (Unix
    /// seconds): written to disk and synced before it takes effect.
    pub fn revoke(&self, id: &ComputerId, at: i64) -> Result<(), PkiError> {
        let io_error = |source| PkiError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = crate::files::append_private(&self.path).map_err(io_error)?;
        writeln!(file, "{id} {at}").map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
        let entry = latest.entry(id.clone()).or_insert(at);
        *entry = (*entry).max(at);
        Ok(())
    }

    /// Whether `cert` is revoked.
    pub fn refuses(&self, cert: &ClientCert) -> bool {
        let latest = self.latest.read().unwrap_or_else(PoisonError::into_inner);
        latest.get(&cert.id).is_some_and(|&at| cert.issued <= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str, issued: i64) -> ClientCert {
        ClientCert {
            id: name.parse().unwrap(),
            issued,
            expires: issued + 1000,
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

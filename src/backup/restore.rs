//! Putting a backup back, into a new data folder, while no server runs on it.
//!
//! The checksum and the seal are checked before anything is written; the
//! folder is built beside the target and renamed into place only once it is
//! whole. Then every OTP that was live when the backup was made is voided
//! (and the messages carrying one dropped from the outbox): an OTP used after
//! the backup was made is live in it, and must not open a login again. The
//! people concerned may ask for a new one at once (the once-an-hour rule
//! starts again for them). A `restore` entry in the audit log says so.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use otpgate_actors::audit::{Action, AuditEntry, Who};
use otpgate_actors::mail::outbox::MailKind;
use otpgate_actors::otp::{OtpKeys, OtpState};
use otpgate_actors::store::copy::Loader;
use otpgate_actors::{KvStore, Store, Timestamp};

use super::{BackupError, Contents, Database, Part, SECRET_FILE, Sealed, file_error, is_key};

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// When the backup was made.
    pub made_at: Timestamp,
    /// The release that made it.
    pub release: String,
    /// Its SHA-256, hex.
    pub sum: String,
    /// Whose secret the seal was checked with.
    pub sealed_with: String,
    /// What it held.
    pub contents: Contents,
    /// OTPs live at the backup, voided.
    pub voided: usize,
    /// Messages carrying one, dropped from the outbox.
    pub dropped: usize,
}

/// Puts the backup at `file` back into data folder `data_dir` (absent or
/// empty), taking the secret and keys from data folder `keys_from` when
/// given (required for a backup made without keys; otherwise it proves who
/// made the backup).
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    keys_from: Option<&Path>,
    now: Timestamp,
) -> Result<Restored, BackupError> {
    let building = building_beside(data_dir)?;
    let sealed = Sealed::open(file)?;
    let (secret, sealed_with) = match keys_from {
        Some(dir) => {
            let path = dir.join(SECRET_FILE);
            let secret = Zeroizing::new(std::fs::read(&path).map_err(file_error(&path))?);
            (secret, format!("the secret in {}", dir.display()))
        }
        None => (
            sealed.secret_inside()?,
            "the secret it holds (which proves it whole, not who made it: --keys-from with \
             the site's data folder proves that)"
                .to_owned(),
        ),
    };
    sealed.check_seal(&OtpKeys::derive(&secret), &sealed_with)?;

    let mut parts = sealed.parts()?;
    let Part::Header {
        made_at,
        release,
        keys,
    } = parts.next()?
    else {
        return Err(BackupError::Malformed("no header".into()));
    };
    if !keys && keys_from.is_none() {
        return Err(BackupError::NoKeys);
    }
    let built = async {
        let mut contents = Contents::default();
        let first = loop {
            match parts.next()? {
                Part::File { path, mode, bytes } => {
                    check_file(&path, keys)?;
                    put_file(&building, &path, mode, &Zeroizing::new(bytes))?;
                    contents.files.push(path);
                }
                other => break other,
            }
        };
        if let (false, Some(dir)) = (keys, keys_from) {
            copy_keys(dir, &building, &mut contents)?;
        }
        load(&mut parts, first, &building, &mut contents)?;
        let (voided, dropped) = void_live_otps(&building, made_at, now).await?;
        for dir in [building.join("pki"), building.clone()] {
            crate::files::sync_dir(&dir).map_err(file_error(&dir))?;
        }
        Ok::<_, BackupError>((contents, voided, dropped))
    };
    let (contents, voided, dropped) = match built.await {
        Ok(built) => built,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(err);
        }
    };
    if data_dir.exists() {
        std::fs::remove_dir(data_dir).map_err(file_error(data_dir))?;
    }
    std::fs::rename(&building, data_dir).map_err(file_error(data_dir))?;
    if let Some(parent) = data_dir.parent() {
        crate::files::sync_dir(parent).map_err(file_error(parent))?;
    }
    Ok(Restored {
        made_at: Timestamp::from_unix_millis(made_at),
        release,
        sum: sealed.sum,
        sealed_with,
        contents,
        voided,
        dropped,
    })
}

/// Makes the folder the restore is built in, beside `data_dir` (which must
/// be absent or empty), the owner's only; removes what an earlier restore
/// killed on the way left there.
fn building_beside(data_dir: &Path) -> Result<PathBuf, BackupError> {
    match std::fs::read_dir(data_dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => return Err(BackupError::NotEmpty(data_dir.to_owned())),
        Ok(false) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BackupError::File {
                path: data_dir.to_owned(),
                source,
            });
        }
    }
    let name = data_dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| BackupError::Refused(format!("{}: not a folder", data_dir.display())))?;
    let stale = format!("{name}{BUILDING}");
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for entry in std::fs::read_dir(parent).map_err(file_error(parent))? {
        let path = entry.map_err(file_error(parent))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&stale))
        {
            std::fs::remove_dir_all(&path).map_err(file_error(&path))?;
        }
    }
    let suffix: u64 = rand::random();
    let building = data_dir.with_file_name(format!("{stale}{suffix:016x}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&building)
        .map_err(file_error(&building))?;
    Ok(building)
}

/// What the name of a folder being built ends with, before a random part.
const BUILDING: &str = ".restoring-";

/// Refuses a file a backup cannot hold: anything but the secret, the first
/// administrator's password and the PKI's files, and any key in a backup
/// said to hold none.
fn check_file(path: &str, keys: bool) -> Result<(), BackupError> {
    let allowed = match path.split_once('/') {
        None => path == SECRET_FILE || path == crate::server::INITIAL_PASSWORD_FILE,
        Some((dir, name)) => {
            dir == "pki" && !name.is_empty() && !name.contains('/') && !name.starts_with('.')
        }
    };
    if !allowed || (is_key(path) && !keys) {
        return Err(BackupError::Malformed(format!(
            "a file it may not hold: {path:?}"
        )));
    }
    Ok(())
}

/// Writes file `path` of the data folder `dir`, with `mode` at most 0644.
fn put_file(dir: &Path, path: &str, mode: u32, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let target = dir.join(path);
    if let Some(parent) = target.parent() {
        crate::files::create_private_dir(parent).map_err(file_error(parent))?;
    }
    let mode = if is_key(path) { 0o600 } else { mode & 0o644 };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&target)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(file_error(&target))
}

/// Copies the secret and the PKI's keys from data folder `from`.
fn copy_keys(from: &Path, to: &Path, contents: &mut Contents) -> Result<(), BackupError> {
    let pki = from.join("pki");
    let mut names = vec![SECRET_FILE.to_owned()];
    for entry in std::fs::read_dir(&pki).map_err(file_error(&pki))? {
        let entry = entry.map_err(file_error(&pki))?;
        if let Some(name) = entry.file_name().to_str().map(|name| format!("pki/{name}"))
            && is_key(&name)
        {
            names.push(name);
        }
    }
    for name in names {
        let path = from.join(&name);
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(file_error(&path))?);
        put_file(to, &name, 0o600, &bytes)?;
        contents.files.push(name);
    }
    Ok(())
}

/// How far above the backup's next id a restored database starts: the
/// server it was made from went on handing out ids after it, and none of
/// those (a request id in an approver's signed link, say) may name another
/// record here.
const AFTER_BACKUP: u64 = 1 << 40;

/// Loads the databases from `parts`, `first` the one read already, into
/// data folder `dir`.
fn load(
    parts: &mut super::Parts,
    first: Part,
    dir: &Path,
    contents: &mut Contents,
) -> Result<(), BackupError> {
    let mut loading: Option<(Database, Loader)> = None;
    let mut loaded = Vec::new();
    let mut part = first;
    loop {
        match part {
            Part::Tree { database, name } => {
                if loading.as_ref().is_none_or(|(open, _)| *open != database) {
                    if loading.is_some() || loaded.contains(&database) {
                        return Err(BackupError::Malformed("a database out of place".into()));
                    }
                    loading = Some((database, Loader::create(&dir.join(database.folder()))?));
                }
                let (_, loader) = loading.as_mut().expect("set above");
                loader.tree(&name)?;
                contents.tree(database, &name);
            }
            Part::Pairs(pairs) => {
                let (_, loader) = loading
                    .as_ref()
                    .ok_or_else(|| BackupError::Malformed("pairs outside a tree".into()))?;
                for (key, value) in &pairs {
                    loader.put(key, value)?;
                }
                contents.count(pairs.len() as u64);
            }
            Part::NextId { database, next } => {
                let (open, loader) = match loading.take() {
                    Some(open) => open,
                    // A database with no trees at all.
                    None => (database, Loader::create(&dir.join(database.folder()))?),
                };
                if open != database {
                    return Err(BackupError::Malformed("a database out of place".into()));
                }
                loader.finish(next.saturating_add(AFTER_BACKUP))?;
                loaded.push(database);
            }
            Part::End if loading.is_none() && loaded.contains(&Database::Store) => return Ok(()),
            Part::End | Part::Header { .. } | Part::File { .. } => {
                return Err(BackupError::Malformed("parts out of order".into()));
            }
        }
        part = parts.next()?;
    }
}

/// Voids, in the store of data folder `dir`, every OTP live when the backup
/// was made (`made_at`), drops the messages carrying one, and says so in the
/// audit log: how many of each.
async fn void_live_otps(
    dir: &Path,
    made_at: u64,
    now: Timestamp,
) -> Result<(usize, usize), BackupError> {
    let store = KvStore::open(&dir.join(Database::Store.folder()))?;
    let mut voided = Vec::new();
    for (computer, os_user, mut slot) in store.every_slot().await? {
        if let Some(otp) = slot.otp.as_mut()
            && otp.state == OtpState::Live
        {
            otp.end(OtpState::Expired);
            slot.last_new = None;
            voided.push((computer, os_user, slot));
        }
    }
    for (computer, os_user, slot) in &voided {
        store.put_slot(computer, os_user, slot)?;
    }
    let mut dropped = 0;
    for entry in store.outbox().await? {
        if matches!(entry.kind, MailKind::Otp { .. }) {
            store.remove_outbox(entry.id)?;
            dropped += 1;
        }
    }
    store.append_audit(&AuditEntry {
        at: now,
        who: Who::Server,
        computer: None,
        action: Action::Restore,
        outcome: format!(
            "restored from the backup made at {}; {} OTPs live then voided, {dropped} messages \
             carrying one dropped",
            otpgate_actors::clock::shown(made_at),
            voided.len()
        ),
    })?;
    store.flush().await?;
    Ok((voided.len(), dropped))
}

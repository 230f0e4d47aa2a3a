//! Writing the files that hold secrets and state: created with mode 0600 (folders
//! 0700), written whole to a temporary name and renamed into place, so a crash
//! never leaves half a key behind.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Creates folder `path` (and its parents) with mode 0700 if it does not exist.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Writes `contents` to `path` with mode 0600, replacing any file there.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes each of `files` (a path in folder `dir` and its contents) as
/// [`write_private`] would, but makes them durable together: every one is
/// written under a temporary name, one `syncfs` makes them all durable (one
/// pass over the filesystem and one device flush, where a sync per file
/// costs both every time; on a kernel whose `syncfs` does not report a
/// failed write, each file is synced on its own instead), then each is
/// renamed into place and the folder is synced once. A path that exists
/// already is left as it is. An outer error means the batch is not known to
/// be durable (if only the folder's sync failed, the files are in place: a
/// retry finds them there); the inner ones, that one file was not written;
/// `Ok(true)` that a file was written, `Ok(false)` that it was there.
pub fn write_private_together(
    dir: &Path,
    files: &[(PathBuf, Vec<u8>)],
) -> io::Result<Vec<io::Result<bool>>> {
    let together = syncfs_reports_errors();
    let mut written: Vec<io::Result<Option<(OsString, fs::File)>>> = files
        .iter()
        .map(|(path, contents)| {
            if path.try_exists()? {
                return Ok(None);
            }
            let (tmp, mut file) = create_tmp(path, 0o600)?;
            let filled = file
                .write_all(contents)
                .and_then(|()| if together { Ok(()) } else { file.sync_all() });
            match filled {
                Ok(()) => Ok(Some((tmp, file))),
                Err(err) => {
                    // It holds part of a message: not left behind.
                    let _ = fs::remove_file(&tmp);
                    Err(err)
                }
            }
        })
        .collect();
    fn open(written: &io::Result<Option<(OsString, fs::File)>>) -> Option<&(OsString, fs::File)> {
        written.as_ref().ok()?.as_ref()
    }
    let first = written.iter().find_map(open);
    if let (true, Some((_, file))) = (together, first)
        && let Err(err) = nix::unistd::syncfs(file)
    {
        for (tmp, _) in written.iter().filter_map(open) {
            let _ = fs::remove_file(tmp);
        }
        return Err(err.into());
    }
    let renamed = files
        .iter()
        .zip(written.iter_mut())
        .map(
            |((path, _), written)| match std::mem::replace(written, Ok(None)) {
                Ok(Some((tmp, _))) => fs::rename(tmp, path).map(|()| true),
                Ok(None) => Ok(false),
                Err(err) => Err(err),
            },
        )
        .collect();
    sync_dir(dir)?;
    Ok(renamed)
}

/// Whether this kernel's `syncfs` reports a write that failed (Linux 5.8 and
/// later); before, it said nothing of it.
fn syncfs_reports_errors() -> bool {
    static REPORTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REPORTS.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| release_at_least(&release, (5, 8)))
            .unwrap_or(false)
    })
}

/// Whether kernel release `release` ("6.1.0-18-amd64") is `want` or later;
/// `None` if it cannot be read.
fn release_at_least(release: &str, want: (u32, u32)) -> Option<bool> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= want)
}

/// Makes the names written into folder `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Takes away from `path` every permission `mode` does not give (a folder or key
/// someone made readable to others); the mode it had, if it changed. A missing
/// path is left alone.
pub fn tighten(path: &Path, mode: u32) -> io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let had = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    if had & !mode == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(had & mode))?;
    Ok(Some(had))
}

/// Opens `path` for appending, created with mode 0600 (and its name made
/// durable) if it does not exist. A crash may cut off the last line written.
pub fn append_private(path: &Path) -> io::Result<fs::File> {
    let created = !path.exists();
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    if created && let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(file)
}

/// Writes `contents` to `path` with mode 0644 (for certificates, which are public).
pub fn write_public(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_and_rename(path, contents, mode)?;
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Writes `contents` to a temporary name beside `path`, makes them durable and
/// renames the file into place.
fn write_and_rename(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let (tmp, mut file) = create_tmp(path, mode)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(tmp, path)
}

/// Creates a new, empty file with `mode` under a temporary name beside `path`
/// (a leftover of a crash there is removed first); returns the name and the file.
fn create_tmp(path: &Path, mode: u32) -> io::Result<(OsString, fs::File)> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
    };
    let file = match create() {
        // A leftover from a crash may have other permissions: start afresh.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&tmp)?;
            create()?
        }
        opened => opened?,
    };
    Ok((tmp, file))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_files_and_folders_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        create_private_dir(&folder).unwrap();
        let key = folder.join("key");
        write_private(&key, b"one").unwrap();
        write_private(&key, b"two").unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"two");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&folder), 0o700);
        assert!(!folder.join("key.tmp").exists());
        // A leftover from a crash, readable by others, is replaced.
        fs::write(folder.join("key.tmp"), b"old").unwrap();
        fs::set_permissions(folder.join("key.tmp"), fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&key, b"three").unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"three");
        assert_eq!(mode(&key), 0o600);
    }

    #[test]
    fn files_written_together_are_whole_private_and_never_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<_> = (0..3)
            .map(|i| {
                let path = dir.path().join(format!("{i}.eml"));
                (path, format!("message {i}").into_bytes())
            })
            .collect();
        // One was written before a crash; another left a temporary behind.
        fs::write(&files[0].0, b"kept").unwrap();
        fs::write(dir.path().join("1.eml.tmp"), b"half").unwrap();
        let written = write_private_together(dir.path(), &files).unwrap();
        let written: Vec<bool> = written.into_iter().map(Result::unwrap).collect();
        assert_eq!(written, [false, true, true]);
        assert_eq!(fs::read_to_string(&files[0].0).unwrap(), "kept");
        for (path, contents) in &files[1..] {
            assert_eq!(&fs::read(path).unwrap(), contents);
            assert_eq!(
                fs::metadata(path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            3,
            "no temporary left"
        );
        // Nothing to write is no error.
        assert!(write_private_together(dir.path(), &[]).unwrap().is_empty());
    }

    #[test]
    fn kernel_releases_are_read_by_major_and_minor() {
        for (release, at_least) in [
            ("6.1.0-18-amd64\n", Some(true)),
            ("5.8.0", Some(true)),
            ("5.10.0-28-cloud-amd64", Some(true)),
            ("5.7.19", Some(false)),
            ("4.18.0-553.el8_10.x86_64", Some(false)),
            ("garbage", None),
        ] {
            assert_eq!(release_at_least(release, (5, 8)), at_least, "{release}");
        }
    }
}

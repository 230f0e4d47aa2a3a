//! `otpgate admin backup` (the running server makes it; this takes it where
//! the operator said) and `otpgate restore` (a new data folder from one).

use std::fmt::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use otpgate_actors::clock::shown;
use otpgate_actors::{Clock, SystemClock};
use otpgate_protocol::admin::{AdminRequest, AdminResponse, BackupView};

use crate::backup::make::FOLDER;
use crate::backup::restore::{Restored, restore as put_back};
use crate::cli::admin::report;
use crate::server::admin::socket_path;
use crate::unix;

/// `admin backup --out FILE`: has the server make a backup, then moves it to
/// `out` (a new file).
pub(super) async fn backup(
    data_dir: &Path,
    out: &Path,
    keys: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if out.exists() {
        // Said before the server makes one; made sure of when it is written.
        anyhow::bail!("{}: exists; give a new file", out.display());
    }
    let request = AdminRequest::Backup { keys };
    let mut view = match unix::ask(&socket_path(data_dir), &request).await? {
        AdminResponse::BackedUp(view) => view,
        other => return report(&other, json),
    };
    // The server's path is its own view of the data folder: found here
    // through ours.
    let name = Path::new(&view.path)
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("the server named no backup file"))?;
    let made = data_dir.join(FOLDER).join(name);
    take(&made, out)?;
    view.path = out.display().to_string();
    report(&AdminResponse::BackedUp(view), json)
}

/// Moves the server's file `from` to `to`, a new file of the caller's: copied
/// (never a symbolic link followed, never a file replaced), made durable, then
/// removed from the server's folder.
fn take(from: &Path, to: &Path) -> anyhow::Result<()> {
    use anyhow::Context;

    let mut source = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(from)
        .with_context(|| from.display().to_string())?;
    if !source.metadata()?.is_file() {
        anyhow::bail!("{}: not a file", from.display());
    }
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| to.display().to_string())?;
    std::io::copy(&mut source, &mut target).with_context(|| to.display().to_string())?;
    target.sync_all()?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::files::sync_dir(parent).with_context(|| parent.display().to_string())?;
    }
    std::fs::remove_file(from).with_context(|| from.display().to_string())?;
    Ok(())
}

/// A backup made, in words.
pub(super) fn describe(out: &mut String, b: &BackupView) {
    let keys = if b.keys {
        "with the secret and the private keys: keep it as you keep them"
    } else {
        "without the secret and the private keys: restore with --keys-from"
    };
    let _ = writeln!(
        out,
        "backup written to {}\n{} bytes, SHA-256 {}\nmade {}, {keys}",
        b.path,
        b.bytes,
        b.sha256,
        shown(b.made_at)
    );
    let _ = writeln!(out, "files: {}", b.files.join(", "));
    for (tree, count) in &b.trees {
        let _ = writeln!(out, "  {tree:32} {count}");
    }
    let _ = write!(
        out,
        "the store's writes waited {:.1} ms for its copy; recording chunks {:.1} ms",
        b.store_paused_us as f64 / 1000.0,
        b.recordings_paused_us as f64 / 1000.0
    );
}

/// `restore FILE --data-dir DIR [--keys-from DIR]`.
pub(super) async fn restore(
    file: &Path,
    data_dir: &Path,
    keys_from: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    // What is rebuilt is the owner's only, as the server makes it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let restored = put_back(file, data_dir, keys_from, SystemClock.now()).await?;
    println!("{}", describe_restored(&restored, data_dir));
    Ok(ExitCode::SUCCESS)
}

fn describe_restored(r: &Restored, data_dir: &Path) -> String {
    let mut out = format!(
        "restored into {} the backup made {} by otpgate {}\nSHA-256 {}; seal checked with {}\n\
         files: {}\n",
        data_dir.display(),
        shown(r.made_at.unix_millis()),
        r.release,
        r.sum,
        r.sealed_with,
        r.contents.files.join(", ")
    );
    for (tree, count) in &r.contents.trees {
        let _ = writeln!(out, "  {tree:32} {count}");
    }
    let _ = write!(
        out,
        "{} OTPs live when it was made are void (their people may ask for a new one at once); \
         {} messages carrying one were dropped from the outbox",
        r.voided, r.dropped
    );
    out
}

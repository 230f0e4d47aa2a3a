//! A backup file read back: every way of being damaged, forged or hostile is
//! refused before anything is written, and what it holds comes back whole.

use std::path::Path;

use otpgate_actors::otp::OtpKeys;
use otpgate_actors::{KvStore, Store, Timestamp};

use super::restore::restore;
use super::*;

const SECRET: [u8; 32] = [7; 32];
const MADE_AT: u64 = 1_796_601_600_000;

fn now() -> Timestamp {
    Timestamp::from_unix_millis(MADE_AT + 60_000)
}

/// A backup at `path` sealed with `secret`, holding what `fill` writes
/// after its header.
fn written(path: &Path, secret: &[u8], keys: bool, fill: impl FnOnce(&mut Writer)) {
    let mut writer = Writer::create(path, &OtpKeys::derive(secret), MADE_AT, keys).unwrap();
    fill(&mut writer);
    writer.finish().unwrap();
}

/// The files and one store of a small site, as a backup holds them.
fn site(writer: &mut Writer) {
    writer
        .file(SECRET_FILE.into(), 0o600, SECRET.to_vec())
        .unwrap();
    writer
        .file("pki/ca.pem".into(), 0o644, b"CERT".to_vec())
        .unwrap();
    store(writer);
}

fn store(writer: &mut Writer) {
    writer.tree(Database::Store, b"users").unwrap();
    writer.pair(b"alice", b"\x01record").unwrap();
    writer.next_id(Database::Store, 1000).unwrap();
}

async fn restored(file: &Path, data: &Path, keys_from: Option<&Path>) -> Result<(), BackupError> {
    restore(file, data, keys_from, now()).await.map(|_| ())
}

/// Restores `file` into `data`: refused as malformed, nothing written.
async fn refused_as_malformed(file: &Path, data: &Path, keys_from: Option<&Path>) {
    let refused = restored(file, data, keys_from).await;
    assert!(
        matches!(refused, Err(BackupError::Malformed(_))),
        "{refused:?}"
    );
    assert!(!data.exists());
}

#[tokio::test]
async fn what_a_backup_holds_comes_back_with_ids_above_the_originals() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    written(&file, &SECRET, true, site);
    let data = dir.path().join("data");
    let done = restore(&file, &data, None, now()).await.unwrap();
    assert_eq!(done.contents.trees, vec![("db/users".to_owned(), 1)]);
    assert!(done.sealed_with.contains("the secret it holds"));
    assert_eq!(std::fs::read(data.join(SECRET_FILE)).unwrap(), SECRET);
    assert_eq!(std::fs::read(data.join("pki/ca.pem")).unwrap(), b"CERT");
    let store = KvStore::open(&data.join("db")).unwrap();
    assert!(
        store.next_id().await.unwrap() >= 1000 + (1 << 40),
        "ids go on far above the copy's: the original went on handing them out"
    );
    let audit =
        otpgate_actors::store::all(|before| store.audit_from(before, otpgate_actors::store::BATCH))
            .await
            .unwrap();
    assert_eq!(audit.len(), 1, "the restore is said in the audit log");
    assert!(audit[0].outcome.contains("0 OTPs live then voided"));
}

#[tokio::test]
async fn a_damaged_or_truncated_file_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    written(&file, &SECRET, true, site);
    let data = dir.path().join("data");
    let whole = std::fs::read(&file).unwrap();

    let mut flipped = whole.clone();
    flipped[whole.len() / 2] ^= 1;
    std::fs::write(&file, &flipped).unwrap();
    assert!(matches!(
        restored(&file, &data, None).await,
        Err(BackupError::Damaged)
    ));

    std::fs::write(&file, &whole[..whole.len() - 1]).unwrap();
    assert!(matches!(
        restored(&file, &data, None).await,
        Err(BackupError::Damaged)
    ));

    std::fs::write(
        &file,
        b"PK\x03\x04 some other archive, long enough to be read",
    )
    .unwrap();
    assert!(matches!(
        restored(&file, &data, None).await,
        Err(BackupError::NotABackup)
    ));
    assert!(!data.exists());
}

#[tokio::test]
async fn a_backup_sealed_by_another_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    // Made by someone without the site's secret, holding one of their own:
    // whole, but --keys-from with the site's folder shows it is not ours.
    written(&file, &[9; 32], true, |writer| {
        writer.file(SECRET_FILE.into(), 0o600, vec![9; 32]).unwrap();
        store(writer);
    });
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join(SECRET_FILE), SECRET).unwrap();
    let data = dir.path().join("data");
    let refused = restored(&file, &data, Some(&site)).await;
    assert!(matches!(refused, Err(BackupError::Seal(_))), "{refused:?}");
    assert!(!data.exists());
}

#[tokio::test]
async fn a_sealed_backup_naming_a_file_outside_the_pki_is_refused() {
    for (path, keys) in [
        ("../escaped", true),
        ("pki/../../escaped", true),
        ("/etc/escaped", true),
        ("db/conf", true),
        ("pki/", true),
        // A key in a backup said to hold none.
        ("pki/ca.key", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b");
        written(&file, &SECRET, keys, |writer| {
            writer
                .file(SECRET_FILE.into(), 0o600, SECRET.to_vec())
                .unwrap();
            writer.file(path.into(), 0o600, b"x".to_vec()).unwrap();
            store(writer);
        });
        let site = dir.path().join("site");
        std::fs::create_dir_all(site.join("pki")).unwrap();
        std::fs::write(site.join(SECRET_FILE), SECRET).unwrap();
        let data = dir.path().join("data");
        let refused = restored(&file, &data, Some(&site)).await;
        assert!(
            matches!(refused, Err(BackupError::Malformed(_))),
            "{path}: {refused:?}"
        );
        assert!(
            !data.exists() && !dir.path().join("escaped").exists(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn parts_out_of_order_are_refused_and_the_folder_is_not_left_half_built() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    written(&file, &SECRET, true, |writer| {
        writer
            .file(SECRET_FILE.into(), 0o600, SECRET.to_vec())
            .unwrap();
        writer
            .part(&Part::Pairs(vec![(b"k".to_vec(), b"v".to_vec())]))
            .unwrap();
    });
    let data = dir.path().join("data");
    refused_as_malformed(&file, &data, None).await;
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the backup: {left:?}");

    // No store at all.
    written(&file.with_extension("2"), &SECRET, true, |writer| {
        writer
            .file(SECRET_FILE.into(), 0o600, SECRET.to_vec())
            .unwrap();
    });
    refused_as_malformed(&file.with_extension("2"), &data, None).await;
}

#[tokio::test]
async fn no_more_than_a_prelude_is_read_before_the_seal_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    // A file of 2 MiB ahead of the secret: never read without --keys-from.
    written(&file, &SECRET, true, |writer| {
        writer
            .file("pki/big.pem".into(), 0o644, vec![b'x'; 2 << 20])
            .unwrap();
        writer
            .file(SECRET_FILE.into(), 0o600, SECRET.to_vec())
            .unwrap();
        store(writer);
    });
    let data = dir.path().join("data");
    refused_as_malformed(&file, &data, None).await;
    // With the site's keys given, the seal is checked first and it is read.
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join(SECRET_FILE), SECRET).unwrap();
    restored(&file, &data, Some(&site)).await.unwrap();
    assert_eq!(
        std::fs::read(data.join("pki/big.pem")).unwrap().len(),
        2 << 20
    );
}

#[tokio::test]
async fn a_restore_killed_on_the_way_leaves_nothing_the_next_one_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b");
    written(&file, &SECRET, true, site);
    let left = dir.path().join("data.restoring-0123456789abcdef");
    std::fs::create_dir(&left).unwrap();
    std::fs::write(left.join(SECRET_FILE), SECRET).unwrap();
    restored(&file, &dir.path().join("data"), None)
        .await
        .unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "the backup and the data folder: {names:?}");
}

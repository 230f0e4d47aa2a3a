//! The previous release, built from this repository's own history: its
//! `otpgate` binary (server, agent, login prompt, recorder, admin CLI) and its
//! PAM module, for the tests that run releases side by side.
//!
//! The commit is [`PREVIOUS_RELEASE`]; it is extracted with `git archive` into
//! `target/previous-release/<commit>/src` and built there with a target folder
//! of its own, once: later runs find it built. Where the history is not there
//! (a copy of the tree without `.git`), the tests that need it are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The release in the field before this one: version 1 of every wire.
pub const PREVIOUS_RELEASE: &str = "deb612d";

/// A release's programs.
pub struct Release {
    /// Its `otpgate` binary.
    pub otpgate: PathBuf,
    /// Its `libpam_otpgate.so`.
    pub pam_module: PathBuf,
}

/// The previous release, built if it was not yet; `None` when this checkout
/// has no history to build it from (then `test` says it is skipped).
pub fn previous(test: &str) -> Option<&'static Release> {
    static PREVIOUS: OnceLock<Option<Release>> = OnceLock::new();
    let release = PREVIOUS.get_or_init(|| build(PREVIOUS_RELEASE)).as_ref();
    if release.is_none() {
        let why = format!("the repository's history (commit {PREVIOUS_RELEASE}) is not here");
        super::skip(test, &why);
    }
    release
}

fn build(commit: &str) -> Option<Release> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let known = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !known {
        return None;
    }
    let place = root.join("target/previous-release").join(commit);
    std::fs::create_dir_all(&place).unwrap();
    // Test binaries may build it at the same time: one builds, the others wait.
    let lock = std::fs::File::create(place.join("lock")).unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, err)| err)
        .unwrap();
    let built = place.join("target/debug");
    let release = Release {
        otpgate: built.join("otpgate"),
        pam_module: built.join("libpam_otpgate.so"),
    };
    if release.otpgate.exists() && release.pam_module.exists() {
        return Some(release);
    }
    let src = place.join("src");
    if !src.join("Cargo.toml").exists() {
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).unwrap();
        let mut archive = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["archive", "--format=tar", commit])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let extracted = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&src)
            .stdin(archive.stdout.take().unwrap())
            .status()
            .unwrap();
        let archived = archive.wait().unwrap();
        assert!(
            archived.success() && extracted.success(),
            "cannot extract {commit}"
        );
    }
    eprintln!(
        "building the previous release ({commit}) once, into {}",
        place.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", place.join("target"))
        .args(["build", "--locked", "-p", "otpgate", "-p", "otpgate-pam"])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the previous release ({commit}) does not build"
    );
    assert!(release.otpgate.exists() && release.pam_module.exists());
    Some(release)
}

/// This build's `otpgate` binary.
pub fn this_otpgate() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_otpgate"))
}

/// Runs binary `otpgate` with `args`, `stdin` on its standard input, off
/// the runtime.
pub async fn run(otpgate: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let (otpgate, stdin) = (otpgate.to_owned(), stdin.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        super::run(&otpgate, &args, &stdin)
    })
    .await
    .unwrap()
}

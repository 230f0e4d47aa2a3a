//! The Debian packages as an operator installs them, on this machine: the
//! files and their modes, the system user, `otpgate --version`, the units
//! checked by `systemd-analyze`, the PAM profile offered but off; then
//! purged, and the machine as it was. The packages are built by
//! `scripts/package` (which `scripts/test` runs first).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::system::root_or_skip;
use crate::releases::said;

/// The packages, in the order they install.
const PACKAGES: [&str; 2] = ["otpgate", "libpam-otpgate"];

/// The two `.deb` files `scripts/package` made, if it did.
fn built() -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    PACKAGES
        .iter()
        .map(|name| {
            std::fs::read_dir(&dir)
                .ok()?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|file| {
                            file.starts_with(&format!("{name}_")) && file.ends_with(".deb")
                        })
                })
                .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        })
        .collect()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

/// The installed packages, purged on drop, even when the test fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let purged = run("dpkg", &["--purge", PACKAGES[1], PACKAGES[0]]);
        assert!(
            purged.status.success() || std::thread::panicking(),
            "{}",
            said(&purged)
        );
    }
}

/// What PAM's common stacks say now.
fn pam_stacks() -> Vec<(String, Vec<u8>)> {
    [
        "common-auth",
        "common-session",
        "common-session-noninteractive",
        "common-account",
        "common-password",
    ]
    .into_iter()
    .map(|name| {
        let text = std::fs::read(Path::new("/etc/pam.d").join(name)).unwrap_or_default();
        (name.to_owned(), text)
    })
    .collect()
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{path}: {err}"))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_packages_install_as_an_operator_expects_and_purge_clean() {
    let test = "the_packages_install_as_an_operator_expects_and_purge_clean";
    if !root_or_skip(test) {
        return;
    }
    let Some(debs) = built() else {
        crate::common::skip(
            test,
            "no packages in target/debian (scripts/package makes them)",
        );
        return;
    };
    let listed = run("dpkg-query", &["-W", "-f=${Status}", PACKAGES[0]]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).ends_with(" installed"),
        "otpgate is installed on this machine already: the test would remove it"
    );
    let pam_before = pam_stacks();

    let installed = {
        let debs: Vec<&str> = debs.iter().map(|p| p.to_str().unwrap()).collect();
        let output = run("dpkg", &[&["-i"][..], &debs].concat());
        let installed = Installed;
        assert!(output.status.success(), "dpkg -i: {}", said(&output));
        installed
    };

    // The program, its pages, completions, units and configuration.
    let version = run("/usr/bin/otpgate", &["--version"]);
    assert!(version.status.success());
    assert!(
        String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        said(&version)
    );
    for (path, want) in [
        ("/usr/bin/otpgate", 0o755),
        ("/usr/share/man/man1/otpgate.1.gz", 0o644),
        ("/usr/share/man/man1/otpgate-doctor.1.gz", 0o644),
        ("/usr/share/bash-completion/completions/otpgate", 0o644),
        ("/lib/systemd/system/otpgate.service", 0o644),
        ("/lib/systemd/system/otpgate-agent.service", 0o644),
        ("/etc/otpgate/otpgate.toml", 0o640),
        ("/usr/lib/x86_64-linux-gnu/security/pam_otpgate.so", 0o644),
        ("/usr/share/pam-configs/otpgate", 0o644),
    ] {
        assert_eq!(mode(path), want, "{path}");
    }
    // The server's user, which may read its configuration; nobody else may.
    let user = nix::unistd::User::from_name("otpgate")
        .unwrap()
        .expect("the otpgate user");
    assert!(user.uid.as_raw() < 1000, "a system user: {}", user.uid);
    let config = std::fs::metadata("/etc/otpgate/otpgate.toml").unwrap();
    assert_eq!(config.uid(), 0);
    assert_eq!(config.gid(), user.gid.as_raw());
    // The packaged configuration is one the server takes, and names the
    // unit's StateDirectory.
    let doctor = run(
        "/usr/bin/otpgate",
        &["doctor", "--config", "/etc/otpgate/otpgate.toml", "--json"],
    );
    let checks: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    assert_eq!(checks[0]["check"], "configuration");
    assert_eq!(checks[0]["status"], "OK", "{checks}");
    assert!(said(&doctor).contains("/var/lib/otpgate"), "{checks}");

    // The units as systemd reads them, and how exposed each is.
    for unit in ["otpgate.service", "otpgate-agent.service"] {
        let path = format!("/lib/systemd/system/{unit}");
        let verified = run("systemd-analyze", &["verify", &path]);
        assert!(verified.status.success(), "{unit}: {}", said(&verified));
        let security = said(&run(
            "systemd-analyze",
            &["security", "--offline=yes", &path],
        ));
        // "→ Overall exposure level for otpgate.service: 1.5 OK"
        let score: f64 = security
            .lines()
            .find_map(|line| {
                line.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no exposure level in {security}"));
        eprintln!("{unit}: exposure {score}");
        // As measured when the units were written (1.5 and 2.1): a unit
        // loosened past this is a choice to make here, not by accident.
        assert!(score <= 2.5, "{unit}: exposure {score}\n{security}");
    }

    // The PAM profile is offered, not turned on: the stacks are as they
    // were. Turned on, it asks after the password, and runs in interactive
    // sessions only (not cron's); the purge takes it out again.
    assert_eq!(
        pam_stacks(),
        pam_before,
        "installing changed the PAM stacks"
    );
    let enabled = run("pam-auth-update", &["--enable", "otpgate"]);
    assert!(enabled.status.success(), "{}", said(&enabled));
    let stacks: std::collections::HashMap<_, _> = pam_stacks()
        .into_iter()
        .map(|(name, text)| (name, String::from_utf8_lossy(&text).into_owned()))
        .collect();
    for (stack, wanted) in [
        ("common-auth", true),
        ("common-session", true),
        ("common-session-noninteractive", false),
    ] {
        let text = &stacks[stack];
        assert_eq!(text.contains("pam_otpgate.so"), wanted, "{stack}: {text}");
    }

    drop(installed);
    for path in [
        "/usr/bin/otpgate",
        "/etc/otpgate",
        "/lib/systemd/system/otpgate.service",
        "/usr/lib/x86_64-linux-gnu/security/pam_otpgate.so",
        "/usr/share/pam-configs/otpgate",
    ] {
        assert!(!Path::new(path).exists(), "{path} is left after the purge");
    }
    assert!(
        nix::unistd::User::from_name("otpgate").unwrap().is_none(),
        "the user is left"
    );
    assert_eq!(pam_stacks(), pam_before, "the purge changed the PAM stacks");
}

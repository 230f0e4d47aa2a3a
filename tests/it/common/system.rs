//! What the PAM and sshd tests change on the machine, each put back on drop
//! (test accounts and groups, PAM service files), and the PAM module they load.
//! These tests need root; without it they are skipped (`super::skip`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The test accounts, one per test so that tests running at once never share
/// one; the test directory knows each as `<name>@example.com`.
pub const ACCOUNTS: [&str; 14] = [
    "otpgate-t1",
    "otpgate-t2",
    "otpgate-t3",
    "otpgate-t4",
    "otpgate-t5",
    "otpgate-t6",
    "otpgate-t7",
    "otpgate-t8",
    "otpgate-t9",
    "otpgate-t10",
    "otpgate-t11",
    "otpgate-t12",
    "otpgate-t13",
    "otpgate-t14",
];

/// Whether the tests run as root; if not, says that `test` is skipped.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        super::skip(test, "it needs root (accounts, /etc/pam.d)");
    }
    root
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A local account the test made, removed (with its home) on drop.
pub struct Account {
    pub name: String,
}

impl Account {
    /// Creates account `name` (one of [`ACCOUNTS`]) with a home, a shell and a
    /// random password, in `groups`. A leftover of a killed run is replaced.
    pub fn create(name: &str, groups: &[&Group]) -> Self {
        assert!(ACCOUNTS.contains(&name), "{name} is not a test account");
        let _ = Command::new("userdel").args(["-r", name]).output();
        let mut args = vec!["-m", "-s", "/bin/sh"];
        let groups = groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        if !groups.is_empty() {
            args.extend(["-G", &groups]);
        }
        args.push(name);
        run("useradd", &args);
        let account = Self { name: name.into() };
        let password = format!("{name}:{}\n", rand_hex());
        let mut chpasswd = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut chpasswd.stdin.take().unwrap(), password.as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success());
        account
    }

    /// The address the test directory gives it.
    pub fn email(&self) -> String {
        format!("{}@example.com", self.name)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        // Processes of the account (a shell left by sshd) would keep userdel off.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .output();
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

fn rand_hex() -> String {
    let bytes: [u8; 12] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A local group the test made, removed on drop.
pub struct Group {
    pub name: String,
}

impl Group {
    /// Creates group `name` (which must start with `otpgate-`).
    pub fn create(name: &str) -> Self {
        assert!(name.starts_with("otpgate-"));
        let _ = Command::new("groupdel").arg(name).output();
        run("groupadd", &[name]);
        Self { name: name.into() }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A PAM service file in `/etc/pam.d`, removed on drop.
pub struct PamService {
    pub name: String,
    path: PathBuf,
}

impl PamService {
    /// Writes service `name` (which must start with `otpgate-test`) with
    /// `stack` as its lines.
    pub fn create(name: &str, stack: &str) -> Self {
        assert!(name.starts_with("otpgate-test"));
        let path = Path::new("/etc/pam.d").join(name);
        std::fs::write(&path, stack).unwrap();
        Self {
            name: name.into(),
            path,
        }
    }
}

impl PamService {
    /// Service `name` whose `auth` and `session` are PAM module `module`
    /// asking the agent at `socket`, with `args`.
    pub fn gate(name: &str, module: &Path, socket: &Path, args: &str) -> Self {
        let (module, socket) = (module.display(), socket.display());
        Self::create(
            name,
            &format!(
                "auth     required  {module} socket={socket} approval_wait=30 {args}\n\
                 account  required  pam_permit.so\n\
                 session  optional  {module} socket={socket}\n"
            ),
        )
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A copy of the `otpgate` binary in folder `dir` (open to every account)
/// that every account may run: the build folder may lie in a home only root
/// can enter (`/root`, on CI).
pub fn binary_for_everyone(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("otpgate-for-everyone");
    if !path.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_otpgate"), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path
}

/// The PAM module, built once per test run with the test-only panic argument.
pub fn module() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "-p",
                "otpgate-pam",
                "--features",
                "fault-injection",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "the PAM module does not build");
        // The tests run from <target>/debug/deps; the module lies in <target>/debug.
        let exe = std::env::current_exe().unwrap();
        let module = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("libpam_otpgate.so");
        assert!(module.exists(), "{}", module.display());
        module
    })
}

//! The PAM gate under a real sshd (its own config, on a 127.0.0.1 port, PAM
//! service of its own) logged in to by a real ssh client answering the
//! keyboard-interactive prompts (driven by Debian's python3-pexpect). Needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use crate::common::agent::Desk;
use crate::common::server::TestServer;
use crate::common::system::{self, Account, PamService};
use otpgate_protocol::admin::{AdminRequest, AdminResponse};

/// Answers ssh's prompts: the email address, then the OTP; with a key file
/// as a sixth argument, offers that key first.
const CLIENT: &str = r#"
import sys, pexpect
port, user, email, code, command = sys.argv[1:6]
if len(sys.argv) > 6:
    methods = ["-i", sys.argv[6], "-o", "IdentitiesOnly=yes",
        "-o", "PreferredAuthentications=publickey,keyboard-interactive"]
else:
    methods = ["-o", "PreferredAuthentications=keyboard-interactive",
        "-o", "PubkeyAuthentication=no"]
child = pexpect.spawn("ssh", ["-p", port] + methods + [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "NumberOfPasswordPrompts=1", user + "@127.0.0.1", command],
    encoding="utf-8", timeout=60)
while True:
    asked = child.expect([r"Email address \(", "One-time password", "Offline code",
        pexpect.EOF])
    if asked == 0:
        child.sendline(email)
    elif asked in (1, 2):
        child.sendline(code)
    else:
        break
print(child.before, end="")
child.close()
sys.exit(255 if child.exitstatus is None else child.exitstatus)
"#;

/// A real sshd started under the name of its PAM service, stopped on drop.
struct Sshd {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd in `dir` with PAM service `service` (sshd takes it from the
    /// name it runs by).
    fn start(dir: &Path, service: &PamService) -> Self {
        Self::start_with(dir, service, "")
    }

    /// [`Sshd::start`], with `extra` lines in its configuration.
    fn start_with(dir: &Path, service: &PamService, extra: &str) -> Self {
        // sshd's privilege separation folder, which its package makes at boot;
        // left in place (it is empty, and the tests may share it).
        let run = Path::new("/run/sshd");
        if !run.exists() {
            std::fs::create_dir_all(run).unwrap();
        }
        let key = dir.join(format!("{}.key", service.name));
        if !key.exists() {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .status()
                .unwrap();
            assert!(made.success());
        }
        let binary = dir.join(&service.name);
        if !binary.exists() {
            std::os::unix::fs::symlink("/usr/sbin/sshd", &binary).unwrap();
        }
        let log = dir.join(format!("{}.log", service.name));
        let config = dir.join(format!("{}.conf", service.name));
        crate::common::retry_start("sshd", || {
            let port = crate::common::free_port();
            std::fs::write(
                &config,
                // sshd keeps the first value of a keyword: `extra` comes first.
                format!(
                    "{extra}\nPort {port}\nListenAddress 127.0.0.1\nHostKey {key}\nUsePAM yes\n\
                     KbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
                     PubkeyAuthentication no\nPermitRootLogin no\nPidFile {pid}\n",
                    key = key.display(),
                    pid = dir.join(format!("{}.pid", service.name)).display(),
                ),
            )
            .unwrap();
            let child = Command::new(&binary)
                .args(["-D", "-f"])
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .spawn()
                .unwrap();
            let mut sshd = Self {
                child,
                port,
                log: log.clone(),
            };
            sshd.wait_for_banner().map(|()| sshd)
        })
    }

    /// Waits until sshd answers with its banner; why not, if it does not (it
    /// could not bind its port, say).
    fn wait_for_banner(&mut self) -> Result<(), String> {
        use std::io::Read;
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("sshd exited ({status}): {}", self.log()));
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("sshd did not answer: {}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs in as `user` with `email` and `code`, and runs `command`.
fn ssh(dir: &Path, sshd: &Sshd, user: &str, email: &str, code: &str, command: &str) -> Child {
    ssh_with(dir, sshd, (user, email, code, command), None)
}

/// [`ssh`], offering the private key in file `key` first, if given.
fn ssh_with(
    dir: &Path,
    sshd: &Sshd,
    (user, email, code, command): (&str, &str, &str, &str),
    key: Option<&Path>,
) -> Child {
    let client = dir.join("client.py");
    std::fs::write(&client, CLIENT).unwrap();
    Command::new("/usr/bin/python3")
        .arg(&client)
        .args([&sshd.port.to_string(), user, email, code, command])
        .args(key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

async fn finish(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

/// The `count`th OTP for `account`, generated by the administrator.
async fn otp(server: &TestServer, account: &Account, count: usize) -> String {
    server
        .generate("ws-1", &account.name, &account.email(), false)
        .await;
    server
        .codes_for(&account.email(), count)
        .await
        .remove(count - 1)
}

/// A PAM service for sshd: the OTP gate as its only authentication.
fn sshd_service(name: &str, socket: &Path, extra: &str) -> PamService {
    let module = system::module().display().to_string();
    let socket = socket.display();
    PamService::create(
        name,
        &format!(
            "auth     required  {module} socket={socket} {extra}\n\
             account  required  pam_permit.so\n\
             session  required  pam_permit.so\n\
             session  optional  {module} socket={socket}\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_login_needs_the_otp_and_its_session_ends_with_the_connection() {
    if !system::root_or_skip("an_ssh_login_needs_the_otp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let account = Account::create("otpgate-t7", &[]);
    let email = account.email();
    let service = sshd_service("otpgate-test-sshd", &desk.socket, "");
    let sshd = Sshd::start(dir.path(), &service);

    // A wrong OTP: no shell.
    let denied = finish(ssh(
        dir.path(),
        &sshd,
        &account.name,
        &email,
        "00000000",
        "echo SHELL-OK",
    ))
    .await;
    let said = String::from_utf8_lossy(&denied.stdout);
    assert!(!said.contains("SHELL-OK"), "{said}");
    assert_ne!(denied.status.code(), Some(0), "{said}");

    // The right one: a shell, and a client session shown as `user (email)`,
    // open while the connection is, ended when it closes.
    let code = otp(&server, &account, 1).await;
    let first = ssh(
        dir.path(),
        &sshd,
        &account.name,
        &email,
        &code,
        "echo SHELL-OK; sleep 3",
    );
    let user_name = format!("{} ({email})", account.name);
    crate::common::wait_until(Duration::from_secs(30), "the session is open", || async {
        server
            .sessions(false)
            .await
            .iter()
            .any(|s| s.user_name == user_name)
    })
    .await;
    // A second connection of the same user is a session of its own.
    let code = otp(&server, &account, 2).await;
    let second = ssh(
        dir.path(),
        &sshd,
        &account.name,
        &email,
        &code,
        "echo SHELL-OK; sleep 12",
    );
    crate::common::wait_until(
        Duration::from_secs(30),
        "both sessions are open",
        || async { server.sessions(false).await.len() == 2 },
    )
    .await;
    let first = finish(first).await;
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("SHELL-OK"), "{said}\n{}", sshd.log());
    assert_eq!(first.status.code(), Some(0), "{said}");
    crate::common::wait_until(
        Duration::from_secs(20),
        "the first session ends",
        || async {
            let sessions = server.sessions(true).await;
            sessions.iter().filter(|s| s.ended.is_some()).count() == 1
                && sessions.iter().filter(|s| s.ended.is_none()).count() == 1
        },
    )
    .await;
    // The second connection simply drops: its session ends too.
    let mut second = second;
    second.kill().unwrap();
    let _ = finish(second).await;
    crate::common::wait_until(
        Duration::from_secs(20),
        "the second session ends",
        || async { server.sessions(false).await.is_empty() },
    )
    .await;
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_module_fails_closed_and_sshd_lives_on() {
    if !system::root_or_skip("a_panic_in_the_module_fails_closed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let account = Account::create("otpgate-t8", &[]);
    let service = sshd_service("otpgate-test-sshd-panic", &desk.socket, "panic_for_test");
    let mut sshd = Sshd::start(dir.path(), &service);
    let code = otp(&server, &account, 1).await;
    let refused = finish(ssh(
        dir.path(),
        &sshd,
        &account.name,
        &account.email(),
        &code,
        "echo SHELL-OK",
    ))
    .await;
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(!said.contains("SHELL-OK"), "{said}");
    assert_ne!(refused.status.code(), Some(0));
    // The panic became PAM_ABORT, and sshd still serves.
    assert!(sshd.log().contains("PAM: Critical error"), "{}", sshd.log());
    sshd.wait_for_banner().unwrap();
    desk.stop().await;
}

/// What recording `id` on `server` showed, from its start.
async fn recording_events(server: &TestServer, id: u64) -> String {
    let answer = server
        .admin(AdminRequest::RecordingRead { id, from: 0 })
        .await;
    let AdminResponse::RecordingPart(part) = answer else {
        panic!("read: {answer:?}");
    };
    part.events
}

/// A server; ws-1's agent on a socket every user reaches; and, in `dir`,
/// sshd with PAM service `name` (the module with `args`) and the recorder
/// forced on every session.
async fn recorded(dir: &Path, name: &str, args: &str) -> (TestServer, Desk, PamService, Sshd) {
    use std::os::unix::fs::PermissionsExt;
    // The recorder runs as the person: its binary and the agent's socket must
    // be within their reach.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = system::binary_for_everyone(&open);
    let server = TestServer::start().await;
    let desk = Desk::start(
        &server.identity("ws-1"),
        server.addr,
        open.join("agent.sock"),
    )
    .await;
    let service = sshd_service(name, &desk.socket, args);
    let force = format!(
        "ForceCommand {} record --socket {}\n",
        binary.display(),
        desk.socket.display()
    );
    let sshd = Sshd::start_with(dir, &service, &force);
    (server, desk, service, sshd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_recorder_records_the_ssh_session_tied_to_its_client_session() {
    if !system::root_or_skip("a_forced_recorder_records_the_ssh_session") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, desk, _service, sshd) = recorded(dir.path(), "otpgate-test-sshd-record", "").await;
    let account = Account::create("otpgate-t9", &[]);
    let code = otp(&server, &account, 1).await;
    let done = finish(ssh(
        dir.path(),
        &sshd,
        &account.name,
        &account.email(),
        &code,
        "echo RECORDED-$((6*7))",
    ))
    .await;
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(said.contains("RECORDED-42"), "{said}\n{}", sshd.log());

    // On the server: the recording, of that person, tied to the client
    // session of the OTP login.
    let recording = &server.ended_recording().await;
    let session = server.sessions(true).await.remove(0);
    assert_eq!(recording.os_user, account.name);
    assert_eq!(
        recording.session,
        Some(session.id),
        "{recording:?} {session:?}"
    );
    let part = recording_events(&server, recording.id).await;
    assert!(part.contains("RECORDED-42"), "{part}");
    assert!(
        recording.command.contains("RECORDED-$((6*7))"),
        "{recording:?}"
    );
    // Played back by its session, in a terminal.
    let played = server
        .admin_cli(&["sessions", "play", &session.id.to_string(), "--speed", "20"])
        .await;
    assert!(played.status.success(), "{played:?}");
    assert!(String::from_utf8_lossy(&played.stdout).contains("RECORDED-42"));
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_ssh_login_is_recorded_and_accounted_for_when_the_server_is_back() {
    if !system::root_or_skip("an_offline_ssh_login_is_recorded") {
        return;
    }
    use otpgate_protocol::admin::OfflineSpec;
    let dir = tempfile::tempdir().unwrap();
    let (server, desk, _service, sshd) = recorded(
        dir.path(),
        "otpgate-test-sshd-offline",
        "on_unreachable=offline",
    )
    .await;
    let account = Account::create("otpgate-t14", &[]);
    let issued = server
        .admin(AdminRequest::OfflineIssue(OfflineSpec {
            computer: "ws-1".into(),
            os_user: account.name.clone(),
            email: account.email(),
            count: 1,
            valid_days: 1,
        }))
        .await;
    let AdminResponse::OfflineIssued { codes, .. } = issued else {
        panic!("{issued:?}")
    };
    let kept = server.identity_dir("ws-1").join("offline");
    crate::common::wait_until(Duration::from_secs(20), "the agent holds the codes", || {
        let kept = kept.clone();
        let name = account.name.clone();
        async move { std::fs::read_to_string(kept).is_ok_and(|text| text.contains(&name)) }
    })
    .await;

    // The server is away: the offline code opens a recorded session.
    let paused = server.pause().await;
    desk.disconnected().await;
    let done = finish(ssh(
        dir.path(),
        &sshd,
        &account.name,
        &account.email(),
        &codes[0].0,
        "echo OFFLINE-$((6*7))",
    ))
    .await;
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(said.contains("OFFLINE-42"), "{said}\n{}", sshd.log());

    // Back: the session is shown offline, and its recording is tied to it.
    let server = paused.resume().await;
    desk.connected().await;
    let recording = server.ended_recording().await;
    let session = server
        .sessions(true)
        .await
        .into_iter()
        .find(|s| s.user_name.ends_with("— offline"))
        .expect("the offline session");
    assert_eq!(
        session.user_name,
        format!("{} ({}) — offline", account.name, account.email())
    );
    assert_eq!(recording.session, Some(session.id), "{recording:?}");
    let part = recording_events(&server, recording.id).await;
    assert!(part.contains("OFFLINE-42"), "{part}");
    desk.stop().await;
}

/// A key pair made in `dir`, its public half authorised for `account`; the
/// private key's file.
fn authorised_key(dir: &Path, account: &Account) -> PathBuf {
    let key = dir.join("user.key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let user = nix::unistd::User::from_name(&account.name)
        .unwrap()
        .unwrap();
    let ssh_dir = user.dir.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let authorized = ssh_dir.join("authorized_keys");
    std::fs::copy(key.with_extension("key.pub"), &authorized).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o600)).unwrap();
    for path in [&ssh_dir, &authorized] {
        nix::unistd::chown(path.as_path(), Some(user.uid), Some(user.gid)).unwrap();
    }
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_login_needs_the_otp_only_where_sshd_asks_for_both() {
    if !system::root_or_skip("a_key_login_needs_the_otp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let account = Account::create("otpgate-t11", &[]);
    let email = account.email();
    let key = authorised_key(dir.path(), &account);
    let login = |sshd: &Sshd, code: &str| {
        finish(ssh_with(
            dir.path(),
            sshd,
            (&account.name, &email, code, "echo SHELL-OK"),
            Some(&key),
        ))
    };

    // With keys allowed and nothing more said, sshd never runs PAM's auth
    // stack for a key login: no OTP is asked for (what the README warns of).
    let service = sshd_service("otpgate-test-sshd-keys", &desk.socket, "");
    let keys_alone = Sshd::start_with(dir.path(), &service, "PubkeyAuthentication yes");
    let open = login(&keys_alone, "00000000").await;
    assert!(String::from_utf8_lossy(&open.stdout).contains("SHELL-OK"));
    drop(keys_alone);

    // With `AuthenticationMethods publickey,keyboard-interactive`, the key is
    // the first step and the OTP the second: a wrong one, no shell...
    let both = Sshd::start_with(
        dir.path(),
        &service,
        "PubkeyAuthentication yes\nAuthenticationMethods publickey,keyboard-interactive",
    );
    let denied = login(&both, "00000000").await;
    let said = String::from_utf8_lossy(&denied.stdout);
    assert!(!said.contains("SHELL-OK"), "{said}");
    assert_ne!(denied.status.code(), Some(0), "{said}");
    // ...the right one, a shell.
    let code = otp(&server, &account, 1).await;
    let allowed = login(&both, &code).await;
    let said = String::from_utf8_lossy(&allowed.stdout);
    assert!(said.contains("SHELL-OK"), "{said}\n{}", both.log());
    desk.stop().await;
}

//! Online backup and restore: a backup made while an agent logs in (every
//! login answered and allowed), restored into a new folder and served:
//! settings, users, computers, sessions, audit and recordings are all there,
//! the recordings verify, and no OTP live when the backup was made opens a
//! login again, used after it or not.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::common::agent::Desk;
use crate::common::me;
use crate::common::recorder::record;
use crate::common::server::{SLED, TestServer, ended_recording};
use otpgate_protocol::admin::{AdminRequest, AdminResponse, RoleView, SettingsPatch};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};

const OTPGATE: &str = env!("CARGO_BIN_EXE_otpgate");

async fn verify(desk: &Desk, email: &str, code: &str) -> LoginResponse {
    desk.login(LoginRequest::Verify {
        email: email.into(),
        code: Secret(code.into()),
    })
    .await
}

fn allowed(response: &LoginResponse) -> bool {
    matches!(response, LoginResponse::Verified(Verdict::Allow { .. }))
}

/// Has the administrator generate an OTP for me at `computer`; the code,
/// once its mail (the `nth`, from 1, to `email`) is in the outbox.
async fn generated(server: &TestServer, computer: &str, email: &str, nth: usize) -> String {
    server.generate(computer, &me(), email, false).await;
    server.codes_for(email, nth).await.remove(nth - 1)
}

/// Runs `otpgate restore FILE --data-dir DATA [--keys-from KEYS]`.
fn restore(file: &Path, data: &Path, keys_from: Option<&Path>) -> std::process::Output {
    let mut command = std::process::Command::new(OTPGATE);
    command.arg("restore").arg(file).arg("--data-dir").arg(data);
    if let Some(keys) = keys_from {
        command.arg("--keys-from").arg(keys);
    }
    command.output().unwrap()
}

fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_made_under_load_restores_whole_and_opens_no_otp_again() {
    let server = TestServer::start_with_config(SLED).await;
    let email = crate::common::my_email();
    server
        .set_settings(SettingsPatch {
            expiration_secs: Some(45 * 60),
            ..SettingsPatch::default()
        })
        .await;
    server.add_user("approver1", RoleView::User).await;

    // A session, with its recording.
    let ws1 = server.desk("ws-1").await;
    let code = generated(&server, "ws-1", &email, 1).await;
    assert!(allowed(&verify(&ws1, &email, &code).await));
    let socket = ws1.socket.clone();
    let (_, status) =
        tokio::task::spawn_blocking(move || record(&socket, &["/bin/echo", "kept across"]))
            .await
            .unwrap();
    assert_eq!(status, 0);
    let recording = ended_recording(&server.data_dir()).await;

    // Two OTPs live at the backup: ws-1's is used after it, ws-2's never.
    let used_after = generated(&server, "ws-1", &email, 2).await;
    let ws2 = server.desk("ws-2").await;
    let never_used = generated(&server, "ws-2", &to_ws2(&email), 1).await;

    // Logins go on on ws-3 all through the backup.
    let ws3 = Arc::new(server.desk("ws-3").await);
    let server = Arc::new(server);
    let (stop, logins) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = {
        let (server, ws3, stop, logins) =
            (server.clone(), ws3.clone(), stop.clone(), logins.clone());
        let email = to_ws3(&email);
        tokio::spawn(async move {
            let mut nth = 0;
            while !stop.load(Ordering::SeqCst) {
                nth += 1;
                let code = generated(&server, "ws-3", &email, nth).await;
                let verified = verify(&ws3, &email, &code).await;
                assert!(
                    allowed(&verified),
                    "login {nth} during the backup: {verified:?}"
                );
                logins.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while logins.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Backups one after another while the logins go on, until two logins
    // went through meanwhile; the last one is restored.
    let during = logins.load(Ordering::SeqCst);
    let (mut backups, mut before, mut made) = (0, Vec::new(), String::new());
    let file = |n: usize| server.data.path().join(format!("site-{n}.otpgate-backup"));
    while logins.load(Ordering::SeqCst) < during + 2 {
        assert!(backups < 200, "no login went through the backups");
        backups += 1;
        before = server.audit(1000).await;
        let output = server
            .admin_cli(&["backup", "--out", file(backups).to_str().unwrap()])
            .await;
        assert!(output.status.success(), "{}", said(&output));
        made = said(&output);
    }
    let file = file(backups);
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert!(
        made.contains("with the secret and the private keys"),
        "{made}"
    );
    assert!(made.contains("db/audit"), "{made}");
    assert!(made.contains("recordings/"), "{made}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_dir(server.data_dir().join("backups"))
            .unwrap()
            .next()
            .is_none(),
        "the server's copy was taken away"
    );
    assert!(allowed(&verify(&ws1, &email, &used_after).await));
    let sessions_before = server.sessions(true).await;

    // Restored into a new folder, and served.
    let Ok(server) = Arc::try_unwrap(server) else {
        panic!("the load task holds the server")
    };
    drop((ws1, ws2, ws3));
    let old = server.stop().await;
    let new = tempfile::tempdir().unwrap();
    let data = new.path().join("data");
    let restored = restore(&file, &data, Some(&old.path().join("data")));
    assert!(restored.status.success(), "{}", said(&restored));
    let restored = said(&restored);
    assert!(
        restored.contains("seal checked with the secret in"),
        "{restored}"
    );
    // ws-1's and ws-2's, and ws-3's if one was on its way at the backup.
    let voided: usize = restored
        .split(" OTPs live when it was made are void")
        .next()
        .and_then(|head| head.rsplit(['\n', ' ']).next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{restored}"));
    assert!((2..=3).contains(&voided), "{restored}");
    let server = TestServer::start_on(new, SLED).await;

    assert_eq!(server.settings().await.expiration_secs, 45 * 60);
    let users = server
        .admin(AdminRequest::UsersList {
            page: Default::default(),
        })
        .await;
    let AdminResponse::Users(users) = users else {
        panic!("{users:?}")
    };
    assert!(users.items.iter().any(|u| u.login == "approver1"));
    let clients = server
        .admin(AdminRequest::ClientsList {
            page: Default::default(),
        })
        .await;
    let AdminResponse::Clients(clients) = clients else {
        panic!("{clients:?}")
    };
    for name in ["ws-1", "ws-2", "ws-3"] {
        assert!(clients.items.iter().any(|c| c.computer == name), "{name}");
    }
    let sessions = server.sessions(true).await;
    let first = &sessions_before
        .iter()
        .find(|s| s.computer == "ws-1")
        .unwrap();
    assert!(
        sessions
            .iter()
            .any(|s| s.id == first.id && s.user_name == first.user_name)
    );
    let audit = server.audit(1000).await;
    for entry in &before {
        assert!(audit.contains(entry), "{entry:?} lost");
    }
    assert!(audit.iter().any(|e| e.action == "restore"));
    let verified = server
        .admin(AdminRequest::RecordingsVerify { id: None })
        .await;
    let AdminResponse::Verified(verified) = verified else {
        panic!("{verified:?}")
    };
    assert!(verified.iter().any(|v| v.id == recording.id));
    assert!(verified.iter().all(|v| v.problem.is_none()), "{verified:?}");

    // No OTP live at the backup opens a login: the one used after it, the
    // one never used. Their people may ask again at once.
    let ws1 = server.desk("ws-1").await;
    let ws2 = server.desk("ws-2").await;
    let denied = LoginResponse::Verified(Verdict::Deny);
    assert_eq!(verify(&ws1, &email, &used_after).await, denied);
    assert_eq!(verify(&ws2, &to_ws2(&email), &never_used).await, denied);
    // A new one is issued and verifies.
    let fresh = generated(&server, "ws-1", &email, 1).await;
    assert!(allowed(&verify(&ws1, &email, &fresh).await));
    let asked = ws2
        .login(LoginRequest::Request(RequestMode::Email(to_ws2(&email))))
        .await;
    assert!(
        !matches!(asked, LoginResponse::Requested(Requested::TooSoon { .. })),
        "{asked:?}"
    );
}

fn to_ws2(email: &str) -> String {
    email.replace('@', "+ws2@")
}

fn to_ws3(email: &str) -> String {
    email.replace('@', "+ws3@")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_without_keys_restores_only_with_the_sites_keys() {
    let server = TestServer::start_with_config(SLED).await;
    let file = server.data.path().join("nokeys.otpgate-backup");
    let made = server
        .admin_cli(&["backup", "--without-keys", "--out", file.to_str().unwrap()])
        .await;
    assert!(made.status.success(), "{}", said(&made));
    assert!(said(&made).contains("restore with --keys-from"));
    let again = server
        .admin_cli(&["backup", "--out", file.to_str().unwrap()])
        .await;
    assert!(!again.status.success());
    assert!(said(&again).contains("exists"), "{}", said(&again));

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let refused = restore(&file, &data, None);
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("made without keys"),
        "{}",
        said(&refused)
    );
    assert!(!data.exists(), "nothing written");

    // Another site's keys do not open it.
    let other = TestServer::start_with_config(SLED).await;
    let refused = restore(&file, &data, Some(&other.data_dir()));
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("the seal does not match"),
        "{}",
        said(&refused)
    );
    assert!(!data.exists(), "nothing written");

    let restored = restore(&file, &data, Some(&server.data_dir()));
    assert!(restored.status.success(), "{}", said(&restored));
    for key in ["secret.key", "pki/ca.key", "pki/server.key"] {
        let mode = std::fs::metadata(data.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
        assert_eq!(
            std::fs::read(data.join(key)).unwrap(),
            std::fs::read(server.data_dir().join(key)).unwrap()
        );
    }
    // Into a folder that is not empty: refused.
    let refused = restore(&file, &data, None);
    assert!(said(&refused).contains("not empty"), "{}", said(&refused));
    check_restored_serves(target).await;
}

/// A server starts on a restored folder, and takes its computers.
async fn check_restored_serves(target: tempfile::TempDir) {
    let server = TestServer::start_on(target, SLED).await;
    let desk = server.desk("ws-9").await;
    let status = desk.login(LoginRequest::Status).await;
    assert!(matches!(status, LoginResponse::Status(_)), "{status:?}");
}

//! `otpgate doctor` run as an operator would, against a running server and
//! a client computer's identity: what is fine is OK, what is wrong FAIL with
//! the fix, and the exit status says so.

use std::path::Path;

use crate::common::release::{run, this_otpgate};
use crate::common::server::TestServer;
use crate::common::slapd::Slapd;

/// One check as `--json` says it: name, status, what was found, the fix.
pub(crate) type Said = (String, String, String, String);

/// `otpgate doctor ARGS --json`: each check, and the exit status.
pub(crate) async fn doctor(args: &[&str]) -> (Vec<Said>, Option<i32>) {
    let output = run(
        this_otpgate(),
        &[&["doctor"][..], args, &["--json"]].concat(),
        "",
    )
    .await;
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stdout)));
    let checks = checks
        .iter()
        .map(|c| {
            let field = |name: &str| c[name].as_str().unwrap_or_default().to_owned();
            (
                field("check"),
                field("status"),
                field("found"),
                field("fix"),
            )
        })
        .collect();
    (checks, output.status.code())
}

/// The status of check `name` in `checks`.
pub(crate) fn status<'c>(checks: &'c [Said], name: &str) -> &'c str {
    checks
        .iter()
        .find(|(check, ..)| check == name)
        .map_or("missing", |(_, status, ..)| status.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_says_what_is_wrong_with_a_server_and_an_agent_and_the_fix() {
    let server = TestServer::start().await;
    let config = server.data.path().join("otpgate.toml");
    let data = server.data_dir();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (checks, code) = doctor(&args).await;
    for name in [
        "configuration",
        "data folder",
        "CA certificate",
        "server certificate",
        "mail",
        "server",
    ] {
        assert_eq!(status(&checks, name), "OK", "{name}: {checks:?}");
    }
    assert_eq!(code, Some(0), "{checks:?}");

    // A secret others may read: said, with the fix, and the exit status 1.
    use std::os::unix::fs::PermissionsExt;
    let secret = data.join("secret.key");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (checks, code) = doctor(&args).await;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(status(&checks, "data folder"), "FAIL", "{checks:?}");
    let fix = &checks.iter().find(|(c, ..)| c == "data folder").unwrap().3;
    assert!(fix.contains("chmod"), "{fix}");
    assert_eq!(code, Some(1));
    // A secret of another owner (left by a `serve` run as someone else): one
    // the service cannot open.
    if nix::unistd::Uid::effective().is_root() {
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&secret, nobody, None).unwrap();
        let (checks, code) = doctor(&args).await;
        nix::unistd::chown(&secret, Some(nix::unistd::Uid::effective()), None).unwrap();
        let found = checks
            .iter()
            .find(|(c, _, found, _)| c == "data folder" && found.contains("uid 65534"));
        assert!(
            found.is_some_and(|(_, status, ..)| status == "FAIL"),
            "{checks:?}"
        );
        assert_eq!(code, Some(1));
    }

    // A client computer's agent: its identity, and the server's welcome.
    let identity = server.identity("ws-1");
    let address = format!("localhost:{}", server.addr.port());
    let agent = |identity: &Path| {
        let identity = identity.to_str().unwrap().to_owned();
        let address = address.clone();
        async move { doctor(&["agent", "--identity", &identity, "--server", &address]).await }
    };
    let (checks, code) = agent(&identity).await;
    for name in [
        "identity",
        "computer certificate",
        "CA certificate",
        "server",
        "clock",
    ] {
        assert_eq!(status(&checks, name), "OK", "{name}: {checks:?}");
    }
    assert_eq!(code, Some(0));
    // Several servers, as the agent is given them: each is checked, and one
    // that does not answer fails.
    let nobody = format!("localhost:{}", crate::common::free_port());
    let both = format!("{address},{nobody}");
    let identity_arg = identity.to_str().unwrap();
    let (checks, code) = doctor(&["agent", "--identity", identity_arg, "--server", &both]).await;
    let servers: Vec<&str> = checks
        .iter()
        .filter(|(check, ..)| check == "server")
        .map(|(_, status, ..)| status.as_str())
        .collect();
    assert_eq!(servers, ["OK", "FAIL"], "{checks:?}");
    assert_eq!(code, Some(1));
    // Revoked: the server no longer welcomes it.
    let revoked = run(
        this_otpgate(),
        &[
            "certs",
            "revoke",
            "ws-1",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "",
    )
    .await;
    assert!(revoked.status.success(), "{revoked:?}");
    let (checks, code) = agent(&identity).await;
    assert_eq!(status(&checks, "server"), "FAIL", "{checks:?}");
    assert_eq!(code, Some(1));
}

/// The doctor's arguments for configuration `config`, written into `dir`,
/// and a data folder there.
fn configured(dir: &Path, config: &str) -> Vec<String> {
    let file = dir.join("otpgate.toml");
    std::fs::write(&file, config).unwrap();
    let data = dir.join("data");
    [
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_logs_in_to_the_relay_and_sends_a_test_message_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, config) = crate::smtp::auth_relay(dir.path(), "not the secret");
    let args = configured(dir.path(), &config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Refused credentials: the relay's words, never the password.
    let (checks, code) = doctor(&args).await;
    let mail = checks.iter().find(|(c, ..)| c == "mail").unwrap();
    assert_eq!(mail.1, "FAIL", "{checks:?}");
    assert_eq!(code, Some(1));
    let output = run(this_otpgate(), &[&["doctor"][..], &args].concat(), "").await;
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("535"), "{shown}");
    assert!(!shown.contains("not the secret"), "{shown}");

    // Put right: reached and logged in to, nothing sent...
    std::fs::write(dir.path().join("smtp-password"), "relay secret\n").unwrap();
    let (checks, _) = doctor(&args).await;
    assert_eq!(status(&checks, "mail"), "OK", "{checks:?}");
    assert!(relay.messages().is_empty());
    // ...until a test message is asked for.
    let (checks, _) = doctor(&[&args[..], &["--send-test", "ops@example.com"]].concat()).await;
    assert_eq!(status(&checks, "mail"), "OK", "{checks:?}");
    let message = relay
        .wait_for(1, std::time::Duration::from_secs(10))
        .await
        .remove(0);
    assert!(message.contains("To: <ops@example.com>"), "{message}");
    assert!(message.contains("otpgate test message"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_binds_to_the_directory_and_searches_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(slapd) = Slapd::start(dir.path(), "the_doctor_binds") else {
        return;
    };
    let args = configured(dir.path(), &slapd.config());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (checks, _) = doctor(&args).await;
    assert_eq!(status(&checks, "directory"), "OK", "{checks:?}");

    // A wrong bind password: failed, and the password not shown.
    std::fs::write(dir.path().join("bind-password"), "not the password\n").unwrap();
    let (checks, code) = doctor(&args).await;
    assert_eq!(status(&checks, "directory"), "FAIL", "{checks:?}");
    assert_eq!(code, Some(1));
    assert!(!format!("{checks:?}").contains("not the password"));
}

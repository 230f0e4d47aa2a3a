//! The `otpgate login` and `otpgate admin` commands as scripts use them: the real
//! binary, `--json`, secrets on standard input, exit status 0 (done), 1
//! (refused or denied), 2 (error).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::agent::Desk;
use crate::common::me;
use crate::common::server::TestServer;

fn otpgate(args: &[&str], stdin: &str) -> Output {
    crate::common::run(Path::new(env!("CARGO_BIN_EXE_otpgate")), args, stdin)
}

fn status_of(output: &Output) -> i32 {
    output.status.code().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stdout)))
}

async fn run(args: Vec<String>, stdin: impl Into<String>) -> Output {
    let stdin = stdin.into();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        otpgate(&args, &stdin)
    })
    .await
    .unwrap()
}

fn login(socket: &Path, rest: &[&str]) -> Vec<String> {
    let mut args = vec![
        "login".to_owned(),
        "--socket".to_owned(),
        socket.display().to_string(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

fn admin(data: &Path, rest: &[&str]) -> Vec<String> {
    let mut args = vec![
        "admin".to_owned(),
        "--data-dir".to_owned(),
        data.display().to_string(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_get_json_and_exit_codes() {
    let server = TestServer::start().await;
    let data = server.data_dir();
    let set = run(
        admin(&data, &["clients", "set", "ws-1", "--auto-ad", "true"]),
        "",
    )
    .await;
    assert_eq!(status_of(&set), 0, "{set:?}");
    let desk: Desk = server.desk("ws-1").await;
    let socket = desk.socket.clone();
    let email = crate::common::my_email();

    let requested = run(login(&socket, &["request", "--ad", "--json"]), "").await;
    assert_eq!(status_of(&requested), 0, "{requested:?}");
    // The directory's address, shown masked.
    let masked = format!("{}***@example.com", &me()[..1]);
    assert_eq!(json(&requested)["requested"]["send"]["to"], masked.as_str());

    let too_soon = run(login(&socket, &["request", "--email", "x@example.com"]), "").await;
    assert_eq!(status_of(&too_soon), 1, "plain email is off here: refused");

    let code = server.codes_for(&email, 1).await.remove(0);
    let wrong = run(login(&socket, &["verify", "--email", &email]), "00000000\n").await;
    assert_eq!(status_of(&wrong), 1);
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("Access denied."));
    let right = run(
        login(&socket, &["verify", "--email", &email, "--json"]),
        format!("{code}\n"),
    )
    .await;
    assert_eq!(status_of(&right), 0, "{right:?}");
    assert!(json(&right)["verified"]["allow"]["session"].is_u64());

    let status = run(login(&socket, &["status", "--json"]), "").await;
    assert_eq!(json(&status)["status"]["os_user"], me().as_str());

    let logout = run(login(&socket, &["logout"]), "").await;
    assert_eq!(status_of(&logout), 0);
    let again = run(login(&socket, &["logout"]), "").await;
    assert_eq!(status_of(&again), 1, "nothing left to log out of");

    // No agent behind the socket: an error, not a refusal.
    let nowhere = run(login(&data.join("none.sock"), &["status"]), "").await;
    assert_eq!(status_of(&nowhere), 2);

    // The admin side: a user added with the password on stdin, listed as JSON.
    let added = run(
        admin(
            &data,
            &["users", "add", "bob", "--email", "bob@example.com"],
        ),
        "a long enough password\n",
    )
    .await;
    assert_eq!(status_of(&added), 0, "{added:?}");
    let users = run(admin(&data, &["users", "list", "--json"]), "").await;
    let users = json(&users);
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["login"] == "bob")
    );
    let short = run(
        admin(
            &data,
            &["users", "add", "carol", "--email", "carol@example.com"],
        ),
        "short\n",
    )
    .await;
    assert_eq!(status_of(&short), 2, "an invalid value is an error");
    let password = format!("{}\n", server.admin_password().await);
    let missing = run(
        admin(&data, &["requests", "approve", "999"]),
        password.clone(),
    )
    .await;
    assert_eq!(status_of(&missing), 1, "no such request: refused");
    let settings = run(
        admin(&data, &["settings", "set", "--otp-length", "6", "--json"]),
        "",
    )
    .await;
    assert_eq!(json(&settings)["settings"]["otp_length"], 6);
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interactive_prompt_walks_through_the_seed_screens() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let email = crate::common::my_email();
    let mut prompt = Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .args(["login", "--socket"])
        .arg(&desk.socket)
        .args(["--approval-wait", "120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = prompt.stdin.take().unwrap();

    // No auto-send: the person leaves the email empty (the request window),
    // types their address, and the prompt waits for the approvers.
    stdin.write_all(format!("\n{email}\n").as_bytes()).unwrap();
    crate::common::wait_until(Duration::from_secs(20), "the request", || async {
        !server.requests(false).await.is_empty()
    })
    .await;
    let id = pending_id(&server).await;
    let approve = run(
        admin(
            &server.data_dir(),
            &["requests", "approve", &id.to_string()],
        ),
        format!("{}\n", server.admin_password().await),
    )
    .await;
    assert_eq!(status_of(&approve), 0, "{approve:?}");
    let code = server.codes_for(&email, 1).await.remove(0);

    // Approved: back to the first window, the email filled in; the OTP is
    // typed and access granted.
    stdin.write_all(format!("{code}\n").as_bytes()).unwrap();
    drop(stdin);
    let granted = tokio::task::spawn_blocking(move || prompt.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let screens = String::from_utf8_lossy(&granted.stderr).into_owned();
    for shown in [
        "Request One-Time Password",
        "has been sent to the approvers",
        "Your request was approved",
        &format!("Email address: {email}"),
        "Access granted",
    ] {
        assert!(screens.contains(shown), "{shown:?} in {screens}");
    }
    assert_eq!(status_of(&granted), 0, "{screens}");
    desk.stop().await;
}

/// The id of the one pending access request.
async fn pending_id(server: &TestServer) -> u64 {
    server.requests(false).await[0].id
}

#[test]
fn a_configuration_that_cannot_be_used_stops_serve_with_status_64() {
    let dir = tempfile::tempdir().unwrap();
    for (name, toml) in [
        ("bad-listen", "listen = \"not an address\"\n"),
        ("bad-name", "server_names = [\"bad name!\"]\n"),
        (
            "unreadable-directory",
            "directory_file = \"/nonexistent/directory.toml\"\n",
        ),
        (
            "unreadable-ldap-password",
            "[ldap]\nurl = \"ldaps://dc1.example.com\"\nbind_dn = \"cn=a\"\n\
             base_dn = \"dc=b\"\npassword_file = \"/nonexistent/password\"\n",
        ),
    ] {
        let config = dir.path().join(format!("{name}.toml"));
        let data = dir.path().join(name);
        std::fs::write(
            &config,
            format!("data_dir = \"{}\"\n{toml}", data.display()),
        )
        .unwrap();
        let out = otpgate(&["serve", "--config", config.to_str().unwrap()], "");
        assert_eq!(out.status.code(), Some(64), "{name}: {out:?}");
        // The reason is one line, the last (a log line may come before it).
        let said = String::from_utf8_lossy(&out.stderr);
        let reason = said.trim_end().lines().last().unwrap_or_default();
        assert!(
            reason.starts_with("otpgate: configuration: "),
            "{name}: {said:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_keys_and_sockets_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let server = crate::common::server::ServerProcess::start(dir.path(), "127.0.0.1:0");
    let data = server.data_dir();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    // Made readable to others while it was stopped (a restore, say): the next
    // start takes that back.
    server.stop();
    let widen = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    widen(&data, 0o755);
    widen(&data.join("secret.key"), 0o644);
    widen(&data.join("pki/ca.key"), 0o640);
    let _server = crate::common::server::ServerProcess::start(dir.path(), "127.0.0.1:0");
    assert_eq!(mode(&data), 0o700);
    for file in [
        "admin.sock",
        "admin-password",
        "secret.key",
        "pki/ca.key",
        "pki/server.key",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_stops_the_start_with_nothing_made() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let config = crate::common::server::write_config(dir.path(), 100, 2000, "");
    let start = |listen: &str, config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_otpgate"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", listen])
            .output()
            .unwrap()
    };
    // The agents' port, then the web's.
    let refused = start(&taken, &config);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!("cannot listen on {taken}")),
        "{said}"
    );
    assert!(!data.exists(), "nothing made: {said}");
    let web_taken = dir.path().join("web-taken");
    std::fs::create_dir(&web_taken).unwrap();
    let config = crate::common::server::write_config(&web_taken, 100, 2000, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{taken}\""));
    std::fs::write(&config, text).unwrap();
    let refused = start("127.0.0.1:0", &config);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!("cannot listen on {taken}")),
        "{said}"
    );
    assert!(!data.exists(), "nothing made: {said}");
}

/// Runs `otpgate args` as OS account `uid` (the tests run as root), from a
/// copy of the binary in `dir`.
async fn run_as(uid: u32, dir: &Path, args: Vec<String>) -> Output {
    use std::os::unix::process::CommandExt;
    let binary = crate::common::system::binary_for_everyone(dir);
    tokio::task::spawn_blocking(move || {
        // Another test thread may fork while the copy is still open for
        // writing: its child holds the file until it execs (ETXTBSY meanwhile).
        for _ in 0..100 {
            match Command::new(&binary)
                .args(&args)
                .uid(uid)
                .gid(uid)
                .stdin(Stdio::null())
                .output()
            {
                Err(err) if err.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                output => return output.unwrap(),
            }
        }
        panic!("{} stayed busy", binary.display())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_may_act_for_another_os_user() {
    const NOBODY: u32 = 65534;
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    // The socket's folder is open to every local user, as /run/otpgate is.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(server.data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // nobody is taken for nobody...
    let agent = run_as(
        NOBODY,
        server.data.path(),
        login(&desk.socket, &["--json", "agent"]),
    )
    .await;
    assert_eq!(status_of(&agent), 0, "{agent:?}");
    assert_eq!(json(&agent)["os_user"], "nobody");
    // ...and may not ask as root: refused by the agent, never sent on.
    let ask = login(
        &desk.socket,
        &["--os-user", "root", "request", "--email", "x@example.com"],
    );
    let refused = run_as(NOBODY, server.data.path(), ask.clone()).await;
    assert_eq!(status_of(&refused), 1, "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("only root may act for another user"),
        "{said}"
    );
    assert!(server.requests(true).await.is_empty());

    // Root may act for anyone.
    let asked = run(
        login(
            &desk.socket,
            &["--os-user", "nobody", "request", "--email", "x@example.com"],
        ),
        "",
    )
    .await;
    assert_eq!(status_of(&asked), 0, "{asked:?}");
    let requests = server.requests(true).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].os_user, "nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otps_the_login_goes_on_with_status_0() {
    let server = TestServer::start().await;
    let data = server.data_dir();
    let off = run(
        admin(&data, &["clients", "set", "ws-1", "--allow-otp", "false"]),
        "",
    )
    .await;
    assert_eq!(status_of(&off), 0, "{off:?}");
    let desk = server.desk("ws-1").await;
    let socket = desk.socket.clone();

    let requested = run(
        login(&socket, &["request", "--email", "x@example.com", "--json"]),
        "",
    )
    .await;
    assert_eq!(status_of(&requested), 0, "{requested:?}");
    assert_eq!(json(&requested)["requested"], "not_required");
    let verified = run(
        login(&socket, &["verify", "--email", "x@example.com", "--json"]),
        "12345678\n",
    )
    .await;
    assert_eq!(status_of(&verified), 0, "{verified:?}");
    assert_eq!(json(&verified)["verified"], "not_required");
    // The interactive prompt says so and lets the login go on.
    let prompt = run(login(&socket, &[]), "").await;
    assert_eq!(status_of(&prompt), 0, "{prompt:?}");
    assert!(String::from_utf8_lossy(&prompt.stderr).contains("not required"));
    // Nothing was checked, so nothing was counted or sent.
    assert!(server.requests(true).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_burst_is_theirs_to_wait_out_and_others_are_served() {
    const NOBODY: u32 = 65534;
    let server = TestServer::start().await;
    // The agent as it runs by default.
    let desk = server
        .desk_with("ws-1", otpgate::agent::socket::Limits::default())
        .await;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(server.data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // A hundred verifies at once from one OS user (root, here)...
    let socket = desk.socket.clone();
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let socket = socket.clone();
        burst.spawn(async move {
            let prompt = otpgate::cli::prompt::Prompt {
                socket,
                os_user: None,
            };
            prompt
                .ask(otpgate_protocol::login::LoginRequest::Verify {
                    email: "x@example.com".into(),
                    code: otpgate_protocol::login::Secret("12345678".into()),
                })
                .await
        });
    }
    // ...while another user asks for the prompt's state.
    let other = run_as(
        NOBODY,
        server.data.path(),
        login(&socket, &["--json", "status"]),
    )
    .await;
    assert_eq!(status_of(&other), 0, "{other:?}");
    let answers = burst.join_all().await;
    let throttled = answers
        .iter()
        .filter(|a| {
            matches!(
                a,
                Ok(otpgate_protocol::login::LoginResponse::Throttled { retry_after }) if *retry_after >= 1
            )
        })
        .count();
    // Every answer is a denial or a wait: none is "the server could not answer".
    for answer in &answers {
        assert!(
            matches!(
                answer,
                Ok(otpgate_protocol::login::LoginResponse::Verified(
                    otpgate_protocol::login::Verdict::Deny
                        | otpgate_protocol::login::Verdict::Throttle { .. }
                )) | Ok(otpgate_protocol::login::LoginResponse::Throttled { .. })
            ),
            "{answer:?}"
        );
    }
    assert!(throttled >= 50, "{throttled} of 100 waited");
}

#[test]
fn man_pages_and_completions_are_made_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (man, completions) = (dir.path().join("man"), dir.path().join("completions"));
    for (what, out) in [("man", &man), ("completions", &completions)] {
        let made = otpgate(&["generate", what, "--out", out.to_str().unwrap()], "");
        assert_eq!(status_of(&made), 0, "{made:?}");
    }
    // A page per command, each saying its options.
    let serve = std::fs::read_to_string(man.join("otpgate-serve.1")).unwrap();
    assert!(serve.contains("config"), "{serve}");
    for page in [
        "otpgate.1",
        "otpgate-agent.1",
        "otpgate-admin-users-set.1",
        "otpgate-doctor-agent.1",
    ] {
        assert!(man.join(page).exists(), "{page}");
    }
    assert!(
        !man.join("otpgate-generate.1").exists(),
        "a packagers' command has no page"
    );
    // Completions a shell reads.
    let bash = Command::new("bash")
        .arg("-n")
        .arg(completions.join("otpgate.bash"))
        .output()
        .unwrap();
    assert!(bash.status.success(), "{bash:?}");
    for file in ["_otpgate", "otpgate.fish"] {
        assert!(completions.join(file).exists(), "{file}");
    }
}

//! Releases side by side, with the previous release built from the
//! repository's history (`crate::common::release`): its agent, login prompt,
//! recorder, admin CLI and PAM module against this release's server and
//! agent, and this release's agent, prompt, recorder and CLI against the
//! previous release's server, which speaks version 1 of every wire only.
//! Each runs a whole login through an access request an approver decides, a
//! recording, and a revocation.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::agent::AgentProcess;
use crate::common::mail::codes_for;
use crate::common::pamtester::{Pamtester, otp_window};
use crate::common::recorder::record_by;
use crate::common::release::{self, run, this_otpgate};
use crate::common::server::{ServerProcess, TestServer};
use crate::common::system::{self, Account, PamService};
use crate::common::{HEARTBEAT_MS, me, wait_until};
use otpgate_protocol::admin::RoleView;

const WITHIN: Duration = Duration::from_secs(30);

/// What a finished program said: its status, stdout and stderr.
pub(crate) fn said(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `otpgate` of binary `otpgate` with `args`; fails the test unless it
/// exits 0. What it printed.
async fn ok(otpgate: &Path, args: &[&str], stdin: &str) -> String {
    let output = run(otpgate, args, stdin).await;
    assert!(output.status.success(), "{args:?}: {}", said(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A new site on the server whose data folder is `data`: its first
/// administrator given `password` (with this release's CLI), and computer
/// `name`'s identity issued by `certs` (a release's binary) into `dir/name`,
/// which is returned.
pub(crate) async fn prepare(
    data: &Path,
    password: &str,
    certs: &Path,
    name: &str,
    dir: &Path,
) -> std::path::PathBuf {
    let data = data.to_str().unwrap();
    ok(
        this_otpgate(),
        &[
            "admin",
            "--data-dir",
            data,
            "users",
            "set",
            "admin",
            "--password-stdin",
        ],
        &format!("{password}\n"),
    )
    .await;
    let identity = dir.join(name);
    let out = identity.to_str().unwrap();
    ok(
        certs,
        &["certs", "client", name, "--out", out, "--data-dir", data],
        "",
    )
    .await;
    identity
}

/// One client computer's life against one server, the programs of each
/// side from the release given: an access request made by `prompt`'s login
/// prompt and approved by `cli`'s admin CLI; the OTP verified; a terminal
/// recorded by `prompt`'s recorder; the computer's certificates revoked by
/// `cli`.
pub(crate) struct Life<'a> {
    /// The binary whose login prompt and recorder the person uses.
    pub(crate) prompt: &'a Path,
    /// The binary whose admin CLI the operator uses.
    pub(crate) cli: &'a Path,
    /// The server's data folder.
    pub(crate) data: &'a Path,
    /// The administrator's password.
    pub(crate) password: &'a str,
}

impl Life<'_> {
    pub(crate) async fn live(&self, agent: &AgentProcess, computer: &str) {
        let socket = agent.socket.to_str().unwrap();
        let data = self.data.to_str().unwrap();
        let email = crate::common::my_email();

        ok(
            self.prompt,
            &["login", "--socket", socket, "request", "--email", &email],
            "",
        )
        .await;
        let pending = ok(
            self.cli,
            &["admin", "--data-dir", data, "requests", "list", "--json"],
            "",
        )
        .await;
        let pending: serde_json::Value = serde_json::from_str(&pending).unwrap();
        let id = pending["requests"][0]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("a pending request in {pending}"))
            .to_string();
        ok(
            self.cli,
            &["admin", "--data-dir", data, "requests", "approve", &id],
            &format!("{}\n", self.password),
        )
        .await;
        let code = codes_for(self.data, &email, 1).await.remove(0);
        let verified = ok(
            self.prompt,
            &["login", "--socket", socket, "verify", "--email", &email],
            &format!("{code}\n"),
        )
        .await;
        assert!(!verified.contains("denied"), "{verified}");
        let sessions = ok(
            self.cli,
            &["admin", "--data-dir", data, "sessions", "list"],
            "",
        )
        .await;
        assert!(
            sessions.contains(&format!("{} ({email})", me())),
            "the client session shows: {sessions}"
        );

        let (shown, status) = {
            let (prompt, socket) = (self.prompt.to_owned(), agent.socket.clone());
            tokio::task::spawn_blocking(move || {
                record_by(&prompt, &socket, &["echo", "across-releases"])
            })
            .await
            .unwrap()
        };
        assert_eq!(status, 0, "{}", String::from_utf8_lossy(&shown));
        wait_until(WITHIN, "the recording arrives whole", || async {
            let found = run(
                self.cli,
                &[
                    "admin",
                    "--data-dir",
                    data,
                    "recordings",
                    "search",
                    "across-releases",
                ],
                "",
            )
            .await;
            String::from_utf8_lossy(&found.stdout).contains("across-releases")
        })
        .await;

        let clients = ok(
            self.cli,
            &["admin", "--data-dir", data, "clients", "list"],
            "",
        )
        .await;
        assert!(clients.contains(computer), "{clients}");
        ok(
            self.cli,
            &["certs", "revoke", computer, "--data-dir", data],
            "",
        )
        .await;
        agent.disconnected().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_agent_prompt_recorder_and_cli_work_with_this_server() {
    let test = "the_previous_releases_agent_prompt_recorder_and_cli_work_with_this_server";
    let Some(previous) = release::previous(test) else {
        return;
    };
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(
        &previous.otpgate,
        &server.identity("ws-old"),
        server.addr,
        dir.path(),
    )
    .await;
    let password = server.admin_password().await;
    Life {
        prompt: &previous.otpgate,
        cli: &previous.otpgate,
        data: &server.data_dir(),
        password: &password,
    }
    .live(&agent, "ws-old")
    .await;
    // This release's CLI shows the agent and the wire it spoke.
    let clients = ok(
        this_otpgate(),
        &[
            "admin",
            "--data-dir",
            server.data_dir().to_str().unwrap(),
            "clients",
            "list",
        ],
        "",
    )
    .await;
    assert!(clients.contains("agent 0.1.0 (protocol 1)"), "{clients}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_releases_agent_prompt_recorder_and_cli_work_with_the_previous_server() {
    let test = "this_releases_agent_prompt_recorder_and_cli_work_with_the_previous_server";
    let Some(previous) = release::previous(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_binary(
        &previous.otpgate,
        dir.path(),
        "127.0.0.1:0",
        HEARTBEAT_MS,
        2000,
        "",
    );
    let data = server.data_dir();
    // The first administrator chooses their password, with this release's CLI.
    let password = "the cross-release administrator's password";
    let identity = prepare(&data, password, &previous.otpgate, "ws-new", dir.path()).await;
    let identity_arg = identity.to_str().unwrap();
    // The doctor finds the server fine; its clock it cannot ask of it.
    let server_arg = server.addr.to_string();
    let (checks, code) =
        crate::doctor::doctor(&["agent", "--identity", identity_arg, "--server", &server_arg])
            .await;
    assert_eq!(crate::doctor::status(&checks, "server"), "OK", "{checks:?}");
    assert_eq!(
        crate::doctor::status(&checks, "clock"),
        "WARN",
        "{checks:?}"
    );
    assert_eq!(code, Some(0));
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(this_otpgate(), &identity, server.addr, agent_dir.path()).await;
    Life {
        prompt: this_otpgate(),
        cli: this_otpgate(),
        data: &data,
        password,
    }
    .live(&agent, "ws-new")
    .await;
    let log = std::fs::read_to_string(agent_dir.path().join("agent.log")).unwrap();
    assert!(
        log.contains("the server speaks an older protocol version"),
        "the agent says why it does without: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pam_modules_and_agents_of_either_release_work_together() {
    let test = "pam_modules_and_agents_of_either_release_work_together";
    if !system::root_or_skip(test) {
        return;
    }
    let Some(previous) = release::previous(test) else {
        return;
    };
    let server = TestServer::start().await;
    server.add_user("approver", RoleView::Administrator).await;
    let account = Account::create("otpgate-t10", &[]);
    let email = account.email();
    let pairs = [
        ("old-module", previous.pam_module.as_path(), this_otpgate()),
        ("old-agent", system::module(), previous.otpgate.as_path()),
    ];
    for (round, (name, module, agent)) in pairs.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let computer = format!("ws-{name}");
        let agent =
            AgentProcess::start(agent, &server.identity(&computer), server.addr, dir.path()).await;
        let service = PamService::gate(&format!("otpgate-test-{name}"), module, &agent.socket, "");
        server
            .generate(&computer, &account.name, &email, false)
            .await;
        let code = server.codes_for(&email, round + 1).await.remove(round);
        let mut pam = Pamtester::start(
            &service,
            &account.name,
            &["authenticate", "open_session", "close_session"],
        );
        otp_window(&mut pam, &email, &code).await;
        let (ok, shown) = pam.finish().await;
        assert!(ok, "{name}: {shown}");
    }
}

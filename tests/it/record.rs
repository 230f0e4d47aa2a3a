//! Terminal recording end to end: `otpgate record` under a real
//! pseudo-terminal, through a real agent, to the server; played back byte for
//! byte with its timing; spooled while the server is away; nothing the agent
//! acknowledged lost when it, or the server, is killed with SIGKILL; typed
//! input only where the options say; a full spool said; a stored recording
//! altered on disk fails verification.

use std::ops::Bound;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::recorder::{record, record_with};
use crate::common::server::{
    ServerProcess, TestServer, admin_ask, ended_recording, open_recordings, open_store, recordings,
};
use crate::common::web::WebClient;
use otpgate::cast::{self, Kind};
use otpgate_actors::store::{Order, SideWrite};
use otpgate_protocol::admin::{AdminRequest, AdminResponse, OptionsView, RoleView};

const OTPGATE: &str = env!("CARGO_BIN_EXE_otpgate");
/// Debian's asciinema (the test command installs it).
const ASCIINEMA: &str = "/usr/bin/asciinema";

/// Recording `id` as an asciicast file: its header and event lines.
async fn cast_of(data: &Path, id: u64) -> (String, String) {
    let (mut header, mut events, mut from) = (None, String::new(), 0);
    loop {
        match admin_ask(data, AdminRequest::RecordingRead { id, from }).await {
            AdminResponse::RecordingPart(part) => {
                header = header.or(part.header);
                events.push_str(&part.events);
                match part.next {
                    Some(next) => from = next,
                    None => return (header.unwrap(), events),
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The output a recording holds, all of it in order.
fn output(events: &str) -> String {
    cast::events(events)
        .filter(|e| e.kind == Some(Kind::Output))
        .map(|e| e.data)
        .collect()
}

/// When output containing `text` was recorded.
fn when(events: &str, text: &str) -> f64 {
    cast::events(events)
        .find(|e| e.kind == Some(Kind::Output) && e.data.contains(text))
        .unwrap_or_else(|| panic!("{text:?} not recorded"))
        .seconds
}

/// Whether the server finds recording `id` intact.
async fn intact(data: &Path, id: u64) -> Option<String> {
    match admin_ask(data, AdminRequest::RecordingsVerify { id: Some(id) }).await {
        AdminResponse::Verified(verified) => verified[0].problem.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_shell_plays_back_byte_for_byte_with_its_timing() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let socket = desk.socket.clone();
    let script = "printf 'hello\\n'; sleep 0.6; \
                  printf 'w\\303\\266rld \\033[1mbold\\033[0m\\n'; \
                  i=0; while [ $i -lt 3000 ]; do echo \"line $i of a long listing\"; i=$((i+1)); done; \
                  exit 3";
    let (shown, status) =
        tokio::task::spawn_blocking(move || record(&socket, &["/bin/sh", "-c", script]))
            .await
            .unwrap();
    assert_eq!(status, 3, "the command's status");
    let recording = server.ended_recording().await;
    assert_eq!(recording.status, Some(3));
    assert!(!recording.incomplete);
    assert!(recording.chunks > 1, "a long listing takes several chunks");
    let (header, events) = cast_of(&server.data_dir(), recording.id).await;
    let header: serde_json::Value = serde_json::from_str(&header).unwrap();
    assert_eq!(
        (header["version"].as_u64(), header["width"].as_u64()),
        (Some(2), Some(80))
    );

    // What the person saw is what was recorded, byte for byte.
    assert_eq!(output(&events).as_bytes(), shown.as_slice());
    assert!(output(&events).contains("wörld \u{1b}[1mbold"));
    // With its timing: the pause between the two lines is there.
    let pause = when(&events, "rld") - when(&events, "hello");
    assert!((0.5..3.0).contains(&pause), "{pause} s between them");

    assert_eq!(intact(&server.data_dir(), recording.id).await, None);
    // On the command line: the same file, and intact.
    let id = recording.id.to_string();
    let exported = server.admin_cli(&["recordings", "export", &id]).await;
    assert!(exported.status.success());
    let (header_line, _) = cast_of(&server.data_dir(), recording.id).await;
    assert_eq!(
        String::from_utf8(exported.stdout).unwrap(),
        format!("{header_line}{events}")
    );
    let verified = server.admin_cli(&["recordings", "verify", &id]).await;
    assert!(verified.status.success());
    assert!(String::from_utf8_lossy(&verified.stdout).contains("intact"));
    // asciinema itself plays the export: the same bytes the person saw.
    if Path::new(ASCIINEMA).exists() {
        let file = server.data.path().join("session.cast");
        std::fs::write(&file, format!("{header_line}{events}")).unwrap();
        // It wants a terminal of its own.
        let (played, status) = tokio::task::spawn_blocking(move || {
            crate::common::recorder::on_raw_terminal(ASCIINEMA, &[Path::new("cat"), &file])
        })
        .await
        .unwrap();
        assert_eq!(status, 0, "{}", String::from_utf8_lossy(&played));
        assert_eq!(played, shown);
    } else {
        crate::common::skip(
            "a_recorded_shell_plays_back_byte_for_byte_with_its_timing (asciinema's playback)",
            "it needs Debian's asciinema",
        );
    }
    // On the web: its file for an administrator, nothing for a user who
    // approves nothing on that computer.
    let password = server.admin_password().await;
    let admin = WebClient::new(&server);
    assert_eq!(admin.sign_in("admin", &password).await.status(), 303);
    let file = admin
        .get(&format!("/recordings/{}/cast", recording.id))
        .await;
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.text().await.unwrap().lines().count(),
        1 + cast::events(&events).count()
    );
    server.add_user("bob", RoleView::User).await;
    let bob = WebClient::new(&server);
    assert_eq!(
        bob.sign_in("bob", "bob's long password").await.status(),
        303
    );
    for page in [
        format!("/recordings/{}", recording.id),
        format!("/recordings/{}/cast", recording.id),
    ] {
        assert_eq!(bob.get(&page).await.status(), 404, "{page}");
    }
    // Search finds a line as a person read it, and where.
    let AdminResponse::Hits(hits) = server
        .admin(AdminRequest::RecordingsSearch {
            text: "LINE 2999 of".into(),
        })
        .await
    else {
        panic!("search");
    };
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].line, "line 2999 of a long listing");
    desk.stop().await;
}

/// Forges the first chunk of recording `id` where the server keeps it,
/// while the server is away.
async fn tamper(data_dir: &Path, id: u64) {
    let db = open_recordings(data_dir).await;
    tokio::task::spawn_blocking(move || {
        let chunks = db.table("recording_chunks").unwrap();
        let first = id.to_be_bytes();
        let (key, _) = chunks
            .range(
                (Bound::Included(&first[..]), Bound::Unbounded),
                Order::Oldest,
            )
            .next()
            .unwrap()
            .unwrap();
        let forged = otpgate::cast::event(0.1, Kind::Output, "nothing to see here");
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, forged.as_bytes()).unwrap();
        let forged = encoder.finish().unwrap();
        db.write(&[SideWrite::Put(&chunks, &key, &forged)]).unwrap();
        db.flush_blocking().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_made_while_the_server_is_away_arrives_whole_and_tampering_shows() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let paused = server.pause().await;
    desk.disconnected().await;
    let socket = desk.socket.clone();
    let (shown, status) = tokio::task::spawn_blocking(move || {
        record(
            &socket,
            &[
                "/bin/sh",
                "-c",
                "echo made offline; sleep 0.3; echo still offline",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 0);
    // The agent holds it on disk until the server is back.
    let spool = desk.socket.with_extension("spool");
    assert!(std::fs::read_dir(&spool).unwrap().count() > 0, "spooled");
    let server = paused.resume().await;
    let recording = server.ended_recording().await;
    let (_, events) = cast_of(&server.data_dir(), recording.id).await;
    assert_eq!(output(&events).as_bytes(), shown.as_slice());
    crate::common::wait_until(Duration::from_secs(10), "an empty spool", || async {
        std::fs::read_dir(&spool).unwrap().count() == 0
    })
    .await;
    assert_eq!(intact(&server.data_dir(), recording.id).await, None);

    // Altered on disk: verification says so.
    let id = recording.id;
    desk.stop().await;
    let paused = server.pause().await;
    tamper(&paused.data_dir(), id).await;
    let server = paused.resume().await;
    let problem = intact(&server.data_dir(), id).await;
    assert!(problem.is_some_and(|p| p.contains("hash chain")), "altered");
    let verified = server.admin_cli(&["recordings", "verify"]).await;
    assert_eq!(verified.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("ALTERED"));

    // What is altered is not handed out, unless asked for, and then under a
    // warning: on the command line...
    let id = id.to_string();
    for args in [
        ["recordings", "export", &id].as_slice(),
        &["recordings", "play", &id, "--speed", "100"],
    ] {
        let refused = server.admin_cli(args).await;
        assert_eq!(refused.status.code(), Some(1), "{args:?}");
        assert!(refused.stdout.is_empty(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("does not verify"),
            "{args:?}"
        );
        let forced = server.admin_cli(&[args, &["--force"]].concat()).await;
        assert_eq!(forced.status.code(), Some(0), "{args:?}");
        assert!(String::from_utf8_lossy(&forced.stdout).contains("nothing to see here"));
        assert!(String::from_utf8_lossy(&forced.stderr).contains("WARNING"));
    }
    // ...and on the web.
    let admin = WebClient::new(&server);
    let password = server.admin_password().await;
    assert_eq!(admin.sign_in("admin", &password).await.status(), 303);
    let refused = admin.get(&format!("/recordings/{id}/cast")).await;
    assert_eq!(refused.status(), 409);
    let forced = admin.get(&format!("/recordings/{id}/cast?force=1")).await;
    assert_eq!(forced.status(), 200);
    assert!(forced.text().await.unwrap().contains("nothing to see here"));
    let (page, _) = admin.page(&format!("/recordings/{id}")).await;
    assert!(page.contains("does not verify"), "{page}");
    assert!(page.contains("cast?force=1"), "{page}");
}

/// `otpgate agent` as its own process, for computer `identity`, serving
/// `socket` and spooling in `spool`.
fn agent(server: std::net::SocketAddr, identity: &Path, socket: &Path, spool: &Path) -> Child {
    Command::new(OTPGATE)
        .arg("agent")
        .arg("--server")
        .arg(format!("localhost:{}", server.port()))
        .arg("--identity")
        .arg(identity)
        .arg("--socket")
        .arg(socket)
        .arg("--spool")
        .arg(spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_session_loses_nothing_it_acknowledged() {
    let server = TestServer::start().await;
    let identity = server.identity("ws-9");
    let addr = server.addr;
    let dir = tempfile::tempdir().unwrap();
    let (socket, spool) = (dir.path().join("agent.sock"), dir.path().join("spool"));
    // The server away: what the first agent acknowledges is only in its spool.
    let paused = server.pause().await;
    let mut first = agent(addr, &identity, &socket, &spool);
    crate::common::wait_until(Duration::from_secs(10), "the agent's socket", || async {
        socket.exists()
    })
    .await;
    let recorder = {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || {
            record(
                &socket,
                &[
                    "/bin/sh",
                    "-c",
                    "echo one; sleep 2; echo two; sleep 1; echo three",
                ],
            )
        })
    };
    crate::common::wait_until(
        Duration::from_secs(10),
        "the first chunk spooled",
        || async { std::fs::read_dir(&spool).is_ok_and(|mut files| files.next().is_some()) },
    )
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = agent(addr, &identity, &socket, &spool);
    let (shown, status) = recorder.await.unwrap();
    assert_eq!(status, 0);
    let server = paused.resume().await;
    let recording = server.ended_recording().await;
    let (_, events) = cast_of(&server.data_dir(), recording.id).await;
    assert_eq!(output(&events).as_bytes(), shown.as_slice());
    assert!(
        output(&events).contains("one"),
        "acknowledged by the killed agent"
    );
    assert!(!recording.incomplete);
    assert_eq!(intact(&server.data_dir(), recording.id).await, None);
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_input_is_recorded_only_where_the_options_say_so() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let typed_in = async |server: &TestServer| {
        let before = recordings(&server.data_dir()).await.len();
        let socket = desk.socket.clone();
        let (_, status) = tokio::task::spawn_blocking(move || {
            crate::common::recorder::record_typing(
                &socket,
                &["/bin/sh", "-c", "echo ready; read line; echo \"got $line\""],
                "ready",
                b"typed words\n",
            )
        })
        .await
        .unwrap();
        assert_eq!(status, 0);
        crate::common::wait_until(Duration::from_secs(30), "the recording", || async {
            recordings(&server.data_dir())
                .await
                .iter()
                .filter(|r| r.ended.is_some())
                .count()
                > before
        })
        .await;
        let (_, events) = cast_of(
            &server.data_dir(),
            recordings(&server.data_dir()).await[0].id,
        )
        .await;
        assert!(output(&events).contains("got typed words"), "{events}");
        cast::events(&events)
            .filter(|e| e.kind == Some(Kind::Input))
            .map(|e| e.data)
            .collect::<String>()
    };
    assert_eq!(typed_in(&server).await, "", "not by default");
    server
        .set_client(
            "ws-1",
            OptionsView {
                record_input: Some(true),
                ..OptionsView::default()
            },
        )
        .await;
    assert_eq!(typed_in(&server).await, "typed words\n");
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_leaves_output_out_marks_the_recording_and_says_so() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    // A spool with room for one chunk file per user, and a recorder that
    // holds nothing.
    let desk = crate::common::agent::Desk::start_configured(otpgate::agent::AgentConfig {
        servers: vec![format!("localhost:{}", server.addr.port()).parse().unwrap()],
        identity: server.identity("ws-1"),
        socket: socket.clone(),
        limits: crate::common::agent::unlimited(),
        spool: dir.path().join("spool"),
        spool_limit: 8 << 10,
        metrics: None,
        offline_max_away: otpgate::agent::offline::max_away(
            otpgate::agent::offline::DEFAULT_MAX_DAYS,
        ),
    })
    .await;
    let (shown, status) = tokio::task::spawn_blocking(move || {
        record_with(
            &socket,
            &["--buffer-mib", "0"],
            &[
                "/bin/sh",
                "-c",
                "echo first; sleep 0.7; seq 1 20000; sleep 0.7; echo last",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 0);
    assert!(
        String::from_utf8_lossy(&shown).contains("19999"),
        "the terminal lost nothing"
    );
    let recording = server.ended_recording().await;
    assert!(recording.incomplete, "{recording:?}");
    let (_, events) = cast_of(&server.data_dir(), recording.id).await;
    let kept = output(&events);
    assert!(kept.contains("first") && kept.contains("last"), "{kept}");
    assert!(!kept.contains("19999"), "the long listing was left out");
    assert_eq!(intact(&server.data_dir(), recording.id).await, None);
    assert!(
        server
            .audit(20)
            .await
            .iter()
            .any(|e| e.action == "record" && e.outcome.contains("incomplete")),
        "in the audit log"
    );
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_users_quota_the_server_leaves_output_out_and_says_so() {
    // One MiB per OS user: a local user who streams recordings cannot fill
    // the disk the logins need.
    let server = TestServer::start_with_config("recording_quota_user_mib = 1").await;
    let desk = server.desk("ws-1").await;
    let socket = desk.socket.clone();
    let (shown, status) = tokio::task::spawn_blocking(move || {
        record(
            &socket,
            &["/bin/sh", "-c", "echo first; seq 1 300000; echo last"],
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 0);
    assert!(String::from_utf8_lossy(&shown).contains("299999"));
    let recording = server.ended_recording().await;
    assert!(recording.incomplete, "{recording:?}");
    assert!(recording.bytes <= 1 << 20, "{recording:?}");
    let (_, events) = cast_of(&server.data_dir(), recording.id).await;
    let kept = output(&events);
    assert!(kept.contains("first") && !kept.contains("299999"));
    assert_eq!(intact(&server.data_dir(), recording.id).await, None);
    assert!(
        server
            .audit(20)
            .await
            .iter()
            .any(|e| e.action == "record" && e.outcome.contains("quota")),
        "in the audit log"
    );
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_terminal_is_not_held_to_the_pace_of_login_requests() {
    // One login request a second per connection: a recording's chunks are
    // counted apart, so a few MiB of output (about sixty chunks) arrive
    // whole at once, not over a minute with pauses.
    let server = TestServer::start_with_config("requests_per_second = 1").await;
    let desk = server.desk("ws-1").await;
    let socket = desk.socket.clone();
    let (shown, status) = tokio::task::spawn_blocking(move || {
        record(&socket, &["/bin/sh", "-c", "seq 1 400000; echo last"])
    })
    .await
    .unwrap();
    assert_eq!(status, 0);
    assert!(String::from_utf8_lossy(&shown).contains("399999"));
    let recording = server.ended_recording().await;
    assert!(!recording.incomplete, "{recording:?}");
    assert!(recording.chunks > 40, "{recording:?}");
    let (_, events) = cast_of(&server.data_dir(), recording.id).await;
    let kept = output(&events);
    assert!(
        kept.contains("399999") && kept.ends_with("last\r\n"),
        "{kept:.200}"
    );
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_the_agent_refused_for_now_go_while_the_terminal_is_quiet() {
    // The agent takes one chunk a second from a user (bursts of two): a
    // burst of output makes more, and the terminal then shows nothing for a
    // while. What was refused goes meanwhile, not only once more output comes
    // or the command ends.
    let server = TestServer::start().await;
    let limits = otpgate::agent::socket::Limits {
        chunks_per_second: std::num::NonZeroU32::new(1).unwrap(),
        ..crate::common::agent::unlimited()
    };
    let desk = server.desk_with("ws-1", limits).await;
    let socket = desk.socket.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        record(&socket, &["/bin/sh", "-c", "seq 1 30000; sleep 10"])
    });
    crate::common::wait_until(
        Duration::from_secs(8),
        "the held chunks went while the terminal was quiet",
        || async {
            recordings(&server.data_dir())
                .await
                .first()
                .is_some_and(|r| r.chunks >= 4 && r.ended.is_none())
        },
    )
    .await;
    assert_eq!(recorded.await.unwrap().1, 0);
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_session_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &crate::common::restartable_listen());
    let (addr, data) = (server.addr, server.data_dir());
    let identity = crate::common::server::issue(&data, dir.path(), "ws-1");
    let desk =
        crate::common::agent::Desk::start(&identity, addr, dir.path().join("agent.sock")).await;
    let socket = desk.socket.clone();
    let recorder = tokio::task::spawn_blocking(move || {
        record(
            &socket,
            &[
                "/bin/sh",
                "-c",
                "echo one; sleep 1.5; seq 1 3000; sleep 1.5; echo three",
            ],
        )
    });
    crate::common::wait_until(Duration::from_secs(20), "a chunk stored", || async {
        recordings(&data)
            .await
            .first()
            .is_some_and(|r| r.chunks > 0)
    })
    .await;
    // SIGKILL: what it acknowledged is on its disk; the rest waits in the
    // agent's spool and comes again.
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = ServerProcess::start(dir.path(), &addr.to_string());
    let (shown, status) = recorder.await.unwrap();
    assert_eq!(status, 0);
    let recording = ended_recording(&data).await;
    let (_, events) = cast_of(&data, recording.id).await;
    assert_eq!(output(&events).as_bytes(), shown.as_slice());
    assert_eq!(intact(&data, recording.id).await, None);
    desk.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_that_hangs_up_ends_the_command_and_the_recording_is_finished() {
    // Also where the recorder was started ignoring hang-ups (nohup): its
    // command is not, and ends.
    type Record = fn(&Path, &[&str], &str) -> (Vec<u8>, i32);
    let ways: [(bool, Record); 2] = [
        (false, crate::common::recorder::record_hung_up),
        (true, crate::common::recorder::record_hung_up_where_ignored),
    ];
    for (ignored, record) in ways {
        let server = TestServer::start().await;
        let desk = server.desk("ws-1").await;
        let socket = desk.socket.clone();
        let (_, status) = tokio::task::spawn_blocking(move || {
            record(
                &socket,
                &["/bin/sh", "-c", "echo before; sleep 60"],
                "before",
            )
        })
        .await
        .unwrap();
        // SIGHUP: 128 + 1.
        assert_eq!(status, 129, "ignored: {ignored}");
        let recording = server.ended_recording().await;
        assert_eq!(recording.status, Some(129), "ignored: {ignored}");
        let (_, events) = cast_of(&server.data_dir(), recording.id).await;
        assert!(output(&events).contains("before"));
        desk.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_recordings_database_leaves_logins_working_and_says_so() {
    use otpgate_protocol::admin::{AdminError, AdminErrorCode};
    use otpgate_protocol::login::{LoginRequest, LoginResponse, Secret, Verdict};

    let server = TestServer::start().await;
    let paused = server.pause().await;
    let folder = paused.data_dir().join("recordings");
    // Damaged as a failing disk leaves it: sled's own file, or in
    // PostgreSQL the census row.
    let said = match open_store(&paused.data_dir()).await.side() {
        None => {
            std::fs::write(folder.join("conf"), "garbage, as a failing disk leaves it").unwrap();
            [
                folder.display().to_string(),
                "move that folder aside".into(),
            ]
        }
        Some(db) => {
            tokio::task::spawn_blocking(move || {
                let census = db.table("recording_census").unwrap();
                db.write(&[SideWrite::Put(&census, b"census", b"garbage")])
                    .unwrap();
                db.flush_blocking().unwrap();
            })
            .await
            .unwrap();
            [
                "the recordings in PostgreSQL".into(),
                "cannot be read".into(),
            ]
        }
    };
    let server = paused.resume().await;

    // OTP logins go on.
    let desk = server.desk("ws-1").await;
    let email = format!("{}@example.com", crate::common::me());
    let generated = server
        .admin(AdminRequest::OtpGenerate {
            computer: "ws-1".into(),
            os_user: crate::common::me(),
            email: email.clone(),
            comment: None,
            by: "admin".into(),
            password: otpgate_protocol::login::Secret(server.admin_password().await),
            new_client: false,
        })
        .await;
    assert!(
        matches!(generated, AdminResponse::Generated { .. }),
        "{generated:?}"
    );
    let code = server.codes_for(&email, 1).await.remove(0);
    let verified = desk
        .login(LoginRequest::Verify {
            email,
            code: Secret(code),
        })
        .await;
    assert!(
        matches!(verified, LoginResponse::Verified(Verdict::Allow { .. })),
        "{verified:?}"
    );

    // Recordings are said to be unavailable, where, and what to do.
    let listed = server
        .admin(AdminRequest::RecordingsList {
            session: None,
            page: Default::default(),
        })
        .await;
    let AdminResponse::Fail(AdminError {
        code: AdminErrorCode::Unavailable,
        message,
    }) = listed
    else {
        panic!("{listed:?}")
    };
    for said in said {
        assert!(message.contains(&said), "{message}");
    }
    assert!(
        server
            .audit(20)
            .await
            .iter()
            .any(|e| e.outcome.starts_with("recordings unavailable"))
    );
    // A recording made meanwhile waits in the agent's spool.
    let socket = desk.socket.clone();
    let (_, status) =
        tokio::task::spawn_blocking(move || record(&socket, &["/bin/echo", "kept for later"]))
            .await
            .unwrap();
    assert_eq!(status, 0);
    let spool = desk.socket.with_extension("spool");
    crate::common::wait_until(
        Duration::from_secs(10),
        "the chunks are spooled",
        || async { std::fs::read_dir(&spool).unwrap().count() > 0 },
    )
    .await;
    desk.stop().await;
}

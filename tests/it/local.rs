//! A local user on a client computer against the agent's socket (mode 0666):
//! they hold no more connections than their share, idle ones are closed, their
//! recording chunks come at their rate, and an agent out of file descriptors
//! pauses instead of spinning, then serves again. Root (the PAM gate of every
//! login) is served throughout.

use std::num::NonZeroU32;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::agent::{AgentProcess, unlimited};
use crate::common::release::this_otpgate;
use crate::common::server::TestServer;
use crate::common::wait_until;
use otpgate::agent::socket::Limits;
use otpgate::unix;
use otpgate_protocol::local::{LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, LoginResponse};
use otpgate_protocol::record::{RecordChunk, RecordingStart};

const NOBODY: u32 = 65534;
const WITHIN: Duration = Duration::from_secs(20);

/// Run as a local user: opens ten connections to the socket in argv[1], says
/// how many the agent closed at once, then (after a line on stdin) how many it
/// closed within ten seconds, then whether a new one stays open.
const HOLDER: &str = r#"
import select, socket, sys, time

def closed(conns, wait):
    time.sleep(wait)
    readable, _, _ = select.select(conns, [], [], 0)
    return [c for c in readable if c.recv(1) == b""]

conns = []
for _ in range(10):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    conns.append(s)
print(len(closed(conns, 0.5)), flush=True)
sys.stdin.readline()
deadline = time.monotonic() + 10
gone = set()
while len(gone) < len(conns) and time.monotonic() < deadline:
    gone.update(closed([c for c in conns if c not in gone], 0.2))
print(len(gone), flush=True)
fresh = socket.socket(socket.AF_UNIX)
fresh.connect(sys.argv[1])
print(len(closed([fresh], 0.5)), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_holds_no_more_than_their_share_of_connections_and_idle_ones_close() {
    let server = TestServer::start().await;
    let limits = Limits {
        connections: std::num::NonZeroUsize::new(4).unwrap(),
        idle: Duration::from_secs(2),
        ..unlimited()
    };
    let desk = server.desk_with("ws-1", limits).await;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(server.data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut holder = tokio::process::Command::from({
        let mut command = std::process::Command::new("python3");
        command
            .args(["-c", HOLDER])
            .arg(&desk.socket)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        command
    })
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut said = BufReader::new(holder.stdout.take().unwrap()).lines();
    let mut next = async || said.next_line().await.unwrap().unwrap();

    assert_eq!(
        next().await,
        "6",
        "of ten, the six past the cap closed at once"
    );
    // Root, the PAM gate of every login, is served while the user is at the cap.
    assert!(matches!(
        desk.login(LoginRequest::Status).await,
        LoginResponse::Status(_)
    ));
    let mut stdin = holder.stdin.take().unwrap();
    stdin.write_all(b"\n").await.unwrap();
    assert_eq!(next().await, "10", "the four held idle were closed too");
    assert_eq!(next().await, "0", "their places are free again");
    assert!(holder.wait().await.unwrap().success());
}

/// Chunk `seq` of recording `[key; 16]` with `events`, as a recorder hands
/// it to the agent (the first one says how the recording starts).
fn record_chunk(key: u8, seq: u64, events: &[u8]) -> LocalRequest {
    LocalRequest::Record(RecordChunk {
        recording: [key; 16],
        seq,
        start: (seq == 0).then(|| RecordingStart {
            width: 80,
            height: 24,
            started_ms: 1,
            command: "sh".into(),
            term: "xterm".into(),
            input: false,
        }),
        events: events.to_vec(),
        lost: false,
        end: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_starts_recordings_at_a_persons_pace_whatever_the_chunks_pace() {
    let server = TestServer::start().await;
    let desk = server.desk_with("ws-1", unlimited()).await;
    let mut recorder = unix::Client::<LocalRequest, LocalResponse>::new(&desk.socket);
    let chunk = |key: u8, seq: u64| record_chunk(key, seq, b"");
    // Empty first chunks, each a new recording: five a second, bursts of ten.
    let began = std::time::Instant::now();
    let mut started = 0;
    for key in 0..20 {
        if recorder.ask(&chunk(key, 0)).await.unwrap() == LocalResponse::Done {
            started += 1;
        }
    }
    // The burst, and one more for each fifth of a second spent (each
    // accepted chunk is synced to disk, which may be slow).
    let paced = 10 + began.elapsed().as_millis() / 200 + 1;
    assert!(
        started >= 10 && started <= paced,
        "{started} started, {paced} allowed"
    );
    // A recording under way goes on at its own pace.
    for seq in 1..30 {
        assert_eq!(
            recorder.ask(&chunk(0, seq)).await.unwrap(),
            LocalResponse::Done
        );
    }
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_users_recording_chunks_come_at_their_rate() {
    let server = TestServer::start().await;
    let limits = Limits {
        chunks_per_second: NonZeroU32::new(1).unwrap(),
        ..unlimited()
    };
    let desk = server.desk_with("ws-1", limits).await;
    let mut recorder = unix::Client::<LocalRequest, LocalResponse>::new(&desk.socket);
    let chunk = |seq: u64| record_chunk(7, seq, b"[0.5, \"o\", \"x\"]\n");
    let mut answers = Vec::new();
    for seq in 0..5 {
        answers.push(recorder.ask(&chunk(seq)).await.unwrap());
    }
    let refused = LocalResponse::Fail(LocalError::Unavailable);
    assert_eq!(
        answers,
        [
            LocalResponse::Done,
            LocalResponse::Done,
            refused.clone(),
            refused.clone(),
            refused
        ],
        "a burst of twice the rate, then the recorder is told to keep the rest"
    );
    wait_until(WITHIN, "the user's rate comes back", || {
        let (socket, request) = (desk.socket.clone(), chunk(2));
        async move {
            let answer = unix::ask::<LocalRequest, LocalResponse>(&socket, &request).await;
            matches!(answer, Ok(LocalResponse::Done))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_out_of_file_descriptors_pauses_then_serves_again() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start_under(
        &["prlimit", "--nofile=40"],
        &[],
        this_otpgate(),
        &server.identity("ws-1"),
        server.addr,
        dir.path(),
    )
    .await;
    // Root's connections are not capped: enough of them use up every
    // descriptor the agent has, and the rest wait in the socket's backlog.
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(
            tokio::net::UnixStream::connect(&agent.socket)
                .await
                .unwrap(),
        );
    }
    let log = dir.path().join("agent.log");
    let read = || std::fs::read_to_string(&log).unwrap();
    wait_until(WITHIN, "the agent runs out of descriptors", || async {
        read().contains("accept failed")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One line when a run of failures starts and one when it ends: paced,
    // not spun on. (A descriptor freed meanwhile, the link's socket when a
    // loaded machine answers a heartbeat late, ends a run and starts another.)
    let said = read();
    let (runs, ended) = (
        said.matches("accept failed").count(),
        said.matches("accepting connections again").count(),
    );
    // (Read between a run's end and the next failure, both counts agree.)
    assert!(
        runs == ended + 1 || runs == ended,
        "one line per run of failures:\n{said}"
    );
    assert!(runs <= 3, "{runs} runs in 2 s");
    drop(held);
    wait_until(WITHIN, "the agent serves again", || async {
        matches!(
            unix::ask::<LocalRequest, LocalResponse>(&agent.socket, &LocalRequest::Status).await,
            Ok(LocalResponse::Status(_))
        )
    })
    .await;
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("accepting connections again")
    );
}

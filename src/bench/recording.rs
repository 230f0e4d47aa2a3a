//! `otpgate bench record`: what recording costs an interactive terminal, and
//! how fast a recording gets to the server. Each measure runs under a
//! pseudo-terminal of the bench's own, once straight and once under `otpgate
//! record`: the time from a keystroke to its echo (one key at a time, `cat`
//! echoing through the terminal), and how fast a command that prints a lot
//! (`cat` of a large file) gets its output to the terminal.
//!
//! For those two, the recorder hands its chunks to a stand-in agent in this
//! process that acknowledges each at once: what is measured is the recorder,
//! not the agent's disk (the terminal never waits on the agent anyway). The
//! last measure is the whole path: the same `cat` recorded through a real
//! agent (in this process, with its spool and its default limits) to a
//! server of this binary, until the server holds the recording's last chunk.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use otpgate_protocol::admin::{AdminRequest, AdminResponse, PageRequest};
use otpgate_protocol::local::{LocalError, LocalRequest, LocalResponse};

use super::{Percentiles, Server, ServerSetup, histogram, record};
use crate::agent::{self, AgentConfig, offline, socket, spool};
use crate::tls::pki;

/// What a recording bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct RecordReport {
    /// Keystrokes sent, one at a time, in each run.
    pub keystrokes: u64,
    /// Keystroke to echo, straight, in milliseconds.
    pub echo_plain: Percentiles,
    /// Keystroke to echo, under the recorder, in milliseconds.
    pub echo_recorded: Percentiles,
    /// Size of the file printed, in MiB.
    pub mebibytes: u64,
    /// Its printing straight, in MiB/s.
    pub plain_mib_s: f64,
    /// Its printing under the recorder, in MiB/s.
    pub recorded_mib_s: f64,
    /// Chunks the recorder handed over.
    pub chunks: u64,
    /// The whole path: from the recorded `cat`'s start until the server
    /// held all of it, in MiB/s.
    pub stored_mib_s: f64,
    /// Seconds from the terminal's last output until the server held all of
    /// the recording.
    pub stored_after_secs: f64,
    /// The server's CPU time over the whole path, in seconds.
    pub server_cpu_secs: f64,
    /// Whether the server got all of the output (a recorder whose chunks
    /// are refused for long enough drops output, and says so).
    pub stored_complete: bool,
    /// Keystrokes whose echo never came.
    pub lost_echoes: u64,
}

impl RecordReport {
    /// The report for people.
    pub fn describe(&self) -> String {
        format!(
            "keystroke to echo (ms), {} keys one at a time\n  straight        {}\n  recorded        {}\n\
             cat of {} MiB\n  straight        {:.0} MiB/s\n  recorded        {:.0} MiB/s ({:.2}x the time), {} chunks handed over\n\
             stored by the server, through an agent: {:.1} MiB/s ({:.1} s after the terminal's last output), server CPU {:.2} s{}",
            self.keystrokes,
            self.echo_plain.describe(),
            self.echo_recorded.describe(),
            self.mebibytes,
            self.plain_mib_s,
            self.recorded_mib_s,
            self.plain_mib_s / self.recorded_mib_s,
            self.chunks,
            self.stored_mib_s,
            self.stored_after_secs,
            self.server_cpu_secs,
            if self.stored_complete {
                ""
            } else {
                ", OUTPUT LOST on the way"
            }
        )
    }

    /// Whether every keystroke came back, and all of the output to the server.
    pub fn passed(&self) -> bool {
        self.lost_echoes == 0 && self.stored_complete
    }
}

/// A stand-in agent on `socket` that takes every chunk; counts them.
fn sink(socket: &Path) -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicU64>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = UnixListener::bind(socket)?;
    let chunks = std::sync::Arc::new(AtomicU64::new(0));
    let counted = chunks.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let refuse = |_| LocalResponse::Fail(LocalError::Unsupported);
            tokio::spawn(crate::unix::serve_requests(
                stream,
                Some(crate::unix::IDLE),
                refuse,
                move |request| {
                    if let LocalRequest::Record(_) = request {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    async { LocalResponse::Done }
                },
            ));
        }
    });
    Ok(chunks)
}

/// Runs `command` under a new pseudo-terminal, straight or (with `socket`)
/// under the recorder.
fn spawn(
    command: &[&str],
    recorder: Option<&Path>,
) -> anyhow::Result<(pty_process::blocking::Pty, std::process::Child)> {
    let (pty, pts) = pty_process::blocking::open()?;
    pty.resize(pty_process::Size::new(24, 80))?;
    let child = match recorder {
        Some(socket) => pty_process::blocking::Command::new(std::env::current_exe()?)
            .arg("record")
            .arg("--socket")
            .arg(socket)
            .arg("--")
            .args(command)
            .spawn(pts)?,
        None => pty_process::blocking::Command::new(command[0])
            .args(&command[1..])
            .spawn(pts)?,
    };
    Ok((pty, child))
}

/// Keystroke-to-echo times of `keys` keys through `cat`; and the echoes
/// that never came.
fn echoes(keys: u64, recorder: Option<&Path>) -> anyhow::Result<(Percentiles, u64)> {
    let (mut pty, mut child) = spawn(&["cat"], recorder)?;
    // Let the recorder set up before the clock starts.
    std::thread::sleep(Duration::from_millis(500));
    let mut latencies = histogram();
    let mut lost = 0;
    let mut buffer = [0; 256];
    for i in 0..keys {
        let key = b'a' + (i % 26) as u8;
        let started = Instant::now();
        pty.write_all(&[key])?;
        // The echo of this key (cat's own copy comes with the line's end).
        loop {
            let n = pty.read(&mut buffer)?;
            if n == 0 {
                lost += keys - i;
                break;
            }
            if buffer[..n].contains(&key) {
                record(&mut latencies, started.elapsed());
                break;
            }
        }
        if i % 64 == 63 {
            pty.write_all(b"\n")?;
        }
    }
    // End of input: cat exits.
    pty.write_all(b"\n\x04")?;
    drain(&mut pty);
    child.wait()?;
    Ok((Percentiles::of(&latencies), lost))
}

/// Reads `pty` until the terminal is closed.
fn drain(pty: &mut pty_process::blocking::Pty) -> u64 {
    let mut buffer = vec![0; 64 * 1024];
    let mut read = 0;
    while let Ok(n @ 1..) = pty.read(&mut buffer) {
        read += n as u64;
    }
    read
}

/// MiB/s of `cat file` getting to the terminal.
fn throughput(file: &Path, mebibytes: u64, recorder: Option<&Path>) -> anyhow::Result<f64> {
    let took = printed(file, recorder)?;
    Ok(mebibytes as f64 / took.as_secs_f64())
}

/// How long `cat file` takes to get to the terminal.
fn printed(file: &Path, recorder: Option<&Path>) -> anyhow::Result<Duration> {
    let path = file
        .to_str()
        .context("a temporary path that is not UTF-8")?;
    let started = Instant::now();
    let (mut pty, mut child) = spawn(&["cat", path], recorder)?;
    drain(&mut pty);
    child.wait()?;
    Ok(started.elapsed())
}

/// What the whole path measured.
struct Stored {
    mib_s: f64,
    after_terminal: Duration,
    server_cpu_secs: f64,
    complete: bool,
}

/// The whole path: `cat file` (`mebibytes` MiB) recorded through a real
/// agent to a server, both started here with their data in `dir`, until the
/// server holds the recording's last chunk.
async fn stored(dir: &Path, file: &Path, mebibytes: u64) -> anyhow::Result<Stored> {
    let setup = ServerSetup {
        heartbeat: Duration::from_secs(30),
        max_connections: 16,
        directory: None,
        store: None,
    };
    crate::files::create_private_dir(dir)?;
    let server = Server::start(dir, &setup, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let identity = dir.join("agent");
    pki::issue_client(&server.data, &"bench-record".parse()?, &identity)?;
    let socket = dir.join("agent.sock");
    let config = AgentConfig {
        servers: vec![server.addr()?],
        identity,
        socket: socket.clone(),
        limits: socket::Limits::default(),
        spool: dir.join("spool"),
        spool_limit: spool::DEFAULT_SPOOL_MIB << 20,
        metrics: None,
        offline_max_away: offline::max_away(offline::DEFAULT_MAX_DAYS),
    };
    let cancel = CancellationToken::new();
    let _stop_agent = cancel.clone().drop_guard();
    let agent = tokio::spawn(agent::run(config, cancel.clone()));
    while !socket.exists() {
        if agent.is_finished() {
            anyhow::bail!("the agent stopped: {:?}", agent.await?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = server.usage()?.cpu_secs;
    let started = Instant::now();
    let file = file.to_owned();
    let terminal = tokio::task::spawn_blocking(move || printed(&file, Some(&socket))).await??;
    let list = AdminRequest::RecordingsList {
        session: None,
        page: PageRequest::default(),
    };
    // Far longer than the slowest path measured (about 1 MiB/s).
    let deadline = started + Duration::from_secs(60 + 2 * mebibytes);
    let complete = loop {
        let AdminResponse::Recordings(page) = server.admin(&list).await? else {
            anyhow::bail!("the server did not list its recordings");
        };
        if let Some(recording) = page.items.first().filter(|r| r.ended.is_some()) {
            break !recording.incomplete;
        }
        anyhow::ensure!(!agent.is_finished(), "the agent stopped");
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server did not hold the whole recording by {:?}",
            deadline - started
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    let server_cpu_secs = server.usage()?.cpu_secs - before;
    server.stop();
    cancel.cancel();
    agent.await??;
    Ok(Stored {
        mib_s: mebibytes as f64 / took.as_secs_f64(),
        after_terminal: took.saturating_sub(terminal),
        server_cpu_secs,
        complete,
    })
}

/// Measures `keys` keystrokes and a `mebibytes` MiB `cat`, straight and
/// recorded.
pub async fn recording(keys: u64, mebibytes: u64) -> anyhow::Result<RecordReport> {
    let dir = std::env::temp_dir().join(format!("otpgate-bench-record-{}", std::process::id()));
    crate::files::create_private_dir(&dir)?;
    let measured = measure(&dir, keys, mebibytes).await;
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// [`recording`], in folder `dir`.
async fn measure(dir: &Path, keys: u64, mebibytes: u64) -> anyhow::Result<RecordReport> {
    let socket = dir.join("agent.sock");
    let chunks = sink(&socket)?;
    let file = dir.join("large.txt");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let line = b"drwxr-xr-x  2 alice staff  4096 Nov 30 05:19 a line of a long listing\n";
        let mut written = 0;
        while written < mebibytes << 20 {
            out.write_all(line)?;
            written += line.len() as u64;
        }
        out.flush()?;
    }
    let socket_for = socket.clone();
    let file_for = file.clone();
    let measured = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (echo_plain, lost_plain) = echoes(keys, None)?;
        let (echo_recorded, lost_recorded) = echoes(keys, Some(&socket_for))?;
        let plain = throughput(&file_for, mebibytes, None)?;
        let recorded = throughput(&file_for, mebibytes, Some(&socket_for))?;
        Ok((
            echo_plain,
            echo_recorded,
            plain,
            recorded,
            lost_plain + lost_recorded,
        ))
    })
    .await??;
    let (echo_plain, echo_recorded, plain_mib_s, recorded_mib_s, lost_echoes) = measured;
    let whole = stored(&dir.join("stored"), &file, mebibytes).await?;
    Ok(RecordReport {
        keystrokes: keys,
        echo_plain,
        echo_recorded,
        mebibytes,
        plain_mib_s,
        recorded_mib_s,
        chunks: chunks.load(std::sync::atomic::Ordering::Relaxed),
        lost_echoes,
        stored_mib_s: whole.mib_s,
        stored_after_secs: whole.after_terminal.as_secs_f64(),
        server_cpu_secs: whole.server_cpu_secs,
        stored_complete: whole.complete,
    })
}

//! `otpgate bench`: a load generator that starts its own server and hammers it
//! over real mutual TLS on loopback. Each simulated agent has a certificate of
//! its own (issued once and kept in the work folder); connections are spread
//! over several 127.0.0.x source addresses so that many thousands do not run out
//! of ports. Every run is bounded in time and count and stops by itself.
//!
//! Scenarios so far: `hold` (N agents connect and stay connected with
//! heartbeats). Login storm, reconnect storm and wrong-OTP flood are to come.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::agent::{Link, ServerAddr};
use crate::{pki, tls};

/// How long the agents may take to be welcomed, at most.
const CONNECT_DEADLINE: Duration = Duration::from_secs(300);

/// What a `hold` run is asked to do.
#[derive(Debug, Clone)]
pub struct HoldOptions {
    /// How many agents.
    pub agents: usize,
    /// How long they hold once all are connected.
    pub duration: Duration,
    /// How many 127.0.0.x source addresses to spread them over.
    pub sources: u8,
    /// The heartbeat interval the server is started with.
    pub heartbeat: Duration,
    /// Where the server's data and the agents' identities are kept between runs.
    pub work_dir: PathBuf,
}

/// The result of a `hold` run.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    /// Agents started.
    pub agents: usize,
    /// Agents the server welcomed.
    pub welcomed: usize,
    /// Seconds from the first connection attempt to the last welcome.
    pub connect_secs: f64,
    /// Welcomes per second over that time.
    pub welcomes_per_sec: f64,
    /// Time from start to welcome, per agent, in milliseconds.
    pub connect_ms: Percentiles,
    /// Agents that had to reconnect while holding.
    pub reconnected: usize,
    /// Heartbeats acknowledged while holding.
    pub heartbeats: u64,
    /// The server's resident memory with everyone connected, in KiB.
    pub server_rss_kib: u64,
    /// The server's peak resident memory, in KiB.
    pub server_peak_rss_kib: u64,
    /// The server's CPU time (user + system), in seconds.
    pub server_cpu_secs: f64,
}

/// Latency percentiles from an HDR histogram.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// A process's memory and CPU time, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Resident memory, in KiB.
    pub rss_kib: u64,
    /// Peak resident memory, in KiB.
    pub peak_rss_kib: u64,
    /// CPU time, user and system, in seconds.
    pub cpu_secs: f64,
}

impl Usage {
    /// The usage of process `pid`.
    pub fn of(pid: u32) -> std::io::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches(" kB").parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start at ")".
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15, so 11 and 12 after ")"; 100 ticks/s.
        Ok(Self {
            rss_kib: field("VmRSS:"),
            peak_rss_kib: field("VmHWM:"),
            cpu_secs: (ticks(11) + ticks(12)) as f64 / 100.0,
        })
    }
}

/// The server under test, a child process.
struct Server {
    child: Child,
    port: u16,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(work: &Path, heartbeat: Duration, agents: usize) -> anyhow::Result<Self> {
        let config = work.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "heartbeat_interval_ms = {}\nmax_connections = {}\n",
                heartbeat.as_millis(),
                agents + 1000
            ),
        )?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(work.join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the server")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no server output")?);
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                bail!("the server stopped before listening");
            }
            if let Some(addr) = line.trim().strip_prefix("otpgate listening on ") {
                let addr: std::net::SocketAddr = addr.parse()?;
                return Ok(Self {
                    child,
                    port: addr.port(),
                    _stdout: stdout,
                });
            }
        }
    }

    fn usage(&self) -> anyhow::Result<Usage> {
        Ok(Usage::of(self.child.id())?)
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Issues the identities that are missing in `work/identities` and loads them all.
fn identities(work: &Path, agents: usize) -> anyhow::Result<Vec<Arc<rustls::ClientConfig>>> {
    let data = work.join("data");
    (0..agents)
        .map(|i| {
            let name = format!("bench-{i:06}");
            let dir = work.join("identities").join(&name);
            if !dir.join("client.key").exists() {
                pki::issue_client(&data, &name.parse()?, &dir)?;
            }
            Ok(tls::client_config(&dir)?)
        })
        .collect()
}

/// Runs the `hold` scenario, printing progress to stderr.
pub async fn hold(options: HoldOptions) -> anyhow::Result<HoldReport> {
    crate::files::create_private_dir(&options.work_dir)?;
    let server = Server::start(&options.work_dir, options.heartbeat, options.agents)?;
    let result = run_hold(&options, &server).await;
    server.stop();
    result
}

async fn run_hold(options: &HoldOptions, server: &Server) -> anyhow::Result<HoldReport> {
    eprintln!("bench: loading {} identities", options.agents);
    let configs = identities(&options.work_dir, options.agents)?;
    let addr: ServerAddr = format!("localhost:{}", server.port).parse()?;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let links: Vec<Link> = configs
        .into_iter()
        .enumerate()
        .map(|(i, config)| {
            let source = Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % usize::from(options.sources.max(1))) as u8,
            );
            Link::spawn_from(
                config,
                addr.clone(),
                Some(IpAddr::V4(source)),
                cancel.child_token(),
            )
            .map(|(link, _)| link)
        })
        .collect::<Result<_, _>>()?;

    // Microseconds, from 1 µs to an hour, three significant digits.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut waiting: Vec<usize> = (0..links.len()).collect();
    let mut last_report = Instant::now();
    while !waiting.is_empty() && started.elapsed() < CONNECT_DEADLINE {
        let elapsed = started.elapsed();
        waiting.retain(|&i| {
            if links[i].status().welcomes > 0 {
                histogram.saturating_record(elapsed.as_micros() as u64);
                false
            } else {
                true
            }
        });
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "bench: {} of {} welcomed",
                links.len() - waiting.len(),
                links.len()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect = started.elapsed();
    let welcomed = links.len() - waiting.len();
    let server_rss_kib = server.usage()?.rss_kib;
    let heartbeats_before: u64 = links.iter().map(|l| l.status().heartbeats).sum();
    eprintln!(
        "bench: {welcomed} welcomed in {:.2} s; holding for {:?}",
        connect.as_secs_f64(),
        options.duration
    );
    tokio::time::sleep(options.duration).await;
    let heartbeats_after: u64 = links.iter().map(|l| l.status().heartbeats).sum();
    let reconnected = links.iter().filter(|l| l.status().welcomes > 1).count();
    let after = server.usage()?;
    cancel.cancel();
    Ok(HoldReport {
        agents: links.len(),
        welcomed,
        connect_secs: connect.as_secs_f64(),
        welcomes_per_sec: welcomed as f64 / connect.as_secs_f64().max(f64::EPSILON),
        connect_ms: Percentiles::of(&histogram),
        reconnected,
        heartbeats: heartbeats_after - heartbeats_before,
        server_rss_kib,
        server_peak_rss_kib: after.peak_rss_kib,
        server_cpu_secs: after.cpu_secs,
    })
}

/// A report for people.
pub fn describe(report: &HoldReport) -> String {
    format!(
        "agents {} welcomed {} in {:.2} s ({:.0}/s)\n\
         connect latency ms: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n\
         holding: {} heartbeats acknowledged, {} agents reconnected\n\
         server: RSS {} KiB ({:.1} KiB per agent), peak {} KiB, CPU {:.2} s",
        report.agents,
        report.welcomed,
        report.connect_secs,
        report.welcomes_per_sec,
        report.connect_ms.p50,
        report.connect_ms.p99,
        report.connect_ms.p999,
        report.connect_ms.max,
        report.heartbeats,
        report.reconnected,
        report.server_rss_kib,
        report.server_rss_kib as f64 / report.agents.max(1) as f64,
        report.server_peak_rss_kib,
        report.server_cpu_secs
    )
}

//! `otpgate bench`: a load generator that starts its own server and hammers it
//! over real mutual TLS on loopback. Each simulated agent has a certificate of
//! its own (issued once and kept in the work folder); connections are spread
//! over several 127.0.0.x source addresses so that a hundred thousand do not run
//! out of ports. Every run is bounded in time and count and stops by itself, and
//! reports throughput, HDR latency percentiles, errors by kind, and the server's
//! memory and CPU time read from `/proc`.
//!
//! Scenarios: [`hold`] and [`reconnect`] (in `connections`), [`logins`] and
//! [`flood`] (in `logins`), [`enroll`]. The OTPs of a login storm are read from the server's
//! outbox folder, as a person would read their mail (see `mailbox`): the server
//! has no benchmark hook to switch on.

mod connections;
mod directory;
mod enroll;
mod logins;
mod mailbox;
mod recording;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use otpgate_protocol::admin::{AdminRequest, AdminResponse};

use crate::agent::link::{Link, ServerAddr};
use crate::server::RESERVED_FILES;
use crate::server::admin;
use crate::server::config::DEFAULT_MAX_HANDSHAKES;
use crate::tls::{self, pki};
use crate::unix;

pub use connections::{HoldReport, ReconnectReport, hold, reconnect};
pub use directory::{DirectoryReport, directory};
pub use enroll::{EnrollReport, enroll};
pub use logins::{FloodReport, LoginOptions, LoginReport, flood, logins};
pub use mailbox::{OtpMail, read_otp_mail};
pub use recording::{RecordReport, recording};

/// How long the agents may take to be welcomed, at most.
const CONNECT_DEADLINE: Duration = Duration::from_secs(300);

/// What every scenario is run with.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How many agents.
    pub agents: usize,
    /// How many 127.0.0.x source addresses to spread them over.
    pub sources: u8,
    /// The heartbeat interval the server is started with.
    pub heartbeat: Duration,
    /// Where the server's data and the agents' identities are kept between runs.
    pub work_dir: PathBuf,
    /// A file with the server's `[store]` section (PostgreSQL, say); sled in
    /// the work folder without one.
    pub store: Option<PathBuf>,
    /// How many server processes of one site serve the agents (over
    /// PostgreSQL, when more than one).
    pub nodes: usize,
}

/// The report of any scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "scenario", rename_all = "snake_case")]
pub enum Report {
    /// See [`hold`].
    Hold(HoldReport),
    /// See [`reconnect`].
    Reconnect(ReconnectReport),
    /// See [`logins`].
    Logins(LoginReport),
    /// See [`flood`].
    Flood(FloodReport),
    /// See [`directory`].
    Directory(DirectoryReport),
    /// See [`recording`].
    Record(RecordReport),
    /// See [`enroll`].
    Enroll(EnrollReport),
}

impl Report {
    /// Whether the run met its own bar: every agent connected, every login done,
    /// no wrong code let in.
    pub fn passed(&self) -> bool {
        match self {
            Self::Hold(r) => r.welcomed == r.agents,
            Self::Reconnect(r) => r.returned == r.agents,
            Self::Logins(r) => r.completed == r.attempted,
            Self::Flood(r) => {
                r.honest.completed == r.honest.attempted
                    && r.wrongly_allowed == 0
                    && r.right_code_after_lock_allowed == 0
            }
            Self::Directory(r) => r.failed == 0,
            Self::Record(r) => r.passed(),
            Self::Enroll(r) => r.enrolled == r.computers,
        }
    }

    /// The report for people.
    pub fn describe(&self) -> String {
        match self {
            Self::Hold(r) => r.describe(),
            Self::Reconnect(r) => r.describe(),
            Self::Logins(r) => r.describe(),
            Self::Flood(r) => r.describe(),
            Self::Directory(r) => r.describe(),
            Self::Record(r) => r.describe(),
            Self::Enroll(r) => r.describe(),
        }
    }
}

/// Latency percentiles from an HDR histogram, in milliseconds.
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

    /// In milliseconds; to the microsecond below 10 ms.
    fn describe(&self) -> String {
        let ms = |v: f64| {
            if v < 10.0 {
                format!("{v:.3}")
            } else {
                format!("{v:.1}")
            }
        };
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

/// A histogram of durations in microseconds, from 1 µs to an hour, three
/// significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` into `histogram`.
fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
}

/// Counts of errors (or outcomes), by kind.
pub type Kinds = BTreeMap<String, u64>;

/// Adds `count` to `kind` in `kinds`.
fn add_kind(kinds: &mut Kinds, kind: &str, count: u64) {
    *kinds.entry(kind.to_owned()).or_default() += count;
}

fn describe_kinds(kinds: &Kinds) -> String {
    if kinds.is_empty() {
        return "none".into();
    }
    kinds
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A process's memory and CPU time, from /proc.
#[derive(Debug, Clone, Copy, Serialize)]
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

    fn describe(&self, agents: usize) -> String {
        format!(
            "server: RSS {} KiB ({:.1} KiB per agent), peak {} KiB, CPU {:.2} s",
            self.rss_kib,
            self.rss_kib as f64 / agents.max(1) as f64,
            self.peak_rss_kib,
            self.cpu_secs
        )
    }
}

/// How the server under test is configured.
#[derive(Debug, Clone)]
struct ServerSetup {
    heartbeat: Duration,
    max_connections: usize,
    /// A directory file mapping each bench OS user to its address.
    directory: Option<PathBuf>,
    /// See [`FleetOptions::store`].
    store: Option<PathBuf>,
}

impl ServerSetup {
    fn new(options: &FleetOptions, directory: Option<PathBuf>) -> Self {
        Self {
            heartbeat: options.heartbeat,
            // Room for the agents and a few more (late or stray connections).
            max_connections: options.agents + options.agents / 100 + 16,
            directory,
            store: options.store.clone(),
        }
    }
}

/// The server under test, a child process running this same binary.
struct Server {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// Starts the server with its data in `work/data`, listening on `listen`.
    fn start(work: &Path, setup: &ServerSetup, listen: SocketAddr) -> anyhow::Result<Self> {
        let config = work.join("bench.toml");
        // Every agent connects from loopback: the per-source gate is the
        // whole fleet's.
        let mut text = format!(
            "heartbeat_interval_ms = {}\nmax_connections = {}\nmax_handshakes_per_source = {}\n",
            setup.heartbeat.as_millis(),
            setup.max_connections,
            DEFAULT_MAX_HANDSHAKES
        );
        if let Some(directory) = &setup.directory {
            text.push_str(&format!("directory_file = {:?}\n", directory.display()));
        }
        // The load is on the agents' port; the web tool is not under test.
        text.push_str("\n[web]\nenabled = false\n");
        if let Some(store) = &setup.store {
            let section = std::fs::read_to_string(store)
                .with_context(|| format!("cannot read {}", store.display()))?;
            text.push('\n');
            text.push_str(&section);
        }
        std::fs::write(&config, text)?;
        let data = work.join("data");
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(listen.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the server")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no server output")?);
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                let _ = child.wait();
                bail!("the server stopped before listening");
            }
            if let Some(addr) = line.trim().strip_prefix("otpgate listening on ") {
                return Ok(Self {
                    child,
                    addr: addr.parse()?,
                    data,
                    _stdout: stdout,
                });
            }
        }
    }

    fn usage(&self) -> anyhow::Result<Usage> {
        Ok(Usage::of(self.child.id())?)
    }

    fn addr(&self) -> anyhow::Result<ServerAddr> {
        Ok(format!("localhost:{}", self.addr.port()).parse()?)
    }

    /// Sends `signal` and waits for the server to exit.
    fn stop_with(mut self, signal: nix::sys::signal::Signal) {
        self.signal_and_wait(signal);
    }

    /// Stops the server as an operator would, with SIGTERM.
    fn stop(self) {
        self.stop_with(nix::sys::signal::Signal::SIGTERM);
    }

    fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = self.child.wait();
        }
    }

    fn admin_socket(&self) -> PathBuf {
        admin::socket_path(&self.data)
    }

    /// Asks the server's admin socket.
    async fn admin(&self, request: &AdminRequest) -> anyhow::Result<AdminResponse> {
        ask_admin(&self.admin_socket(), request).await
    }
}

impl Drop for Server {
    /// A run that fails half-way still stops its server.
    fn drop(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    }
}

/// Asks the admin socket at `socket`; a refusal is an error.
async fn ask_admin(socket: &Path, request: &AdminRequest) -> anyhow::Result<AdminResponse> {
    match unix::ask(socket, request).await? {
        AdminResponse::Fail(refused) => bail!("the server refused {request:?}: {refused:?}"),
        answer => Ok(answer),
    }
}

/// Makes `data` a data folder of another node of the site whose first
/// node's data folder is `first`: its secret and CA, and its outbox folder
/// the first node's (where the bench reads the mail, whichever node sends
/// it).
fn node_of(first: &Path, data: &Path) -> anyhow::Result<()> {
    crate::files::create_private_dir(&data.join("pki"))?;
    for file in ["secret.key", "pki/ca.pem", "pki/ca.key"] {
        std::fs::copy(first.join(file), data.join(file))
            .with_context(|| format!("cannot copy {file} to {}", data.display()))?;
    }
    let outbox = data.join("outbox");
    if !outbox.exists() {
        std::os::unix::fs::symlink(first.join("outbox"), outbox)?;
    }
    Ok(())
}

/// The name of agent `i`: its computer, its OS user, and its mailbox's local part.
fn agent_name(i: usize) -> String {
    format!("bench-{i:06}")
}

/// Issues the identities that are missing in `work/identities` and loads them
/// all, on every core.
fn identities(work: &Path, agents: usize) -> anyhow::Result<Vec<Arc<rustls::ClientConfig>>> {
    let data = work.join("data");
    let load = |i: usize| -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let name = agent_name(i);
        let dir = work.join("identities").join(&name);
        if !dir.join("client.key").exists() {
            pki::issue_client(&data, &name.parse()?, &dir)?;
        }
        Ok(tls::client_config(&dir)?)
    };
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let chunk = agents.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..agents)
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || (start..(start + chunk).min(agents)).map(load).collect())
            })
            .collect();
        let mut configs = Vec::with_capacity(agents);
        for worker in workers {
            let part: anyhow::Result<Vec<_>> = worker.join().expect("identity worker panicked");
            configs.extend(part?);
        }
        Ok(configs)
    })
}

/// The simulated agents: one [`Link`] each, spread over the source addresses.
struct Fleet {
    links: Vec<Link>,
    cancel: CancellationToken,
    /// The site's other nodes, besides the server [`Fleet::start`] returns
    /// (stopped with the fleet).
    others: Vec<Server>,
}

impl Fleet {
    /// Starts the server (first run: creates its PKI), and the site's other
    /// nodes (see [`FleetOptions::nodes`]), and connects every agent.
    async fn start(options: &FleetOptions, setup: &ServerSetup) -> anyhow::Result<(Server, Self)> {
        // One file per agent here, and one per agent in the server (which
        // inherits this process's limit).
        let (files, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
        let needed = u64::try_from(options.agents).unwrap_or(u64::MAX) + RESERVED_FILES;
        anyhow::ensure!(
            needed <= files,
            "{} agents need {needed} open files in the bench and in the server, but the \
             open-files limit here is {files}: raise it (ulimit -n) or run fewer agents",
            options.agents
        );
        anyhow::ensure!(
            options.nodes <= 1 || setup.store.is_some(),
            "several nodes share one database: give --store a PostgreSQL [store] section"
        );
        crate::files::create_private_dir(&options.work_dir)?;
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let server = Server::start(&options.work_dir, setup, listen)?;
        let others = (1..options.nodes)
            .map(|n| {
                let work = options.work_dir.join(format!("node-{n}"));
                node_of(&server.data, &work.join("data"))?;
                Server::start(&work, setup, listen)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        eprintln!("bench: loading {} identities", options.agents);
        let configs = identities(&options.work_dir, options.agents)?;
        let mut addrs = vec![server.addr()?];
        for other in &others {
            addrs.push(other.addr()?);
        }
        let cancel = CancellationToken::new();
        let sources = usize::from(options.sources.max(1));
        let links = configs
            .into_iter()
            .enumerate()
            .map(|(i, config)| {
                let source = Ipv4Addr::new(127, 0, 0, 1 + (i % sources) as u8);
                let mut servers = addrs.clone();
                servers.rotate_left(i % addrs.len());
                Link::spawn_from(
                    config,
                    servers,
                    Some(IpAddr::V4(source)),
                    cancel.child_token(),
                )
                .map(|(link, _)| link)
            })
            .collect::<Result<_, _>>()?;
        Ok((
            server,
            Self {
                links,
                cancel,
                others,
            },
        ))
    }

    /// The memory and CPU time of `server` and the other nodes, together.
    fn usage(&self, server: &Server) -> anyhow::Result<Usage> {
        let mut total = server.usage()?;
        for other in &self.others {
            let usage = other.usage()?;
            total.rss_kib += usage.rss_kib;
            total.peak_rss_kib += usage.peak_rss_kib;
            total.cpu_secs += usage.cpu_secs;
        }
        Ok(total)
    }

    fn len(&self) -> usize {
        self.links.len()
    }

    /// Waits until every agent `i` has been welcomed `targets[i]` times, at most
    /// [`CONNECT_DEADLINE`], showing progress. Records each agent's time from
    /// `since` into the histogram; returns how many made it and when the last did.
    async fn welcomed(
        &self,
        targets: &[u64],
        since: Instant,
        histogram: &mut Histogram<u64>,
    ) -> (usize, Duration) {
        let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
        let watchers = CancellationToken::new();
        for (link, &target) in self.links.iter().zip(targets) {
            let mut status = link.watch();
            let arrived = arrived_tx.clone();
            let stop = watchers.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    ok = status.wait_for(|s| s.welcomes >= target) => {
                        if ok.is_ok() {
                            let _ = arrived.send(since.elapsed());
                        }
                    }
                }
            });
        }
        drop(arrived_tx);
        let deadline = tokio::time::sleep(CONNECT_DEADLINE);
        tokio::pin!(deadline);
        let mut progress = tokio::time::interval(Duration::from_secs(1));
        let (mut count, mut last) = (0, Duration::ZERO);
        while count < self.len() {
            tokio::select! {
                () = &mut deadline => break,
                _ = progress.tick() => eprintln!("bench: {count} of {} welcomed", self.len()),
                at = arrived.recv() => match at {
                    Some(at) => {
                        record(histogram, at);
                        count += 1;
                        last = last.max(at);
                    }
                    None => break,
                },
            }
        }
        watchers.cancel();
        (count, last)
    }

    /// The agents' failed connection attempts and ended connections so far, by
    /// kind.
    fn failures(&self) -> Kinds {
        let mut kinds = Kinds::new();
        for link in &self.links {
            for (kind, count) in link.status().failures.by_kind() {
                add_kind(&mut kinds, kind, count);
            }
        }
        kinds
    }

    /// How many times each agent has been welcomed so far.
    fn welcomes(&self) -> Vec<u64> {
        self.links.iter().map(|l| l.status().welcomes).collect()
    }

    fn stop(&self) {
        self.cancel.cancel();
    }
}

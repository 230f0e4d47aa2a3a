//! The connection scenarios: `hold` (every agent connects and stays connected
//! with heartbeats) and `reconnect` (the server is restarted under every agent,
//! and the bench times their return).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;

use super::{
    CONNECT_DEADLINE, Fleet, FleetOptions, Kinds, Percentiles, Server, ServerSetup, Usage,
    describe_kinds, histogram,
};

fn setup(options: &FleetOptions) -> ServerSetup {
    ServerSetup::new(options, None)
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
    /// Failed connection attempts and ended connections, by kind.
    pub errors: Kinds,
    /// The server with everyone connected (peak and CPU at the end).
    pub server: Usage,
}

impl HoldReport {
    pub(super) fn describe(&self) -> String {
        format!(
            "hold: {} agents, {} welcomed in {:.2} s ({:.0}/s)\n\
             connect latency ms: {}\n\
             holding: {} heartbeats acknowledged, {} agents reconnected\n\
             connection failures: {}\n{}",
            self.agents,
            self.welcomed,
            self.connect_secs,
            self.welcomes_per_sec,
            self.connect_ms.describe(),
            self.heartbeats,
            self.reconnected,
            describe_kinds(&self.errors),
            self.server.describe(self.agents)
        )
    }
}

/// Runs the `hold` scenario: connect every agent, hold for `duration`, report.
pub async fn hold(options: FleetOptions, duration: Duration) -> anyhow::Result<HoldReport> {
    let (server, fleet) = Fleet::start(&options, &setup(&options)).await?;
    let result = run_hold(&server, &fleet, duration).await;
    fleet.stop();
    server.stop();
    result
}

async fn run_hold(
    server: &Server,
    fleet: &Fleet,
    duration: Duration,
) -> anyhow::Result<HoldReport> {
    let started = Instant::now();
    let mut connect = histogram();
    let (welcomed, last) = fleet
        .welcomed(&vec![1; fleet.len()], started, &mut connect)
        .await;
    let rss_kib = server.usage()?.rss_kib;
    let heartbeats =
        |fleet: &Fleet| -> u64 { fleet.links.iter().map(|l| l.status().heartbeats).sum() };
    let before = heartbeats(fleet);
    eprintln!(
        "bench: {welcomed} welcomed in {:.2} s; holding for {duration:?}",
        last.as_secs_f64()
    );
    tokio::time::sleep(duration).await;
    let reconnected = fleet.welcomes().iter().filter(|&&w| w > 1).count();
    let after = server.usage()?;
    Ok(HoldReport {
        agents: fleet.len(),
        welcomed,
        connect_secs: last.as_secs_f64(),
        welcomes_per_sec: welcomed as f64 / last.as_secs_f64().max(f64::EPSILON),
        connect_ms: Percentiles::of(&connect),
        reconnected,
        heartbeats: heartbeats(fleet) - before,
        errors: fleet.failures(),
        server: Usage { rss_kib, ..after },
    })
}

/// The result of a `reconnect` run.
#[derive(Debug, Clone, Serialize)]
pub struct ReconnectReport {
    /// Agents started.
    pub agents: usize,
    /// Agents welcomed before the restart.
    pub welcomed: usize,
    /// How the server was stopped: "sigterm" or "sigkill".
    pub stopped_with: String,
    /// Seconds from the signal until the new server listened.
    pub down_secs: f64,
    /// Agents welcomed again by the new server.
    pub returned: usize,
    /// Seconds from the new server's start until the last agent was back.
    pub back_secs: f64,
    /// Agents back per second over that time.
    pub returns_per_sec: f64,
    /// Time from the new server's start to each agent's return, in milliseconds.
    pub return_ms: Percentiles,
    /// Agents whose new connection resumed their TLS session.
    pub resumed: usize,
    /// Failed connection attempts and ended connections, by kind (the restart
    /// closes every connection, and refuses them while the server is down).
    pub errors: Kinds,
    /// The old server with everyone connected.
    pub before: Usage,
    /// The new server with everyone back.
    pub after: Usage,
}

impl ReconnectReport {
    pub(super) fn describe(&self) -> String {
        format!(
            "reconnect: {} agents, {} welcomed; server stopped with {}, listening again after {:.2} s\n\
             {} back in {:.2} s after its start ({:.0}/s), {} with TLS resumption\n\
             return latency ms: {}\n\
             connection failures: {}\n\
             before: {}\nafter:  {}",
            self.agents,
            self.welcomed,
            self.stopped_with,
            self.down_secs,
            self.returned,
            self.back_secs,
            self.returns_per_sec,
            self.resumed,
            self.return_ms.describe(),
            describe_kinds(&self.errors),
            self.before.describe(self.agents),
            self.after.describe(self.agents),
        )
    }
}

/// Runs the `reconnect` scenario: connect every agent, then restart the server
/// under them (SIGTERM, or SIGKILL when `kill`) and time their return.
pub async fn reconnect(options: FleetOptions, kill: bool) -> anyhow::Result<ReconnectReport> {
    let setup = setup(&options);
    let (server, fleet) = Fleet::start(&options, &setup).await?;
    let result = run_reconnect(&options, &setup, server, &fleet, kill).await;
    fleet.stop();
    // The new server stops when dropped.
    result.map(|(_, report)| report)
}

async fn run_reconnect(
    options: &FleetOptions,
    setup: &ServerSetup,
    server: Server,
    fleet: &Fleet,
    kill: bool,
) -> anyhow::Result<(Server, ReconnectReport)> {
    let (welcomed, last) = fleet
        .welcomed(&vec![1; fleet.len()], Instant::now(), &mut histogram())
        .await;
    if welcomed < fleet.len() {
        anyhow::bail!(
            "only {welcomed} of {} agents connected within {CONNECT_DEADLINE:?}",
            fleet.len()
        );
    }
    // Let every connection settle (heartbeats, records written) before the cut.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = server.usage()?;
    let targets: Vec<u64> = fleet.welcomes().iter().map(|w| w + 1).collect();
    let addr = server.addr;
    let signal = if kill {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    eprintln!(
        "bench: {welcomed} welcomed in {:.2} s; restarting the server with {signal}",
        last.as_secs_f64()
    );
    let cut = Instant::now();
    server.stop_with(signal);
    let server = Server::start(&options.work_dir, setup, addr)?;
    let started = Instant::now();
    let mut returns = histogram();
    let (returned, back) = fleet.welcomed(&targets, started, &mut returns).await;
    let resumed = fleet.links.iter().filter(|l| l.status().resumed).count();
    let after = server.usage()?;
    let report = ReconnectReport {
        agents: fleet.len(),
        welcomed,
        stopped_with: format!("{signal}").to_lowercase(),
        down_secs: (started - cut).as_secs_f64(),
        returned,
        back_secs: back.as_secs_f64(),
        returns_per_sec: returned as f64 / back.as_secs_f64().max(f64::EPSILON),
        return_ms: Percentiles::of(&returns),
        resumed,
        errors: fleet.failures(),
        before,
        after,
    };
    Ok((server, report))
}

//! A thousand agents connect at once, from one process, to the server binary, and
//! every one is welcomed. The time it took and the server's memory are printed
//! (run with `--nocapture` to see them). `OTPGATE_SCALE_AGENTS=N` measures with
//! another number (see BENCHMARKS.md).

use std::time::{Duration, Instant};

use crate::common::agent::Agent;
use crate::common::server::{ServerProcess, issue};

/// How many agents, unless `OTPGATE_SCALE_AGENTS` says otherwise.
const DEFAULT_AGENTS: usize = 1_000;
/// Heartbeats (and, below, the handshake timeout) as an operator would set them; the short ones of the other tests
/// would make this a heartbeat benchmark.
const HEARTBEAT_MS: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_agents_connect_at_once() {
    // One descriptor per agent here, and the server's own in its process.
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let count = std::env::var("OTPGATE_SCALE_AGENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_AGENTS);
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        dir.path(),
        "127.0.0.1:0",
        HEARTBEAT_MS,
        otpgate::server::config::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
        // Every agent connects from loopback.
        &format!(
            "max_handshakes_per_source = {}\n",
            otpgate::server::config::DEFAULT_MAX_HANDSHAKES
        ),
    );
    let identities: Vec<_> = (0..count)
        .map(|i| issue(&server.data_dir(), dir.path(), &format!("ws-{i:05}")))
        .collect();
    let (rss_idle, _) = server.memory_kib();

    let started = Instant::now();
    let agents: Vec<Agent> = identities
        .iter()
        .map(|identity| Agent::start(identity, server.addr))
        .collect();
    for agent in &agents {
        agent.welcomed(1, Duration::from_secs(120)).await;
    }
    let took = started.elapsed();
    let (rss, peak) = server.memory_kib();

    let mut ids: Vec<_> = agents
        .iter()
        .map(|agent| agent.link.status().client_id.unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "each agent welcomed as its own computer");
    eprintln!(
        "{count} agents welcomed in {:.2} s; server memory {} KiB idle, {} KiB with them \
         connected ({:.1} KiB per agent), peak {} KiB",
        took.as_secs_f64(),
        rss_idle,
        rss,
        (rss.saturating_sub(rss_idle)) as f64 / count as f64,
        peak
    );

    // All still served on their first connection, heartbeats acknowledged.
    let heartbeats: Vec<u64> = agents.iter().map(|a| a.link.status().heartbeats).collect();
    for (agent, heartbeats) in agents.iter().zip(heartbeats) {
        agent
            .still_served_since(heartbeats, Duration::from_secs(60))
            .await;
    }
}

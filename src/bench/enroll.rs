//! `otpgate bench enroll`: computers enroll with one join token against a
//! server this bench starts on a fresh data folder, a few at a time, each
//! the whole way a real one goes (its key made, the server's CA checked
//! against the token, the request signed and committed, the identity folder
//! written): how long all took, each one's latency, the server's CPU.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::task::JoinSet;

use otpgate_protocol::admin::{AdminRequest, AdminResponse, TokenSpec};

use super::{Percentiles, Server, ServerSetup, histogram, record};
use crate::agent::enroll::enroll as enroll_one;

/// What an enrollment bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct EnrollReport {
    /// Computers that tried.
    pub computers: usize,
    /// How many enrolled at once, at most.
    pub concurrency: usize,
    /// Computers that enrolled.
    pub enrolled: usize,
    /// Seconds from the first start to the last end.
    pub seconds: f64,
    /// Enrollments per second.
    pub per_second: f64,
    /// Each enrollment, in milliseconds.
    pub latency: Percentiles,
    /// The server's CPU time, user and system, in seconds.
    pub server_cpu_secs: f64,
}

impl EnrollReport {
    /// The report for people.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} computers enrolled, {} at a time, in {:.2} s ({:.0}/s)\n\
             each enrollment        {}\nserver CPU {:.2} s ({:.2} ms per enrollment)",
            self.enrolled,
            self.computers,
            self.concurrency,
            self.seconds,
            self.per_second,
            self.latency.describe(),
            self.server_cpu_secs,
            self.server_cpu_secs * 1000.0 / self.enrolled.max(1) as f64
        )
    }
}

/// Enrolls `count` computers, `concurrency` at a time, with a server whose
/// data and the computers' identities are in `work/enroll` (made afresh).
pub async fn enroll(work: &Path, count: usize, concurrency: usize) -> anyhow::Result<EnrollReport> {
    let work = work.join("enroll");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot empty {}", work.display()))?;
    }
    crate::files::create_private_dir(&work)?;
    let setup = ServerSetup {
        heartbeat: Duration::from_secs(30),
        max_connections: concurrency + 16,
        directory: None,
        store: None,
    };
    let server = Server::start(&work, &setup, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let made = server
        .admin(&AdminRequest::TokenCreate(TokenSpec {
            ttl_secs: 3600,
            uses: u32::try_from(count).unwrap_or(u32::MAX),
            group: None,
            name_pattern: None,
            replace: false,
        }))
        .await?;
    let AdminResponse::TokenMade { token, .. } = made else {
        anyhow::bail!("no token: {made:?}");
    };
    let token = Arc::new(token.0);
    let servers = Arc::new(vec![server.addr()?]);
    let before = server.usage()?.cpu_secs;
    let started = Instant::now();
    let mut running = JoinSet::new();
    let mut latencies = histogram();
    let mut enrolled = 0;
    let mut failures = Vec::new();
    for i in 0..count {
        if running.len() >= concurrency.max(1)
            && let Some(done) = running.join_next().await
        {
            tally(done?, &mut latencies, &mut enrolled, &mut failures);
        }
        let (token, servers) = (Arc::clone(&token), Arc::clone(&servers));
        let identity = work.join(format!("computer-{i}"));
        running.spawn(async move {
            let started = Instant::now();
            let name = format!("bench-{i}");
            let result = enroll_one(&servers, &token, &identity, Some(&name)).await;
            (started.elapsed(), result.map_err(|err| err.to_string()))
        });
    }
    while let Some(done) = running.join_next().await {
        tally(done?, &mut latencies, &mut enrolled, &mut failures);
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu_secs = server.usage()?.cpu_secs - before;
    server.stop();
    if let Some(first) = failures.first() {
        eprintln!(
            "bench: {} enrollments failed; the first: {first}",
            failures.len()
        );
    }
    Ok(EnrollReport {
        computers: count,
        concurrency,
        enrolled,
        seconds,
        per_second: enrolled as f64 / seconds.max(f64::EPSILON),
        latency: Percentiles::of(&latencies),
        server_cpu_secs,
    })
}

/// Counts one finished enrollment.
fn tally(
    (took, result): (Duration, Result<crate::agent::enroll::Enrolled, String>),
    latencies: &mut hdrhistogram::Histogram<u64>,
    enrolled: &mut usize,
    failures: &mut Vec<String>,
) {
    match result {
        Ok(_) => {
            *enrolled += 1;
            record(latencies, took);
        }
        Err(err) => failures.push(err),
    }
}

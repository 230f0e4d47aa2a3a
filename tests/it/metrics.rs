//! The Prometheus endpoints, scraped after a known run and read with real
//! parsers: Python's `prometheus_client` (Debian's) for the counts, and
//! `promtool check metrics` for the format.

use std::collections::BTreeMap;

use crate::common::agent::AgentProcess;
use crate::common::release::{run, this_otpgate};
use crate::common::server::ServerProcess;
use crate::common::{HEARTBEAT_MS, free_port, me, wait_until};
use crate::releases::{Life, prepare};

/// The body of `GET http://ADDRESS/PATH` (`url`), which must answer 200,
/// over plain HTTP/1.0 (the answer ends with the connection).
async fn get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (address, path) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    tcp.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

/// Every sample of the OpenMetrics text at `url`, by name and labels, as
/// Python's `prometheus_client` parser reads it; and the text itself.
async fn scrape(url: &str) -> (BTreeMap<String, f64>, String) {
    let text = get(url).await;
    let parser = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(samples))
"#;
    let parsed = run(
        std::path::Path::new("/usr/bin/python3"),
        &["-c", parser],
        &text,
    )
    .await;
    assert!(
        parsed.status.success(),
        "the parser refused it: {}\n{text}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    (serde_json::from_slice(&parsed.stdout).unwrap(), text)
}

/// `promtool check metrics` on `text`, where Debian's prometheus is
/// installed. Its lint reads the classic text format, in which a counter's
/// help is named with its `_total`; OpenMetrics names it without, so that
/// one complaint is checked to be that and let pass.
async fn promtool(text: &str) {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        crate::common::skip(
            "the_metrics_count_a_known_run_and_name_nobody",
            "promtool is not installed (Debian's prometheus)",
        );
        return;
    }
    let checked = run(promtool, &["check", "metrics"], text).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let problems: Vec<&str> = said
        .lines()
        .filter(|line| {
            let helped = line
                .strip_suffix("_total no help text")
                .is_some_and(|family| text.contains(&format!("# HELP {family} ")));
            !line.trim().is_empty() && !helped
        })
        .collect();
    assert!(problems.is_empty(), "promtool: {said}");
}

/// The value of `sample` (`name{labels}`, labels sorted), which must be
/// there; a labelled series shows once it has counted.
fn value(samples: &BTreeMap<String, f64>, sample: &str) -> f64 {
    *samples
        .get(sample)
        .unwrap_or_else(|| panic!("no {sample} in {samples:?}"))
}

/// A server process of this build on folder `dir`, serving its metrics on
/// the port it answers with.
fn serving_metrics(dir: &std::path::Path) -> (ServerProcess, u16) {
    let metrics_port = free_port();
    let server = ServerProcess::start_binary(
        this_otpgate(),
        dir,
        "127.0.0.1:0",
        HEARTBEAT_MS,
        2000,
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    );
    (server, metrics_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_a_known_run_and_name_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics_port) = serving_metrics(dir.path());
    let data = server.data_dir();
    let password = "the metrics administrator's password";
    let identity = prepare(&data, password, this_otpgate(), "ws-metrics", dir.path()).await;
    let agent_dir = tempfile::tempdir().unwrap();
    let agent_port = free_port();
    let agent_metrics = format!("127.0.0.1:{agent_port}");
    let agent = AgentProcess::start_under(
        &[],
        &["--metrics-listen", &agent_metrics],
        this_otpgate(),
        &identity,
        server.addr,
        agent_dir.path(),
    )
    .await;
    let (samples, _) = scrape(&format!("http://{agent_metrics}/metrics")).await;
    assert_eq!(
        value(&samples, "otpgate_agent_connected{}"),
        1.0,
        "{samples:?}"
    );
    assert_eq!(value(&samples, "otpgate_agent_spool_bytes{}"), 0.0);

    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let (samples, _) = scrape(&url).await;
    assert_eq!(
        value(&samples, "otpgate_agents_connected{}"),
        1.0,
        "{samples:?}"
    );
    assert_eq!(value(&samples, "otpgate_mail_queue{}"), 0.0);

    // A wrong code with no OTP asked for, then a whole life: a request
    // approved, the OTP verified, a terminal recorded, the computer revoked.
    let email = crate::common::my_email();
    let socket = agent.socket.to_str().unwrap().to_owned();
    run(
        this_otpgate(),
        &["login", "--socket", &socket, "verify", "--email", &email],
        "12345678\n",
    )
    .await;
    Life {
        prompt: this_otpgate(),
        cli: this_otpgate(),
        data: &data,
        password,
    }
    .live(&agent, "ws-metrics")
    .await;

    // The agent, refused now, tries again: its refusal is counted.
    wait_until(
        std::time::Duration::from_secs(20),
        "a refused reconnection",
        || async {
            let samples = scrape(&url).await.0;
            samples.contains_key("otpgate_tls_refused_total{reason=\"revoked\"}")
        },
    )
    .await;
    let (samples, text) = scrape(&url).await;
    let expect = [
        ("otpgate_logins_total{outcome=\"allow\"}", 1.0),
        ("otpgate_logins_total{outcome=\"deny_no_live_otp\"}", 1.0),
        (
            "otpgate_otp_requests_total{mode=\"email\",outcome=\"awaiting_approval\"}",
            1.0,
        ),
        ("otpgate_otps_issued_total{origin=\"approval\"}", 1.0),
        (
            "otpgate_access_requests_decided_total{decision=\"approved\"}",
            1.0,
        ),
        (
            "otpgate_access_request_decision_seconds_count{decision=\"approved\"}",
            1.0,
        ),
        ("otpgate_agents_connected{}", 0.0),
    ];
    for (sample, want) in expect {
        assert_eq!(value(&samples, sample), want, "{sample}\n{text}");
    }
    // The approvers' notice and the OTP: written to the outbox folder.
    assert!(
        value(&samples, "otpgate_mail_sent_total{}") >= 2.0,
        "{text}"
    );
    assert_eq!(value(&samples, "otpgate_mail_queue{}"), 0.0, "{text}");
    assert!(value(&samples, "otpgate_mail_send_seconds_count{}") >= 2.0);
    assert!(value(&samples, "otpgate_store_commit_seconds_count{}") >= 4.0);
    assert!(value(&samples, "otpgate_recordings_stored_bytes_total{}") > 0.0);
    assert!(value(&samples, "otpgate_computer_actors{}") >= 1.0);
    // Nobody is named: not the person, the address, nor the computer.
    for name in [me().as_str(), email.as_str(), "ws-metrics"] {
        assert!(!text.contains(name), "{name} in\n{text}");
    }
    promtool(&text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sums_what_connected_agents_say_their_spools_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (server, metrics_port) = serving_metrics(dir.path());
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let spooled = || async { value(&scrape(&url).await.0, "otpgate_agents_spooled_bytes{}") };
    let data = server.data_dir();
    let agents: Vec<_> = ["ws-a", "ws-b"]
        .into_iter()
        .map(|name| {
            let identity = crate::common::server::issue(&data, dir.path(), name);
            crate::common::agent::Agent::start(&identity, server.addr)
        })
        .collect();
    agents[0].link.spooled(4096);
    agents[1].link.spooled(1000);
    wait_until(std::time::Duration::from_secs(20), "both said", || async {
        spooled().await == 5096.0
    })
    .await;
    // What one says now replaces what it said; what a gone one said goes.
    agents[0].link.spooled(96);
    wait_until(std::time::Duration::from_secs(20), "said again", || async {
        spooled().await == 1096.0
    })
    .await;
    let mut agents = agents;
    drop(agents.pop());
    wait_until(std::time::Duration::from_secs(20), "one gone", || async {
        spooled().await == 96.0
    })
    .await;
}

//! `otpgate bench` as a load tester runs it: each scenario starts its own server
//! (or several nodes of one site over PostgreSQL), connects its agents from
//! several 127.0.0.x addresses, does its work, stops by itself and reports.

use std::path::Path;
use std::process::Command;

/// Runs `otpgate bench <args> --json` with its agents on 4 source addresses
/// and its work folder in `work`; returns the report.
fn bench(work: &Path, args: &[&str]) -> serde_json::Value {
    bench_json(work, &[args, &["--sources", "4"]].concat())
}

/// Runs `otpgate bench <args> --json` with its work folder in `work`; returns
/// the report.
fn bench_json(work: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .arg("bench")
        .args(args)
        .args(["--json", "--work-dir"])
        .arg(work)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn assert_percentiles(report: &serde_json::Value, field: &str) {
    let p50 = report[field]["p50"].as_f64().unwrap();
    let p99 = report[field]["p99"].as_f64().unwrap();
    let max = report[field]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{report}");
}

#[test]
fn bench_hold_connects_every_agent_and_reports() {
    let work = tempfile::tempdir().unwrap();
    let args = [
        "hold",
        "--agents",
        "40",
        "--duration",
        "2",
        "--heartbeat",
        "1",
    ];
    let report = bench(work.path(), &args);
    assert_eq!(report["scenario"], "hold");
    assert_eq!(report["agents"], 40);
    assert_eq!(report["welcomed"], 40);
    assert_eq!(report["reconnected"], 0);
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(report["heartbeats"].as_u64().unwrap() >= 40, "{report}");
    assert_percentiles(&report, "connect_ms");
    assert!(report["server"]["peak_rss_kib"].as_u64().unwrap() > 1000);
    assert!(report["server"]["cpu_secs"].as_f64().unwrap() > 0.0);
    // The identities are kept for the next run.
    let identities = std::fs::read_dir(work.path().join("identities")).unwrap();
    assert_eq!(identities.count(), 40);
}

#[test]
fn bench_logins_completes_every_login_through_the_mail() {
    let work = tempfile::tempdir().unwrap();
    let args = ["logins", "--agents", "10", "--count", "60", "--rate", "100"];
    let report = bench(work.path(), &args);
    assert_eq!(report["scenario"], "logins");
    assert_eq!(report["attempted"], 60);
    assert_eq!(report["completed"], 60, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}));
    assert_percentiles(&report, "latency_ms");
    // A second run on the same server data: the hour between new OTPs is off
    // for the bench, and no code from the first run is taken for a new one.
    let report = bench(work.path(), &["logins", "--agents", "10", "--count", "30"]);
    assert_eq!(report["completed"], 30, "{report}");
}

#[test]
fn bench_logins_over_three_nodes_of_one_site_completes_every_login() {
    let Some(cluster) = otpgate_actors::test_postgres::postgres() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store.toml");
    let url = cluster.database().url;
    std::fs::write(
        &store,
        format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\n"),
    )
    .unwrap();
    let args = [
        "logins",
        "--agents",
        "12",
        "--count",
        "60",
        "--rate",
        "100",
        "--nodes",
        "3",
        "--store",
        store.to_str().unwrap(),
    ];
    let report = bench(&work.path().join("bench"), &args);
    assert_eq!(report["completed"], 60, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}));
    // Every node's data folder, each its own.
    for n in 1..3 {
        assert!(
            work.path()
                .join(format!("bench/node-{n}/data/pki/ca.pem"))
                .exists()
        );
    }
}

#[test]
fn bench_flood_never_lets_a_wrong_code_in_and_others_still_log_in() {
    let work = tempfile::tempdir().unwrap();
    let args = [
        "flood",
        "--agents",
        "8",
        "--attackers",
        "2",
        "--count",
        "40",
        "--rate",
        "20",
    ];
    let report = bench(work.path(), &args);
    assert_eq!(report["scenario"], "flood");
    assert_eq!(report["wrongly_allowed"], 0);
    assert_eq!(report["right_code_after_lock_allowed"], 0);
    let sent = report["wrong_codes"].as_u64().unwrap();
    let verdicts = &report["verdicts"];
    // Each attacker's OTP locks after 5 wrong codes; its computer is throttled
    // after 100 failures in the hour; its connection is slowed down by flood
    // control.
    assert!(sent > 10, "{report}");
    let count = |kind: &str| verdicts[kind].as_u64().unwrap_or(0);
    assert!(count("deny") >= 5, "{report}");
    assert_eq!(
        count("deny") + count("throttle") + count("rate_limited"),
        sent,
        "{report}"
    );
    assert_eq!(report["honest"]["completed"], 40, "{report}");
}

#[test]
fn bench_reconnect_brings_every_agent_back_after_a_restart() {
    let work = tempfile::tempdir().unwrap();
    for stop in ["sigterm", "sigkill"] {
        let mut args = vec!["reconnect", "--agents", "30"];
        if stop == "sigkill" {
            args.push("--kill");
        }
        let report = bench(work.path(), &args);
        assert_eq!(report["scenario"], "reconnect");
        assert_eq!(report["stopped_with"], stop);
        assert_eq!(report["returned"], 30, "{report}");
        // The server's session tickets survive its restart.
        assert_eq!(report["resumed"], 30, "{report}");
        // Every connection was cut once: told why by a server stopping
        // gracefully, broken by one killed.
        let cut = if stop == "sigterm" { "closed" } else { "lost" };
        assert!(report["errors"][cut].as_u64().unwrap() >= 30, "{report}");
        assert_percentiles(&report, "return_ms");
    }
}

#[test]
fn bench_enroll_enrolls_every_computer_against_a_fresh_server_and_reports() {
    let work = tempfile::tempdir().unwrap();
    let args = ["enroll", "--count", "12", "--concurrency", "4"];
    // Twice: each run starts afresh (the names of the first are free again).
    for _ in 0..2 {
        let report = bench_json(work.path(), &args);
        assert_eq!(report["scenario"], "enroll");
        assert_eq!(report["enrolled"], 12, "{report}");
        assert_percentiles(&report, "latency");
        assert!(report["server_cpu_secs"].as_f64().unwrap() >= 0.0);
        let key = work.path().join("enroll/computer-11/client.key");
        assert!(key.exists());
    }
}

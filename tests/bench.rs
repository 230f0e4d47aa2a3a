//! `otpgate bench hold` as a load tester runs it: it starts its own server,
//! connects its agents from several 127.0.0.x addresses, holds, and reports.

use std::process::Command;

#[test]
fn bench_hold_connects_every_agent_and_reports() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .args([
            "bench",
            "hold",
            "--agents",
            "40",
            "--duration",
            "2",
            "--heartbeat",
            "1",
        ])
        .args(["--sources", "4", "--json", "--work-dir"])
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["agents"], 40);
    assert_eq!(report["welcomed"], 40);
    assert_eq!(report["reconnected"], 0);
    assert!(report["heartbeats"].as_u64().unwrap() >= 40, "{report}");
    let p50 = report["connect_ms"]["p50"].as_f64().unwrap();
    let max = report["connect_ms"]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max, "{report}");
    assert!(report["server_peak_rss_kib"].as_u64().unwrap() > 1000);
    assert!(report["server_cpu_secs"].as_f64().unwrap() > 0.0);
    // The identities are kept for the next run.
    assert_eq!(
        std::fs::read_dir(work.path().join("identities"))
            .unwrap()
            .count(),
        40
    );
}

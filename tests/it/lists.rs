//! Admin lists longer than one frame: every list answers page by page, never
//! with a closed connection, and `otpgate admin ... list` follows the pages to
//! print everything asked for, with `--limit` and filters.

use std::path::Path;
use std::process::Command;

use otpgate_actors::audit::{Action, AuditEntry};
use otpgate_actors::directory::{Role, UserRecord};
use otpgate_actors::mail::{MailFailure, MailKind, OutboxEntry};
use otpgate_actors::request::{AccessRequest, Decision, Refusal};
use otpgate_actors::session::ClientSession;
use otpgate_actors::settings::Options;
use otpgate_actors::{ComputerId, ComputerRecord, Store, Timestamp};
use otpgate_protocol::admin::{AdminRequest, AdminResponse, ListFilter, MAX_PAGE, PageRequest};

use crate::common::server::TestServer;

/// Entries per list: with the padding below, each list is several frames long.
const N: u64 = 700;
/// Makes every entry well over 100 bytes on the wire.
const PAD: &str = "----------------------------------------------------------------------------------------------------";
const T0: u64 = 1_800_000_000_000;

fn computer(i: u64) -> ComputerId {
    format!("ws-{i:05}").parse().unwrap()
}

fn seed(store: &dyn Store) {
    let at = |i: u64| Timestamp::from_unix_millis(T0 + i * 1000);
    for i in 0..N {
        let record = ComputerRecord {
            first_seen: at(i),
            connected_since: None,
            last_seen: at(i),
            host_name: format!("host-{i}{PAD}"),
            agent_version: "0.1.0".into(),
            group: None,
            options: Options::default(),
            protocol: Some(2),
        };
        store.put_computer(&computer(i), &record).unwrap();
        store
            .put_user(&UserRecord {
                login: format!("user{i:05}"),
                email: format!("user{i:05}.{PAD}@example.com"),
                password_hash: String::new(),
                role: Role::User,
                password_change_due: false,
                disabled: false,
            })
            .unwrap();
        store
            .put_request(&AccessRequest {
                id: 10_000 + i,
                computer: computer(i),
                os_user: format!("os{i}"),
                email: format!("os{i}.{PAD}@example.com"),
                emergency: false,
                created: at(i),
                expires: at(i + 3600),
                decision: Decision::Pending,
            })
            .unwrap();
        store
            .put_session(&ClientSession {
                id: 20_000 + i,
                computer: computer(i),
                os_user: format!("os{i}"),
                email: format!("os{i}.{PAD}@example.com"),
                started: at(i),
                last_activity: at(i),
                ended: Some((at(i + 1), otpgate_actors::session::SessionEnd::Logout)),
            })
            .unwrap();
        store
            .append_audit(&AuditEntry {
                at: at(i),
                who: otpgate_actors::audit::Who::os_user(&format!("os{i}"), &computer(i)),
                computer: Some(computer(i).to_string()),
                action: Action::Request,
                outcome: format!("entry {i} {PAD}"),
            })
            .unwrap();
        store
            .queue_mail(&OutboxEntry {
                id: 30_000 + i,
                to: format!("os{i}.{PAD}@example.com"),
                queued: at(i),
                kind: MailKind::Outcome {
                    computer: computer(i),
                    refusal: Refusal::Expire,
                    comment: None,
                },
                request: None,
                attempts: 1,
                // Not due while the test runs: it stays queued.
                next_try: Timestamp::from_unix_millis(u64::MAX / 2),
            })
            .unwrap();
        store
            .put_mail_failure(&MailFailure {
                id: 40_000 + i,
                to: format!("os{i}.{PAD}@example.com"),
                at: at(i),
                reason: format!("relay said 550 {PAD}"),
                computer: Some(computer(i)),
                request: None,
            })
            .unwrap();
    }
}

/// `otpgate admin --json ARGS` against the server's data folder: the answer.
fn admin_json(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// How many entries the CLI printed for `args`.
fn count(data: &Path, args: &[&str]) -> usize {
    let answer = admin_json(data, args);
    let (_, entries) = answer.as_object().unwrap().iter().next().unwrap();
    entries
        .as_array()
        .unwrap_or_else(|| panic!("{args:?}: {answer}"))
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_longer_than_a_frame_is_paged_and_followed() {
    let server = TestServer::start_seeded(seed).await;
    let data = server.data_dir();
    let n = N as usize;

    // One request for as many as a page may hold: fewer come back, with where
    // to go on, not a closed connection.
    let big = PageRequest {
        limit: MAX_PAGE,
        after: None,
    };
    match server
        .admin(AdminRequest::AuditList {
            filter: ListFilter::default(),
            page: big.clone(),
        })
        .await
    {
        AdminResponse::Audit(page) => {
            assert!(
                page.items.len() < n && page.next.is_some(),
                "trimmed to a frame"
            );
            assert!(
                page.items[0]
                    .outcome
                    .starts_with(&format!("entry {}", N - 1)),
                "newest first"
            );
        }
        other => panic!("{other:?}"),
    }

    // The CLI follows the pages of every list to the end.
    let pending = ["requests", "list"];
    let all_sessions = ["sessions", "list", "--all"];
    let audit_all = ["audit", "list", "--limit", "0"];
    for args in [
        &["clients", "list"][..],
        &["users", "list"],
        &pending,
        &all_sessions,
        &audit_all,
        &["mail", "queue"],
        &["mail", "failures"],
    ] {
        assert_eq!(count(&data, args), n, "{args:?}");
    }
    // No administrator was created: the seed made users.
    assert_eq!(count(&data, &["users", "list", "--limit", "5"]), 5);
    assert_eq!(
        count(&data, &["clients", "list", "--limit", "0"]),
        n,
        "0: all"
    );
    assert_eq!(
        count(&data, &["audit", "list"]),
        50,
        "the newest 50 by default"
    );

    // Filters by computer, person and time, across pages.
    assert_eq!(
        count(
            &data,
            &["sessions", "list", "--all", "--computer", "ws-00042"]
        ),
        1
    );
    assert_eq!(count(&data, &["requests", "list", "--user", "os7"]), 1);
    assert_eq!(
        count(&data, &["audit", "list", "--limit", "0", "--user", "os699"]),
        1
    );
    let since = Timestamp::from_unix_millis(T0 + 600 * 1000).rfc3339();
    let until = Timestamp::from_unix_millis(T0 + 650 * 1000).rfc3339();
    assert_eq!(
        count(
            &data,
            &["requests", "list", "--since", &since, "--until", &until]
        ),
        50
    );
    server.stop().await;
}

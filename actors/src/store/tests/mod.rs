//! The store's unit tests: records survive reopening, pages, pruning,
//! flushes shared, and every earlier schema read and upgraded; on
//! PostgreSQL too in [`postgres`].

use serde::Serialize;

use std::path::Path;

use super::record::{SCHEMA_V1, encode_as};
use super::*;
use crate::request::Decision;
use crate::settings::Options;

fn record() -> ComputerRecord {
    ComputerRecord {
        first_seen: Timestamp::from_unix_millis(1),
        connected_since: Some(Timestamp::from_unix_millis(2)),
        last_seen: Timestamp::from_unix_millis(3),
        host_name: "ws-1".into(),
        agent_version: "0.1.0".into(),
        group: None,
        options: Options::default(),
        protocol: Some(2),
    }
}

#[tokio::test]
async fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id: ComputerId = "ws-1".parse().unwrap();
    {
        let store = KvStore::open(dir.path()).unwrap();
        assert_eq!(store.computer(&id).await.unwrap(), None);
        store.put_computer(&id, &record()).unwrap();
        store.flush().await.unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.computer(&id).await.unwrap(), Some(record()));
    let all = super::all(|after| store.computers_from(after, BATCH))
        .await
        .unwrap();
    assert_eq!(all, vec![(id, record())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_flushes_all_finish() {
    // 500 at once used to take every sled pool thread and never return.
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(KvStore::open(dir.path()).unwrap());
    let mut flushes = tokio::task::JoinSet::new();
    for i in 0..500u64 {
        let store = std::sync::Arc::clone(&store);
        flushes.spawn(async move {
            store
                .put_slot(&"ws-1".parse().unwrap(), &i.to_string(), &Slot::default())
                .unwrap();
            store.flush().await.unwrap();
        });
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), flushes.join_all())
        .await
        .expect("every flush returns");
}

#[tokio::test]
async fn prefixes_keep_computers_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    let ws1: ComputerId = "ws-1".parse().unwrap();
    let ws10: ComputerId = "ws-10".parse().unwrap();
    store.put_slot(&ws1, "alice", &Slot::default()).unwrap();
    store.put_slot(&ws10, "bob", &Slot::default()).unwrap();
    let users: Vec<String> = store
        .slots(&ws1)
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(users, ["alice"]);
}

#[tokio::test]
async fn pruning_removes_what_is_over_and_old_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    pruning(&KvStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn in_postgres_pruning_removes_what_is_over_and_old_and_keeps_the_rest() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    pruning(&KvStore::connect(&cluster.database()).await.unwrap()).await;
}

/// What pruning removes and keeps, the same whatever `store` is kept in.
async fn pruning(store: &KvStore) {
    use crate::audit::Action;
    use crate::session::SessionEnd;
    let day = Duration::from_secs(86_400);
    let t = |days: u64| Timestamp::from_unix_millis(days * 86_400_000);
    let (cutoff, now) = (t(100), t(465));
    for at in [t(10), t(99), t(100), t(300)] {
        store
            .append_audit(&AuditEntry {
                at,
                who: crate::audit::Who::Server,
                computer: None,
                action: Action::Configure,
                outcome: "o".into(),
            })
            .unwrap();
    }
    let session = |id, ended: Option<u64>| ClientSession {
        id,
        computer: "ws-1".parse().unwrap(),
        os_user: "alice".into(),
        email: "alice@example.com".into(),
        started: t(1),
        last_activity: t(1),
        ended: ended.map(|days| (t(days), SessionEnd::Logout)),
    };
    for s in [
        session(1, Some(50)),
        session(2, Some(200)),
        session(3, None),
    ] {
        store.put_session(&s).unwrap();
    }
    let request = |id, created, decision| AccessRequest {
        id,
        computer: "ws-1".parse().unwrap(),
        os_user: "alice".into(),
        email: "alice@example.com".into(),
        emergency: false,
        created,
        expires: created.after(day),
        decision,
    };
    store
        .put_request(&request(11, t(5), Decision::Expire))
        .unwrap();
    store
        .put_request(&request(12, t(5), Decision::Pending))
        .unwrap();
    store
        .put_request(&request(13, t(150), Decision::Expire))
        .unwrap();
    let window = Duration::from_secs(3600);
    let failed = |at| Failure {
        at,
        limit: 10,
        window,
    };
    store.count_failure("old", failed(t(1))).unwrap();
    store.count_failure("fresh", failed(now)).unwrap();
    let ws1: ComputerId = "ws-1".parse().unwrap();
    store.put_mailed(&ws1, "alice", t(400)).unwrap();
    store.put_mailed(&ws1, "bob", t(500)).unwrap();
    store.flush().await.unwrap();

    assert_eq!(
        store.prune(cutoff, now, window).await.unwrap(),
        2 + 1 + 1 + 1 + 1
    );
    store.flush().await.unwrap();
    let audit: Vec<_> = all(|before| store.audit_from(before, BATCH))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(audit, [t(300), t(100)]);
    let sessions: Vec<_> = all(|after| store.sessions_from(after, BATCH))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(sessions, [2, 3], "the open one stays, however old");
    assert_eq!(store.request(11).await.unwrap(), None);
    assert!(
        store.request(12).await.unwrap().is_some(),
        "a pending one stays"
    );
    assert!(store.request(13).await.unwrap().is_some());
    assert_eq!(
        store.failures(&["old"]).await.unwrap()[0],
        Bucket::default()
    );
    assert_ne!(
        store.failures(&["fresh"]).await.unwrap()[0],
        Bucket::default()
    );
    assert_eq!(store.mailed(&ws1, "alice").await.unwrap(), None);
    assert_eq!(store.mailed(&ws1, "bob").await.unwrap(), Some(t(500)));
}

#[tokio::test]
async fn requests_are_found_by_id_also_those_written_before_the_index() {
    use crate::request::{AccessRequest, Decision};
    let dir = tempfile::tempdir().unwrap();
    let request = |id, computer: &str| AccessRequest {
        id,
        computer: computer.parse().unwrap(),
        os_user: "alice".into(),
        email: "alice@example.com".into(),
        emergency: false,
        created: Timestamp::from_unix_millis(0),
        expires: Timestamp::from_unix_millis(1),
        decision: Decision::Pending,
    };
    {
        let store = KvStore::open(dir.path()).unwrap();
        store.put_request(&request(7, "ws-1")).unwrap();
        store.put_request(&request(8, "ws-2")).unwrap();
        // As a store from before the index.
        store.request_index.sled_tree().unwrap().clear().unwrap();
        assert_eq!(store.request(7).await.unwrap(), None);
    }
    let store = reopen(dir.path());
    assert_eq!(store.request(7).await.unwrap(), Some(request(7, "ws-1")));
    assert_eq!(store.request(8).await.unwrap(), Some(request(8, "ws-2")));
    assert_eq!(store.request(9).await.unwrap(), None);
}

/// Opens the store at `path` again, once the handle before has let go of
/// the lock (sled's flusher thread holds it for a moment after a drop).
fn reopen(path: &Path) -> KvStore {
    for _ in 0..100 {
        match KvStore::open(path) {
            Ok(store) => return store,
            Err(StoreError::Database(_)) => std::thread::sleep(Duration::from_millis(50)),
            Err(err) => panic!("{err}"),
        }
    }
    panic!("the store at {} stayed locked", path.display())
}

/// A window of an hour, its start, and a failure at that start in a window
/// of that hour that fills with two.
fn two_in_an_hour() -> (Duration, Timestamp, Failure) {
    let hour = Duration::from_secs(3600);
    let t0 = Timestamp::from_unix_millis(10_000);
    let fail = Failure {
        at: t0,
        limit: 2,
        window: hour,
    };
    (hour, t0, fail)
}

#[tokio::test]
async fn failures_are_counted_atomically_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (hour, t0, fail) = two_in_an_hour();
    {
        let store = KvStore::open(dir.path()).unwrap();
        assert_eq!(store.failures(&["k"]).await.unwrap()[0], Bucket::default());
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| store.count_failure("k", fail).unwrap());
            }
        });
        assert_eq!(
            store.failures(&["k"]).await.unwrap()[0].full_for(t0, 2, hour),
            Some(hour / 2)
        );
    }
    let store = reopen(dir.path());
    assert!(
        store.failures(&["k"]).await.unwrap()[0]
            .full_for(t0, 2, hour)
            .is_some()
    );
    let both = store.failures(&["other", "k"]).await.unwrap();
    assert_eq!(both[0], Bucket::default());
    assert_ne!(both[1], Bucket::default(), "in the order asked");
}

#[tokio::test]
async fn the_audit_log_returns_the_newest_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    for i in 0..5 {
        store
            .append_audit(&AuditEntry {
                at: Timestamp::from_unix_millis(i),
                who: crate::audit::Who::Server,
                computer: None,
                action: crate::audit::Action::Configure,
                outcome: i.to_string(),
            })
            .unwrap();
    }
    let newest: Vec<(Vec<u8>, String)> = store
        .audit_from(None, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|(key, e)| (key, e.outcome))
        .collect();
    let outcomes: Vec<&str> = newest.iter().map(|(_, o)| o.as_str()).collect();
    assert_eq!(outcomes, ["4", "3", "2"]);
    let (cursor, _) = &newest[2];
    let older: Vec<String> = store
        .audit_from(Some(cursor.clone()), BATCH)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.outcome)
        .collect();
    assert_eq!(older, ["1", "0"], "the next page starts before the cursor");
}

#[tokio::test]
async fn settings_of_the_first_schema_are_upgraded() {
    #[derive(Serialize)]
    struct V1 {
        expiration: Duration,
        new_otp_interval: Duration,
        otp_length: u8,
        max_attempts: u32,
        max_failures_per_hour: u32,
    }
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    let old = V1 {
        expiration: Duration::from_secs(600),
        new_otp_interval: Duration::from_secs(60),
        otp_length: 10,
        max_attempts: 3,
        max_failures_per_hour: 7,
    };
    store
        .meta
        .sled_tree()
        .unwrap()
        .insert("settings", encode_as(SCHEMA_V1, &old).unwrap())
        .unwrap();
    let upgraded = store.settings().await.unwrap();
    assert_eq!(
        upgraded,
        SystemSettings {
            expiration: Duration::from_secs(600),
            new_otp_interval: Duration::from_secs(60),
            otp_length: 10,
            max_attempts: 3,
            max_failures: 7,
            ..SystemSettings::default()
        }
    );
    store.put_settings(&upgraded).unwrap();
    assert_eq!(store.settings().await.unwrap(), upgraded);
}

#[tokio::test]
async fn settings_of_the_second_schema_are_upgraded() {
    #[derive(Serialize)]
    struct V2 {
        expiration: Duration,
        new_otp_interval: Duration,
        otp_length: u8,
        max_attempts: u32,
        max_failures: u32,
        failure_window: Duration,
        resend_gap: Duration,
    }
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    let old = V2 {
        expiration: Duration::from_secs(600),
        new_otp_interval: Duration::from_secs(60),
        otp_length: 10,
        max_attempts: 3,
        max_failures: 7,
        failure_window: Duration::from_secs(120),
        resend_gap: Duration::from_secs(5),
    };
    store
        .meta
        .sled_tree()
        .unwrap()
        .insert("settings", encode_as(2, &old).unwrap())
        .unwrap();
    assert_eq!(
        store.settings().await.unwrap(),
        SystemSettings {
            expiration: Duration::from_secs(600),
            new_otp_interval: Duration::from_secs(60),
            otp_length: 10,
            max_attempts: 3,
            max_failures: 7,
            failure_window: Duration::from_secs(120),
            resend_gap: Duration::from_secs(5),
            ..SystemSettings::default()
        }
    );
}

#[tokio::test]
async fn computers_and_groups_of_the_first_schema_are_upgraded() {
    #[derive(Serialize)]
    struct OptionsV1 {
        allow_otp: Option<bool>,
        approvers: Option<Vec<String>>,
        auto_directory: Option<bool>,
        auto_internal: Option<bool>,
    }
    #[derive(Serialize)]
    struct ComputerV1 {
        first_seen: Timestamp,
        connected_since: Option<Timestamp>,
        last_seen: Timestamp,
        host_name: String,
        agent_version: String,
        group: Option<String>,
        options: OptionsV1,
    }
    let options = || OptionsV1 {
        allow_otp: Some(false),
        approvers: Some(vec!["bob".into()]),
        auto_directory: None,
        auto_internal: Some(true),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    let at = Timestamp::from_unix_millis(1_800_000_000_000);
    let old = ComputerV1 {
        first_seen: at,
        connected_since: None,
        last_seen: at,
        host_name: "ws-1.corp".into(),
        agent_version: "0.1.0".into(),
        group: Some("lab".into()),
        options: options(),
    };
    let computer = encode_as(SCHEMA_V1, &old).unwrap();
    store
        .computers
        .sled_tree()
        .unwrap()
        .insert("ws-1", computer)
        .unwrap();
    let group = encode_as(SCHEMA_V1, &(options(),)).unwrap();
    store
        .groups
        .sled_tree()
        .unwrap()
        .insert("lab", group)
        .unwrap();
    let upgraded = Options {
        allow_otp: Some(false),
        approvers: Some(vec!["bob".into()]),
        auto_directory: None,
        auto_internal: Some(true),
        record_input: None,
    };
    let ws: ComputerId = "ws-1".parse().unwrap();
    let computer = store.computer(&ws).await.unwrap().unwrap();
    assert_eq!(
        (computer.host_name.as_str(), &computer.options),
        ("ws-1.corp", &upgraded)
    );
    let listed: Vec<_> = all(|after| store.computers_from(after, BATCH))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&computer));
    assert_eq!(store.groups().await.unwrap()[0].1.options, upgraded);
    // Written back in the new schema, read as written.
    let recording_input = ComputerRecord {
        options: Options {
            record_input: Some(true),
            ..upgraded
        },
        ..computer
    };
    store.put_computer(&ws, &recording_input).unwrap();
    assert_eq!(
        store.computer(&ws).await.unwrap(),
        Some(recording_input.clone())
    );

    // Schema 2: without the agent's protocol version.
    #[derive(Serialize)]
    struct ComputerV2 {
        first_seen: Timestamp,
        connected_since: Option<Timestamp>,
        last_seen: Timestamp,
        host_name: String,
        agent_version: String,
        group: Option<String>,
        options: Options,
    }
    let v2 = ComputerV2 {
        first_seen: at,
        connected_since: None,
        last_seen: at,
        host_name: "ws-1.corp".into(),
        agent_version: "0.1.0".into(),
        group: Some("lab".into()),
        options: recording_input.options.clone(),
    };
    let bytes = encode_as(2, &v2).unwrap();
    store
        .computers
        .sled_tree()
        .unwrap()
        .insert("ws-1", bytes)
        .unwrap();
    let upgraded = store.computer(&ws).await.unwrap().unwrap();
    assert_eq!(upgraded, recording_input);
    assert_eq!(upgraded.protocol, None);
}

#[tokio::test]
async fn users_of_earlier_schemas_are_upgraded() {
    #[derive(Serialize)]
    struct V1 {
        login: String,
        email: String,
        password_hash: String,
        role: crate::directory::Role,
    }
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    let old = V1 {
        login: "alice".into(),
        email: "alice@example.com".into(),
        password_hash: "$argon2id$x".into(),
        role: crate::directory::Role::Administrator,
    };
    store
        .users
        .sled_tree()
        .unwrap()
        .insert("alice", encode_as(SCHEMA_V1, &old).unwrap())
        .unwrap();
    let upgraded = UserRecord {
        login: "alice".into(),
        email: "alice@example.com".into(),
        password_hash: "$argon2id$x".into(),
        role: crate::directory::Role::Administrator,
        password_change_due: false,
        disabled: false,
    };
    assert_eq!(
        store.users().await.unwrap(),
        std::slice::from_ref(&upgraded)
    );
    #[derive(Serialize)]
    struct V2 {
        login: String,
        email: String,
        password_hash: String,
        role: crate::directory::Role,
        password_change_due: bool,
    }
    let old = V2 {
        login: "alice".into(),
        email: "alice@example.com".into(),
        password_hash: "$argon2id$x".into(),
        role: crate::directory::Role::Administrator,
        password_change_due: true,
    };
    store
        .users
        .sled_tree()
        .unwrap()
        .insert("alice", encode_as(2, &old).unwrap())
        .unwrap();
    assert_eq!(
        store.users().await.unwrap(),
        [UserRecord {
            password_change_due: true,
            ..upgraded.clone()
        }]
    );
    let due = UserRecord {
        password_change_due: true,
        ..upgraded
    };
    store.put_user(&due).unwrap();
    assert_eq!(store.users().await.unwrap(), [due]);
}

#[tokio::test]
async fn unknown_schema_versions_are_refused() {
    let mut bytes = encode(&record()).unwrap();
    bytes[0] = 99;
    assert!(matches!(
        decode::<ComputerRecord>("computers", &bytes),
        Err(StoreError::UnknownSchema { version: 99, .. })
    ));
    assert!(matches!(
        decode::<ComputerRecord>("computers", &bytes[..1]),
        Err(StoreError::UnknownSchema { .. })
    ));
    bytes[0] = SCHEMA_V1;
    assert!(matches!(
        decode::<ComputerRecord>("computers", &bytes[..3]),
        Err(StoreError::Corrupt { .. })
    ));
}

mod postgres;

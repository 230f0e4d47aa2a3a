//! The store's tests on PostgreSQL (each skipped where there is none): what
//! a commit shows and when, a database that goes away and comes back, two
//! nodes counting failures, the schema's versions, a site copied in, the site
//! lock, side tables, fenced turns and leases, what one node hears of
//! another's changes, and what one node at a time does.

use std::ops::Bound;
use std::sync::Arc;

use super::*;

#[tokio::test]
async fn in_postgres_a_write_is_read_back_at_once_and_seen_elsewhere_once_committed() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let id: ComputerId = "ws-1".parse().unwrap();
    {
        let store = KvStore::connect(&config).await.unwrap();
        assert_eq!(store.computer(&id).await.unwrap(), None);
        store.put_computer(&id, &record()).unwrap();
        store.put_slot(&id, "alice", &Slot::default()).unwrap();
        let elsewhere = KvStore::connect(&config).await.unwrap();
        assert_eq!(
            elsewhere.computer(&id).await.unwrap(),
            None,
            "not visible elsewhere before it is committed"
        );
        // The writer reads its own writes (committing them first).
        assert_eq!(store.computer(&id).await.unwrap(), Some(record()));
        assert_eq!(elsewhere.computer(&id).await.unwrap(), Some(record()));
        let a = store.next_id().await.unwrap();
        let b = elsewhere.next_id().await.unwrap();
        assert_ne!(a, b, "ids never repeat across connections");
    }
    // Connected again (a restart, another node): the schema is not made
    // twice, and what was flushed is there.
    let store = KvStore::connect(&config).await.unwrap();
    assert_eq!(store.computer(&id).await.unwrap(), Some(record()));
    let listed = all(|after| store.computers_from(after, BATCH))
        .await
        .unwrap();
    assert_eq!(listed, vec![(id.clone(), record())]);
    assert_eq!(store.slots(&id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn in_postgres_a_store_fails_while_the_database_is_down_and_recovers_without_a_restart() {
    let Some(cluster) = crate::test_postgres::PgCluster::start() else {
        return;
    };
    let config = cluster.database();
    let store = KvStore::connect(&config).await.unwrap();
    let (ws1, ws2): (ComputerId, ComputerId) = ("ws-1".parse().unwrap(), "ws-2".parse().unwrap());
    store.put_computer(&ws1, &record()).unwrap();
    store.flush().await.unwrap();
    cluster.halt();
    store.put_computer(&ws2, &record()).unwrap();
    assert!(
        store.flush().await.is_err(),
        "no commit without the database"
    );
    assert!(store.computer(&ws1).await.is_err(), "nor a read");
    cluster.resume();
    // The write that was not committed is still pending, and lands with the
    // next commit; the pool makes new connections.
    store.flush().await.unwrap();
    let elsewhere = KvStore::connect(&config).await.unwrap();
    for id in [&ws1, &ws2] {
        assert_eq!(elsewhere.computer(id).await.unwrap(), Some(record()));
    }
}

/// Two stores over the database `config` names, as two servers hold it.
/// A session of the test's own with the database `config` names.
async fn session(config: &PgConfig) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn two_nodes(config: &PgConfig) -> (KvStore, KvStore) {
    (
        KvStore::connect(config).await.unwrap(),
        KvStore::connect(config).await.unwrap(),
    )
}

#[tokio::test]
async fn in_postgres_failures_counted_on_two_nodes_at_once_are_all_kept() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let (a, b) = two_nodes(&config).await;
    let (hour, t0, fail) = two_in_an_hour();
    a.count_failure("k", fail).unwrap();
    b.count_failure("k", fail).unwrap();
    let (flushed_a, flushed_b) = tokio::join!(a.flush(), b.flush());
    flushed_a.unwrap();
    flushed_b.unwrap();
    assert_eq!(
        a.failures(&["k"]).await.unwrap()[0].full_for(t0, 2, hour),
        Some(hour / 2),
        "both failures counted"
    );
}

#[tokio::test]
async fn in_postgres_a_newer_schema_is_served_only_when_it_says_this_build_may() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    drop(KvStore::connect(&config).await.unwrap());
    let (client, connection) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let newest = super::super::postgres::newest();
    // A version that only adds: served by this build, as the previous
    // release serves version 6.
    client
        .execute(
            "INSERT INTO otpgate_schema (version, served_from) VALUES ($1, $2)",
            &[&(newest + 1), &newest],
        )
        .await
        .unwrap();
    let served = KvStore::connect(&config).await;
    assert!(served.is_ok(), "{:?}", served.err());
    drop(served);
    let probe = config.probe().await.unwrap();
    assert_eq!(probe.schema.version, newest + 1);
    assert_eq!(probe.schema.needs, newest);
    // One that needs a newer build (or says nothing, as versions before 6).
    client
        .execute(
            "INSERT INTO otpgate_schema (version) VALUES ($1)",
            &[&(newest + 2)],
        )
        .await
        .unwrap();
    let refused = KvStore::connect(&config)
        .await
        .err()
        .map(|err| err.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|err| err.contains("newer than this build")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_sled_store_is_copied_into_an_empty_postgres_database_whole_and_only_there() {
    use crate::audit::{Action, Who};
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sled = KvStore::open(dir.path()).unwrap();
    let id: ComputerId = "ws-1".parse().unwrap();
    sled.put_computer(&id, &record()).unwrap();
    sled.put_slot(&id, "alice", &Slot::default()).unwrap();
    let fail = Failure {
        at: Timestamp::from_unix_millis(5),
        limit: 3,
        window: Duration::from_secs(60),
    };
    sled.count_failure("k", fail).unwrap();
    // More than one batch of audit entries.
    for n in 0..1500 {
        sled.append_audit(&AuditEntry {
            at: Timestamp::from_unix_millis(n),
            who: Who::Server,
            computer: None,
            action: Action::Configure,
            outcome: format!("entry {n}"),
        })
        .unwrap();
    }
    sled.flush().await.unwrap();
    let last_id = sled.next_id().await.unwrap();

    let config = cluster.database();
    let pg = KvStore::connect(&config).await.unwrap();
    let copied = sled.copy_into(&pg, None).await.unwrap();
    let count = |table: &str| copied.iter().find(|c| c.table == table).unwrap().records;
    assert_eq!(
        (
            count("computers"),
            count("otps"),
            count("audit"),
            count("failure_buckets")
        ),
        (1, 1, 1500, 1)
    );
    assert_eq!(
        copied.len(),
        super::super::kv::TABLES.len() + SIDE_TABLES.len(),
        "every table, the empty ones too (the recordings' with no recordings given)"
    );
    // What the server reads, it reads the same.
    assert_eq!(pg.computer(&id).await.unwrap(), Some(record()));
    assert_eq!(pg.slots(&id).await.unwrap(), sled.slots(&id).await.unwrap());
    assert_eq!(
        pg.failures(&["k"]).await.unwrap(),
        sled.failures(&["k"]).await.unwrap()
    );
    let (_, newest) = pg.audit_from(None, 1).await.unwrap().remove(0);
    assert_eq!(newest.outcome, "entry 1499");
    assert!(pg.next_id().await.unwrap() > last_id, "ids go on above");
    // A second copy finds the target in use.
    let again = sled.copy_into(&pg, None).await.unwrap_err().to_string();
    assert!(again.contains("not empty"), "{again}");
    // Into sled, never.
    let other = tempfile::tempdir().unwrap();
    assert!(
        sled.copy_into(&KvStore::open(other.path()).unwrap(), None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn in_postgres_servers_share_a_database_a_copy_has_it_alone_and_a_server_learns_when_one_took_it()
 {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let (_a, taken) = KvStore::connect_holding(&config, Site::Serving)
        .await
        .unwrap();
    let (b, b_taken) = KvStore::connect_holding(&config, Site::Serving)
        .await
        .unwrap();
    assert!(matches!(
        KvStore::connect_holding(&config, Site::Alone).await,
        Err(StoreError::Taken)
    ));
    drop((b, b_taken));
    // A copy waits for the lock; then A's session ends under it (as when a
    // network fails): the lock goes to the copy, and A learns it.
    let waiter = session(&config).await;
    let waiting = tokio::spawn(async move {
        waiter
            .query_one(
                "SELECT pg_advisory_lock($1)",
                &[&crate::store::postgres::SITE_LOCK],
            )
            .await
            .unwrap();
        waiter
    });
    let admin = session(&config).await;
    let here = "database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    loop {
        let waiting: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND {here}"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin
        .execute(
            &format!("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND {here}"),
            &[],
        )
        .await
        .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(10), taken)
        .await
        .expect("A learns it within its retry");
    assert!(matches!(why, StoreError::Taken), "{why}");
    let _held = waiting.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_tables_read_ranges_in_either_order_and_write_together() {
    let dir = tempfile::tempdir().unwrap();
    side_tables(SideDb::open(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_side_tables_read_ranges_in_either_order_and_write_together() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let store = KvStore::connect(&cluster.database()).await.unwrap();
    side_tables(store.side().unwrap()).await;
}

/// What [`SideDb`] promises, on `db`: ranges within bounds in both orders,
/// across many pages; writes made together and read back at once; ids that
/// never repeat.
async fn side_tables(db: SideDb) {
    tokio::task::spawn_blocking(move || {
        let (chunks, keys) = (
            db.table("recording_chunks").unwrap(),
            db.table("recording_keys").unwrap(),
        );
        assert!(chunks.is_empty().unwrap());
        let key = |n: u32| n.to_be_bytes();
        for n in (0..1000u32).step_by(100) {
            let pairs: Vec<_> = (n..n + 100).map(|n| (key(n), n.to_le_bytes())).collect();
            let writes: Vec<_> = pairs
                .iter()
                .map(|(key, value)| SideWrite::Put(&chunks, key, value))
                .collect();
            db.write(&writes).unwrap();
        }
        db.write(&[
            SideWrite::Remove(&chunks, &key(500)),
            SideWrite::Put(&keys, b"name", b"500 gone"),
        ])
        .unwrap();
        assert_eq!(
            keys.get(b"name").unwrap().as_deref(),
            Some(&b"500 gone"[..])
        );
        assert_eq!(chunks.get(&key(500)).unwrap(), None);
        assert_eq!(
            chunks.get(&key(7)).unwrap(),
            Some(7u32.to_le_bytes().to_vec())
        );
        let numbers = |pairs: Pairs| -> Vec<u32> {
            pairs
                .map(|pair| u32::from_be_bytes(pair.unwrap().0.try_into().unwrap()))
                .collect()
        };
        let (from, to) = (key(10), key(990));
        let bounds = (Bound::Included(&from[..]), Bound::Excluded(&to[..]));
        let oldest = numbers(chunks.range(bounds, Order::Oldest));
        let expected: Vec<u32> = (10..990).filter(|n| *n != 500).collect();
        assert_eq!(oldest, expected);
        let newest = numbers(chunks.range(bounds, Order::Newest));
        assert_eq!(newest, expected.iter().rev().copied().collect::<Vec<_>>());
        let everything = (Bound::Unbounded, Bound::Unbounded);
        assert_eq!(numbers(chunks.range(everything, Order::Oldest)).len(), 999);
        let (a, b) = (db.next_id().unwrap(), db.next_id().unwrap());
        assert!(b > a);
        db.flush_blocking().unwrap();
    })
    .await
    .unwrap();
}

/// An audit entry of computer ws-1 saying `what`.
fn said(what: &str) -> AuditEntry {
    AuditEntry {
        at: Timestamp::from_unix_millis(1),
        who: crate::audit::Who::Server,
        computer: Some("ws-1".into()),
        action: crate::audit::Action::Configure,
        outcome: what.into(),
    }
}

/// What the audit log of `store` says, oldest first (of one node's).
async fn audit_said(store: &KvStore) -> Vec<String> {
    let mut said: Vec<String> = all(|before| store.audit_from(before, BATCH))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.outcome)
        .collect();
    said.reverse();
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_a_node_that_lost_a_computer_commits_nothing_more_for_it() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let (a, b) = two_nodes(&config).await;
    let id: ComputerId = "ws-1".parse().unwrap();
    let slot = |n: u64| Slot {
        last_new: Some(Timestamp::from_unix_millis(n)),
        ..Slot::default()
    };
    let on_a = a.own(&id).await.unwrap();
    assert_eq!(a.own(&id).await.unwrap(), on_a, "kept by its own node");
    turn(on_a.clone(), async {
        a.put_slot(&id, "alice", &slot(1)).unwrap();
        a.append_audit(&said("a, while it holds ws-1")).unwrap();
        a.flush().await.unwrap();
    })
    .await;

    // b takes the computer: it reads what a committed, and a's later turns
    // are left out whole (the audit entry too), and a is told.
    let on_b = b.own(&id).await.unwrap();
    assert!(on_b.fence > on_a.fence);
    assert_eq!(b.slots(&id).await.unwrap(), vec![("alice".into(), slot(1))]);
    let late = turn(on_a.clone(), async {
        a.put_slot(&id, "alice", &slot(2)).unwrap();
        a.append_audit(&said("a, after b took ws-1")).unwrap();
        a.flush().await
    })
    .await;
    assert!(
        matches!(late, Err(StoreError::Fenced(ref c)) if *c == id),
        "{late:?}"
    );
    assert!(a.fenced_out(&on_a) && !b.fenced_out(&on_b));
    // Written and never flushed: left out at its next commit all the same.
    turn(on_a, async {
        a.put_slot(&id, "alice", &slot(3)).unwrap();
    })
    .await;
    a.flush().await.unwrap();
    turn(on_b, async {
        b.append_audit(&said("b, which holds ws-1")).unwrap();
        b.flush().await.unwrap();
    })
    .await;
    let elsewhere = KvStore::connect(&config).await.unwrap();
    assert_eq!(
        elsewhere.slots(&id).await.unwrap(),
        vec![("alice".into(), slot(1))]
    );
    let mut said = audit_said(&elsewhere).await;
    said.sort();
    assert_eq!(said, ["a, while it holds ws-1", "b, which holds ws-1"]);
}

/// Waits up to five seconds for `done`.
async fn soon(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// The next change `changes` hears within five seconds.
async fn heard(changes: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("heard within five seconds")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_a_node_hears_at_once_what_another_changed_even_after_it_stopped_listening() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let (a, b) = two_nodes(&config).await;
    let mut changes = a.changes().unwrap();
    let (ws1, ws2): (ComputerId, ComputerId) = ("ws-1".parse().unwrap(), "ws-2".parse().unwrap());

    // b takes a computer a holds: a counts its hold as fenced out at once,
    // without writing anything.
    let on_a = a.own(&ws1).await.unwrap();
    let on_b = b.own(&ws1).await.unwrap();
    assert!(
        soon(|| a.fenced_out(&on_a)).await,
        "a heard that b took ws-1"
    );
    assert!(!b.fenced_out(&on_b), "not by its own taking");
    let again = a.own(&ws1).await.unwrap();
    assert!(!a.fenced_out(&again), "taken back");

    // The policy and the revocations, whoever writes them.
    b.put_settings(&SystemSettings {
        expiration: Duration::from_secs(120),
        ..SystemSettings::default()
    })
    .unwrap();
    b.flush().await.unwrap();
    assert_eq!(heard(&mut changes).await, Change::Policy);
    let side = b.side().unwrap();
    tokio::task::spawn_blocking(move || {
        let revocations = side.table(REVOCATIONS).unwrap();
        side.write(&[SideWrite::Put(&revocations, b"ws-9", &7i64.to_be_bytes())])
            .unwrap();
        side.flush_blocking().unwrap();
    })
    .await
    .unwrap();
    assert_eq!(heard(&mut changes).await, Change::Revocations);

    // Its listening session ends (the database restarted, say) and b takes
    // a computer meanwhile: a listens again, reads who holds what, and says
    // it may have missed changes.
    let on_a = a.own(&ws2).await.unwrap();
    session(&config)
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[&crate::store::postgres::LISTENING],
        )
        .await
        .unwrap();
    b.own(&ws2).await.unwrap();
    let mut missed = false;
    while !missed {
        missed = heard(&mut changes).await == Change::Missed;
    }
    assert!(a.fenced_out(&on_a), "a knows b took ws-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_one_node_at_a_time_has_its_turn_even_when_a_holder_stops_waiting() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let (a, b) = two_nodes(&config).await;
    let b = Arc::new(b);
    let on_a = a.alone(Alone::Recording).await.unwrap();
    let waiting = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.alone(Alone::Recording).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "b waits while a has its turn");
    // Another lock is not held up.
    drop(a.alone(Alone::FirstStart).await.unwrap());
    drop(on_a);
    let on_b = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("b's turn once a's ended")
        .unwrap();
    // a asks again and stops waiting (its caller gave up): it holds
    // nothing after, and b, once done, leaves it to whoever asks next.
    let given_up =
        tokio::time::timeout(Duration::from_millis(100), a.alone(Alone::Recording)).await;
    assert!(given_up.is_err());
    drop(on_b);
    let next = tokio::time::timeout(Duration::from_secs(5), b.alone(Alone::Recording)).await;
    assert!(next.is_ok(), "the lock was not left held");
    drop(next);
    let again = tokio::time::timeout(Duration::from_secs(5), a.alone(Alone::Recording)).await;
    assert!(again.is_ok());
}

/// Two nodes over one new database, node a holding computer `ws-1`: the
/// nodes, the computer, a's hold; `None` without PostgreSQL.
async fn a_holding_ws1() -> Option<(KvStore, KvStore, ComputerId, Owner)> {
    let cluster = crate::test_postgres::postgres()?;
    let (a, b) = two_nodes(&cluster.database()).await;
    let id: ComputerId = "ws-1".parse().unwrap();
    let on_a = a.own(&id).await.unwrap();
    Some((a, b, id, on_a))
}

/// One turn of `owner`'s on `store`: a slot of computer `id` written.
async fn one_turn(store: &KvStore, owner: &Owner, id: &ComputerId) -> Result<()> {
    turn(owner.clone(), async {
        store.put_slot(id, "alice", &Slot::default()).unwrap();
        store.flush().await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_a_computer_is_left_to_the_node_working_on_it_until_its_lease_ends() {
    let Some((a, b, id, on_a)) = a_holding_ws1().await else {
        return;
    };
    // a commits for the computer every 150 ms for a while; b wants it
    // meanwhile: b waits until a has stopped, and none of a's turns is
    // fenced out.
    let working = async {
        for n in 0..6 {
            one_turn(&a, &on_a, &id)
                .await
                .unwrap_or_else(|err| panic!("turn {n}: {err}"));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        tokio::time::Instant::now()
    };
    let taking = async {
        let on_b = b.own(&id).await.unwrap();
        (on_b, tokio::time::Instant::now())
    };
    let (stopped, (on_b, took)) = tokio::join!(working, taking);
    assert!(took >= stopped, "b took it while a worked on it");
    assert!(on_b.fence > on_a.fence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_a_node_that_never_stops_working_on_a_computer_does_not_starve_another() {
    let Some((a, b, id, on_a)) = a_holding_ws1().await else {
        return;
    };
    // a commits for the computer every 100 ms, renewing its lease, for
    // longer than b would wait; b takes it all the same, after its wait,
    // and a's later turns are fenced out.
    let stop = tokio::sync::Notify::new();
    let working = async {
        let mut fenced = 0;
        loop {
            fenced += usize::from(one_turn(&a, &on_a, &id).await.is_err());
            tokio::select! {
                () = stop.notified() => return fenced,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    };
    let taking = async {
        let started = tokio::time::Instant::now();
        let on_b = b.own(&id).await;
        let took = started.elapsed();
        // A few more of a's turns, which must be left out.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.notify_one();
        (on_b, took)
    };
    let (fenced, (on_b, took)) = tokio::join!(working, taking);
    let on_b = on_b.expect("b was not starved");
    assert!(on_b.fence > on_a.fence);
    assert!(
        took >= super::super::postgres::YIELD_WITHIN,
        "b waited first: {took:?}"
    );
    assert!(fenced >= 1, "a's turns after b took it are left out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_a_turns_writes_are_committed_together() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let store = Arc::new(KvStore::connect(&config).await.unwrap());
    let elsewhere = KvStore::connect(&config).await.unwrap();
    let id: ComputerId = "ws-1".parse().unwrap();
    let owner = store.own(&id).await.unwrap();
    turn(owner, async {
        store.put_slot(&id, "alice", &Slot::default()).unwrap();
        // Another task's commit meanwhile takes none of this turn's writes.
        let other = Arc::clone(&store);
        tokio::spawn(async move {
            other.append_audit(&said("another task")).unwrap();
            other.flush().await.unwrap();
        })
        .await
        .unwrap();
        assert_eq!(audit_said(&elsewhere).await, ["another task"]);
        assert!(elsewhere.slots(&id).await.unwrap().is_empty());
        store.append_audit(&said("the turn")).unwrap();
        store.flush().await.unwrap();
    })
    .await;
    assert_eq!(elsewhere.slots(&id).await.unwrap().len(), 1);
    assert_eq!(audit_said(&elsewhere).await, ["another task", "the turn"]);
}

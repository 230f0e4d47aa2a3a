//! The mailer's tests: batches kept or not, a transport that panics, mail
//! queued again at start, and one sender among several nodes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::clock::ManualClock;
use crate::id::ComputerId;
use crate::otp::{Code, Origin, Otp, Slot};
use crate::store::KvStore;
use crate::testing::outcome_entry;

/// Takes every message; the first batch is not kept, as on a full disk.
#[derive(Default)]
struct Flaky {
    taken: Mutex<Vec<String>>,
    failed_once: AtomicBool,
}

impl MailTransport for Flaky {
    fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a> {
        self.taken.lock().unwrap().push(mail.to.clone());
        Box::pin(async { Ok("taken".to_owned()) })
    }

    fn deliver_all<'a>(&'a self, mails: &'a [Mail]) -> BatchFuture<'a> {
        let first = !self.failed_once.swap(true, Ordering::SeqCst);
        Box::pin(async move {
            let mut said = Vec::new();
            for mail in mails {
                said.push(self.deliver(mail).await.and_then(|taken| {
                    if first {
                        Err(DeliveryError::Temporary("not kept: disk full".into()))
                    } else {
                        Ok(taken)
                    }
                }));
            }
            said
        })
    }
}

#[tokio::test]
async fn a_batch_leaves_the_outbox_only_once_the_transport_kept_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(KvStore::open(dir.path()).unwrap());
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    let batch = DEFAULT_BATCH;
    let count = batch as u64 + 3;
    for id in 1..=count {
        store.queue_mail(&outcome_entry(id, clock.now())).unwrap();
    }
    let transport = Arc::new(Flaky::default());
    let mut state = MailerState::new(args(&store, transport.clone(), &clock));

    // The first batch is handed over but not kept: it stays, to be retried,
    // and the rest waits for the next round.
    let next = state.drain().await.unwrap();
    assert_eq!(transport.taken.lock().unwrap().len(), batch);
    let left = store.outbox().await.unwrap();
    assert_eq!(left.len() as u64, count);
    assert!(left.iter().take(batch).all(|e| e.attempts == 1));
    assert!(next.is_some_and(|at| at > clock.now()));

    // Once its retry is due, everything goes.
    clock.advance(BACKOFF.max);
    assert_eq!(state.drain().await.unwrap(), None);
    assert!(store.outbox().await.unwrap().is_empty());
    assert_eq!(
        transport.taken.lock().unwrap().len() as u64,
        batch as u64 + count
    );
}

/// Takes every message but one, on which it panics.
#[derive(Default)]
struct Panicky {
    taken: Mutex<Vec<String>>,
}

impl MailTransport for Panicky {
    fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a> {
        assert_ne!(mail.to, "user2@example.com", "a bug in the transport");
        self.taken.lock().unwrap().push(mail.to.clone());
        Box::pin(async { Ok("taken".to_owned()) })
    }
}

#[tokio::test]
async fn a_transport_that_panics_on_one_message_fails_only_that_one() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(KvStore::open(dir.path()).unwrap());
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    for id in 1..=3 {
        store.queue_mail(&outcome_entry(id, clock.now())).unwrap();
    }
    let transport = Arc::new(Panicky::default());
    let mut state = MailerState::new(MailerArgs {
        transport: transport.clone(),
        ..args(&store, Arc::new(Flaky::default()), &clock)
    });
    state.drain().await.unwrap();
    let mut taken = transport.taken.lock().unwrap().clone();
    taken.sort();
    // One taken before the panic goes again (its answer was lost with
    // it), with its Message-ID, as after a crash.
    taken.dedup();
    assert_eq!(taken, ["user1@example.com", "user3@example.com"]);
    let left = store.outbox().await.unwrap();
    assert_eq!(left.len(), 1, "only the one it panicked on is left");
    assert_eq!((left[0].id, left[0].attempts), (2, 1));
}

fn args(store: &Arc<dyn Store>, transport: Arc<Flaky>, clock: &ManualClock) -> MailerArgs {
    MailerArgs {
        store: Arc::clone(store),
        transport,
        keys: Arc::new(OtpKeys::derive(&[2; 32])),
        clock: Arc::new(clock.clone()),
        host: "h".into(),
        management_url: "https://m".into(),
        max_attempts: 3,
        waiting: Waiting::default(),
    }
}

#[tokio::test]
async fn a_live_otp_whose_mail_left_no_trace_is_mailed_at_start_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(KvStore::open(dir.path()).unwrap());
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    let transport = Arc::new(Flaky {
        failed_once: AtomicBool::new(true),
        ..Flaky::default()
    });
    let args = args(&store, transport.clone(), &clock);
    let computer: ComputerId = "ws-1".parse().unwrap();
    let slot = |os_user: &str, valid_for: Duration| Slot {
        otp: Some(Otp::new(
            &args.keys,
            crate::otp::Binding {
                computer: &computer,
                os_user,
                email: &format!("{os_user}@example.com"),
            },
            &Code::generate(8),
            clock.now(),
            clock.now().after(valid_for),
            Origin::AutoSend,
        )),
        ..Slot::default()
    };
    // Two live OTPs whose outbox entries a crash lost, and one that expired.
    for (os_user, valid_for) in [("alice", 1800), ("bob", 1800), ("carol", 1)] {
        let slot = slot(os_user, Duration::from_secs(valid_for));
        store.put_slot(&computer, os_user, &slot).unwrap();
    }
    clock.advance(Duration::from_secs(2));

    assert_eq!(requeue_unmailed(&args).await.unwrap(), 2);
    assert_eq!(requeue_unmailed(&args).await.unwrap(), 0, "queued now");
    let mut state = MailerState::new(args);
    assert_eq!(state.drain().await.unwrap(), None);
    let mut taken = transport.taken.lock().unwrap().clone();
    taken.sort();
    assert_eq!(taken, ["alice@example.com", "bob@example.com"]);
    // Delivered: a later start finds them sent and sends nothing again.
    assert_eq!(requeue_unmailed(&state.args).await.unwrap(), 0);
    let audit: Vec<_> = crate::store::all(|before| store.audit_from(before, crate::store::BATCH))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(
        audit.iter().filter(|o| o.contains("queued again")).count(),
        2,
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_one_node_sends_at_a_time_each_message_once_and_another_takes_over() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    let transport = Arc::new(Flaky {
        failed_once: AtomicBool::new(true),
        ..Flaky::default()
    });
    let node = || async {
        let store: Arc<dyn Store> = Arc::new(KvStore::connect(&config).await.unwrap());
        MailerState::new(args(&store, transport.clone(), &clock))
    };
    let (mut a, mut b) = (node().await, node().await);
    let queue = |store: &Arc<dyn Store>, ids: std::ops::Range<u64>| {
        for id in ids {
            store.queue_mail(&outcome_entry(id, clock.now())).unwrap();
        }
    };
    queue(&a.args.store, 1..11);
    a.args.store.flush().await.unwrap();
    // Both woken at once, again and again: each message goes once.
    for _ in 0..3 {
        let (from_a, from_b) = tokio::join!(a.send_due(), b.send_due());
        from_a.unwrap();
        from_b.unwrap();
    }
    assert_eq!(transport.taken.lock().unwrap().len(), 10);
    assert!(a.sending != b.sending, "one node sends");
    // The sender goes: the other takes over within its next looks.
    let (gone, mut left) = if a.sending { (a, b) } else { (b, a) };
    drop(gone);
    queue(&left.args.store, 11..13);
    left.args.store.flush().await.unwrap();
    for _ in 0..250 {
        left.send_due().await.unwrap();
        if left.sending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(left.sending, "took over");
    assert_eq!(transport.taken.lock().unwrap().len(), 12);
    assert!(left.args.store.outbox().await.unwrap().is_empty());
}

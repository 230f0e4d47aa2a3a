//! Micro-benchmarks of the hot paths: the frame codec, OTP generation, sealing
//! and checking, one offline code's check at the cost sets are made with
//! (what a guess costs whoever holds a computer's verifiers), one round
//! trip to a computer's actor, a durable sled write with and without
//! batching of flushes, and a recording's chunk stored
//! durably on sled and on PostgreSQL (a throwaway cluster, when there is
//! one). `cargo bench --bench micro`; the figures and what limits them are
//! in BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use otpgate::server::recordings::{Quotas, Recordings};
use otpgate_actors::directory::{Directory, DirectoryFuture};
use otpgate_actors::otp::{Binding, Code, Origin, Otp, OtpKeys};
use otpgate_actors::store::SideDb;
use otpgate_actors::{
    Clock, ComputerId, ComputerMsg, Computers, KvStore, Services, Store, SystemClock,
};
use otpgate_protocol::login::{LoginRequest, Secret};
use otpgate_protocol::record::{MAX_CHUNK_EVENTS, RecordChunk, RecordingStart};
use otpgate_protocol::version::AGENT;
use otpgate_protocol::{AgentMessage, Request};

fn frames(c: &mut Criterion) {
    let msg = AgentMessage::Request {
        id: 42,
        request: Request::Login {
            os_user: "alice".into(),
            request: LoginRequest::Verify {
                email: "alice@example.com".into(),
                code: Secret("12345678".into()),
            },
        },
    };
    let mut encoded = BytesMut::new();
    otpgate_protocol::encode(&msg, AGENT.newest, &mut encoded).unwrap();
    c.bench_function("frame/encode", |b| {
        let mut buf = BytesMut::with_capacity(256);
        b.iter(|| {
            buf.clear();
            otpgate_protocol::encode(&msg, AGENT.newest, &mut buf).unwrap();
        })
    });
    c.bench_function("frame/decode", |b| {
        b.iter_batched(
            || encoded.clone(),
            |mut buf| otpgate_protocol::decode::<AgentMessage>(&mut buf).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

fn otps(c: &mut Criterion) {
    let keys = OtpKeys::derive(&[7; 32]);
    let computer: ComputerId = "ws-1".parse().unwrap();
    let now = SystemClock.now();
    let until = now.after(Duration::from_secs(1800));
    c.bench_function("otp/generate", |b| b.iter(|| Code::generate(8)));
    let code = Code::generate(8);
    let binding = Binding {
        computer: &computer,
        os_user: "alice",
        email: "alice@example.com",
    };
    let issue = || Otp::new(&keys, binding, &code, now, until, Origin::AutoSend);
    c.bench_function("otp/issue (hash + seal)", |b| b.iter(issue));
    let otp = issue();
    c.bench_function("otp/verify (right code)", |b| {
        b.iter_batched(
            || otp.clone(),
            |mut otp| otp.check(&keys, binding, &code, now, 5),
            BatchSize::SmallInput,
        )
    });
}

fn offline(c: &mut Criterion) {
    use otpgate_actors::offline::{COST, check, verifier};
    let salt = [7; 16];
    let verifiers: Vec<_> = ["111122223333", "444455556666", "777788889999"]
        .iter()
        .map(|code| Some(verifier(code.as_bytes(), &salt, COST)))
        .collect();
    let mut group = c.benchmark_group("offline");
    group.sample_size(10);
    group.bench_function("check (Argon2id 64 MiB, 3 passes)", |b| {
        b.iter(|| check("7777-8888-9999", &salt, COST, &verifiers))
    });
    group.finish();
}

struct NoDirectory;

impl Directory for NoDirectory {
    fn email_of<'a>(&'a self, _: &'a str) -> DirectoryFuture<'a, Option<String>> {
        Box::pin(async { Ok(None) })
    }
}

fn actors(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(KvStore::open(dir.path()).unwrap());
    let services = Arc::new(Services {
        policy: runtime
            .block_on(otpgate_actors::policy::Owner::load(store.clone()))
            .unwrap(),
        store: store.clone(),
        clock: Arc::new(SystemClock),
        keys: Arc::new(OtpKeys::derive(&[7; 32])),
        directory: Arc::new(NoDirectory),
        mailer: None,
    });
    let computers = runtime.block_on(async { Computers::start(services).await.unwrap().0 });
    let id: ComputerId = "ws-1".parse().unwrap();
    runtime.block_on(async { computers.actor(&id).await.unwrap() });
    c.bench_function("actor/round trip (find + call)", |b| {
        b.to_async(&runtime).iter(|| async {
            let actor = computers.actor(&id).await.unwrap();
            actor
                .call(ComputerMsg::Record, Some(Duration::from_secs(5)))
                .await
                .unwrap()
        })
    });

    // A durable write through the store: an audit entry, then a flush (the
    // server's "durable before visible"), alone or shared by 64 writes.
    let entry = otpgate_actors::audit::AuditEntry {
        at: SystemClock.now(),
        who: otpgate_actors::audit::Who::os_user("alice", &"ws-1"),
        computer: Some("ws-1".into()),
        action: otpgate_actors::audit::Action::Verify,
        outcome: "allowed (alice@example.com)".into(),
    };
    c.bench_function("store/durable write (write + flush each)", |b| {
        b.to_async(&runtime).iter(|| async {
            store.append_audit(&entry).unwrap();
            store.flush().await.unwrap();
        })
    });
    c.bench_function(
        "store/durable write (64 writes per flush), per write",
        |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let (store, entry) = (store.clone(), entry.clone());
                async move {
                    let started = std::time::Instant::now();
                    for n in 0..iters {
                        store.append_audit(&entry).unwrap();
                        if n % 64 == 63 {
                            store.flush().await.unwrap();
                        }
                    }
                    store.flush().await.unwrap();
                    started.elapsed()
                }
            })
        },
    );
}

/// A full chunk of recording `seq`: output lines of letters and digits in
/// no order (deflate gains little on them, as on a compiler's output it
/// would gain more), up to the most a chunk carries.
fn full_chunk(seq: u64) -> RecordChunk {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    let mut state = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut events = String::new();
    loop {
        let text: String = (0..96)
            .map(|_| {
                // xorshift64: the same text for the same chunk, runs apart.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
            })
            .collect();
        let line = otpgate::cast::event(1.0, otpgate::cast::Kind::Output, &text);
        if events.len() + line.len() > MAX_CHUNK_EVENTS {
            break;
        }
        events.push_str(&line);
    }
    let events = events.into_bytes();
    RecordChunk {
        recording: [7; 16],
        seq,
        start: (seq == 0).then(|| RecordingStart {
            width: 80,
            height: 24,
            started_ms: 1_800_000_000_000,
            command: "/bin/sh".into(),
            term: "xterm".into(),
            input: false,
        }),
        events,
        lost: false,
        end: None,
    }
}

/// A chunk stored as the server stores an agent's (deflated and chained on
/// a blocking thread), then made durable, one after another: how fast one
/// busy terminal's recording is taken in.
fn recordings(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("recordings");
    group.throughput(Throughput::Bytes(MAX_CHUNK_EVENTS as u64));
    let cluster = otpgate_actors::test_postgres::postgres();
    let postgres = cluster.map(|cluster| {
        let store = runtime.block_on(KvStore::connect(&cluster.database()));
        store.unwrap().side().unwrap()
    });
    let sled = SideDb::open(&dir.path().join("sled")).unwrap();
    for (name, db) in [("sled", Some(sled)), ("PostgreSQL", postgres)] {
        let Some(db) = db else { continue };
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let quotas = Quotas {
            per_computer: u64::MAX,
            per_user: u64::MAX,
            session_only: false,
        };
        let keys = Arc::new(OtpKeys::derive(&[7; 32]));
        let opening = runtime.spawn_blocking(move || Recordings::open(db, &folder, keys, quotas));
        let recordings = Arc::new(runtime.block_on(opening).unwrap().unwrap());
        let next = Arc::new(AtomicU64::new(0));
        let computer: ComputerId = "ws-1".parse().unwrap();
        group.bench_function(format!("durable 48 KiB chunk ({name})"), |b| {
            b.to_async(&runtime).iter(|| {
                let (recordings, computer) = (Arc::clone(&recordings), computer.clone());
                let chunk = full_chunk(next.fetch_add(1, Ordering::Relaxed));
                async move {
                    let storing = Arc::clone(&recordings);
                    tokio::task::spawn_blocking(move || {
                        let now = SystemClock.now();
                        storing.store(&computer, "alice", None, &chunk, now)
                    })
                    .await
                    .unwrap()
                    .unwrap();
                    recordings.flush().await.unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, frames, otps, offline, actors, recordings);
criterion_main!(benches);

//! Durable before visible, for the store itself: a child process writes as the
//! actors do (an OTP slot, an outbox entry and an audit entry, then a group-commit
//! flush, and only then says "ACK id"), while a mailer-like task takes entries out
//! of the outbox (saying "TAKE id" first). The parent kills the child with SIGKILL
//! at random moments, reopens the database and checks that every acknowledged
//! entry that was not taken is still there, and that every acknowledged slot is.
//!
//! Runs without the test harness: this binary is both the parent and, with
//! `OTPGATE_CRASH_CHILD` set to a folder, the child. `OTPGATE_CRASH_ROUNDS` sets
//! the number of kills (default 12).

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use otpgate_actors::audit::{Action, AuditEntry};
use otpgate_actors::mail::{MailKind, OutboxEntry};
use otpgate_actors::otp::Slot;
use otpgate_actors::request::Refusal;
use otpgate_actors::{KvStore, Store, Timestamp};

const WRITERS: usize = 8;

fn main() -> ExitCode {
    if let Ok(dir) = std::env::var("OTPGATE_CRASH_CHILD") {
        child(&dir);
    }
    let rounds = std::env::var("OTPGATE_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    match parent(rounds) {
        Ok(summary) => {
            println!("store_crash: {summary}");
            println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            println!("store_crash: {problem}");
            println!(
                "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
            );
            ExitCode::FAILURE
        }
    }
}

fn entry(id: u64) -> OutboxEntry {
    OutboxEntry {
        id,
        to: format!("user{id}@example.com"),
        queued: Timestamp::from_unix_millis(id),
        kind: MailKind::Outcome {
            computer: "ws-1".parse().expect("a valid name"),
            refusal: Refusal::Expire,
            comment: None,
        },
        request: None,
        attempts: 0,
        next_try: Timestamp::from_unix_millis(id),
    }
}

fn audit(outcome: String) -> AuditEntry {
    AuditEntry {
        at: Timestamp::from_unix_millis(0),
        who: otpgate_actors::audit::Who::Server,
        computer: None,
        action: Action::Mail,
        outcome,
    }
}

/// Writes until killed.
fn child(dir: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store: Arc<dyn Store> =
            Arc::new(KvStore::open(std::path::Path::new(dir)).expect("the store opens"));
        let say = |line: String| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        for writer in 0..WRITERS {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let computer = format!("ws-{writer}").parse().expect("a valid name");
                loop {
                    let id = store.next_id().await.expect("an id");
                    store
                        .put_slot(&computer, &format!("user{id}"), &Slot::default())
                        .expect("a slot");
                    store.queue_mail(&entry(id)).expect("queued");
                    store
                        .append_audit(&audit(format!("queued {id}")))
                        .expect("audit");
                    store.flush().await.expect("flushed");
                    say(format!("ACK {writer} {id}"));
                    tokio::time::sleep(Duration::from_micros(id % 500)).await;
                }
            });
        }
        loop {
            let due = store.outbox().await.expect("the outbox");
            for taken in &due {
                say(format!("TAKE {}", taken.id));
            }
            for taken in &due {
                store
                    .append_audit(&audit(format!("sent {}", taken.id)))
                    .expect("audit");
                store.remove_outbox(taken.id).expect("removed");
            }
            store.flush().await.expect("flushed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// Kills the child `rounds` times; reports what survived.
fn parent(rounds: usize) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let db = dir.path().join("db");
    let mut acked: Vec<(usize, u64)> = Vec::new();
    let mut taken: HashSet<u64> = HashSet::new();
    let mut checked = 0;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().map_err(|err| err.to_string())?)
            .env("OTPGATE_CRASH_CHILD", &db)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|err| err.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        // Between 0.3 and 1.5 s of writing, different every round.
        std::thread::sleep(Duration::from_millis(300 + (round as u64 * 389) % 1200));
        child.kill().map_err(|err| err.to_string())?;
        child.wait().map_err(|err| err.to_string())?;
        for line in reader.join().map_err(|_| "reader panicked")? {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["ACK", writer, id] => acked.push((
                    writer.parse().map_err(|_| line.clone())?,
                    id.parse().map_err(|_| line.clone())?,
                )),
                ["TAKE", id] => {
                    taken.insert(id.parse().map_err(|_| line.clone())?);
                }
                _ => {}
            }
        }
        let store = KvStore::open(&db).map_err(|err| format!("reopening: {err}"))?;
        let read = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|err| err.to_string())?;
        let present: BTreeSet<u64> = read
            .block_on(store.outbox())
            .map_err(|err| err.to_string())?
            .iter()
            .map(|e| e.id)
            .collect();
        let lost: Vec<u64> = acked
            .iter()
            .map(|&(_, id)| id)
            .filter(|id| !taken.contains(id) && !present.contains(id))
            .collect();
        if !lost.is_empty() {
            return Err(format!(
                "round {round}: {} acknowledged outbox entries lost: {lost:?}",
                lost.len()
            ));
        }
        let mut slots = HashSet::new();
        for writer in 0..WRITERS {
            let computer = format!("ws-{writer}").parse().map_err(|_| "name")?;
            for (user, _) in read
                .block_on(store.slots(&computer))
                .map_err(|err| err.to_string())?
            {
                slots.insert((writer, user));
            }
        }
        if let Some((_, id)) = acked
            .iter()
            .find(|&&(writer, id)| !slots.contains(&(writer, format!("user{id}"))))
        {
            return Err(format!("round {round}: acknowledged slot {id} lost"));
        }
        checked = acked.len();
    }
    if checked == 0 {
        return Err("the child acknowledged nothing".into());
    }
    Ok(format!(
        "{rounds} kills, {checked} acknowledged writes, {} taken, none lost",
        taken.len()
    ))
}

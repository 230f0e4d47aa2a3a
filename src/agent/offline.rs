//! Offline codes on the client computer: the verifiers the server gave for
//! this computer's OS users, checked when the PAM module asks while the
//! server cannot be reached (`on_unreachable=offline`), and the journal of
//! the offline logins they let in, sent to the server as soon as it is back
//! (see `otpgate_actors::offline` for what a code and a verifier are).
//!
//! Everything is kept in one file in the identity folder (`offline`, 0600,
//! root's), rewritten atomically on every change. A code is marked used, and
//! its login journaled, before the login is allowed, so that no crash lets a
//! code in twice; a file that cannot be read is moved aside, and no code is
//! taken until the server is reached again (a lost journal must not open
//! the codes it used). Checks run one at a time (each takes 64 MiB).
//! Guessing: [`WRONG_IN_A_ROW`] wrong codes in a row lock offline codes for
//! that OS user for [`FIRST_LOCK`], twice as long with each lock after,
//! until the server is reached. An agent that has not been connected to the
//! server for its `--offline-max-days` takes no offline code.
//!
//! The server is asked for the verifiers when the agent connects, when the
//! server says they changed, and after an offline login: the journal goes
//! with each ask, and what the server took leaves it. A server that refused
//! this computer's certificate (revoked, or expired) voids them all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use otpgate_actors::directory::is_directory_name;
use otpgate_actors::offline::{self, COST, Cost, MAX_TOLD};
use otpgate_actors::session::OFFLINE_SESSION;
use otpgate_protocol::offline::{OfflineCodes, OfflineUse, OfflineVerdict};
use otpgate_protocol::{ErrorCode, Request, Response};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::link::Link;

/// The file in the identity folder that holds them.
pub const FILE: &str = "offline";
/// How many days after its last contact with the server an agent takes
/// offline codes, unless told otherwise (`--offline-max-days`).
pub const DEFAULT_MAX_DAYS: u32 = 14;
/// Wrong codes in a row that lock an OS user's offline codes.
pub const WRONG_IN_A_ROW: u32 = 5;
/// How long the first lock lasts; each after lasts twice the one before.
pub const FIRST_LOCK: Duration = Duration::from_secs(15 * 60);
/// The longest a lock lasts.
const LONGEST_LOCK: Duration = Duration::from_secs(24 * 60 * 60);
/// How many OS users' wrong codes are counted before those not locked now
/// are forgotten.
const MOST_COUNTED: usize = 1024;
/// How often at most being connected is written down (what
/// `--offline-max-days` counts from after a restart).
const CONNECTED_WRITE_EVERY: Duration = Duration::from_secs(60 * 60);

/// What the file keeps.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Kept {
    /// The verifiers, per OS user.
    sets: Vec<OfflineCodes>,
    /// When the agent was last connected to the server, in milliseconds
    /// since the Unix epoch.
    contact_ms: Option<u64>,
    /// Offline logins the server has not taken yet, oldest first.
    journal: Vec<OfflineUse>,
    /// Wrong codes, per OS user.
    locks: BTreeMap<String, Lock>,
    /// The file was unreadable: no code is taken until the server is
    /// reached.
    damaged: bool,
}

/// One OS user's wrong codes.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
struct Lock {
    /// Wrong in a row.
    wrong: u32,
    /// Locks so far.
    locks: u32,
    /// Locked until then, in milliseconds since the Unix epoch.
    until_ms: u64,
}

/// The offline codes of this computer.
#[derive(Debug)]
pub struct Offline {
    file: PathBuf,
    kept: Mutex<Kept>,
    /// One check at a time: each takes 64 MiB.
    checking: Mutex<()>,
    /// How long after the last contact with the server codes still work.
    max_away: Duration,
    /// Woken when an offline login is journaled.
    journaled: Notify,
}

impl Offline {
    /// The offline codes kept in `file`, taken for at most `max_away` after
    /// the last contact with the server. A file that cannot be read is
    /// moved aside (`offline.unreadable`) and said; no code is taken until
    /// the server is reached again.
    pub fn load(file: PathBuf, max_away: Duration) -> Self {
        let kept = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Kept::default()),
            Err(err) => Err(err),
        };
        let kept = kept.unwrap_or_else(|err| {
            let aside = file.with_extension("unreadable");
            let moved = std::fs::rename(&file, &aside);
            warn!(file = %file.display(), error = %err, moved_to = %aside.display(), moved = moved.is_ok(),
                "the offline codes are unreadable: none is taken until the server is reached");
            Kept {
                damaged: true,
                ..Kept::default()
            }
        });
        Self {
            file,
            kept: Mutex::new(kept),
            checking: Mutex::new(()),
            max_away,
            journaled: Notify::new(),
        }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `kept` out; an error is the caller's (a use that is not on
    /// disk is not allowed).
    fn save(&self, kept: &Kept) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(kept).map_err(std::io::Error::other)?;
        crate::files::write_private(&self.file, &bytes)
    }

    /// [`Offline::save`], what went wrong logged.
    fn save_or_say(&self, kept: &Kept) {
        if let Err(err) = self.save(kept) {
            warn!(error = %err, "the offline codes' record could not be written");
        }
    }

    /// Whether the offline login of client session `session` waits to be
    /// told to the server: the server must know an offline session before
    /// it hears that it ended.
    pub fn unreported(&self, session: u64) -> bool {
        self.kept()
            .journal
            .iter()
            .any(|used| used.session == session)
    }

    /// Checks `typed` for OS user `os_user` at PAM service `service`, at
    /// `now_ms`: on a right code, marks it used and journals the login
    /// (on disk before this returns) and answers the client session it
    /// starts. Slow on purpose (one Argon2id hash, whatever the answer):
    /// call it off the runtime.
    pub fn check(&self, os_user: &str, service: &str, typed: &str, now_ms: u64) -> OfflineVerdict {
        let _one_at_a_time = self.checking.lock().unwrap_or_else(PoisonError::into_inner);
        let locked_as = lock_key(os_user);
        let found = {
            let kept = self.kept();
            if let Some(refused) = self.refusal(&kept, &locked_as, now_ms) {
                return refused;
            }
            kept.sets
                .iter()
                .find(|set| same_person(&set.os_user, os_user) && now_ms < set.expires_ms)
                .map(|set| {
                    let cost = Cost {
                        memory_kib: set.memory_kib,
                        passes: set.passes,
                    };
                    (set.set, set.salt, cost, set.verifiers.clone())
                })
        };
        // Without codes the hash is made all the same, and the try counts:
        // neither the time nor a lock tells a stranger who has codes.
        let (set, salt, cost, verifiers) = found.unwrap_or((0, [0; 16], COST, Vec::new()));
        let found = offline::check(typed, &salt, cost, &verifiers);
        let mut kept = self.kept();
        // Checked again: what changed while the hash ran counts.
        if let Some(refused) = self.refusal(&kept, &locked_as, now_ms) {
            return refused;
        }
        let taken = found.and_then(|index| {
            let set = kept.sets.iter_mut().find(|s| s.set == set)?;
            set.verifiers
                .get_mut(index)?
                .take()
                .map(|verifier| (index, verifier))
        });
        let Some((code, verifier)) = taken else {
            // Kept bounded, whatever names are tried: counts not locking
            // anyone now go first.
            if kept.locks.len() >= MOST_COUNTED && !kept.locks.contains_key(&locked_as) {
                kept.locks.retain(|_, lock| now_ms < lock.until_ms);
            }
            let lock = kept.locks.entry(locked_as).or_default();
            lock.wrong += 1;
            if lock.wrong >= WRONG_IN_A_ROW {
                let lasts = FIRST_LOCK
                    .saturating_mul(1 << lock.locks.min(16))
                    .min(LONGEST_LOCK);
                lock.wrong = 0;
                lock.locks += 1;
                lock.until_ms = now_ms.saturating_add(millis(lasts));
                warn!(
                    os_user,
                    minutes = lasts.as_secs() / 60,
                    "offline codes locked after {WRONG_IN_A_ROW} wrong in a row"
                );
            }
            self.save_or_say(&kept);
            return if verifiers.is_empty() {
                OfflineVerdict::NoCodes
            } else {
                OfflineVerdict::Wrong
            };
        };
        let session = rand::rng().random::<u64>() | OFFLINE_SESSION;
        let lock = kept.locks.remove(&locked_as);
        kept.journal.push(OfflineUse {
            set,
            code: u32::try_from(code).unwrap_or(u32::MAX),
            os_user: os_user.to_owned(),
            service: service.to_owned(),
            at_ms: now_ms,
            session,
        });
        if let Err(err) = self.save(&kept) {
            // Not on disk: not allowed, and not used.
            warn!(error = %err, "an offline login could not be journaled; refused");
            kept.journal.pop();
            if let Some(set) = kept.sets.iter_mut().find(|s| s.set == set)
                && let Some(slot) = set.verifiers.get_mut(code)
            {
                *slot = Some(verifier);
            }
            if let Some(lock) = lock {
                kept.locks.insert(lock_key(os_user), lock);
            }
            return OfflineVerdict::Unavailable;
        }
        drop(kept);
        info!(os_user, service, session, "let in with an offline code");
        self.journaled.notify_one();
        OfflineVerdict::Allow { session }
    }

    /// Why the OS user whose wrong codes are counted under `locked_as`
    /// may not use an offline code now, if they may not.
    fn refusal(&self, kept: &Kept, locked_as: &str, now_ms: u64) -> Option<OfflineVerdict> {
        if kept.damaged {
            return Some(OfflineVerdict::Damaged);
        }
        let away_since = kept.contact_ms.unwrap_or(0);
        if now_ms.saturating_sub(away_since) > millis(self.max_away) {
            return Some(OfflineVerdict::AwayTooLong {
                since_ms: away_since,
            });
        }
        match kept.locks.get(locked_as) {
            Some(lock) if now_ms < lock.until_ms => Some(OfflineVerdict::Locked {
                until_ms: lock.until_ms,
            }),
            _ => None,
        }
    }

    /// The agent is connected at `now_ms`: what `--offline-max-days` counts
    /// from (written down at most every [`CONNECTED_WRITE_EVERY`]).
    fn connected(&self, now_ms: u64) {
        let mut kept = self.kept();
        let written = kept.contact_ms.unwrap_or(0);
        if now_ms.saturating_sub(written) >= millis(CONNECTED_WRITE_EVERY) && !kept.damaged {
            kept.contact_ms = Some(now_ms);
            self.save_or_say(&kept);
        }
    }

    /// Takes what the server said at `now_ms`, having been told `told` of
    /// the journal: its sets replace ours, the uses it took leave the
    /// journal, and locks are lifted.
    fn contact(&self, sets: Vec<OfflineCodes>, told: &[OfflineUse], now_ms: u64) {
        let mut kept = self.kept();
        kept.journal.retain(|entry| !told.contains(entry));
        kept.sets = sets;
        // A use journaled since the ask stays used until the server says.
        let Kept { sets, journal, .. } = &mut *kept;
        for entry in journal.iter() {
            if let Some(slot) = sets
                .iter_mut()
                .find(|s| s.set == entry.set)
                .and_then(|s| s.verifiers.get_mut(entry.code as usize))
            {
                *slot = None;
            }
        }
        kept.contact_ms = Some(now_ms);
        kept.locks.clear();
        kept.damaged = false;
        self.save_or_say(&kept);
    }

    /// Voids every code: the server refused this computer's certificate.
    fn void(&self) {
        let mut kept = self.kept();
        if kept.sets.is_empty() {
            return;
        }
        kept.sets.clear();
        self.save_or_say(&kept);
        warn!("the server refused this computer's certificate: its offline codes are void");
    }
}

/// Whether OS user `typed` (as PAM names them) is `issued` (as the
/// administrator named them when the codes were issued): the same, or, for
/// a directory account (`CORP\alice`, `alice@corp`), the same but for
/// case, as directories take them.
fn same_person(issued: &str, typed: &str) -> bool {
    issued == typed || (is_directory_name(typed) && issued.eq_ignore_ascii_case(typed))
}

/// The name OS user `typed`'s wrong codes are counted under: one count
/// whatever the case of a directory account's name.
fn lock_key(typed: &str) -> String {
    if is_directory_name(typed) {
        typed.to_ascii_lowercase()
    } else {
        typed.to_owned()
    }
}

/// How long after its last contact with the server an agent told `days`
/// takes offline codes.
pub fn max_away(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 24 * 60 * 60)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The time now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// How long to wait before asking again after a failed ask.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Keeps `offline` in step with the server over `link` until `cancel`
/// fires: asks on every new connection, when the server says the codes
/// changed, and when an offline login waits to be told (once per
/// connection to a server that does not know offline codes).
pub async fn keep(offline: Arc<Offline>, link: Link, cancel: CancellationToken) {
    let mut status = link.watch();
    // What was asked for: the connection and the change said.
    let mut asked = (0, 0);
    // The connection whose server does not know offline codes.
    let mut unsupported = None;
    loop {
        let (now, connected) = {
            let status = status.borrow_and_update();
            ((status.welcomes, status.offline_changes), status.connected)
        };
        if link.status().refused {
            let offline = Arc::clone(&offline);
            let _ = tokio::task::spawn_blocking(move || offline.void()).await;
        }
        let waiting = !offline.kept().journal.is_empty();
        let due = connected && unsupported != Some(now.0) && (now != asked || waiting);
        if connected {
            let offline = Arc::clone(&offline);
            let _ = tokio::task::spawn_blocking(move || offline.connected(now_ms())).await;
        }
        if due {
            match ask(&offline, &link).await {
                Ok(()) => asked = now,
                Err(Unasked::Unsupported) => unsupported = Some(now.0),
                Err(Unasked::Failed(why)) => {
                    debug!(why, "offline codes not asked for yet");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
            () = offline.journaled.notified() => {}
        }
    }
}

/// Why an ask did not go through.
enum Unasked {
    /// The server is of a release before offline codes.
    Unsupported,
    /// It failed; asked again later.
    Failed(&'static str),
}

/// One ask: the journal told (its oldest [`MAX_TOLD`]), the sets taken.
async fn ask(offline: &Arc<Offline>, link: &Link) -> Result<(), Unasked> {
    let told: Vec<OfflineUse> = offline
        .kept()
        .journal
        .iter()
        .take(MAX_TOLD)
        .cloned()
        .collect();
    match link.call(Request::Offline { used: told.clone() }).await {
        Ok(Response::Offline(sets)) => {
            let offline = Arc::clone(offline);
            let _ =
                tokio::task::spawn_blocking(move || offline.contact(sets, &told, now_ms())).await;
            Ok(())
        }
        Ok(Response::Fail(ErrorCode::Unsupported)) => Err(Unasked::Unsupported),
        Ok(_) => Err(Unasked::Failed("the server could not answer")),
        Err(_) => Err(Unasked::Failed("the connection went")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cheap cost, for tests of everything but the cost.
    const CHEAP: Cost = Cost {
        memory_kib: 64,
        passes: 1,
    };
    const NOW: u64 = 1_800_000_000_000;

    fn codes(os_user: &str, set: u64, codes: &[&str]) -> OfflineCodes {
        let salt = [set as u8; 16];
        OfflineCodes {
            set,
            os_user: os_user.into(),
            salt,
            memory_kib: CHEAP.memory_kib,
            passes: CHEAP.passes,
            verifiers: codes
                .iter()
                .map(|code| Some(offline::verifier(code.as_bytes(), &salt, CHEAP)))
                .collect(),
            expires_ms: NOW + 2 * 86_400_000,
        }
    }

    /// How many unused, unexpired codes OS user `os_user` has at `now_ms`.
    fn left(offline: &Offline, os_user: &str, now_ms: u64) -> usize {
        offline
            .kept()
            .sets
            .iter()
            .filter(|set| set.os_user == os_user && now_ms < set.expires_ms)
            .map(|set| set.verifiers.iter().flatten().count())
            .sum()
    }

    fn offline(dir: &tempfile::TempDir) -> Offline {
        let offline = Offline::load(dir.path().join("offline"), Duration::from_secs(3 * 86_400));
        offline.contact(
            vec![
                codes("alice", 1, &["111122223333", "444455556666"]),
                codes("bob", 2, &["777788889999"]),
            ],
            &[],
            NOW,
        );
        offline
    }

    #[test]
    fn a_code_lets_its_user_in_once_and_is_journaled_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let offline = offline(&dir);
        let OfflineVerdict::Allow { session } =
            offline.check("alice", "sshd", "1111-2222-3333", NOW)
        else {
            panic!("a right code")
        };
        assert!(session & OFFLINE_SESSION != 0);
        assert_eq!(
            offline.check("alice", "sshd", "1111-2222-3333", NOW),
            OfflineVerdict::Wrong
        );
        assert_eq!(
            offline.check("bob", "sshd", "444455556666", NOW),
            OfflineVerdict::Wrong,
            "alice's"
        );
        assert_eq!(left(&offline, "alice", NOW), 1);
        // What is on disk holds the use and no code.
        let file = std::fs::read_to_string(dir.path().join("offline")).unwrap();
        assert!(!file.contains("111122223333") && !file.contains("444455556666"));
        let again = Offline::load(dir.path().join("offline"), Duration::from_secs(86_400));
        assert!(again.unreported(session));
        assert_eq!(left(&again, "alice", NOW), 1);
        assert_eq!(
            again.check("alice", "sshd", "111122223333", NOW),
            OfflineVerdict::Wrong
        );
    }

    #[test]
    fn five_wrong_lock_for_fifteen_minutes_then_thirty_and_contact_lifts_it() {
        let dir = tempfile::tempdir().unwrap();
        let offline = offline(&dir);
        for _ in 0..WRONG_IN_A_ROW {
            assert_eq!(
                offline.check("alice", "sshd", "000000000000", NOW),
                OfflineVerdict::Wrong
            );
        }
        let until_ms = NOW + 15 * 60_000;
        assert_eq!(
            offline.check("alice", "sshd", "111122223333", NOW),
            OfflineVerdict::Locked { until_ms },
            "even the right code"
        );
        assert!(
            matches!(
                offline.check("bob", "sshd", "777788889999", NOW),
                OfflineVerdict::Allow { .. }
            ),
            "another user's are not locked"
        );
        for _ in 0..WRONG_IN_A_ROW {
            offline.check("alice", "sshd", "000000000000", until_ms);
        }
        assert_eq!(
            offline.check("alice", "sshd", "111122223333", until_ms),
            OfflineVerdict::Locked {
                until_ms: until_ms + 30 * 60_000
            }
        );
        offline.contact(vec![codes("alice", 1, &["111122223333"])], &[], until_ms);
        assert!(matches!(
            offline.check("alice", "sshd", "111122223333", until_ms),
            OfflineVerdict::Allow { .. }
        ));
    }

    #[test]
    fn codes_expire_stop_after_too_long_away_and_a_revocation_voids_them() {
        let dir = tempfile::tempdir().unwrap();
        let offline = offline(&dir);
        assert_eq!(
            offline.check("alice", "sshd", "111122223333", NOW + 2 * 86_400_000),
            OfflineVerdict::NoCodes
        );
        let later = NOW + 3 * 86_400_000 + 1;
        assert_eq!(
            offline.check("alice", "sshd", "111122223333", later),
            OfflineVerdict::AwayTooLong { since_ms: NOW }
        );
        offline.void();
        assert_eq!(
            offline.check("bob", "sshd", "777788889999", NOW),
            OfflineVerdict::NoCodes
        );
    }

    #[test]
    fn what_the_server_took_leaves_the_journal_and_a_later_use_stays_used() {
        let dir = tempfile::tempdir().unwrap();
        let offline = offline(&dir);
        assert!(matches!(
            offline.check("alice", "sshd", "111122223333", NOW),
            OfflineVerdict::Allow { .. }
        ));
        let told = offline.kept().journal.clone();
        assert!(matches!(
            offline.check("alice", "sshd", "444455556666", NOW),
            OfflineVerdict::Allow { .. }
        ));
        // The server answers the first ask having taken the first use
        // only: the second stays used here.
        let mut answer = codes("alice", 1, &["111122223333", "444455556666"]);
        answer.verifiers[0] = None;
        offline.contact(vec![answer], &told, NOW);
        let second = offline.kept().journal[0].session;
        assert!(offline.unreported(second), "the second is still to tell");
        assert!(!offline.unreported(told[0].session), "the first was told");
        assert_eq!(
            offline.check("alice", "sshd", "444455556666", NOW),
            OfflineVerdict::Wrong
        );
    }

    #[test]
    fn an_unreadable_file_is_moved_aside_and_no_code_is_taken_until_the_server_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE);
        std::fs::write(&file, "{ half a record").unwrap();
        let offline = Offline::load(file, Duration::from_secs(86_400));
        assert!(dir.path().join("offline.unreadable").exists());
        assert!(matches!(
            offline.check("alice", "sshd", "111122223333", NOW),
            OfflineVerdict::Damaged
        ));
        offline.contact(vec![codes("alice", 1, &["111122223333"])], &[], NOW);
        assert!(matches!(
            offline.check("alice", "sshd", "111122223333", NOW),
            OfflineVerdict::Allow { .. }
        ));
    }

    #[test]
    fn a_directory_account_is_the_same_person_whatever_the_case() {
        assert!(same_person("corp\\alice", "CORP\\Alice"));
        assert!(same_person("alice", "alice"));
        assert!(
            !same_person("alice", "Alice"),
            "local accounts are as typed"
        );
    }
}

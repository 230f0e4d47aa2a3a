//! Offline codes on the client computer: the verifiers the server gave for
//! this computer's OS users, checked when the PAM module asks while the
//! server cannot be reached (`on_unreachable=offline`), and the journal of
//! the offline logins they let in, sent to the server as soon as it is back
//! (see `otpgate_actors::offline` for what a code and a verifier are).
//!
//! Everything is kept in one file in the identity folder (`offline`, 0600,
//! root's), rewritten atomically on every change. A code is marked used, and
//! its login journaled, before the login is allowed, so that no crash lets a
//! code in twice. Guessing: [`WRONG_IN_A_ROW`] wrong codes in a row lock
//! offline codes for that OS user for [`FIRST_LOCK`], twice as long with
//! each lock after, until the server is reached. An agent that has not
//! reached the server for its `--offline-max-days` takes no offline code.
//!
//! The server is asked for the verifiers when the agent connects, when the
//! server says they changed, and after an offline login: the journal goes
//! with each ask, and what the server took leaves it. A server that refused
//! this computer's certificate (revoked, or expired) voids them all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use otpgate_actors::offline::{self, Cost};
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

/// Wrong codes in a row that lock an OS user's offline codes.
pub const WRONG_IN_A_ROW: u32 = 5;
/// How long the first lock lasts; each after lasts twice the one before.
pub const FIRST_LOCK: Duration = Duration::from_secs(15 * 60);
/// The longest a lock lasts.
const LONGEST_LOCK: Duration = Duration::from_secs(24 * 60 * 60);
/// Session ids an agent picks for offline logins have this bit set; the
/// server's own never do (see `otpgate_actors::session::OFFLINE_SESSION`).
const OFFLINE_SESSION: u64 = 1 << 63;

/// What the file keeps.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    /// The verifiers, per OS user.
    sets: Vec<OfflineCodes>,
    /// When the server last gave them, in milliseconds since the Unix epoch.
    contact_ms: Option<u64>,
    /// Offline logins the server has not taken yet, oldest first.
    journal: Vec<OfflineUse>,
    /// Wrong codes, per OS user.
    locks: BTreeMap<String, Lock>,
}

/// One OS user's wrong codes.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
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
    /// How long after the last contact with the server codes still work.
    max_away: Duration,
    /// Woken when an offline login is journaled.
    journaled: Notify,
}

impl Offline {
    /// The offline codes kept in `file`, taken for at most `max_away` after
    /// the last contact with the server. An unreadable file is said and
    /// left for a new one (its codes then do not work until the next
    /// contact).
    pub fn load(file: PathBuf, max_away: Duration) -> Self {
        let kept = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                warn!(file = %file.display(), error = %err, "the offline codes are unreadable: none until the server is reached");
                Kept::default()
            }),
            Err(_) => Kept::default(),
        };
        Self {
            file,
            kept: Mutex::new(kept),
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

    /// Whether an offline login waits to be told to the server: the
    /// server must know an offline session before it hears that it ended.
    pub fn unreported(&self) -> bool {
        !self.kept().journal.is_empty()
    }

    /// How many unused, unexpired codes OS user `os_user` has at `now_ms`.
    pub fn left(&self, os_user: &str, now_ms: u64) -> usize {
        self.kept()
            .sets
            .iter()
            .filter(|set| set.os_user == os_user && now_ms < set.expires_ms)
            .map(|set| set.verifiers.iter().flatten().count())
            .sum()
    }

    /// Checks `typed` for OS user `os_user` at PAM service `service`, at
    /// `now_ms`: on a right code, marks it used and journals the login
    /// (on disk before this returns) and answers the client session it
    /// starts. Slow on purpose (one Argon2id hash): call it off the runtime.
    pub fn check(&self, os_user: &str, service: &str, typed: &str, now_ms: u64) -> OfflineVerdict {
        let (set, salt, cost, verifiers) = {
            let kept = self.kept();
            let Some(set) = kept
                .sets
                .iter()
                .find(|set| set.os_user == os_user && now_ms < set.expires_ms)
            else {
                return OfflineVerdict::NoCodes;
            };
            if let Some(refused) = self.refusal(&kept, os_user, now_ms) {
                return refused;
            }
            let cost = Cost {
                memory_kib: set.memory_kib,
                passes: set.passes,
            };
            (set.set, set.salt, cost, set.verifiers.clone())
        };
        let found = offline::check(typed, &salt, cost, &verifiers);
        let mut kept = self.kept();
        // Checked again: another login may have taken it meanwhile.
        if let Some(refused) = self.refusal(&kept, os_user, now_ms) {
            return refused;
        }
        let code = found.and_then(|index| {
            let set = kept.sets.iter_mut().find(|s| s.set == set)?;
            set.verifiers.get_mut(index)?.take().map(|_| index)
        });
        let Some(code) = code else {
            let lock = kept.locks.entry(os_user.to_owned()).or_default();
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
            if let Err(err) = self.save(&kept) {
                warn!(error = %err, "the offline codes' record could not be written");
            }
            return OfflineVerdict::Wrong;
        };
        let session = rand::rng().random::<u64>() | OFFLINE_SESSION;
        kept.locks.remove(os_user);
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
                *slot = verifiers.get(code).copied().flatten();
            }
            return OfflineVerdict::Unavailable;
        }
        drop(kept);
        info!(os_user, service, session, "let in with an offline code");
        self.journaled.notify_one();
        OfflineVerdict::Allowed { session }
    }

    /// Why `os_user` may not use an offline code now, if they may not.
    fn refusal(&self, kept: &Kept, os_user: &str, now_ms: u64) -> Option<OfflineVerdict> {
        let away_since = kept.contact_ms.unwrap_or(0);
        if now_ms.saturating_sub(away_since) > millis(self.max_away) {
            return Some(OfflineVerdict::AwayTooLong {
                since_ms: away_since,
            });
        }
        match kept.locks.get(os_user) {
            Some(lock) if now_ms < lock.until_ms => Some(OfflineVerdict::Locked {
                until_ms: lock.until_ms,
            }),
            _ => None,
        }
    }

    /// Takes what the server said at `now_ms`, having been told `told` of
    /// the journal: its sets replace ours, the uses it took leave the
    /// journal, and locks are lifted.
    fn contact(&self, sets: Vec<OfflineCodes>, told: &[OfflineUse], now_ms: u64) {
        let mut kept = self.kept();
        kept.journal.retain(|entry| !told.contains(entry));
        // A use journaled since the ask stays used until the server says.
        let pending = kept.journal.clone();
        kept.sets = sets;
        for entry in &pending {
            if let Some(slot) = kept
                .sets
                .iter_mut()
                .find(|s| s.set == entry.set)
                .and_then(|s| s.verifiers.get_mut(entry.code as usize))
            {
                *slot = None;
            }
        }
        kept.contact_ms = Some(now_ms);
        kept.locks.clear();
        if let Err(err) = self.save(&kept) {
            warn!(error = %err, "the offline codes' record could not be written");
        }
    }

    /// Voids every code: the server refused this computer's certificate.
    fn void(&self) {
        let mut kept = self.kept();
        if kept.sets.is_empty() {
            return;
        }
        kept.sets.clear();
        if let Err(err) = self.save(&kept) {
            warn!(error = %err, "the offline codes' record could not be written");
        }
        warn!("the server refused this computer's certificate: its offline codes are void");
    }
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
/// changed, and when an offline login waits to be told.
pub async fn keep(offline: Arc<Offline>, link: Link, cancel: CancellationToken) {
    let mut status = link.watch();
    let mut asked = (0, 0);
    loop {
        let now = {
            let status = status.borrow_and_update();
            if status.refused {
                offline.void();
            }
            (status.welcomes, status.offline_changes)
        };
        let due = link.status().connected && (now != asked || offline.unreported());
        if due {
            match ask(&offline, &link).await {
                Ok(()) => asked = now,
                Err(why) => {
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

/// One ask: the journal told, the sets taken.
async fn ask(offline: &Offline, link: &Link) -> Result<(), &'static str> {
    let told = offline.kept().journal.clone();
    match link.call(Request::Offline { used: told.clone() }).await {
        Ok(Response::Offline(sets)) => {
            offline.contact(sets, &told, now_ms());
            Ok(())
        }
        // A server of a release before offline codes: asked again later,
        // in case the next connection is to one that takes the journal.
        Ok(Response::Fail(ErrorCode::Unsupported)) => Err("the server does not know offline codes"),
        Ok(_) => Err("the server could not answer"),
        Err(_) => Err("the connection went"),
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

    fn offline(dir: &tempfile::TempDir) -> Offline {
        let offline = Offline::load(dir.path().join("offline"), Duration::from_secs(86_400));
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
        let OfflineVerdict::Allowed { session } =
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
        assert_eq!(offline.left("alice", NOW), 1);
        // What is on disk holds the use and no code.
        let file = std::fs::read_to_string(dir.path().join("offline")).unwrap();
        assert!(!file.contains("111122223333") && !file.contains("444455556666"));
        let again = Offline::load(dir.path().join("offline"), Duration::from_secs(86_400));
        assert!(again.unreported());
        assert_eq!(again.left("alice", NOW), 1);
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
                OfflineVerdict::Allowed { .. }
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
            OfflineVerdict::Allowed { .. }
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
        let later = NOW + 86_400_001;
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
            OfflineVerdict::Allowed { .. }
        ));
        let told = offline.kept().journal.clone();
        assert!(matches!(
            offline.check("alice", "sshd", "444455556666", NOW),
            OfflineVerdict::Allowed { .. }
        ));
        // The server answers the first ask having taken the first use
        // only: the second stays used here.
        let mut answer = codes("alice", 1, &["111122223333", "444455556666"]);
        answer.verifiers[0] = None;
        offline.contact(vec![answer], &told, NOW);
        assert!(offline.unreported(), "the second is still to tell");
        assert_eq!(
            offline.check("alice", "sshd", "444455556666", NOW),
            OfflineVerdict::Wrong
        );
    }
}

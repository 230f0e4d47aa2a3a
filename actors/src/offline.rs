//! Offline codes: one-time codes that a client computer checks by itself
//! when the server cannot be reached (the PAM module's
//! `on_unreachable=offline`), each for one computer and one OS user, used
//! once, until it expires.
//!
//! A set is made on the server ([`OfflineSet::issue`]) and its codes are
//! shown to the person once (printed, or mailed to their address). No code is
//! kept anywhere: the server and the agent keep, per code, only a verifier,
//! an Argon2id hash of the code under the set's random salt at [`COST`]
//! (64 MiB, three passes). One check costs one such hash, whatever the
//! number of codes, because every code of a set shares the salt: 136 ms on
//! a core of the 2-core test machine (`cargo bench --bench micro --
//! offline`). A code is twelve random digits (40 bits), so verifiers that
//! leak from a computer take on average 10^12 / (2 × 5) such hashes to give
//! up one code of a set of five: about 430 years of such a core.
//!
//! ```text
//! code     = 12 random decimal digits, shown as 1234-5678-9012
//! verifier = Argon2id(m = 64 MiB, t = 3, p = 1, salt = the set's 16 random bytes, code) → 32 bytes
//! ```

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::store::record::Record;

/// How many digits a code has.
pub const DIGITS: usize = 12;
/// How many codes a set holds unless its issuer says otherwise.
pub const DEFAULT_CODES: u32 = 5;
/// How many days a set lasts unless its issuer says otherwise.
pub const DEFAULT_VALID_DAYS: u32 = 30;
/// The most codes one set holds.
pub const MAX_CODES: u32 = 20;
/// The longest a set is valid, in days.
pub const MAX_VALID_DAYS: u32 = 366;
/// The most sets (OS users) one computer holds: what its agent is sent
/// fits in one frame.
pub const MAX_SETS: usize = 64;
/// The most offline logins an agent tells in one request.
pub const MAX_TOLD: usize = 64;

/// How hard one verifier is to make (and so one check, and one guess).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Passes over it.
    pub passes: u32,
}

/// The cost of the sets made now; a set keeps the cost it was made with, so
/// that a later build may raise it without voiding sets out there.
pub const COST: Cost = Cost {
    memory_kib: 64 * 1024,
    passes: 3,
};

/// A set of offline codes for one computer and one OS user, as the server
/// keeps it: issuing a new one for them replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineSet {
    /// Its id (the store's): the agent names it when it reports a use.
    pub id: u64,
    /// The OS user it lets in, as the server names them (a directory
    /// account canonical, see `directory::person_name`).
    pub os_user: String,
    /// The OS user as issued: the name PAM gives on the computer, which
    /// the agent matches.
    pub login_name: String,
    /// The person's address, for the client session of an offline login.
    pub email: String,
    /// When it was made.
    pub issued_at: Timestamp,
    /// When its codes stop working.
    pub expires_at: Timestamp,
    /// Who made it, as the audit log names them.
    pub issued_by: String,
    /// The salt of every verifier of the set.
    pub salt: [u8; 16],
    /// The cost every verifier was made with.
    pub cost: Cost,
    /// The codes, in the order shown.
    pub codes: Vec<CodeState>,
}

impl Record for OfflineSet {}

/// One code of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeState {
    /// Its verifier.
    pub verifier: [u8; 32],
    /// When it was used, as the agent that took it said.
    pub used_at: Option<Timestamp>,
}

/// A set just made: what is kept, and its codes, to be shown once.
pub struct Issued {
    /// What is kept.
    pub set: OfflineSet,
    /// The codes, as shown to the person (see [`show`]).
    pub codes: Vec<Zeroizing<String>>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("set", &self.set.id)
            .finish_non_exhaustive()
    }
}

/// What an issue names: whom, how many, until when, by whom.
#[derive(Debug, Clone)]
pub struct Order {
    /// The store's id for the set.
    pub id: u64,
    /// The OS user.
    pub os_user: String,
    /// The person's address.
    pub email: String,
    /// How many codes (1 to [`MAX_CODES`]).
    pub count: u32,
    /// When it is made.
    pub now: Timestamp,
    /// How long it lasts.
    pub valid: std::time::Duration,
    /// Who makes it.
    pub by: String,
}

impl OfflineSet {
    /// Makes a set of `order.count` fresh codes at [`COST`]. Slow on purpose
    /// (one Argon2id hash per code): call it off the async runtime.
    pub fn issue(order: Order) -> Issued {
        let mut rng = rand::rng();
        let salt: [u8; 16] = rng.random();
        let mut codes: Vec<Zeroizing<String>> = Vec::new();
        while codes.len() < order.count as usize {
            let digits: String = (0..DIGITS)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            let digits = Zeroizing::new(digits);
            if !codes.contains(&digits) {
                codes.push(digits);
            }
        }
        let states = codes
            .iter()
            .map(|code| CodeState {
                verifier: verifier(code.as_bytes(), &salt, COST),
                used_at: None,
            })
            .collect();
        Issued {
            set: OfflineSet {
                id: order.id,
                login_name: order.os_user.clone(),
                os_user: order.os_user,
                email: order.email,
                issued_at: order.now,
                expires_at: order.now.after(order.valid),
                issued_by: order.by,
                salt,
                cost: COST,
                codes: states,
            },
            codes: codes.iter().map(|code| show(code)).collect(),
        }
    }

    /// How many of its codes are left at `now`: unused, and the set not
    /// expired.
    pub fn left(&self, now: Timestamp) -> usize {
        if now >= self.expires_at {
            return 0;
        }
        self.codes.iter().filter(|c| c.used_at.is_none()).count()
    }

    /// Marks code `index` used at `at` (the agent's word), unless it was
    /// already; whether it was unused. An index beyond the set is no code.
    pub fn mark_used(&mut self, index: usize, at: Timestamp) -> bool {
        match self.codes.get_mut(index) {
            Some(code) if code.used_at.is_none() => {
                code.used_at = Some(at);
                true
            }
            _ => false,
        }
    }
}

/// The verifier of code `code` (its digits) under `salt` at `cost`.
pub fn verifier(code: &[u8], salt: &[u8; 16], cost: Cost) -> [u8; 32] {
    let mut out = [0u8; 32];
    hasher(cost)
        .hash_password_into(code, salt, &mut out)
        .expect("a 16-byte salt and a 32-byte output are within argon2's limits");
    out
}

/// The most memory a set may ask one check for, in KiB.
const MOST_MEMORY_KIB: u32 = 256 * 1024;
/// The most passes a set may ask one check for.
const MOST_PASSES: u32 = 16;

fn hasher(cost: Cost) -> Argon2<'static> {
    // A cost read from a file that is beyond our bounds, or that argon2
    // refuses, falls back to ours: the check then fails, as a wrong code
    // does, and a damaged file cannot make a check take the machine.
    let within = cost.memory_kib <= MOST_MEMORY_KIB && cost.passes <= MOST_PASSES;
    let params = Params::new(cost.memory_kib, cost.passes, 1, Some(32))
        .ok()
        .filter(|_| within)
        .or_else(|| Params::new(COST.memory_kib, COST.passes, 1, Some(32)).ok())
        .expect("our own cost is valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Which of `verifiers` (unused codes; `None` for a used one) `typed` is,
/// if any: one hash, then a constant-time comparison with each. What a
/// person typed is read as its digits alone (spaces and dashes dropped);
/// anything else is no code, and is not hashed.
pub fn check(
    typed: &str,
    salt: &[u8; 16],
    cost: Cost,
    verifiers: &[Option<[u8; 32]>],
) -> Option<usize> {
    let digits = digits_of(typed)?;
    let hash = verifier(digits.as_bytes(), salt, cost);
    let mut found = None;
    for (index, verifier) in verifiers.iter().enumerate() {
        if let Some(verifier) = verifier
            && aws_lc_rs::constant_time::verify_slices_are_equal(&hash, verifier).is_ok()
        {
            found = Some(index);
        }
    }
    found
}

/// The digits of what a person typed, if it is a code's: [`DIGITS`] digits,
/// with spaces and dashes anywhere.
fn digits_of(typed: &str) -> Option<Zeroizing<String>> {
    // Made in place, so that no copy of the code is left behind by a
    // growing buffer.
    let mut digits = Zeroizing::new(String::with_capacity(DIGITS));
    for c in typed.chars().filter(|c| !matches!(c, ' ' | '-')) {
        if !c.is_ascii_digit() || digits.len() == DIGITS {
            return None;
        }
        digits.push(c);
    }
    (digits.len() == DIGITS).then_some(digits)
}

/// A code as shown to a person: its digits in groups of four.
pub fn show(digits: &str) -> Zeroizing<String> {
    let mut shown = Zeroizing::new(String::with_capacity(DIGITS + DIGITS / 4));
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            shown.push('-');
        }
        shown.push(digit);
    }
    shown
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A cheap cost, for tests of everything but the cost.
    const CHEAP: Cost = Cost {
        memory_kib: 64,
        passes: 1,
    };

    fn order(count: u32) -> Order {
        Order {
            id: 7,
            os_user: "alice".into(),
            email: "alice@example.com".into(),
            count,
            now: Timestamp::from_unix_millis(1_000_000),
            valid: Duration::from_secs(86_400),
            by: "admin".into(),
        }
    }

    #[test]
    fn a_set_holds_distinct_codes_shown_in_groups_and_verifiers_only() {
        let issued = OfflineSet::issue(order(5));
        assert_eq!(issued.codes.len(), 5);
        assert_eq!(issued.set.codes.len(), 5);
        for code in &issued.codes {
            assert_eq!(code.len(), 14, "{}", code.as_str());
            assert_eq!(code.matches('-').count(), 2);
        }
        let mut unique: Vec<_> = issued.codes.iter().map(|c| c.as_str()).collect();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 5);
        // Nothing kept holds a code's digits.
        let kept = format!("{:?}", issued.set);
        for code in &issued.codes {
            let digits: String = code.chars().filter(char::is_ascii_digit).collect();
            assert!(!kept.contains(&digits));
        }
        assert_eq!(issued.set.cost, COST);
        assert_eq!(
            issued.set.expires_at,
            Timestamp::from_unix_millis(1_000_000 + 86_400_000)
        );
    }

    #[test]
    fn a_code_is_found_by_its_verifier_and_nothing_else_is() {
        let salt = [9u8; 16];
        let verifiers: Vec<_> = ["111122223333", "444455556666"]
            .iter()
            .map(|code| Some(verifier(code.as_bytes(), &salt, CHEAP)))
            .collect();
        assert_eq!(check("4444-5555-6666", &salt, CHEAP, &verifiers), Some(1));
        assert_eq!(check(" 1111 2222 3333 ", &salt, CHEAP, &verifiers), Some(0));
        assert_eq!(check("111122223334", &salt, CHEAP, &verifiers), None);
        assert_eq!(check("11112222333", &salt, CHEAP, &verifiers), None);
        assert_eq!(check("1111x2222333", &salt, CHEAP, &verifiers), None);
        assert_eq!(check("", &salt, CHEAP, &verifiers), None);
        // Another salt, another verifier.
        assert_eq!(check("111122223333", &[8u8; 16], CHEAP, &verifiers), None);
        // A used code is no code.
        let used = [None, verifiers[1]];
        assert_eq!(check("111122223333", &salt, CHEAP, &used), None);
    }

    #[test]
    fn codes_are_used_once_and_none_are_left_after_expiry() {
        let mut set = OfflineSet::issue(order(2)).set;
        let now = set.issued_at;
        assert_eq!(set.left(now), 2);
        assert!(set.mark_used(1, now));
        assert!(!set.mark_used(1, now), "once");
        assert!(!set.mark_used(2, now), "no such code");
        assert_eq!(set.left(now), 1);
        assert_eq!(set.left(set.expires_at), 0);
    }

    #[test]
    fn a_cost_argon2_refuses_or_beyond_bounds_falls_back_to_ours() {
        let ours = verifier(b"111122223333", &[1; 16], COST);
        for cost in [
            Cost {
                memory_kib: 1,
                passes: 0,
            },
            Cost {
                memory_kib: u32::MAX,
                passes: 1,
            },
            Cost {
                memory_kib: 64,
                passes: 1_000_000,
            },
        ] {
            assert_eq!(verifier(b"111122223333", &[1; 16], cost), ours);
        }
    }
}

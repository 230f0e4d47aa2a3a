//! Join tokens and enrollments as the store keeps them: what lets a client
//! computer ask for its own certificate (`otpgate certs token create`), and
//! what the server issued to each computer that did.
//!
//! A token's secret is never kept: only its SHA-256 (the secret is 32 random
//! bytes, so a fast hash is enough), compared in constant time. The rules of
//! using one are in [`JoinToken::admits`]; the server takes a use under the
//! site's enrollment turn, so that a token's uses and a name's holder are
//! decided one enrollment at a time across every node.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::ComputerId;
use crate::store::record::Record;

/// A join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Its id (the store's), printed in the token and in the lists.
    pub id: u64,
    /// SHA-256 of its secret.
    pub secret_hash: [u8; 32],
    /// When it was made.
    pub created_at: Timestamp,
    /// When it ends.
    pub expires_at: Timestamp,
    /// How many computers may enroll with it.
    pub uses: u32,
    /// How many did.
    pub used: u32,
    /// The client group its computers join.
    pub group: Option<String>,
    /// The names its computers may take (see [`name_matches`]).
    pub name_pattern: Option<String>,
    /// Whether a computer may take a name that another enrolled computer
    /// holds.
    pub replace: bool,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Who made it, as the audit log names them.
    pub created_by: String,
}

impl Record for JoinToken {}

/// Why a token does not admit an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its secret is not the one given (or there is no such token).
    Unknown,
    /// Its time is over.
    Expired,
    /// Every use is spent.
    UsedUp,
    /// It was revoked.
    Revoked,
    /// The name is not one its pattern allows.
    Pattern,
}

impl JoinToken {
    /// Whether the token admits, at `now`, a computer that gives `secret`
    /// and asks for `name`. Only a right secret learns why not otherwise.
    pub fn admits(
        &self,
        secret: &[u8; 32],
        name: &ComputerId,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let hash = secret_hash(secret);
        if aws_lc_rs::constant_time::verify_slices_are_equal(&hash, &self.secret_hash).is_err() {
            return Err(Refusal::Unknown);
        }
        if self.revoked_at.is_some() {
            return Err(Refusal::Revoked);
        }
        if now >= self.expires_at {
            return Err(Refusal::Expired);
        }
        if self.used >= self.uses {
            return Err(Refusal::UsedUp);
        }
        match &self.name_pattern {
            Some(pattern) if !name_matches(pattern, name.as_str()) => Err(Refusal::Pattern),
            _ => Ok(()),
        }
    }
}

/// The SHA-256 of a token's secret.
pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
    crate::digest::sha256(secret)
}

/// Whether `name` matches `pattern`: `*` is any run of characters (none
/// included), `?` any one; case is ignored, as in computer names.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.to_lowercase().chars().collect();
    let name: Vec<char> = name.to_lowercase().chars().collect();
    // Iterative wildcard match: on a mismatch, go back to the last `*` and
    // let it take one more character.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((at, taken)) => {
                    p = at + 1;
                    n = taken + 1;
                    star = Some((at, taken + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// What the server issued to a computer that enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// When it first enrolled (under this name, since it last replaced).
    pub enrolled_at: Timestamp,
    /// The token it enrolled with.
    pub token: u64,
    /// Its certificate's serial number, hex.
    pub serial: String,
    /// When its certificate ends.
    pub expires_at: Timestamp,
    /// The SHA-256 of its certificate's public key (SubjectPublicKeyInfo,
    /// DER): a retry of the same enrollment is told from another computer.
    pub key_hash: [u8; 32],
}

impl Record for Enrollment {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_stars_and_question_marks_ignoring_case() {
        for (pattern, name) in [
            ("ws-*", "ws-0042"),
            ("ws-*", "WS-"),
            ("*", "anything"),
            ("ws-??", "ws-42"),
            ("*-fin-*", "ws-fin-01"),
            ("a*b*c", "aXbYbZc"),
            ("ws-0042", "WS-0042"),
        ] {
            assert!(name_matches(pattern, name), "{pattern} {name}");
        }
        for (pattern, name) in [
            ("ws-*", "db-1"),
            ("ws-??", "ws-421"),
            ("ws-0042", "ws-00421"),
            ("a*b*c", "aXbYbZ"),
            ("", "x"),
        ] {
            assert!(!name_matches(pattern, name), "{pattern} {name}");
        }
    }

    #[test]
    fn a_token_admits_with_its_secret_while_in_time_unused_unrevoked_and_named_as_allowed() {
        let secret = [7u8; 32];
        let now = Timestamp::from_unix_millis(1_000_000);
        let token = JoinToken {
            id: 1,
            secret_hash: secret_hash(&secret),
            created_at: now,
            expires_at: now.after(std::time::Duration::from_secs(60)),
            uses: 2,
            used: 1,
            group: None,
            name_pattern: Some("ws-*".into()),
            replace: false,
            revoked_at: None,
            created_by: "operator".into(),
        };
        let name: ComputerId = "ws-1".parse().unwrap();
        assert_eq!(token.admits(&secret, &name, now), Ok(()));
        assert_eq!(token.admits(&[8; 32], &name, now), Err(Refusal::Unknown));
        let other: ComputerId = "db-1".parse().unwrap();
        assert_eq!(token.admits(&secret, &other, now), Err(Refusal::Pattern));
        let later = now.after(std::time::Duration::from_secs(60));
        assert_eq!(token.admits(&secret, &name, later), Err(Refusal::Expired));
        let spent = JoinToken {
            used: 2,
            ..token.clone()
        };
        assert_eq!(spent.admits(&secret, &name, now), Err(Refusal::UsedUp));
        let revoked = JoinToken {
            revoked_at: Some(now),
            ..token
        };
        assert_eq!(revoked.admits(&secret, &name, now), Err(Refusal::Revoked));
        // A wrong secret learns nothing more, whatever else is wrong.
        assert_eq!(
            revoked.admits(&[8; 32], &other, later),
            Err(Refusal::Unknown)
        );
    }
}

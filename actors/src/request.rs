//! Access requests: a person asks for an OTP and the computer's approvers decide.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::ComputerId;

/// One access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// Unique across the server's life.
    pub id: u64,
    /// The computer asked from.
    pub computer: ComputerId,
    /// The OS user logged in there.
    pub os_user: String,
    /// The address the person gave; the OTP goes there if approved.
    pub email: String,
    /// Whether the person chose "I need emergency access to computer".
    pub emergency: bool,
    /// When it was made.
    pub created: Timestamp,
    /// When it expires unless decided.
    pub expires: Timestamp,
    /// What became of it.
    pub decision: Decision,
}

/// What became of an access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Waiting for an approver.
    Pending,
    /// Approved: an OTP was sent.
    Approve(Resolution),
    /// Denied.
    Deny(Resolution),
    /// Nobody decided in time.
    Expire,
}

/// An approver's choice on an access request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Send the person an OTP.
    Approve,
    /// Refuse.
    Deny,
}

/// Why a person's access request ended without an OTP, as their mail tells it.
/// Stored in the outbox where a `denied` flag once was: keep `Expire` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Nobody decided in time.
    Expire,
    /// An approver denied it.
    Deny,
}

/// Who decided, when, and what they said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The approver's login name.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Their comment, if any.
    pub comment: Option<String>,
}

impl AccessRequest {
    /// Marks it expired if it is still pending at `now` and its time is up; says
    /// whether it just expired.
    pub fn expire_if_due(&mut self, now: Timestamp) -> bool {
        if self.decision == Decision::Pending && now >= self.expires {
            self.decision = Decision::Expire;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pending_request_expires_and_only_once_due() {
        let mut request = AccessRequest {
            id: 1,
            computer: "ws-1".parse().unwrap(),
            os_user: "alice".into(),
            email: "alice@example.com".into(),
            emergency: false,
            created: Timestamp::from_unix_millis(0),
            expires: Timestamp::from_unix_millis(100),
            decision: Decision::Pending,
        };
        assert!(!request.expire_if_due(Timestamp::from_unix_millis(99)));
        assert!(request.expire_if_due(Timestamp::from_unix_millis(100)));
        assert_eq!(request.decision, Decision::Expire);
        assert!(!request.expire_if_due(Timestamp::from_unix_millis(200)));
    }
}

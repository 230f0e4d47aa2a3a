//! The audit log: one entry for every decision, append-only; who acted, typed,
//! and rendered in one place ([`Who`]'s `Display`).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::store::StoreError;
use crate::store::record::{Body, Record, SCHEMA_V1};

/// One audit entry: who did what, on which computer, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub who: Who,
    /// The computer concerned, if any.
    pub computer: Option<String>,
    /// What was done.
    pub action: Action,
    /// How it ended.
    pub outcome: String,
}

/// Who did what an audit entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Who {
    /// The server itself: mail, expiry, its first start.
    Server,
    /// An OS user at a client computer, by the name the agent gave (which
    /// may be one that breaks the rule for names).
    OsUser {
        /// The OS user.
        os_user: String,
        /// The client computer.
        computer: String,
    },
    /// The person of a client session: `<logged in user> (<email>)`.
    Session {
        /// The OS user.
        os_user: String,
        /// Their email address.
        email: String,
    },
    /// An approver or administrator (an internal user's login, a directory
    /// person's account), acting through a computer's actor.
    User {
        /// Their name.
        login: String,
    },
    /// Someone signed in to the web Management Tool (from `address`, when
    /// the entry is their sign-in).
    Web {
        /// The name they signed in with.
        login: String,
        /// Where from.
        address: Option<IpAddr>,
    },
    /// The daemon's own account, on the admin socket.
    Operator {
        /// Its user id, from the socket's peer credentials.
        uid: Option<u32>,
    },
    /// As written before entries were typed (schema 1): the text.
    Recorded(String),
}

impl Who {
    /// Who OS user `os_user` at `computer` is.
    pub fn os_user(os_user: &str, computer: &impl fmt::Display) -> Self {
        Self::OsUser {
            os_user: os_user.to_owned(),
            computer: computer.to_string(),
        }
    }

    /// Whether this is `user`: an OS user, an email address or a login name.
    pub fn names(&self, user: &str) -> bool {
        match self {
            Self::Server | Self::Operator { .. } => false,
            Self::OsUser { os_user, .. } => os_user == user,
            Self::Session { os_user, email } => os_user == user || email.eq_ignore_ascii_case(user),
            Self::User { login } | Self::Web { login, .. } => login == user,
            // People were written `os user@computer`, internal users `user:login`.
            Self::Recorded(text) => {
                text == user
                    || text.strip_prefix("user:") == Some(user)
                    || text
                        .split_once('@')
                        .is_some_and(|(os_user, _)| os_user == user)
            }
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server => f.write_str("server"),
            Self::OsUser { os_user, computer } => write!(f, "{os_user}@{computer}"),
            Self::Session { os_user, email } => write!(f, "{os_user} ({email})"),
            Self::User { login } => write!(f, "user:{login}"),
            Self::Web {
                login,
                address: None,
            } => write!(f, "web({login})"),
            Self::Web {
                login,
                address: Some(address),
            } => write!(f, "web({login}) from {address}"),
            Self::Operator { uid: Some(uid) } => write!(f, "operator(uid {uid})"),
            Self::Operator { uid: None } => f.write_str("operator"),
            Self::Recorded(text) => f.write_str(text),
        }
    }
}

impl Record for AuditEntry {
    /// Since who acted is typed.
    const VERSION: u8 = 2;

    fn upgrade(body: Body<'_>) -> Result<Self, StoreError> {
        match body.version {
            SCHEMA_V1 => {
                let old: AuditEntryV1 = body.decode()?;
                Ok(Self {
                    at: old.at,
                    who: Who::Recorded(old.who),
                    computer: old.computer,
                    action: old.action,
                    outcome: old.outcome,
                })
            }
            _ => Err(body.unknown()),
        }
    }
}

/// An audit entry as stored before who acted was typed; read and upgraded.
#[derive(Deserialize)]
struct AuditEntryV1 {
    at: Timestamp,
    who: String,
    computer: Option<String>,
    action: Action,
    outcome: String,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// A person asked for an OTP.
    Request,
    /// An approver approved an access request.
    Approve,
    /// An approver denied an access request.
    Deny,
    /// An access request or OTP expired.
    Expire,
    /// An administrator generated an OTP without a request.
    Generate,
    /// The live OTP was emailed again.
    Resend,
    /// A typed OTP was checked.
    Verify,
    /// An OTP was locked after too many wrong attempts.
    Lock,
    /// A client session started.
    SessionStart,
    /// A client session ended.
    SessionEnd,
    /// A message was handed to the mail transport.
    Mail,
    /// An administrator changed settings, a client, a group or a user.
    Configure,
    /// A member of a computer's exempt group logged in without an OTP.
    Exempt,
    /// Someone signed in to the web Management Tool, or was refused.
    SignIn,
    /// Something befell a terminal recording (output lost on the client).
    Record,
    /// An administrator made a backup.
    Backup,
    /// The data folder was put back from a backup.
    Restore,
    /// An administrator made or revoked a join token.
    Token,
    /// A client computer enrolled with a join token, or was refused.
    Enroll,
    /// Offline codes were issued or voided.
    Offline,
    /// Someone logged in with an offline code while the server could not be
    /// reached (reported by the agent when it was back).
    OfflineLogin,
}

impl Action {
    /// Its name, as the audit log shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Expire => "expire",
            Self::Generate => "generate",
            Self::Resend => "resend",
            Self::Verify => "verify",
            Self::Lock => "lock",
            Self::SessionStart => "session_start",
            Self::SessionEnd => "session_end",
            Self::Mail => "mail",
            Self::Configure => "configure",
            Self::Exempt => "exempt",
            Self::SignIn => "sign_in",
            Self::Record => "record",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Token => "token",
            Self::Enroll => "enroll",
            Self::Offline => "offline",
            Self::OfflineLogin => "offline_login",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_shown_and_found_as_the_log_always_named_them() {
        let cases = [
            (Who::Server, "server", None),
            (Who::os_user("alice", &"ws-1"), "alice@ws-1", Some("alice")),
            (
                Who::Session {
                    os_user: "alice".into(),
                    email: "alice@example.com".into(),
                },
                "alice (alice@example.com)",
                Some("ALICE@example.com"),
            ),
            (
                Who::User {
                    login: "bob".into(),
                },
                "user:bob",
                Some("bob"),
            ),
            (
                Who::Web {
                    login: "bob".into(),
                    address: Some([127, 0, 0, 1].into()),
                },
                "web(bob) from 127.0.0.1",
                Some("bob"),
            ),
            (Who::Operator { uid: Some(0) }, "operator(uid 0)", None),
            (
                Who::Recorded("user:carol".into()),
                "user:carol",
                Some("carol"),
            ),
            (Who::Recorded("dave@ws-2".into()), "dave@ws-2", Some("dave")),
        ];
        for (who, shown, named) in cases {
            assert_eq!(who.to_string(), shown);
            if let Some(user) = named {
                assert!(who.names(user), "{shown} names {user}");
            }
            assert!(!who.names("nobody"), "{shown}");
        }
    }

    #[test]
    fn an_entry_of_the_first_schema_keeps_its_text() {
        #[derive(Serialize)]
        struct V1 {
            at: Timestamp,
            who: String,
            computer: Option<String>,
            action: Action,
            outcome: String,
        }
        let old = V1 {
            at: Timestamp::from_unix_millis(5),
            who: "operator(uid 0)".into(),
            computer: None,
            action: Action::Configure,
            outcome: "group lab changed".into(),
        };
        let bytes = crate::store::record::encode_as(SCHEMA_V1, &old).unwrap();
        let entry: AuditEntry = crate::store::decode("audit", &bytes).unwrap();
        assert_eq!(entry.who, Who::Recorded("operator(uid 0)".into()));
        assert_eq!(entry.outcome, "group lab changed");
    }
}

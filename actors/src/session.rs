//! Client sessions: a person logged in to a client computer with an OTP.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit::Who;
use crate::clock::Timestamp;
use crate::id::ComputerId;

/// One client session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSession {
    /// Unique across the server's life.
    pub id: u64,
    /// The computer logged in to.
    pub computer: ComputerId,
    /// The OS user logged in.
    pub os_user: String,
    /// The email the OTP was sent to.
    pub email: String,
    /// When the login was allowed.
    pub started: Timestamp,
    /// When the agent last reported it alive.
    pub last_activity: Timestamp,
    /// When and why it ended, once it has.
    pub ended: Option<(Timestamp, SessionEnd)>,
}

/// Why a session ended. A session outlives its agent's connections and the
/// server's restarts; it ends when the person logs out, or when its computer's
/// agent has not been heard from for the session timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEnd {
    /// The person logged out.
    Logout,
    /// Ended by older servers when the agent's connection was lost (kept so
    /// that their records read).
    ConnectionLost,
    /// Ended by older servers when they stopped (kept so that their records
    /// read).
    ServerRestart,
    /// Its computer's agent was not heard from for the session timeout.
    AgentGone,
}

/// The ids of the client sessions of offline logins have this bit set: the
/// agent picks them (at random) while the server cannot be reached, and the
/// server's own ids, counted up from 1024, never come near it.
pub const OFFLINE_SESSION: u64 = 1 << 63;

impl ClientSession {
    /// The Management Tool's User Name: `<logged in user> (<email>)`, and
    /// ` — offline` after it for an offline login's.
    pub fn user_name(&self) -> String {
        if self.offline() {
            format!("{} — offline", self.who())
        } else {
            self.who().to_string()
        }
    }

    /// Whether an offline code let the person in.
    pub fn offline(&self) -> bool {
        self.id & OFFLINE_SESSION != 0
    }

    /// Its person, as the audit log names them.
    pub fn who(&self) -> Who {
        Who::Session {
            os_user: self.os_user.clone(),
            email: self.email.clone(),
        }
    }
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Logout => "logged out",
            Self::ConnectionLost => "connection lost",
            Self::ServerRestart => "server restarted",
            Self::AgentGone => "agent not heard from",
        })
    }
}

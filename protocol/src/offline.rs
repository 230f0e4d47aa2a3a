//! What the agent link carries of offline codes (see the server's
//! `otpgate_actors::offline`): the verifiers an agent keeps to check codes
//! by itself while the server cannot be reached, and the uses it reports
//! when the server is back. No code travels: only verifiers, which the
//! agent keeps root-only.

use serde::{Deserialize, Serialize};

/// One OS user's offline codes on this computer, as the agent keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineCodes {
    /// The set's id, named in a use.
    pub set: u64,
    /// The OS user they let in.
    pub os_user: String,
    /// The salt of every verifier.
    pub salt: [u8; 16],
    /// Argon2id's memory, in KiB.
    pub memory_kib: u32,
    /// Argon2id's passes.
    pub passes: u32,
    /// Each code's verifier, in the order shown; `None` for a code used.
    pub verifiers: Vec<Option<[u8; 32]>>,
    /// When the codes stop working, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// An offline login: code `code` of set `set` let `os_user` in while the
/// server could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineUse {
    /// The set.
    pub set: u64,
    /// The code's place in it.
    pub code: u32,
    /// The OS user let in.
    pub os_user: String,
    /// The PAM service (`sshd`, `login`, ...).
    pub service: String,
    /// When, by the computer's clock, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The client session it started: an id the agent picked at random,
    /// with its top bit set (the server's own never have it).
    pub session: u64,
}

/// What the agent said of an offline code the PAM module asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfflineVerdict {
    /// Right: the person may log in, in client session `session` (the
    /// code is used, the login journaled for the server).
    Allow {
        /// The client session.
        session: u64,
    },
    /// Not a code of this OS user's that is left.
    Wrong,
    /// Too many wrong codes in a row: none is taken until then (or until
    /// the server is reached).
    Locked {
        /// Until when, in milliseconds since the Unix epoch.
        until_ms: u64,
    },
    /// This OS user has no offline codes left on this computer.
    NoCodes,
    /// The agent has not reached the server for longer than it may take
    /// offline codes.
    AwayTooLong {
        /// Since when, in milliseconds since the Unix epoch (0: never).
        since_ms: u64,
    },
    /// The server is reachable: OTPs, not offline codes.
    Online,
    /// The login could not be journaled: refused.
    Unavailable,
    /// The agent's record of its offline codes could not be read: none is
    /// taken until the server is reached again.
    Damaged,
}

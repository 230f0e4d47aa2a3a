//! What a login needs from the directory: the one name of the person an OS
//! account is, and before the actor's turn what a request needs (the
//! requester's address, the approvers a directory group reaches), looked up
//! by a task of its own so that a slow directory holds up only that request.

use crate::directory::{Directory, Recipient, is_directory_name, person_name};
use crate::login::{LoginRequest, RequestMode};
use crate::rules::{self};

use super::{ComputerState, Result};

/// What a request needs from the directory before the actor's turn.
#[derive(Debug, Default)]
pub(super) struct Lookup {
    /// The OS account's email (Active Directory auto-send).
    pub(super) requester: bool,
    /// The approver entries naming directory accounts or groups.
    pub(super) entries: Vec<String>,
}

impl Lookup {
    pub(super) fn is_empty(&self) -> bool {
        !self.requester && self.entries.is_empty()
    }

    /// Asks the directory (each lookup bounded by its timeout).
    pub(super) async fn run(self, directory: &dyn Directory, os_user: &str) -> Found {
        let requester = if self.requester {
            Some(directory.email_of(os_user).await)
        } else {
            None
        };
        let mut recipients = Vec::new();
        for entry in &self.entries {
            match directory.recipients(entry).await {
                Ok(found) => recipients.extend(found.unwrap_or_default()),
                Err(err) => {
                    tracing::warn!(%entry, error = %err, "approvers could not be looked up")
                }
            }
        }
        Found {
            requester,
            recipients,
        }
    }
}

/// What the directory said for a request.
#[derive(Debug, Default)]
pub struct Found {
    /// The OS account's email, if it was looked up.
    pub(super) requester: Option<Result<Option<String>, crate::directory::DirectoryError>>,
    /// Whom the approver entries naming the directory reach.
    pub(super) recipients: Vec<Recipient>,
}

impl ComputerState {
    /// The one name of the person OS account `os_user` is (see
    /// [`person_name`]): one OTP slot and one failure count per person.
    pub(super) fn person(&self, os_user: String) -> String {
        person_name(self.svc.directory.as_ref(), os_user)
    }

    /// What `call` needs from the directory, as the options stand now (they
    /// are read again in the turn that answers it).
    pub(super) fn lookup(&self, call: &LoginRequest) -> Lookup {
        let LoginRequest::Request(mode) = call else {
            return Lookup::default();
        };
        let options = self.svc.policy.snapshot().effective(&self.record);
        match mode {
            RequestMode::Directory => Lookup {
                requester: rules::enabled(mode, &options),
                entries: Vec::new(),
            },
            RequestMode::Email(_) | RequestMode::Emergency(_) if rules::enabled(mode, &options) => {
                Lookup {
                    requester: false,
                    entries: options
                        .approvers
                        .iter()
                        .filter(|entry| is_directory_name(entry))
                        .cloned()
                        .collect(),
                }
            }
            _ => Lookup::default(),
        }
    }
}

//! A computer's offline codes (see [`crate::offline`]): sets kept as an
//! administrator issues them, voided when the computer is revoked, and the
//! offline logins its agent reports, each a client session and an audit
//! entry, its code used on every path from then on.

use crate::audit::{Action, Who};
use crate::clock::Timestamp;
use crate::names::is_os_account;
use crate::offline::{MAX_TOLD, OfflineSet};
use crate::session::OFFLINE_SESSION;

use super::{ComputerState, Result, service_name};

/// An offline login as the agent reports it: code `code` of set `set` let
/// `os_user` in at PAM service `service`, at `at` by the computer's clock,
/// in client session `session` (an id the agent picked, see
/// [`OFFLINE_SESSION`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineLogin {
    /// The set.
    pub set: u64,
    /// The code's place in it.
    pub code: usize,
    /// The OS user let in.
    pub os_user: String,
    /// The PAM service.
    pub service: String,
    /// When.
    pub at: Timestamp,
    /// The client session.
    pub session: u64,
}

impl ComputerState {
    /// Keeps `set`, replacing its OS user's, as `by` issued it.
    pub(super) async fn offline_issue(&mut self, set: OfflineSet, by: &Who) -> Result<()> {
        self.svc.store.put_offline_set(&self.id, &set)?;
        let replaced = self.offline.contains_key(&set.os_user);
        self.audit(
            by,
            Action::Offline,
            &format!(
                "{} offline codes for {} ({}), until {}{}",
                set.codes.len(),
                set.os_user,
                set.email,
                set.expires_at.rfc3339(),
                if replaced {
                    "; the earlier ones are void"
                } else {
                    ""
                }
            ),
        )?;
        self.offline.insert(set.os_user.clone(), set);
        self.commit().await
    }

    /// Voids the offline codes of `os_user` (every OS user's with `None`),
    /// as `by` did; how many sets went.
    pub(super) async fn offline_void(&mut self, os_user: Option<&str>, by: &Who) -> Result<usize> {
        let void: Vec<String> = self
            .offline
            .keys()
            .filter(|user| os_user.is_none_or(|only| only == user.as_str()))
            .cloned()
            .collect();
        for user in &void {
            self.svc.store.remove_offline_set(&self.id, user)?;
            self.offline.remove(user);
            self.audit(
                by,
                Action::Offline,
                &format!("offline codes for {user} void"),
            )?;
        }
        if !void.is_empty() {
            self.commit().await?;
        }
        Ok(void.len())
    }

    /// Takes the offline logins the agent reports (the first [`MAX_TOLD`]),
    /// and answers the sets it is to keep. Each login is a client session
    /// (started when the agent says, shown as offline) and an audit entry,
    /// whatever became of its set since: someone got in, and an
    /// administrator must know. A login reported again (its answer was
    /// lost) is taken once; one that names no OS account, or a session id
    /// of the server's kind, is none.
    pub(super) async fn offline_sync(
        &mut self,
        logins: Vec<OfflineLogin>,
    ) -> Result<Vec<OfflineSet>> {
        let now = self.now();
        let mut changed = false;
        for login in logins.into_iter().take(MAX_TOLD) {
            if login.session & OFFLINE_SESSION == 0 || !is_os_account(&login.os_user) {
                continue;
            }
            let os_user = self.person(login.os_user);
            // By its id: the agent names the OS user as PAM does.
            let set = self
                .offline
                .values_mut()
                .find(|set| set.id == login.set && set.os_user == os_user);
            let told_before = set.as_ref().is_some_and(|set| {
                set.codes
                    .get(login.code)
                    .is_some_and(|code| code.used_at == Some(login.at))
            });
            if told_before
                || self.sessions.contains_key(&login.session)
                || self
                    .svc
                    .store
                    .session(&self.id, login.session)
                    .await?
                    .is_some()
            {
                continue;
            }
            let (email, how) = match set {
                Some(set) => {
                    let fresh = set.mark_used(login.code, login.at);
                    self.svc.store.put_offline_set(&self.id, set)?;
                    let how = if fresh {
                        format!(
                            "with offline code {} of {}",
                            login.code + 1,
                            set.codes.len()
                        )
                    } else {
                        format!("with offline code {}, used before", login.code + 1)
                    };
                    (set.email.clone(), how)
                }
                None => (
                    String::new(),
                    "with an offline code of a set since replaced or void".to_owned(),
                ),
            };
            // Not later than now, whatever the computer's clock said.
            let at = login.at.min(now);
            self.audit(
                &Who::Session {
                    os_user: os_user.clone(),
                    email: email.clone(),
                },
                Action::OfflineLogin,
                &format!(
                    "logged in {how} at {} while the server could not be reached, at {}",
                    service_name(login.service),
                    at.rfc3339()
                ),
            )?;
            self.start_session(login.session, &os_user, &email, at)?;
            changed = true;
        }
        if changed {
            self.commit().await?;
        }
        Ok(self
            .offline
            .values()
            .filter(|set| set.left(now) > 0)
            .cloned()
            .collect())
    }
}

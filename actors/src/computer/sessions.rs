//! Connections and client sessions: last seen, sessions started and ended,
//! and the sweep that expires what is due and sets the next timer.

use std::time::Duration;

use ractor::ActorRef;

use crate::audit::Action;
use crate::clock::Timestamp;
use crate::rules::{self};
use crate::session::{ClientSession, SessionEnd};

use super::{ComputerMsg, ComputerState, ConnectionId, Result, SEEN_WRITE_EVERY};

impl ComputerState {
    /// Records that connection `conn` is alive now: in memory each time, in the
    /// store at most every [`SEEN_WRITE_EVERY`].
    pub(super) fn seen(&mut self, conn: ConnectionId) -> Result<()> {
        let now = self.now();
        self.connections.insert(conn);
        self.record.connected_since.get_or_insert(now);
        self.record.last_seen = now;
        if self
            .last_saved
            .is_some_and(|saved| now < saved.after(SEEN_WRITE_EVERY))
        {
            return Ok(());
        }
        self.last_saved = Some(now);
        for session in self.sessions.values_mut() {
            session.last_activity = now;
            self.svc.store.put_session(session)?;
        }
        self.save_record()
    }

    pub(super) fn save_record(&self) -> Result<()> {
        Ok(self.svc.store.put_computer(&self.id, &self.record)?)
    }

    /// Connection `conn` closed; the computer's sessions go on.
    pub(super) async fn disconnect(&mut self, conn: ConnectionId) -> Result<()> {
        if self.connections.remove(&conn) && self.connections.is_empty() {
            self.record.connected_since = None;
            self.save_record()?;
        }
        self.commit().await
    }

    /// Starts session `id` of `os_user` (`email`), allowed at `started`.
    pub(super) fn start_session(
        &mut self,
        id: u64,
        os_user: &str,
        email: &str,
        started: Timestamp,
    ) -> Result<()> {
        let session = ClientSession {
            id,
            computer: self.id.clone(),
            os_user: os_user.to_owned(),
            email: email.to_owned(),
            started,
            last_activity: self.now(),
            ended: None,
        };
        self.svc.store.put_session(&session)?;
        self.audit(&session.who(), Action::SessionStart, "started")?;
        self.sessions.insert(id, session);
        Ok(())
    }

    /// Ends session `id` at `at`, for `why`.
    pub(super) fn end_session(&mut self, id: u64, at: Timestamp, why: SessionEnd) -> Result<()> {
        if let Some(mut session) = self.sessions.remove(&id) {
            session.ended = Some((at, why));
            self.svc.store.put_session(&session)?;
            self.audit(&session.who(), Action::SessionEnd, &why.to_string())?;
        }
        Ok(())
    }

    /// Expires everything that is due, then sets the timer for what is next.
    /// Flushes only when something changed (`changed` says what the caller
    /// already changed), so that spawning an idle computer costs no fsync.
    pub(super) async fn sweep(
        &mut self,
        myself: &ActorRef<ComputerMsg>,
        changed: bool,
    ) -> Result<()> {
        let now = self.now();
        let snapshot = self.svc.policy.snapshot();
        let mut effects = Vec::new();
        let expired = self.logins.expire_all_due(&self.id, now, &mut effects);
        if expired {
            self.apply(&snapshot.settings, effects).await?;
        }
        let gone: Vec<(u64, Timestamp)> = self
            .sessions
            .values()
            .map(|session| {
                (
                    session.id,
                    rules::session_ends_at(session, &snapshot.settings),
                )
            })
            .filter(|&(_, ends)| ends <= now)
            .collect();
        for &(id, at) in &gone {
            self.end_session(id, at, SessionEnd::AgentGone)?;
        }
        if changed || expired || !gone.is_empty() {
            self.commit().await?;
        }
        self.schedule(myself);
        Ok(())
    }

    /// Sets the timer for the next OTP or request that will expire, or session
    /// whose agent will have been gone too long.
    pub(super) fn schedule(&mut self, myself: &ActorRef<ComputerMsg>) {
        let snapshot = self.svc.policy.snapshot();
        let sessions = self
            .sessions
            .values()
            .map(|session| rules::session_ends_at(session, &snapshot.settings));
        match self.logins.next_expiry().into_iter().chain(sessions).min() {
            Some(next) => {
                let wait = next.unix_millis().saturating_sub(self.now().unix_millis());
                let wait = Duration::from_millis(wait);
                self.timer.set(myself, wait, || ComputerMsg::Sweep);
            }
            None => self.timer.cancel(),
        }
    }
}

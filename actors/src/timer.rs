//! An actor's one-shot timer: at most one pending message to itself, replaced
//! when set again and cancelled when the timer (with the actor's state) drops.

use std::time::Duration;

use ractor::{ActorRef, Message, MessagingErr};
use tokio::task::JoinHandle;

/// A pending `send_after` of an actor to itself.
pub struct Timer<M: Message>(Option<JoinHandle<Result<(), MessagingErr<M>>>>);

impl<M: Message> Timer<M> {
    /// No message pending.
    pub fn idle() -> Self {
        Self(None)
    }

    /// Sends what `message` makes to `actor` after `after`, replacing any pending one.
    pub fn set<F>(&mut self, actor: &ActorRef<M>, after: Duration, message: F)
    where
        F: FnOnce() -> M + Send + 'static,
    {
        self.cancel();
        self.0 = Some(actor.send_after(after, message));
    }

    /// Drops the pending message, if any.
    pub fn cancel(&mut self) {
        if let Some(pending) = self.0.take() {
            pending.abort();
        }
    }
}

impl<M: Message> Drop for Timer<M> {
    fn drop(&mut self) {
        self.cancel();
    }
}

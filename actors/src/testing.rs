//! Helpers for this crate's unit tests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::clock::{ManualClock, Timestamp};
use crate::computer::Services;
use crate::directory::{Directory, DirectoryFuture};
use crate::mail::{MailKind, OutboxEntry};
use crate::otp::OtpKeys;
use crate::policy;
use crate::request::Refusal;
use crate::store::{KvStore, Store};

/// A directory that knows the accounts it is given.
pub struct MapDirectory(pub HashMap<String, String>);

impl Directory for MapDirectory {
    fn email_of<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<String>> {
        Box::pin(async move { Ok(self.0.get(account).cloned()) })
    }
}

/// Services on a fresh store in `dir`, with a manual clock, no mailer, and a
/// directory that knows alice.
pub async fn services(dir: &Path) -> (Arc<Services>, ManualClock) {
    services_with(
        dir,
        Arc::new(MapDirectory(HashMap::from([(
            "alice".to_owned(),
            "alice@example.com".to_owned(),
        )]))),
    )
    .await
}

/// [`services`] with `directory`.
pub async fn services_with(
    dir: &Path,
    directory: Arc<dyn Directory>,
) -> (Arc<Services>, ManualClock) {
    services_over(Arc::new(KvStore::open(dir).unwrap()), directory).await
}

/// [`services_with`] over `store`.
pub async fn services_over(
    store: Arc<dyn Store>,
    directory: Arc<dyn Directory>,
) -> (Arc<Services>, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    let services = Services {
        policy: policy::Owner::load(Arc::clone(&store)).await.unwrap(),
        store,
        clock: Arc::new(clock.clone()),
        keys: Arc::new(OtpKeys::derive(&[3; 32])),
        directory,
        mailer: None,
    };
    (Arc::new(services), clock)
}

/// A queued notice (an expired request) to `user<id>@example.com`, due `now`.
pub fn outcome_entry(id: u64, now: Timestamp) -> OutboxEntry {
    OutboxEntry {
        id,
        to: format!("user{id}@example.com"),
        queued: now,
        kind: MailKind::Outcome {
            computer: "ws-1".parse().unwrap(),
            refusal: Refusal::Expire,
            comment: None,
        },
        request: None,
        attempts: 0,
        next_try: now,
    }
}

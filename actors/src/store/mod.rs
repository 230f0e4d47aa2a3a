//! Persistence: the [`Store`] trait the actors keep their state in, and its
//! implementation, [`KvStore`], over one sled database (the embedded
//! default) or PostgreSQL ([`postgres`]).
//!
//! One table per concern ([`table`]). Records are bincode behind a one-byte
//! schema version ([`record`]), so a later release can tell an old record from
//! a new one and upgrade it as it reads it.
//!
//! Records of one computer are keyed `computer \0 rest`, so that its actor loads
//! them with one prefix scan; ids are big-endian or zero-padded so that keys sort
//! in creation order.
//!
//! Writes are not durable until [`Store::flush`] returns; sled also flushes by
//! itself every [`FLUSH_EVERY_MS`] milliseconds. sled recovers a prefix of its
//! log, so a write that survived a crash implies every earlier write did; in
//! PostgreSQL the writes of a flush are one transaction.

mod computers;
pub mod copy;
mod flusher;
mod keys;
mod kv;
mod postgres;
mod prune;
pub mod record;
mod side;
mod site_copy;
mod table;
#[cfg(test)]
mod tests;
mod turn;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::directory::UserRecord;
use crate::enroll::{Enrollment, JoinToken};
use crate::id::ComputerId;
use crate::mail::outbox::{MailFailure, OutboxEntry};
use crate::offline::OfflineSet;
use crate::otp::Slot;
use crate::request::AccessRequest;
use crate::rules::{Bucket, Failure};
use crate::session::ClientSession;
use crate::settings::{GroupRecord, SystemSettings};

pub use computers::ComputerRecord;
pub use copy::Snapshot;
pub use kv::{FLUSH_EVERY_MS, KvStore, open_sled};
pub use postgres::{Alone, Exclusive, PgConfig, Probe, Schema, Site, Taken};
pub use record::{Record, decode, encode};
pub use side::{Pairs, REVOCATIONS, SIDE_TABLES, SideDb, SideTable, SideWrite, WEB_SESSIONS};
pub use site_copy::Copied;
pub use table::Order;
pub use turn::{Owner, turn};

/// Why the store could not read or write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database error")]
    Database(#[from] sled::Error),
    /// PostgreSQL failed, or refused.
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// PostgreSQL cannot be reached now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The PostgreSQL database is served by otpgate servers (for a copy
    /// into it), or being copied into (for a server).
    #[error("the database is in use: servers serve it, or a site is being copied into it")]
    Taken,
    /// Another node took the computer whose writes these were (see
    /// [`turn`]): they were left out.
    #[error("another otpgate server took computer {0}")]
    Fenced(ComputerId),
    /// How to reach PostgreSQL is not right.
    #[error("database configuration: {0}")]
    Config(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {tree}")]
    Corrupt {
        /// The tree the record is in.
        tree: &'static str,
        /// What the decoder said.
        #[source]
        source: bincode::error::DecodeError,
    },
    /// A stored record has a schema version this build does not know.
    #[error("record in {tree} has unknown schema version {version}")]
    UnknownSchema {
        /// The tree the record is in.
        tree: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// A record could not be encoded.
    #[error("record could not be encoded")]
    Encode(#[from] bincode::error::EncodeError),
    /// A key that this build cannot have written.
    #[error("unreadable key in {tree}")]
    BadKey {
        /// The tree the key is in.
        tree: &'static str,
    },
    /// The thread flushing the database stopped before it finished.
    #[error("flush aborted")]
    FlushAborted,
    /// A file kept beside a database could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What another node changed, as this one hears of it (see
/// [`Store::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The System Settings, a client group or an internal user.
    Policy,
    /// A computer's certificates were revoked.
    Revocations,
    /// Mail was queued.
    Outbox,
    /// A computer's offline codes changed.
    Offline(ComputerId),
    /// This node did not hear for a while: anything may have changed.
    Missed,
}

/// Records read in order from a cursor, each with its own key: the cursor
/// that the next batch starts after.
pub type Batch<T> = Vec<(Vec<u8>, T)>;

/// Records read in order from a cursor, one at a time, each with its key.
pub type Records<'a, T> = Box<dyn Iterator<Item = Result<(Vec<u8>, T)>> + Send + 'a>;

/// How many records a reader of a whole list asks for at a time.
pub const BATCH: usize = 256;

/// A future returned by the store, boxed so that `Store` can be a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where the actors keep their state. Reads are asynchronous (a database
/// server may be asked); writes are taken at once and become durable once
/// [`Store::flush`] has returned. Each computer's records are written only by
/// its actor. Lists are read in batches of at most `limit` records after a
/// cursor (`None`: from the start), each with its key, the next cursor.
pub trait Store: Send + Sync + 'static {
    /// Takes computer `computer` for this node, from any other that held it
    /// (see [`turn`]): what that one committed is read after this.
    fn own<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Owner>;
    /// Whether a commit left out writes made in a turn of `owner`'s: another
    /// node took its computer since.
    fn fenced_out(&self, owner: &Owner) -> bool;
    /// What other nodes change from now on; `None` where no other node can
    /// use the store (sled).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>>;
    /// This node's turn at `what`, once no other node over the database
    /// has it: held until dropped (at once, where no other node can use the
    /// store).
    fn alone(&self, what: Alone) -> StoreFuture<'_, Exclusive>;
    /// Whether this node is the one that sends the outbox's mail now (one
    /// node at a time; taken now if none is): always, where no other node
    /// can use the store (sled).
    fn sender(&self) -> StoreFuture<'_, bool>;
    /// A new id, unique across the life of the database.
    fn next_id(&self) -> StoreFuture<'_, u64>;
    /// Makes every write made so far durable. Concurrent callers share one flush.
    fn flush(&self) -> StoreFuture<'_, ()>;

    /// The System Settings (the defaults until someone changes them).
    fn settings(&self) -> StoreFuture<'_, SystemSettings>;
    /// Replaces the System Settings.
    fn put_settings(&self, settings: &SystemSettings) -> Result<()>;

    /// The record of computer `id`, if it was ever seen.
    fn computer<'a>(&'a self, id: &'a ComputerId) -> StoreFuture<'a, Option<ComputerRecord>>;
    /// Replaces the record of computer `id`.
    fn put_computer(&self, id: &ComputerId, record: &ComputerRecord) -> Result<()>;
    /// The computers after cursor `after`, in name order.
    fn computers_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<(ComputerId, ComputerRecord)>>;

    /// Replaces client group `name`.
    fn put_group(&self, name: &str, group: &GroupRecord) -> Result<()>;
    /// Every client group.
    fn groups(&self) -> StoreFuture<'_, Vec<(String, GroupRecord)>>;

    /// Replaces internal user `login`.
    fn put_user(&self, user: &UserRecord) -> Result<()>;
    /// Every internal user.
    fn users(&self) -> StoreFuture<'_, Vec<UserRecord>>;

    /// Client session `id` of computer `computer`, if there is one.
    fn session<'a>(
        &'a self,
        computer: &'a ComputerId,
        id: u64,
    ) -> StoreFuture<'a, Option<ClientSession>>;

    /// Computer `computer`'s offline code sets, one per OS user.
    fn offline_sets<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<OfflineSet>>;

    /// Every computer's offline code sets, in key order after cursor
    /// `after`.
    fn offline_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<(ComputerId, OfflineSet)>>;

    /// Keeps `set` as the offline codes of its OS user on `computer`,
    /// replacing theirs.
    fn put_offline_set(&self, computer: &ComputerId, set: &OfflineSet) -> Result<()>;

    /// Forgets the offline codes of `os_user` on `computer`.
    fn remove_offline_set(&self, computer: &ComputerId, os_user: &str) -> Result<()>;

    /// Every OTP slot of computer `computer`, by OS user.
    fn slots<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<(String, Slot)>>;
    /// Replaces the OTP slot of `computer` and `os_user`.
    fn put_slot(&self, computer: &ComputerId, os_user: &str, slot: &Slot) -> Result<()>;
    /// The OTP slots after cursor `after`: `(computer, os_user, slot)`.
    fn slots_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<(ComputerId, String, Slot)>>;
    /// Every OTP slot: `(computer, os_user, slot)`.
    fn every_slot(&self) -> StoreFuture<'_, Vec<(ComputerId, String, Slot)>> {
        Box::pin(all(|after| self.slots_from(after, BATCH)))
    }
    /// Records that a mail of the OTP of `computer` and `os_user` valid until
    /// `valid_until` has left the outbox (delivered, or given up and listed).
    fn put_mailed(
        &self,
        computer: &ComputerId,
        os_user: &str,
        valid_until: Timestamp,
    ) -> Result<()>;
    /// The validity end of the OTP of `computer` and `os_user` whose mail last
    /// left the outbox.
    fn mailed<'a>(
        &'a self,
        computer: &'a ComputerId,
        os_user: &'a str,
    ) -> StoreFuture<'a, Option<Timestamp>>;

    /// Every access request of `computer`, oldest first.
    fn requests_of<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<AccessRequest>>;
    /// The access requests after cursor `after`, by computer then age.
    fn requests_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<AccessRequest>>;
    /// Access request `id`, found by its id.
    fn request(&self, id: u64) -> StoreFuture<'_, Option<AccessRequest>>;
    /// Replaces an access request.
    fn put_request(&self, request: &AccessRequest) -> Result<()>;

    /// Every client session of `computer`, oldest first.
    fn sessions_of<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<ClientSession>>;
    /// The client sessions after cursor `after`, by computer then age.
    fn sessions_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<ClientSession>>;
    /// Replaces a client session.
    fn put_session(&self, session: &ClientSession) -> Result<()>;

    /// Appends an entry to the audit log.
    fn append_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The audit entries before cursor `before`, newest first.
    fn audit_from(
        &self,
        before: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<AuditEntry>>;

    /// Adds or replaces a join token.
    fn put_token(&self, token: &JoinToken) -> Result<()>;
    /// Join token `id`.
    fn token(&self, id: u64) -> StoreFuture<'_, Option<JoinToken>>;
    /// The join tokens before cursor `before`, newest first.
    fn tokens_from(
        &self,
        before: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<JoinToken>>;
    /// Records what computer `computer` was issued when it enrolled.
    fn put_enrollment(&self, computer: &ComputerId, enrollment: &Enrollment) -> Result<()>;
    /// What computer `computer` was issued when it enrolled, if it did.
    fn enrollment<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Option<Enrollment>>;
    /// The enrolled computers after cursor `after`, by name, each keyed by
    /// its name.
    fn enrollments_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<Enrollment>>;

    /// Queues a message.
    fn queue_mail(&self, entry: &OutboxEntry) -> Result<()>;
    /// The queued messages after cursor `after`, oldest first.
    fn outbox_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<OutboxEntry>>;
    /// Every queued message, oldest first.
    fn outbox(&self) -> StoreFuture<'_, Vec<OutboxEntry>> {
        Box::pin(all(|after| self.outbox_from(after, BATCH)))
    }
    /// Removes a delivered message.
    fn remove_outbox(&self, id: u64) -> Result<()>;
    /// Records a message given up on.
    fn put_mail_failure(&self, failure: &MailFailure) -> Result<()>;
    /// Every message given up on, oldest first.
    fn mail_failures(&self) -> StoreFuture<'_, Vec<MailFailure>> {
        Box::pin(all(|after| self.mail_failures_from(after, BATCH)))
    }
    /// The messages given up on after cursor `after`, oldest first.
    fn mail_failures_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<MailFailure>>;

    /// Counts `failure` against `key`: replaces its bucket with the bucket
    /// that counts it, atomically, so that concurrent failures (one account
    /// tried from many computers) are never lost.
    fn count_failure(&self, key: &str, failure: Failure) -> Result<()>;
    /// The failures counted against each of `keys`, as last written.
    fn failures<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Vec<Bucket>>;

    /// Removes what is over and older than `cutoff` (audit entries, ended
    /// sessions, decided or expired requests, messages given up on), the
    /// failure buckets that `window` has drained by `now`, and the records of
    /// mail sent for OTPs that have expired. Returns how many records went.
    fn prune(&self, cutoff: Timestamp, now: Timestamp, window: Duration) -> StoreFuture<'_, usize>;
}

/// Every record of a list that `read` returns a batch at a time (after the
/// cursor it is given), in order.
pub async fn all<'a, T>(
    read: impl Fn(Option<Vec<u8>>) -> StoreFuture<'a, Batch<T>>,
) -> Result<Vec<T>> {
    Ok(all_keyed(read)
        .await?
        .into_iter()
        .map(|(_, record)| record)
        .collect())
}

/// [`all`], each record with its key.
pub async fn all_keyed<'a, T>(
    read: impl Fn(Option<Vec<u8>>) -> StoreFuture<'a, Batch<T>>,
) -> Result<Batch<T>> {
    let mut records: Batch<T> = Vec::new();
    loop {
        let after = records.last().map(|(key, _)| key.clone());
        let batch = read(after).await?;
        let full = batch.len() >= BATCH;
        records.extend(batch);
        if !full {
            return Ok(records);
        }
    }
}

/// The records kept in their first schema: nothing to upgrade yet.
impl Record for AccessRequest {}
impl Record for Bucket {}
impl Record for ClientSession {}
impl Record for ComputerId {}
impl Record for MailFailure {}
impl Record for OutboxEntry {}
impl Record for Slot {}
impl Record for Timestamp {}

//! Persistence: the [`Store`] trait the actors keep their state in, and its sled
//! implementation, [`SledStore`].
//!
//! One tree per concern. Records are bincode behind a one-byte schema version, so
//! a later release can tell an old record from a new one and migrate it:
//!
//! ```text
//! +-------------------+------------------------+
//! | schema version u8 | bincode-encoded record |
//! +-------------------+------------------------+
//! ```
//!
//! Records of one computer are keyed `computer \0 rest`, so that its actor loads
//! them with one prefix scan; ids are big-endian or zero-padded so that keys sort
//! in creation order.
//!
//! Writes are not durable until [`Store::flush`] returns; sled also flushes by
//! itself every [`FLUSH_EVERY_MS`] milliseconds. sled recovers a prefix of its
//! log, so a write that survived a crash implies every earlier write did.

use std::future::Future;
use std::ops::Bound;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::directory::{UserRecord, UserRecordV1, UserRecordV2};
use crate::id::ComputerId;
use crate::mail::outbox::{MailFailure, OutboxEntry};
use crate::otp::Slot;
use crate::request::{AccessRequest, Decision};
use crate::rules::Bucket;
use crate::session::ClientSession;
use crate::settings::{
    GroupRecord, GroupRecordV1, Options, OptionsV1, SystemSettings, SystemSettingsV1,
    SystemSettingsV2,
};

/// How often sled writes its buffers to disk without being asked.
pub const FLUSH_EVERY_MS: u64 = 500;

/// The schema version written in front of every record.
const SCHEMA_V1: u8 = 1;
/// The schema version of the System Settings when they gained the failure
/// window and the resend gap; read and upgraded, as version 1 is.
const SETTINGS_V2: u8 = 2;
/// The schema version of the System Settings since they gained the cap on new
/// OTPs per computer and the session timeout.
const SETTINGS_V3: u8 = 3;
/// The schema version of internal users when they gained the flag of a
/// password change due; read and upgraded.
const USERS_V2: u8 = 2;
/// The schema version of internal users since they can be disabled.
const USERS_V3: u8 = 3;
/// The schema version of computers and groups since their options hold
/// `record_input`; version 1 is read and upgraded.
const OPTIONS_V2: u8 = 2;
/// The schema version of computers since they hold their agent's protocol
/// version; versions 1 and 2 are read and upgraded.
const COMPUTERS_V3: u8 = 3;

/// What the server remembers of one client computer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerRecord {
    /// When this computer's agent first connected.
    pub first_seen: Timestamp,
    /// When the current run of connections began; `None` while no agent is connected.
    pub connected_since: Option<Timestamp>,
    /// When the agent was last heard from.
    pub last_seen: Timestamp,
    /// The host name the agent reported, for the operator's eyes.
    pub host_name: String,
    /// The agent's software version, for the operator's eyes.
    pub agent_version: String,
    /// The client group it belongs to, if any.
    pub group: Option<String>,
    /// Its own options, over its group's.
    pub options: Options,
    /// The agent link version its agent last spoke, for the operator's eyes
    /// (`None` before a connection recorded it).
    pub protocol: Option<u8>,
}

/// A computer as stored before [`ComputerRecord::protocol`]; read and upgraded.
#[derive(Deserialize)]
struct ComputerRecordV2 {
    first_seen: Timestamp,
    connected_since: Option<Timestamp>,
    last_seen: Timestamp,
    host_name: String,
    agent_version: String,
    group: Option<String>,
    options: Options,
}

impl From<ComputerRecordV2> for ComputerRecord {
    fn from(old: ComputerRecordV2) -> Self {
        Self {
            first_seen: old.first_seen,
            connected_since: old.connected_since,
            last_seen: old.last_seen,
            host_name: old.host_name,
            agent_version: old.agent_version,
            group: old.group,
            options: old.options,
            protocol: None,
        }
    }
}

/// A computer as stored before [`Options::record_input`]; read and upgraded.
#[derive(Deserialize)]
struct ComputerRecordV1 {
    first_seen: Timestamp,
    connected_since: Option<Timestamp>,
    last_seen: Timestamp,
    host_name: String,
    agent_version: String,
    group: Option<String>,
    options: OptionsV1,
}

impl From<ComputerRecordV1> for ComputerRecord {
    fn from(old: ComputerRecordV1) -> Self {
        ComputerRecordV2 {
            first_seen: old.first_seen,
            connected_since: old.connected_since,
            last_seen: old.last_seen,
            host_name: old.host_name,
            agent_version: old.agent_version,
            group: old.group,
            options: old.options.into(),
        }
        .into()
    }
}

/// A computer as stored in any schema, upgraded.
fn computer_record(tree: &'static str, bytes: &[u8]) -> Result<ComputerRecord> {
    match split_version(tree, bytes)? {
        (COMPUTERS_V3, body) => decode_body(tree, body),
        (OPTIONS_V2, body) => Ok(decode_body::<ComputerRecordV2>(tree, body)?.into()),
        (SCHEMA_V1, body) => Ok(decode_body::<ComputerRecordV1>(tree, body)?.into()),
        (version, _) => Err(StoreError::UnknownSchema { tree, version }),
    }
}

/// Why the store could not read or write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("database error")]
    Database(#[from] sled::Error),
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
}

/// Records read in order from a cursor, each with its own key: the cursor
/// that the next page starts after.
pub type Records<'a, T> = Box<dyn Iterator<Item = Result<(Vec<u8>, T)>> + Send + 'a>;

/// Every OTP slot with its computer and OS user, read in key order.
pub type SlotRecords<'a> = Box<dyn Iterator<Item = Result<(ComputerId, String, Slot)>> + Send + 'a>;

/// A future returned by the store, boxed so that `Store` can be a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where the actors keep their state. Writes become durable once [`Store::flush`]
/// has returned. Each computer's records are written only by its actor.
pub trait Store: Send + Sync + 'static {
    /// A new id, unique across the life of the database.
    fn next_id(&self) -> Result<u64>;
    /// Makes every write made so far durable. Concurrent callers share one flush.
    fn flush(&self) -> StoreFuture<'_, ()>;

    /// The System Settings (the defaults until someone changes them).
    fn settings(&self) -> Result<SystemSettings>;
    /// Replaces the System Settings.
    fn put_settings(&self, settings: &SystemSettings) -> Result<()>;

    /// The record of computer `id`, if it was ever seen.
    fn computer(&self, id: &ComputerId) -> Result<Option<ComputerRecord>>;
    /// Replaces the record of computer `id`.
    fn put_computer(&self, id: &ComputerId, record: &ComputerRecord) -> Result<()>;
    /// The computers after cursor `after`, in name order.
    fn computers_from(&self, after: Option<&[u8]>) -> Records<'_, (ComputerId, ComputerRecord)>;

    /// Replaces client group `name`.
    fn put_group(&self, name: &str, group: &GroupRecord) -> Result<()>;
    /// Every client group.
    fn groups(&self) -> Result<Vec<(String, GroupRecord)>>;

    /// Replaces internal user `login`.
    fn put_user(&self, user: &UserRecord) -> Result<()>;
    /// Every internal user.
    fn users(&self) -> Result<Vec<UserRecord>>;

    /// Every OTP slot of computer `computer`, by OS user.
    fn slots(&self, computer: &ComputerId) -> Result<Vec<(String, Slot)>>;
    /// Replaces the OTP slot of `computer` and `os_user`.
    fn put_slot(&self, computer: &ComputerId, os_user: &str, slot: &Slot) -> Result<()>;
    /// Every OTP slot of every computer: `(computer, os_user, slot)`.
    fn every_slot(&self) -> SlotRecords<'_>;
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
    fn mailed(&self, computer: &ComputerId, os_user: &str) -> Result<Option<Timestamp>>;

    /// Every access request of `computer`, oldest first.
    fn requests_of(&self, computer: &ComputerId) -> Result<Vec<AccessRequest>>;
    /// The access requests after cursor `after`, by computer then age.
    fn requests_from(&self, after: Option<&[u8]>) -> Records<'_, AccessRequest>;
    /// Access request `id`, found by its id.
    fn request(&self, id: u64) -> Result<Option<AccessRequest>>;
    /// Replaces an access request.
    fn put_request(&self, request: &AccessRequest) -> Result<()>;

    /// Every client session of `computer`, oldest first.
    fn sessions_of(&self, computer: &ComputerId) -> Result<Vec<ClientSession>>;
    /// The client sessions after cursor `after`, by computer then age.
    fn sessions_from(&self, after: Option<&[u8]>) -> Records<'_, ClientSession>;
    /// Replaces a client session.
    fn put_session(&self, session: &ClientSession) -> Result<()>;

    /// Appends an entry to the audit log.
    fn append_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The audit entries before cursor `before`, newest first.
    fn audit_from(&self, before: Option<&[u8]>) -> Records<'_, AuditEntry>;

    /// Queues a message.
    fn queue_mail(&self, entry: &OutboxEntry) -> Result<()>;
    /// Every queued message, oldest first.
    fn outbox(&self) -> Result<Vec<OutboxEntry>>;
    /// The queued messages after cursor `after`, oldest first.
    fn outbox_from(&self, after: Option<&[u8]>) -> Records<'_, OutboxEntry>;
    /// Removes a delivered message.
    fn remove_outbox(&self, id: u64) -> Result<()>;
    /// Records a message given up on.
    fn put_mail_failure(&self, failure: &MailFailure) -> Result<()>;
    /// Every message given up on, oldest first.
    fn mail_failures(&self) -> Result<Vec<MailFailure>>;
    /// The messages given up on after cursor `after`, oldest first.
    fn mail_failures_from(&self, after: Option<&[u8]>) -> Records<'_, MailFailure>;

    /// Counts one failure against `key`: replaces its bucket with `fail` of it,
    /// atomically, so that concurrent failures (one account tried from many
    /// computers) are never lost.
    fn count_failure(&self, key: &str, fail: &(dyn Fn(Bucket) -> Bucket + Sync)) -> Result<()>;
    /// The failures counted against `key`, as last written.
    fn failures(&self, key: &str) -> Result<Bucket>;

    /// Removes what is over and older than `cutoff` (audit entries, ended
    /// sessions, decided or expired requests, messages given up on), the
    /// failure buckets that `window` has drained by `now`, and the records of
    /// mail sent for OTPs that have expired. Returns how many records went.
    fn prune(&self, cutoff: Timestamp, now: Timestamp, window: Duration) -> Result<usize>;
}

/// One sled tree of one kind of record.
#[derive(Clone)]
struct Table {
    name: &'static str,
    tree: sled::Tree,
}

impl Table {
    fn open(db: &sled::Db, name: &'static str) -> Result<Self> {
        Ok(Self {
            name,
            tree: db.open_tree(name)?,
        })
    }

    fn get<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        self.tree
            .get(key)?
            .map(|bytes| decode(self.name, &bytes))
            .transpose()
    }

    fn put<T: Serialize>(&self, key: impl AsRef<[u8]>, record: &T) -> Result<()> {
        self.tree.insert(key.as_ref(), encode(record)?)?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<(Vec<u8>, T)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|item| {
                let (key, value) = item?;
                Ok((key.to_vec(), decode(self.name, &value)?))
            })
            .collect()
    }

    /// The records after `after` in key order, or, `newest_first`, before it in
    /// reverse order.
    fn from<T: DeserializeOwned + 'static>(
        &self,
        cursor: Option<&[u8]>,
        newest_first: bool,
    ) -> Records<'static, T> {
        let name = self.name;
        let range: sled::Iter = match (cursor, newest_first) {
            (Some(after), false) => self
                .tree
                .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded)),
            (Some(before), true) => self.tree.range::<&[u8], _>(..before),
            (None, _) => self.tree.iter(),
        };
        let decode_one = move |item: sled::Result<(sled::IVec, sled::IVec)>| {
            let (key, value) = item?;
            Ok((key.to_vec(), decode(name, &value)?))
        };
        if newest_first {
            Box::new(range.rev().map(decode_one))
        } else {
            Box::new(range.map(decode_one))
        }
    }

    /// Removes every record for which `remove` says so; how many went.
    fn remove_where<T: DeserializeOwned + 'static>(
        &self,
        remove: impl Fn(&T) -> bool,
    ) -> Result<usize> {
        let mut removed = 0;
        for item in self.from::<T>(None, false) {
            let (key, record) = item?;
            if remove(&record) {
                self.tree.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn values<T: DeserializeOwned>(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<T>> {
        Ok(self.scan(prefix)?.into_iter().map(|(_, v)| v).collect())
    }
}

/// Group commit over sled's flush. sled 0.34 runs each `flush_async` on its
/// own thread pool, where many at once can take every thread and deadlock
/// waiting for the log write that needs one; so one flush runs at a time, on
/// tokio's blocking pool (leaving sled's pool to sled's own I/O), and callers that
/// arrive while it runs share the next one.
#[derive(Default)]
struct Flusher {
    /// Taken by each caller after its writes.
    tickets: AtomicU64,
    /// Held while flushing; holds the last ticket made durable.
    durable: tokio::sync::Mutex<u64>,
}

impl Flusher {
    async fn flush(&self, db: &sled::Db) -> Result<()> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut durable = self.durable.lock().await;
        if *durable >= ticket {
            // A flush that began after this caller's writes has finished.
            return Ok(());
        }
        // Every ticket up to here was taken after its writes, so this flush
        // covers them all.
        let covered = self.tickets.load(Ordering::SeqCst);
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|_| StoreError::FlushAborted)??;
        *durable = covered;
        Ok(())
    }
}

/// The embedded store: one sled database in the data folder.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    flusher: Arc<Flusher>,
    meta: Table,
    computers: Table,
    groups: Table,
    users: Table,
    otps: Table,
    /// Computer and OS user -> the validity end of the OTP whose mail last left
    /// the outbox: what the mailer checks at start (see `Mailer`).
    mailed: Table,
    requests: Table,
    /// Access request id -> its computer, so that a request is found by id.
    request_index: Table,
    sessions: Table,
    audit: Table,
    outbox: Table,
    mail_failures: Table,
    failures: Table,
}

impl SledStore {
    /// Opens (or creates) the database in folder `path`. Fails if another process
    /// holds it open.
    pub fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()?;
        // Fixed-window failure counts of older builds: short-lived, and unlike
        // the buckets that replaced them.
        db.drop_tree("failures")?;
        let store = Self {
            flusher: Arc::default(),
            meta: Table::open(&db, "meta")?,
            computers: Table::open(&db, "computers")?,
            groups: Table::open(&db, "groups")?,
            users: Table::open(&db, "users")?,
            otps: Table::open(&db, "otps")?,
            mailed: Table::open(&db, "mailed")?,
            requests: Table::open(&db, "requests")?,
            request_index: Table::open(&db, "request_index")?,
            sessions: Table::open(&db, "sessions")?,
            audit: Table::open(&db, "audit")?,
            outbox: Table::open(&db, "outbox")?,
            mail_failures: Table::open(&db, "mail_failures")?,
            failures: Table::open(&db, "failure_buckets")?,
            db,
        };
        store.index_requests()?;
        Ok(store)
    }

    /// Indexes requests written before the index existed (once: a store whose
    /// index has entries is up to date, as every request is indexed when put).
    fn index_requests(&self) -> Result<()> {
        if !self.request_index.tree.is_empty() {
            return Ok(());
        }
        for request in self.requests_from(None) {
            let (_, request) = request?;
            self.request_index
                .put(request.id.to_be_bytes(), &request.computer)?;
        }
        Ok(())
    }
}

/// The key of a computer's record `rest`: `computer \0 rest`.
fn scoped(computer: &ComputerId, rest: &str) -> Vec<u8> {
    let mut key = prefix(computer);
    key.extend_from_slice(rest.as_bytes());
    key
}

fn prefix(computer: &ComputerId) -> Vec<u8> {
    let mut key = computer.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

/// A numeric id as a key part that sorts in numeric order.
fn ordered(id: u64) -> String {
    format!("{id:020}")
}

impl Store for SledStore {
    fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.flusher.flush(&self.db))
    }

    fn settings(&self) -> Result<SystemSettings> {
        let tree = self.meta.name;
        let Some(bytes) = self.meta.tree.get("settings")? else {
            return Ok(SystemSettings::default());
        };
        match split_version(tree, &bytes)? {
            (SETTINGS_V3, body) => decode_body(tree, body),
            (SETTINGS_V2, body) => Ok(decode_body::<SystemSettingsV2>(tree, body)?.into()),
            (SCHEMA_V1, body) => Ok(decode_body::<SystemSettingsV1>(tree, body)?.into()),
            (version, _) => Err(StoreError::UnknownSchema { tree, version }),
        }
    }

    fn put_settings(&self, settings: &SystemSettings) -> Result<()> {
        self.meta
            .tree
            .insert("settings", encode_as(SETTINGS_V3, settings)?)?;
        Ok(())
    }

    fn computer(&self, id: &ComputerId) -> Result<Option<ComputerRecord>> {
        let tree = self.computers.name;
        self.computers
            .tree
            .get(id.as_str())?
            .map(|bytes| computer_record(tree, &bytes))
            .transpose()
    }

    fn put_computer(&self, id: &ComputerId, record: &ComputerRecord) -> Result<()> {
        self.computers
            .tree
            .insert(id.as_str(), encode_as(COMPUTERS_V3, record)?)?;
        Ok(())
    }

    fn put_group(&self, name: &str, group: &GroupRecord) -> Result<()> {
        self.groups
            .tree
            .insert(name, encode_as(OPTIONS_V2, group)?)?;
        Ok(())
    }

    fn computers_from(&self, after: Option<&[u8]>) -> Records<'_, (ComputerId, ComputerRecord)> {
        let tree = self.computers.name;
        let range = match after {
            Some(after) => self
                .computers
                .tree
                .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded)),
            None => self.computers.tree.iter(),
        };
        Box::new(range.map(move |item| {
            let (key, bytes) = item?;
            let id = std::str::from_utf8(&key)
                .ok()
                .and_then(|name| name.parse().ok())
                .ok_or(StoreError::BadKey { tree })?;
            let record = computer_record(tree, &bytes)?;
            Ok((key.to_vec(), (id, record)))
        }))
    }

    fn groups(&self) -> Result<Vec<(String, GroupRecord)>> {
        let tree = self.groups.name;
        self.groups
            .tree
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                let group = upgrading::<GroupRecord, GroupRecordV1>(tree, &bytes)?;
                Ok((String::from_utf8_lossy(&key).into_owned(), group))
            })
            .collect()
    }

    fn put_user(&self, user: &UserRecord) -> Result<()> {
        self.users
            .tree
            .insert(user.login.as_bytes(), encode_as(USERS_V3, user)?)?;
        Ok(())
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        let tree = self.users.name;
        self.users
            .tree
            .iter()
            .map(|item| {
                let (_, bytes) = item?;
                match split_version(tree, &bytes)? {
                    (USERS_V3, body) => decode_body(tree, body),
                    (USERS_V2, body) => Ok(decode_body::<UserRecordV2>(tree, body)?.into()),
                    (SCHEMA_V1, body) => Ok(decode_body::<UserRecordV1>(tree, body)?.into()),
                    (version, _) => Err(StoreError::UnknownSchema { tree, version }),
                }
            })
            .collect()
    }

    fn slots(&self, computer: &ComputerId) -> Result<Vec<(String, Slot)>> {
        let skip = prefix(computer).len();
        Ok(self
            .otps
            .scan(prefix(computer))?
            .into_iter()
            .map(|(key, slot)| (String::from_utf8_lossy(&key[skip..]).into_owned(), slot))
            .collect())
    }

    fn put_slot(&self, computer: &ComputerId, os_user: &str, slot: &Slot) -> Result<()> {
        self.otps.put(scoped(computer, os_user), slot)
    }

    fn every_slot(&self) -> SlotRecords<'_> {
        Box::new(self.otps.from::<Slot>(None, false).map(|record| {
            let (key, slot) = record?;
            let bad = || StoreError::BadKey { tree: "otps" };
            let split = key.iter().position(|&b| b == 0).ok_or_else(bad)?;
            let computer = std::str::from_utf8(&key[..split])
                .ok()
                .and_then(|name| name.parse().ok())
                .ok_or_else(bad)?;
            let os_user = String::from_utf8_lossy(&key[split + 1..]).into_owned();
            Ok((computer, os_user, slot))
        }))
    }

    fn put_mailed(
        &self,
        computer: &ComputerId,
        os_user: &str,
        valid_until: Timestamp,
    ) -> Result<()> {
        self.mailed.put(scoped(computer, os_user), &valid_until)
    }

    fn mailed(&self, computer: &ComputerId, os_user: &str) -> Result<Option<Timestamp>> {
        self.mailed.get(scoped(computer, os_user))
    }

    fn requests_of(&self, computer: &ComputerId) -> Result<Vec<AccessRequest>> {
        self.requests.values(prefix(computer))
    }

    fn request(&self, id: u64) -> Result<Option<AccessRequest>> {
        match self.request_index.get::<ComputerId>(id.to_be_bytes())? {
            Some(computer) => self.requests.get(scoped(&computer, &ordered(id))),
            None => Ok(None),
        }
    }

    fn requests_from(&self, after: Option<&[u8]>) -> Records<'_, AccessRequest> {
        self.requests.from(after, false)
    }

    fn put_request(&self, request: &AccessRequest) -> Result<()> {
        self.request_index
            .put(request.id.to_be_bytes(), &request.computer)?;
        self.requests
            .put(scoped(&request.computer, &ordered(request.id)), request)
    }

    fn sessions_of(&self, computer: &ComputerId) -> Result<Vec<ClientSession>> {
        self.sessions.values(prefix(computer))
    }

    fn sessions_from(&self, after: Option<&[u8]>) -> Records<'_, ClientSession> {
        self.sessions.from(after, false)
    }

    fn put_session(&self, session: &ClientSession) -> Result<()> {
        self.sessions
            .put(scoped(&session.computer, &ordered(session.id)), session)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.audit.put(self.next_id()?.to_be_bytes(), entry)
    }

    fn audit_from(&self, before: Option<&[u8]>) -> Records<'_, AuditEntry> {
        self.audit.from(before, true)
    }

    fn queue_mail(&self, entry: &OutboxEntry) -> Result<()> {
        self.outbox.put(entry.id.to_be_bytes(), entry)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.outbox.values("")
    }

    fn outbox_from(&self, after: Option<&[u8]>) -> Records<'_, OutboxEntry> {
        self.outbox.from(after, false)
    }

    fn remove_outbox(&self, id: u64) -> Result<()> {
        self.outbox.tree.remove(id.to_be_bytes())?;
        Ok(())
    }

    fn put_mail_failure(&self, failure: &MailFailure) -> Result<()> {
        self.mail_failures.put(failure.id.to_be_bytes(), failure)
    }

    fn mail_failures(&self) -> Result<Vec<MailFailure>> {
        self.mail_failures.values("")
    }

    fn mail_failures_from(&self, after: Option<&[u8]>) -> Records<'_, MailFailure> {
        self.mail_failures.from(after, false)
    }

    fn count_failure(&self, key: &str, fail: &(dyn Fn(Bucket) -> Bucket + Sync)) -> Result<()> {
        let mut failed = None;
        self.failures.tree.update_and_fetch(key, |old| {
            let bucket = old
                .and_then(|bytes| decode::<Bucket>("failure_buckets", bytes).ok())
                .unwrap_or_default();
            match encode(&fail(bucket)) {
                Ok(bytes) => Some(bytes),
                Err(err) => {
                    failed = Some(err);
                    old.map(<[u8]>::to_vec)
                }
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    fn failures(&self, key: &str) -> Result<Bucket> {
        Ok(self.failures.get::<Bucket>(key)?.unwrap_or_default())
    }

    fn prune(&self, cutoff: Timestamp, now: Timestamp, window: Duration) -> Result<usize> {
        // Audit ids grow with time: the oldest come first, and the first one
        // kept ends the scan.
        let mut removed = 0;
        for item in self.audit.from::<AuditEntry>(None, false) {
            let (key, entry) = item?;
            if entry.at >= cutoff {
                break;
            }
            self.audit.tree.remove(key)?;
            removed += 1;
        }
        removed += self
            .sessions
            .remove_where(|s: &ClientSession| s.ended.is_some_and(|(at, _)| at < cutoff))?;
        for item in self.requests.from::<AccessRequest>(None, false) {
            let (key, request) = item?;
            if request.decision != Decision::Pending && request.created < cutoff {
                self.requests.tree.remove(key)?;
                self.request_index.tree.remove(request.id.to_be_bytes())?;
                removed += 1;
            }
        }
        removed += self
            .mail_failures
            .remove_where(|f: &MailFailure| f.at < cutoff)?;
        removed += self
            .failures
            .remove_where(|bucket: &Bucket| bucket.drained_by(now, window))?;
        removed += self
            .mailed
            .remove_where(|valid_until: &Timestamp| *valid_until <= now)?;
        Ok(removed)
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// `record` as stored: a schema version byte, then bincode. Also how the
/// server's other databases (recordings) store theirs.
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    encode_as(SCHEMA_V1, record)
}

fn encode_as<T: Serialize>(version: u8, record: &T) -> Result<Vec<u8>> {
    let mut bytes = vec![version];
    bincode::serde::encode_into_std_write(record, &mut bytes, config())?;
    Ok(bytes)
}

fn decode_body<T: DeserializeOwned>(tree: &'static str, body: &[u8]) -> Result<T> {
    bincode::serde::decode_from_slice(body, config())
        .map(|(record, _)| record)
        .map_err(|source| StoreError::Corrupt { tree, source })
}

/// A record's schema version and its body.
fn split_version<'a>(tree: &'static str, bytes: &'a [u8]) -> Result<(u8, &'a [u8])> {
    match bytes.split_first() {
        Some((&version, body)) => Ok((version, body)),
        None => Err(StoreError::UnknownSchema { tree, version: 0 }),
    }
}

/// A group of `tree`: as written now ([`OPTIONS_V2`]), or in its first schema
/// (`Old`), upgraded.
fn upgrading<T: DeserializeOwned, Old: DeserializeOwned + Into<T>>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T> {
    match split_version(tree, bytes)? {
        (OPTIONS_V2, body) => decode_body(tree, body),
        (SCHEMA_V1, body) => Ok(decode_body::<Old>(tree, body)?.into()),
        (version, _) => Err(StoreError::UnknownSchema { tree, version }),
    }
}

/// A record of `tree` as [`encode`] stored it.
pub fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    match split_version(tree, bytes)? {
        (SCHEMA_V1, body) => decode_body(tree, body),
        (version, _) => Err(StoreError::UnknownSchema { tree, version }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ComputerRecord {
        ComputerRecord {
            first_seen: Timestamp::from_unix_millis(1),
            connected_since: Some(Timestamp::from_unix_millis(2)),
            last_seen: Timestamp::from_unix_millis(3),
            host_name: "ws-1".into(),
            agent_version: "0.1.0".into(),
            group: None,
            options: Options::default(),
            protocol: Some(2),
        }
    }

    #[tokio::test]
    async fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id: ComputerId = "ws-1".parse().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.computer(&id).unwrap(), None);
            store.put_computer(&id, &record()).unwrap();
            store.flush().await.unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.computer(&id).unwrap(), Some(record()));
        let all: Vec<_> = store
            .computers_from(None)
            .map(|item| item.unwrap().1)
            .collect();
        assert_eq!(all, vec![(id, record())]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_flushes_all_finish() {
        // 500 at once used to take every sled pool thread and never return.
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut flushes = tokio::task::JoinSet::new();
        for i in 0..500u64 {
            let store = store.clone();
            flushes.spawn(async move {
                store
                    .put_slot(&"ws-1".parse().unwrap(), &i.to_string(), &Slot::default())
                    .unwrap();
                store.flush().await.unwrap();
            });
        }
        tokio::time::timeout(std::time::Duration::from_secs(60), flushes.join_all())
            .await
            .expect("every flush returns");
    }

    #[test]
    fn prefixes_keep_computers_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let ws1: ComputerId = "ws-1".parse().unwrap();
        let ws10: ComputerId = "ws-10".parse().unwrap();
        store.put_slot(&ws1, "alice", &Slot::default()).unwrap();
        store.put_slot(&ws10, "bob", &Slot::default()).unwrap();
        let users: Vec<String> = store
            .slots(&ws1)
            .unwrap()
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        assert_eq!(users, ["alice"]);
    }

    #[test]
    fn pruning_removes_what_is_over_and_old_and_keeps_the_rest() {
        use crate::audit::Action;
        use crate::session::SessionEnd;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let day = Duration::from_secs(86_400);
        let t = |days: u64| Timestamp::from_unix_millis(days * 86_400_000);
        let (cutoff, now) = (t(100), t(465));
        for at in [t(10), t(99), t(100), t(300)] {
            store
                .append_audit(&AuditEntry {
                    at,
                    who: "x".into(),
                    computer: None,
                    action: Action::Configure,
                    outcome: "o".into(),
                })
                .unwrap();
        }
        let session = |id, ended: Option<u64>| ClientSession {
            id,
            computer: "ws-1".parse().unwrap(),
            os_user: "alice".into(),
            email: "alice@example.com".into(),
            started: t(1),
            last_activity: t(1),
            ended: ended.map(|days| (t(days), SessionEnd::Logout)),
        };
        for s in [
            session(1, Some(50)),
            session(2, Some(200)),
            session(3, None),
        ] {
            store.put_session(&s).unwrap();
        }
        let request = |id, created, decision| AccessRequest {
            id,
            computer: "ws-1".parse().unwrap(),
            os_user: "alice".into(),
            email: "alice@example.com".into(),
            emergency: false,
            created,
            expires: created.after(day),
            decision,
        };
        store
            .put_request(&request(11, t(5), Decision::Expire))
            .unwrap();
        store
            .put_request(&request(12, t(5), Decision::Pending))
            .unwrap();
        store
            .put_request(&request(13, t(150), Decision::Expire))
            .unwrap();
        let window = Duration::from_secs(3600);
        let failed = |at| Bucket::default().fail(at, 10, window);
        store.count_failure("old", &|_| failed(t(1))).unwrap();
        store.count_failure("fresh", &|_| failed(now)).unwrap();
        let ws1: ComputerId = "ws-1".parse().unwrap();
        store.put_mailed(&ws1, "alice", t(400)).unwrap();
        store.put_mailed(&ws1, "bob", t(500)).unwrap();

        assert_eq!(store.prune(cutoff, now, window).unwrap(), 2 + 1 + 1 + 1 + 1);
        let audit: Vec<_> = store.audit_from(None).map(|e| e.unwrap().1.at).collect();
        assert_eq!(audit, [t(300), t(100)]);
        let sessions: Vec<_> = store.sessions_from(None).map(|s| s.unwrap().1.id).collect();
        assert_eq!(sessions, [2, 3], "the open one stays, however old");
        assert_eq!(store.request(11).unwrap(), None);
        assert!(store.request(12).unwrap().is_some(), "a pending one stays");
        assert!(store.request(13).unwrap().is_some());
        assert_eq!(store.failures("old").unwrap(), Bucket::default());
        assert_ne!(store.failures("fresh").unwrap(), Bucket::default());
        assert_eq!(store.mailed(&ws1, "alice").unwrap(), None);
        assert_eq!(store.mailed(&ws1, "bob").unwrap(), Some(t(500)));
    }

    #[test]
    fn requests_are_found_by_id_also_those_written_before_the_index() {
        use crate::request::{AccessRequest, Decision};
        let dir = tempfile::tempdir().unwrap();
        let request = |id, computer: &str| AccessRequest {
            id,
            computer: computer.parse().unwrap(),
            os_user: "alice".into(),
            email: "alice@example.com".into(),
            emergency: false,
            created: Timestamp::from_unix_millis(0),
            expires: Timestamp::from_unix_millis(1),
            decision: Decision::Pending,
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_request(&request(7, "ws-1")).unwrap();
            store.put_request(&request(8, "ws-2")).unwrap();
            // As a store from before the index.
            store.request_index.tree.clear().unwrap();
            assert_eq!(store.request(7).unwrap(), None);
        }
        let store = reopen(dir.path());
        assert_eq!(store.request(7).unwrap(), Some(request(7, "ws-1")));
        assert_eq!(store.request(8).unwrap(), Some(request(8, "ws-2")));
        assert_eq!(store.request(9).unwrap(), None);
    }

    /// Opens the store at `path` again, once the handle before has let go of
    /// the lock (sled's flusher thread holds it for a moment after a drop).
    fn reopen(path: &Path) -> SledStore {
        for _ in 0..100 {
            match SledStore::open(path) {
                Ok(store) => return store,
                Err(StoreError::Database(_)) => std::thread::sleep(Duration::from_millis(50)),
                Err(err) => panic!("{err}"),
            }
        }
        panic!("the store at {} stayed locked", path.display())
    }

    #[test]
    fn failures_are_counted_atomically_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let t0 = Timestamp::from_unix_millis(10_000);
        let fail = |bucket: Bucket| bucket.fail(t0, 2, hour);
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.failures("k").unwrap(), Bucket::default());
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| store.count_failure("k", &fail).unwrap());
                }
            });
            assert_eq!(
                store.failures("k").unwrap().full_for(t0, 2, hour),
                Some(hour / 2)
            );
        }
        let store = reopen(dir.path());
        assert!(store.failures("k").unwrap().full_for(t0, 2, hour).is_some());
        assert_eq!(store.failures("other").unwrap(), Bucket::default());
    }

    #[test]
    fn the_audit_log_returns_the_newest_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..5 {
            store
                .append_audit(&AuditEntry {
                    at: Timestamp::from_unix_millis(i),
                    who: "server".into(),
                    computer: None,
                    action: crate::audit::Action::Configure,
                    outcome: i.to_string(),
                })
                .unwrap();
        }
        let newest: Vec<(Vec<u8>, String)> = store
            .audit_from(None)
            .take(3)
            .map(|item| item.map(|(key, e)| (key, e.outcome)).unwrap())
            .collect();
        let outcomes: Vec<&str> = newest.iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(outcomes, ["4", "3", "2"]);
        let (cursor, _) = &newest[2];
        let older: Vec<String> = store
            .audit_from(Some(cursor))
            .map(|item| item.unwrap().1.outcome)
            .collect();
        assert_eq!(older, ["1", "0"], "the next page starts before the cursor");
    }

    #[test]
    fn settings_of_the_first_schema_are_upgraded() {
        #[derive(Serialize)]
        struct V1 {
            expiration: Duration,
            new_otp_interval: Duration,
            otp_length: u8,
            max_attempts: u32,
            max_failures_per_hour: u32,
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old = V1 {
            expiration: Duration::from_secs(600),
            new_otp_interval: Duration::from_secs(60),
            otp_length: 10,
            max_attempts: 3,
            max_failures_per_hour: 7,
        };
        store
            .meta
            .tree
            .insert("settings", encode(&old).unwrap())
            .unwrap();
        let upgraded = store.settings().unwrap();
        assert_eq!(
            upgraded,
            SystemSettings {
                expiration: Duration::from_secs(600),
                new_otp_interval: Duration::from_secs(60),
                otp_length: 10,
                max_attempts: 3,
                max_failures: 7,
                ..SystemSettings::default()
            }
        );
        store.put_settings(&upgraded).unwrap();
        assert_eq!(store.settings().unwrap(), upgraded);
    }

    #[test]
    fn settings_of_the_second_schema_are_upgraded() {
        #[derive(Serialize)]
        struct V2 {
            expiration: Duration,
            new_otp_interval: Duration,
            otp_length: u8,
            max_attempts: u32,
            max_failures: u32,
            failure_window: Duration,
            resend_gap: Duration,
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old = V2 {
            expiration: Duration::from_secs(600),
            new_otp_interval: Duration::from_secs(60),
            otp_length: 10,
            max_attempts: 3,
            max_failures: 7,
            failure_window: Duration::from_secs(120),
            resend_gap: Duration::from_secs(5),
        };
        store
            .meta
            .tree
            .insert("settings", encode_as(SETTINGS_V2, &old).unwrap())
            .unwrap();
        assert_eq!(
            store.settings().unwrap(),
            SystemSettings {
                expiration: Duration::from_secs(600),
                new_otp_interval: Duration::from_secs(60),
                otp_length: 10,
                max_attempts: 3,
                max_failures: 7,
                failure_window: Duration::from_secs(120),
                resend_gap: Duration::from_secs(5),
                ..SystemSettings::default()
            }
        );
    }

    #[test]
    fn computers_and_groups_of_the_first_schema_are_upgraded() {
        #[derive(Serialize)]
        struct OptionsV1 {
            allow_otp: Option<bool>,
            approvers: Option<Vec<String>>,
            auto_directory: Option<bool>,
            auto_internal: Option<bool>,
        }
        #[derive(Serialize)]
        struct ComputerV1 {
            first_seen: Timestamp,
            connected_since: Option<Timestamp>,
            last_seen: Timestamp,
            host_name: String,
            agent_version: String,
            group: Option<String>,
            options: OptionsV1,
        }
        let options = || OptionsV1 {
            allow_otp: Some(false),
            approvers: Some(vec!["bob".into()]),
            auto_directory: None,
            auto_internal: Some(true),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let at = Timestamp::from_unix_millis(1_800_000_000_000);
        let old = ComputerV1 {
            first_seen: at,
            connected_since: None,
            last_seen: at,
            host_name: "ws-1.corp".into(),
            agent_version: "0.1.0".into(),
            group: Some("lab".into()),
            options: options(),
        };
        store.computers.put("ws-1", &old).unwrap();
        store.groups.put("lab", &(options(),)).unwrap();
        let upgraded = Options {
            allow_otp: Some(false),
            approvers: Some(vec!["bob".into()]),
            auto_directory: None,
            auto_internal: Some(true),
            record_input: None,
        };
        let ws: ComputerId = "ws-1".parse().unwrap();
        let computer = store.computer(&ws).unwrap().unwrap();
        assert_eq!(
            (computer.host_name.as_str(), &computer.options),
            ("ws-1.corp", &upgraded)
        );
        let listed: Vec<_> = store.computers_from(None).map(|c| c.unwrap().1.1).collect();
        assert_eq!(listed, std::slice::from_ref(&computer));
        assert_eq!(store.groups().unwrap()[0].1.options, upgraded);
        // Written back in the new schema, read as written.
        let recording_input = ComputerRecord {
            options: Options {
                record_input: Some(true),
                ..upgraded
            },
            ..computer
        };
        store.put_computer(&ws, &recording_input).unwrap();
        assert_eq!(store.computer(&ws).unwrap(), Some(recording_input.clone()));

        // Schema 2: without the agent's protocol version.
        #[derive(Serialize)]
        struct ComputerV2 {
            first_seen: Timestamp,
            connected_since: Option<Timestamp>,
            last_seen: Timestamp,
            host_name: String,
            agent_version: String,
            group: Option<String>,
            options: Options,
        }
        let v2 = ComputerV2 {
            first_seen: at,
            connected_since: None,
            last_seen: at,
            host_name: "ws-1.corp".into(),
            agent_version: "0.1.0".into(),
            group: Some("lab".into()),
            options: recording_input.options.clone(),
        };
        let bytes = encode_as(OPTIONS_V2, &v2).unwrap();
        store.computers.tree.insert("ws-1", bytes).unwrap();
        let upgraded = store.computer(&ws).unwrap().unwrap();
        assert_eq!(upgraded, recording_input);
        assert_eq!(upgraded.protocol, None);
    }

    #[test]
    fn users_of_earlier_schemas_are_upgraded() {
        #[derive(Serialize)]
        struct V1 {
            login: String,
            email: String,
            password_hash: String,
            role: crate::directory::Role,
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old = V1 {
            login: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: "$argon2id$x".into(),
            role: crate::directory::Role::Administrator,
        };
        store.users.put("alice", &old).unwrap();
        let upgraded = UserRecord {
            login: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: "$argon2id$x".into(),
            role: crate::directory::Role::Administrator,
            password_change_due: false,
            disabled: false,
        };
        assert_eq!(store.users().unwrap(), std::slice::from_ref(&upgraded));
        #[derive(Serialize)]
        struct V2 {
            login: String,
            email: String,
            password_hash: String,
            role: crate::directory::Role,
            password_change_due: bool,
        }
        let old = V2 {
            login: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: "$argon2id$x".into(),
            role: crate::directory::Role::Administrator,
            password_change_due: true,
        };
        store
            .users
            .tree
            .insert("alice", encode_as(USERS_V2, &old).unwrap())
            .unwrap();
        assert_eq!(
            store.users().unwrap(),
            [UserRecord {
                password_change_due: true,
                ..upgraded.clone()
            }]
        );
        let due = UserRecord {
            password_change_due: true,
            ..upgraded
        };
        store.put_user(&due).unwrap();
        assert_eq!(store.users().unwrap(), [due]);
    }

    #[test]
    fn unknown_schema_versions_are_refused() {
        let mut bytes = encode(&record()).unwrap();
        bytes[0] = 99;
        assert!(matches!(
            decode::<ComputerRecord>("computers", &bytes),
            Err(StoreError::UnknownSchema { version: 99, .. })
        ));
        assert!(matches!(
            decode::<ComputerRecord>("computers", &bytes[..1]),
            Err(StoreError::UnknownSchema { .. })
        ));
        bytes[0] = SCHEMA_V1;
        assert!(matches!(
            decode::<ComputerRecord>("computers", &bytes[..3]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

//! The embedded store: one sled database in the data folder, a tree per
//! concern.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::copy::{self, Ids};
use super::flusher::Flusher;
use super::record::{decode, encode};
use super::table::{Gate, Order, Table};
use super::{Batch, ComputerRecord, Result, Store, StoreError, StoreFuture};
use crate::audit::AuditEntry;
use crate::clock::Timestamp;
use crate::directory::UserRecord;
use crate::id::ComputerId;
use crate::mail::outbox::{MailFailure, OutboxEntry};
use crate::otp::Slot;
use crate::request::{AccessRequest, Decision};
use crate::rules::Bucket;
use crate::session::ClientSession;
use crate::settings::{GroupRecord, SystemSettings};

/// How often sled writes its buffers to disk without being asked.
pub const FLUSH_EVERY_MS: u64 = 500;

/// The embedded store: one sled database in the data folder.
#[derive(Clone)]
pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) flusher: Arc<Flusher>,
    ids: Ids,
    gate: Gate,
    pub(super) meta: Table,
    pub(super) computers: Table,
    pub(super) groups: Table,
    pub(super) users: Table,
    pub(super) otps: Table,
    /// Computer and OS user -> the validity end of the OTP whose mail last left
    /// the outbox: what the mailer checks at start (see `Mailer`).
    pub(super) mailed: Table,
    pub(super) requests: Table,
    /// Access request id -> its computer, so that a request is found by id.
    pub(super) request_index: Table,
    pub(super) sessions: Table,
    pub(super) audit: Table,
    pub(super) outbox: Table,
    pub(super) mail_failures: Table,
    pub(super) failures: Table,
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
        let gate = Gate::default();
        let table = |name| Table::open(&db, name, &gate);
        let store = Self {
            flusher: Arc::default(),
            ids: Ids::open(&db)?,
            meta: table("meta")?,
            computers: table("computers")?,
            groups: table("groups")?,
            users: table("users")?,
            otps: table("otps")?,
            mailed: table("mailed")?,
            requests: table("requests")?,
            request_index: table("request_index")?,
            sessions: table("sessions")?,
            audit: table("audit")?,
            outbox: table("outbox")?,
            mail_failures: table("mail_failures")?,
            failures: table("failure_buckets")?,
            gate,
            db,
        };
        store.index_requests()?;
        Ok(store)
    }

    /// Every record, as the database holds them between two writes (each
    /// write waits meanwhile: a copy in memory, then the writes go on), and an
    /// id above every id handed out so far: what a backup holds.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let _alone = self.gate.alone();
        let next_id = self.ids.next()?;
        let trees = copy::trees(&self.db)?
            .into_iter()
            .map(|tree| {
                let pairs = tree.iter().collect::<sled::Result<Vec<_>>>()?;
                Ok((tree.name(), pairs))
            })
            .collect::<Result<_>>()?;
        Ok(Snapshot { trees, next_id })
    }

    /// Indexes requests written before the index existed (once: a store whose
    /// index has entries is up to date, as every request is indexed when put).
    fn index_requests(&self) -> Result<()> {
        if !self.request_index.tree.is_empty() {
            return Ok(());
        }
        for request in self.requests.from::<AccessRequest>(None, Order::Oldest) {
            let (_, request) = request?;
            self.request_index
                .put(request.id.to_be_bytes(), &request.computer)?;
        }
        Ok(())
    }
}

/// A copy of every tree of a [`SledStore`], taken by [`SledStore::snapshot`].
pub struct Snapshot {
    /// Each tree's name and its pairs, in key order.
    pub trees: Vec<(sled::IVec, Vec<(sled::IVec, sled::IVec)>)>,
    /// An id above every id the database had handed out.
    pub next_id: u64,
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

/// A read of sled's, which answers at once, as the store's future.
fn now<T: Send + 'static>(read: Result<T>) -> StoreFuture<'static, T> {
    Box::pin(std::future::ready(read))
}

/// A numeric id as a key part that sorts in numeric order.
fn ordered(id: u64) -> String {
    format!("{id:020}")
}

impl Store for SledStore {
    fn next_id(&self) -> StoreFuture<'_, u64> {
        now(self.ids.next())
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.flusher.flush(&self.db))
    }

    fn settings(&self) -> StoreFuture<'_, SystemSettings> {
        now(self.meta.get("settings").map(Option::unwrap_or_default))
    }

    fn put_settings(&self, settings: &SystemSettings) -> Result<()> {
        self.meta.put("settings", settings)
    }

    fn computer<'a>(&'a self, id: &'a ComputerId) -> StoreFuture<'a, Option<ComputerRecord>> {
        now(self.computers.get(id.as_str()))
    }

    fn put_computer(&self, id: &ComputerId, record: &ComputerRecord) -> Result<()> {
        self.computers.put(id.as_str(), record)
    }

    fn put_group(&self, name: &str, group: &GroupRecord) -> Result<()> {
        self.groups.put(name, group)
    }

    fn computers_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<(ComputerId, ComputerRecord)>> {
        let tree = self.computers.name;
        now(self
            .computers
            .from::<ComputerRecord>(after.as_deref(), Order::Oldest)
            .take(limit)
            .map(move |item| {
                let (key, record) = item?;
                let id = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|name| name.parse().ok())
                    .ok_or(StoreError::BadKey { tree })?;
                Ok((key, (id, record)))
            })
            .collect())
    }

    fn groups(&self) -> StoreFuture<'_, Vec<(String, GroupRecord)>> {
        now(self.groups.scan::<GroupRecord>("").map(|groups| {
            groups
                .into_iter()
                .map(|(key, group)| (String::from_utf8_lossy(&key).into_owned(), group))
                .collect()
        }))
    }

    fn put_user(&self, user: &UserRecord) -> Result<()> {
        self.users.put(user.login.as_bytes(), user)
    }

    fn users(&self) -> StoreFuture<'_, Vec<UserRecord>> {
        now(self.users.values(""))
    }

    fn slots<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<(String, Slot)>> {
        let skip = prefix(computer).len();
        now(self.otps.scan(prefix(computer)).map(|slots| {
            slots
                .into_iter()
                .map(|(key, slot)| (String::from_utf8_lossy(&key[skip..]).into_owned(), slot))
                .collect()
        }))
    }

    fn put_slot(&self, computer: &ComputerId, os_user: &str, slot: &Slot) -> Result<()> {
        self.otps.put(scoped(computer, os_user), slot)
    }

    fn slots_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<(ComputerId, String, Slot)>> {
        now(self
            .otps
            .from::<Slot>(after.as_deref(), Order::Oldest)
            .take(limit)
            .map(|record| {
                let (key, slot) = record?;
                let bad = || StoreError::BadKey { tree: "otps" };
                let split = key.iter().position(|&b| b == 0).ok_or_else(bad)?;
                let computer = std::str::from_utf8(&key[..split])
                    .ok()
                    .and_then(|name| name.parse().ok())
                    .ok_or_else(bad)?;
                let os_user = String::from_utf8_lossy(&key[split + 1..]).into_owned();
                Ok((key, (computer, os_user, slot)))
            })
            .collect())
    }

    fn put_mailed(
        &self,
        computer: &ComputerId,
        os_user: &str,
        valid_until: Timestamp,
    ) -> Result<()> {
        self.mailed.put(scoped(computer, os_user), &valid_until)
    }

    fn mailed<'a>(
        &'a self,
        computer: &'a ComputerId,
        os_user: &'a str,
    ) -> StoreFuture<'a, Option<Timestamp>> {
        now(self.mailed.get(scoped(computer, os_user)))
    }

    fn requests_of<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<AccessRequest>> {
        now(self.requests.values(prefix(computer)))
    }

    fn request(&self, id: u64) -> StoreFuture<'_, Option<AccessRequest>> {
        now(
            match self.request_index.get::<ComputerId>(id.to_be_bytes()) {
                Ok(Some(computer)) => self.requests.get(scoped(&computer, &ordered(id))),
                Ok(None) => Ok(None),
                Err(err) => Err(err),
            },
        )
    }

    fn requests_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<AccessRequest>> {
        now(self.requests.batch(after.as_deref(), Order::Oldest, limit))
    }

    fn put_request(&self, request: &AccessRequest) -> Result<()> {
        self.request_index
            .put(request.id.to_be_bytes(), &request.computer)?;
        self.requests
            .put(scoped(&request.computer, &ordered(request.id)), request)
    }

    fn sessions_of<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<ClientSession>> {
        now(self.sessions.values(prefix(computer)))
    }

    fn sessions_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<ClientSession>> {
        now(self.sessions.batch(after.as_deref(), Order::Oldest, limit))
    }

    fn put_session(&self, session: &ClientSession) -> Result<()> {
        self.sessions
            .put(scoped(&session.computer, &ordered(session.id)), session)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.audit.put(self.ids.next()?.to_be_bytes(), entry)
    }

    fn audit_from(
        &self,
        before: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<AuditEntry>> {
        now(self.audit.batch(before.as_deref(), Order::Newest, limit))
    }

    fn queue_mail(&self, entry: &OutboxEntry) -> Result<()> {
        self.outbox.put(entry.id.to_be_bytes(), entry)
    }

    fn outbox_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<OutboxEntry>> {
        now(self.outbox.batch(after.as_deref(), Order::Oldest, limit))
    }

    fn remove_outbox(&self, id: u64) -> Result<()> {
        self.outbox.remove(id.to_be_bytes())
    }

    fn put_mail_failure(&self, failure: &MailFailure) -> Result<()> {
        self.mail_failures.put(failure.id.to_be_bytes(), failure)
    }

    fn mail_failures_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<MailFailure>> {
        now(self
            .mail_failures
            .batch(after.as_deref(), Order::Oldest, limit))
    }

    fn count_failure(&self, key: &str, fail: &(dyn Fn(Bucket) -> Bucket + Sync)) -> Result<()> {
        let mut failed = None;
        self.failures.update(key, |old| {
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

    fn failures<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Bucket> {
        now(self
            .failures
            .get::<Bucket>(key)
            .map(Option::unwrap_or_default))
    }

    fn prune(&self, cutoff: Timestamp, now: Timestamp, window: Duration) -> Result<usize> {
        // Audit ids grow with time: the oldest come first, and the first one
        // kept ends the scan.
        let mut removed = 0;
        for item in self.audit.from::<AuditEntry>(None, Order::Oldest) {
            let (key, entry) = item?;
            if entry.at >= cutoff {
                break;
            }
            self.audit.remove(key)?;
            removed += 1;
        }
        removed += self
            .sessions
            .remove_where(|s: &ClientSession| s.ended.is_some_and(|(at, _)| at < cutoff))?;
        for item in self.requests.from::<AccessRequest>(None, Order::Oldest) {
            let (key, request) = item?;
            if request.decision != Decision::Pending && request.created < cutoff {
                self.requests.remove(key)?;
                self.request_index.remove(request.id.to_be_bytes())?;
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

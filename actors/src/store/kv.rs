//! The store over tables of keys and versioned records: in one sled
//! database in the data folder (the embedded default), or in PostgreSQL
//! ([`super::postgres`]), the same tables, keys and records in both.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::copy::Ids;
use super::flusher::Flusher;
use super::keys::{ordered, prefix, scoped, unscoped};
use super::postgres::{Pg, PgConfig, Taken};
use super::table::{Gate, Order, Table};
use super::turn::Owner;
use super::{Batch, ComputerRecord, Result, Store, StoreError, StoreFuture};
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

/// The key in `meta` of the site's [`SiteMark`].
const SITE_MARK: &str = "site";

/// The mark of the secret the site's database was first served with.
#[derive(serde::Serialize, serde::Deserialize)]
struct SiteMark([u8; 32]);

impl super::Record for SiteMark {}

/// How often sled writes its buffers to disk without being asked.
pub const FLUSH_EVERY_MS: u64 = 500;

/// What a store's tables are kept in.
pub(super) enum Engine {
    /// One sled database.
    Sled {
        db: sled::Db,
        ids: Ids,
        gate: Gate,
        flusher: Flusher,
    },
    /// A PostgreSQL database; `unique` tells apart the audit entries this
    /// process writes (seeded at random: several nodes write).
    Pg { pg: Arc<Pg>, unique: AtomicU64 },
}

/// The store: a table per concern, in sled or in PostgreSQL.
pub struct KvStore {
    pub(super) engine: Engine,
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
    /// Join tokens, by id.
    pub(super) tokens: Table,
    /// Computer -> what it was issued when it enrolled.
    pub(super) enrollments: Table,
    /// Computer and OS user -> their offline codes.
    pub(super) offline: Table,
}

/// Opens the sled database `config` names. The lock of a database this
/// process closed a moment ago is released only when sled's background
/// writes of it end, so a lock found held is waited for (up to two
/// seconds) before it is another process's.
pub fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        match config.open() {
            Err(sled::Error::Io(err))
                if waited < LOCK_WAIT && err.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(LOCK_STEP);
                waited += LOCK_STEP;
            }
            opened => return opened,
        }
    }
}

const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_STEP: std::time::Duration = std::time::Duration::from_millis(20);

/// The tables, by name.
pub(super) const TABLES: [&str; 16] = [
    "meta",
    "computers",
    "groups",
    "users",
    "otps",
    "mailed",
    "requests",
    "request_index",
    "sessions",
    "audit",
    "outbox",
    "mail_failures",
    "failure_buckets",
    "join_tokens",
    "enrollments",
    "offline_codes",
];

impl KvStore {
    /// Every table, in [`TABLES`]' order.
    pub(super) fn tables(&self) -> [Table; TABLES.len()] {
        [
            &self.meta,
            &self.computers,
            &self.groups,
            &self.users,
            &self.otps,
            &self.mailed,
            &self.requests,
            &self.request_index,
            &self.sessions,
            &self.audit,
            &self.outbox,
            &self.mail_failures,
            &self.failures,
            &self.tokens,
            &self.enrollments,
            &self.offline,
        ]
        .map(Table::clone)
    }

    fn with_tables(engine: Engine, table: impl Fn(&'static str) -> Result<Table>) -> Result<Self> {
        let [
            meta,
            computers,
            groups,
            users,
            otps,
            mailed,
            requests,
            request_index,
            sessions,
            audit,
            outbox,
            mail_failures,
            failures,
            tokens,
            enrollments,
            offline,
        ] = TABLES;
        Ok(Self {
            meta: table(meta)?,
            computers: table(computers)?,
            groups: table(groups)?,
            users: table(users)?,
            otps: table(otps)?,
            mailed: table(mailed)?,
            requests: table(requests)?,
            request_index: table(request_index)?,
            sessions: table(sessions)?,
            audit: table(audit)?,
            outbox: table(outbox)?,
            mail_failures: table(mail_failures)?,
            failures: table(failures)?,
            tokens: table(tokens)?,
            enrollments: table(enrollments)?,
            offline: table(offline)?,
            engine,
        })
    }

    /// Opens (or creates) the sled database in folder `path`. Fails if another
    /// process holds it open.
    pub fn open(path: &Path) -> Result<Self> {
        let db = open_sled(
            &sled::Config::new()
                .path(path)
                .flush_every_ms(Some(FLUSH_EVERY_MS)),
        )?;
        // Fixed-window failure counts of older builds: short-lived, and unlike
        // the buckets that replaced them.
        db.drop_tree("failures")?;
        let gate = Gate::default();
        let engine = Engine::Sled {
            ids: Ids::open(&db)?,
            gate: gate.clone(),
            db: db.clone(),
            flusher: Flusher::default(),
        };
        let store = Self::with_tables(engine, |name| Table::sled(&db, name, &gate))?;
        store.index_requests()?;
        Ok(store)
    }

    /// Connects to the PostgreSQL database `config` names, making or
    /// upgrading its schema.
    pub async fn connect(config: &PgConfig) -> Result<Self> {
        let pg = Arc::new(Pg::new(config)?);
        pg.migrate().await?;
        pg.listen().await?;
        Self::over(pg)
    }

    /// [`KvStore::connect`] holding the site lock as `how` says (shared by
    /// the servers serving the database, or alone for a copy into it),
    /// taken before the schema is brought up to date; with what ends if a
    /// process took the lock alone meanwhile (see `Pg::site`). Dropping that
    /// frees the lock.
    pub async fn connect_holding(config: &PgConfig, how: super::Site) -> Result<(Self, Taken)> {
        let pg = Arc::new(Pg::new(config)?);
        let taken = pg.site(how).await?;
        pg.migrate().await?;
        pg.listen().await?;
        Ok((Self::over(pg)?, taken))
    }

    /// Whether `mark` (see `OtpKeys::site_mark`) is the mark of the site
    /// this database is: the one it was first served with, kept now if it
    /// has none yet. Each node that starts asks, with [`Alone::FirstStart`]
    /// held, so that two nodes with different secrets never both start.
    ///
    /// [`Alone::FirstStart`]: super::Alone::FirstStart
    pub async fn same_site(&self, mark: [u8; 32]) -> Result<bool> {
        match self.meta.get::<SiteMark>(SITE_MARK).await? {
            Some(SiteMark(kept)) => {
                Ok(aws_lc_rs::constant_time::verify_slices_are_equal(&kept, &mark).is_ok())
            }
            None => {
                self.meta.put(SITE_MARK, &SiteMark(mark))?;
                self.flush().await?;
                Ok(true)
            }
        }
    }

    fn over(pg: Arc<Pg>) -> Result<Self> {
        let engine = Engine::Pg {
            pg: Arc::clone(&pg),
            unique: AtomicU64::new(rand::random()),
        };
        Self::with_tables(engine, |name| Ok(Table::postgres(&pg, name)))
    }

    /// Indexes requests written before the index existed (once: a store whose
    /// index has entries is up to date, as every request is indexed when put).
    fn index_requests(&self) -> Result<()> {
        if self
            .request_index
            .sled_tree()
            .is_none_or(|index| !index.is_empty())
        {
            return Ok(());
        }
        for request in self.requests.from::<AccessRequest>(None, Order::Oldest) {
            let (_, request) = request?;
            self.request_index
                .put(request.id.to_be_bytes(), &request.computer)?;
        }
        Ok(())
    }

    /// The key of audit entry `entry`: its time, then a number no other
    /// entry has, so that the log reads in time order.
    fn audit_key(&self, entry: &AuditEntry) -> Result<[u8; 16]> {
        let unique = match &self.engine {
            Engine::Sled { ids, .. } => ids.next()?,
            Engine::Pg { unique, .. } => unique.fetch_add(1, Ordering::Relaxed),
        };
        let mut key = [0; 16];
        key[..8].copy_from_slice(&entry.at.unix_millis().to_be_bytes());
        key[8..].copy_from_slice(&unique.to_be_bytes());
        Ok(key)
    }
}

impl Store for KvStore {
    fn own<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Owner> {
        match &self.engine {
            // One process holds a sled database: nobody to fence out.
            Engine::Sled { .. } => Box::pin(std::future::ready(Ok(Owner {
                computer: computer.clone(),
                fence: 0,
            }))),
            Engine::Pg { pg, .. } => Box::pin(pg.own(computer)),
        }
    }

    fn fenced_out(&self, owner: &Owner) -> bool {
        match &self.engine {
            Engine::Sled { .. } => false,
            Engine::Pg { pg, .. } => pg.fenced_out(owner),
        }
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<super::Change>> {
        match &self.engine {
            Engine::Sled { .. } => None,
            Engine::Pg { pg, .. } => Some(pg.changes()),
        }
    }

    fn alone(&self, what: super::Alone) -> StoreFuture<'_, super::Exclusive> {
        match &self.engine {
            Engine::Sled { .. } => Box::pin(std::future::ready(Ok(super::Exclusive::only_node()))),
            Engine::Pg { pg, .. } => Box::pin(pg.exclusive(what)),
        }
    }

    fn sender(&self) -> StoreFuture<'_, bool> {
        match &self.engine {
            Engine::Sled { .. } => Box::pin(std::future::ready(Ok(true))),
            Engine::Pg { pg, .. } => Box::pin(pg.sender()),
        }
    }

    fn next_id(&self) -> StoreFuture<'_, u64> {
        match &self.engine {
            Engine::Sled { ids, .. } => Box::pin(std::future::ready(ids.next())),
            Engine::Pg { pg, .. } => Box::pin(pg.next_id()),
        }
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        match &self.engine {
            Engine::Sled { db, flusher, .. } => Box::pin(flusher.flush(|| async {
                // sled 0.34 runs each `flush_async` on its own thread pool,
                // where many at once can take every thread and deadlock
                // waiting for the log write that needs one; so one flush at
                // a time, on tokio's blocking pool.
                let db = db.clone();
                tokio::task::spawn_blocking(move || db.flush())
                    .await
                    .map_err(|_| StoreError::FlushAborted)??;
                Ok(())
            })),
            Engine::Pg { pg, .. } => Box::pin(pg.flush()),
        }
    }

    fn settings(&self) -> StoreFuture<'_, SystemSettings> {
        Box::pin(async move { Ok(self.meta.get("settings").await?.unwrap_or_default()) })
    }

    fn put_settings(&self, settings: &SystemSettings) -> Result<()> {
        self.meta.put("settings", settings)
    }

    fn computer<'a>(&'a self, id: &'a ComputerId) -> StoreFuture<'a, Option<ComputerRecord>> {
        Box::pin(self.computers.get(id.as_str()))
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
        Box::pin(async move {
            let tree = self.computers.name;
            self.computers
                .batch::<ComputerRecord>(after.as_deref(), Order::Oldest, limit)
                .await?
                .into_iter()
                .map(|(key, record)| {
                    let id = std::str::from_utf8(&key)
                        .ok()
                        .and_then(|name| name.parse().ok())
                        .ok_or(StoreError::BadKey { tree })?;
                    Ok((key, (id, record)))
                })
                .collect()
        })
    }

    fn groups(&self) -> StoreFuture<'_, Vec<(String, GroupRecord)>> {
        Box::pin(async move {
            Ok(self
                .groups
                .scan::<GroupRecord>("")
                .await?
                .into_iter()
                .map(|(key, group)| (String::from_utf8_lossy(&key).into_owned(), group))
                .collect())
        })
    }

    fn put_user(&self, user: &UserRecord) -> Result<()> {
        self.users.put(user.login.as_bytes(), user)
    }

    fn users(&self) -> StoreFuture<'_, Vec<UserRecord>> {
        Box::pin(self.users.values(""))
    }

    fn slots<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<(String, Slot)>> {
        Box::pin(async move {
            let skip = prefix(computer).len();
            Ok(self
                .otps
                .scan(prefix(computer))
                .await?
                .into_iter()
                .map(|(key, slot)| (String::from_utf8_lossy(&key[skip..]).into_owned(), slot))
                .collect())
        })
    }

    fn put_slot(&self, computer: &ComputerId, os_user: &str, slot: &Slot) -> Result<()> {
        self.otps.put(scoped(computer, os_user), slot)
    }

    fn slots_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<(ComputerId, String, Slot)>> {
        Box::pin(async move {
            self.otps
                .batch::<Slot>(after.as_deref(), Order::Oldest, limit)
                .await?
                .into_iter()
                .map(|(key, slot)| {
                    let (computer, os_user) = unscoped("otps", &key)?;
                    Ok((key, (computer, os_user, slot)))
                })
                .collect()
        })
    }

    fn offline_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<(ComputerId, OfflineSet)>> {
        Box::pin(async move {
            self.offline
                .batch::<OfflineSet>(after.as_deref(), Order::Oldest, limit)
                .await?
                .into_iter()
                .map(|(key, set)| {
                    let (computer, _) = unscoped("offline_codes", &key)?;
                    Ok((key, (computer, set)))
                })
                .collect()
        })
    }

    fn session<'a>(
        &'a self,
        computer: &'a ComputerId,
        id: u64,
    ) -> StoreFuture<'a, Option<ClientSession>> {
        Box::pin(self.sessions.get(scoped(computer, &ordered(id))))
    }

    fn offline_sets<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<OfflineSet>> {
        Box::pin(self.offline.values(prefix(computer)))
    }

    fn put_offline_set(&self, computer: &ComputerId, set: &OfflineSet) -> Result<()> {
        self.offline.put(scoped(computer, &set.os_user), set)
    }

    fn remove_offline_set(&self, computer: &ComputerId, os_user: &str) -> Result<()> {
        self.offline.remove(scoped(computer, os_user))
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
        Box::pin(self.mailed.get(scoped(computer, os_user)))
    }

    fn requests_of<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<AccessRequest>> {
        Box::pin(self.requests.values(prefix(computer)))
    }

    fn request(&self, id: u64) -> StoreFuture<'_, Option<AccessRequest>> {
        Box::pin(async move {
            match self
                .request_index
                .get::<ComputerId>(id.to_be_bytes())
                .await?
            {
                Some(computer) => self.requests.get(scoped(&computer, &ordered(id))).await,
                None => Ok(None),
            }
        })
    }

    fn requests_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<AccessRequest>> {
        Box::pin(async move {
            self.requests
                .batch(after.as_deref(), Order::Oldest, limit)
                .await
        })
    }

    fn put_request(&self, request: &AccessRequest) -> Result<()> {
        self.request_index
            .put(request.id.to_be_bytes(), &request.computer)?;
        self.requests
            .put(scoped(&request.computer, &ordered(request.id)), request)
    }

    fn sessions_of<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Vec<ClientSession>> {
        Box::pin(self.sessions.values(prefix(computer)))
    }

    fn sessions_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<ClientSession>> {
        Box::pin(async move {
            self.sessions
                .batch(after.as_deref(), Order::Oldest, limit)
                .await
        })
    }

    fn put_session(&self, session: &ClientSession) -> Result<()> {
        self.sessions
            .put(scoped(&session.computer, &ordered(session.id)), session)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.audit.put(self.audit_key(entry)?, entry)
    }

    fn audit_from(
        &self,
        before: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<AuditEntry>> {
        Box::pin(async move {
            self.audit
                .batch(before.as_deref(), Order::Newest, limit)
                .await
        })
    }

    fn queue_mail(&self, entry: &OutboxEntry) -> Result<()> {
        self.outbox.put(entry.id.to_be_bytes(), entry)
    }

    fn outbox_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<OutboxEntry>> {
        Box::pin(async move {
            self.outbox
                .batch(after.as_deref(), Order::Oldest, limit)
                .await
        })
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
        Box::pin(async move {
            self.mail_failures
                .batch(after.as_deref(), Order::Oldest, limit)
                .await
        })
    }

    fn put_token(&self, token: &JoinToken) -> Result<()> {
        self.tokens.put(token.id.to_be_bytes(), token)
    }

    fn token(&self, id: u64) -> StoreFuture<'_, Option<JoinToken>> {
        Box::pin(async move { self.tokens.get(id.to_be_bytes()).await })
    }

    fn tokens_from(
        &self,
        before: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<JoinToken>> {
        Box::pin(async move {
            self.tokens
                .batch(before.as_deref(), Order::Newest, limit)
                .await
        })
    }

    fn put_enrollment(&self, computer: &ComputerId, enrollment: &Enrollment) -> Result<()> {
        self.enrollments.put(computer.as_str(), enrollment)
    }

    fn enrollment<'a>(&'a self, computer: &'a ComputerId) -> StoreFuture<'a, Option<Enrollment>> {
        Box::pin(async move { self.enrollments.get(computer.as_str()).await })
    }

    fn enrollments_from(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> StoreFuture<'_, Batch<Enrollment>> {
        Box::pin(async move {
            self.enrollments
                .batch(after.as_deref(), Order::Oldest, limit)
                .await
        })
    }

    fn count_failure(&self, key: &str, failure: Failure) -> Result<()> {
        self.failures.count(key, failure)
    }

    fn failures<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Vec<Bucket>> {
        Box::pin(async move {
            let keys: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
            let found = self.failures.get_many::<Bucket>(&keys).await?;
            Ok(found.into_iter().map(Option::unwrap_or_default).collect())
        })
    }

    fn prune(&self, cutoff: Timestamp, now: Timestamp, window: Duration) -> StoreFuture<'_, usize> {
        Box::pin(self.prune_older(cutoff, now, window))
    }
}

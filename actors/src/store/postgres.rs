//! The PostgreSQL backend of the store: each of the store's tables is a table
//! of `(key bytea PRIMARY KEY, value bytea)` holding the very keys and
//! versioned records of the sled store, so that orders, cursors and schema
//! upgrades are one and the same (bytea compares byte by byte, as sled does).
//!
//! Writes are taken at once into a list of pending operations; a flush
//! commits the whole list in one transaction (group commit: callers that
//! arrive while one commits share the next, see [`super::flusher`]). A read
//! of a table this process has written to first waits for those writes to
//! be committed, so that the process reads its own writes, as with sled. A commit
//! that fails puts its operations back at the head of the list, in order: a
//! caller told "unavailable" may still see its writes land with a later
//! commit, as with any database whose COMMIT was not answered, and no later
//! write is ever overtaken by an earlier one.
//!
//! The schema is made and upgraded by versioned SQL ([`MIGRATIONS`]) applied
//! at start in one transaction under an advisory lock: a migration that
//! fails leaves the schema as it was, and nodes starting together apply each
//! once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::flusher::Flusher;
use super::record::{decode, encode};
use super::table::{Order, Table};
use super::{Result, StoreError};
use crate::names::is_loopback;
use crate::rules::{Bucket, Failure};

/// How to reach the database.
#[derive(Clone)]
pub struct PgConfig {
    /// A libpq-style URL or key-value string; several hosts allowed, with
    /// `target_session_attrs=read-write` to reach the primary.
    pub url: String,
    /// The password, when not in the URL (from a file or the environment).
    pub password: Option<Zeroizing<String>>,
    /// The CA certificates (PEM) that sign the servers' certificates; the
    /// system's when not given.
    pub ca_file: Option<PathBuf>,
    /// The most connections held open.
    pub pool_size: usize,
    /// The longest a statement may run.
    pub statement_timeout: Duration,
}

impl PgConfig {
    /// How to connect: the url's settings with the password, the statement
    /// timeout and TLS as this config says.
    fn settings(&self) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
        let mut pg: tokio_postgres::Config = self
            .url
            .parse()
            // Not the parser's words: they may quote a piece of a password.
            .map_err(|_: tokio_postgres::Error| {
                StoreError::Config(
                    "the url is not a connection string (key=value settings or a \
                     postgresql:// URL)"
                        .into(),
                )
            })?;
        if let Some(password) = &self.password {
            pg.password(password.as_bytes());
        }
        pg.options(format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis()
        ));
        pg.application_name("otpgate");
        // Plain only on this machine: every host loopback, and every address
        // given too (a `hostaddr` is where the connection goes, whatever
        // `host` says); anywhere else, TLS and the server's certificate
        // checked.
        let hosts = pg.get_hosts();
        let loopback = !hosts.is_empty()
            && hosts.iter().all(|host| match host {
                Host::Tcp(name) => is_loopback(name),
                Host::Unix(_) => true,
            })
            && pg.get_hostaddrs().iter().all(std::net::IpAddr::is_loopback);
        // On loopback, plain: a local cluster's certificate is often one no
        // CA signed (Debian's snakeoil), which TLS here would refuse.
        pg.ssl_mode(if loopback {
            SslMode::Disable
        } else {
            SslMode::Require
        });
        Ok((pg, MakeRustlsConnect::new(tls_config(self)?)))
    }

    /// What a server would find, asked without changing anything: the
    /// schema's version (0 before a first start) and whether a server holds
    /// the database now.
    pub async fn probe(&self) -> Result<Probe> {
        let (pg, tls) = self.settings()?;
        let (client, connection) = pg
            .connect(tls)
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let session = tokio::spawn(connection);
        let made: bool = client
            .query_one("SELECT to_regclass('otpgate_schema') IS NOT NULL", &[])
            .await?
            .get(0);
        let schema: i32 = if made {
            client
                .query_one("SELECT coalesce(max(version), 0) FROM otpgate_schema", &[])
                .await?
                .get(0)
        } else {
            0
        };
        // A bigint advisory key shows as its two halves, objsubid 1.
        let held: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid
                   AND objsubid = 1)",
                &[&SITE_LOCK],
            )
            .await?
            .get(0);
        session.abort();
        Ok(Probe {
            schema,
            newest: MIGRATIONS.last().map_or(0, |(version, _)| *version),
            held,
        })
    }

    /// Whether the url itself holds a password (fine in a file of the
    /// owner's; not on a command line, which every user sees).
    pub fn url_has_password(&self) -> bool {
        self.url
            .parse::<tokio_postgres::Config>()
            .is_ok_and(|config| config.get_password().is_some())
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// What [`PgConfig::probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The schema's version in the database; 0 before a first start.
    pub schema: i32,
    /// The newest this build knows.
    pub newest: i32,
    /// Whether a server holds the database now.
    pub held: bool,
}

/// The schema's versions, in order: each applied once, in one transaction.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("postgres/001_tables.sql"))];

/// Held (for the transaction) while the schema is checked and upgraded.
const MIGRATION_LOCK: i64 = 0x6f74_7067_6174_6531;
/// Held (for its session) by the one server that uses the database.
pub(super) const SITE_LOCK: i64 = 0x6f74_7067_6174_6532;
/// How often a server whose session was lost tries to take the site lock
/// again.
const RELOCK_EVERY: Duration = Duration::from_secs(1);
/// How many times a commit makes and locks failure buckets that others
/// remove meanwhile before it gives up.
const COUNT_ROUNDS: usize = 3;
/// How long the site lock is waited for before it is another server's.
const TAKE_WITHIN: Duration = Duration::from_secs(5);

/// How often the session holding the site lock is asked whether it is
/// there (and its TCP keepalive).
const PING_EVERY: Duration = Duration::from_secs(2);

/// A session holding the site lock: its client, its backend's pid, and the
/// task driving its connection, ended (and the lock freed) when this is
/// dropped.
struct Held {
    client: tokio_postgres::Client,
    pid: i32,
    session: tokio::task::JoinHandle<()>,
}

/// Ends when `client`'s session no longer answers within twice
/// [`PING_EVERY`].
async fn unanswered(client: &tokio_postgres::Client) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let ping = client.simple_query("SELECT 1");
        if !matches!(tokio::time::timeout(2 * PING_EVERY, ping).await, Ok(Ok(_))) {
            return;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.session.abort();
    }
}

/// Ends with why when the database was taken by another server.
pub type Taken = std::pin::Pin<Box<dyn std::future::Future<Output = StoreError> + Send>>;

/// How many ids one trip to the database's sequence reserves (its
/// increment, in `001_tables.sql`).
const ID_BLOCK: u64 = 1024;

/// The writes taken and not yet committed.
#[derive(Default)]
struct Pending {
    /// Waiting for the next commit, in order.
    ops: Vec<Op>,
    /// How many writes of each table are pending or being committed.
    tables: HashMap<&'static str, usize>,
    /// ... and of each key.
    keys: HashMap<(&'static str, Vec<u8>), usize>,
}

impl Pending {
    fn take(&mut self, op: Op) {
        *self.tables.entry(op.table()).or_default() += 1;
        *self
            .keys
            .entry((op.table(), op.key().to_vec()))
            .or_default() += 1;
        self.ops.push(op);
    }

    /// Forgets `ops`, committed.
    fn settle(&mut self, ops: &[Op]) {
        for op in ops {
            if let Some(count) = self.tables.get_mut(op.table()) {
                *count -= 1;
            }
            let key = (op.table(), op.key().to_vec());
            if let Some(count) = self.keys.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.keys.remove(&key);
                }
            }
        }
    }
}

/// A write waiting for the next commit.
pub(super) enum Op {
    /// Insert or replace.
    Put {
        table: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Remove, if there.
    Remove { table: &'static str, key: Vec<u8> },
    /// Count a failure against a key of `table` (its bucket read and
    /// replaced under a row lock).
    Count {
        table: &'static str,
        key: Vec<u8>,
        failure: Failure,
    },
}

impl Op {
    fn table(&self) -> &'static str {
        match self {
            Self::Put { table, .. } | Self::Remove { table, .. } | Self::Count { table, .. } => {
                table
            }
        }
    }

    fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Remove { key, .. } | Self::Count { key, .. } => key,
        }
    }
}

/// What a commit does to one key: its last put or removal, if any (`Some(None)`
/// removes), then the failures counted after it.
#[derive(Default)]
struct Change<'a> {
    base: Option<Option<&'a [u8]>>,
    counts: Vec<Failure>,
}

/// What `ops` do, by table and key, both in order: the order in which every
/// node's commits lock rows, so that two never wait for each other.
fn changes(ops: &[Op]) -> BTreeMap<&'static str, BTreeMap<&[u8], Change<'_>>> {
    let mut changes: BTreeMap<_, BTreeMap<_, Change<'_>>> = BTreeMap::new();
    for op in ops {
        let change = changes
            .entry(op.table())
            .or_default()
            .entry(op.key())
            .or_default();
        match op {
            Op::Put { value, .. } => {
                *change = Change {
                    base: Some(Some(value)),
                    counts: Vec::new(),
                }
            }
            Op::Remove { .. } => {
                *change = Change {
                    base: Some(None),
                    counts: Vec::new(),
                }
            }
            Op::Count { failure, .. } => change.counts.push(*failure),
        }
    }
    changes
}

/// The database, its pending writes and the ids reserved.
pub(super) struct Pg {
    pool: Pool,
    /// How to open a connection outside the pool (see [`Pg::alone`]).
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    pending: Mutex<Pending>,
    flusher: Flusher,
    /// Held by the commit under way.
    committing: tokio::sync::Mutex<()>,
    /// The next id to hand out, and the end of the block reserved.
    ids: tokio::sync::Mutex<(u64, u64)>,
}

impl Pg {
    /// The database `config` names, connected to on first use; its schema
    /// as it is (see [`Pg::migrate`]).
    pub(super) fn new(config: &PgConfig) -> Result<Self> {
        let (pg, tls) = config.settings()?;
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .build()
            .map_err(|err| StoreError::Config(err.to_string()))?;
        Ok(Self {
            pool,
            config: pg,
            tls,
            pending: Mutex::default(),
            flusher: Flusher::default(),
            committing: tokio::sync::Mutex::new(()),
            ids: tokio::sync::Mutex::new((0, 0)),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))
    }

    /// Takes the database for this process alone: an advisory lock held by
    /// a session of its own (outside the pool). The returned future ends, with
    /// why, only if another process took the lock while this one's session
    /// was gone (the database restarted, the network failed): until then it
    /// takes the lock again whenever its session ends; dropping it ends the
    /// session and frees the lock. Refused if another process holds the lock
    /// for [`TAKE_WITHIN`] (a server that just stopped frees it sooner).
    pub(super) async fn alone(self: &Arc<Self>) -> Result<Taken> {
        let mut held = self.lock_site(None).await?;
        let pg = Arc::clone(self);
        Ok(Box::pin(async move {
            loop {
                // Ends when the session does (the lock goes with it), or when
                // it stops answering (a half-open connection holds nothing
                // the database still counts on).
                let Held {
                    client, session, ..
                } = &mut held;
                tokio::select! {
                    _ = session => {}
                    () = unanswered(client) => {}
                }
                // No commit lands while the lock is not held.
                let _no_commits = pg.committing.lock().await;
                tracing::warn!("the database session holding the site lock ended; taking it again");
                let previous = held.pid;
                drop(held);
                held = loop {
                    match pg.lock_site(Some(previous)).await {
                        Ok(held) => break held,
                        Err(err @ StoreError::Taken) => return err,
                        Err(_) => tokio::time::sleep(RELOCK_EVERY).await,
                    }
                };
            }
        }))
    }

    /// A new session holding the site lock, tried for [`TAKE_WITHIN`]. A
    /// session of this process's that lost its connection (`previous`, a
    /// backend the database has not noticed is gone yet) is ended first.
    async fn lock_site(&self, previous: Option<i32>) -> Result<Held> {
        let mut config = self.config.clone();
        config.keepalives_idle(PING_EVERY);
        let (client, connection) = config
            .connect(self.tls.clone())
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let session = tokio::spawn(async move {
            let _ = connection.await;
        });
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        let held = Held {
            client,
            pid,
            session,
        };
        if let Some(previous) = previous {
            held.client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks
                     WHERE locktype = 'advisory' AND granted AND pid = $1",
                    &[&previous],
                )
                .await?;
        }
        let tried = tokio::time::Instant::now();
        loop {
            let locked: bool = held
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&SITE_LOCK])
                .await?
                .get(0);
            if locked {
                return Ok(held);
            }
            if tried.elapsed() >= TAKE_WITHIN {
                return Err(StoreError::Taken);
            }
            tokio::time::sleep(RELOCK_EVERY / 4).await;
        }
    }

    /// Applies the migrations this database lacks; refuses one whose schema
    /// is newer than this build.
    pub(super) async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS otpgate_schema (
                 version integer PRIMARY KEY,
                 applied timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        let applied: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM otpgate_schema", &[])
            .await?
            .get(0);
        let newest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if applied > newest {
            return Err(StoreError::Config(format!(
                "the database's schema is version {applied}, newer than this build's \
                 ({newest}): upgrade otpgate"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO otpgate_schema (version) VALUES ($1)",
                &[version],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `op` for the next commit.
    pub(super) fn push(&self, op: Op) {
        self.pending().take(op);
    }

    /// Makes every write taken before this call durable (group commit).
    pub(super) async fn flush(self: &Arc<Self>) -> Result<()> {
        self.flusher
            .flush(|| {
                // In a task of its own: a caller that stops waiting (a
                // request dropped) must not drop a commit halfway, with its
                // writes taken from the queue and not put back.
                let pg = Arc::clone(self);
                async move {
                    tokio::spawn(async move { pg.commit().await })
                        .await
                        .map_err(|_| StoreError::FlushAborted)?
                }
            })
            .await
    }

    /// Commits every pending write in one transaction, one commit at a time
    /// (one left running by a caller that stopped waiting included), so that
    /// commits land in the order their writes were taken.
    async fn commit(&self) -> Result<()> {
        let _alone = self.committing.lock().await;
        let ops = std::mem::take(&mut self.pending().ops);
        if ops.is_empty() {
            return Ok(());
        }
        let applied = self.apply(&ops).await;
        let mut pending = self.pending();
        if applied.is_ok() {
            pending.settle(&ops);
        } else {
            let later = std::mem::replace(&mut pending.ops, ops);
            pending.ops.extend(later);
        }
        applied
    }

    /// Waits until this process's writes to `table` (to its `key`, if one is
    /// given) are committed, so that a read sees them, as a sled read does
    /// before its flush.
    async fn settled(self: &Arc<Self>, table: &'static str, key: Option<&[u8]>) -> Result<()> {
        let unsettled = {
            let pending = self.pending();
            match key {
                Some(key) => pending.keys.contains_key(&(table, key.to_vec())),
                None => pending.tables.get(table).is_some_and(|count| *count > 0),
            }
        };
        if unsettled {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Applies `ops` in one transaction: for each table, one statement for
    /// its removals, one for its puts, and three for its counts.
    async fn apply(&self, ops: &[Op]) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for (table, changes) in changes(ops) {
            let (mut removed, mut put, mut values, mut counted) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (key, change) in &changes {
                match change.base {
                    Some(None) => removed.push(*key),
                    Some(Some(value)) => {
                        put.push(*key);
                        values.push(value);
                    }
                    None => {}
                }
                if !change.counts.is_empty() {
                    counted.push(*key);
                }
            }
            if !removed.is_empty() {
                let remove = tx
                    .prepare_cached(&format!("DELETE FROM {table} WHERE key = ANY($1)"))
                    .await?;
                tx.execute(&remove, &[&removed]).await?;
            }
            if !put.is_empty() {
                let upsert = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {table} (key, value)
                         SELECT * FROM unnest($1::bytea[], $2::bytea[])
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                    ))
                    .await?;
                tx.execute(&upsert, &[&put, &values]).await?;
            }
            if !counted.is_empty() {
                count(&tx, table, &counted, &changes).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Loads every pair of `tables` (another store's, read `batch` at a
    /// time) into this one's tables of the same names, and has its ids go on
    /// from `next_id`: all in one transaction.
    pub(super) async fn load(&self, tables: &[Table], next_id: u64, batch: usize) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for table in tables {
            let name = table.name;
            let insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO {name} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])"
                ))
                .await?;
            let mut after: Option<Vec<u8>> = None;
            loop {
                let pairs = table.after(after.as_deref(), batch).await?;
                let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = pairs
                    .iter()
                    .map(|(key, value)| (key.as_slice(), value.as_slice()))
                    .unzip();
                tx.execute(&insert, &[&keys, &values]).await?;
                if pairs.len() < batch {
                    break;
                }
                after = pairs.last().map(|(key, _)| key.clone());
            }
        }
        let next = i64::try_from(next_id)
            .map_err(|_| StoreError::Config(format!("id {next_id} is out of range")))?;
        tx.execute("SELECT setval('otpgate_ids', $1, false)", &[&next])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A new id: from a block reserved from the database's sequence, so
    /// that ids never repeat, across restarts and nodes.
    pub(super) async fn next_id(&self) -> Result<u64> {
        let mut ids = self.ids.lock().await;
        if ids.0 >= ids.1 {
            let client = self.client().await?;
            let start: i64 = client
                .query_one("SELECT nextval('otpgate_ids')", &[])
                .await?
                .get(0);
            let start = u64::try_from(start).unwrap_or(0);
            *ids = (start, start + ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// The value at `key` of `table`.
    pub(super) async fn get(
        self: &Arc<Self>,
        table: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.settled(table, Some(key)).await?;
        let client = self.client().await?;
        let get = client
            .prepare_cached(&format!("SELECT value FROM {table} WHERE key = $1"))
            .await?;
        Ok(client.query_opt(&get, &[&key]).await?.map(|row| row.get(0)))
    }

    /// The values at `keys` of `table`, in their order.
    pub(super) async fn get_many(
        self: &Arc<Self>,
        table: &'static str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        for key in keys {
            self.settled(table, Some(key)).await?;
        }
        let client = self.client().await?;
        let sql = format!("SELECT key, value FROM {table} WHERE key = ANY($1)");
        let mut found: HashMap<Vec<u8>, Vec<u8>> =
            pairs(&client, &sql, &[&keys]).await?.into_iter().collect();
        Ok(keys.iter().map(|key| found.remove(*key)).collect())
    }

    /// The pairs of `table` whose keys start with `prefix`, in key order.
    pub(super) async fn scan(
        self: &Arc<Self>,
        table: &'static str,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.settled(table, None).await?;
        let client = self.client().await?;
        match successor(prefix) {
            Some(end) => {
                let sql = format!(
                    "SELECT key, value FROM {table} WHERE key >= $1 AND key < $2 ORDER BY key"
                );
                pairs(&client, &sql, &[&prefix, &end]).await
            }
            None => {
                let sql = format!("SELECT key, value FROM {table} WHERE key >= $1 ORDER BY key");
                pairs(&client, &sql, &[&prefix]).await
            }
        }
    }

    /// At most `limit` pairs of `table` after `cursor` (or before it, newest
    /// first).
    pub(super) async fn range(
        self: &Arc<Self>,
        table: &'static str,
        cursor: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.settled(table, None).await?;
        let client = self.client().await?;
        let (from, direction) = match order {
            Order::Oldest => ("key >", "ASC"),
            Order::Newest => ("key <", "DESC"),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match cursor {
            Some(cursor) => {
                let sql = format!(
                    "SELECT key, value FROM {table} WHERE {from} $1
                     ORDER BY key {direction} LIMIT $2"
                );
                pairs(&client, &sql, &[&cursor, &limit]).await
            }
            None => {
                let sql =
                    format!("SELECT key, value FROM {table} ORDER BY key {direction} LIMIT $1");
                pairs(&client, &sql, &[&limit]).await
            }
        }
    }
}

/// Counts the failures of `changes` against buckets `keys` of `table`, each
/// read and replaced under a row lock. A row lock needs a row: a missing
/// bucket is made first (waiting for another node's insert of it), so that
/// two nodes' counts are never both made from none.
async fn count(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &'static str,
    keys: &[&[u8]],
    changes: &BTreeMap<&[u8], Change<'_>>,
) -> Result<()> {
    let made = tx
        .prepare_cached(&format!(
            "INSERT INTO {table} (key, value) SELECT key, $2 FROM unnest($1::bytea[]) AS key
             ON CONFLICT (key) DO NOTHING"
        ))
        .await?;
    let locked = tx
        .prepare_cached(&format!(
            "SELECT key, value FROM {table} WHERE key = ANY($1) ORDER BY key FOR UPDATE"
        ))
        .await?;
    let none = encode(&Bucket::default())?;
    let mut buckets: BTreeMap<Vec<u8>, Bucket> = BTreeMap::new();
    let mut missing = keys.to_vec();
    // A bucket another node removed between this insert and this lock is
    // made again (then it is this transaction's own, and stays: a second
    // round is enough, a few more are not expected).
    for round in 0.. {
        if missing.is_empty() {
            break;
        }
        if round == COUNT_ROUNDS {
            return Err(StoreError::Unavailable(
                "failure buckets kept vanishing under this commit".into(),
            ));
        }
        tx.execute(&made, &[&missing, &none]).await?;
        for row in tx.query(&locked, &[&missing]).await? {
            let bucket = decode::<Bucket>(table, row.get(1)).unwrap_or_default();
            buckets.insert(row.get(0), bucket);
        }
        missing.retain(|key| !buckets.contains_key(*key));
    }
    let (mut counted, mut values) = (Vec::new(), Vec::new());
    for (key, mut bucket) in buckets {
        for failure in changes.get(key.as_slice()).map_or(&[][..], |c| &c.counts) {
            bucket = failure.counted(bucket);
        }
        values.push(encode(&bucket)?);
        counted.push(key);
    }
    let update = tx
        .prepare_cached(&format!(
            "UPDATE {table} SET value = counted.value
             FROM unnest($1::bytea[], $2::bytea[]) AS counted (key, value)
             WHERE {table}.key = counted.key"
        ))
        .await?;
    tx.execute(&update, &[&counted, &values]).await?;
    Ok(())
}

/// The `(key, value)` rows of query `sql` (prepared once per connection).
async fn pairs(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client
        .query(&statement, params)
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// The first key after every key that starts with `prefix`, if one is.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// TLS as `config` says: its CA file's certificates, or the system's.
fn tls_config(config: &PgConfig) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|err| StoreError::Config(format!("{}: {err}", path.display())))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|err| StoreError::Config(format!("{}: {err}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|err| StoreError::Config(err.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_before_its_successor() {
        assert_eq!(successor(b"ws-1\0"), Some(b"ws-1\x01".to_vec()));
        assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff\xff"), None);
        assert_eq!(successor(b""), None);
    }

    #[test]
    fn a_commit_writes_each_key_as_its_last_write_left_it() {
        let failure = Failure {
            at: crate::Timestamp::from_unix_millis(1),
            limit: 5,
            window: Duration::from_secs(60),
        };
        let put = |key: &str, value: &str| Op::Put {
            table: "t",
            key: key.into(),
            value: value.into(),
        };
        let remove = |key: &str| Op::Remove {
            table: "t",
            key: key.into(),
        };
        let count = |key: &str| Op::Count {
            table: "t",
            key: key.into(),
            failure,
        };
        let ops = [
            put("a", "1"),
            remove("a"),
            put("b", "1"),
            put("b", "2"),
            count("c"),
            remove("c"),
            count("c"),
            count("d"),
            put("d", "3"),
            count("d"),
            count("d"),
        ];
        let changes = changes(&ops);
        let t = &changes["t"];
        let seen: Vec<_> = t
            .iter()
            .map(|(key, change)| (*key, change.base, change.counts.len()))
            .collect();
        assert_eq!(
            seen,
            [
                (&b"a"[..], Some(None), 0),
                (b"b", Some(Some(&b"2"[..])), 0),
                (b"c", Some(None), 1),
                (b"d", Some(Some(&b"3"[..])), 2),
            ]
        );
    }
}

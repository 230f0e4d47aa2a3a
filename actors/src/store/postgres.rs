//! The PostgreSQL backend of the store: each of the store's tables is a table
//! of `(key bytea PRIMARY KEY, value bytea)` holding the very keys and
//! versioned records of the sled store, so that orders, cursors and schema
//! upgrades are one and the same (bytea compares byte by byte, as sled does).
//!
//! Writes are taken at once into a list of pending operations (those of a
//! computer's actor turn held until the turn flushes, then taken together:
//! see [`super::turn`]); a flush commits the whole list in one transaction
//! (group commit: callers that arrive while one commits share the next, see
//! [`super::flusher`]), leaving out the writes of computers another node
//! took since. A read
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

mod config;
mod locks;
mod notices;
mod writes;

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::broadcast;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::flusher::Flusher;
use super::table::{Order, Table};
use super::turn::Owner;
use super::{Change, Result, StoreError};
use crate::id::ComputerId;
pub use config::{PgConfig, Probe};
#[cfg(test)]
pub(super) use locks::SITE_LOCK;
pub use locks::{Alone, Exclusive, Site, Taken};
#[cfg(test)]
pub(super) use notices::APPLICATION as LISTENING;
pub(super) use writes::Op;
use writes::Pending;

/// One version of the schema.
struct Migration {
    version: i32,
    /// The oldest schema version a build must know to serve a database at
    /// this one (kept from version 6 on, see `006_sessions_tokens.sql`); `None`:
    /// this one.
    served_from: Option<i32>,
    sql: &'static str,
}

/// The schema's versions, in order: each applied once, in one transaction.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        served_from: None,
        sql: include_str!("postgres/001_tables.sql"),
    },
    Migration {
        version: 2,
        served_from: None,
        sql: include_str!("postgres/002_recordings.sql"),
    },
    Migration {
        version: 3,
        served_from: None,
        sql: include_str!("postgres/003_owners.sql"),
    },
    Migration {
        version: 4,
        served_from: None,
        sql: include_str!("postgres/004_revocations.sql"),
    },
    Migration {
        version: 5,
        served_from: None,
        sql: include_str!("postgres/005_nodes.sql"),
    },
    // Only a table version 5 never reads: nodes of that release serve on
    // (though, knowing nothing of `served_from`, they do not start again).
    Migration {
        version: 6,
        served_from: Some(5),
        sql: include_str!("postgres/006_sessions_tokens.sql"),
    },
    // Only a table version 6 never reads.
    Migration {
        version: 7,
        served_from: Some(6),
        sql: include_str!("postgres/007_offline_codes.sql"),
    },
];

/// The newest schema version this build knows.
pub(super) fn newest() -> i32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// The schema a database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// Its version; 0 before a first start.
    pub version: i32,
    /// The oldest version a build must know to serve it.
    pub needs: i32,
}

impl Schema {
    /// Read from `otpgate_schema` (which must exist).
    async fn read(client: &impl tokio_postgres::GenericClient) -> Result<Self> {
        let version: i32 = client
            .query_one("SELECT coalesce(max(version), 0) FROM otpgate_schema", &[])
            .await?
            .get(0);
        // `served_from` exists from version 6 on, so in any database newer
        // than this build.
        let needs = if version > newest() {
            client
                .query_one(
                    "SELECT coalesce(max(coalesce(served_from, version)), 0)
                     FROM otpgate_schema WHERE version > $1",
                    &[&newest()],
                )
                .await?
                .get(0)
        } else {
            version
        };
        Ok(Self { version, needs })
    }
}

/// Held (for the transaction) while the schema is checked and upgraded.
const MIGRATION_LOCK: i64 = 0x6f74_7067_6174_6531;
/// How long a node's hold on a computer keeps other nodes from taking it
/// after its last commit for it (see [`Pg::own`]).
const LEASE: Duration = Duration::from_millis(500);
/// How long [`Pg::own`] waits for another node's lease to end.
const OWN_WITHIN: Duration = Duration::from_secs(5);
/// How long [`Pg::own`] waits for a lease its holder keeps renewing before
/// it takes the computer all the same: a node that never stops working on a
/// computer does not starve the others (nodes then take turns of about this
/// long).
pub(super) const YIELD_WITHIN: Duration = Duration::from_secs(2);
/// How many changes heard are held for a listener that is behind (one
/// further behind is told it missed some).
const CHANGES_HELD: usize = 64;
/// How many ids one trip to the database's sequence reserves (its
/// increment, in `001_tables.sql`).
const ID_BLOCK: u64 = 1024;

/// The database, its pending writes and the ids reserved.
pub(super) struct Pg {
    pool: Pool,
    /// How to open a connection outside the pool (see [`locks`]).
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    pending: Mutex<Pending>,
    flusher: Flusher,
    /// Held by the commit under way.
    committing: tokio::sync::Mutex<()>,
    /// The owners whose writes a commit left out: another node took their
    /// computers since.
    fenced: Mutex<HashSet<Arc<Owner>>>,
    /// The newest fence each computer is known to be held with by another
    /// node (see [`notices`]).
    taken: Mutex<HashMap<ComputerId, i64>>,
    /// When this node last renewed (or took) each computer's lease.
    renewed: Mutex<HashMap<ComputerId, std::time::Instant>>,
    /// What other nodes change, told to whoever listens.
    changes: broadcast::Sender<Change>,
    /// The session holding (or trying for) the sender's lock, and whether
    /// it holds it (see [`Pg::sender`]).
    sending: tokio::sync::Mutex<Option<locks::Sending>>,
    /// Whether this node sent the mail when last asked: mail it queues
    /// wakes no other node.
    sends: AtomicBool,
    /// The sessions that take the locks of [`Alone`].
    exclusive: locks::Sessions,
    /// Hears what other nodes change, once [`Pg::listen`] has started it.
    listening: Mutex<Option<notices::Listening>>,
    /// This process, as `owners` names the node holding a computer.
    node: i64,
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
            fenced: Mutex::default(),
            taken: Mutex::default(),
            renewed: Mutex::default(),
            changes: broadcast::channel(CHANGES_HELD).0,
            sending: tokio::sync::Mutex::default(),
            sends: AtomicBool::new(false),
            exclusive: locks::Sessions::default(),
            listening: Mutex::default(),
            // Never 0, which names nobody in `owners`.
            node: rand::random_range(1..i64::MAX),
            ids: tokio::sync::Mutex::new((0, 0)),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))
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
        let schema = Schema::read(&*tx).await?;
        if schema.needs > newest() {
            return Err(StoreError::Config(format!(
                "the database's schema is version {}, newer than this build's ({}) and not \
                 served by it: upgrade otpgate",
                schema.version,
                newest()
            )));
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > schema.version) {
            tx.batch_execute(migration.sql).await?;
            // `served_from` is a column from version 6 on.
            match migration.served_from {
                None => {
                    tx.execute(
                        "INSERT INTO otpgate_schema (version) VALUES ($1)",
                        &[&migration.version],
                    )
                    .await?
                }
                Some(from) => {
                    tx.execute(
                        "INSERT INTO otpgate_schema (version, served_from) VALUES ($1, $2)",
                        &[&migration.version, &from],
                    )
                    .await?
                }
            };
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

    /// Takes `computer` for this node: raises its fence, once every commit
    /// holding its row has ended, and tells the other nodes (see
    /// [`notices`]); keeps it when this node holds it already (its actor
    /// started again, or loads it again). A computer another node holds is
    /// left to it while its lease runs ([`LEASE`], renewed by each of its
    /// commits for the computer): this waits, up to [`OWN_WITHIN`], so that
    /// nodes with work for one computer at once take turns at it rather
    /// than fence each other's turns out.
    pub(super) async fn own(&self, computer: &ComputerId) -> Result<Owner> {
        let waited = tokio::time::Instant::now();
        loop {
            let despite_lease = waited.elapsed() >= YIELD_WITHIN;
            if let Some(owner) = self.try_own(computer, despite_lease).await? {
                // Its earlier holds are past: forgotten.
                self.fenced().retain(|owner| owner.computer != *computer);
                return Ok(owner);
            }
            if waited.elapsed() >= OWN_WITHIN {
                return Err(StoreError::Unavailable(format!(
                    "computer {computer} stayed busy on another server"
                )));
            }
            let jitter = LEASE.mul_f64(rand::random_range(0.0..0.1));
            tokio::time::sleep(LEASE / 10 + jitter).await;
        }
    }

    /// [`Pg::own`], once: `None` while another node's lease runs, unless
    /// `despite_lease`.
    async fn try_own(&self, computer: &ComputerId, despite_lease: bool) -> Result<Option<Owner>> {
        let began = std::time::Instant::now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let key = computer.as_str().as_bytes();
        // A row to lock, held by nobody (node 0), so that two nodes taking
        // a computer for the first time at once take turns too.
        let row = tx
            .prepare_cached(
                "INSERT INTO owners (key, fence, node, until) VALUES ($1, 0, 0, now())
                 ON CONFLICT (key) DO NOTHING",
            )
            .await?;
        tx.execute(&row, &[&key]).await?;
        let held = tx
            .prepare_cached(
                "SELECT fence, node, until > now() FROM owners WHERE key = $1 FOR UPDATE",
            )
            .await?;
        let (fence, took) = match tx.query_opt(&held, &[&key]).await? {
            Some(row) if row.get::<_, i64>(1) == self.node => (row.get(0), false),
            Some(row) if row.get::<_, bool>(2) && !despite_lease => return Ok(None),
            _ => {
                let take = tx
                    .prepare_cached(
                        "UPDATE owners SET fence = fence + 1, node = $2,
                             until = now() + $3 * interval '1 second'
                         WHERE key = $1 RETURNING fence",
                    )
                    .await?;
                let fence: i64 = tx
                    .query_one(&take, &[&key, &self.node, &LEASE.as_secs_f64()])
                    .await?
                    .get(0);
                let tell = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
                let taken = format!("{fence} {} {computer}", self.node);
                tx.execute(&tell, &[&notices::OWNERS, &taken]).await?;
                (fence, true)
            }
        };
        tx.commit().await?;
        if took {
            self.renewed().insert(computer.clone(), began);
        }
        Ok(Some(Owner {
            computer: computer.clone(),
            fence,
        }))
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
        let cursor = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        match order {
            Order::Oldest => self.between(table, (cursor, Bound::Unbounded), order, limit),
            Order::Newest => self.between(table, (Bound::Unbounded, cursor), order, limit),
        }
        .await
    }

    /// At most `limit` pairs of `table` whose keys are within `bounds`, in
    /// `order`.
    pub(super) async fn between(
        self: &Arc<Self>,
        table: &'static str,
        (from, to): (Bound<&[u8]>, Bound<&[u8]>),
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.settled(table, None).await?;
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut sql = format!("SELECT key, value FROM {table} WHERE true");
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        for (bound, included, excluded) in [(&from, ">=", ">"), (&to, "<=", "<")] {
            let (operator, key) = match bound {
                Bound::Included(key) => (included, key),
                Bound::Excluded(key) => (excluded, key),
                Bound::Unbounded => continue,
            };
            params.push(key);
            sql.push_str(&format!(" AND key {operator} ${}", params.len()));
        }
        let direction = match order {
            Order::Oldest => "ASC",
            Order::Newest => "DESC",
        };
        params.push(&limit);
        sql.push_str(&format!(
            " ORDER BY key {direction} LIMIT ${}",
            params.len()
        ));
        pairs(&client, &sql, &params).await
    }
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
}

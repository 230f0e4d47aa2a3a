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

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};
use zeroize::Zeroizing;

use super::flusher::Flusher;
use super::record::{decode, encode};
use super::table::Order;
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

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// The schema's versions, in order: each applied once, in one transaction.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("postgres/001_tables.sql"))];

/// Held (for the transaction) while the schema is checked and upgraded.
const MIGRATION_LOCK: i64 = 0x6f74_7067_6174_6531;

/// How many ids one trip to the database's sequence reserves (its
/// increment, in `001_tables.sql`).
const ID_BLOCK: u64 = 1024;

/// The writes taken and not yet committed.
#[derive(Default)]
struct Pending {
    /// Waiting for the next commit, in order.
    ops: Vec<Op>,
    /// How many writes of each table are pending or being committed.
    unsettled: std::collections::HashMap<&'static str, usize>,
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
}

/// The database, its pending writes and the ids reserved.
pub(super) struct Pg {
    pool: Pool,
    pending: Mutex<Pending>,
    flusher: Flusher,
    /// The next id to hand out, and the end of the block reserved.
    ids: tokio::sync::Mutex<(u64, u64)>,
}

impl Pg {
    /// Connects as `config` says and brings the schema up to date.
    pub(super) async fn connect(config: &PgConfig) -> Result<Self> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|err: tokio_postgres::Error| StoreError::Config(err.to_string()))?;
        if let Some(password) = &config.password {
            pg.password(password.as_bytes());
        }
        pg.options(format!(
            "-c statement_timeout={}",
            config.statement_timeout.as_millis()
        ));
        pg.application_name("otpgate");
        let loopback = pg.get_hosts().iter().all(|host| match host {
            Host::Tcp(name) => is_loopback(name),
            Host::Unix(_) => true,
        });
        if !loopback {
            // Plain only on this machine: anywhere else, TLS and the
            // server's certificate checked.
            pg.ssl_mode(SslMode::Require);
        }
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(config)?);
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .build()
            .map_err(|err| StoreError::Config(err.to_string()))?;
        let pg = Self {
            pool,
            pending: Mutex::default(),
            flusher: Flusher::default(),
            ids: tokio::sync::Mutex::new((0, 0)),
        };
        pg.migrate().await?;
        Ok(pg)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))
    }

    /// Applies the migrations this database lacks; refuses one whose schema
    /// is newer than this build.
    async fn migrate(&self) -> Result<()> {
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
        let mut pending = self.pending();
        *pending.unsettled.entry(op.table()).or_default() += 1;
        pending.ops.push(op);
    }

    /// Makes every write taken before this call durable (group commit).
    pub(super) async fn flush(&self) -> Result<()> {
        self.flusher.flush(|| self.commit()).await
    }

    /// Commits every pending write in one transaction.
    async fn commit(&self) -> Result<()> {
        let ops = std::mem::take(&mut self.pending().ops);
        if ops.is_empty() {
            return Ok(());
        }
        let applied = self.apply(&ops).await;
        let mut pending = self.pending();
        if applied.is_ok() {
            for op in &ops {
                if let Some(count) = pending.unsettled.get_mut(op.table()) {
                    *count -= 1;
                }
            }
        } else {
            let later = std::mem::replace(&mut pending.ops, ops);
            pending.ops.extend(later);
        }
        applied
    }

    /// Waits until this process's writes to `table` are committed, so that
    /// a read sees them (as a sled read does before its flush).
    async fn settled(&self, table: &str) -> Result<()> {
        let unsettled = self
            .pending()
            .unsettled
            .get(table)
            .is_some_and(|count| *count > 0);
        if unsettled {
            self.flush().await
        } else {
            Ok(())
        }
    }

    async fn apply(&self, ops: &[Op]) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    let put = tx
                        .prepare_cached(&format!(
                            "INSERT INTO {table} (key, value) VALUES ($1, $2)
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                        ))
                        .await?;
                    tx.execute(&put, &[key, value]).await?;
                }
                Op::Remove { table, key } => {
                    let remove = tx
                        .prepare_cached(&format!("DELETE FROM {table} WHERE key = $1"))
                        .await?;
                    tx.execute(&remove, &[key]).await?;
                }
                Op::Count {
                    table,
                    key,
                    failure,
                } => {
                    // A row lock needs a row: a missing bucket is made
                    // first (waiting for another node's insert of it), so
                    // that two nodes' counts are never both made from none.
                    let made = tx
                        .prepare_cached(&format!(
                            "INSERT INTO {table} (key, value) VALUES ($1, $2)
                             ON CONFLICT (key) DO NOTHING"
                        ))
                        .await?;
                    tx.execute(&made, &[key, &encode(&Bucket::default())?])
                        .await?;
                    let locked = tx
                        .prepare_cached(&format!(
                            "SELECT value FROM {table} WHERE key = $1 FOR UPDATE"
                        ))
                        .await?;
                    let row = tx.query_one(&locked, &[key]).await?;
                    let bucket = decode::<Bucket>(table, row.get(0)).unwrap_or_default();
                    let value = encode(&failure.counted(bucket))?;
                    let put = tx
                        .prepare_cached(&format!("UPDATE {table} SET value = $2 WHERE key = $1"))
                        .await?;
                    tx.execute(&put, &[key, &value]).await?;
                }
            }
        }
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
    pub(super) async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.settled(table).await?;
        let client = self.client().await?;
        let get = client
            .prepare_cached(&format!("SELECT value FROM {table} WHERE key = $1"))
            .await?;
        Ok(client.query_opt(&get, &[&key]).await?.map(|row| row.get(0)))
    }

    /// The pairs of `table` whose keys start with `prefix`, in key order.
    pub(super) async fn scan(&self, table: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.settled(table).await?;
        let client = self.client().await?;
        let rows = match successor(prefix) {
            Some(end) => {
                let scan = client
                    .prepare_cached(&format!(
                        "SELECT key, value FROM {table} WHERE key >= $1 AND key < $2 ORDER BY key"
                    ))
                    .await?;
                client.query(&scan, &[&prefix, &end]).await?
            }
            None => {
                let scan = client
                    .prepare_cached(&format!(
                        "SELECT key, value FROM {table} WHERE key >= $1 ORDER BY key"
                    ))
                    .await?;
                client.query(&scan, &[&prefix]).await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    /// At most `limit` pairs of `table` after `cursor` (or before it, newest
    /// first).
    pub(super) async fn range(
        &self,
        table: &str,
        cursor: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.settled(table).await?;
        let client = self.client().await?;
        let (from, direction) = match order {
            Order::Oldest => ("key >", "ASC"),
            Order::Newest => ("key <", "DESC"),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match cursor {
            Some(cursor) => {
                let range = client
                    .prepare_cached(&format!(
                        "SELECT key, value FROM {table} WHERE {from} $1
                         ORDER BY key {direction} LIMIT $2"
                    ))
                    .await?;
                client.query(&range, &[&cursor, &limit]).await?
            }
            None => {
                let range = client
                    .prepare_cached(&format!(
                        "SELECT key, value FROM {table} ORDER BY key {direction} LIMIT $1"
                    ))
                    .await?;
                client.query(&range, &[&limit]).await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }
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
}

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
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
    let store: Arc<dyn Store> = Arc::new(KvStore::open(dir).unwrap());
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

/// A throwaway PostgreSQL cluster for this test process, on a free port of
/// 127.0.0.1, started once (Debian's `initdb` and `pg_ctl`, as the
/// `postgres` account when run as root: `initdb` refuses root), and stopped
/// and removed by a watchdog once this process is gone.
pub struct PgCluster {
    port: u16,
    next: std::sync::atomic::AtomicU32,
}

/// The cluster of this test process, started on first use; `None` where
/// PostgreSQL is not installed (the test then says it skipped, and fails
/// under `OTPGATE_NO_SKIP`).
pub fn postgres() -> Option<&'static PgCluster> {
    static CLUSTER: std::sync::OnceLock<Option<PgCluster>> = std::sync::OnceLock::new();
    CLUSTER.get_or_init(PgCluster::start).as_ref()
}

impl PgCluster {
    fn start() -> Option<Self> {
        use std::process::Command;

        let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .find(|bin| bin.join("initdb").exists())
        else {
            assert!(
                std::env::var_os("OTPGATE_NO_SKIP").is_none(),
                "PostgreSQL is not installed (scripts/test installs it)"
            );
            eprintln!("skipped: PostgreSQL is not installed");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("otpgate-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
        let run = |program: &str| {
            let mut command = if root {
                let mut command = Command::new("runuser");
                command
                    .args(["-u", "postgres", "--"])
                    .arg(bin.join(program));
                command
            } else {
                Command::new(bin.join(program))
            };
            command.env_remove("PGDATA");
            command
        };
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster's folder");
        }
        let data = dir.join("data");
        let out = run("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "otpgate", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = run("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
                dir.display()
            ))
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {out:?}");
        // Stopped and removed once this process is gone, however it ends.
        let stop = if root {
            format!("runuser -u postgres -- {}", bin.join("pg_ctl").display())
        } else {
            bin.join("pg_ctl").display().to_string()
        };
        // (A watcher in the background of a shell that returns at once.)
        let watcher = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
                 {stop} -D {data} -m immediate stop; rm -rf {dir}) &",
                pid = std::process::id(),
                data = data.display(),
                dir = dir.display(),
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(watcher.success(), "start the cluster's watcher");
        Some(Self {
            port,
            next: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A new, empty database of its own, and how to reach it.
    pub async fn database(&self) -> crate::store::PgConfig {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        let admin = format!(
            "host=127.0.0.1 port={} user=otpgate dbname=postgres",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        crate::store::PgConfig {
            url: format!(
                "host=127.0.0.1 port={} user=otpgate dbname={name}",
                self.port
            ),
            password: None,
            ca_file: None,
            pool_size: 4,
            statement_timeout: std::time::Duration::from_secs(10),
        }
    }
}

//! A throwaway PostgreSQL cluster for tests, here and in the daemon's
//! black-box suite (feature `testing`): Debian's `initdb` and `pg_ctl` on a
//! free port of 127.0.0.1, never the packaged cluster.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::store::PgConfig;

/// A throwaway PostgreSQL cluster for this test process, on a free port of
/// 127.0.0.1, started once (Debian's `initdb` and `pg_ctl`, as the
/// `postgres` account when run as root: `initdb` refuses root), and stopped
/// and removed by a watchdog once this process is gone.
pub struct PgCluster {
    /// Its folder: the data folder `data`, the socket and the log.
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    /// Whether this process is root (the cluster is then `postgres`'s).
    root: bool,
    port: u16,
    next: AtomicU32,
}

/// The cluster of this test process, started on first use; `None` where
/// PostgreSQL is not installed (the test then says it skipped, and fails
/// under `OTPGATE_NO_SKIP`).
pub fn postgres() -> Option<&'static PgCluster> {
    static CLUSTER: OnceLock<Option<PgCluster>> = OnceLock::new();
    CLUSTER.get_or_init(PgCluster::start).as_ref()
}

impl PgCluster {
    /// A cluster of the caller's own (to stop and start), or `None` as
    /// [`postgres`] says.
    pub fn start() -> Option<Self> {
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
        let cluster = Self::folder(bin);
        let out = cluster
            .run("initdb")
            .arg("-D")
            .arg(&cluster.data)
            .args(["-A", "trust", "-U", "otpgate", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        cluster.resume();
        cluster.watch();
        Some(cluster)
    }

    /// A streaming standby of this cluster (`pg_basebackup`), on a port of
    /// its own; and this cluster made to wait for it at every commit
    /// (synchronous commit), so that a commit answered is on both.
    pub fn standby(&self) -> Self {
        let standby = Self::folder(self.bin.clone());
        let out = standby
            .run("pg_basebackup")
            .arg("-D")
            .arg(&standby.data)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "otpgate",
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "-p",
            ])
            .arg(self.port.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_basebackup: {out:?}");
        standby.resume();
        standby.watch();
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "otpgate", "-d", "postgres", "-p"])
            .arg(self.port.to_string())
            .args([
                "-c",
                "ALTER SYSTEM SET synchronous_standby_names = '*'",
                "-c",
                "SELECT pg_reload_conf()",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql: {out:?}");
        standby
    }

    /// Makes this standby the primary (`pg_ctl promote`).
    pub fn promote(&self) {
        self.pg_ctl(["-w", "promote"]);
    }

    /// Runs `pg_ctl -D <its data folder> ARGS`, which must succeed.
    fn pg_ctl<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) {
        let out = self
            .run("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl: {out:?}");
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A cluster of programs `bin` in a new folder (owned by `postgres`
    /// when this process is root), to listen on a free port; not made yet.
    fn folder(bin: PathBuf) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("otpgate-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
        if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster's folder");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            data: dir.join("data"),
            dir,
            bin,
            root,
            port,
            next: AtomicU32::new(0),
        }
    }

    /// Has the cluster stopped and removed once this process is gone,
    /// however it ends (a watcher in the background of a shell that
    /// returns at once).
    fn watch(&self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let stop = if self.root {
            format!("runuser -u postgres -- {pg_ctl}")
        } else {
            pg_ctl
        };
        let watcher = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
                 {stop} -D {data} -m immediate stop; rm -rf {dir}) &",
                pid = std::process::id(),
                data = self.data.display(),
                dir = self.dir.display(),
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(watcher.success(), "start the cluster's watcher");
    }

    /// `program` of PostgreSQL's, as the account that owns the cluster.
    fn run(&self, program: &str) -> Command {
        let mut command = if self.root {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join(program));
            command
        } else {
            Command::new(self.bin.join(program))
        };
        command.env_remove("PGDATA");
        command
    }

    /// Starts the cluster (again), and waits until it takes connections.
    pub fn resume(&self) {
        let settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.pg_ctl([
            "-o".as_ref(),
            settings.as_ref(),
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
            "start".as_ref(),
        ]);
    }

    /// Stops the cluster at once (as a crash would: `-m immediate`).
    pub fn halt(&self) {
        self.pg_ctl(["-m", "immediate", "-w", "stop"]);
    }

    /// A new, empty database of its own (`createdb`), and how to reach it.
    pub fn database(&self) -> PgConfig {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "otpgate", "-p"])
            .arg(self.port.to_string())
            .arg(&name)
            .output()
            .unwrap();
        assert!(out.status.success(), "createdb: {out:?}");
        PgConfig {
            url: format!(
                "host=127.0.0.1 port={} user=otpgate dbname={name}",
                self.port
            ),
            password: None,
            ca_file: None,
            pool_size: 4,
            statement_timeout: Duration::from_secs(10),
        }
    }
}

//! A server under test: in this process ([`TestServer`]) or as a child process
//! of the real binary ([`ServerProcess`]), each on a port and data folder of its
//! own; and client identities issued from its CA.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use otpgate::server::config::{Overrides, ServerConfig};
use otpgate::server::{self, Listeners, Server};
use otpgate::tls::pki;
use otpgate::unix;
use otpgate_actors::store::SideDb;
use otpgate_actors::{Clock, Computers, KvStore, Store, SystemClock};
use otpgate_protocol::admin::{
    AdminRequest, AdminResponse, AuditView, ListFilter, OptionsView, PageRequest, RecordingView,
    RequestView, RoleView, SessionView, SettingsPatch, SettingsView,
};
use otpgate_protocol::login::Secret;

use super::agent::{Agent, Desk};
use super::mail::codes_for;
use super::{HEARTBEAT_MS, init_logs, me};

/// The password the tests give the first administrator.
pub const ADMIN_PASSWORD: &str = "the tests' administrator password";

/// A handshake (and Hello) timeout short enough for tests to see it.
pub const HANDSHAKE_MS: u64 = 2000;

/// A `[store]` section that keeps the store in sled whatever the suite runs
/// on: for what only sled has (backups of the data folder).
pub const SLED: &str = "[store]\nbackend = \"sled\"\n";

/// The `[store]` section of the servers of folder `dir`: none (sled in the
/// data folder), or under `OTPGATE_TEST_STORE=postgres` a database of their
/// own in this test process's PostgreSQL cluster, the same one for every
/// start on `dir` (its url kept in `dir/store.url`).
fn store_section(dir: &Path) -> String {
    let Some(url) = postgres_url(dir) else {
        return String::new();
    };
    format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = 4\n")
}

/// The url of `dir`'s database when the suite runs on PostgreSQL, made on
/// first use.
fn postgres_url(dir: &Path) -> Option<String> {
    if !in_postgres() {
        return None;
    }
    let kept = dir.join("store.url");
    if let Ok(url) = std::fs::read_to_string(&kept) {
        return Some(url);
    }
    let cluster = otpgate_actors::test_postgres::postgres()
        .expect("OTPGATE_TEST_STORE=postgres needs PostgreSQL (scripts/test installs it)");
    let url = cluster.database().url;
    std::fs::write(&kept, &url).unwrap();
    Some(url)
}

/// Whether this run's servers keep their store in PostgreSQL
/// (`OTPGATE_TEST_STORE=postgres`).
pub fn in_postgres() -> bool {
    std::env::var("OTPGATE_TEST_STORE").as_deref() == Ok("postgres")
}

/// The recordings of the server whose data folder is `data` (stopped),
/// where it keeps them; read and written on a blocking thread.
pub async fn open_recordings(data: &Path) -> SideDb {
    match open_store(data).await.side() {
        Some(in_postgres) => in_postgres,
        None => SideDb::open(&data.join("recordings")).unwrap(),
    }
}

/// The store of the server whose data folder is `data` (stopped), as it
/// keeps it.
pub async fn open_store(data: &Path) -> KvStore {
    match postgres_url(data.parent().unwrap()) {
        Some(url) => KvStore::connect(&otpgate_actors::PgConfig {
            url,
            password: None,
            ca_file: None,
            pool_size: 2,
            statement_timeout: Duration::from_secs(10),
        })
        .await
        .unwrap(),
        None => KvStore::open(&data.join("db")).unwrap(),
    }
}

/// Writes a test configuration into `dir` and returns its path: heartbeats every
/// `heartbeat_ms`, handshakes within `handshake_ms`, then `extra` TOML sections
/// (the suite's `[store]` unless `extra` has one).
pub fn write_config(dir: &Path, heartbeat_ms: u64, handshake_ms: u64, extra: &str) -> PathBuf {
    let store = if extra.contains("[store]") {
        String::new()
    } else {
        store_section(dir)
    };
    config_file(
        dir,
        heartbeat_ms,
        handshake_ms,
        &format!("{extra}\n{store}"),
    )
}

/// [`write_config`] with `extra` as it is.
fn config_file(dir: &Path, heartbeat_ms: u64, handshake_ms: u64, extra: &str) -> PathBuf {
    let path = dir.join("otpgate.toml");
    let directory = dir.join("directory.toml");
    std::fs::write(
        &directory,
        format!(
            "[accounts]\n\"{me}\" = \"{me}@example.com\"\n\"alice\" = \"alice@example.com\"\n{accounts}",
            me = me(),
            accounts = super::system::ACCOUNTS
                .iter()
                .map(|name| format!("\"{name}\" = \"{name}@example.com\"\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    std::fs::write(
        &path,
        format!(
            "heartbeat_interval_ms = {heartbeat_ms}\nhandshake_timeout_ms = {handshake_ms}\n\
             directory_file = {directory:?}\nadmin_email = \"admin@example.com\"\n{extra}\n\
             [web]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    path
}

/// A server running in this process, on a port of its own.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where the web Management Tool listens.
    pub web: SocketAddr,
    pub data: tempfile::TempDir,
    pub computers: Computers,
    clock: Arc<dyn Clock>,
    extra: String,
    cancel: CancellationToken,
    task: JoinHandle<server::Stopped>,
}

impl TestServer {
    /// A server on the system clock.
    pub async fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// A server whose wall-clock time is `clock`'s.
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::start_with(clock, "").await
    }

    /// A server whose wall-clock time is `clock`'s, with `extra` configuration.
    pub async fn start_with(clock: Arc<dyn Clock>, extra: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        Self::open(data, &super::restartable_listen(), clock, extra.to_owned()).await
    }

    /// A server on the system clock whose database `seed` filled before it
    /// started: for lists longer than a test could make through the front door.
    pub async fn start_seeded(seed: impl FnOnce(&dyn Store)) -> Self {
        let data = tempfile::tempdir().unwrap();
        {
            let store = open_store(&data.path().join("data")).await;
            seed(&store);
            store.flush().await.unwrap();
        }
        Self::open(
            data,
            &super::restartable_listen(),
            Arc::new(SystemClock),
            String::new(),
        )
        .await
    }

    /// A server on the system clock on data folder `data/data`, made
    /// elsewhere (a restore, a copy), with `extra` configuration.
    pub async fn start_on(data: tempfile::TempDir, extra: &str) -> Self {
        Self::open(
            data,
            &super::restartable_listen(),
            Arc::new(SystemClock),
            extra.to_owned(),
        )
        .await
    }

    /// Another node of `first`'s site: its own data folder with `first`'s
    /// secret and CA (so that `first`'s computers are taken here too, and
    /// its OTPs and tickets are this one's), over `first`'s database when
    /// that is PostgreSQL.
    pub async fn start_node_of(first: &TestServer) -> Self {
        let data = tempfile::tempdir().unwrap();
        let (from, to) = (first.data_dir(), data.path().join("data"));
        std::fs::create_dir_all(to.join("pki")).unwrap();
        for file in ["secret.key", "pki/ca.pem", "pki/ca.key"] {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
        if let Ok(url) = std::fs::read_to_string(first.data.path().join("store.url")) {
            std::fs::write(data.path().join("store.url"), url).unwrap();
        }
        Self::open(
            data,
            &super::restartable_listen(),
            Arc::new(SystemClock),
            first.extra.clone(),
        )
        .await
    }

    /// A server on the system clock with `extra` configuration (an `[smtp]`
    /// section, say).
    pub async fn start_with_config(extra: &str) -> Self {
        Self::start_with(Arc::new(SystemClock), extra).await
    }

    async fn open(
        data: tempfile::TempDir,
        listen: &str,
        clock: Arc<dyn Clock>,
        extra: String,
    ) -> Self {
        init_logs();
        let overrides = Overrides {
            data_dir: Some(data.path().join("data")),
            listen: Some(listen.into()),
        };
        let path = write_config(data.path(), HEARTBEAT_MS, HANDSHAKE_MS, &extra);
        let config = ServerConfig::load(Some(&path), overrides).unwrap();
        let listeners = Listeners::bind(&config).unwrap();
        let server = Server::open_with_clock(&config, listeners, clock.clone())
            .await
            .unwrap();
        if !extra.contains("[store]") && postgres_url(data.path()).is_some() {
            let sled = data.path().join("data").join("db");
            assert!(!sled.exists(), "the suite runs on PostgreSQL, not sled");
        }
        let computers = server.computers();
        let web = server.web_addr().unwrap();
        let addr = server.agent_addr().unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.run(cancel.clone().cancelled_owned()));
        Self {
            addr,
            web,
            data,
            computers,
            clock,
            extra,
            cancel,
            task,
        }
    }

    /// Stops the server gracefully and starts it again on the same data folder,
    /// port and clock.
    pub async fn restart(self) -> Self {
        let extra = self.extra.clone();
        self.restart_with(&extra).await
    }

    /// As [`TestServer::restart`], with `extra` configuration instead.
    pub async fn restart_with(self, extra: &str) -> Self {
        let mut paused = self.pause().await;
        paused.extra = extra.to_owned();
        paused.resume().await
    }

    /// Stops the server gracefully, to be started again by [`Paused::resume`]
    /// on the same data folder, port and clock.
    pub async fn pause(self) -> Paused {
        let (addr, clock, extra) = (self.addr, self.clock.clone(), self.extra.clone());
        Paused {
            data: self.stop().await,
            addr,
            clock,
            extra,
        }
    }

    /// Runs `otpgate admin ARGS` against this server's data folder.
    pub async fn admin_cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_otpgate"));
        command
            .arg("admin")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args);
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    }

    /// Adds internal user `login` (`login@example.com`, password
    /// "`login`'s long password") with `role`.
    /// Makes client group `name`, its computers allowed OTPs.
    pub async fn add_group(&self, name: &str) {
        let made = self
            .admin(AdminRequest::GroupSet {
                name: name.into(),
                options: OptionsView {
                    allow_otp: Some(true),
                    ..OptionsView::default()
                },
            })
            .await;
        assert_eq!(made, AdminResponse::Done);
    }

    pub async fn add_user(&self, login: &str, role: RoleView) {
        let added = self
            .admin(AdminRequest::UserAdd {
                login: login.into(),
                email: format!("{login}@example.com"),
                role,
                password: Secret(format!("{login}'s long password")),
            })
            .await;
        assert_eq!(added, AdminResponse::Done);
    }

    /// Waits until the server holds a terminal recording that has ended; the
    /// newest such.
    pub async fn ended_recording(&self) -> RecordingView {
        ended_recording(&self.data_dir()).await
    }

    /// Sets client computer `computer`'s options (its group left as is).
    pub async fn set_client(&self, computer: &str, options: OptionsView) {
        let set = AdminRequest::ClientSet {
            computer: computer.into(),
            group: None,
            options,
        };
        assert_eq!(self.admin(set).await, AdminResponse::Done);
    }

    /// Asks the running server's admin socket.
    pub async fn admin(&self, request: AdminRequest) -> AdminResponse {
        admin_ask(&self.data_dir(), request).await
    }

    /// The System Settings now.
    pub async fn settings(&self) -> SettingsView {
        match self.admin(AdminRequest::SettingsGet).await {
            AdminResponse::Settings(settings) => settings,
            other => panic!("{other:?}"),
        }
    }

    /// Changes the System Settings `patch` names.
    pub async fn set_settings(&self, patch: SettingsPatch) {
        let answer = self.admin(AdminRequest::SettingsSet(patch)).await;
        assert!(matches!(answer, AdminResponse::Settings(_)), "{answer:?}");
    }

    /// The newest `limit` entries of the audit log (one page), oldest first.
    pub async fn audit(&self, limit: u32) -> Vec<AuditView> {
        let request = AdminRequest::AuditList {
            filter: ListFilter::default(),
            page: PageRequest { limit, after: None },
        };
        let AdminResponse::Audit(page) = self.admin(request).await else {
            panic!("no audit");
        };
        page.items.into_iter().rev().collect()
    }

    /// The client sessions (the open ones, or all), one page.
    pub async fn sessions(&self, all: bool) -> Vec<SessionView> {
        let request = AdminRequest::SessionsList {
            all,
            filter: ListFilter::default(),
            page: PageRequest::default(),
        };
        match self.admin(request).await {
            AdminResponse::Sessions(page) => page.items,
            other => panic!("{other:?}"),
        }
    }

    /// The access requests (the pending ones, or all), one page.
    pub async fn requests(&self, all: bool) -> Vec<RequestView> {
        let request = AdminRequest::RequestsList {
            all,
            filter: ListFilter::default(),
            page: PageRequest::default(),
        };
        match self.admin(request).await {
            AdminResponse::Requests(page) => page.items,
            other => panic!("{other:?}"),
        }
    }

    /// The OTPs mailed to `to`, oldest first, once there are at least `count`.
    pub async fn codes_for(&self, to: &str, count: usize) -> Vec<String> {
        codes_for(&self.data_dir(), to, count).await
    }

    /// Starts client computer `name`: its identity, and its agent serving a
    /// login socket.
    pub async fn desk(&self, name: &str) -> Desk {
        self.desk_with(name, crate::common::agent::unlimited())
            .await
    }

    /// Client computer `name`, its agent giving each local user `limits`.
    pub async fn desk_with(&self, name: &str, limits: otpgate::agent::socket::Limits) -> Desk {
        Desk::start_with(
            &self.identity(name),
            self.addr,
            self.data.path().join(format!("{name}.sock")),
            limits,
        )
        .await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// The first administrator's password: the one the first start made opens
    /// nothing until changed, so it is changed to [`ADMIN_PASSWORD`] first.
    pub async fn admin_password(&self) -> String {
        if self.initial_password_file().exists() {
            let changed = self
                .admin(AdminRequest::UserSet {
                    login: "admin".into(),
                    email: None,
                    role: None,
                    password: Some(Secret(ADMIN_PASSWORD.into())),
                    disabled: None,
                })
                .await;
            assert_eq!(changed, AdminResponse::Done);
        }
        ADMIN_PASSWORD.to_owned()
    }

    /// Has the administrator generate an OTP for `os_user` at `computer`,
    /// emailed to `email` (`new_client`: a computer never seen).
    pub async fn generate(&self, computer: &str, os_user: &str, email: &str, new_client: bool) {
        let generate = AdminRequest::OtpGenerate {
            computer: computer.into(),
            os_user: os_user.into(),
            email: email.into(),
            comment: None,
            by: "admin".into(),
            password: Secret(self.admin_password().await),
            new_client,
        };
        let answer = self.admin(generate).await;
        assert!(
            matches!(answer, AdminResponse::Generated { .. }),
            "{answer:?}"
        );
    }

    /// The password made for the first administrator at the first start, which
    /// opens nothing until changed (see [`TestServer::admin_password`]).
    pub fn initial_password(&self) -> String {
        std::fs::read_to_string(self.initial_password_file())
            .unwrap()
            .trim()
            .to_owned()
    }

    fn initial_password_file(&self) -> PathBuf {
        self.data_dir().join(otpgate::server::INITIAL_PASSWORD_FILE)
    }

    /// Issues client computer `name`'s identity and returns its folder.
    pub fn identity(&self, name: &str) -> PathBuf {
        issue(&self.data_dir(), self.data.path(), name)
    }

    /// The folder client computer `name`'s identity was issued to, as it is
    /// (nothing issued again).
    pub fn identity_dir(&self, name: &str) -> PathBuf {
        identity_dir(self.data.path(), name)
    }

    /// Starts an agent link for identity folder `identity`.
    pub fn agent(&self, identity: &Path) -> Agent {
        Agent::start(identity, self.addr)
    }

    /// Stops the server the way SIGTERM would, and waits for it.
    pub async fn stop(self) -> tempfile::TempDir {
        self.cancel.cancel();
        assert_eq!(
            self.task.await.unwrap(),
            server::Stopped::Clean,
            "every shutdown step in time"
        );
        self.data
    }
}

/// A stopped [`TestServer`], its data folder kept.
pub struct Paused {
    data: tempfile::TempDir,
    addr: SocketAddr,
    clock: Arc<dyn Clock>,
    extra: String,
}

impl Paused {
    /// Its data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// Starts the server again where it was.
    pub async fn resume(self) -> TestServer {
        TestServer::open(self.data, &self.addr.to_string(), self.clock, self.extra).await
    }
}

/// The terminal recordings the server on data folder `data` holds, newest
/// first.
pub async fn recordings(data: &Path) -> Vec<RecordingView> {
    let list = AdminRequest::RecordingsList {
        session: None,
        page: PageRequest::default(),
    };
    match admin_ask(data, list).await {
        AdminResponse::Recordings(page) => page.items,
        other => panic!("{other:?}"),
    }
}

/// Waits until the server on data folder `data` holds a recording that has
/// ended; the newest such.
pub async fn ended_recording(data: &Path) -> RecordingView {
    let ended = || async {
        recordings(data)
            .await
            .into_iter()
            .find(|r| r.ended.is_some())
    };
    super::wait_until(Duration::from_secs(30), "an ended recording", || async {
        ended().await.is_some()
    })
    .await;
    ended().await.unwrap()
}

/// Where client computer `name`'s identity is issued to, under `parent`.
fn identity_dir(parent: &Path, name: &str) -> PathBuf {
    parent.join("identities").join(name)
}

/// Issues client computer `name`'s identity from the CA in `data_dir` into a
/// folder under `parent`.
pub fn issue(data_dir: &Path, parent: &Path, name: &str) -> PathBuf {
    let out = identity_dir(parent, name);
    pki::issue_client(data_dir, &name.parse().unwrap(), &out).unwrap();
    out
}

/// The server binary, run as a child process on a data folder of its own.
pub struct ServerProcess {
    pub addr: SocketAddr,
    pub child: Child,
    pub dir: PathBuf,
    /// The first administrator's password, if this start created them.
    pub initial_password: Option<String>,
    /// Kept open so that the server never writes into a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl ServerProcess {
    /// Starts `otpgate serve` on folder `dir` (configuration, data, log) listening
    /// on `listen`, and waits until it says where it listens.
    pub fn start(dir: &Path, listen: &str) -> Self {
        Self::start_with(dir, listen, HEARTBEAT_MS, HANDSHAKE_MS, "")
    }

    /// As [`ServerProcess::start`], with heartbeats every `heartbeat_ms`,
    /// handshakes within `handshake_ms` and `extra` configuration.
    pub fn start_with(
        dir: &Path,
        listen: &str,
        heartbeat_ms: u64,
        handshake_ms: u64,
        extra: &str,
    ) -> Self {
        let otpgate = Path::new(env!("CARGO_BIN_EXE_otpgate"));
        Self::start_binary(otpgate, dir, listen, heartbeat_ms, handshake_ms, extra)
    }

    /// As [`ServerProcess::start_with`], running binary `otpgate` (another
    /// release's, say).
    pub fn start_binary(
        otpgate: &Path,
        dir: &Path,
        listen: &str,
        heartbeat_ms: u64,
        handshake_ms: u64,
        extra: &str,
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        // Another release's server knows no `[store]`: sled it is.
        let config = if otpgate == super::release::this_otpgate() {
            write_config(dir, heartbeat_ms, handshake_ms, extra)
        } else {
            config_file(dir, heartbeat_ms, handshake_ms, extra)
        };
        let mut child = Command::new(otpgate)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut initial_password = None;
        let addr = loop {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            if let Some(addr) = line.trim().strip_prefix("otpgate listening on ") {
                break addr.parse().unwrap();
            }
            // Not on a terminal: the password is only in the owner's file.
            assert!(
                !line.contains("with password"),
                "the password went to a pipe: {line:?}"
            );
            match line.split_once("the password is in ") {
                Some((_, rest)) => {
                    let file = rest.split(" (mode").next().unwrap();
                    let password = std::fs::read_to_string(file).unwrap();
                    initial_password = Some(password.trim().to_owned());
                }
                None => panic!("server did not start: {line:?}; see {}", dir.display()),
            }
        };
        Self {
            addr,
            child,
            dir: dir.to_owned(),
            initial_password,
            _stdout: stdout,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's resident and peak memory, in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let usage = otpgate::bench::Usage::of(self.child.id()).unwrap();
        (usage.rss_kib, usage.peak_rss_kib)
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks the admin socket of the server whose data folder is `data_dir`.
pub async fn admin_ask(data_dir: &Path, request: AdminRequest) -> AdminResponse {
    unix::ask(&otpgate::server::admin::socket_path(data_dir), &request)
        .await
        .unwrap()
}

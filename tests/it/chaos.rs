//! Several server processes of one site over a PostgreSQL cluster of each
//! test's own, and what happens when parts of it fail: the node holding an
//! agent killed with SIGKILL while its users are mid-login, a node paused
//! with SIGSTOP past its lease while its agent moves on (fencing),
//! PostgreSQL away for ten seconds, and the primary lost to its synchronous
//! standby. A soak that kills a random node
//! every few seconds for two minutes is ignored here (a command in the
//! README).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::agent::{Desk, unlimited};
use crate::common::mail::read_codes;
use crate::common::my_email;
use crate::common::server::{HANDSHAKE_MS, ServerProcess, admin_ask, issue};
use crate::common::{HEARTBEAT_MS, auto_directory};
use otpgate::agent::AgentConfig;
use otpgate_actors::test_postgres::PgCluster;
use otpgate_protocol::admin::{
    AdminRequest, AdminResponse, Choice, ListFilter, OptionsView, PageRequest, SessionView,
};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, RequestState, Requested, Secret, Verdict,
};

/// The administrator's password once the tests set it.
const PASSWORD: &str = "the chaos tests' administrator";
/// How soon an agent must be served by another node after its node died.
const FAILOVER: Duration = Duration::from_secs(5);

/// The server processes of one site, each on a folder of its own (its
/// configuration, data folder and log) and a port it keeps across restarts.
struct Site {
    store: String,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<ServerProcess>>,
    addrs: Vec<SocketAddr>,
}

impl Site {
    /// `count` nodes over the database `url` names; the first made the
    /// site's secret and CA, which the others were given.
    async fn start(url: &str, count: usize) -> Self {
        let store = format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = 4\n");
        let mut site = Self {
            store,
            dirs: Vec::new(),
            nodes: Vec::new(),
            addrs: Vec::new(),
        };
        for n in 0..count {
            let dir = tempfile::tempdir().unwrap();
            if n > 0 {
                let (from, to) = (site.data_dir(0), dir.path().join("data"));
                std::fs::create_dir_all(to.join("pki")).unwrap();
                for file in ["secret.key", "pki/ca.pem", "pki/ca.key"] {
                    std::fs::copy(from.join(file), to.join(file)).unwrap();
                }
            }
            let node = site.serve(dir.path(), &crate::common::restartable_listen());
            site.addrs.push(node.addr);
            site.nodes.push(Some(node));
            site.dirs.push(dir);
        }
        let set = AdminRequest::UserSet {
            login: "admin".into(),
            email: None,
            role: None,
            password: Some(Secret(PASSWORD.into())),
            disabled: None,
        };
        assert_eq!(site.admin(0, set).await, AdminResponse::Done);
        site
    }

    fn serve(&self, dir: &Path, listen: &str) -> ServerProcess {
        ServerProcess::start_with(dir, listen, HEARTBEAT_MS, HANDSHAKE_MS, &self.store)
    }

    fn data_dir(&self, n: usize) -> PathBuf {
        self.dirs[n].path().join("data")
    }

    fn pid(&self, n: usize) -> nix::unistd::Pid {
        let node = self.nodes[n].as_ref().expect("running");
        nix::unistd::Pid::from_raw(i32::try_from(node.child.id()).unwrap())
    }

    /// Kills node `n` with SIGKILL.
    fn kill(&mut self, n: usize) {
        let mut node = self.nodes[n].take().expect("running");
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }

    /// Starts node `n` again, on its port.
    fn restart(&mut self, n: usize) {
        let node = self.serve(self.dirs[n].path(), &self.addrs[n].to_string());
        self.nodes[n] = Some(node);
    }

    fn signal(&self, n: usize, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(n), signal).unwrap();
    }

    async fn admin(&self, n: usize, request: AdminRequest) -> AdminResponse {
        admin_ask(&self.data_dir(n), request).await
    }

    /// Every node's outbox folder.
    fn outboxes(&self) -> Vec<PathBuf> {
        (0..self.dirs.len())
            .map(|n| self.data_dir(n).join("outbox"))
            .collect()
    }

    /// The OTPs mailed to `to` by the site (whichever node sent them).
    fn codes(&self, to: &str) -> Vec<String> {
        let mut codes: Vec<String> = (0..self.dirs.len())
            .flat_map(|n| read_codes(&self.data_dir(n).join("outbox"), to))
            .collect();
        codes.dedup();
        codes
    }

    /// [`Site::codes`], once there are at least `count`.
    async fn codes_for(&self, to: &str, count: usize) -> Vec<String> {
        let mut codes = Vec::new();
        crate::common::wait_until(
            Duration::from_secs(20),
            &format!("{count} OTPs mailed to {to}"),
            || {
                codes = self.codes(to);
                let enough = codes.len() >= count;
                async move { enough }
            },
        )
        .await;
        codes
    }

    /// Client computer `name`, its agent given every node, in this order
    /// (it takes the first that answers).
    async fn desk(&self, name: &str, order: &[usize]) -> Desk {
        let identity = issue(&self.data_dir(0), self.dirs[0].path(), name);
        let socket = self.dirs[0].path().join(format!("{name}.sock"));
        Desk::start_configured(AgentConfig {
            servers: order
                .iter()
                .map(|&n| {
                    format!("localhost:{}", self.addrs[n].port())
                        .parse()
                        .unwrap()
                })
                .collect(),
            identity,
            spool: socket.with_extension("spool"),
            socket,
            limits: unlimited(),
            spool_limit: 64 << 20,
            metrics: None,
            offline_max_away: otpgate::agent::offline::max_away(
                otpgate::agent::offline::DEFAULT_MAX_DAYS,
            ),
        })
        .await
    }

    async fn set_client(&self, n: usize, computer: &str, options: OptionsView) {
        let set = AdminRequest::ClientSet {
            computer: computer.into(),
            group: None,
            options,
        };
        assert_eq!(self.admin(n, set).await, AdminResponse::Done);
    }

    async fn sessions(&self, n: usize) -> Vec<SessionView> {
        let list = AdminRequest::SessionsList {
            all: true,
            filter: ListFilter::default(),
            page: PageRequest::default(),
        };
        match self.admin(n, list).await {
            AdminResponse::Sessions(page) => page.items,
            other => panic!("{other:?}"),
        }
    }
}

async fn verify(
    desk: &Desk,
    code: &str,
) -> Result<LoginResponse, otpgate::cli::prompt::LoginError> {
    desk.ask(LoginRequest::Verify {
        email: my_email(),
        code: Secret(code.into()),
    })
    .await
}

/// How long until `desk` is answered again (its agent served by a node).
async fn served_again(desk: &Desk, since: Instant) -> Duration {
    loop {
        if matches!(
            desk.ask(LoginRequest::Status).await,
            Ok(LoginResponse::Status(_))
        ) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "never served again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_login_leaves_its_agents_otps_and_requests_to_the_others() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let mut site = Site::start(&cluster.database().url, 3).await;
    site.set_client(0, "ws-1", auto_directory()).await;
    let typing = site.desk("ws-1", &[0, 1, 2]).await;
    let asking = site.desk("ws-2", &[0, 1, 2]).await;
    // Mid-login on node 0: an OTP sent, and an access request waiting.
    let sent = typing.request(RequestMode::Directory).await;
    assert!(matches!(sent, Requested::Send { .. }), "{sent:?}");
    let asked = asking.request(RequestMode::Email(my_email())).await;
    let Requested::AwaitApproval { request: id, .. } = asked else {
        panic!("{asked:?}");
    };
    let code = site.codes_for(&my_email(), 1).await.remove(0);

    let killed = Instant::now();
    site.kill(0);
    let took = served_again(&typing, killed).await;
    assert!(took < FAILOVER, "served again after {took:?}");
    served_again(&asking, killed).await;
    // The OTP of the dead node verifies on the new one, once.
    let verdict = verify(&typing, &code).await;
    assert!(
        matches!(verdict, Ok(LoginResponse::Verified(Verdict::Allow { .. }))),
        "{verdict:?}"
    );
    // The request is approved on a third node, and reaches the person.
    let decided = site
        .admin(
            2,
            AdminRequest::RequestDecide {
                id,
                by: "admin".into(),
                password: Secret(PASSWORD.into()),
                choice: Choice::Approve,
                comment: None,
            },
        )
        .await;
    assert!(matches!(decided, AdminResponse::Decided(_)), "{decided:?}");
    let since = Instant::now();
    loop {
        let LoginResponse::Status(status) = asking.login(LoginRequest::Status).await else {
            panic!("no status");
        };
        if status.request == Some((id, RequestState::Approve)) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(2), "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let codes = site.codes_for(&my_email(), 2).await;
    let approved = codes.iter().find(|c| **c != code).unwrap();
    let verdict = verify(&asking, approved).await;
    assert!(
        matches!(verdict, Ok(LoginResponse::Verified(Verdict::Allow { .. }))),
        "{verdict:?}"
    );
    // Back again, node 0 serves the site as before.
    site.restart(0);
    let sessions = site.sessions(0).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_commits_nothing_for_the_computer_it_lost() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let site = Site::start(&cluster.database().url, 2).await;
    site.set_client(0, "ws-1", auto_directory()).await;
    let desk = site.desk("ws-1", &[0, 1]).await;
    let sent = desk.request(RequestMode::Directory).await;
    assert!(matches!(sent, Requested::Send { .. }), "{sent:?}");
    let code = site.codes_for(&my_email(), 1).await.remove(0);

    // Node 0 stops dead, and the OTP is typed: its check waits in node 0's
    // socket, unanswered. The agent moves to node 1, which takes the
    // computer once node 0's lease is over, and the OTP is typed again.
    site.signal(0, nix::sys::signal::Signal::SIGSTOP);
    let stale = verify(&desk, &code).await;
    assert!(stale.is_err(), "{stale:?}");
    served_again(&desk, Instant::now()).await;
    let verdict = verify(&desk, &code).await;
    assert!(
        matches!(verdict, Ok(LoginResponse::Verified(Verdict::Allow { .. }))),
        "{verdict:?}"
    );
    // Node 0 goes on where it stopped, with the check it held: whether it
    // hears first that node 1 took the computer (and then takes it back,
    // as a respawned actor would, and finds the OTP used) or checks it
    // against what it held (and its commit, under the old fence, is left
    // out), nobody is let in twice.
    site.signal(0, nix::sys::signal::Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sessions = site.sessions(1).await;
    assert_eq!(sessions.len(), 1, "one login: {sessions:?}");
    let verdict = verify(&desk, &code).await;
    assert!(
        matches!(verdict, Ok(LoginResponse::Verified(Verdict::Deny))),
        "{verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_lost_to_its_synchronous_standby_loses_no_otp_announced_as_sent() {
    let Some(primary) = PgCluster::start() else {
        return;
    };
    let config = primary.database();
    let standby = primary.standby();
    // Both hosts, the writable one taken: every node follows a promotion.
    let url = config.url.replace(
        &format!("host=127.0.0.1 port={}", primary.port()),
        &format!(
            "host=127.0.0.1,127.0.0.1 port={},{} target_session_attrs=read-write",
            primary.port(),
            standby.port()
        ),
    );
    let site = Site::start(&url, 2).await;
    let mut desks = Vec::new();
    for (n, name) in ["ws-1", "ws-2"].into_iter().enumerate() {
        site.set_client(0, name, auto_directory()).await;
        let desk = site.desk(name, &[n, 1 - n]).await;
        let sent = desk.request(RequestMode::Directory).await;
        assert!(matches!(sent, Requested::Send { .. }), "{sent:?}");
        desks.push(desk);
    }
    let codes = site.codes_for(&my_email(), 2).await;

    // The primary dies; its standby, which had every commit, takes over.
    primary.halt();
    standby.promote();
    for (desk, code) in desks.iter().zip(&codes) {
        let since = Instant::now();
        let verdict = loop {
            match verify(desk, code).await {
                Ok(verdict) => break verdict,
                Err(_) if since.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("still unavailable: {err:?}"),
            }
        };
        assert!(
            matches!(verdict, LoginResponse::Verified(Verdict::Allow { .. })),
            "{verdict:?}"
        );
    }
    // And new logins go on, on both nodes.
    site.set_client(1, "ws-3", auto_directory()).await;
    let desk = site.desk("ws-3", &[1, 0]).await;
    let sent = desk.request(RequestMode::Directory).await;
    assert!(
        matches!(sent, Requested::Send { .. } | Requested::Resend { .. }),
        "{sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_for_ten_seconds_is_unavailable_on_every_node_and_served_after() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let site = Site::start(&cluster.database().url, 3).await;
    let settings = AdminRequest::SettingsSet(otpgate_protocol::admin::SettingsPatch {
        new_otp_interval_secs: Some(0),
        ..Default::default()
    });
    assert!(matches!(
        site.admin(0, settings).await,
        AdminResponse::Settings(_)
    ));
    let mut desks = Vec::new();
    for n in 0..3 {
        let computer = format!("ws-{n}");
        site.set_client(0, &computer, auto_directory()).await;
        desks.push(site.desk(&computer, &[n, (n + 1) % 3, (n + 2) % 3]).await);
    }
    let sent = desks[0].request(RequestMode::Directory).await;
    assert!(matches!(sent, Requested::Send { .. }), "{sent:?}");
    let first = site.codes_for(&my_email(), 1).await.remove(0);

    // Neither allowed nor denied on any node, for as long as it is away:
    // unavailable, said as such.
    cluster.halt();
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(10) {
        let during = verify(&desks[0], &first).await;
        assert!(during.is_err(), "{during:?}");
        for desk in &desks[1..] {
            let during = desk
                .ask(LoginRequest::Request(RequestMode::Directory))
                .await;
            assert!(during.is_err(), "{during:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cluster.resume();
    // No node restarted: each serves again, a new OTP opening the login.
    for (n, desk) in desks.iter().enumerate() {
        let since = Instant::now();
        while !matches!(
            desk.ask(LoginRequest::Request(RequestMode::Directory))
                .await,
            Ok(LoginResponse::Requested(Requested::Send { .. }))
        ) {
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "node {n} not served again"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let computer = "ws-0";
    let since = Instant::now();
    let newest = loop {
        let mailed = delivered(&site.outboxes(), &my_email(), computer);
        match mailed.last() {
            Some(code) if *code != first => break code.clone(),
            _ => {
                assert!(
                    since.elapsed() < Duration::from_secs(20),
                    "no new OTP mailed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let allowed = verify(&desks[0], &newest).await;
    assert!(
        matches!(allowed, Ok(LoginResponse::Verified(Verdict::Allow { .. }))),
        "{allowed:?}"
    );
}

/// The OTPs mailed to `to` for computer `computer` by the site whose
/// outbox folders are `outboxes`, in the order they were delivered.
fn delivered(outboxes: &[PathBuf], to: &str, computer: &str) -> Vec<String> {
    let subject = format!("Your one-time password for {computer}");
    let mut mails: Vec<(std::time::SystemTime, String)> = outboxes
        .iter()
        .filter_map(|outbox| std::fs::read_dir(outbox).ok())
        .flatten()
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "eml" {
                return None;
            }
            let modified = path.metadata().ok()?.modified().ok()?;
            let text = std::fs::read_to_string(&path).ok()?;
            let mail = otpgate::bench::read_otp_mail(&text)?;
            (mail.to == to && text.contains(&subject)).then_some((modified, mail.code))
        })
        .collect();
    mails.sort();
    mails.into_iter().map(|(_, code)| code).collect()
}

/// What one computer's logins saw during the soak.
#[derive(Debug, Default)]
struct Seen {
    logins: u64,
    /// OTPs let in a second time.
    twice: u64,
    /// OTPs announced as sent whose mail never came (or never let in).
    lost: u64,
    /// OTPs whose check was answered "unavailable" (its node died, say)
    /// and which were used all the same: the person asks for a new one.
    used_unanswered: u64,
    /// The longest the computer's logins were refused in a row.
    longest_refusal: Duration,
    /// The longest one request or check took to be answered.
    slowest: Duration,
    /// The announced OTPs that never let the person in, to say.
    notes: Vec<String>,
}

/// How one login of the soak ended, once its OTP was announced as sent.
enum Ended {
    /// Let in.
    Allowed,
    /// Its check was answered "unavailable" (its node died, say) and was
    /// carried out all the same: the person asks for a new OTP.
    UsedUnanswered,
    /// No OTP mailed for it let the person in within 20 s.
    Never,
}

/// Counts the time a computer's logins are refused in a row.
#[derive(Default)]
struct Refusals {
    since: Option<Instant>,
    longest: Duration,
}

impl Refusals {
    fn refused(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    fn served(&mut self) {
        if let Some(since) = self.since.take() {
            self.longest = self.longest.max(since.elapsed());
        }
    }
}

/// Logs in on `desk` (computer `computer`) again and again until `until`.
async fn keep_logging_in(
    desk: Desk,
    computer: String,
    outboxes: Vec<PathBuf>,
    until: Instant,
) -> Seen {
    let mut seen = Seen::default();
    let mut refusals = Refusals::default();
    let mut used = std::collections::HashSet::new();
    while Instant::now() < until {
        let asking = Instant::now();
        let asked = desk
            .ask(LoginRequest::Request(RequestMode::Directory))
            .await;
        seen.slowest = seen.slowest.max(asking.elapsed());
        if !matches!(
            asked,
            Ok(LoginResponse::Requested(
                Requested::Send { .. } | Requested::Resend { .. }
            ))
        ) {
            refusals.refused();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut tried = Vec::new();
        let ended = log_in(
            &desk,
            (&computer, &outboxes),
            &mut used,
            &mut tried,
            &mut seen,
            &mut refusals,
        )
        .await;
        match ended {
            Ended::Allowed => seen.logins += 1,
            Ended::UsedUnanswered => seen.used_unanswered += 1,
            Ended::Never => {
                seen.lost += 1;
                let mailed = delivered(&outboxes, &my_email(), &computer);
                seen.notes.push(format!(
                    "{computer}: {asked:?}, never let in: tried {tried:?}, mailed {mailed:?}"
                ));
            }
        }
    }
    seen.longest_refusal = refusals.longest;
    seen
}

/// Types the newest OTP mailed for `computer` (read from `outboxes`) that is
/// not in `used` until it lets the person in, for at most 20 s; each OTP
/// that did is tried again, and must not.
async fn log_in(
    desk: &Desk,
    (computer, outboxes): (&str, &[PathBuf]),
    used: &mut std::collections::HashSet<String>,
    tried: &mut Vec<String>,
    seen: &mut Seen,
    refusals: &mut Refusals,
) -> Ended {
    let announced = Instant::now();
    // Codes whose check went unanswered.
    let mut unanswered = std::collections::HashSet::new();
    while announced.elapsed() < Duration::from_secs(20) {
        let newest = delivered(outboxes, &my_email(), computer)
            .into_iter()
            .rfind(|code| !used.contains(code));
        let Some(code) = newest else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let checking = Instant::now();
        let checked = verify(desk, &code).await;
        seen.slowest = seen.slowest.max(checking.elapsed());
        tried.push(format!("{code}: {checked:?}"));
        match checked {
            Ok(LoginResponse::Verified(Verdict::Allow { .. })) => {
                refusals.served();
                used.insert(code.clone());
                let again = verify(desk, &code).await;
                if matches!(again, Ok(LoginResponse::Verified(Verdict::Allow { .. }))) {
                    seen.twice += 1;
                }
                return Ended::Allowed;
            }
            Ok(LoginResponse::Verified(Verdict::Deny)) => {
                used.insert(code.clone());
                if unanswered.contains(&code) {
                    refusals.served();
                    return Ended::UsedUnanswered;
                }
                // Superseded by a newer one (its request was answered
                // "unavailable" but committed): that one comes.
            }
            _ => {
                unanswered.insert(code);
                refusals.refused();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ended::Never
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a two-minute soak: cargo test --test it -- --ignored --nocapture soak"]
async fn soak_three_nodes_one_killed_every_five_to_ten_seconds() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let mut site = Site::start(&cluster.database().url, 3).await;
    // One person logs in on every computer, again and again, and tries each
    // OTP a second time: no interval, and no throttling of their failures.
    let settings = AdminRequest::SettingsSet(otpgate_protocol::admin::SettingsPatch {
        new_otp_interval_secs: Some(0),
        max_new_per_computer: Some(u32::MAX),
        max_failures: Some(u32::MAX / 2),
        ..Default::default()
    });
    let set = site.admin(0, settings).await;
    assert!(matches!(set, AdminResponse::Settings(_)), "{set:?}");
    let outboxes = site.outboxes();
    let until = Instant::now() + Duration::from_secs(120);
    let mut logging_in = tokio::task::JoinSet::new();
    for n in 0..12 {
        let computer = format!("ws-{:02}", n + 1);
        site.set_client(0, &computer, auto_directory()).await;
        let order = [n % 3, (n + 1) % 3, (n + 2) % 3];
        let desk = site.desk(&computer, &order).await;
        logging_in.spawn(keep_logging_in(desk, computer, outboxes.clone(), until));
    }
    let mut kills = 0;
    while Instant::now() + Duration::from_secs(10) < until {
        tokio::time::sleep(Duration::from_millis(rand::random_range(5000..10_000))).await;
        let n = rand::random_range(0..3);
        site.kill(n);
        kills += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        site.restart(n);
    }
    let seen = logging_in.join_all().await;
    let logins: u64 = seen.iter().map(|s| s.logins).sum();
    let twice: u64 = seen.iter().map(|s| s.twice).sum();
    let lost: u64 = seen.iter().map(|s| s.lost).sum();
    let used_unanswered: u64 = seen.iter().map(|s| s.used_unanswered).sum();
    let longest = seen.iter().map(|s| s.longest_refusal).max();
    let slowest = seen.iter().map(|s| s.slowest).max();
    for note in seen.iter().flat_map(|s| &s.notes) {
        println!("soak: {note}");
    }
    println!(
        "soak: 3 nodes, 12 computers, 120 s, {kills} nodes killed: {logins} logins, \
         {twice} OTPs let in twice, {lost} announced OTPs lost, {used_unanswered} checks \
         answered \"unavailable\" and carried out, logins refused for {longest:?} in a row \
         at most, slowest answer {slowest:?}"
    );
    let longest = longest.unwrap_or_default();
    assert_eq!(twice, 0);
    assert_eq!(lost, 0);
    assert!(longest < FAILOVER, "refused for {longest:?}");
    assert!(logins > 0);
}

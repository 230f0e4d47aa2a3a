//! The login scenarios. `logins`: agents log in over and over (request an OTP,
//! which the server mails at once to the directory's address; read it from the
//! mail; verify it, which opens a client session; log out), at a target rate or
//! as fast as they can. `flood`: the same for honest agents while attackers
//! send wrong codes as fast as they can, to show that locking holds and that the
//! others are still served.
//!
//! The bench sets up the server it started as an operator would: a directory
//! file with one account per agent, a client group `bench` with Automatically
//! Send OTPs to Active Directory users, every agent's computer in it, and the
//! shortest time between two new OTPs at 0 so that one agent may log in many
//! times in a run.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use otpgate_protocol::admin::{AdminRequest, OptionsView, SettingsPatch};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};
use otpgate_protocol::{ErrorCode, Request, Response};

use super::mailbox::Mailbox;
use super::{
    Fleet, FleetOptions, Kinds, Percentiles, Server, ServerSetup, Usage, add_kind, agent_name,
    ask_admin, describe_kinds, histogram, record,
};
use crate::agent::link::Link;

/// How long a login waits for its OTP message.
const MAIL_WAIT: Duration = Duration::from_secs(30);
/// The domain of the bench accounts' addresses.
const MAIL_DOMAIN: &str = "bench.test";
/// The client group the bench puts its computers in.
const GROUP: &str = "bench";
/// How many computers are put in the group at once.
const SETUP_CONCURRENCY: usize = 32;

/// What a login storm is asked to do.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// Logins in all, at most.
    pub count: usize,
    /// Logins started per second; `None`: as fast as the agents can.
    pub rate: Option<f64>,
    /// No login starts after this long.
    pub duration: Duration,
}

/// The result of a login storm.
#[derive(Debug, Clone, Serialize)]
pub struct LoginReport {
    /// Agents logging in.
    pub agents: usize,
    /// The target rate, if any, in logins per second.
    pub target_rate: Option<f64>,
    /// Logins started.
    pub attempted: u64,
    /// Logins that ended in a client session (and its logout).
    pub completed: u64,
    /// Seconds from the first login's start to the last one's end.
    pub secs: f64,
    /// Completed logins per second.
    pub logins_per_sec: f64,
    /// From the moment a login was due (by the target rate) until the server
    /// allowed it, in milliseconds: request, mail, verify, all durable.
    pub latency_ms: Percentiles,
    /// Logins that failed, by why.
    pub errors: Kinds,
    /// The server at the end.
    pub server: Usage,
}

impl LoginReport {
    pub(super) fn describe(&self) -> String {
        let rate = self
            .target_rate
            .map_or("as fast as possible".into(), |r| format!("target {r:.0}/s"));
        format!(
            "logins: {} agents, {rate}: {} of {} completed in {:.2} s ({:.0}/s)\n\
             login latency ms: {}\nerrors: {}\n{}",
            self.agents,
            self.completed,
            self.attempted,
            self.secs,
            self.logins_per_sec,
            self.latency_ms.describe(),
            describe_kinds(&self.errors),
            self.server.describe(self.agents)
        )
    }
}

/// The result of a wrong-OTP flood.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    /// Agents sending wrong codes.
    pub attackers: usize,
    /// Wrong codes sent.
    pub wrong_codes: u64,
    /// Wrong codes per second.
    pub wrong_per_sec: f64,
    /// What the server answered to them.
    pub verdicts: Kinds,
    /// Wrong codes that were let in: must be 0.
    pub wrongly_allowed: u64,
    /// Attackers let in with their right code after the flood: must be 0, since
    /// their OTPs were locked by then.
    pub right_code_after_lock_allowed: u64,
    /// The honest agents' logins meanwhile.
    pub honest: LoginReport,
}

impl FloodReport {
    pub(super) fn describe(&self) -> String {
        format!(
            "flood: {} attackers sent {} wrong codes ({:.0}/s): {}\n\
             wrong codes allowed: {}; right codes allowed after the lock: {}\n\
             meanwhile, {}",
            self.attackers,
            self.wrong_codes,
            self.wrong_per_sec,
            describe_kinds(&self.verdicts),
            self.wrongly_allowed,
            self.right_code_after_lock_allowed,
            self.honest.describe()
        )
    }
}

/// Runs the login storm.
pub async fn logins(fleet: FleetOptions, storm: LoginOptions) -> anyhow::Result<LoginReport> {
    with_setup(&fleet, async |server, fleet, mailbox| {
        let stop = CancellationToken::new();
        storm_on((server, fleet), &fleet.links, 0, mailbox, &storm, &stop).await
    })
    .await
}

/// Runs the wrong-OTP flood: the first `attackers` agents attack while the others
/// log in as in [`logins`].
pub async fn flood(
    fleet: FleetOptions,
    storm: LoginOptions,
    attackers: usize,
) -> anyhow::Result<FloodReport> {
    anyhow::ensure!(
        attackers > 0 && attackers < fleet.agents,
        "need at least one attacker and one honest agent"
    );
    with_setup(&fleet, async |server, fleet, mailbox| {
        let (bad, good) = fleet.links.split_at(attackers);
        let stop = CancellationToken::new();
        let attack = Attack::start(bad, mailbox, &stop).await?;
        let honest = storm_on((server, fleet), good, attackers, mailbox, &storm, &stop).await;
        stop.cancel();
        let attack = attack.finish().await?;
        let honest = honest?;
        let mut right_code_after_lock_allowed = 0;
        for (link, user, code) in &attack.right_codes {
            let verdict = call(link, user, verify(user, code)).await;
            if matches!(verdict, Ok(LoginResponse::Verified(Verdict::Allow { .. }))) {
                right_code_after_lock_allowed += 1;
            }
        }
        Ok(FloodReport {
            attackers,
            wrong_codes: attack.sent,
            wrong_per_sec: attack.sent as f64 / attack.secs.max(f64::EPSILON),
            verdicts: attack.verdicts,
            wrongly_allowed: attack.allowed,
            right_code_after_lock_allowed,
            honest,
        })
    })
    .await
}

/// Starts the server set up for logins, connects the agents, puts their
/// computers in the bench group, runs `scenario`, and stops everything.
async fn with_setup<T>(
    options: &FleetOptions,
    scenario: impl AsyncFnOnce(&Server, &Fleet, &Arc<Mailbox>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::files::create_private_dir(&options.work_dir)?;
    let directory = options.work_dir.join("directory.toml");
    let mut accounts = String::from("[accounts]\n");
    for i in 0..options.agents {
        let name = agent_name(i);
        writeln!(accounts, "{name:?} = \"{name}@{MAIL_DOMAIN}\"")?;
    }
    std::fs::write(&directory, accounts)?;
    let setup = ServerSetup::new(options, Some(directory));
    let (server, fleet) = Fleet::start(options, &setup).await?;
    let result = async {
        let (welcomed, last) = fleet
            .welcomed(&vec![1; fleet.len()], Instant::now(), &mut histogram())
            .await;
        anyhow::ensure!(
            welcomed == fleet.len(),
            "only {welcomed} of {} agents connected",
            fleet.len()
        );
        eprintln!(
            "bench: {welcomed} welcomed in {:.2} s; setting up",
            last.as_secs_f64()
        );
        configure(&server, &fleet).await?;
        let mailbox = Arc::new(Mailbox::open(&server.data.join("outbox"))?);
        scenario(&server, &fleet, &mailbox).await
    }
    .await;
    fleet.stop();
    server.stop();
    result
}

/// Sets the server (and its other nodes) up for repeated automatic logins
/// of the fleet's agents.
async fn configure(server: &Server, fleet: &Fleet) -> anyhow::Result<()> {
    let agents = fleet.len();
    server
        .admin(&AdminRequest::SettingsSet(SettingsPatch {
            // Each agent's user logs in over and over: no interval, and room
            // for every login (and every attacker's failure) in the window.
            new_otp_interval_secs: Some(0),
            max_new_per_computer: Some(u32::MAX),
            max_failures: Some(u32::MAX / 2),
            ..SettingsPatch::default()
        }))
        .await?;
    server
        .admin(&AdminRequest::GroupSet {
            name: GROUP.into(),
            options: OptionsView {
                allow_otp: Some(true),
                auto_directory: Some(true),
                ..OptionsView::default()
            },
        })
        .await?;
    // A node that has not yet heard of the group reads the policy again
    // when a computer is put in it (see `AdminService::set_client`).
    // Each computer is set on the node its agent is given first, as its
    // administrator would: set on another node, it would be taken from the
    // agent's node, and taken back at the agent's next request.
    let sockets: Arc<Vec<std::path::PathBuf>> = Arc::new(
        std::iter::once(server)
            .chain(&fleet.others)
            .map(Server::admin_socket)
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..SETUP_CONCURRENCY.min(agents) {
        let (sockets, next) = (Arc::clone(&sockets), Arc::clone(&next));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= agents {
                    return anyhow::Ok(());
                }
                let socket = &sockets[i % sockets.len()];
                let request = AdminRequest::ClientSet {
                    computer: agent_name(i),
                    group: Some(Some(GROUP.into())),
                    options: OptionsView::default(),
                };
                ask_admin(socket, &request).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Asks the server on behalf of OS user `user`; errors are named by kind.
async fn call(
    link: &Link,
    user: &str,
    request: LoginRequest,
) -> Result<LoginResponse, &'static str> {
    let request = Request::Login {
        os_user: user.to_owned(),
        request,
    };
    match link.call(request).await {
        Ok(Response::Login(answer)) => Ok(answer),
        Ok(Response::Fail(ErrorCode::TooManyRequests)) => Err("rate_limited"),
        Ok(Response::Fail(_)) => Err("server_error"),
        Ok(
            Response::Heartbeat
            | Response::Recorded
            | Response::Time(_)
            | Response::Renewed { .. }
            | Response::Offline(_),
        ) => Err("protocol"),
        Err(_) => Err("connection"),
    }
}

/// The directory's address of `user`.
fn address(user: &str) -> String {
    format!("{user}@{MAIL_DOMAIN}")
}

fn verify(user: &str, code: &str) -> LoginRequest {
    LoginRequest::Verify {
        email: address(user),
        code: Secret(code.to_owned()),
    }
}

/// Asks for an OTP and reads it from the mail.
async fn fetch_otp(link: &Link, user: &str, mailbox: &Mailbox) -> Result<String, &'static str> {
    let since = unix_millis();
    // The answer shows the address masked; the mail goes to the directory's.
    match call(link, user, LoginRequest::Request(RequestMode::Directory)).await? {
        LoginResponse::Requested(Requested::Send { .. }) => {}
        LoginResponse::Requested(Requested::Throttle { .. }) => return Err("request_throttled"),
        LoginResponse::Requested(Requested::TooSoon { .. }) => return Err("request_too_soon"),
        _ => return Err("request_refused"),
    }
    mailbox
        .otp_for(&address(user), since, MAIL_WAIT)
        .await
        .ok_or("no_mail")
}

/// One login up to the open session: returns the session.
async fn login(link: &Link, user: &str, mailbox: &Mailbox) -> Result<u64, &'static str> {
    let code = fetch_otp(link, user, mailbox).await?;
    match call(link, user, verify(user, &code)).await? {
        LoginResponse::Verified(Verdict::Allow { session }) => Ok(session),
        LoginResponse::Verified(Verdict::Throttle { .. }) => Err("verify_throttled"),
        _ => Err("verify_denied"),
    }
}

async fn logout(link: &Link, user: &str, session: u64) -> Result<(), &'static str> {
    match call(
        link,
        user,
        LoginRequest::Logout {
            session: Some(session),
        },
    )
    .await?
    {
        LoginResponse::LoggedOut { ended: true } => Ok(()),
        _ => Err("logout_refused"),
    }
}

/// One agent's share of a storm, or all of it.
struct Tally {
    latency: Histogram<u64>,
    attempted: u64,
    completed: u64,
    errors: Kinds,
    /// When its last login ended, from the start of the storm.
    last: Duration,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            attempted: 0,
            completed: 0,
            errors: Kinds::new(),
            last: Duration::ZERO,
        }
    }
}

/// Runs a login storm with agents `links` (agent `offset + i` is `links[i]`)
/// of `fleet` on `server` (and its other nodes), until its count or
/// duration is reached or `stop` fires.
async fn storm_on(
    (server, fleet): (&Server, &Fleet),
    links: &[Link],
    offset: usize,
    mailbox: &Arc<Mailbox>,
    storm: &LoginOptions,
    stop: &CancellationToken,
) -> anyhow::Result<LoginReport> {
    let next = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + storm.duration;
    let count = u64::try_from(storm.count).unwrap_or(u64::MAX);
    let mut workers = JoinSet::new();
    for (i, link) in links.iter().enumerate() {
        let (link, user) = (link.clone(), agent_name(offset + i));
        let (next, done, mailbox, stop) = (
            Arc::clone(&next),
            Arc::clone(&completed),
            Arc::clone(mailbox),
            stop.clone(),
        );
        let rate = storm.rate;
        workers.spawn(async move {
            let mut tally = Tally::new();
            loop {
                let ticket = next.fetch_add(1, Ordering::Relaxed);
                let due = match rate {
                    Some(rate) => started + Duration::from_secs_f64(ticket as f64 / rate),
                    None => Instant::now(),
                };
                if ticket >= count || due >= deadline || stop.is_cancelled() {
                    return tally;
                }
                tokio::time::sleep_until(due.into()).await;
                tally.attempted += 1;
                let outcome = match login(&link, &user, &mailbox).await {
                    Ok(session) => {
                        record(&mut tally.latency, due.elapsed());
                        logout(&link, &user, session).await
                    }
                    Err(kind) => Err(kind),
                };
                match outcome {
                    Ok(()) => {
                        tally.completed += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kind) => add_kind(&mut tally.errors, kind, 1),
                }
                tally.last = started.elapsed();
            }
        });
    }
    let mut total = Tally::new();
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    progress.tick().await;
    loop {
        tokio::select! {
            _ = progress.tick() => eprintln!(
                "bench: {} logins completed, {:.0}/s",
                completed.load(Ordering::Relaxed),
                completed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
            ),
            joined = workers.join_next() => match joined {
                Some(tally) => {
                    let tally = tally?;
                    total.latency.add(&tally.latency)?;
                    total.attempted += tally.attempted;
                    total.completed += tally.completed;
                    for (kind, n) in tally.errors {
                        add_kind(&mut total.errors, &kind, n);
                    }
                    total.last = total.last.max(tally.last);
                }
                None => break,
            },
        }
    }
    let secs = total.last.as_secs_f64();
    Ok(LoginReport {
        agents: links.len(),
        target_rate: storm.rate,
        attempted: total.attempted,
        completed: total.completed,
        secs,
        logins_per_sec: total.completed as f64 / secs.max(f64::EPSILON),
        latency_ms: Percentiles::of(&total.latency),
        errors: total.errors,
        server: fleet.usage(server)?,
    })
}

/// The attackers of a flood, and what they did.
struct Attack {
    tasks: JoinSet<AttackTally>,
    started: Instant,
}

/// What the attackers did, together.
#[derive(Default)]
struct AttackTally {
    sent: u64,
    allowed: u64,
    verdicts: Kinds,
    /// Each attacker's link, OS user and right code, to try once the flood is over.
    right_codes: Vec<(Link, String, String)>,
    secs: f64,
}

impl Attack {
    /// Each attacker asks for an OTP (so that one is live to guess), then sends
    /// wrong codes for it until `stop` fires.
    async fn start(
        links: &[Link],
        mailbox: &Arc<Mailbox>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut tasks = JoinSet::new();
        for (i, link) in links.iter().enumerate() {
            let (link, user) = (link.clone(), agent_name(i));
            let right = fetch_otp(&link, &user, mailbox)
                .await
                .map_err(|kind| anyhow::anyhow!("attacker {user} got no OTP: {kind}"))?;
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut tally = AttackTally::default();
                while !stop.is_cancelled() {
                    let wrong = wrong_code(&right);
                    let kind = match call(&link, &user, verify(&user, &wrong)).await {
                        Ok(LoginResponse::Verified(Verdict::Allow { .. })) => {
                            tally.allowed += 1;
                            "allow"
                        }
                        Ok(LoginResponse::Verified(Verdict::Deny)) => "deny",
                        Ok(LoginResponse::Verified(Verdict::Throttle { .. })) => "throttle",
                        Ok(_) => "protocol",
                        Err(kind) => kind,
                    };
                    tally.sent += 1;
                    add_kind(&mut tally.verdicts, kind, 1);
                }
                tally.right_codes.push((link, user, right));
                tally
            });
        }
        Ok(Self {
            tasks,
            started: Instant::now(),
        })
    }

    /// Waits for every attacker to stop and adds up what they did.
    async fn finish(mut self) -> anyhow::Result<AttackTally> {
        let mut total = AttackTally::default();
        while let Some(tally) = self.tasks.join_next().await {
            let tally = tally?;
            total.sent += tally.sent;
            total.allowed += tally.allowed;
            for (kind, n) in tally.verdicts {
                add_kind(&mut total.verdicts, &kind, n);
            }
            total.right_codes.extend(tally.right_codes);
        }
        total.secs = self.started.elapsed().as_secs_f64();
        Ok(total)
    }
}

/// A code of the same length as `right` that is not `right`.
fn wrong_code(right: &str) -> String {
    loop {
        let code: String = (0..right.len())
            .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
            .collect();
        if code != right {
            return code;
        }
    }
}

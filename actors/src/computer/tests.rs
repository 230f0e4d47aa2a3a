//! Unit tests of the computer actor's rules, with a manual clock.

use std::time::Duration;

use super::*;
use crate::audit::{Action, AuditEntry};
use crate::clock::ManualClock;
use crate::directory::DirectoryFuture;
use crate::login::{RequestMode, Requested, Verdict};
use crate::mail::MailKind;
use crate::mailbox::Waiting;
use crate::otp::Code;
use crate::otp::OtpState;
use crate::settings::SystemSettings;
use crate::testing::{services, services_with};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));
const CONN: ConnectionId = ConnectionId(1);

/// Sets the options of `actor`'s computer to `options`, as the server does; its record then.
async fn configure(actor: &ActorRef<ComputerMsg>, options: Options) -> Result<ComputerRecord> {
    actor
        .call(
            |reply| ComputerMsg::Configure {
                group: None,
                options: OptionsPatch {
                    set: options,
                    inherit: vec![],
                },
                by: crate::audit::Who::Server,
                reply,
            },
            TIMEOUT,
        )
        .await
        .unwrap()
        .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    svc: Arc<Services>,
    clock: ManualClock,
    actor: ActorRef<ComputerMsg>,
    id: ComputerId,
}

impl Fixture {
    async fn new(options: Options) -> Self {
        Self::with_directory(options, None).await
    }

    /// A computer with `options`, whose services ask `directory` (by default
    /// one that knows alice).
    async fn with_directory(options: Options, directory: Option<Arc<dyn Directory>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (svc, clock) = match directory {
            Some(directory) => services_with(dir.path(), directory).await,
            None => services(dir.path()).await,
        };
        let id: ComputerId = "ws-1".parse().unwrap();
        let (actor, _) = Actor::spawn(
            None,
            ComputerActor,
            ComputerArgs {
                id: id.clone(),
                services: svc.clone(),
            },
        )
        .await
        .unwrap();
        let fixture = Self {
            _dir: dir,
            svc,
            clock,
            actor,
            id,
        };
        configure(&fixture.actor, options).await.unwrap();
        fixture
    }

    async fn login(&self, os_user: &str, call: LoginRequest) -> LoginResponse {
        let os_user = os_user.to_owned();
        let mut call = Some(call);
        self.actor
            .call(
                |reply| ComputerMsg::Login {
                    os_user,
                    call: call.take().unwrap(),
                    reply,
                },
                TIMEOUT,
            )
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    /// Asks the actor the message `build` makes; its answer, which must be
    /// `Ok`.
    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> ComputerMsg,
    ) -> T {
        self.actor
            .call(build, TIMEOUT)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    /// The codes in the outbox, newest last.
    async fn codes(&self) -> Vec<String> {
        self.svc
            .store
            .outbox()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|entry| match entry.kind {
                MailKind::Otp {
                    computer,
                    os_user,
                    sealed,
                    ..
                } => Some(
                    self.svc
                        .keys
                        .open(&computer, &os_user, &sealed)
                        .unwrap()
                        .expose()
                        .to_owned(),
                ),
                _ => None,
            })
            .collect()
    }

    async fn verify(&self, email: &str, code: &str) -> LoginResponse {
        self.login(
            "alice",
            LoginRequest::Verify {
                email: email.into(),
                code: Code::from_typed(code),
            },
        )
        .await
    }
}

fn auto_directory() -> Options {
    Options {
        auto_directory: Some(true),
        ..Options::default()
    }
}

/// A directory that answers only once it is let go.
struct HeldDirectory(Arc<tokio::sync::Semaphore>);

impl Directory for HeldDirectory {
    fn email_of<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<String>> {
        Box::pin(async move {
            let _go = self.0.acquire().await;
            Ok(Some(format!("{account}@example.com")))
        })
    }
}

#[tokio::test]
async fn a_slow_directory_holds_up_only_the_request_that_waits_for_it() {
    let held = Arc::new(tokio::sync::Semaphore::new(0));
    let directory: Arc<dyn Directory> = Arc::new(HeldDirectory(Arc::clone(&held)));
    let f = Fixture::with_directory(auto_directory(), Some(directory)).await;
    let actor = f.actor.clone();
    let waiting = tokio::spawn(async move {
        actor
            .call(
                |reply| ComputerMsg::Login {
                    os_user: "alice".into(),
                    call: LoginRequest::Request(RequestMode::Directory),
                    reply,
                },
                TIMEOUT,
            )
            .await
    });
    // The lookup is outside the actor's turn: the same computer answers others.
    for _ in 0..3 {
        let status = f.login("bob", LoginRequest::Status).await;
        assert!(matches!(status, LoginResponse::Status(_)), "{status:?}");
    }
    assert!(!waiting.is_finished());
    held.add_permits(1);
    let answer = waiting.await.unwrap().unwrap().unwrap().unwrap();
    assert!(
        matches!(&answer, LoginResponse::Requested(Requested::Send { to, .. }) if to == "a***@example.com"),
        "{answer:?}"
    );
    assert_eq!(f.codes().await.len(), 1);
}

#[tokio::test]
async fn directory_auto_send_then_verify_once() {
    let f = Fixture::new(auto_directory()).await;
    let answer = f
        .login("alice", LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(
        matches!(
            answer,
            LoginResponse::Requested(Requested::Send { ref to, .. }) if to == "a***@example.com"
        ),
        "the directory's address is shown masked: {answer:?}"
    );
    let codes = f.codes().await;
    assert_eq!(codes.len(), 1);
    assert!(matches!(
        f.verify("alice@example.com", &codes[0]).await,
        LoginResponse::Verified(Verdict::Allow { .. })
    ));
    assert_eq!(
        f.verify("alice@example.com", &codes[0]).await,
        LoginResponse::Verified(Verdict::Deny),
        "single use"
    );
    let sessions = f.svc.store.sessions_of(&f.id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].user_name(), "alice (alice@example.com)");
}

#[tokio::test]
async fn an_unknown_account_is_refused_and_email_mode_is_off_with_auto_send() {
    let f = Fixture::new(auto_directory()).await;
    assert_eq!(
        f.login("mallory", LoginRequest::Request(RequestMode::Directory))
            .await,
        LoginResponse::Requested(Requested::Refuse)
    );
    assert_eq!(
        f.login(
            "alice",
            LoginRequest::Request(RequestMode::Email("a@example.com".into()))
        )
        .await,
        LoginResponse::Requested(Requested::Disabled)
    );
}

#[tokio::test]
async fn within_the_hour_the_same_otp_is_resent_and_after_it_a_new_one_issued() {
    let f = Fixture::new(auto_directory()).await;
    f.login("alice", LoginRequest::Request(RequestMode::Directory))
        .await;
    f.clock.advance(Duration::from_secs(60));
    let again = f
        .login("alice", LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(
        matches!(again, LoginResponse::Requested(Requested::Resend { .. })),
        "{again:?}"
    );
    let codes = f.codes().await;
    assert_eq!(codes.len(), 2);
    assert_eq!(codes[0], codes[1], "the same OTP, emailed again");

    // Used up, still inside the hour: nothing to resend, and no new one yet.
    f.verify("alice@example.com", &codes[0]).await;
    let too_soon = f
        .login("alice", LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(
        matches!(
            too_soon,
            LoginResponse::Requested(Requested::TooSoon { .. })
        ),
        "{too_soon:?}"
    );

    f.clock.advance(Duration::from_secs(60 * 60));
    let new = f
        .login("alice", LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(
        matches!(new, LoginResponse::Requested(Requested::Send { .. })),
        "{new:?}"
    );
    let codes = f.codes().await;
    assert_ne!(codes[2], codes[0]);
}

#[tokio::test]
async fn an_otp_expires_after_the_expiration_time() {
    let f = Fixture::new(auto_directory()).await;
    f.login("alice", LoginRequest::Request(RequestMode::Directory))
        .await;
    let code = f.codes().await.remove(0);
    f.clock.advance(Duration::from_secs(30 * 60));
    assert_eq!(
        f.verify("alice@example.com", &code).await,
        LoginResponse::Verified(Verdict::Deny)
    );
    let slot = f.svc.store.slots(&f.id).await.unwrap().remove(0).1;
    let otp = slot.otp.unwrap();
    assert_eq!(otp.state, OtpState::Expired);
    assert!(otp.sealed().is_none(), "the sealed copy is wiped");
}

#[tokio::test]
async fn the_timer_expires_requests_and_otps_and_tells_the_person_without_any_call() {
    let f = Fixture::new(auto_directory()).await;
    f.login("alice", LoginRequest::Request(RequestMode::Directory))
        .await;
    let asked = f
        .login(
            "bob",
            LoginRequest::Request(RequestMode::Emergency("bob@example.com".into())),
        )
        .await;
    assert!(
        matches!(
            asked,
            LoginResponse::Requested(Requested::AwaitApproval { .. })
        ),
        "{asked:?}"
    );
    f.clock.advance(Duration::from_secs(30 * 60));
    // What the actor's timer sends when the first expiry is due; nobody calls.
    f.actor.cast(ComputerMsg::Sweep).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let request = loop {
        let request = f.svc.store.requests_of(&f.id).await.unwrap().remove(0);
        if request.decision != crate::request::Decision::Pending {
            break request;
        }
        assert!(std::time::Instant::now() < deadline, "not expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(request.decision, crate::request::Decision::Expire);
    // Bob is told by mail; alice's OTP is expired and its sealed copy wiped.
    let told = f
        .svc
        .store
        .outbox()
        .await
        .unwrap()
        .into_iter()
        .any(|entry| {
            entry.to == "bob@example.com"
                && matches!(
                    entry.kind,
                    MailKind::Outcome {
                        refusal: crate::request::Refusal::Expire,
                        ..
                    }
                )
        });
    assert!(told, "the requester is told");
    let slots = f.svc.store.slots(&f.id).await.unwrap();
    let (_, alice) = slots.iter().find(|(user, _)| user == "alice").unwrap();
    let otp = alice.otp.as_ref().unwrap();
    assert_eq!(otp.state, OtpState::Expired);
    assert!(otp.sealed().is_none(), "the sealed copy is wiped");
    let expired = crate::store::all(|before| f.svc.store.audit_from(before, crate::store::BATCH))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == Action::Expire)
        .count();
    assert_eq!(expired, 2, "both expiries are in the audit log");
}

#[tokio::test]
async fn failures_throttle_the_person_first_and_the_computer_only_when_sprayed() {
    let f = Fixture::new(auto_directory()).await;
    // Two failures for a person, twenty for the computer.
    let settings = SystemSettings {
        max_failures: 20,
        ..SystemSettings::default()
    };
    let mut edit = f.svc.policy.edit().await.unwrap();
    edit.set_settings(settings);
    edit.commit(&AuditEntry {
        at: f.clock.now(),
        who: crate::audit::Who::Server,
        computer: None,
        action: Action::Configure,
        outcome: "settings".into(),
    })
    .await
    .unwrap();
    let wrong = |os_user: &'static str| {
        f.login(
            os_user,
            LoginRequest::Verify {
                email: format!("{os_user}@example.com"),
                code: Code::from_typed("12345678"),
            },
        )
    };
    for _ in 0..2 {
        assert_eq!(wrong("alice").await, LoginResponse::Verified(Verdict::Deny));
    }
    assert!(matches!(
        wrong("alice").await,
        LoginResponse::Verified(Verdict::Throttle { .. })
    ));
    // Alice's failures leave bob alone.
    assert_eq!(wrong("bob").await, LoginResponse::Verified(Verdict::Deny));
    // Spraying with new names fills the computer's bucket (3 + 17 = 20): then
    // everyone waits.
    for n in 0..17 {
        let os_user: &'static str = Box::leak(format!("u{n}").into_boxed_str());
        assert_eq!(wrong(os_user).await, LoginResponse::Verified(Verdict::Deny));
    }
    assert!(matches!(
        wrong("carol").await,
        LoginResponse::Verified(Verdict::Throttle { .. })
    ));
    // The person's share drains in a tenth of the window.
    f.clock.advance(crate::settings::DEFAULT_FAILURE_WINDOW / 2);
    assert_eq!(wrong("alice").await, LoginResponse::Verified(Verdict::Deny));
}

#[tokio::test]
async fn heartbeats_write_last_seen_at_most_every_so_often() {
    let f = Fixture::new(auto_directory()).await;
    let info = AgentInfo {
        host_name: "ws-1".into(),
        agent_version: "test".into(),
        protocol: 2,
    };
    f.actor
        .call(
            |reply| ComputerMsg::Connect {
                conn: CONN,
                info: info.clone(),
                reply,
            },
            TIMEOUT,
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let connected = f.clock.now();
    let record = f.svc.store.computer(&f.id).await.unwrap().unwrap();
    assert_eq!(
        (record.agent_version.as_str(), record.protocol),
        ("test", Some(2))
    );
    let stored = async || {
        f.svc
            .store
            .computer(&f.id)
            .await
            .unwrap()
            .unwrap()
            .last_seen
    };
    assert_eq!(stored().await, connected);
    let slot = Waiting::default();
    let beat = |after: Duration| {
        f.clock.advance(after);
        f.actor
            .cast(ComputerMsg::Heartbeat {
                conn: CONN,
                pending: slot.clone(),
            })
            .unwrap();
        // Handled in order: once the status is answered, so is the heartbeat.
        f.login("alice", LoginRequest::Status)
    };
    beat(Duration::from_secs(10)).await;
    beat(Duration::from_secs(10)).await;
    assert_eq!(stored().await, connected, "not written for every heartbeat");
    beat(SEEN_WRITE_EVERY).await;
    assert_eq!(stored().await, f.clock.now());
}

#[tokio::test]
async fn a_call_whose_caller_gave_up_is_not_carried_out() {
    let f = Fixture::new(auto_directory()).await;
    // The caller's call timed out while the message waited: its answer port is
    // closed by the time the actor reaches it.
    let (reply, gone) = ractor::concurrency::oneshot();
    drop(gone);
    f.actor
        .cast(ComputerMsg::Login {
            os_user: "alice".into(),
            call: LoginRequest::Request(RequestMode::Directory),
            reply: reply.into(),
        })
        .unwrap();
    // Handled in order: once this is answered, so was that.
    f.login("bob", LoginRequest::Status).await;
    assert!(
        f.codes().await.is_empty(),
        "no OTP was issued behind its back"
    );
    // Asked again, alice gets a new one at once.
    let answer = f
        .login("alice", LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(
        matches!(answer, LoginResponse::Requested(Requested::Send { .. })),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_postgres_an_actor_whose_computer_another_node_took_loads_it_again_before_it_answers() {
    let Some(cluster) = crate::test_postgres::postgres() else {
        return;
    };
    let config = cluster.database();
    let node = || async {
        let store = crate::KvStore::connect(&config).await.unwrap();
        let directory = Arc::new(crate::testing::MapDirectory(HashMap::new()));
        crate::testing::services_over(Arc::new(store), directory)
            .await
            .0
    };
    let (a, b) = (node().await, node().await);
    let id: ComputerId = "ws-1".parse().unwrap();
    let spawn = |services: Arc<Services>| {
        let id = id.clone();
        async move {
            let args = ComputerArgs { id, services };
            Actor::spawn(None, ComputerActor, args).await.unwrap().0
        }
    };
    let record_input = |record_input: bool| Options {
        record_input: Some(record_input),
        ..Options::default()
    };
    let on_a = spawn(Arc::clone(&a)).await;
    configure(&on_a, record_input(true)).await.unwrap();
    // An administrator on node b changes the computer: b's actor takes it.
    let on_b = spawn(Arc::clone(&b)).await;
    configure(&on_b, record_input(false)).await.unwrap();
    // a hears so and, asked next, answers with what b wrote, not with what
    // it held.
    let mut seen = None;
    for _ in 0..100 {
        let record = on_a.call(ComputerMsg::Record, None).await.unwrap();
        seen = Some(record.unwrap().options.record_input);
        if seen == Some(Some(false)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, Some(Some(false)), "a loaded the computer again");
    // a holds it again: its change is kept, and b's next one is left out
    // (or made after b too loaded it again: never over a's unseen).
    configure(&on_a, record_input(true)).await.unwrap();
    let late = configure(&on_b, record_input(false)).await;
    let record = a.store.computer(&id).await.unwrap().unwrap();
    match late {
        Err(ComputerError::Store(StoreError::Fenced(_))) => {
            assert_eq!(record.options.record_input, Some(true));
        }
        Ok(_) => assert_eq!(record.options.record_input, Some(false)),
        Err(err) => panic!("{err}"),
    }
    on_a.stop(None);
    on_b.stop(None);
}

#[tokio::test]
async fn offline_logins_are_sessions_and_audit_entries_once_and_use_their_codes() {
    use crate::offline::{OfflineSet, Order};
    use crate::session::OFFLINE_SESSION;

    let f = Fixture::new(Options::default()).await;
    let now = f.clock.now();
    let alices = |id: u64, count: u32| {
        OfflineSet::issue(Order {
            id,
            os_user: "alice".into(),
            email: "alice@example.com".into(),
            count,
            now,
            valid: Duration::from_secs(86_400),
            by: "admin".into(),
        })
    };
    let issued = alices(77, 2);
    let issue = |set: OfflineSet| {
        f.ask(|reply| ComputerMsg::OfflineIssue {
            set,
            by: Who::Server,
            reply,
        })
    };
    let sync =
        |logins: Vec<OfflineLogin>| f.ask(|reply| ComputerMsg::OfflineSync { logins, reply });
    issue(issued.set).await;
    let login = OfflineLogin {
        set: 77,
        code: 1,
        os_user: "alice".into(),
        service: "sshd".into(),
        at: now.before(Duration::from_secs(60)),
        session: OFFLINE_SESSION | 5,
    };
    // Told twice (the first answer was lost): one session, one entry.
    for _ in 0..2 {
        let sets = sync(vec![login.clone()]).await;
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].left(now), 1, "code 2 used");
        assert_eq!(sets[0].codes[1].used_at, Some(login.at));
    }
    let sessions = f.svc.store.sessions_of(&f.id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].user_name(),
        "alice (alice@example.com) — offline"
    );
    assert_eq!(sessions[0].started, login.at);
    let offline_entries = || async {
        f.svc
            .store
            .audit_from(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, entry): (_, AuditEntry)| entry)
            .filter(|e| e.action == Action::OfflineLogin)
            .collect::<Vec<_>>()
    };
    let logins = offline_entries().await;
    assert_eq!(logins.len(), 1);
    assert!(
        logins[0].outcome.contains("offline code 2 of 2"),
        "{}",
        logins[0].outcome
    );

    // A new set voids the old: a late report of the old one is still
    // a session and an entry, said as such.
    let newer = alices(78, 1);
    issue(newer.set).await;
    let late = OfflineLogin {
        code: 0,
        session: OFFLINE_SESSION | 6,
        ..login.clone()
    };
    let sets = sync(vec![late]).await;
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].id, 78);
    assert_eq!(sets[0].left(now), 1);
    assert!(
        offline_entries()
            .await
            .iter()
            .any(|e| e.outcome.contains("since replaced or void"))
    );
    // A session id of the server's own kind is no offline login's.
    let forged = OfflineLogin {
        session: 5,
        ..login.clone()
    };
    sync(vec![forged]).await;
    assert_eq!(f.svc.store.sessions_of(&f.id).await.unwrap().len(), 2);
    // Voided: nothing left to keep.
    let voided = f
        .ask(|reply| ComputerMsg::OfflineVoid {
            os_user: None,
            by: Who::Server,
            reply,
        })
        .await;
    assert_eq!(voided, 1);
    assert!(sync(vec![]).await.is_empty());
    assert!(f.svc.store.offline_sets(&f.id).await.unwrap().is_empty());
}

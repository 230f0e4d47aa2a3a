//! The OTP login flow end to end, over real TLS, through the agent's login
//! socket: every request mode, approvals, expiry, generation, the verification
//! rules, the once-per-hour rule across a restart, concurrent verifies, and
//! client sessions. Time rules run on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use crate::common::agent::{Agent, Desk};
use crate::common::auto_directory;
use crate::common::server::TestServer;
use crate::common::{me, my_email};
use otpgate_actors::names::masked;
use otpgate_actors::{Clock, ManualClock, SystemClock};
use otpgate_protocol::admin::{
    AdminErrorCode, AdminRequest, AdminResponse, Choice, OptionsView, RoleView,
};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, RequestState, Requested, Secret, Verdict,
};
use otpgate_protocol::{Request, Response};

const HOUR: Duration = Duration::from_secs(60 * 60);
const EXPIRY: Duration = Duration::from_secs(30 * 60);

/// A clock that starts at the real time and moves only when told to.
fn clock() -> ManualClock {
    ManualClock::new(SystemClock.now())
}

async fn server_with(clock: &ManualClock) -> TestServer {
    TestServer::start_with_clock(Arc::new(clock.clone())).await
}

/// A server on a manual clock, with client computer ws-1 connected.
async fn setup() -> (ManualClock, TestServer, Desk) {
    let clock = clock();
    let server = server_with(&clock).await;
    let desk = server.desk("ws-1").await;
    (clock, server, desk)
}

async fn verify(desk: &Desk, email: &str, code: &str) -> Verdict {
    let response = desk
        .login(LoginRequest::Verify {
            email: email.into(),
            code: Secret(code.into()),
        })
        .await;
    match response {
        LoginResponse::Verified(verdict) => verdict,
        other => panic!("{other:?}"),
    }
}

async fn decide(
    server: &TestServer,
    id: u64,
    choice: Choice,
    comment: Option<&str>,
) -> AdminResponse {
    server
        .admin(AdminRequest::RequestDecide {
            id,
            by: "admin".into(),
            password: Secret(server.admin_password().await),
            choice,
            comment: comment.map(String::from),
        })
        .await
}

fn request_id(requested: &Requested) -> u64 {
    match requested {
        Requested::AwaitApproval { request, .. } => *request,
        other => panic!("expected a request to the approvers, got {other:?}"),
    }
}

async fn status(desk: &Desk) -> otpgate_protocol::login::PromptState {
    match desk.login(LoginRequest::Status).await {
        LoginResponse::Status(status) => status,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_mode_goes_to_the_approvers_and_approval_sends_the_otp() {
    let (_, server, desk) = setup().await;
    let requested = desk
        .request(RequestMode::Email("carol@example.com".into()))
        .await;
    let id = request_id(&requested);

    // The approvers (here the administrator) got the request by mail.
    let outbox = server.data_dir().join("outbox");
    crate::common::wait_until(Duration::from_secs(20), "the approver is mailed", || {
        let mailed = !crate::common::mail::messages_to(&outbox, "admin@example.com").is_empty();
        async move { mailed }
    })
    .await;
    let pending = server.requests(false).await;
    assert!(pending.len() == 1 && pending[0].id == id, "{pending:?}");

    assert!(matches!(
        decide(&server, id, Choice::Approve, Some("ok")).await,
        AdminResponse::Decided(_)
    ));
    assert!(
        matches!(
            decide(&server, id, Choice::Deny, None).await,
            AdminResponse::Fail(_)
        ),
        "decided once only"
    );
    let code = server.codes_for("carol@example.com", 1).await.remove(0);
    assert!(matches!(
        status(&desk).await.request,
        Some((got, RequestState::Approve)) if got == id
    ));
    assert_eq!(
        status(&desk).await.email.as_deref(),
        Some("carol@example.com")
    );
    assert!(matches!(
        verify(&desk, "carol@example.com", &code).await,
        Verdict::Allow { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_internal_and_emergency_modes() {
    let (clock, server, desk) = setup().await;

    // Active Directory users: nothing to type, the directory knows the address.
    server.set_client("ws-1", auto_directory()).await;
    assert!(
        matches!(
            desk.request(RequestMode::Email(my_email())).await,
            Requested::Disabled
        ),
        "plain email is not offered when auto-send is on"
    );
    let sent = desk.request(RequestMode::Directory).await;
    assert!(
        matches!(sent, Requested::Send { ref to, .. } if *to == masked(&my_email())),
        "{sent:?}"
    );
    let code = server.codes_for(&my_email(), 1).await.remove(0);
    assert!(matches!(
        verify(&desk, &my_email(), &code).await,
        Verdict::Allow { .. }
    ));

    // Emergency access: an access request, marked so.
    clock.advance(HOUR);
    let requested = desk
        .request(RequestMode::Emergency("dave@example.com".into()))
        .await;
    let id = request_id(&requested);
    let pending = server.requests(false).await;
    assert!(pending.iter().any(|r| r.id == id && r.emergency));
    let outbox = server.data_dir().join("outbox");
    crate::common::wait_until(
        Duration::from_secs(20),
        "the approver is told of the emergency",
        || {
            let told = crate::common::mail::messages_to(&outbox, "admin@example.com")
                .iter()
                .any(|m| m.contains("EMERGENCY"));
            async move { told }
        },
    )
    .await;
    decide(&server, id, Choice::Approve, None).await;
    let code = server.codes_for("dave@example.com", 1).await.remove(0);
    assert!(matches!(
        verify(&desk, "dave@example.com", &code).await,
        Verdict::Allow { .. }
    ));

    // Internal users: their login name and password.
    let response = server
        .admin(AdminRequest::UserAdd {
            login: "bob".into(),
            email: "bob@example.com".into(),
            role: RoleView::User,
            password: Secret("bob's long password".into()),
        })
        .await;
    assert_eq!(response, AdminResponse::Done);
    server
        .set_client("ws-1", crate::common::auto_internal_only())
        .await;
    clock.advance(HOUR);
    let wrong = RequestMode::Internal {
        login: "bob".into(),
        password: Secret("not it".into()),
    };
    assert_eq!(desk.request(wrong).await, Requested::Refuse);
    let nobody = RequestMode::Internal {
        login: "nobody".into(),
        password: Secret("bob's long password".into()),
    };
    assert_eq!(desk.request(nobody).await, Requested::Refuse, "same answer");
    let right = RequestMode::Internal {
        login: "bob".into(),
        password: Secret("bob's long password".into()),
    };
    assert!(
        matches!(desk.request(right).await, Requested::Send { ref to, .. } if to == "b***@example.com")
    );
    let code = server.codes_for("bob@example.com", 1).await.remove(0);
    assert!(matches!(
        verify(&desk, "bob@example.com", &code).await,
        Verdict::Allow { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_and_expiry_of_requests_reach_the_person() {
    let (clock, server, desk) = setup().await;

    let id = request_id(
        &desk
            .request(RequestMode::Email("erin@example.com".into()))
            .await,
    );
    decide(&server, id, Choice::Deny, Some("not today")).await;
    assert_eq!(
        status(&desk).await.request,
        Some((
            id,
            RequestState::Deny {
                comment: Some("not today".into())
            }
        ))
    );
    let outbox = server.data_dir().join("outbox");
    crate::common::wait_until(Duration::from_secs(20), "the denial is mailed", || {
        let mailed = crate::common::mail::messages_to(&outbox, "erin@example.com")
            .iter()
            .any(|m| m.contains("was denied") && m.contains("not today"));
        async move { mailed }
    })
    .await;

    // No OTP was issued, so the hour has not started: a new request is taken.
    let id = request_id(
        &desk
            .request(RequestMode::Email("erin@example.com".into()))
            .await,
    );
    clock.advance(EXPIRY);
    assert_eq!(
        status(&desk).await.request,
        Some((id, RequestState::Expire))
    );
    assert!(
        matches!(
            decide(&server, id, Choice::Approve, None).await,
            AdminResponse::Fail(_)
        ),
        "too late"
    );
    crate::common::wait_until(Duration::from_secs(20), "the expiry is mailed", || {
        let mailed = crate::common::mail::messages_to(&outbox, "erin@example.com")
            .iter()
            .any(|m| m.contains("expired"));
        async move { mailed }
    })
    .await;
    assert!(
        server.codes_for("erin@example.com", 0).await.is_empty(),
        "no OTP was ever sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_generates_an_otp_without_a_request() {
    let (_, server, desk) = setup().await;
    let generated = server
        .admin(AdminRequest::OtpGenerate {
            computer: "ws-1".into(),
            os_user: me(),
            email: my_email(),
            comment: None,
            by: "admin".into(),
            password: Secret(server.admin_password().await),
            new_client: false,
        })
        .await;
    assert!(
        matches!(generated, AdminResponse::Generated { .. }),
        "{generated:?}"
    );
    let code = server.codes_for(&my_email(), 1).await.remove(0);
    assert!(matches!(
        verify(&desk, &my_email(), &code).await,
        Verdict::Allow { .. }
    ));
    let audit = server.audit(100).await;
    assert!(
        audit
            .iter()
            .any(|e| e.action == "generate" && e.outcome.contains("Generated without request."))
    );

    // A computer never seen is a typo until the administrator says otherwise.
    let password = server.admin_password().await;
    let typo = |new_client| AdminRequest::OtpGenerate {
        computer: "ws-l".into(),
        os_user: me(),
        email: my_email(),
        comment: None,
        by: "admin".into(),
        password: Secret(password.clone()),
        new_client,
    };
    let refused = server.admin(typo(false)).await;
    assert!(
        matches!(&refused, AdminResponse::Fail(e) if e.code == AdminErrorCode::NotFound),
        "{refused:?}"
    );
    let generated = server.admin(typo(true)).await;
    assert!(
        matches!(generated, AdminResponse::Generated { .. }),
        "{generated:?}"
    );

    // Only administrators may: bob exists, and is refused for his role.
    let added = server
        .admin(AdminRequest::UserAdd {
            login: "bob".into(),
            email: "bob@example.com".into(),
            role: RoleView::User,
            password: Secret("bob's long password".into()),
        })
        .await;
    assert_eq!(added, AdminResponse::Done);
    for by in ["bob", "nobody"] {
        let refused = server
            .admin(AdminRequest::OtpGenerate {
                computer: "ws-1".into(),
                os_user: "carol".into(),
                email: "carol@example.com".into(),
                comment: None,
                by: by.into(),
                password: Secret("bob's long password".into()),
                new_client: false,
            })
            .await;
        assert!(
            matches!(&refused, AdminResponse::Fail(e) if e.code == AdminErrorCode::Forbidden),
            "{by}: {refused:?}"
        );
    }
    let generated = server
        .audit(0)
        .await
        .into_iter()
        .filter(|e| e.action == "generate")
        .count();
    assert_eq!(generated, 2, "only the administrator's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_administrators_password_opens_nothing_until_changed() {
    let (_, server, desk) = setup().await;
    let initial = server.initial_password();
    let refused_as_due = |answer: &AdminResponse| {
        matches!(answer, AdminResponse::Fail(e)
            if e.code == AdminErrorCode::Forbidden && e.message.contains("users set admin"))
    };

    // It gets no OTP at a client computer (refused, not counted as a guess).
    let internal = |auto_internal| OptionsView {
        auto_internal: Some(auto_internal),
        ..OptionsView::default()
    };
    server.set_client("ws-1", internal(true)).await;
    let as_admin = RequestMode::Internal {
        login: "admin".into(),
        password: Secret(initial.clone()),
    };
    assert_eq!(desk.request(as_admin).await, Requested::Refuse);
    assert!(
        server
            .audit(20)
            .await
            .iter()
            .any(|e| e.outcome.contains("admin must change the password first")),
        "the refusal says why in the audit log"
    );

    // It decides nothing and generates nothing.
    server.set_client("ws-1", internal(false)).await;
    let id = request_id(&desk.request(RequestMode::Email(my_email())).await);
    let decide = |password: &str| AdminRequest::RequestDecide {
        id,
        by: "admin".into(),
        password: Secret(password.into()),
        choice: Choice::Approve,
        comment: None,
    };
    let answer = server.admin(decide(&initial)).await;
    assert!(refused_as_due(&answer), "{answer:?}");
    let generate = AdminRequest::OtpGenerate {
        computer: "ws-1".into(),
        os_user: "carol".into(),
        email: "carol@example.com".into(),
        comment: None,
        by: "admin".into(),
        password: Secret(initial.clone()),
        new_client: false,
    };
    let answer = server.admin(generate).await;
    assert!(refused_as_due(&answer), "{answer:?}");

    // Changed: the new one decides, the file of the old one is gone, and the
    // old one opens nothing at all.
    let chosen = server.admin_password().await;
    assert!(!server.data_dir().join("admin-password").exists());
    let answer = server.admin(decide(&initial)).await;
    assert!(
        matches!(&answer, AdminResponse::Fail(e) if e.message == "wrong login name or password"),
        "{answer:?}"
    );
    let answer = server.admin(decide(&chosen)).await;
    assert!(matches!(answer, AdminResponse::Decided(_)), "{answer:?}");
    // The list no longer shows a change due.
    let users = server.admin(AdminRequest::UsersList {
        page: otpgate_protocol::admin::PageRequest {
            limit: 10,
            after: None,
        },
    });
    let AdminResponse::Users(users) = users.await else {
        panic!("users");
    };
    assert!(users.items.iter().all(|u| !u.password_change_due));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otp_works_only_where_when_and_for_whom_it_was_issued() {
    let (clock, server, desk) = setup().await;
    let other_desk = server.desk("ws-2").await;
    server.set_client("ws-1", auto_directory()).await;
    let email = my_email();

    desk.request(RequestMode::Directory).await;
    let code = server.codes_for(&email, 1).await.remove(0);
    assert_eq!(
        verify(&other_desk, &email, &code).await,
        Verdict::Deny,
        "another computer"
    );
    let other_user = Agent::start(&server.identity("ws-1"), server.addr);
    other_user.welcomed(1, Duration::from_secs(20)).await;
    let as_other = other_user
        .link
        .call(Request::Login {
            os_user: "somebody-else".into(),
            request: LoginRequest::Verify {
                email: email.clone(),
                code: Secret(code.clone()),
            },
        })
        .await;
    assert_eq!(
        as_other,
        Ok(Response::Login(LoginResponse::Verified(Verdict::Deny))),
        "another OS user"
    );
    assert_eq!(
        verify(&desk, "someone@example.com", &code).await,
        Verdict::Deny,
        "another email"
    );
    // Three wrong tries so far on this OTP at most: the right one still works, once.
    assert!(matches!(
        verify(&desk, &email, &code).await,
        Verdict::Allow { .. }
    ));
    assert_eq!(
        verify(&desk, &email, &code).await,
        Verdict::Deny,
        "a second time"
    );

    // After expiry.
    clock.advance(HOUR);
    desk.request(RequestMode::Directory).await;
    let code = server.codes_for(&email, 2).await.remove(1);
    clock.advance(EXPIRY);
    assert_eq!(verify(&desk, &email, &code).await, Verdict::Deny, "expired");

    // Four wrong attempts, then the right one: still accepted.
    clock.advance(HOUR);
    desk.request(RequestMode::Directory).await;
    let code = server.codes_for(&email, 3).await.remove(2);
    for _ in 0..4 {
        assert_eq!(verify(&desk, &email, "00000000").await, Verdict::Deny);
    }
    assert!(matches!(
        verify(&desk, &email, &code).await,
        Verdict::Allow { .. }
    ));

    // Five wrong attempts lock it.
    clock.advance(HOUR);
    desk.request(RequestMode::Directory).await;
    let code = server.codes_for(&email, 4).await.remove(3);
    for _ in 0..5 {
        assert_eq!(verify(&desk, &email, "00000000").await, Verdict::Deny);
    }
    assert_eq!(verify(&desk, &email, &code).await, Verdict::Deny, "locked");
    let audit = server.audit(200).await;
    assert!(audit.iter().any(|e| e.action == "lock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_hour_the_same_otp_is_resent_even_across_a_restart() {
    let clock = clock();
    let server = server_with(&clock).await;
    server.set_client("ws-1", auto_directory()).await;
    let identity = server.identity("ws-1");
    let desk = Desk::start(&identity, server.addr, server.data.path().join("ws-1.sock")).await;
    let email = my_email();
    assert!(matches!(
        desk.request(RequestMode::Directory).await,
        Requested::Send { .. }
    ));
    let first = server.codes_for(&email, 1).await.remove(0);

    clock.advance(Duration::from_secs(10 * 60));
    let server = server.restart().await;
    desk.connected().await;
    let again = desk.request(RequestMode::Directory).await;
    assert!(matches!(again, Requested::Resend { .. }), "{again:?}");
    let codes = server.codes_for(&email, 2).await;
    assert_eq!(codes[1], first, "the same OTP, mailed again");
    // Inside the resend gap it is not mailed again, and the person is told when.
    let soon = desk.login(LoginRequest::Resend).await;
    assert!(
        matches!(
            soon,
            LoginResponse::Requested(Requested::ResendLater { ref to, .. }) if *to == masked(&email)
        ),
        "{soon:?}"
    );

    clock.advance(HOUR);
    assert!(matches!(
        desk.request(RequestMode::Directory).await,
        Requested::Send { .. }
    ));
    let codes = server.codes_for(&email, 3).await;
    let newest = codes.last().unwrap();
    assert_ne!(*newest, first, "a new OTP after the hour");
    assert_eq!(
        verify(&desk, &email, &first).await,
        Verdict::Deny,
        "the old one is replaced"
    );
    assert!(matches!(
        verify(&desk, &email, newest).await,
        Verdict::Allow { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_verifies_of_one_otp_allow_exactly_one() {
    let clock = clock();
    // Flood control would refuse most of 50 requests at once from one agent.
    let server =
        TestServer::start_with(Arc::new(clock.clone()), "requests_per_second = 100\n").await;
    server.set_client("ws-1", auto_directory()).await;
    let desk = Arc::new(server.desk("ws-1").await);
    desk.request(RequestMode::Directory).await;
    let code = server.codes_for(&my_email(), 1).await.remove(0);
    let mut tries = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (desk, code) = (desk.clone(), code.clone());
        tries.spawn(async move { verify(&desk, &my_email(), &code).await });
    }
    let verdicts = tries.join_all().await;
    let allowed = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Allow { .. }))
        .count();
    assert_eq!(allowed, 1, "{verdicts:?}");
    // The others are refused: denied, or throttled once the person's share of
    // failures is spent.
    assert!(
        verdicts.iter().all(|v| matches!(
            v,
            Verdict::Allow { .. } | Verdict::Deny | Verdict::Throttle { .. }
        )),
        "{verdicts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sessions_show_the_user_name_outlive_connections_and_restarts_and_end_on_logout_or_timeout()
 {
    let clock = clock();
    let server = server_with(&clock).await;
    server.set_client("ws-1", auto_directory()).await;
    let identity = server.identity("ws-1");

    // alice, through the agent's link (the test runs as another OS user).
    let agent = Agent::start(&identity, server.addr);
    agent.welcomed(1, Duration::from_secs(20)).await;
    let as_alice = |request| {
        let link = agent.link.clone();
        async move {
            link.call(Request::Login {
                os_user: "alice".into(),
                request,
            })
            .await
        }
    };
    as_alice(LoginRequest::Request(RequestMode::Directory))
        .await
        .unwrap();
    let code = server.codes_for("alice@example.com", 1).await.remove(0);
    let verified = as_alice(LoginRequest::Verify {
        email: "alice@example.com".into(),
        code: Secret(code),
    })
    .await;
    assert!(matches!(
        verified,
        Ok(Response::Login(LoginResponse::Verified(
            Verdict::Allow { .. }
        )))
    ));

    // The operator's command shows the User Name.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .args(["admin", "--data-dir"])
        .arg(server.data_dir())
        .args(["sessions", "list"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let listing = String::from_utf8(output.stdout).unwrap();
    assert!(
        listing.contains("ws-1\talice (alice@example.com)\t"),
        "{listing}"
    );

    // The tester's own session, then logout.
    let desk = Desk::start(&identity, server.addr, server.data.path().join("ws-1.sock")).await;
    desk.request(RequestMode::Directory).await;
    let code = server.codes_for(&my_email(), 1).await.remove(0);
    assert!(matches!(
        verify(&desk, &my_email(), &code).await,
        Verdict::Allow { .. }
    ));
    assert_eq!(server.sessions(false).await.len(), 2);
    assert_eq!(
        desk.login(LoginRequest::Logout { session: None }).await,
        LoginResponse::LoggedOut { ended: true }
    );
    let names: Vec<String> = server
        .sessions(false)
        .await
        .into_iter()
        .map(|s| s.user_name)
        .collect();
    assert_eq!(names, ["alice (alice@example.com)"]);

    // alice's agent and then the server go away; she is still logged in.
    drop(agent);
    let server = server.restart().await;
    desk.connected().await;
    let open = server.sessions(false).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].user_name, "alice (alice@example.com)");

    // The whole computer goes away for longer than the session timeout: when its
    // agent is back, her session is over, as of when it went.
    desk.stop().await;
    let last_heard = clock.now();
    clock.advance(otpgate_actors::settings::DEFAULT_SESSION_TIMEOUT + Duration::from_secs(60));
    let desk = Desk::start(&identity, server.addr, server.data.path().join("ws-1.sock")).await;
    // The computer's actor ends it on its first sweep after the agent is back.
    crate::common::wait_until(Duration::from_secs(10), "alice's session ends", || async {
        server.sessions(false).await.is_empty()
    })
    .await;
    let all = server.sessions(true).await;
    let alice = all
        .iter()
        .find(|s| s.user_name.starts_with("alice"))
        .unwrap();
    assert_eq!(alice.end_reason.as_deref(), Some("agent not heard from"));
    assert!(
        alice.ended.unwrap()
            <= last_heard.unix_millis()
                + otpgate_actors::settings::DEFAULT_SESSION_TIMEOUT.as_millis() as u64
    );
    let reasons: Vec<_> = all.iter().filter_map(|s| s.end_reason.clone()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.contains(&"logged out".to_owned()), "{reasons:?}");
    desk.stop().await;
}

//! The PAM gate end to end: `pam_otpgate.so` loaded by `pamtester` from a PAM
//! service file the test writes, a real agent, a real server, and test
//! accounts the test creates, each put back as it was on drop. Needs root.

use std::sync::Arc;
use std::time::Duration;

use crate::common::agent::Desk;
use crate::common::auto_directory;
use crate::common::pamtester::{Pamtester, otp_window};
use crate::common::server::TestServer;
use crate::common::system::{self, Account, Group, PamService};
use otpgate_actors::{Clock, ManualClock, SystemClock};
use otpgate_protocol::admin::{AdminRequest, AdminResponse, Choice, OptionsView, RoleView};
use otpgate_protocol::login::Secret;

const HOUR: Duration = Duration::from_secs(60 * 60);

/// A service whose `auth` and `session` are the module's, with `args`.
fn service(name: &str, desk: &Desk, args: &str) -> PamService {
    PamService::gate(name, system::module(), &desk.socket, args)
}

async fn approve(server: &TestServer, choice: Choice, comment: Option<&str>) {
    let id = wait_for_request(server).await;
    let answer = server
        .admin(AdminRequest::RequestDecide {
            id,
            by: "admin".into(),
            password: Secret(server.admin_password().await),
            choice,
            comment: comment.map(Into::into),
        })
        .await;
    assert!(matches!(answer, AdminResponse::Decided(_)), "{answer:?}");
}

/// The id of the pending access request, once there is one.
async fn wait_for_request(server: &TestServer) -> u64 {
    crate::common::wait_until(Duration::from_secs(20), "an access request", || async {
        !server.requests(false).await.is_empty()
    })
    .await;
    server.requests(false).await[0].id
}

async fn setup() -> (ManualClock, TestServer, Desk) {
    let clock = ManualClock::new(SystemClock.now());
    let server = TestServer::start_with_clock(Arc::new(clock.clone())).await;
    let desk = server.desk("ws-1").await;
    (clock, server, desk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_mode_ends_in_a_login() {
    if !system::root_or_skip("every_request_mode_ends_in_a_login") {
        return;
    }
    let (clock, server, desk) = setup().await;
    let account = Account::create("otpgate-t1", &[]);
    let service = service("otpgate-test-modes", &desk, "");
    let email = account.email();

    // Neither auto option: an access request with the email address, waited
    // for, approved; back at the OTP window with the email filled in.
    let mut pam = Pamtester::start(&service, &account.name, &["authenticate"]);
    pam.answer("Email address (empty", "").await;
    pam.answer("Email address: ", &email).await;
    approve(&server, Choice::Approve, None).await;
    let code = server.codes_for(&email, 1).await.remove(0);
    pam.answer(&format!("One-time password for {email}"), &code)
        .await;
    let (ok, shown) = pam.finish().await;
    assert!(ok, "{shown}");
    for said in [
        "has been sent to the approvers",
        "Your request was approved",
    ] {
        assert!(shown.contains(said), "{said:?} in {shown}");
    }

    // Active Directory users: nothing to type; the address is shown masked
    // and typed in full.
    clock.advance(HOUR);
    server.set_client("ws-1", auto_directory()).await;
    let mut pam = Pamtester::start(&service, &account.name, &["authenticate"]);
    // The latest request's address is still filled in: an empty OTP asks anew.
    pam.answer("(empty to request", "").await;
    pam.answer("Press Enter", "").await;
    let code = server.codes_for(&email, 2).await.remove(1);
    otp_window(&mut pam, &email, &code).await;
    let (ok, shown) = pam.finish().await;
    assert!(ok, "{shown}");
    assert!(
        shown.contains("has been sent to o***@example.com"),
        "{shown}"
    );

    // Emergency access, offered beside the directory.
    clock.advance(HOUR);
    let mut pam = Pamtester::start(&service, &account.name, &["authenticate"]);
    pam.answer("(empty to request", "").await;
    pam.answer("Press Enter", "E").await;
    pam.answer(
        "I need emergency access to computer. Email address: ",
        &email,
    )
    .await;
    approve(&server, Choice::Approve, None).await;
    let code = server.codes_for(&email, 3).await.remove(2);
    pam.answer(&format!("One-time password for {email}"), &code)
        .await;
    let (ok, shown) = pam.finish().await;
    assert!(ok, "{shown}");

    // Internal users: login name and password.
    clock.advance(HOUR);
    let added = server
        .admin(AdminRequest::UserAdd {
            login: "carol".into(),
            email: email.clone(),
            role: RoleView::User,
            password: Secret("carol's long password".into()),
        })
        .await;
    assert_eq!(added, AdminResponse::Done);
    server
        .set_client("ws-1", crate::common::auto_internal_only())
        .await;
    let mut pam = Pamtester::start(&service, &account.name, &["authenticate"]);
    pam.answer("(empty to request", "").await;
    pam.answer("Login name", "carol").await;
    pam.answer("Password: ", "carol's long password").await;
    let code = server.codes_for(&email, 4).await.remove(3);
    otp_window(&mut pam, &email, &code).await;
    let (ok, shown) = pam.finish().await;
    assert!(ok, "{shown}");
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_say_access_denied_and_nothing_more() {
    if !system::root_or_skip("denials_say_access_denied_and_nothing_more") {
        return;
    }
    let (clock, server, desk) = setup().await;
    let account = Account::create("otpgate-t2", &[]);
    let other = Account::create("otpgate-t3", &[]);
    let service = service("otpgate-test-denials", &desk, "");
    let email = account.email();

    // Denied by an approver, with a comment.
    let mut pam = Pamtester::start(&service, &account.name, &["authenticate"]);
    pam.answer("Email address (empty", "").await;
    pam.answer("Email address: ", &email).await;
    approve(&server, Choice::Deny, Some("not on a Sunday")).await;
    let (ok, shown) = pam.finish().await;
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("Your request was denied: not on a Sunday"),
        "{shown}"
    );

    // Nobody decides before the request expires.
    let mut pam = Pamtester::start(&service, &account.name, &["authenticate"]);
    pam.answer("(empty to request", "").await;
    pam.answer("Email address: ", &email).await;
    wait_for_request(&server).await;
    clock.advance(Duration::from_secs(31 * 60));
    let (ok, shown) = pam.finish().await;
    assert!(!ok, "{shown}");
    assert!(shown.contains("expired without a decision"), "{shown}");

    // An OTP issued: a wrong one, then another user's, are denied alike; the
    // right one once; then its replay.
    for user in [&account, &other] {
        server
            .generate("ws-1", &user.name, &user.email(), false)
            .await;
    }
    let code = server.codes_for(&email, 1).await.remove(0);
    let others = server.codes_for(&other.email(), 1).await.remove(0);
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for (typed, allowed) in [
        (wrong, false),
        (others.as_str(), false),
        (code.as_str(), true),
        (code.as_str(), false),
    ] {
        let mut pam = Pamtester::start(&service, &account.name, &["authenticate"]);
        otp_window(&mut pam, &email, typed).await;
        let (ok, shown) = pam.finish().await;
        assert_eq!(ok, allowed, "{shown}");
        if !allowed {
            assert!(shown.contains("Access denied."), "{shown}");
            for hint in ["wrong", "used", "another", "invalid", "not yours"] {
                assert!(!shown.contains(hint), "no hint of which check: {shown}");
            }
        }
    }
    let allowed = server
        .audit(0)
        .await
        .iter()
        .filter(|e| e.action == "verify" && e.outcome.starts_with("allowed"))
        .count();
    assert_eq!(allowed, 1, "the right OTP let in once, its replay not");
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_unreachable_and_exempt_pass_or_fail_without_a_prompt() {
    if !system::root_or_skip("off_unreachable_and_exempt_pass_or_fail_without_a_prompt") {
        return;
    }
    let (_, server, desk) = setup().await;
    let exempt = Group::create("otpgate-exempt-t");
    let account = Account::create("otpgate-t4", &[]);
    let breakglass = Account::create("otpgate-t5", &[&exempt]);
    let args = format!("exempt_group={}", exempt.name);
    let gate = service("otpgate-test-edges", &desk, &args);
    // Nothing is typed: a prompt would get no answer and fail the login.
    let unattended = |user: &str, service: &PamService| {
        let pam = Pamtester::start(service, user, &["authenticate"]);
        async move { pam.finish().await }
    };

    // An exempt account passes, and the audit log hears of it.
    let (ok, shown) = unattended(&breakglass.name, &gate).await;
    assert!(ok, "{shown}");
    crate::common::wait_until(
        Duration::from_secs(20),
        "the exempt login is audited",
        || async {
            server.audit(20).await.iter().any(|e| {
                e.action == "exempt"
                    && e.who.starts_with(&breakglass.name)
                    && e.outcome.contains("otpgate-test-edges")
            })
        },
    )
    .await;

    // With OTPs off for the computer: no prompt, through.
    server
        .set_client(
            "ws-1",
            OptionsView {
                allow_otp: Some(false),
                ..OptionsView::default()
            },
        )
        .await;
    let (ok, shown) = unattended(&account.name, &gate).await;
    assert!(ok, "{shown}");
    assert!(shown.contains("not required"), "{shown}");

    // The agent's socket is not there: closed by default, open when told.
    let nowhere = PamService::create(
        "otpgate-test-nowhere",
        &format!(
            "auth required {} socket=/nonexistent/agent.sock\n",
            system::module().display()
        ),
    );
    let (ok, shown) = unattended(&account.name, &nowhere).await;
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("The OTP server cannot be reached"),
        "{shown}"
    );

    // The server is down (the agent answers, without a link): the same.
    let allow = service("otpgate-test-edges-allow", &desk, "on_unreachable=allow");
    let data = server.stop().await;
    let (ok, shown) = unattended(&account.name, &gate).await;
    assert!(!ok, "{shown}");
    assert!(
        shown.contains("The OTP server cannot be reached"),
        "{shown}"
    );
    let (ok, shown) = unattended(&account.name, &allow).await;
    assert!(ok, "on_unreachable=allow: {shown}");
    drop(data);
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_session_lives_as_long_as_the_pam_session() {
    if !system::root_or_skip("the_client_session_lives_as_long_as_the_pam_session") {
        return;
    }
    let (_, server, desk) = setup().await;
    let account = Account::create("otpgate-t6", &[]);
    let service = service("otpgate-test-sessions", &desk, "");
    let email = account.email();
    server.generate("ws-1", &account.name, &email, false).await;
    let code = server.codes_for(&email, 1).await.remove(0);
    let mut pam = Pamtester::start(
        &service,
        &account.name,
        &["authenticate", "open_session", "close_session"],
    );
    otp_window(&mut pam, &email, &code).await;
    let (ok, shown) = pam.finish().await;
    assert!(ok, "{shown}");
    crate::common::wait_until(
        Duration::from_secs(20),
        "the session ends at close",
        || async {
            let sessions = server.sessions(true).await;
            sessions.len() == 1
                && sessions[0].user_name == format!("{} ({email})", account.name)
                && sessions[0].ended.is_some()
        },
    )
    .await;
    desk.stop().await;
}

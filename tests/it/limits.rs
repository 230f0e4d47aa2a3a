//! Each failure limit on its own, over real sockets: a person (an OS user on one
//! computer), a computer, an email address across computers, an internal login
//! across computers, and requests. Each test shows the limit that throttled is
//! the one it is about: the others still had room. The tests run as root, who
//! may act for any OS user through the agent's socket.

use crate::common::agent::Desk;
use crate::common::auto_directory;
use crate::common::server::TestServer;
use otpgate::cli::prompt::Prompt;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, OptionsView, RoleView, SettingsPatch};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};

/// A server whose `max_failures` is 4: a computer, an address and a login take
/// 4 failures, a person 1.
async fn server() -> TestServer {
    let server = TestServer::start().await;
    server
        .set_settings(SettingsPatch {
            max_failures: Some(4),
            ..SettingsPatch::default()
        })
        .await;
    server
}

async fn ask(desk: &Desk, os_user: &str, request: LoginRequest) -> LoginResponse {
    let prompt = Prompt {
        socket: desk.socket.clone(),
        os_user: Some(os_user.into()),
    };
    prompt.ask(request).await.unwrap()
}

/// A wrong OTP typed by `os_user` with `email`.
async fn wrong(desk: &Desk, os_user: &str, email: &str) -> LoginResponse {
    let verify = LoginRequest::Verify {
        email: email.into(),
        code: Secret("12345678".into()),
    };
    ask(desk, os_user, verify).await
}

fn deny() -> LoginResponse {
    LoginResponse::Verified(Verdict::Deny)
}

fn throttled(answer: &LoginResponse) -> bool {
    matches!(
        answer,
        LoginResponse::Verified(Verdict::Throttle { .. })
            | LoginResponse::Requested(Requested::Throttle { .. })
    )
}

/// Whether the audit log says a verify was throttled for `what`.
async fn throttled_for(server: &TestServer, what: &str) -> bool {
    let outcome = format!("throttled: too many failures for {what}");
    server.audit(0).await.iter().any(|e| e.outcome == outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_throttled_and_nobody_else_on_their_computer() {
    let server = server().await;
    let desk = server.desk("ws-1").await;
    assert_eq!(wrong(&desk, "alice", "a@example.com").await, deny());
    let answer = wrong(&desk, "alice", "b@example.com").await;
    assert!(throttled(&answer), "{answer:?}");
    assert!(throttled_for(&server, "this user on this computer").await);
    // The computer and the addresses had room: bob is answered.
    assert_eq!(wrong(&desk, "bob", "a@example.com").await, deny());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_sprayed_with_names_is_throttled_for_everyone() {
    let server = server().await;
    let desk = server.desk("ws-1").await;
    for n in 0..4 {
        let answer = wrong(&desk, &format!("u{n}"), &format!("u{n}@example.com")).await;
        assert_eq!(answer, deny());
    }
    // A new person with a new address: only the computer is full.
    let answer = wrong(&desk, "carol", "carol@example.com").await;
    assert!(throttled(&answer), "{answer:?}");
    assert!(throttled_for(&server, "this computer").await);
    // Another computer is not.
    let other = server.desk("ws-2").await;
    assert_eq!(wrong(&other, "carol", "carol@example.com").await, deny());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_tried_from_two_computers_is_throttled_on_both() {
    let server = server().await;
    let ws1 = server.desk("ws-1").await;
    let ws2 = server.desk("ws-2").await;
    // Two people on each computer: each computer at 2 of 4, the address at 4.
    for (desk, os_user) in [(&ws1, "u1"), (&ws1, "u2"), (&ws2, "u3"), (&ws2, "u4")] {
        assert_eq!(wrong(desk, os_user, "dana@example.com").await, deny());
    }
    let answer = wrong(&ws2, "u5", "dana@example.com").await;
    assert!(throttled(&answer), "{answer:?}");
    assert!(throttled_for(&server, "dana@example.com").await);
    // The same person with another address is answered: it was the address.
    assert_eq!(wrong(&ws2, "u5", "erin@example.com").await, deny());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_on_an_internal_login_is_throttled_across_computers() {
    let server = server().await;
    let add = AdminRequest::UserAdd {
        login: "ivan".into(),
        email: "ivan@example.com".into(),
        role: RoleView::User,
        password: Secret("the right password".into()),
    };
    assert_eq!(server.admin(add).await, AdminResponse::Done);
    let internal = OptionsView {
        auto_internal: Some(true),
        ..OptionsView::default()
    };
    let guess = |password: &str| {
        LoginRequest::Request(RequestMode::Internal {
            login: "ivan".into(),
            password: Secret(password.into()),
        })
    };
    let mut desks = Vec::new();
    for name in ["ws-1", "ws-2"] {
        server.set_client(name, internal.clone()).await;
        desks.push(server.desk(name).await);
    }
    for (desk, os_user) in [(0, "u1"), (0, "u2"), (1, "u3"), (1, "u4")] {
        let answer = ask(&desks[desk], os_user, guess("wrong")).await;
        assert_eq!(answer, LoginResponse::Requested(Requested::Refuse));
    }
    // Even the right password waits now: the login is throttled...
    let answer = ask(&desks[1], "u5", guess("the right password")).await;
    assert!(throttled(&answer), "{answer:?}");
    // ...while u5 and ws-2 had room: another login is checked.
    let other = LoginRequest::Request(RequestMode::Internal {
        login: "nobody".into(),
        password: Secret("x".into()),
    });
    assert_eq!(
        ask(&desks[1], "u5", other).await,
        LoginResponse::Requested(Requested::Refuse)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_throttle_the_person_who_made_them() {
    let server = server().await;
    server.set_client("ws-1", auto_directory()).await;
    let desk = server.desk("ws-1").await;
    let directory = || LoginRequest::Request(RequestMode::Directory);
    // Not in the directory: refused, and counted.
    assert_eq!(
        ask(&desk, "stranger", directory()).await,
        LoginResponse::Requested(Requested::Refuse)
    );
    let answer = ask(&desk, "stranger", directory()).await;
    assert!(throttled(&answer), "{answer:?}");
    // alice, whom the directory knows, is sent her OTP.
    let answer = ask(&desk, "alice", directory()).await;
    assert!(
        matches!(answer, LoginResponse::Requested(Requested::Send { .. })),
        "{answer:?}"
    );
}

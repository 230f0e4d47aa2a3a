//! Hostile input from a client computer, over real sockets: names that break
//! their rule are refused like any other refusal, counted, and never written
//! into the audit log.

use crate::common::auto_directory;
use crate::common::server::TestServer;
use otpgate::cli::prompt::Prompt;
use otpgate_protocol::admin::SettingsPatch;
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};

const INJECTED: &str = "x@example.com\n2026-11-29 00:00:00\tadmin\tws-1\tapprove\tforged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_break_their_rule_are_refused_counted_and_never_written_out() {
    let server = TestServer::start().await;
    // A person may fail once before they are throttled.
    server
        .set_settings(SettingsPatch {
            max_failures: Some(10),
            ..SettingsPatch::default()
        })
        .await;
    let desk = server.desk("ws-1").await;
    let as_user = |os_user: &str| Prompt {
        socket: desk.socket.clone(),
        os_user: Some(os_user.into()),
    };
    let verify = |email: &str| LoginRequest::Verify {
        email: email.into(),
        code: Secret("12345678".into()),
    };

    // An address with a line break and a forged audit line: denied, as usual.
    let denied = as_user("alice").ask(verify(INJECTED)).await.unwrap();
    assert_eq!(denied, LoginResponse::Verified(Verdict::Deny));
    // It was counted against alice: her next try waits.
    let next = as_user("alice").ask(verify("a@example.com")).await.unwrap();
    assert!(
        matches!(next, LoginResponse::Verified(Verdict::Throttle { .. })),
        "{next:?}"
    );
    // An access request for such an address is refused too.
    let asked = as_user("bob")
        .ask(LoginRequest::Request(RequestMode::Email(INJECTED.into())))
        .await
        .unwrap();
    assert_eq!(asked, LoginResponse::Requested(Requested::Refuse));

    // OS user names with escape sequences or two separators are refused.
    for os_user in ["evil\u{1b}[2J", "CORP\\a@b", " padded"] {
        let refused = as_user(os_user)
            .ask(LoginRequest::Request(RequestMode::Email(
                "carol@example.com".into(),
            )))
            .await
            .unwrap();
        assert_eq!(refused, LoginResponse::Requested(Requested::Refuse));
        let refused = as_user(os_user)
            .ask(verify("carol@example.com"))
            .await
            .unwrap();
        assert_eq!(refused, LoginResponse::Verified(Verdict::Deny));
    }
    assert!(server.requests(true).await.is_empty());

    // The audit log says what happened without any of it.
    let audit = server.audit(0).await;
    assert!(
        audit
            .iter()
            .any(|e| e.outcome == "denied (not an email address)")
    );
    assert!(audit.iter().any(|e| e.who == "(invalid OS user name)@ws-1"));
    for entry in &audit {
        let text = format!("{} {} {}", entry.who, entry.action, entry.outcome);
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(
            !text.contains("forged") && !text.contains("evil"),
            "{text:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_that_makes_up_users_cannot_mail_without_end() {
    let server = TestServer::start().await;
    server
        .set_settings(SettingsPatch {
            max_new_per_computer: Some(3),
            ..SettingsPatch::default()
        })
        .await;
    let desk = server.desk("ws-1").await;
    let ask = |os_user: String| {
        let socket = desk.socket.clone();
        async move {
            let prompt = Prompt {
                socket,
                os_user: Some(os_user),
            };
            prompt
                .ask(LoginRequest::Request(RequestMode::Email(
                    "someone@example.com".into(),
                )))
                .await
                .unwrap()
        }
    };
    // A new OS user name each time gets around the once-per-hour rule, but not
    // around the computer's cap.
    for n in 0..3 {
        let asked = ask(format!("made-up-{n}")).await;
        assert!(
            matches!(
                asked,
                LoginResponse::Requested(Requested::AwaitApproval { .. })
            ),
            "{asked:?}"
        );
    }
    let capped = ask("made-up-3".into()).await;
    assert!(
        matches!(capped, LoginResponse::Requested(Requested::Throttle { .. })),
        "{capped:?}"
    );
    assert_eq!(server.requests(true).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_address_is_shown_to_the_client_only_masked() {
    let server = TestServer::start().await;
    server.set_client("ws-1", auto_directory()).await;
    let desk = server.desk("ws-1").await;
    let alice = Prompt {
        socket: desk.socket.clone(),
        os_user: Some("alice".into()),
    };
    let sent = alice
        .ask(LoginRequest::Request(RequestMode::Directory))
        .await
        .unwrap();
    assert!(
        matches!(&sent, LoginResponse::Requested(Requested::Send { to, .. }) if to == "a***@example.com"),
        "{sent:?}"
    );
    let again = alice.ask(LoginRequest::Resend).await.unwrap();
    let shown = format!("{again:?}");
    assert!(!shown.contains("alice@"), "{shown}");
    let status = alice.ask(LoginRequest::Status).await.unwrap();
    let shown = format!("{status:?}");
    assert!(!shown.contains("alice@"), "{shown}");
    // The mail itself goes to the real address, and the OTP works with it.
    let code = server.codes_for("alice@example.com", 1).await.remove(0);
    let verified = alice
        .ask(LoginRequest::Verify {
            email: "alice@example.com".into(),
            code: Secret(code),
        })
        .await
        .unwrap();
    assert!(
        matches!(verified, LoginResponse::Verified(Verdict::Allow { .. })),
        "{verified:?}"
    );
}

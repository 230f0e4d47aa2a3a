//! Hostile input from a client computer, over real sockets: names that break
//! their rule are refused like any other refusal, counted, and never written
//! into the audit log.

mod common;

use common::server::TestServer;
use otpgate::cli::prompt::Prompt;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, SettingsPatch};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};

const INJECTED: &str = "x@example.com\n2026-11-29 00:00:00\tadmin\tws-1\tapprove\tforged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_break_their_rule_are_refused_counted_and_never_written_out() {
    let server = TestServer::start().await;
    // A person may fail once before they are throttled.
    let patch = SettingsPatch {
        max_failures: Some(10),
        ..SettingsPatch::default()
    };
    let set = server.admin(AdminRequest::SettingsSet(patch)).await;
    assert!(matches!(set, AdminResponse::Settings(_)), "{set:?}");
    let desk = server.desk("ws-1").await;
    let as_user = |os_user: &str| Prompt {
        socket: &desk.socket,
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

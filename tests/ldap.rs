//! Active Directory over LDAP against a real OpenLDAP (slapd) with an AD-like
//! schema over LDAPS: auto-send end to end through an agent, both spellings of
//! an account, unknown, disabled and mail-less accounts refused alike, names
//! that try to widen the search, the directory going away and coming back.

mod common;

use common::agent::Desk;
use common::server::TestServer;
use common::slapd::Slapd;
use otpgate::cli::prompt::Prompt;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, OptionsView};
use otpgate_protocol::login::{LoginRequest, LoginResponse, RequestMode, Requested};

/// Asks for an OTP as `os_user` (root acts for them) with the directory.
async fn ask_as(desk: &Desk, os_user: &str) -> Requested {
    let prompt = Prompt {
        socket: desk.socket.clone(),
        os_user: Some(os_user.into()),
    };
    match prompt
        .ask(LoginRequest::Request(RequestMode::Directory))
        .await
        .unwrap()
    {
        LoginResponse::Requested(requested) => requested,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_users_get_their_otp_and_nobody_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let Some(slapd) = Slapd::start(dir.path(), "directory_users_get_their_otp") else {
        return;
    };
    let server = TestServer::start_with_config(&slapd.config()).await;
    let desk = server.desk("ws-1").await;
    let set = server
        .admin(AdminRequest::ClientSet {
            computer: "ws-1".into(),
            group: None,
            options: OptionsView {
                auto_directory: Some(true),
                ..OptionsView::default()
            },
        })
        .await;
    assert_eq!(set, AdminResponse::Done);

    // Both spellings of alice's account find her mail.
    for account in ["CORP\\alice", "alice@corp.example.com"] {
        let answer = ask_as(&desk, account).await;
        assert!(
            matches!(&answer, Requested::Send { to, .. } if to == "a***@example.com"),
            "{account}: {answer:?}"
        );
    }
    assert_eq!(server.codes_for("alice@example.com", 2).await.len(), 2);

    // Unknown, disabled, without mail, or a name that would match everyone:
    // the same refusal.
    for account in ["CORP\\zed", "CORP\\dave", "CORP\\erin", "CORP\\*", "*"] {
        assert_eq!(ask_as(&desk, account).await, Requested::Refuse, "{account}");
    }

    // What the operator sees of an account, asked afresh.
    let test = |account: &str| AdminRequest::DirectoryTest {
        account: account.into(),
    };
    let AdminResponse::DirectoryAccount(alice) = server.admin(test("CORP\\alice")).await else {
        panic!("directory test");
    };
    assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
    assert!(!alice.disabled && alice.error.is_none());
    assert_eq!(
        alice.groups,
        [format!("cn=it-approvers,{}", common::slapd::BASE)]
    );
    let AdminResponse::DirectoryAccount(dave) = server.admin(test("CORP\\dave")).await else {
        panic!("directory test");
    };
    assert!(dave.found && dave.disabled, "{dave:?}");

    // The directory goes away: a clear answer, the server serves on.
    slapd.stop();
    let AdminResponse::DirectoryAccount(down) = server.admin(test("CORP\\alice")).await else {
        panic!("directory test");
    };
    assert!(down.error.is_some(), "{down:?}");
    assert_eq!(
        ask_as(&desk, "CORP\\bob").await,
        Requested::DirectoryUnavailable
    );
    let status = Prompt {
        socket: desk.socket.clone(),
        os_user: Some("CORP\\bob".into()),
    }
    .ask(LoginRequest::Status)
    .await
    .unwrap();
    assert!(matches!(status, LoginResponse::Status(_)), "{status:?}");

    // Back: found again, without restarting otpgate.
    slapd.run();
    let answer = ask_as(&desk, "CORP\\bob").await;
    assert!(
        matches!(&answer, Requested::Send { to, .. } if to == "b***@example.com"),
        "{answer:?}"
    );
    desk.stop().await;
}

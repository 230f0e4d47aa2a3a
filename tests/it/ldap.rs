//! Active Directory over LDAP against a real OpenLDAP (slapd) with an AD-like
//! schema over LDAPS: auto-send end to end through an agent, both spellings of
//! an account, unknown, disabled and mail-less accounts refused alike, names
//! that try to widen the search, the directory going away and coming back;
//! directory accounts and (nested) groups as approvers, mailed at their
//! directory address, signing in with their directory password.

use std::time::Duration;

use crate::common::agent::Desk;
use crate::common::auto_directory;
use crate::common::server::TestServer;
use crate::common::slapd::{Slapd, password};
use crate::common::web::WebClient;
use otpgate::cli::prompt::Prompt;
use otpgate_protocol::admin::{AdminErrorCode, AdminRequest, AdminResponse, Choice, OptionsView};
use otpgate_protocol::login::{LoginRequest, LoginResponse, RequestMode, Requested, Secret};

/// Asks for an OTP as `os_user` (root acts for them) with the directory.
async fn ask_as(desk: &Desk, os_user: &str) -> Requested {
    ask(desk, os_user, RequestMode::Directory).await
}

/// Asks for an OTP as `os_user` (root acts for them) by `mode`.
async fn ask(desk: &Desk, os_user: &str, mode: RequestMode) -> Requested {
    let prompt = Prompt {
        socket: desk.socket.clone(),
        os_user: Some(os_user.into()),
    };
    match prompt.ask(LoginRequest::Request(mode)).await.unwrap() {
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
    // The first domain controllers listed do not answer: the next does.
    let (config, _silent) = slapd.config_behind_dead_ones();
    let server = TestServer::start_with_config(&config).await;
    let desk = server.desk("ws-1").await;
    server.set_client("ws-1", auto_directory()).await;

    // Alice's account finds her mail; her other spellings are the same
    // person, with the same OTP: no second one within the hour.
    let answer = ask_as(&desk, "CORP\\alice").await;
    assert!(
        matches!(&answer, Requested::Send { to, .. } if to == "a***@example.com"),
        "{answer:?}"
    );
    for account in [
        "alice@corp.example.com",
        "corp\\ALICE",
        "ALICE@CORP.EXAMPLE.COM",
        "Corp\\Alice",
    ] {
        let answer = ask_as(&desk, account).await;
        assert!(
            !matches!(answer, Requested::Send { .. }),
            "{account}: {answer:?}"
        );
    }
    assert_eq!(server.codes_for("alice@example.com", 1).await.len(), 1);

    // Unknown, disabled, locked out, expired, without mail, of a domain not
    // in [ldap.domains], or a name that would match everyone: the same
    // refusal.
    for account in [
        "CORP\\zed",
        "CORP\\dave",
        "CORP\\gina",
        "CORP\\hank",
        "CORP\\erin",
        "OTHER\\alice",
        "CORP\\*",
        "*",
    ] {
        assert_eq!(ask_as(&desk, account).await, Requested::Refuse, "{account}");
    }
    assert!(matches!(
        ask_as(&desk, "CORP\\ivan").await,
        Requested::Send { .. }
    ));

    // What the operator sees of an account, asked afresh.
    let test = |account: &str| AdminRequest::DirectoryTest {
        account: account.into(),
    };
    let AdminResponse::DirectoryAccount(alice) = server.admin(test("CORP\\alice")).await else {
        panic!("directory test");
    };
    assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
    assert!(!alice.disabled && alice.error.is_none());
    assert_eq!(alice.groups, ["it-approvers@corp.example.com"]);
    // In more groups than the directory answers in one search: all found.
    let AdminResponse::DirectoryAccount(lena) = server.admin(test("CORP\\lena")).await else {
        panic!("directory test");
    };
    assert_eq!(lena.groups.len(), 3, "{lena:?}");
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

/// An access request from `os_user` with `email`: its number.
async fn request_access(desk: &Desk, os_user: &str, email: &str) -> u64 {
    match ask(desk, os_user, RequestMode::Email(email.into())).await {
        Requested::AwaitApproval { request, .. } => request,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_people_and_groups_approve_with_their_directory_password() {
    let dir = tempfile::tempdir().unwrap();
    let Some(slapd) = Slapd::start(dir.path(), "directory_people_and_groups_approve") else {
        return;
    };
    let server = TestServer::start_with_config(&slapd.config()).await;
    let desk = server.desk("ws-1").await;
    let approvers = |entries: &[&str]| AdminRequest::ClientSet {
        computer: "ws-1".into(),
        group: None,
        options: OptionsView {
            approvers: Some(entries.iter().map(|e| (*e).to_owned()).collect()),
            ..OptionsView::default()
        },
    };
    // Entries the directory does not know are refused; accounts and groups it
    // knows are taken.
    let refused = server.admin(approvers(&["CORP\\nobody"])).await;
    assert!(
        matches!(&refused, AdminResponse::Fail(e) if e.message.contains("CORP\\nobody")),
        "{refused:?}"
    );
    let set = server
        .admin(approvers(&["CORP\\bob", "CORP\\it-approvers"]))
        .await;
    assert_eq!(set, AdminResponse::Done);

    // A request reaches bob, and the group's members through its nested
    // group (alice; frank through helpdesk), not disabled dave nor carol.
    let first = request_access(&desk, "worker1", "worker1@example.com").await;
    let outbox = server.data_dir().join("outbox");
    for approver in ["bob", "alice", "frank"] {
        let to = format!("{approver}@example.com");
        crate::common::wait_until(Duration::from_secs(20), "the approvers' mail", || async {
            !crate::common::mail::messages_to(&outbox, &to).is_empty()
        })
        .await;
    }
    for nobody in ["dave@example.com", "carol@example.com", "admin@example.com"] {
        assert!(
            crate::common::mail::messages_to(&outbox, nobody).is_empty(),
            "{nobody}"
        );
    }

    // Frank, in the group through helpdesk, signs in with his directory
    // password and approves: the requester gets the OTP.
    let frank = WebClient::new(&server);
    let answer = frank.sign_in("CORP\\frank", &password("frank")).await;
    assert_eq!(answer.status(), 303);
    let (page, csrf) = frank.page("/requests").await;
    assert!(page.contains("worker1@example.com"), "{page}");
    let answer = frank
        .post(
            &format!("/requests/{first}/decide"),
            &[("csrf", &csrf), ("choice", "approve")],
        )
        .await;
    assert_eq!(answer.status(), 303);
    assert_eq!(server.codes_for("worker1@example.com", 1).await.len(), 1);

    // Carol is in the directory but approves nothing here: her right
    // password opens nothing, and she is told why.
    let carol = WebClient::new(&server);
    let answer = carol
        .sign_in("carol@corp.example.com", &password("carol"))
        .await;
    assert_eq!(answer.status(), 403);
    let page = answer.text().await.unwrap();
    assert!(page.contains("approves no client computer"), "{page}");
    assert_eq!(carol.get("/requests").await.status(), 303, "not signed in");
    assert!(server.audit(20).await.iter().any(|e| e.action == "sign_in"
        && e.outcome == "refused: approves no client computer"
        && e.who.contains("carol")));
    let second = request_access(&desk, "worker2", "worker2@example.com").await;

    // Bob follows the link in his mail, signed in by his other spelling.
    let about_second = || {
        crate::common::mail::messages_to(&outbox, "bob@example.com")
            .into_iter()
            .find(|mail| mail.contains("worker2@example.com"))
    };
    crate::common::wait_until(Duration::from_secs(20), "bob's second mail", || async {
        about_second().is_some()
    })
    .await;
    let mail = about_second().unwrap();
    let token = crate::common::mail::token_after(&mail, "Deny:");
    let bob = WebClient::new(&server);
    assert_eq!(
        bob.sign_in("bob@corp.example.com", &password("bob"))
            .await
            .status(),
        303
    );
    let link = format!("/requests/decide?token={token}");
    let (page, csrf) = bob.page(&link).await;
    assert!(
        page.contains(&format!("Deny access request #{second}")),
        "{page}"
    );
    let form = [
        ("csrf", csrf.as_str()),
        ("token", token.as_str()),
        ("comment", ""),
    ];
    assert_eq!(bob.post("/requests/decide", &form).await.status(), 303);
    assert!(server.requests(false).await.is_empty(), "both decided");

    // On the admin socket, alice decides as herself with her directory
    // password; a wrong one is refused.
    let third = request_access(&desk, "worker3", "worker3@example.com").await;
    let decide = |password: String| AdminRequest::RequestDecide {
        id: third,
        by: "CORP\\alice".into(),
        password: Secret(password),
        choice: Choice::Deny,
        comment: None,
    };
    let wrong = server.admin(decide("not alice's".into())).await;
    assert!(
        matches!(&wrong, AdminResponse::Fail(e) if e.code == AdminErrorCode::Forbidden),
        "{wrong:?}"
    );
    let done = server.admin(decide(password("alice"))).await;
    assert!(matches!(done, AdminResponse::Decided(_)), "{done:?}");

    // Kate, named by her account though her principal name has another
    // suffix, decides too: people are compared by their entry, not a spelling.
    assert_eq!(
        server.admin(approvers(&["CORP\\kate"])).await,
        AdminResponse::Done
    );
    let fourth = request_access(&desk, "worker4", "worker4@example.com").await;
    let by_kate = server
        .admin(AdminRequest::RequestDecide {
            id: fourth,
            by: "kate@corp-alt.example".into(),
            password: Secret(password("kate")),
            choice: Choice::Approve,
            comment: None,
        })
        .await;
    assert!(matches!(by_kate, AdminResponse::Decided(_)), "{by_kate:?}");

    // A wrong directory password: refused like any other, then throttled
    // (even the right one) after a few tries, however the account is spelled
    // (bob's own sign-in above was one of the five a minute); an empty one
    // never binds.
    let guesser = WebClient::new(&server);
    assert_eq!(guesser.sign_in("CORP\\bob", "").await.status(), 401);
    for spelling in ["CORP\\bob", "corp\\BOB", "bob@CORP.example.com"] {
        assert_eq!(guesser.sign_in(spelling, "guess").await.status(), 401);
    }
    assert_eq!(
        guesser
            .sign_in("CORP\\bob", &password("bob"))
            .await
            .status(),
        429
    );
    assert!(
        server
            .audit(50)
            .await
            .iter()
            .any(|e| e.who.starts_with("web(CORP\\frank)") && e.outcome == "signed in")
    );
    desk.stop().await;
}

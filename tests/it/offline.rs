//! Offline codes end to end: issued on the server, kept by the agent as
//! verifiers only, taken by the real PAM module (`pamtester`, with
//! `on_unreachable=offline`) while the server is down, each once, and
//! accounted for when it is back; a revocation voids what is left. Test
//! accounts are made and put back as they were. Needs root.

use std::time::Duration;

use crate::common::agent::{Desk, unlimited};
use crate::common::pamtester::Pamtester;
use crate::common::server::TestServer;
use crate::common::system::{self, Account, PamService};
use crate::common::wait_until;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, OfflineSpec, OfflineView};
use otpgate_protocol::local::{LocalRequest, LocalResponse};
use otpgate_protocol::login::Secret;
use otpgate_protocol::offline::OfflineVerdict;

const WITHIN: Duration = Duration::from_secs(20);

/// Issues `count` offline codes for `os_user` on ws-1: the codes and what
/// was issued.
async fn issue(server: &TestServer, os_user: &str, count: u32) -> (Vec<String>, OfflineView) {
    issue_on(server, "ws-1", os_user, count).await
}

/// [`issue`] on `computer`.
async fn issue_on(
    server: &TestServer,
    computer: &str,
    os_user: &str,
    count: u32,
) -> (Vec<String>, OfflineView) {
    let answer = server
        .admin(AdminRequest::OfflineIssue(OfflineSpec {
            computer: computer.into(),
            os_user: os_user.into(),
            email: format!("{os_user}@example.com"),
            count,
            valid_days: 30,
        }))
        .await;
    let AdminResponse::OfflineIssued { codes, view } = answer else {
        panic!("{answer:?}")
    };
    (codes.into_iter().map(|Secret(code)| code).collect(), view)
}

/// What the agent of ws-1 keeps of its offline codes.
fn kept(server: &TestServer) -> String {
    std::fs::read_to_string(server.identity_dir("ws-1").join("offline")).unwrap_or_default()
}

/// Logs `user` in through `gate` with `ops`, typing `typed` at the offline
/// prompt: whether it went through, and what was shown.
async fn log_in(gate: &PamService, user: &str, typed: &str, ops: &[&str]) -> (bool, String) {
    let mut pam = Pamtester::start(gate, user, ops);
    pam.answer("Offline code", typed).await;
    pam.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_codes_let_in_once_while_the_server_is_down_and_are_accounted_for_after() {
    if !system::root_or_skip(
        "offline_codes_let_in_once_while_the_server_is_down_and_are_accounted_for_after",
    ) {
        return;
    }
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let alice = Account::create("otpgate-t12", &[]);
    let bob = Account::create("otpgate-t13", &[]);
    let (codes, view) = issue(&server, &alice.name, 3).await;
    assert_eq!(codes.len(), 3);
    let (bobs, _) = issue(&server, &bob.name, 2).await;

    // The agent is told at once, and keeps verifiers: no code, root's only.
    wait_until(WITHIN, "the agent holds both sets", || async {
        let kept = kept(&server);
        kept.contains(&alice.name) && kept.contains(&bob.name)
    })
    .await;
    let kept_now = kept(&server);
    for code in codes.iter().chain(&bobs) {
        let digits: String = code.chars().filter(char::is_ascii_digit).collect();
        assert!(!kept_now.contains(&digits) && !kept_now.contains(code.as_str()));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.identity_dir("ws-1").join("offline"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let gate = PamService::gate(
        "otpgate-test-offline",
        system::module(),
        &desk.socket,
        "on_unreachable=offline",
    );
    // While the server can be reached, the agent takes no offline code.
    let asked = otpgate::unix::ask::<_, LocalResponse>(
        &desk.socket,
        &LocalRequest::Offline {
            os_user: alice.name.clone(),
            service: "test".into(),
            code: Secret(codes[0].clone()),
        },
    )
    .await
    .unwrap();
    assert_eq!(asked, LocalResponse::Offline(OfflineVerdict::Online));

    let paused = server.pause().await;
    desk.disconnected().await;
    // Alice's first code lets her in once, through a whole session.
    let (ok, shown) = log_in(
        &gate,
        &alice.name,
        &codes[0],
        &["authenticate", "open_session", "close_session"],
    )
    .await;
    assert!(ok, "{shown}");
    assert!(
        shown.contains("The OTP server cannot be reached"),
        "{shown}"
    );
    let (ok, shown) = log_in(&gate, &alice.name, &codes[0], &["authenticate"]).await;
    assert!(
        !ok && shown.contains("Wrong offline code"),
        "used once: {shown}"
    );
    // Bob's code is not Alice's.
    let (ok, shown) = log_in(&gate, &alice.name, &bobs[0], &["authenticate"]).await;
    assert!(!ok && shown.contains("Wrong offline code"), "{shown}");
    // Five wrong in a row lock hers, even the right one; not Bob's.
    for _ in 0..3 {
        let (ok, _) = log_in(&gate, &alice.name, "0000-0000-0000", &["authenticate"]).await;
        assert!(!ok);
    }
    let (ok, shown) = log_in(&gate, &alice.name, &codes[1], &["authenticate"]).await;
    assert!(
        !ok && shown.contains("Too many wrong offline codes"),
        "{shown}"
    );
    let (ok, shown) = log_in(&gate, &bob.name, &bobs[0], &["authenticate"]).await;
    assert!(ok, "{shown}");

    // The server is back: both logins are accounted for, as sessions shown
    // offline (Alice's ended) and in the audit log.
    let server = paused.resume().await;
    desk.connected().await;
    let alices = format!("{} ({}@example.com) — offline", alice.name, alice.name);
    wait_until(WITHIN, "the offline logins are told", || async {
        let sessions = server.sessions(true).await;
        sessions.len() == 2
            && sessions
                .iter()
                .any(|s| s.user_name == alices && s.ended.is_some())
    })
    .await;
    let audit = server.audit(50).await;
    let told: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "offline_login")
        .collect();
    assert_eq!(told.len(), 2, "{audit:?}");
    assert!(told.iter().any(|e| e.who.starts_with(&alice.name)
        && e.outcome.contains("offline code 1 of 3")
        && e.outcome.contains("otpgate-test-offline")));
    // The code used is void everywhere: listed as used, and refused again
    // offline, where the lock went with the contact.
    let listed = server
        .admin(AdminRequest::OfflineList {
            computer: "ws-1".into(),
        })
        .await;
    let AdminResponse::Offline(sets) = listed else {
        panic!("{listed:?}")
    };
    let hers = sets.iter().find(|s| s.os_user == alice.name).unwrap();
    assert_eq!(hers.set, view.set);
    assert_eq!(hers.used.iter().map(|u| u.0).collect::<Vec<_>>(), [1]);
    let paused = server.pause().await;
    desk.disconnected().await;
    let (ok, shown) = log_in(&gate, &alice.name, &codes[0], &["authenticate"]).await;
    assert!(!ok && shown.contains("Wrong offline code"), "{shown}");
    let (ok, shown) = log_in(&gate, &alice.name, &codes[1], &["authenticate"]).await;
    assert!(ok, "the lock went with the contact: {shown}");

    // Revoked while the computer is away: at its next try it is refused,
    // and what is left of its codes is void.
    desk.stop().await;
    let server = paused.resume().await;
    let revoked = server
        .admin(AdminRequest::CertRevoke {
            computer: "ws-1".into(),
        })
        .await;
    assert!(!matches!(revoked, AdminResponse::Fail(_)), "{revoked:?}");
    // Its own certificate, the one revoked.
    let desk = Desk::spawn(Desk::config(
        &server.identity_dir("ws-1"),
        server.addr,
        server.data_dir().join("ws-1-again.sock"),
        unlimited(),
    ))
    .await;
    wait_until(WITHIN, "the agent voids its codes", || async {
        !kept(&server).contains(&bob.name)
    })
    .await;
    let gate = PamService::gate(
        "otpgate-test-offline-again",
        system::module(),
        &desk.socket,
        "on_unreachable=offline",
    );
    let (ok, shown) = log_in(&gate, &bob.name, &bobs[1], &["authenticate"]).await;
    assert!(!ok && shown.contains("Wrong offline code"), "void: {shown}");
    desk.stop().await;
}

/// The OS users with offline codes on `computer`.
async fn holders(server: &TestServer, computer: &str) -> Vec<String> {
    let listed = server
        .admin(AdminRequest::OfflineList {
            computer: computer.into(),
        })
        .await;
    let AdminResponse::Offline(sets) = listed else {
        panic!("{listed:?}")
    };
    sets.into_iter().map(|set| set.os_user).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_voids_their_offline_codes_on_every_computer() {
    let server = TestServer::start().await;
    let _one = server.desk("ws-1").await;
    let _two = server.desk("ws-2").await;
    server
        .add_user("bob", otpgate_protocol::admin::RoleView::User)
        .await;
    issue_on(&server, "ws-1", "bob", 1).await;
    issue_on(&server, "ws-2", "bob", 1).await;
    issue_on(&server, "ws-1", "carol", 1).await;
    let disabled = server
        .admin(AdminRequest::UserSet {
            login: "bob".into(),
            email: None,
            role: None,
            password: None,
            disabled: Some(true),
        })
        .await;
    assert_eq!(disabled, AdminResponse::Done);
    assert_eq!(holders(&server, "ws-1").await, ["carol"]);
    assert!(holders(&server, "ws-2").await.is_empty());
}

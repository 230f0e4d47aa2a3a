//! Who decides access requests: a computer's approvers (from its group, internal
//! users only), and the administrators when it names none. Everyone else is
//! refused, by id and by a link whose approver is no longer one. Mail goes to
//! the `.eml` outbox and is read as the approvers read it.

use std::time::Duration;

use crate::common::mail::{messages_to, token_after};
use crate::common::server::TestServer;
use otpgate_protocol::admin::{
    AdminErrorCode, AdminRequest, AdminResponse, Choice, Decision, OptionsView, RoleView,
};
use otpgate_protocol::login::{LoginRequest, LoginResponse, RequestMode, Requested, Secret};

async fn done(server: &TestServer, request: AdminRequest) {
    let answer = server.admin(request).await;
    assert_eq!(answer, AdminResponse::Done);
}

async fn add_user(server: &TestServer, login: &str) {
    let add = AdminRequest::UserAdd {
        login: login.into(),
        email: format!("{login}@example.com"),
        role: RoleView::User,
        password: Secret(PASSWORD.into()),
    };
    done(server, add).await;
}

async fn set_approvers(server: &TestServer, group: &str, approvers: &[&str]) {
    let set = AdminRequest::GroupSet {
        name: group.into(),
        options: OptionsView {
            approvers: Some(approvers.iter().map(|a| a.to_string()).collect()),
            ..OptionsView::default()
        },
    };
    done(server, set).await;
}

async fn join(server: &TestServer, computer: &str, group: &str) {
    let set = AdminRequest::ClientSet {
        computer: computer.into(),
        group: Some(Some(group.into())),
        options: OptionsView::default(),
    };
    done(server, set).await;
}

/// An access request by email from `computer`; its id.
async fn ask(server: &TestServer, computer: &str, email: &str) -> u64 {
    let desk = server.desk(computer).await;
    let asked = desk
        .login(LoginRequest::Request(RequestMode::Email(email.into())))
        .await;
    match asked {
        LoginResponse::Requested(Requested::AwaitApproval { request, .. }) => request,
        other => panic!("{other:?}"),
    }
}

/// The messages to `to`, once there are `count`.
async fn mailed(server: &TestServer, to: &str, count: usize) -> Vec<String> {
    let outbox = server.data_dir().join("outbox");
    let mut messages = Vec::new();
    crate::common::wait_until(
        Duration::from_secs(20),
        &format!("{count} messages to {to}"),
        || {
            messages = messages_to(&outbox, to);
            let enough = messages.len() >= count;
            async move { enough }
        },
    )
    .await;
    messages
}

/// The password every internal user of these tests has.
const PASSWORD: &str = "a long enough password";

/// Approves request `id` as `by`, with the password the tests gave them.
async fn decide(server: &TestServer, id: u64, by: &str) -> AdminResponse {
    let password = if by == "admin" {
        server.admin_password().await
    } else {
        PASSWORD.to_owned()
    };
    let decide = AdminRequest::RequestDecide {
        id,
        by: by.into(),
        password: Secret(password),
        choice: Choice::Approve,
        comment: None,
    };
    server.admin(decide).await
}

fn forbidden(answer: &AdminResponse) -> bool {
    matches!(answer, AdminResponse::Fail(e) if e.code == AdminErrorCode::Forbidden)
}

async fn decision(server: &TestServer, id: u64) -> Decision {
    let requests = server.requests(true).await;
    requests.iter().find(|r| r.id == id).unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_computers_approvers_decide_its_requests() {
    let server = TestServer::start().await;
    add_user(&server, "carol").await;
    add_user(&server, "dave").await;
    set_approvers(&server, "lab", &["carol"]).await;
    join(&server, "ws-1", "lab").await;

    // ws-1's request goes to its approver; ws-2 names none: the administrators.
    let in_lab = ask(&server, "ws-1", "erin@example.com").await;
    let carols = mailed(&server, "carol@example.com", 1).await;
    assert!(carols[0].contains("ws-1"), "{}", carols[0]);
    let elsewhere = ask(&server, "ws-2", "frank@example.com").await;
    let admins = mailed(&server, "admin@example.com", 1).await;
    assert!(admins[0].contains("ws-2"), "{}", admins[0]);

    // Neither is decided by someone who is not its approver.
    assert!(forbidden(&decide(&server, in_lab, "dave").await));
    assert!(forbidden(&decide(&server, elsewhere, "carol").await));
    assert!(forbidden(&decide(&server, in_lab, "nobody").await));
    assert_eq!(decision(&server, in_lab).await, Decision::Pending);
    assert_eq!(decision(&server, elsewhere).await, Decision::Pending);

    // The approver decides, and the OTP goes out.
    let decided = decide(&server, in_lab, "carol").await;
    assert!(matches!(decided, AdminResponse::Decided(_)), "{decided:?}");
    assert_eq!(server.codes_for("erin@example.com", 1).await.len(), 1);
    // The administrators may decide anywhere.
    let decided = decide(&server, elsewhere, "admin").await;
    assert!(matches!(decided, AdminResponse::Decided(_)), "{decided:?}");

    // A link acts for its approver only while they are one.
    join(&server, "ws-3", "lab").await;
    let later = ask(&server, "ws-3", "grace@example.com").await;
    let carols = mailed(&server, "carol@example.com", 2).await;
    let link = token_after(&carols[1], "Approve:");
    set_approvers(&server, "lab", &["dave"]).await;
    let by_link = AdminRequest::RequestDecideToken {
        token: link,
        choice: Choice::Approve,
        comment: None,
    };
    let answer = server.admin(by_link).await;
    assert!(forbidden(&answer), "{answer:?}");
    assert_eq!(decision(&server, later).await, Decision::Pending);
    assert!(forbidden(&decide(&server, later, "carol").await));
    let decided = decide(&server, later, "dave").await;
    assert!(matches!(decided, AdminResponse::Decided(_)), "{decided:?}");

    // Nobody else was told anything.
    assert_eq!(
        messages_to(&server.data_dir().join("outbox"), "dave@example.com").len(),
        0
    );
    assert_eq!(mailed(&server, "admin@example.com", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_must_be_internal_users() {
    let server = TestServer::start().await;
    add_user(&server, "carol").await;
    let options = OptionsView {
        approvers: Some(vec!["carol".into(), "nobody".into()]),
        ..OptionsView::default()
    };
    let group = AdminRequest::GroupSet {
        name: "lab".into(),
        options: options.clone(),
    };
    let client = AdminRequest::ClientSet {
        computer: "ws-1".into(),
        group: None,
        options,
    };
    for set in [group, client] {
        match server.admin(set).await {
            AdminResponse::Fail(e) => {
                assert_eq!(e.code, AdminErrorCode::NotFound);
                assert!(e.message.contains("nobody"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deciding_as_someone_takes_their_password_and_records_who_was_at_the_socket() {
    let server = TestServer::start().await;
    add_user(&server, "carol").await;
    set_approvers(&server, "lab", &["carol"]).await;
    join(&server, "ws-1", "lab").await;
    let id = ask(&server, "ws-1", "erin@example.com").await;

    // Reaching the admin socket is not being carol.
    let guessed = AdminRequest::RequestDecide {
        id,
        by: "carol".into(),
        password: Secret("not her password".into()),
        choice: Choice::Approve,
        comment: None,
    };
    assert!(forbidden(&server.admin(guessed).await));
    assert_eq!(decision(&server, id).await, Decision::Pending);

    let decided = decide(&server, id, "carol").await;
    assert!(matches!(decided, AdminResponse::Decided(_)), "{decided:?}");
    let uid = nix::unistd::getuid();
    let audit = server.audit(0).await;
    assert!(
        audit.iter().any(|e| e.who == format!("operator(uid {uid})")
            && e.outcome == format!("request {id} approved by carol")),
        "{audit:#?}"
    );
}

//! Durable before visible: the server binary is killed with SIGKILL right after it
//! allowed a login, and right after it said an OTP was sent. After a restart the
//! used OTP stays used and the announced OTP is delivered and works.

mod common;

use common::agent::Desk;
use common::mail::codes_for;
use common::me;
use common::server::{ServerProcess, admin_ask, issue};
use otpgate_protocol::admin::{AdminRequest, AdminResponse, OptionsView};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};

async fn verify(desk: &Desk, email: &str, code: &str) -> LoginResponse {
    desk.login(LoginRequest::Verify {
        email: email.into(),
        code: Secret(code.into()),
    })
    .await
}

fn kill_9(server: &mut ServerProcess) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_allow_and_after_sent_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), "127.0.0.1:0");
    assert!(
        server.initial_password.is_some(),
        "the first start creates the administrator"
    );
    let addr = server.addr;
    let data = server.data_dir();
    for name in ["ws-1", "ws-2"] {
        let options = OptionsView {
            auto_directory: Some(true),
            ..OptionsView::default()
        };
        let set = AdminRequest::ClientSet {
            computer: name.into(),
            group: None,
            options,
        };
        assert_eq!(admin_ask(&data, set).await, AdminResponse::Done);
    }
    let email = format!("{}@example.com", me());
    let ws1 = Desk::start(
        &issue(&data, dir.path(), "ws-1"),
        addr,
        dir.path().join("ws-1.sock"),
    )
    .await;
    let ws2 = Desk::start(
        &issue(&data, dir.path(), "ws-2"),
        addr,
        dir.path().join("ws-2.sock"),
    )
    .await;

    // An Allow, then SIGKILL at once.
    let sent = ws1
        .login(LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(matches!(
        sent,
        LoginResponse::Requested(Requested::Send { .. })
    ));
    let first = codes_for(&data, &email, 1).await.remove(0);
    let allowed = verify(&ws1, &email, &first).await;
    assert!(matches!(
        allowed,
        LoginResponse::Verified(Verdict::Allow { .. })
    ));
    kill_9(&mut server);
    ws1.disconnected().await;
    ws2.disconnected().await;

    let mut server = ServerProcess::start(dir.path(), &addr.to_string());
    assert!(
        server.initial_password.is_none(),
        "the administrator exists already"
    );
    ws1.connected().await;
    ws2.connected().await;
    assert_eq!(
        verify(&ws1, &email, &first).await,
        LoginResponse::Verified(Verdict::Deny),
        "still used up after the crash"
    );

    // A "sent" reply, then SIGKILL at once: the OTP and its mail survive.
    let sent = ws2
        .login(LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(matches!(
        sent,
        LoginResponse::Requested(Requested::Send { .. })
    ));
    kill_9(&mut server);
    ws2.disconnected().await;
    let _server = ServerProcess::start(dir.path(), &addr.to_string());
    ws2.connected().await;
    let second = codes_for(&data, &email, 2).await.remove(1);
    assert_ne!(second, first);
    assert!(matches!(
        verify(&ws2, &email, &second).await,
        LoginResponse::Verified(Verdict::Allow { .. })
    ));

    // One message per OTP: a delivery repeated after the crash rewrites the same
    // Message-ID's file.
    assert_eq!(
        common::mail::messages_to(&data.join("outbox"), &email).len(),
        2
    );
}

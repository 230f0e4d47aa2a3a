//! Durable before visible: the server binary is killed with SIGKILL at the
//! moments that matter, right after it allowed a login and right after it said
//! an OTP was sent while the relay holds the mail (so the mail can only be in the
//! server's queue). After a restart the used OTP stays used, the session and the
//! audit entries are there, and the announced OTP is delivered once and works,
//! even when its queue entry is taken away while the server is down.

use std::time::Duration;

use crate::common::agent::Desk;
use crate::common::auto_directory;
use crate::common::my_email;
use crate::common::server::{ServerProcess, admin_ask, issue, open_store};
use crate::common::smtp::SmtpServer;
use otpgate_actors::Store;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, ListFilter, PageRequest, SessionView};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};

const WITHIN: Duration = Duration::from_secs(30);

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

/// The OTPs in the messages the relay took, oldest first, once there are `count`.
async fn codes(relay: &SmtpServer, count: usize) -> Vec<String> {
    relay
        .wait_for(count, WITHIN)
        .await
        .iter()
        .map(|text| otpgate::bench::read_otp_mail(text).unwrap().code)
        .collect()
}

async fn sessions(data: &std::path::Path) -> Vec<SessionView> {
    let list = AdminRequest::SessionsList {
        all: true,
        filter: ListFilter::default(),
        page: PageRequest::default(),
    };
    match admin_ask(data, list).await {
        AdminResponse::Sessions(page) => page.items,
        other => panic!("{other:?}"),
    }
}

async fn audit(data: &std::path::Path) -> Vec<String> {
    let list = AdminRequest::AuditList {
        filter: ListFilter::default(),
        page: PageRequest::default(),
    };
    match admin_ask(data, list).await {
        AdminResponse::Audit(page) => page
            .items
            .into_iter()
            .map(|e| format!("{} {}", e.action, e.outcome))
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_allow_and_after_sent_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // While `hold` exists the relay keeps every delivery waiting at RCPT.
    let hold = dir.path().join("hold");
    let mut relay = SmtpServer::new(
        dir.path().join("relay"),
        &["--hold", hold.to_str().unwrap()],
    );
    relay.start();
    let smtp = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\ntimeout_secs = 60\n",
        relay.port
    );
    let start = |listen: &str| {
        ServerProcess::start_with(
            dir.path(),
            listen,
            crate::common::HEARTBEAT_MS,
            crate::common::server::HANDSHAKE_MS,
            &smtp,
        )
    };
    let mut server = start(&crate::common::restartable_listen());
    assert!(
        server.initial_password.is_some(),
        "the first start creates the administrator"
    );
    let addr = server.addr;
    let data = server.data_dir();
    for name in ["ws-1", "ws-2"] {
        let options = auto_directory();
        let set = AdminRequest::ClientSet {
            computer: name.into(),
            group: None,
            options,
        };
        assert_eq!(admin_ask(&data, set).await, AdminResponse::Done);
    }
    let email = my_email();
    let desk = |name: &'static str| {
        let identity = issue(&data, dir.path(), name);
        let socket = dir.path().join(format!("{name}.sock"));
        async move { Desk::start(&identity, addr, socket).await }
    };
    let ws1 = desk("ws-1").await;
    let ws2 = desk("ws-2").await;

    // An Allow, then SIGKILL at once.
    let sent = ws1
        .login(LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(
        matches!(sent, LoginResponse::Requested(Requested::Send { .. })),
        "{sent:?}"
    );
    let first = codes(&relay, 1).await.remove(0);
    let allowed = verify(&ws1, &email, &first).await;
    assert!(
        matches!(allowed, LoginResponse::Verified(Verdict::Allow { .. })),
        "{allowed:?}"
    );
    kill_9(&mut server);
    ws1.disconnected().await;
    ws2.disconnected().await;

    let mut server = start(&addr.to_string());
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
    let sessions = sessions(&data).await;
    assert_eq!(sessions.len(), 1, "the session survived: {sessions:?}");
    assert_eq!(sessions[0].computer, "ws-1");
    let entries = audit(&data).await;
    for what in [
        "request OTP sent",
        "verify allowed",
        "session_start started",
    ] {
        assert!(
            entries.iter().any(|e| e.starts_with(what)),
            "{what:?} survived in {entries:#?}"
        );
    }

    // A "sent" reply while the relay holds the mail, then SIGKILL at once: the
    // mail was only in the server's queue, and is delivered after the restart.
    std::fs::write(&hold, "").unwrap();
    let sent = ws2
        .login(LoginRequest::Request(RequestMode::Directory))
        .await;
    assert!(
        matches!(sent, LoginResponse::Requested(Requested::Send { .. })),
        "{sent:?}"
    );
    kill_9(&mut server);
    std::fs::remove_file(&hold).unwrap();
    ws2.disconnected().await;
    {
        let store = open_store(&data).await;
        let queued = store.outbox().await.unwrap();
        assert_eq!(queued.len(), 1, "the mail was queued durably: {queued:?}");
        // Had the store lost the entry, the start-up check would queue it again.
        store.remove_outbox(queued[0].id).unwrap();
        store.flush().await.unwrap();
    }
    let _server = start(&addr.to_string());
    ws2.connected().await;
    let second = codes(&relay, 2).await.remove(1);
    assert_ne!(second, first);
    assert!(matches!(
        verify(&ws2, &email, &second).await,
        LoginResponse::Verified(Verdict::Allow { .. })
    ));
    assert_eq!(relay.messages().len(), 2, "one message per OTP");
}

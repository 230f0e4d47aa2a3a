//! Mail through a real SMTP server (Debian's aiosmtpd, started by the tests on a
//! loopback port): both parts of the OTP mail over plain SMTP, STARTTLS and AUTH;
//! a relay that is down for a while, and a server restarted with mail queued,
//! still deliver every message exactly once; a permanent 5xx is recorded and
//! shown; a 4xx is retried until delivered or `max_attempts`; refused
//! credentials keep the mail queued; a lost 250 repeats that message only.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::mail::token_after;
use crate::common::me;
use crate::common::server::TestServer;
use crate::common::smtp::SmtpServer;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, Choice, PageRequest};
use otpgate_protocol::login::{LoginRequest, LoginResponse, RequestMode, Secret, Verdict};

const WITHIN: Duration = Duration::from_secs(30);

fn plain(port: u16) -> String {
    format!("[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"plain\"\ntimeout_secs = 5\n")
}

/// A running plain relay, and a server that sends through it.
async fn relay_and_server(dir: &std::path::Path) -> (SmtpServer, TestServer) {
    let mut relay = SmtpServer::new(dir.join("relay"), &[]);
    relay.start();
    let server = TestServer::start_with_config(&plain(relay.port)).await;
    (relay, server)
}

async fn generate(server: &TestServer, os_user: &str, email: &str) {
    // No agent of ws-1 runs here: these tests are about the mail.
    server.generate("ws-1", os_user, email, true).await;
}

/// The OTP in a message's text part.
fn code_in(message: &str) -> String {
    let mut lines = message
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != "Your one-time password is:");
    lines.next();
    lines.find(|line| !line.is_empty()).unwrap().to_owned()
}

fn message_id(message: &str) -> String {
    message
        .lines()
        .find_map(|line| line.strip_prefix("Message-ID: "))
        .unwrap()
        .trim()
        .to_owned()
}

/// Waits until the audit log has `count` delivered messages.
async fn delivered(server: &TestServer, count: usize) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let entries = server.audit(1000).await;
        let done = entries
            .iter()
            .filter(|e| e.action == "mail" && e.outcome.contains(": delivered ("))
            .count();
        if done >= count {
            assert_eq!(done, count, "no message delivered twice");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {count} delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otp_mail_arrives_with_both_parts_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, server) = relay_and_server(dir.path()).await;
    let desk = server.desk("ws-1").await;
    let email = crate::common::my_email();
    generate(&server, &me(), &email).await;

    let message = relay.wait_for(1, WITHIN).await.remove(0);
    for part in [
        "multipart/alternative",
        "text/plain",
        "text/html",
        "Subject: Your one-time password for ws-1",
        "Nobody from IT will ever ask you for this code.",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert!(message.contains(&format!("To: <{email}>")));
    let verdict = desk
        .login(LoginRequest::Verify {
            email,
            code: Secret(code_in(&message)),
        })
        .await;
    assert!(
        matches!(verdict, LoginResponse::Verified(Verdict::Allow { .. })),
        "{verdict:?}"
    );
    assert!(
        std::fs::read_dir(server.data_dir().join("outbox")).is_err(),
        "with a relay, no .eml outbox folder"
    );

    // The operator's test message reports what the relay said.
    let sent = server
        .admin(AdminRequest::MailTest {
            to: "ops@example.com".into(),
        })
        .await;
    assert!(
        matches!(sent, AdminResponse::MailSent { ref said } if said.contains("250")),
        "{sent:?}"
    );
    assert!(relay.wait_for(2, WITHIN).await[1].contains("Subject: otpgate test message"));
    let refused = server
        .admin(AdminRequest::MailTest {
            to: "reject-ops@example.com".into(),
        })
        .await;
    assert!(
        matches!(refused, AdminResponse::Fail(ref e) if e.message.contains("550")),
        "{refused:?}"
    );
}

/// A relay that requires STARTTLS (with a certificate from a CA of its own) and
/// AUTH as otpgate with "relay secret", and the `[smtp]` section that logs in to
/// it with `password`.
pub(crate) fn auth_relay(dir: &std::path::Path, password: &str) -> (SmtpServer, String) {
    let relay_pki = dir.join("relay-pki");
    otpgate::tls::pki::ensure_server(&relay_pki, &[]).unwrap();
    let cert = relay_pki.join("pki/server.pem");
    let key = relay_pki.join("pki/server.key");
    let mut relay = SmtpServer::new(
        dir.join("relay"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--user",
            "otpgate",
            "--password",
            "relay secret",
        ],
    );
    relay.start();
    let password_file = dir.join("smtp-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let config = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nusername = \"otpgate\"\n\
         password_file = {password_file:?}\nca_file = {:?}\ntimeout_secs = 5\n",
        relay.port,
        relay_pki.join("pki/ca.pem")
    );
    (relay, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, config) = auth_relay(dir.path(), "relay secret");
    let server = TestServer::start_with_config(&config).await;
    generate(&server, "alice", "alice@example.com").await;
    let message = relay.wait_for(1, WITHIN).await.remove(0);
    assert!(message.contains("To: <alice@example.com>"));
    assert_eq!(code_in(&message).len(), 8);
}

/// The queued messages, as the administrators see them.
async fn queue(server: &TestServer) -> Vec<otpgate_protocol::admin::QueuedMailView> {
    let request = AdminRequest::MailQueue {
        page: PageRequest::default(),
    };
    match server.admin(request).await {
        AdminResponse::MailQueue(queue) => queue.items,
        other => panic!("{other:?}"),
    }
}

/// The messages given up on.
async fn failures(server: &TestServer) -> Vec<otpgate_protocol::admin::MailFailureView> {
    let request = AdminRequest::MailFailures {
        page: PageRequest::default(),
    };
    match server.admin(request).await {
        AdminResponse::MailFailures(failures) => failures.items,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_keep_the_mail_queued_until_they_are_put_right() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, wrong) = auth_relay(dir.path(), "not the secret");
    let server = TestServer::start_with_config(&wrong).await;
    generate(&server, "alice", "alice@example.com").await;

    // The relay answers 535 at AUTH: the message is tried, stays queued, and is
    // not given up as if the message were at fault.
    crate::common::wait_until(WITHIN, "a refused try", || async {
        queue(&server).await.iter().any(|m| m.attempts >= 1)
    })
    .await;
    assert_eq!(failures(&server).await, []);
    assert!(relay.messages().is_empty());

    // The operator puts the password right and restarts: it goes out.
    std::fs::write(dir.path().join("smtp-password"), "relay secret\n").unwrap();
    let server = server.restart().await;
    let message = relay.wait_for(1, WITHIN).await.remove(0);
    assert!(message.contains("To: <alice@example.com>"));
    delivered(&server, 1).await;
    assert_eq!(queue(&server).await, []);
    assert_eq!(failures(&server).await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_retried_until_delivered_and_given_up_after_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = SmtpServer::new(dir.path().join("relay"), &[]);
    relay.start();
    let config = format!("{}max_attempts = 3\n", plain(relay.port));
    let server = TestServer::start_with_config(&config).await;
    // The relay answers 451 twice to dave, and to erin more often than tried.
    generate(&server, "dave", "busy2-dave@example.com").await;
    generate(&server, "erin", "busy9-erin@example.com").await;

    crate::common::wait_until(Duration::from_secs(60), "both settled", || async {
        queue(&server).await.is_empty()
    })
    .await;
    let messages = relay.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("To: <busy2-dave@example.com>"));
    delivered(&server, 1).await;
    let failures = failures(&server).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].to, "busy9-erin@example.com");
    assert!(
        failures[0].reason.contains("gave up after 3 tries") && failures[0].reason.contains("451"),
        "{}",
        failures[0].reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_250_lost_with_the_connection_repeats_that_message_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    // The relay keeps the first message but drops the connection before its 250.
    let mut relay = SmtpServer::new(dir.path().join("relay"), &["--drop", "1"]);
    relay.start();
    let server = TestServer::start_with_config(&plain(relay.port)).await;
    for user in ["u1", "u2", "u3"] {
        generate(&server, user, &format!("{user}@example.com")).await;
    }
    delivered(&server, 3).await;
    // Nothing is queued, so nothing more can arrive: this is the whole run.
    assert_eq!(queue(&server).await, []);
    let messages = relay.messages();
    let ids: Vec<String> = messages.iter().map(|m| message_id(m)).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        (messages.len(), distinct.len()),
        (4, 3),
        "each message once, and the one whose 250 was lost twice: {ids:?}"
    );
    assert_eq!(
        ids.iter().filter(|id| **id == ids[0]).count(),
        2,
        "the repeat is the dropped one, the first to arrive: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_down_for_a_while_and_a_restart_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut relay, server) = relay_and_server(dir.path()).await;
    generate(&server, "u0", "u0@example.com").await;
    relay.wait_for(1, WITHIN).await;

    // The relay goes down; mail queues and the mailer backs off.
    relay.stop();
    for user in ["u1", "u2", "u3"] {
        generate(&server, user, &format!("{user}@example.com")).await;
    }
    crate::common::wait_until(WITHIN, "every queued message tried and failed", || async {
        let request = AdminRequest::MailQueue {
            page: PageRequest::default(),
        };
        match server.admin(request).await {
            AdminResponse::MailQueue(queue) => {
                queue.items.len() == 3 && queue.items.iter().all(|m| m.attempts >= 1)
            }
            _ => false,
        }
    })
    .await;
    // The server restarts with the messages still queued, and takes another...
    let server = server.restart().await;
    generate(&server, "u4", "u4@example.com").await;
    // ...and the relay comes back.
    relay.start();
    let messages = relay.wait_for(5, Duration::from_secs(60)).await;
    delivered(&server, 5).await;
    assert_eq!(relay.messages().len(), 5, "each message once");
    let ids: HashSet<String> = messages.iter().map(|m| message_id(m)).collect();
    assert_eq!(ids.len(), 5);
    for user in ["u0", "u1", "u2", "u3", "u4"] {
        let to = format!("To: <{user}@example.com>");
        assert_eq!(
            messages.iter().filter(|m| m.contains(&to)).count(),
            1,
            "{user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_recorded_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, server) = relay_and_server(dir.path()).await;
    let desk = server.desk("ws-1").await;

    // An access request whose OTP mail the relay refuses for good.
    let requested = desk
        .login(LoginRequest::Request(RequestMode::Email(
            "reject-carol@example.com".into(),
        )))
        .await;
    let LoginResponse::Requested(otpgate_protocol::login::Requested::AwaitApproval {
        request, ..
    }) = requested
    else {
        panic!("{requested:?}");
    };
    let approved = server
        .admin(AdminRequest::RequestDecide {
            id: request,
            by: "admin".into(),
            password: Secret(server.admin_password().await),
            choice: Choice::Approve,
            comment: None,
        })
        .await;
    assert!(
        matches!(approved, AdminResponse::Decided(_)),
        "{approved:?}"
    );

    let deadline = tokio::time::Instant::now() + WITHIN;
    let failure = loop {
        let request = AdminRequest::MailFailures {
            page: PageRequest::default(),
        };
        if let AdminResponse::MailFailures(failures) = server.admin(request).await
            && let Some(failure) = failures.items.into_iter().next()
        {
            break failure;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failure.to, "reject-carol@example.com");
    assert_eq!(failure.request, Some(request));
    assert!(failure.reason.contains("550"), "{}", failure.reason);

    let requests = server.requests(true).await;
    let shown = requests.iter().find(|r| r.id == request).unwrap();
    assert!(
        shown
            .mail_failure
            .as_deref()
            .is_some_and(|f| f.contains("550")),
        "{shown:?}"
    );
    let audit = server.audit(100).await;
    assert!(
        audit
            .iter()
            .any(|e| e.action == "mail" && e.outcome.contains("failed: relay said 550"))
    );
    // The approver's own mail went through.
    relay.wait_for(1, WITHIN).await;
}

fn admin_cli(data: &std::path::Path, args: &[&str]) -> i32 {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_otpgate"))
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    status.code().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approvers_link_approves_once_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, server) = relay_and_server(dir.path()).await;
    let desk = server.desk("ws-1").await;
    let requested = desk
        .login(LoginRequest::Request(RequestMode::Email(
            "frank@example.com".into(),
        )))
        .await;
    assert!(matches!(
        requested,
        LoginResponse::Requested(otpgate_protocol::login::Requested::AwaitApproval { .. })
    ));
    let mail = relay.wait_for(1, WITHIN).await.remove(0);
    assert!(mail.contains("To: <admin@example.com>"), "{mail}");
    let approve = token_after(&mail, "Approve:");
    let deny = token_after(&mail, "Deny:");
    assert_ne!(approve, deny);

    let data = server.data_dir();
    let (forged, tail) = approve.split_at(approve.len() - 1);
    let forged = format!("{forged}{}", if tail == "0" { "1" } else { "0" });
    let run = |args: Vec<String>| {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            admin_cli(&data, &args)
        })
    };
    let with = |token: &str| {
        vec![
            "requests".into(),
            "approve".into(),
            "--token".into(),
            token.to_owned(),
        ]
    };
    assert_eq!(
        run(with(&forged)).await.unwrap(),
        1,
        "a forged link is refused"
    );
    let crossed = vec![
        "requests".into(),
        "deny".into(),
        "--token".into(),
        approve.clone(),
    ];
    assert_eq!(
        run(crossed).await.unwrap(),
        1,
        "deny with an Approve link is refused and decides nothing"
    );
    assert_eq!(run(with(&approve)).await.unwrap(), 0, "the link approves");
    assert_eq!(run(with(&approve)).await.unwrap(), 1, "once only");
    let deny_args = vec!["requests".into(), "deny".into(), "--token".into(), deny];
    assert_eq!(
        run(deny_args).await.unwrap(),
        1,
        "the other link is spent too"
    );

    let messages = relay.wait_for(2, WITHIN).await;
    let otp_mail = messages
        .iter()
        .find(|m| m.contains("To: <frank@example.com>"))
        .unwrap();
    let verdict = desk
        .login(LoginRequest::Verify {
            email: "frank@example.com".into(),
            code: Secret(code_in(otp_mail)),
        })
        .await;
    assert!(matches!(
        verdict,
        LoginResponse::Verified(Verdict::Allow { .. })
    ));
}

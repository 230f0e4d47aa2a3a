//! Enrolling client computers with join tokens, with the real `otpgate`
//! binary and real TLS: a token's uses, time, revocation and name pattern
//! hold; the computer checks the server's CA against its token before it
//! sends anything; the server never holds a computer's private key; one name
//! goes to one computer; an agent given a token enrolls on its first start;
//! a running agent renews its short certificate before it ends, with no
//! login failing, and only an enrolled computer may; a revoked one is closed
//! at once and cannot come back to renew.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use crate::common::agent::{AgentProcess, Desk};
use crate::common::server::TestServer;
use crate::common::web::WebClient;
use otpgate::tls::token::JoinTokenText;
use otpgate_actors::{ManualClock, Timestamp};
use otpgate_protocol::admin::{
    AdminErrorCode, AdminRequest, AdminResponse, PageRequest, RoleView, TokenSpec,
};

const OTPGATE: &str = env!("CARGO_BIN_EXE_otpgate");

fn spec(uses: u32) -> TokenSpec {
    TokenSpec {
        ttl_secs: 3600,
        uses,
        group: None,
        name_pattern: None,
        replace: false,
    }
}

/// A join token of `server` made as `spec` says.
async fn token(server: &TestServer, spec: TokenSpec) -> String {
    match server.admin(AdminRequest::TokenCreate(spec)).await {
        AdminResponse::TokenMade { token, .. } => token.0,
        other => panic!("{other:?}"),
    }
}

/// Runs `otpgate agent enroll` for `server` with `token` (given in the
/// environment), as `name`, into `identity`.
async fn enroll(server: &TestServer, token: &str, identity: &Path, name: &str) -> Output {
    tokio::process::Command::new(OTPGATE)
        .args(["agent", "enroll", "--server"])
        .arg(format!("localhost:{}", server.addr.port()))
        .arg("--identity")
        .arg(identity)
        .args(["--name", name])
        .env("OTPGATE_JOIN_TOKEN", token)
        .output()
        .await
        .unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that `output` is a refusal that says `words`.
fn refused(output: &Output, words: &str) {
    assert!(!output.status.success(), "{}", said(output));
    assert!(said(output).contains(words), "{}", said(output));
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_computers_enroll_with_a_token_of_three_uses_join_its_group_and_connect_a_fourth_is_refused()
 {
    let server = TestServer::start().await;
    server.add_group("finance").await;
    let token = token(
        &server,
        TokenSpec {
            group: Some("finance".into()),
            name_pattern: Some("ws-*".into()),
            ..spec(3)
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["ws-1", "ws-2", "ws-3"] {
        let identity = dir.path().join(name);
        let output = enroll(&server, &token, &identity, name).await;
        assert!(output.status.success(), "{name}: {}", said(&output));
        assert!(said(&output).contains(&format!("enrolled as {name}")));
        let key = identity.join("client.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Its certificate opens a connection, and it is in the group.
        let agent = server.agent(&identity);
        agent.welcomed(1, Duration::from_secs(10)).await;
        let listed = server
            .admin(AdminRequest::ClientsList {
                page: PageRequest::default(),
            })
            .await;
        let AdminResponse::Clients(clients) = listed else {
            panic!("{listed:?}");
        };
        let client = clients.items.iter().find(|c| c.computer == name).unwrap();
        assert_eq!(client.group.as_deref(), Some("finance"));
    }
    refused(
        &enroll(&server, &token, &dir.path().join("ws-4"), "ws-4").await,
        "used up (3 of 3",
    );
    assert!(!dir.path().join("ws-4").join("client.pem").exists());

    // The server never held a computer's private key: no file of its data
    // folder holds any of theirs, whole or as its base64.
    let data = files_under(&server.data_dir());
    for name in ["ws-1", "ws-2", "ws-3"] {
        let pem = std::fs::read_to_string(dir.path().join(name).join("client.key")).unwrap();
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = data_encoding::BASE64.decode(body.as_bytes()).unwrap();
        // PKCS #8 of a P-256 key: its private scalar is bytes 36 to 68 (the
        // bytes before are the same in every such key).
        let scalar = &der[36..68];
        for (path, bytes) in &data {
            for needle in [body.as_bytes(), &body.as_bytes()[48..88], scalar] {
                assert!(
                    !bytes.windows(needle.len()).any(|window| window == needle),
                    "{name}'s key is in {}",
                    path.display()
                );
            }
        }
    }

    // The operator sees the fleet: serials and expiry on the command line,
    // and on the web Clients page.
    let listed = tokio::process::Command::new(OTPGATE)
        .args(["certs", "list", "--data-dir"])
        .arg(server.data_dir())
        .output()
        .await
        .unwrap();
    assert!(listed.status.success(), "{}", said(&listed));
    for name in ["ws-1", "ws-2", "ws-3"] {
        assert!(
            said(&listed).contains(&format!("{name}\tserial ")),
            "{}",
            said(&listed)
        );
    }
    let clients = tokio::process::Command::new(OTPGATE)
        .args(["admin", "--data-dir"])
        .arg(server.data_dir())
        .args(["clients", "list"])
        .output()
        .await
        .unwrap();
    assert!(
        said(&clients).contains("certificates of enrolled computers:"),
        "{}",
        said(&clients)
    );
    server.add_user("bob", RoleView::Administrator).await;
    let web = WebClient::new(&server);
    assert_eq!(
        web.sign_in("bob", "bob's long password").await.status(),
        303
    );
    let (page, _) = web.page("/clients").await;
    assert!(page.contains("(enrolled <time"), "{page}");

    // Each use, and the refusal, is in the audit log.
    let audit = server.audit(100).await;
    let enrolled = audit
        .iter()
        .filter(|e| e.action == "enroll" && e.outcome.starts_with("enrolled"))
        .count();
    assert_eq!(enrolled, 3, "{audit:?}");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "enroll" && e.outcome.contains("used up")),
        "{audit:?}"
    );
    assert!(audit.iter().any(|e| e.action == "token"), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_revoked_forged_and_misnamed_tokens_are_refused_with_clear_words() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    ));
    let server = TestServer::start_with_clock(Arc::new(clock.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("ws-1");

    let expiring = token(
        &server,
        TokenSpec {
            ttl_secs: 60,
            ..spec(5)
        },
    )
    .await;
    clock.advance(Duration::from_secs(61));
    refused(
        &enroll(&server, &expiring, &identity, "ws-1").await,
        "expired at",
    );

    let revoked = token(&server, spec(5)).await;
    let id = JoinTokenText::parse(&revoked).unwrap().id;
    let answer = server.admin(AdminRequest::TokenRevoke { id }).await;
    assert_eq!(answer, AdminResponse::Done);
    refused(
        &enroll(&server, &revoked, &identity, "ws-1").await,
        "was revoked",
    );

    let patterned = token(
        &server,
        TokenSpec {
            name_pattern: Some("ws-*".into()),
            ..spec(5)
        },
    )
    .await;
    refused(
        &enroll(&server, &patterned, &identity, "db-1").await,
        "does not allow the name db-1",
    );
    refused(
        &enroll(&server, &patterned, &identity, "ws 1").await,
        "not a computer name",
    );

    // The right id and CA with another secret: told nothing more.
    let mut forged = JoinTokenText::parse(&patterned).unwrap();
    forged.secret[0] ^= 1;
    refused(
        &enroll(&server, &forged.text(), &identity, "ws-1").await,
        "not a join token of this server",
    );
    refused(
        &enroll(&server, "otpgate-join-1:nonsense", &identity, "ws-1").await,
        "not a join token",
    );
    assert!(!identity.join("client.pem").exists(), "no identity written");

    // A token that is none of those works.
    let output = enroll(&server, &patterned, &identity, "ws-1").await;
    assert!(output.status.success(), "{}", said(&output));

    // What the administrator sees.
    let AdminResponse::Tokens(tokens) = server.admin(AdminRequest::TokensList).await else {
        panic!("no tokens");
    };
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens[0].used, 1, "newest first: {tokens:?}");
    assert!(tokens[1].revoked_at.is_some());
    let unknown = server
        .admin(AdminRequest::TokenRevoke { id: 999_999 })
        .await;
    assert!(
        matches!(&unknown, AdminResponse::Fail(e) if e.code == AdminErrorCode::NotFound),
        "{unknown:?}"
    );
    for bad in [
        TokenSpec {
            ttl_secs: 0,
            ..spec(1)
        },
        TokenSpec { uses: 0, ..spec(1) },
        TokenSpec {
            group: Some("nowhere".into()),
            ..spec(1)
        },
        TokenSpec {
            name_pattern: Some("ws 1".into()),
            ..spec(1)
        },
    ] {
        let answer = server.admin(AdminRequest::TokenCreate(bad.clone())).await;
        assert!(
            matches!(answer, AdminResponse::Fail(_)),
            "{bad:?}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_sends_nothing_to_a_server_whose_ca_is_not_its_tokens() {
    let server = TestServer::start().await;
    let mut token = JoinTokenText::parse(&token(&server, spec(1)).await).unwrap();
    token.ca_fingerprint[0] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("ws-1");
    refused(
        &enroll(&server, &token.text(), &identity, "ws-1").await,
        "is not the server this token is for",
    );
    assert!(!identity.join("client.key").exists());
    let audit = server.audit(100).await;
    assert!(
        !audit.iter().any(|e| e.action == "enroll"),
        "the server heard nothing: {audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_computers_asking_for_one_name_at_once_one_gets_it() {
    let server = TestServer::start().await;
    let token = token(&server, spec(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (first, second) = tokio::join!(
        enroll(&server, &token, &a, "ws-same"),
        enroll(&server, &token, &b, "ws-same"),
    );
    let won = [&first, &second]
        .iter()
        .filter(|output| output.status.success())
        .count();
    assert_eq!(won, 1, "{}\n{}", said(&first), said(&second));
    let lost = if first.status.success() {
        &second
    } else {
        &first
    };
    refused(lost, "another computer holds the name ws-same");

    // A token made to replace takes the name, and the old certificate is
    // void at once.
    let replacing = token_replacing(&server).await;
    let old = if first.status.success() { &a } else { &b };
    let agent = server.agent(old);
    agent.welcomed(1, Duration::from_secs(10)).await;
    let newer = dir.path().join("c");
    let output = enroll(&server, &replacing, &newer, "ws-same").await;
    assert!(output.status.success(), "{}", said(&output));
    let since = std::time::Instant::now();
    while agent.link.status().connected {
        assert!(since.elapsed() < Duration::from_secs(5), "old still served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let agent = server.agent(&newer);
    agent.welcomed(1, Duration::from_secs(10)).await;

    // A computer issued by hand that has connected holds its name too.
    let by_hand = server.identity("ws-hand");
    let agent = server.agent(&by_hand);
    agent.welcomed(1, Duration::from_secs(10)).await;
    refused(
        &enroll(
            &server,
            &token_with_uses(&server, 1).await,
            &dir.path().join("d"),
            "ws-hand",
        )
        .await,
        "another computer holds the name ws-hand",
    );
    assert!(agent.link.status().connected, "left alone");
}

async fn token_with_uses(server: &TestServer, uses: u32) -> String {
    token(server, spec(uses)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_whose_answer_was_lost_gets_its_certificate_again_for_no_further_use() {
    let server = TestServer::start().await;
    let token = token(&server, spec(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("ws-1");
    let output = enroll(&server, &token, &identity, "ws-1").await;
    assert!(output.status.success(), "{}", said(&output));
    // The answer lost: the key kept, no certificate written.
    let key = std::fs::read(identity.join("client.key")).unwrap();
    std::fs::remove_file(identity.join("client.pem")).unwrap();
    let again = enroll(&server, &token, &identity, "ws-1").await;
    assert!(again.status.success(), "{}", said(&again));
    assert_eq!(std::fs::read(identity.join("client.key")).unwrap(), key);
    let agent = server.agent(&identity);
    agent.welcomed(1, Duration::from_secs(10)).await;
    // Another key under that name, with that spent token: refused.
    refused(
        &enroll(&server, &token, &dir.path().join("other"), "ws-1").await,
        "used up",
    );
    let AdminResponse::Tokens(tokens) = server.admin(AdminRequest::TokensList).await else {
        panic!("no tokens");
    };
    assert_eq!(tokens[0].used, 1);
}

async fn token_replacing(server: &TestServer) -> String {
    token(
        server,
        TokenSpec {
            replace: true,
            ..spec(1)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_given_a_token_file_enrolls_on_its_first_start() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("join-token");
    std::fs::write(&file, format!("{}\n", token(&server, spec(1)).await)).unwrap();
    let identity = dir.path().join("identity");
    let token_file = file.to_str().unwrap();
    // Started twice: the second time, the identity it has is used, the
    // spent token not.
    for _ in 0..2 {
        let agent = AgentProcess::start_under(
            &[],
            &["--token-file", token_file],
            Path::new(OTPGATE),
            &identity,
            server.addr,
            dir.path(),
        )
        .await;
        assert!(identity.join("client.pem").exists());
        drop(agent);
    }
}

/// The certificate in identity folder `identity`: its serial's place in the
/// file (the whole PEM) and when it ends.
fn certificate(identity: &Path) -> (String, i64) {
    let pem = std::fs::read_to_string(identity.join("client.pem")).unwrap();
    let der = otpgate::tls::pki::read_cert(&identity.join("client.pem")).unwrap();
    (pem, otpgate::tls::pki::client_cert(&der).unwrap().expires)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_renews_its_short_certificate_before_it_ends_and_logins_go_on() {
    use otpgate_protocol::login::{LoginRequest, LoginResponse};
    let server = TestServer::start_with_config("[pki]\nclient_lifetime_secs = 6\n").await;
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("ws-1");
    let output = enroll(&server, &token(&server, spec(1)).await, &identity, "ws-1").await;
    assert!(output.status.success(), "{}", said(&output));
    let (first, first_ends) = certificate(&identity);
    let desk = Desk::start(&identity, server.addr, dir.path().join("agent.sock")).await;
    // Asked every 100 ms, for longer than the first certificate lasts: the
    // prompt is answered by the server every time.
    let mut renewed = None;
    let since = std::time::Instant::now();
    while since.elapsed() < Duration::from_secs(8) {
        let answer = desk.login(LoginRequest::Status).await;
        assert!(matches!(answer, LoginResponse::Status(_)), "{answer:?}");
        let (now, ends) = certificate(&identity);
        if now != first && renewed.is_none() {
            renewed = Some(since.elapsed());
            assert!(ends > first_ends, "a later end");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = renewed.expect("renewed");
    assert!(
        renewed < Duration::from_secs(6),
        "before it ended: {renewed:?}"
    );
    let key = identity.join("client.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The first certificate has ended: a new connection comes in with the
    // renewed one.
    drop(desk);
    let desk = Desk::start(&identity, server.addr, dir.path().join("again.sock")).await;
    let answer = desk.login(LoginRequest::Status).await;
    assert!(matches!(answer, LoginResponse::Status(_)), "{answer:?}");
    let audit = server.audit(100).await;
    assert!(
        audit
            .iter()
            .any(|e| e.action == "enroll" && e.outcome.starts_with("certificate renewed")),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_that_did_not_enroll_is_not_renewed() {
    use otpgate_protocol::{ErrorCode, Request, Response};
    let server = TestServer::start().await;
    let identity = server.identity("ws-9");
    let agent = server.agent(&identity);
    agent.welcomed(1, Duration::from_secs(10)).await;
    let (_, csr) = otpgate::tls::pki::key_and_request("ws-9").unwrap();
    let answer = agent.link.call(Request::Renew { csr }).await.unwrap();
    assert_eq!(answer, Response::Fail(ErrorCode::CertificateRefused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_enrolled_computer_is_closed_at_once_and_renews_nothing() {
    use otpgate_protocol::Request;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("ws-1");
    let output = enroll(&server, &token(&server, spec(1)).await, &identity, "ws-1").await;
    assert!(output.status.success(), "{}", said(&output));
    let agent = server.agent(&identity);
    agent.welcomed(1, Duration::from_secs(10)).await;
    let revoked = server
        .admin(AdminRequest::CertRevoke {
            computer: "ws-1".into(),
        })
        .await;
    assert!(
        matches!(revoked, AdminResponse::Revoked { disconnected: 1 }),
        "{revoked:?}"
    );
    let since = std::time::Instant::now();
    while agent.link.status().connected {
        assert!(since.elapsed() < Duration::from_secs(5), "still served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It cannot come back to ask for a new certificate.
    let (_, csr) = otpgate::tls::pki::key_and_request("ws-1").unwrap();
    let asked = tokio::time::timeout(
        Duration::from_secs(3),
        agent.link.call(Request::Renew { csr }),
    )
    .await;
    assert!(
        !matches!(asked, Ok(Ok(otpgate_protocol::Response::Renewed { .. }))),
        "{asked:?}"
    );
}

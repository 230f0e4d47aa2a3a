//! Clients that must not get in: no certificate, a certificate from another CA, a
//! server certificate posing as a client, TLS 1.2 only, no ALPN. Each is refused, and the
//! server goes on serving the agents it has.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::agent::{Agent, connect_tls};
use crate::common::server::{TestServer, issue};
use otpgate::frames::{FrameReader, FrameWriter};
use otpgate::tls::{self, pki};
use otpgate_protocol::{
    AgentMessage, HANDSHAKE_VERSION, Hello, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
    ServerMessage,
};
use rustls::RootCertStore;

const WITHIN: Duration = Duration::from_secs(20);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(server: &TestServer) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(pki::read_cert(&server.data_dir().join("pki/ca.pem")).unwrap())
        .unwrap();
    roots
}

/// A client that trusts our server, speaks `versions`, and presents the
/// certificate and key in files `cert` and `key`, if given.
fn client(
    server: &TestServer,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<(PathBuf, PathBuf)>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(server));
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                pki::read_chain(&cert).unwrap(),
                pki::read_key(&key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![tls::ALPN.to_vec()];
    Arc::new(config)
}

/// The certificate and key files `{stem}.pem` and `{stem}.key` in `dir`.
fn files(dir: &Path, stem: &str) -> Option<(PathBuf, PathBuf)> {
    Some((
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    ))
}

/// Whether the server refuses `config`: the handshake fails, or the connection
/// ends without a Welcome.
async fn refused(server: &TestServer, config: Arc<rustls::ClientConfig>) -> bool {
    !matches!(
        hello_with(server, config).await,
        Some((_, Some(ServerMessage::Welcome(_))))
    )
}

/// Opens a TLS connection with `config` and says Hello: whether it was
/// resumed, and what the server answered; `None` if the handshake failed.
async fn hello_with(
    server: &TestServer,
    config: Arc<rustls::ClientConfig>,
) -> Option<(bool, Option<ServerMessage>)> {
    let stream = connect_tls(config, server.addr).await.ok()?;
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let (read, write) = tokio::io::split(stream);
    let hello = AgentMessage::Hello(Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: MAX_PROTOCOL_VERSION,
        agent_version: "test".into(),
        host_name: "test".into(),
    });
    // With TLS 1.3 a client learns of its rejection only when it next reads.
    let _ = FrameWriter::new(write)
        .write(&hello, HANDSHAKE_VERSION)
        .await;
    let answer = tokio::time::timeout(WITHIN, FrameReader::new(read).read::<ServerMessage>())
        .await
        .expect("the server answers or closes");
    Some((resumed, answer.ok().flatten()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_valid_certificate_or_tls13_are_refused() {
    let server = TestServer::start().await;
    let agent = server.agent(&server.identity("ws-ok"));
    agent.welcomed(1, WITHIN).await;

    let tls13 = &[&rustls::version::TLS13];
    let valid = server.identity("ws-valid");

    // The control: the same hand-made client with a valid identity gets in.
    let good = client(&server, tls13, files(&valid, "client"));
    assert!(
        !refused(&server, good.clone()).await,
        "a valid client is welcomed"
    );

    let other_ca = tempfile::tempdir().unwrap();
    pki::ensure_server(other_ca.path(), &[]).unwrap();
    let foreign = issue(other_ca.path(), other_ca.path(), "ws-foreign");
    let mut no_alpn = (*good).clone();
    no_alpn.alpn_protocols.clear();
    let intruders = [
        ("no ALPN otpgate/1", Arc::new(no_alpn)),
        ("no certificate", client(&server, tls13, None)),
        (
            "a certificate from another CA",
            client(&server, tls13, files(&foreign, "client")),
        ),
        (
            "the server's own certificate posing as a client's",
            client(
                &server,
                tls13,
                files(&server.data_dir().join("pki"), "server"),
            ),
        ),
        (
            "TLS 1.2 only",
            client(&server, &[&rustls::version::TLS12], files(&valid, "client")),
        ),
    ];
    for (what, config) in intruders {
        assert!(refused(&server, config).await, "{what} is refused");
    }

    // The server kept its agent and takes new ones.
    agent.still_served(WITHIN).await;
    let newcomer = Agent::start(&server.identity("ws-new"), server.addr);
    newcomer.welcomed(1, WITHIN).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_are_capped_and_cannot_keep_agents_out() {
    use tokio::io::AsyncReadExt;
    // Handshakes time out after crate::common::server::HANDSHAKE_MS.
    let server = TestServer::start_with_config("max_handshakes_per_source = 2\n").await;
    let agent = server.agent(&server.identity("ws-ok"));
    agent.welcomed(1, WITHIN).await;

    // Seven connections that never say a word: two hold the source's two
    // places, the other five are closed at once...
    let mut silent = Vec::new();
    for _ in 0..7 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let mut byte = [0u8; 1];
    let closed = |stream: &tokio::net::TcpStream| {
        let mut byte = [0u8; 1];
        match stream.try_read(&mut byte) {
            Ok(0) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => panic!("the server said something"),
        }
    };
    crate::common::wait_until(WITHIN, "five closed", || {
        let count = silent.iter().filter(|s| closed(s)).count();
        async move { count >= 5 }
    })
    .await;
    // ...while the two are still held open.
    let (shut, loris): (Vec<_>, Vec<_>) = silent.into_iter().partition(|s| closed(s));
    assert_eq!((shut.len(), loris.len()), (5, 2));
    // The agent that was in is still served; once the slow ones time out, new
    // agents get in.
    agent.still_served(WITHIN).await;
    for mut stream in loris {
        let closed = tokio::time::timeout(WITHIN, stream.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
    let newcomer = Agent::start(&server.identity("ws-new"), server.addr);
    newcomer.welcomed(1, WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_cut_off_at_once_and_refused_even_when_resuming() {
    let server = TestServer::start().await;
    let identity = server.identity("ws-rev");
    let agent = server.agent(&identity);
    agent.welcomed(1, WITHIN).await;
    // A client of the same identity takes a session ticket while it may.
    let config = client(
        &server,
        &[&rustls::version::TLS13],
        files(&identity, "client"),
    );
    let (_, first) = hello_with(&server, config.clone()).await.unwrap();
    assert!(
        matches!(first, Some(ServerMessage::Welcome(_))),
        "{first:?}"
    );

    // The operator revokes the computer's certificates.
    let data = server.data_dir();
    let revoke = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_otpgate"))
            .args(["certs", "revoke", "ws-rev", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(revoke.status.success(), "{revoke:?}");
    let said = String::from_utf8_lossy(&revoke.stdout);
    assert!(said.contains("1 connection(s) closed"), "{said}");
    let revoked_at = std::time::SystemTime::now();

    // The connected agent was cut off, and a resumed session is refused too.
    let mut watch = agent.link.watch();
    tokio::time::timeout(WITHIN, watch.wait_for(|s| !s.connected))
        .await
        .unwrap()
        .unwrap();
    let (resumed, answer) = hello_with(&server, config.clone()).await.unwrap();
    assert!(resumed, "the client resumed its session");
    let refused = Some(ServerMessage::Close(
        otpgate_protocol::ErrorCode::CertificateRefused,
    ));
    assert_eq!(answer, refused);
    assert_eq!(agent.link.status().welcomes, 1, "never let back in");

    // It holds across a restart, kept where the store is.
    drop(agent);
    let paused = server.pause().await;
    let file = std::fs::read_to_string(paused.data_dir().join("pki/revoked.txt"));
    assert_eq!(
        file.unwrap_or_default().contains("ws-rev"),
        !crate::common::server::in_postgres(),
        "in the file on sled, in the database on PostgreSQL"
    );
    let server = paused.resume().await;
    let (_, answer) = hello_with(&server, config).await.unwrap();
    assert_eq!(answer, refused, "after a restart");

    // A certificate issued afterwards lets the computer back in.
    crate::common::wait_until(WITHIN, "the next second", || {
        let later = std::time::SystemTime::now()
            .duration_since(revoked_at)
            .is_ok_and(|d| d.as_secs() >= 1);
        async move { later }
    })
    .await;
    let fresh = issue(
        &server.data_dir(),
        &server.data.path().join("new"),
        "ws-rev",
    );
    let back = Agent::start(&fresh, server.addr);
    back.welcomed(1, WITHIN).await;
    let audit = server.audit(0).await;
    assert!(
        audit
            .iter()
            .any(|e| e.outcome == "certificates of ws-rev revoked")
    );
}

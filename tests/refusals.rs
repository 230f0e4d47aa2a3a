//! Clients that must not get in: no certificate, a certificate from another CA, a
//! server certificate posing as a client, TLS 1.2 only, no ALPN. Each is refused, and the
//! server goes on serving the agents it has.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Agent, TestServer, connect_tls, issue};
use otpgate::conn::{FrameReader, FrameWriter};
use otpgate::{pki, tls};
use otpgate_protocol::{
    AgentMessage, Hello, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, ServerMessage,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

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

/// A client that trusts our server, speaks `versions`, and presents `identity`
/// (a certificate and key) if given.
fn client(
    server: &TestServer,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<(Vec<CertificateDer<'static>>, std::path::PathBuf)>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(server));
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, pki::read_key(&key).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![tls::ALPN.to_vec()];
    Arc::new(config)
}

/// Whether the server refuses `config`: the handshake fails, or the connection
/// ends without a Welcome.
async fn refused(server: &TestServer, config: Arc<rustls::ClientConfig>) -> bool {
    let Ok(stream) = connect_tls(config, server.addr).await else {
        return true;
    };
    let (read, write) = tokio::io::split(stream);
    let hello = AgentMessage::Hello(Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: MAX_PROTOCOL_VERSION,
        agent_version: "test".into(),
        host_name: "intruder".into(),
    });
    // With TLS 1.3 a client learns of its rejection only when it next reads.
    let _ = FrameWriter::new(write).write(&hello).await;
    let answer = tokio::time::timeout(WITHIN, FrameReader::new(read).read::<ServerMessage>())
        .await
        .expect("the server answers or closes");
    !matches!(answer, Ok(Some(ServerMessage::Welcome(_))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_valid_certificate_or_tls13_are_refused() {
    let server = TestServer::start().await;
    let agent = server.agent(&server.identity("ws-ok"));
    agent.welcomed(1, WITHIN).await;

    let tls13 = &[&rustls::version::TLS13];
    let valid = server.identity("ws-valid");
    let valid_chain = || pki::read_chain(&valid.join("client.pem")).unwrap();

    // The control: the same hand-made client with a valid identity gets in.
    let good = client(
        &server,
        tls13,
        Some((valid_chain(), valid.join("client.key"))),
    );
    assert!(
        !refused(&server, good.clone()).await,
        "a valid client is welcomed"
    );

    let mut no_alpn = (*good).clone();
    no_alpn.alpn_protocols.clear();
    assert!(
        refused(&server, Arc::new(no_alpn)).await,
        "no ALPN otpgate/1"
    );

    assert!(
        refused(&server, client(&server, tls13, None)).await,
        "no certificate"
    );

    let other_ca = tempfile::tempdir().unwrap();
    pki::ensure_server(other_ca.path(), &[]).unwrap();
    let foreign = issue(other_ca.path(), other_ca.path(), "ws-foreign");
    let foreign_chain = pki::read_chain(&foreign.join("client.pem")).unwrap();
    assert!(
        refused(
            &server,
            client(
                &server,
                tls13,
                Some((foreign_chain, foreign.join("client.key")))
            )
        )
        .await,
        "a certificate from another CA"
    );

    let pki_dir = server.data_dir().join("pki");
    let server_chain = pki::read_chain(&pki_dir.join("server.pem")).unwrap();
    assert!(
        refused(
            &server,
            client(
                &server,
                tls13,
                Some((server_chain, pki_dir.join("server.key")))
            )
        )
        .await,
        "the server's own certificate is not a client certificate"
    );

    let tls12 = &[&rustls::version::TLS12];
    assert!(
        refused(
            &server,
            client(
                &server,
                tls12,
                Some((valid_chain(), valid.join("client.key")))
            )
        )
        .await,
        "TLS 1.2 only"
    );

    // The server kept its agent and takes new ones.
    let heartbeats = agent.link.status().heartbeats;
    let mut watch = agent.link.watch();
    tokio::time::timeout(WITHIN, watch.wait_for(|s| s.heartbeats > heartbeats + 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(agent.link.status().welcomes, 1);
    let newcomer = Agent::start(&server.identity("ws-new"), server.addr);
    newcomer.welcomed(1, WITHIN).await;
    server.stop().await;
}

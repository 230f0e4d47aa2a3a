//! TLS for the agent protocol: TLS 1.3 only, mutual authentication against the
//! server's CA, ALPN `otpgate/1` (or `otpgate-enroll/1`, without a client
//! certificate, for a computer enrolling with a join token), one crypto
//! provider (aws-lc-rs) on both sides.
//! Shared by both ends of the wire: the server, the agent, the PKI tools and the
//! load generator; the PKI itself is in [`pki`], the server's session-ticket keys
//! in `tickets`.

pub mod pki;
pub mod revoked;
mod tickets;
pub mod token;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use pki::{ClientPaths, PkiError, ServerPki};
use tickets::Tickets;

/// The one application protocol spoken over these connections.
pub const ALPN: &[u8] = b"otpgate/1";

/// How many resumable sessions the server remembers (for clients that do not take
/// tickets); tickets need no server memory.
const SESSION_CACHE: usize = 4096;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A key, certificate or CA file could not be used.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A server name is not valid.
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
    /// An agent was given no server to connect to.
    #[error("no server to connect to")]
    NoServer,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(ca: CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    Ok(Arc::new(roots))
}

/// The server's TLS configuration: agents present a certificate from our CA
/// (checked here), except a computer that comes to enroll (ALPN
/// `otpgate-enroll/1`), which has none yet; the connection's handler refuses
/// an agent without one. The chain sent ends with the CA certificate, which
/// an enrolling computer checks against its token's fingerprint.
pub fn server_config(pki: ServerPki) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let ticketer = Arc::new(Tickets::new(&pki.secret, &pki.ca));
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(pki.ca.clone())?, provider.clone())
            .allow_unauthenticated()
            .build()?;
    let mut chain = pki.chain;
    chain.push(pki.ca);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, pki.key)?;
    config.alpn_protocols = vec![ALPN.to_vec(), otpgate_protocol::enroll::ALPN.to_vec()];
    config.ticketer = ticketer;
    // An agent holds one connection: one ticket for its next reconnection is enough.
    config.send_tls13_tickets = 1;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(Arc::new(config))
}

/// An agent's TLS configuration, from the identity folder `dir` that
/// `otpgate certs client` wrote.
pub fn client_config(dir: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let paths = ClientPaths::new(dir);
    let chain = pki::read_chain(&paths.cert)?;
    let key = pki::read_key(&paths.key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(pki::read_cert(&paths.ca)?)?)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The name to check the server's certificate against, from `host` in `host:port`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

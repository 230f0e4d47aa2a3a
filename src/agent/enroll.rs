//! Enrolling this computer with a join token (`otpgate agent enroll`, or
//! `otpgate agent --token-file` on a first start): makes the computer's key
//! pair here (its private key is written 0600 and never sent), checks that
//! the server is the one the token names (its CA's fingerprint) before
//! sending anything, sends a certificate signing request with the token, and
//! writes the identity folder the agent runs with: `client.key` (kept
//! before the request is first sent, and used again by a retry whose answer
//! was lost), then `ca.pem` and `client.pem` (checked to be for that key).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rcgen::KeyPair;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

use otpgate_protocol::enroll::{self, EnrollRequest, EnrollResponse};
use otpgate_protocol::login::Secret;
use otpgate_protocol::version::ENROLL;

use super::link::ServerAddr;
use crate::files::{create_private_dir, write_private, write_public};
use crate::frames::{FrameReader, FrameWriter};
use crate::tls::pki::{ClientPaths, PkiError, cert_pem, certifies, request_for};
use crate::tls::token::{JoinTokenText, fingerprint};

/// Why this computer did not enroll.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// What was given is not a join token.
    #[error("not a join token (it starts with otpgate-join-1:)")]
    NotAToken,
    /// The identity folder holds an identity already.
    #[error("{} holds an identity already; remove it to enroll again", .0.display())]
    Enrolled(PathBuf),
    /// This computer's name is not one, and none was given.
    #[error("this computer's host name is not a computer name; give one with --name")]
    NoName,
    /// A server is not the one the token names: nothing was sent to it.
    #[error(
        "{0} is not the server this token is for (its CA is not the one the token names); \
         nothing was sent to it"
    )]
    WrongServer(String),
    /// The server refused.
    #[error("{server} refused: {message}")]
    Refused {
        /// Which server.
        server: String,
        /// What it said.
        message: String,
    },
    /// No server could be reached.
    #[error("no server could be reached: {0}")]
    Unreachable(String),
    /// A server answered with what is not an enrollment.
    #[error("{0} answered with something else than an enrollment")]
    Garbled(String),
    /// The key pair or the request could not be made.
    #[error("cannot make the key pair: {0}")]
    Key(#[from] PkiError),
    /// The identity folder could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// What could not be written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A computer that enrolled: its name and when its certificate ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The name the server enrolled it as.
    pub name: String,
    /// When its certificate ends, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// How long one server may take to connect, show itself and answer.
const ASK_WITHIN: Duration = Duration::from_secs(30);

/// Enrolls this computer as `name` (its host name by default) with join
/// token `token`, with the first of `servers` that answers, into identity
/// folder `identity`.
pub async fn enroll(
    servers: &[ServerAddr],
    token: &str,
    identity: &Path,
    name: Option<&str>,
) -> Result<Enrolled, EnrollError> {
    let token = JoinTokenText::parse(token).ok_or(EnrollError::NotAToken)?;
    let paths = ClientPaths::new(identity);
    if paths.cert.exists() {
        return Err(EnrollError::Enrolled(identity.to_owned()));
    }
    let name = match name {
        Some(name) => name.to_owned(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .filter(|name| name.parse::<otpgate_actors::ComputerId>().is_ok())
            .ok_or(EnrollError::NoName)?,
    };
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EnrollError::Io { path, source }
    };
    // A key kept by an earlier try (whose answer was lost) is used again:
    // the server gives its certificate again for the same token.
    let key = match std::fs::read_to_string(&paths.key) {
        Ok(pem) => KeyPair::from_pem(&zeroize::Zeroizing::new(pem)).map_err(PkiError::from)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            KeyPair::generate().map_err(PkiError::from)?
        }
        Err(err) => return Err(io(&paths.key)(err)),
    };
    let csr = request_for(&key, &name)?;
    let request = EnrollRequest {
        token: Secret(token.text().to_string()),
        name,
        csr,
    };
    let mut failures = Vec::new();
    // Kept before it is first sent (a server checked against the token's CA
    // is about to sign it), so that a lost answer can be asked for again.
    let keep = || -> Result<(), EnrollError> {
        if !paths.key.exists() {
            create_private_dir(identity).map_err(io(identity))?;
            let secret = zeroize::Zeroizing::new(key.serialize_pem());
            write_private(&paths.key, secret.as_bytes()).map_err(io(&paths.key))?;
        }
        Ok(())
    };
    for server in servers {
        let asked = tokio::time::timeout(ASK_WITHIN, ask(server, &token, &request, &keep))
            .await
            .unwrap_or_else(|_| Err(Asked::Unreachable("no answer in time".into())));
        match asked {
            Ok(EnrollResponse::Enrolled {
                name,
                certificate,
                ca,
                expires_ms,
            }) => {
                // What it calls its CA must be the one the token names, and
                // the certificate must be for our key.
                if fingerprint(&CertificateDer::from(ca.as_slice())) != token.ca_fingerprint
                    || !certifies(&certificate, &key)
                {
                    return Err(EnrollError::WrongServer(server.to_string()));
                }
                write_public(&paths.ca, cert_pem(&ca).as_bytes()).map_err(io(&paths.ca))?;
                write_public(&paths.cert, cert_pem(&certificate).as_bytes())
                    .map_err(io(&paths.cert))?;
                info!(%server, computer = %name, "enrolled");
                return Ok(Enrolled { name, expires_ms });
            }
            Ok(EnrollResponse::Refused(refused)) => {
                return Err(EnrollError::Refused {
                    server: server.to_string(),
                    message: refused.message,
                });
            }
            Err(Asked::WrongServer) => return Err(EnrollError::WrongServer(server.to_string())),
            Err(Asked::Garbled) => return Err(EnrollError::Garbled(server.to_string())),
            Err(Asked::Kept(err)) => return Err(err),
            Err(Asked::Unreachable(why)) => {
                warn!(%server, error = %why, "cannot enroll with this server");
                failures.push(format!("{server}: {why}"));
            }
        }
    }
    Err(EnrollError::Unreachable(failures.join("; ")))
}

/// Why asking one server did not come to an answer.
enum Asked {
    WrongServer,
    Garbled,
    Unreachable(String),
    /// The key could not be kept.
    Kept(EnrollError),
}

/// Sends `request` to `server`, once it has shown a certificate of the CA
/// `token` names and `keep` has kept the key; its answer.
async fn ask(
    server: &ServerAddr,
    token: &JoinTokenText,
    request: &EnrollRequest,
    keep: &impl Fn() -> Result<(), EnrollError>,
) -> Result<EnrollResponse, Asked> {
    let unreachable = |err: &dyn std::fmt::Display| Asked::Unreachable(err.to_string());
    let name = ServerName::try_from(server.host().to_owned()).map_err(|err| unreachable(&err))?;
    let verifier = Arc::new(PinnedCa::new(token.ca_fingerprint));
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&verifier.provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|err| unreachable(&err))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![enroll::ALPN.to_vec()];
    let tcp = TcpStream::connect((server.host(), server.port()))
        .await
        .map_err(|err| unreachable(&err))?;
    let tls = match TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(tls) => tls,
        Err(_) if verifier.mismatched.load(Ordering::Acquire) => return Err(Asked::WrongServer),
        Err(err) => return Err(unreachable(&err)),
    };
    keep().map_err(Asked::Kept)?;
    let (read, write) = tokio::io::split(tls);
    let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
    writer
        .write(request, ENROLL.newest)
        .await
        .map_err(|err| unreachable(&err))?;
    match reader.read::<EnrollResponse>().await {
        Ok(Some(response)) => Ok(response),
        Ok(None) => Err(Asked::Unreachable("closed without an answer".into())),
        Err(_) => Err(Asked::Garbled),
    }
}

/// Trusts a server whose chain holds the CA certificate of one fingerprint
/// and whose certificate that CA signed for its name: what a computer that
/// has only its token can check.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// Set when a server showed no certificate of that CA.
    mismatched: AtomicBool,
}

impl PinnedCa {
    fn new(fingerprint: [u8; 32]) -> Self {
        Self {
            fingerprint,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            mismatched: AtomicBool::new(false),
        }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|cert| fingerprint(cert) == self.fingerprint)
        else {
            self.mismatched.store(true, Ordering::Release);
            return Err(rustls::Error::General(
                "the server's CA is not the one the join token names".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
            .build()
            .map_err(|err| rustls::Error::General(err.to_string()))?
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

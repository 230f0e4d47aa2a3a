//! The server's small PKI: a CA, the server's certificate, the client computers'
//! certificates, and the server secret. See `certs/README.md` for the layout and
//! for rotation.
//!
//! Everything lives in the data folder:
//!
//! ```text
//! <data>/secret.key        32 random bytes; keys derived from it protect tickets
//!                          (and, later, OTPs); 0600
//! <data>/pki/ca.pem        the CA certificate agents and the server trust
//! <data>/pki/ca.key        the CA's private key; 0600
//! <data>/pki/server.pem    the server's certificate, signed by the CA
//! <data>/pki/server.key    its private key; 0600
//! ```
//!
//! A client computer's identity is the Common Name of its certificate.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::{fs, io};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

use crate::files::{create_private_dir, write_private, write_public};
use otpgate_actors::ComputerId;

/// The names every server certificate carries, so that local agents and tests can
/// always connect.
pub const DEFAULT_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long server and client certificates are valid.
const LEAF_VALIDITY: Duration = Duration::days(825);
/// A server certificate this close to expiry is renewed at start.
const RENEW_BEFORE: Duration = Duration::days(30);
/// How far back a new certificate's validity starts, for clocks that lag.
const BACKDATE: Duration = Duration::hours(1);

/// The length of the server secret, in bytes.
pub const SECRET_LEN: usize = 32;

/// Why the PKI could not be created or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{}: not a valid PEM file ({source})", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate could not be generated or parsed.
    #[error("certificate error: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A certificate could not be parsed.
    #[error("unreadable certificate")]
    Parse,
    /// A certificate signing request is not one we sign (unreadable, its
    /// signature wrong, or an extension we do not know).
    #[error("not a valid certificate signing request")]
    Request,
    /// A certificate does not name a valid client computer.
    #[error("certificate does not name a valid client computer")]
    Identity,
    /// The store's database could not be read or written.
    #[error("the database: {0}")]
    Store(#[from] otpgate_actors::StoreError),
    /// A line of the revocation list cannot be read.
    #[error("{}: cannot read the line {line:?} (NAME UNIX_SECONDS)", path.display())]
    Revocations {
        /// The list.
        path: PathBuf,
        /// The line.
        line: String,
    },
    /// The server secret has the wrong length.
    #[error("{}: must hold exactly {SECRET_LEN} bytes", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
    },
    /// The data folder has no CA yet: the server has never been started with it.
    #[error("{}: no CA here; run `otpgate serve` with this data folder first", path.display())]
    NoCa {
        /// The file that is missing.
        path: PathBuf,
    },
}

/// The server's secret, from which keys for tickets and OTP hashes are derived.
/// Wiped from memory when dropped; never printed.
pub struct ServerSecret(Zeroizing<[u8; SECRET_LEN]>);

impl ServerSecret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(..)")
    }
}

/// What the server needs to terminate TLS.
pub struct ServerPki {
    /// The CA that client certificates must chain to.
    pub ca: CertificateDer<'static>,
    /// The server's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The server's private key.
    pub key: PrivateKeyDer<'static>,
    /// The server secret.
    pub secret: ServerSecret,
}

/// The paths of the PKI files in data folder `data`.
struct Paths {
    secret: PathBuf,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Paths {
    fn new(data: &Path) -> Self {
        let pki = data.join("pki");
        Self {
            secret: data.join("secret.key"),
            ca_cert: pki.join("ca.pem"),
            ca_key: pki.join("ca.key"),
            server_cert: pki.join("server.pem"),
            server_key: pki.join("server.key"),
        }
    }
}

/// Creates what is missing of the PKI in data folder `data` (the CA, the server
/// certificate for `names` plus [`DEFAULT_SERVER_NAMES`], the secret), renews a
/// server certificate that lacks a name or is about to expire, and loads it all.
pub fn ensure_server(data: &Path, names: &[String]) -> Result<ServerPki, PkiError> {
    let paths = Paths::new(data);
    let pki_dir = paths.ca_cert.parent().expect("the CA path has a parent");
    create_private_dir(pki_dir).map_err(|source| io_error(pki_dir, source))?;

    if !paths.secret.exists() {
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        aws_lc_rs::rand::fill(secret.as_mut_slice()).map_err(|_| PkiError::Secret {
            path: paths.secret.clone(),
        })?;
        write_private(&paths.secret, secret.as_slice())
            .map_err(|source| io_error(&paths.secret, source))?;
    }
    if !paths.ca_cert.exists() {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("otpgate CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        write_private(&paths.ca_key, key.serialize_pem().as_bytes())
            .map_err(|source| io_error(&paths.ca_key, source))?;
        write_public(&paths.ca_cert, cert.pem().as_bytes())
            .map_err(|source| io_error(&paths.ca_cert, source))?;
    }

    let wanted: BTreeSet<String> = DEFAULT_SERVER_NAMES
        .iter()
        .map(|name| name.to_string())
        .chain(names.iter().cloned())
        .collect();
    if !server_cert_covers(&paths.server_cert, &wanted)? {
        let issuer = load_issuer(&paths)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(wanted.into_iter().collect::<Vec<_>>())?;
        params.distinguished_name = name("otpgate server");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, LEAF_VALIDITY);
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&paths.server_key, key.serialize_pem().as_bytes())
            .map_err(|source| io_error(&paths.server_key, source))?;
        write_public(&paths.server_cert, cert.pem().as_bytes())
            .map_err(|source| io_error(&paths.server_cert, source))?;
    }

    Ok(ServerPki {
        ca: read_cert(&paths.ca_cert)?,
        chain: vec![read_cert(&paths.server_cert)?],
        key: read_key(&paths.server_key)?,
        secret: read_secret(&paths.secret)?,
    })
}

/// The files a client computer's agent needs, in its identity folder.
pub struct ClientPaths {
    /// The computer's certificate.
    pub cert: PathBuf,
    /// The computer's private key; 0600.
    pub key: PathBuf,
    /// The CA certificate the agent checks the server against.
    pub ca: PathBuf,
    /// A renewed certificate and key on their way in (see
    /// [`ClientPaths::replace`]).
    next_cert: PathBuf,
    next_key: PathBuf,
}

impl ClientPaths {
    /// The paths inside identity folder `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
            ca: dir.join("ca.pem"),
            next_cert: dir.join("client.next.pem"),
            next_key: dir.join("client.next.key"),
        }
    }

    /// Replaces the certificate and key with `cert_pem` and `key_pem`, so
    /// that a crash at any point leaves the old pair or the new one (once
    /// [`ClientPaths::settle`] has run): both are written beside the old
    /// ones first, then renamed into place, the key first.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> io::Result<()> {
        write_private(&self.next_key, key_pem.as_bytes())?;
        write_public(&self.next_cert, cert_pem.as_bytes())?;
        self.settle()
    }

    /// Finishes a replacement a crash cut short: a new pair written whole
    /// goes into place (its key may be there already); a new key alone was
    /// never paired, and goes.
    pub fn settle(&self) -> io::Result<()> {
        let (next_key, next_cert) = (self.next_key.exists(), self.next_cert.exists());
        if next_key && !next_cert {
            return fs::remove_file(&self.next_key);
        }
        // Each rename made durable before the next: a crash never keeps the
        // certificate's without the key's.
        let sync = || match self.cert.parent() {
            Some(dir) => crate::files::sync_dir(dir),
            None => Ok(()),
        };
        if next_key {
            fs::rename(&self.next_key, &self.key)?;
            sync()?;
        }
        if next_cert {
            fs::rename(&self.next_cert, &self.cert)?;
            sync()?;
        }
        Ok(())
    }
}

/// A new key pair of computer `name`, made here, and a certificate signing
/// request (DER) for it, signed with it.
pub fn key_and_request(name: &str) -> Result<(KeyPair, Vec<u8>), PkiError> {
    let key = KeyPair::generate()?;
    let request = request_for(&key, name)?;
    Ok((key, request))
}

/// A certificate signing request (DER) of computer `name` for `key`, signed
/// with it.
pub fn request_for(key: &KeyPair, name: &str) -> Result<Vec<u8>, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = self::name(name);
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// Certificate `der` as PEM.
pub fn cert_pem(der: &[u8]) -> String {
    let base64 = data_encoding::BASE64.encode(der);
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in base64.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text + "-----END CERTIFICATE-----\n"
}

/// Issues a certificate for client computer `id` with the CA in data folder
/// `data`, and writes it, its key and the CA certificate into folder `out`.
pub fn issue_client(data: &Path, id: &ComputerId, out: &Path) -> Result<ClientPaths, PkiError> {
    let paths = Paths::new(data);
    let issuer = load_issuer(&paths)?;
    let key = KeyPair::generate()?;
    let (params, _) = client_params(id, OffsetDateTime::now_utc(), LEAF_VALIDITY);
    let cert = params.signed_by(&key, &issuer)?;

    create_private_dir(out).map_err(|source| io_error(out, source))?;
    let client = ClientPaths::new(out);
    let ca = fs::read(&paths.ca_cert).map_err(|source| io_error(&paths.ca_cert, source))?;
    write_private(&client.key, key.serialize_pem().as_bytes())
        .map_err(|source| io_error(&client.key, source))?;
    write_public(&client.cert, cert.pem().as_bytes())
        .map_err(|source| io_error(&client.cert, source))?;
    write_public(&client.ca, &ca).map_err(|source| io_error(&client.ca, source))?;
    Ok(client)
}

/// The parameters of a client computer's certificate issued at `issued`
/// (backdated by [`BACKDATE`], as [`ClientCert::issued`] reads it back),
/// lasting `lifetime`, with a random serial; the serial, hex.
fn client_params(
    id: &ComputerId,
    issued: OffsetDateTime,
    lifetime: Duration,
) -> (CertificateParams, String) {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(id.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = issued - BACKDATE;
    params.not_after = issued + lifetime;
    // 16 random bytes, the first two bits 01: a positive number, and one
    // whose DER form is these very bytes (as `ClientCert::serial` reads it).
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x3f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    (params, data_encoding::HEXLOWER.encode(&serial))
}

/// The CA, with its key, loaded by the server to sign the certificates of
/// computers that enroll or renew.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate.
    pub cert: CertificateDer<'static>,
}

/// A certificate [`Ca::sign`] issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: CertificateDer<'static>,
    /// Its serial number, hex.
    pub serial: String,
    /// When it ends, in Unix seconds.
    pub expires: i64,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ca(..)")
    }
}

impl Ca {
    /// The CA of data folder `data`.
    pub fn load(data: &Path) -> Result<Self, PkiError> {
        let paths = Paths::new(data);
        Ok(Self {
            issuer: load_issuer(&paths)?,
            cert: read_cert(&paths.ca_cert)?,
        })
    }

    /// A certificate for computer `id` and the public key of `request`,
    /// issued at Unix second `issued`, lasting `lifetime`.
    pub fn sign(
        &self,
        id: &ComputerId,
        request: &Request,
        issued: i64,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let issued = OffsetDateTime::from_unix_timestamp(issued).map_err(|_| PkiError::Request)?;
        let (params, serial) = client_params(id, issued, lifetime);
        let expires = params.not_after.unix_timestamp();
        let cert = CertificateSigningRequestParams {
            params,
            public_key: request.public_key.clone(),
        }
        .signed_by(&self.issuer)?;
        Ok(Issued {
            cert: cert.der().clone(),
            serial,
            expires,
        })
    }
}

/// A certificate signing request (PKCS #10) whose signature the key it
/// names verified, which proves the asker holds the private key: only that
/// public key is taken from it.
#[derive(Debug, Clone)]
pub struct Request {
    public_key: rcgen::PublicKey,
    /// The SHA-256 of its public key (SubjectPublicKeyInfo, DER).
    pub key_hash: [u8; 32],
}

impl Request {
    /// The request in `csr` (DER), if its signature holds.
    pub fn read(csr: &[u8]) -> Result<Self, PkiError> {
        use rcgen::PublicKeyData;
        let request = CertificateSigningRequestParams::from_der(&csr.into())
            .map_err(|_| PkiError::Request)?;
        let key_hash =
            otpgate_actors::digest::sha256(&request.public_key.subject_public_key_info());
        Ok(Self {
            public_key: request.public_key,
            key_hash,
        })
    }
}

/// Whether certificate `cert` (DER) is for the public key of `key`.
pub fn certifies(cert: &[u8], key: &KeyPair) -> bool {
    use rcgen::PublicKeyData;
    x509_parser::parse_x509_certificate(cert)
        .is_ok_and(|(_, cert)| cert.public_key().raw == key.subject_public_key_info().as_slice())
}

/// What the server needs of a client certificate on every connection, resumed
/// or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The client computer it names.
    pub id: ComputerId,
    /// When it was issued, in Unix seconds (its start of validity is backdated
    /// by the same hour for every certificate we issue).
    pub issued: i64,
    /// When it expires, in Unix seconds.
    pub expires: i64,
    /// Its serial number, hex.
    pub serial: String,
}

/// The facts of a (verified) client certificate.
pub fn client_cert(cert: &CertificateDer<'_>) -> Result<ClientCert, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).map_err(|_| PkiError::Parse)?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(PkiError::Identity)?;
    let validity = cert.validity();
    Ok(ClientCert {
        id: cn.parse().map_err(|_| PkiError::Identity)?,
        issued: validity.not_before.timestamp() + BACKDATE.whole_seconds(),
        expires: validity.not_after.timestamp(),
        serial: data_encoding::HEXLOWER.encode(cert.raw_serial()),
    })
}

/// When `cert` ends, in Unix seconds.
pub fn expiry(cert: &CertificateDer<'_>) -> Result<i64, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).map_err(|_| PkiError::Parse)?;
    Ok(cert.validity().not_after.timestamp())
}

/// Reads the first certificate in PEM file `path`.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_file(path).map_err(|source| pem_error(path, source))
}

/// Reads every certificate in PEM file `path`, in order.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|source| pem_error(path, source))
}

/// Reads the private key in PEM file `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| pem_error(path, source))
}

fn read_secret(path: &Path) -> Result<ServerSecret, PkiError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(|source| io_error(path, source))?);
    let secret: [u8; SECRET_LEN] = bytes.as_slice().try_into().map_err(|_| PkiError::Secret {
        path: path.to_owned(),
    })?;
    Ok(ServerSecret(Zeroizing::new(secret)))
}

fn load_issuer(paths: &Paths) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let read = |path: &Path| match fs::read_to_string(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(PkiError::NoCa {
            path: path.to_owned(),
        }),
        other => other.map_err(|source| io_error(path, source)),
    };
    let key = Zeroizing::new(read(&paths.ca_key)?);
    let key = KeyPair::from_pem(&key)?;
    Ok(Issuer::from_ca_cert_pem(&read(&paths.ca_cert)?, key)?)
}

/// Whether the certificate at `path` exists, names everything in `wanted`, and is
/// not about to expire.
fn server_cert_covers(path: &Path, wanted: &BTreeSet<String>) -> Result<bool, PkiError> {
    if !path.exists() {
        return Ok(false);
    }
    let der = read_cert(path)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| PkiError::Parse)?;
    let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
    if cert.validity().not_after.timestamp() < renew_at.unix_timestamp() {
        return Ok(false);
    }
    let mut names = BTreeSet::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    names.insert(dns.to_string());
                }
                GeneralName::IPAddress(ip) => {
                    let ip = match *ip {
                        &[a, b, c, d] => IpAddr::from([a, b, c, d]),
                        bytes => match <[u8; 16]>::try_from(bytes) {
                            Ok(v6) => IpAddr::from(v6),
                            Err(_) => continue,
                        },
                    };
                    names.insert(ip.to_string());
                }
                _ => {}
            }
        }
    }
    Ok(wanted.is_subset(&names))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

fn io_error(path: &Path, source: io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pem_error(path: &Path, source: rustls::pki_types::pem::Error) -> PkiError {
    PkiError::Pem {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn first_start_creates_the_pki_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        ensure_server(dir.path(), &[]).unwrap();
        let paths = Paths::new(dir.path());
        for key in [&paths.secret, &paths.ca_key, &paths.server_key] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        let id: ComputerId = "WS-7".parse().unwrap();
        let client = issue_client(dir.path(), &id, &dir.path().join("ws-7")).unwrap();
        assert_eq!(mode(&client.key), 0o600);
        let cert = client_cert(&read_cert(&client.cert).unwrap()).unwrap();
        assert_eq!(cert.id, id);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((now - 5..=now).contains(&cert.issued), "{cert:?}");
        assert!(cert.expires > now);
        assert_eq!(
            fs::read(&client.ca).unwrap(),
            fs::read(&paths.ca_cert).unwrap()
        );
    }

    #[test]
    fn the_server_certificate_is_kept_until_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_server(dir.path(), &[]).unwrap();
        let again = ensure_server(dir.path(), &[]).unwrap();
        assert_eq!(first.chain, again.chain);
        assert_eq!(first.secret.expose(), again.secret.expose());
        let renamed = ensure_server(dir.path(), &["otp.example.com".into()]).unwrap();
        assert_ne!(first.chain, renamed.chain);
        assert_eq!(first.ca, renamed.ca, "the CA stays");
        let wanted = ["otp.example.com", "localhost", "127.0.0.1"]
            .map(String::from)
            .into();
        assert!(server_cert_covers(&Paths::new(dir.path()).server_cert, &wanted).unwrap());
    }

    #[test]
    fn a_replacement_cut_short_leaves_the_old_pair_or_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ClientPaths::new(dir.path());
        let pair = |paths: &ClientPaths| {
            (
                fs::read_to_string(&paths.cert).unwrap(),
                fs::read_to_string(&paths.key).unwrap(),
            )
        };
        let put = |path: &Path, text: &str| fs::write(path, text).unwrap();
        let old = || {
            put(&paths.cert, "old cert");
            put(&paths.key, "old key");
        };
        // Cut before the new certificate was written: the old pair.
        old();
        put(&paths.next_key, "new key");
        paths.settle().unwrap();
        assert_eq!(pair(&paths), ("old cert".into(), "old key".into()));
        // Cut before either was renamed, or between the two: the new pair.
        for key_moved in [false, true] {
            old();
            put(&paths.next_cert, "new cert");
            if key_moved {
                put(&paths.key, "new key");
            } else {
                put(&paths.next_key, "new key");
            }
            paths.settle().unwrap();
            assert_eq!(pair(&paths), ("new cert".into(), "new key".into()));
        }
        assert!(!paths.next_cert.exists() && !paths.next_key.exists());
        // Whole: the new pair, the key 0600.
        paths.replace("newer cert", "newer key").unwrap();
        assert_eq!(pair(&paths), ("newer cert".into(), "newer key".into()));
        assert_eq!(mode(&paths.key), 0o600);
    }

    #[test]
    fn issuing_without_a_ca_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let id: ComputerId = "ws-1".parse().unwrap();
        assert!(matches!(
            issue_client(dir.path(), &id, &dir.path().join("out")),
            Err(PkiError::NoCa { .. })
        ));
    }
}

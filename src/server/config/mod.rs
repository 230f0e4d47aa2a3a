//! The server's configuration: embedded defaults, overridden by an optional TOML
//! file, overridden by command-line flags; loaded and checked whole before any
//! port is bound.
//!
//! ```toml
//! data_dir = "./otpgate-data"
//! listen = "127.0.0.1:7443"
//! server_names = ["otp.example.com"]
//! max_connections = 200000    # default: this, or what the open-files limit allows
//! max_handshakes = 1024         # TLS handshakes in flight, in all
//! max_handshakes_per_source = 256   # ... and from one IP address
//! handshake_timeout_ms = 10000
//! heartbeat_interval_ms = 30000
//! requests_per_second = 20      # per agent connection, bursts of twice that
//!                               # (recordings' chunks are counted apart)
//! directory_file = "/etc/otpgate/directory.toml"   # OS account -> email
//! mail_from = "otpgate <otpgate@example.com>"
//! admin_email = "it@example.com"                   # the first administrator's
//! management_url = "https://otp.example.com:8443"  # for links in approvers' mail
//! recording_retention_days = 90  # recordings kept this long after their last write
//! recording_quota_computer_mib = 2048  # recording one computer may fill...
//! recording_quota_user_mib = 512       # ... and one OS user on it; past it
//!                                       # output is left out (audited)
//! recordings_session_only = false      # keep only recordings of OTP logins
//!
//! [web]                       # the Management Tool over HTTPS
//! enabled = true
//! listen = "127.0.0.1:8443"
//! cert_file = "/etc/otpgate/web.pem"   # chain, leaf first; default: the server's
//! key_file = "/etc/otpgate/web.key"    # own certificate from its PKI
//!
//! [pki]
//! client_days = 30            # certificates of enrolled computers (1 to 825)
//!
//! [metrics]                   # Prometheus, plain HTTP GET /metrics; off without it
//! listen = "127.0.0.1:9464"
//!
//! [ldap]                      # Active Directory (or LDAP) instead of directory_file
//! url = "ldaps://dc1.corp.example.com"   # or a list of domain controllers, tried in
//!                                        # turn; ldap:// with StartTLS (plain on loopback)
//! bind_dn = "CN=otpgate,OU=Service,DC=corp,DC=example,DC=com"
//! password_file = "/etc/otpgate/ldap-password"   # or password_env = "VAR"
//! ca_file = "/etc/otpgate/ad-ca.pem"             # default: the system's CAs
//! base_dn = "DC=corp,DC=example,DC=com"
//! filter = "(&(objectClass=user)(|(sAMAccountName={name})(userPrincipalName={upn})))"
//! mail_attribute = "mail"
//! timeout_secs = 5
//! cache_secs = 60
//! pool_size = 2              # connections kept, taken in turn
//! [ldap.domains]              # NetBIOS domain = realm: CORP\alice is alice@corp.example.com
//! CORP = "corp.example.com"
//!
//! [store]                     # without it, sled in <data>/db
//! backend = "postgres"        # several servers over one database
//! url = "host=db1,db2 user=otpgate dbname=otpgate target_session_attrs=read-write"
//! password_file = "/etc/otpgate/db-password"     # or password_env = "VAR"
//! ca_file = "/etc/otpgate/db-ca.pem"             # TLS (required but on loopback)
//! pool_size = 8
//! statement_timeout_ms = 5000
//!
//! [smtp]                      # without it, mail goes to <data>/outbox as .eml files
//! host = "mail.example.com"
//! port = 587
//! security = "starttls"       # "tls" (implicit), "starttls", or "plain" (loopback only)
//! username = "otpgate"
//! password_file = "/etc/otpgate/smtp-password"   # or password_env = "VAR"
//! ca_file = "/etc/otpgate/relay-ca.pem"          # default: the system's CAs
//! timeout_secs = 30
//! max_attempts = 10
//! ```

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

mod ldap;
mod smtp;
mod store;

use ldap::LdapFile;
pub use ldap::{
    DEFAULT_LDAP_CACHE, DEFAULT_LDAP_FILTER, DEFAULT_LDAP_TIMEOUT, LdapConfig, LdapUrl,
};
use smtp::SmtpFile;
pub use smtp::{DEFAULT_SMTP_TIMEOUT, SmtpConfig, SmtpSecurity};
use store::StoreFile;
pub use store::{DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT, StoreConfig};

use otpgate_actors::names::is_loopback;

use crate::server::recordings::{DEFAULT_QUOTAS, Quotas};

/// Where the server keeps its database, PKI and outbox by default.
pub const DEFAULT_DATA_DIR: &str = "./otpgate-data";
/// Where the server listens for agents by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";
/// How many agent connections may be open at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 200_000;
/// How many TLS handshakes may be in flight at once by default: enough for a
/// fleet reconnecting after a restart, at a 2-core machine's handshake rate.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// How many TLS handshakes may be in flight from one IP address by default.
pub const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: usize = 256;
/// How long a TLS handshake, and then the agent's Hello, may take by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often agents send a heartbeat by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// How many requests (heartbeats aside) one agent connection may send per
/// second by default; bursts of twice as many pass.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 20;
/// How many days terminal recordings are kept after their last write.
pub const DEFAULT_RECORDING_RETENTION_DAYS: u32 = 90;

/// Where the web Management Tool listens by default.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8443";

/// The sender of every message by default.
pub const DEFAULT_MAIL_FROM: &str = "otpgate <otpgate@localhost>";
/// Where the Management Tool is for the links in approvers' mail, without a
/// web tool of ours or a host name to give.
pub const DEFAULT_MANAGEMENT_URL: &str = "https://localhost:8443";
/// The email of the administrator created on first start, by default.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@localhost";

/// The shortest heartbeat interval we accept: shorter would flood the server.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);

/// A configuration that cannot be used; the server exits with status 64.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this configuration.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, on one line.
        message: String,
    },
    /// A value is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The configuration file's contents; every setting is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    server_names: Option<Vec<String>>,
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    max_handshakes_per_source: Option<usize>,
    handshake_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    requests_per_second: Option<u32>,
    directory_file: Option<PathBuf>,
    mail_from: Option<String>,
    admin_email: Option<String>,
    management_url: Option<String>,
    recording_retention_days: Option<u32>,
    recording_quota_computer_mib: Option<u64>,
    recording_quota_user_mib: Option<u64>,
    recordings_session_only: Option<bool>,
    web: Option<WebFile>,
    pki: Option<PkiFile>,
    metrics: Option<MetricsFile>,
    ldap: Option<LdapFile>,
    smtp: Option<SmtpFile>,
    store: Option<StoreFile>,
}

/// The `[pki]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PkiFile {
    client_days: Option<u32>,
    /// For tests: the lifetime in seconds, over `client_days`.
    client_lifetime_secs: Option<u64>,
}

/// How long an enrolled computer's certificate lasts unless configured.
pub const DEFAULT_CLIENT_DAYS: u32 = 30;

/// The `[metrics]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    listen: String,
}

/// The `[web]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebFile {
    enabled: Option<bool>,
    listen: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// The web Management Tool's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its certificate chain and key (PEM files); `None`: the server's own.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// What the command line may override.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
}

/// A checked server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data folder.
    pub data_dir: PathBuf,
    /// The address agents connect to.
    pub listen: SocketAddr,
    /// Extra names for the server certificate, besides localhost and 127.0.0.1.
    pub server_names: Vec<String>,
    /// The most agent connections open at once.
    pub max_connections: usize,
    /// Whether the configuration set `max_connections` (else the default,
    /// which `serve` lowers to what the open-files limit leaves room for).
    pub max_connections_given: bool,
    /// The most TLS handshakes in flight at once.
    pub max_handshakes: usize,
    /// The most TLS handshakes in flight from one IP address.
    pub max_handshakes_per_source: usize,
    /// How long a TLS handshake, and then the agent's Hello, may take.
    pub handshake_timeout: Duration,
    /// How often agents send a heartbeat.
    pub heartbeat_interval: Duration,
    /// Requests per second one agent connection may send, heartbeats
    /// included (recordings' chunks are counted apart).
    pub requests_per_second: NonZeroU32,
    /// The directory of Active Directory accounts (OS account to email), if any.
    pub directory_file: Option<PathBuf>,
    /// The sender of every message.
    pub mail_from: String,
    /// The email of the administrator created on first start.
    pub admin_email: String,
    /// Where the Management Tool is, for the links in approvers' mail.
    pub management_url: String,
    /// How long terminal recordings are kept after their last write.
    pub recording_retention: Duration,
    /// How much recording is kept per computer and OS user, and whether only
    /// that of client sessions.
    pub recording_quotas: Quotas,
    /// How long the certificates of enrolled computers last.
    pub client_lifetime: Duration,
    /// The web Management Tool; `None` when turned off.
    pub web: Option<WebConfig>,
    /// Where the Prometheus endpoint listens; `None`: nowhere.
    pub metrics: Option<SocketAddr>,
    /// The LDAP directory; `None`: the directory file (or none).
    pub ldap: Option<LdapConfig>,
    /// The SMTP relay; `None` writes `.eml` files into the outbox folder.
    pub smtp: Option<SmtpConfig>,
    /// Where state is kept.
    pub store: StoreConfig,
}

impl ServerConfig {
    /// The embedded defaults, overridden by file `path` (if given), overridden by
    /// `overrides`.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|err| ConfigError::Parse {
                    path: path.to_owned(),
                    message: err.message().replace('\n', " "),
                })?
            }
            None => File::default(),
        };
        Self::from_parts(file, overrides)
    }

    fn from_parts(file: File, overrides: Overrides) -> Result<Self, ConfigError> {
        let listen = overrides
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen.parse().map_err(|_| ConfigError::Invalid {
            field: "listen",
            reason: format!("{listen:?} is not an IP address and port"),
        })?;
        let at_least_one = |field: &'static str, value: usize| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    field,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(value)
            }
        };
        let max_connections = at_least_one(
            "max_connections",
            file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        )?;
        let max_handshakes = at_least_one(
            "max_handshakes",
            file.max_handshakes.unwrap_or(DEFAULT_MAX_HANDSHAKES),
        )?;
        let max_handshakes_per_source = at_least_one(
            "max_handshakes_per_source",
            file.max_handshakes_per_source
                .unwrap_or(DEFAULT_MAX_HANDSHAKES_PER_SOURCE),
        )?;
        let handshake_timeout = file
            .handshake_timeout_ms
            .map_or(DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_millis);
        if handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                field: "handshake_timeout_ms",
                reason: "must be above 0".into(),
            });
        }
        let heartbeat_interval = file
            .heartbeat_interval_ms
            .map_or(DEFAULT_HEARTBEAT_INTERVAL, Duration::from_millis);
        if heartbeat_interval < MIN_HEARTBEAT_INTERVAL
            || u32::try_from(heartbeat_interval.as_millis()).is_err()
        {
            return Err(ConfigError::Invalid {
                field: "heartbeat_interval_ms",
                reason: format!(
                    "must be between {} and {}",
                    MIN_HEARTBEAT_INTERVAL.as_millis(),
                    u32::MAX
                ),
            });
        }
        let requests_per_second = NonZeroU32::new(
            file.requests_per_second
                .unwrap_or(DEFAULT_REQUESTS_PER_SECOND),
        )
        .ok_or_else(|| ConfigError::Invalid {
            field: "requests_per_second",
            reason: "must be at least 1".into(),
        })?;
        let recording_retention_days = file
            .recording_retention_days
            .unwrap_or(DEFAULT_RECORDING_RETENTION_DAYS);
        if recording_retention_days == 0 {
            return Err(ConfigError::Invalid {
                field: "recording_retention_days",
                reason: "must be at least 1".into(),
            });
        }
        let mib = |field, value: Option<u64>, default: u64| match value {
            Some(0) => Err(ConfigError::Invalid {
                field,
                reason: "must be at least 1".into(),
            }),
            Some(mib) => Ok(mib.saturating_mul(1 << 20)),
            None => Ok(default),
        };
        let recording_quotas = Quotas {
            per_computer: mib(
                "recording_quota_computer_mib",
                file.recording_quota_computer_mib,
                DEFAULT_QUOTAS.per_computer,
            )?,
            per_user: mib(
                "recording_quota_user_mib",
                file.recording_quota_user_mib,
                DEFAULT_QUOTAS.per_user,
            )?,
            session_only: file
                .recordings_session_only
                .unwrap_or(DEFAULT_QUOTAS.session_only),
        };
        let server_names = file.server_names.unwrap_or_default();
        let pki = file.pki.unwrap_or_default();
        let client_days = pki.client_days.unwrap_or(DEFAULT_CLIENT_DAYS);
        if !(1..=825).contains(&client_days) {
            return Err(ConfigError::Invalid {
                field: "pki.client_days",
                reason: format!("{client_days} is not between 1 and 825"),
            });
        }
        if let Some(secs) = pki.client_lifetime_secs
            && !(1..=825 * 24 * 60 * 60).contains(&secs)
        {
            return Err(ConfigError::Invalid {
                field: "pki.client_lifetime_secs",
                reason: format!("{secs} is not between 1 and 825 days' seconds"),
            });
        }
        let web = file.web.unwrap_or_default().check()?;
        let management_url = file.management_url.map_or_else(
            // Our own web tool, under the first name the server goes by.
            || match &web {
                Some(web) => format!(
                    "https://{}:{}",
                    server_names.first().map_or("localhost", String::as_str),
                    web.listen.port()
                ),
                None => DEFAULT_MANAGEMENT_URL.to_owned(),
            },
            |url| url.trim_end_matches('/').to_owned(),
        );
        let metrics = file
            .metrics
            .map(|metrics| {
                metrics.listen.parse().map_err(|_| ConfigError::Invalid {
                    field: "metrics.listen",
                    reason: format!("{:?} is not an IP address and port", metrics.listen),
                })
            })
            .transpose()?;
        if let Some(bad) = server_names
            .iter()
            .find(|name| rustls::pki_types::ServerName::try_from(name.as_str()).is_err())
        {
            return Err(ConfigError::Invalid {
                field: "server_names",
                reason: format!("{bad:?} is not a valid DNS name or IP address"),
            });
        }
        Ok(Self {
            data_dir: overrides
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            listen,
            server_names,
            max_connections,
            max_connections_given: file.max_connections.is_some(),
            max_handshakes,
            max_handshakes_per_source,
            handshake_timeout,
            heartbeat_interval,
            requests_per_second,
            recording_retention: Duration::from_secs(
                24 * 60 * 60 * u64::from(recording_retention_days),
            ),
            recording_quotas,
            client_lifetime: Duration::from_secs(
                pki.client_lifetime_secs
                    .unwrap_or(24 * 60 * 60 * u64::from(client_days)),
            ),
            directory_file: file.directory_file,
            mail_from: file
                .mail_from
                .unwrap_or_else(|| DEFAULT_MAIL_FROM.to_owned()),
            admin_email: file
                .admin_email
                .unwrap_or_else(|| DEFAULT_ADMIN_EMAIL.to_owned()),
            management_url,
            web,
            metrics,
            ldap: file.ldap.map(LdapFile::check).transpose()?,
            smtp: file.smtp.map(SmtpFile::check).transpose()?,
            store: file.store.unwrap_or_default().check()?,
        })
    }
}

impl WebFile {
    fn check(self) -> Result<Option<WebConfig>, ConfigError> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let listen = self.listen.unwrap_or_else(|| DEFAULT_WEB_LISTEN.to_owned());
        let listen = listen.parse().map_err(|_| ConfigError::Invalid {
            field: "web.listen",
            reason: format!("{listen:?} is not an IP address and port"),
        })?;
        let identity = match (self.cert_file, self.key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    field: "web.cert_file",
                    reason: "give both cert_file and key_file, or neither".into(),
                });
            }
        };
        Ok(Some(WebConfig { listen, identity }))
    }
}

/// Whether `host` is this machine.
/// A password from the configuration: never shown (its `Debug` says only
/// that there is one), wiped when dropped.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// The password itself, for the one call that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(password: String) -> Self {
        Self(Zeroizing::new(password))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A password given by file (its first line) or environment variable, for the
/// `field` section; `None` if neither. An empty one is refused: to LDAP it
/// would be an anonymous bind, which succeeds.
fn secret(
    field: &'static str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<Password>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { field, reason };
    let password = match (file, env) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give password_file or password_env, not both".into(),
            ));
        }
        (Some(path), None) => read_password(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?,
        (None, Some(var)) => Zeroizing::new(
            std::env::var(var)
                .map_err(|_| invalid(format!("environment variable {var} is not set")))?,
        ),
        (None, None) => return Ok(None),
    };
    if password.is_empty() {
        let from = match (file, env) {
            (Some(path), _) => format!("the first line of {}", path.display()),
            (_, Some(var)) => format!("environment variable {var}"),
            _ => unreachable!("one was given"),
        };
        return Err(invalid(format!("the password is empty ({from})")));
    }
    Ok(Some(Password(password)))
}

/// Reads a password from a file (its first line).
fn read_password(path: &std::path::Path) -> std::io::Result<Zeroizing<String>> {
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(toml: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_parts(toml::from_str(toml).unwrap(), Overrides::default())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = parse("").unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL);
    }

    #[test]
    fn approvers_links_point_at_our_own_web_tool_unless_told() {
        assert_eq!(parse("").unwrap().management_url, "https://localhost:8443");
        let ours = parse("server_names = [\"otp.example.com\"]\n[web]\nlisten = \"0.0.0.0:9443\"")
            .unwrap();
        assert_eq!(ours.management_url, "https://otp.example.com:9443");
        let given = parse("management_url = \"https://m.example.com/\"").unwrap();
        assert_eq!(given.management_url, "https://m.example.com");
        let off = parse("[web]\nenabled = false").unwrap();
        assert_eq!(off.web, None);
        assert!(parse("[web]\ncert_file = \"/a.pem\"").is_err(), "a key too");
    }

    #[test]
    fn flags_override_the_file() {
        let file = toml::from_str("listen = \"127.0.0.1:1\"\ndata_dir = \"/a\"").unwrap();
        let overrides = Overrides {
            data_dir: Some("/b".into()),
            listen: Some("127.0.0.1:2".into()),
        };
        let config = ServerConfig::from_parts(file, overrides).unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.data_dir, PathBuf::from("/b"));
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        for (toml, field) in [
            ("listen = \"nowhere\"", "listen"),
            ("max_connections = 0", "max_connections"),
            ("heartbeat_interval_ms = 1", "heartbeat_interval_ms"),
            ("requests_per_second = 0", "requests_per_second"),
            ("recording_retention_days = 0", "recording_retention_days"),
            ("handshake_timeout_ms = 0", "handshake_timeout_ms"),
            ("server_names = [\"bad name!\"]", "server_names"),
            (
                "[smtp]\nhost = \"mail.example.com\"\nsecurity = \"plain\"",
                "smtp",
            ),
            ("[smtp]\nhost = \"127.0.0.1\"\nusername = \"u\"", "smtp"),
        ] {
            match parse(toml) {
                Err(ConfigError::Invalid { field: got, .. }) => assert_eq!(got, field, "{toml}"),
                other => panic!("{toml}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpgate.toml");
        std::fs::write(&path, "listne = \"127.0.0.1:1\"\n").unwrap();
        let err = ServerConfig::load(Some(&path), Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}

//! How to reach the database: the `[store]` settings as the connection
//! takes them (TLS required unless every host is this machine), and a probe
//! that asks it without changing anything (`otpgate doctor`).

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::locks::SITE_LOCK;
use super::{Result, Schema, StoreError, newest};
use crate::names::is_loopback;

/// How to reach the database.
#[derive(Clone)]
pub struct PgConfig {
    /// A libpq-style URL or key-value string; several hosts allowed, with
    /// `target_session_attrs=read-write` to reach the primary.
    pub url: String,
    /// The password, when not in the URL (from a file or the environment).
    pub password: Option<Zeroizing<String>>,
    /// The CA certificates (PEM) that sign the servers' certificates; the
    /// system's when not given.
    pub ca_file: Option<PathBuf>,
    /// The most connections held open.
    pub pool_size: usize,
    /// The longest a statement may run.
    pub statement_timeout: Duration,
}

impl PgConfig {
    /// How to connect: the url's settings with the password, the statement
    /// timeout and TLS as this config says.
    pub(super) fn settings(&self) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
        let mut pg: tokio_postgres::Config = self
            .url
            .parse()
            // Not the parser's words: they may quote a piece of a password.
            .map_err(|_: tokio_postgres::Error| {
                StoreError::Config(
                    "the url is not a connection string (key=value settings or a \
                     postgresql:// URL)"
                        .into(),
                )
            })?;
        if let Some(password) = &self.password {
            pg.password(password.as_bytes());
        }
        // A transaction left open (its process paused, say) ends as a
        // statement would: its row locks then hold up no other node.
        pg.options(format!(
            "-c statement_timeout={0} -c idle_in_transaction_session_timeout={0}",
            self.statement_timeout.as_millis()
        ));
        pg.application_name("otpgate");
        // Plain only on this machine: every host loopback, and every address
        // given too (a `hostaddr` is where the connection goes, whatever
        // `host` says); anywhere else, TLS and the server's certificate
        // checked.
        let hosts = pg.get_hosts();
        let loopback = !hosts.is_empty()
            && hosts.iter().all(|host| match host {
                Host::Tcp(name) => is_loopback(name),
                Host::Unix(_) => true,
            })
            && pg.get_hostaddrs().iter().all(std::net::IpAddr::is_loopback);
        // On loopback, plain: a local cluster's certificate is often one no
        // CA signed (Debian's snakeoil), which TLS here would refuse.
        pg.ssl_mode(if loopback {
            SslMode::Disable
        } else {
            SslMode::Require
        });
        Ok((pg, MakeRustlsConnect::new(tls_config(self)?)))
    }

    /// What a server would find, asked without changing anything: the
    /// schema's version (0 before a first start), how many servers serve
    /// the database now, and whether a site is being copied into it.
    pub async fn probe(&self) -> Result<Probe> {
        let (pg, tls) = self.settings()?;
        let (client, connection) = pg
            .connect(tls)
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let session = tokio::spawn(connection);
        let made: bool = client
            .query_one("SELECT to_regclass('otpgate_schema') IS NOT NULL", &[])
            .await?
            .get(0);
        let schema = if made {
            Schema::read(&client).await?
        } else {
            Schema {
                version: 0,
                needs: 0,
            }
        };
        // A bigint advisory key shows as its two halves, objsubid 1.
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE mode = 'ShareLock'),
                        count(*) FILTER (WHERE mode = 'ExclusiveLock')
                 FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid
                   AND objsubid = 1",
                &[&SITE_LOCK],
            )
            .await?;
        let (servers, copying): (i64, i64) = (row.get(0), row.get(1));
        session.abort();
        Ok(Probe {
            schema,
            newest: newest(),
            servers: u32::try_from(servers).unwrap_or(u32::MAX),
            copying: copying > 0,
        })
    }

    /// Whether the url itself holds a password (fine in a file of the
    /// owner's; not on a command line, which every user sees).
    pub fn url_has_password(&self) -> bool {
        self.url
            .parse::<tokio_postgres::Config>()
            .is_ok_and(|config| config.get_password().is_some())
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// What [`PgConfig::probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The schema in the database; version 0 before a first start.
    pub schema: Schema,
    /// The newest this build knows.
    pub newest: i32,
    /// How many servers serve the database now.
    pub servers: u32,
    /// Whether a site is being copied into it now.
    pub copying: bool,
}

/// TLS as `config` says: its CA file's certificates, or the system's.
fn tls_config(config: &PgConfig) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|err| StoreError::Config(format!("{}: {err}", path.display())))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|err| StoreError::Config(format!("{}: {err}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|err| StoreError::Config(err.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

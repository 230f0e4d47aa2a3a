//! The `[store]` section: where the server keeps its state. sled in the data
//! folder by default; or a PostgreSQL database.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use otpgate_actors::PgConfig;

use super::{ConfigError, secret};

/// Connections kept to PostgreSQL unless `pool_size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// How long a statement may run unless `statement_timeout_ms` says otherwise.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    /// sled, in the data folder.
    #[default]
    Sled,
    /// PostgreSQL.
    Postgres,
}

/// The `[store]` section as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreFile {
    backend: Option<Backend>,
    url: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ca_file: Option<PathBuf>,
    pool_size: Option<usize>,
    statement_timeout_ms: Option<u64>,
}

impl std::fmt::Debug for StoreFile {
    /// Without the url, which may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFile")
            .field("backend", &self.backend)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// Where the server keeps its state.
#[derive(Debug, Clone, Default)]
pub enum StoreConfig {
    /// sled, in the data folder's `db`.
    #[default]
    Sled,
    /// PostgreSQL.
    Postgres(PgConfig),
}

/// A `[store]` section that cannot be.
fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid {
        field: "store",
        reason,
    }
}

impl StoreConfig {
    /// The PostgreSQL database at `url`, its password read from
    /// `password_file` or `password_env` and its server checked against
    /// `ca_file`, as a `[store]` section naming them would be (for commands
    /// that take them as options).
    pub fn postgres(
        url: String,
        password_file: Option<PathBuf>,
        password_env: Option<String>,
        ca_file: Option<PathBuf>,
    ) -> Result<PgConfig, ConfigError> {
        let file = StoreFile {
            backend: Some(Backend::Postgres),
            url: Some(url),
            password_file,
            password_env,
            ca_file,
            ..StoreFile::default()
        };
        file.postgres()
    }
}

impl StoreFile {
    pub(super) fn check(self) -> Result<StoreConfig, ConfigError> {
        if self.backend.unwrap_or_default() == Backend::Sled {
            return match (&self.url, &self.password_file, &self.password_env) {
                (None, None, None) => Ok(StoreConfig::Sled),
                _ => Err(invalid(
                    "url and passwords are for backend = \"postgres\"".into(),
                )),
            };
        }
        Ok(StoreConfig::Postgres(self.postgres()?))
    }

    /// The PostgreSQL section checked.
    fn postgres(self) -> Result<PgConfig, ConfigError> {
        let url = self
            .url
            .ok_or_else(|| invalid("backend = \"postgres\" needs a url".into()))?;
        let password = secret(
            "store",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            return Err(invalid(format!("ca_file {} is not a file", ca.display())));
        }
        let pool_size = self.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if !(1..=256).contains(&pool_size) {
            return Err(invalid(format!("pool_size {pool_size} is not 1 to 256")));
        }
        Ok(PgConfig {
            url,
            password: password.map(|password| password.0),
            ca_file: self.ca_file,
            pool_size,
            statement_timeout: self
                .statement_timeout_ms
                .map_or(DEFAULT_STATEMENT_TIMEOUT, Duration::from_millis),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn sled_is_the_default_and_postgres_needs_a_url() {
        assert!(matches!(parse("").unwrap().store, StoreConfig::Sled));
        let pg = parse(
            "[store]\nbackend = \"postgres\"\nurl = \"host=127.0.0.1 user=otpgate\"\n\
             password_env = \"PATH\"\npool_size = 4",
        )
        .unwrap();
        let StoreConfig::Postgres(pg) = pg.store else {
            panic!("postgres")
        };
        assert_eq!(pg.pool_size, 4);
        assert!(pg.password.is_some());
        for bad in [
            "[store]\nbackend = \"postgres\"",
            "[store]\nurl = \"host=x\"",
            "[store]\nbackend = \"postgres\"\nurl = \"host=x\"\npool_size = 0",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let unknown = toml::from_str::<super::super::File>("[store]\nbackend = \"mysql\"");
        assert!(unknown.is_err(), "an unknown backend is refused when read");
    }
}

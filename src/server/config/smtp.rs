//! The `[smtp]` section: the relay mail goes through, and how; checked whole
//! at start.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Password, is_loopback, secret};

/// The `[smtp]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SmtpFile {
    host: String,
    port: Option<u16>,
    security: Option<SmtpSecurity>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ca_file: Option<PathBuf>,
    timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain, then STARTTLS before anything else (port 587).
    StartTls,
    /// No TLS: only to a relay on this machine.
    Plain,
}

/// A checked `[smtp]` section.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The relay's host name (also checked against its certificate).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How the connection is protected.
    pub security: SmtpSecurity,
    /// The AUTH user name, if the relay wants one.
    pub username: Option<String>,
    /// The AUTH password, read from a file or the environment; never logged.
    pub password: Option<Password>,
    /// The CA to check the relay against, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the relay.
    pub timeout: Duration,
    /// Tries of one message before it is given up.
    pub max_attempts: u32,
}

impl SmtpFile {
    pub(super) fn check(self) -> Result<SmtpConfig, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            field: "smtp",
            reason,
        };
        let security = self.security.unwrap_or(SmtpSecurity::StartTls);
        if security == SmtpSecurity::Plain && !is_loopback(&self.host) {
            return Err(invalid(format!(
                "security = \"plain\" is allowed only to a relay on this machine, not {:?}",
                self.host
            )));
        }
        let password = secret(
            "smtp",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        if password.is_some() != self.username.is_some() {
            return Err(invalid("username and a password go together".into()));
        }
        let max_attempts = self
            .max_attempts
            .unwrap_or(otpgate_actors::mail::DEFAULT_MAX_ATTEMPTS);
        if max_attempts == 0 {
            return Err(invalid("max_attempts must be at least 1".into()));
        }
        Ok(SmtpConfig {
            port: self.port.unwrap_or(match security {
                SmtpSecurity::Tls => 465,
                SmtpSecurity::StartTls => 587,
                SmtpSecurity::Plain => 25,
            }),
            host: self.host,
            security,
            username: self.username,
            password,
            ca_file: self.ca_file,
            timeout: self
                .timeout_secs
                .map_or(DEFAULT_SMTP_TIMEOUT, Duration::from_secs),
            max_attempts,
        })
    }
}

/// How long mail-send waits for the relay, unless configured: its own default is
/// an hour.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);

//! `otpgate bench directory`: how long the LDAP directory of a server's
//! configuration takes to answer for one account, with the cache cold (every
//! lookup a search) and warm (answered from the cache).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use otpgate_actors::directory::Directory;

use super::{Percentiles, histogram, record};
use crate::server::config::{LdapConfig, Overrides, ServerConfig};
use crate::server::ldap::LdapDirectory;

/// What a directory bench measured, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct DirectoryReport {
    /// Lookups made in each of the two runs.
    pub lookups: u64,
    /// Lookups that failed (the directory could not be reached).
    pub failed: u64,
    /// Every lookup a search.
    pub cold: Percentiles,
    /// Every lookup from the cache (after one search).
    pub warm: Percentiles,
}

impl DirectoryReport {
    /// The report for people.
    pub fn describe(&self) -> String {
        format!(
            "{} lookups each, {} failed\ncold (a search each)  {}\nwarm (from the cache)  {}",
            self.lookups,
            self.failed,
            self.cold.describe(),
            self.warm.describe()
        )
    }
}

/// Looks `account` up `count` times in the `[ldap]` directory of the
/// configuration in `config`, cold then warm.
pub async fn directory(
    config: &Path,
    account: &str,
    count: u64,
) -> anyhow::Result<DirectoryReport> {
    let config = ServerConfig::load(Some(config), Overrides::default())?;
    let ldap = config
        .ldap
        .context("the configuration has no [ldap] section")?;
    let cold = LdapDirectory::new(LdapConfig {
        cache: Duration::ZERO,
        ..ldap.clone()
    })?;
    let warm = LdapDirectory::new(ldap)?;
    let mut failed = 0;
    let mut run = async |directory: &LdapDirectory| {
        let mut latencies = histogram();
        // The connection is made before the clock starts.
        failed += u64::from(directory.email_of(account).await.is_err());
        for _ in 0..count {
            let started = Instant::now();
            failed += u64::from(directory.email_of(account).await.is_err());
            record(&mut latencies, started.elapsed());
        }
        Percentiles::of(&latencies)
    };
    let cold = run(&cold).await;
    let warm = run(&warm).await;
    Ok(DirectoryReport {
        lookups: count,
        failed,
        cold,
        warm,
    })
}

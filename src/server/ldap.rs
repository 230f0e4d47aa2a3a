//! Active Directory (or any LDAP directory) behind the `Directory` trait: finds
//! an OS account's email by a search as the server's bind account, over LDAPS
//! or StartTLS (plain only to a directory on this machine).
//!
//! Every value put into the search filter is escaped (RFC 4515), so a name
//! with `*`, `(`, `)`, `\` or NUL cannot widen the search. An account that is
//! disabled (`userAccountControl` bit 2), has no mail, or is not found (or not
//! found once) has no email, alike. One connection is kept and shared (the
//! handle multiplexes); a failed one is dropped and the next lookup connects
//! again, so a directory that comes back is used without a restart. Every
//! lookup is bounded by the timeout; answers are kept for a short while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tracing::{debug, warn};

use otpgate_actors::directory::{AccountInfo, Directory, DirectoryError, DirectoryFuture};

use crate::server::config::LdapConfig;
use crate::server::directory::Domains;

/// The most answers kept; past it the cache starts again.
const MAX_CACHED: usize = 10_000;
/// `userAccountControl`'s bit of a disabled account.
const ACCOUNT_DISABLED: u32 = 2;

/// Why the LDAP directory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LdapSetupError {
    /// The CA file could not be used.
    #[error("ldap ca_file {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// What a lookup found.
type Answer = Option<String>;

/// The directory over LDAP.
pub struct LdapDirectory {
    config: LdapConfig,
    domains: Domains,
    tls: Arc<ClientConfig>,
    /// The connection in use, if one is open.
    connection: tokio::sync::Mutex<Option<Ldap>>,
    /// Answers by account (lower case), and until when they hold.
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl LdapDirectory {
    /// The directory `config` describes; nothing is connected yet (a directory
    /// down at start is not an error).
    pub fn new(config: LdapConfig) -> Result<Self, LdapSetupError> {
        let mut roots = RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                let failed = |reason: String| LdapSetupError::Ca {
                    path: path.clone(),
                    reason,
                };
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect)
                    .map_err(|err| failed(err.to_string()))?;
                if certs.is_empty() {
                    return Err(failed("no certificate in it".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|err| failed(err.to_string()))?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| LdapSetupError::Ca {
                path: config.ca_file.clone().unwrap_or_default(),
                reason: err.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            domains: Domains::new(config.domains.clone()),
            config,
            tls: Arc::new(tls),
            connection: tokio::sync::Mutex::default(),
            cache: Mutex::default(),
        })
    }

    /// The filter that finds `account`.
    fn filter(&self, account: &str) -> String {
        let (name, upn) = self.domains.split(account);
        let upn = upn.unwrap_or_else(|| name.clone());
        // One pass, so that a value cannot bring a placeholder of its own.
        let mut filter = String::with_capacity(self.config.filter.len() + 64);
        let mut rest = self.config.filter.as_str();
        while let Some(at) = rest.find('{') {
            filter.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{name}") {
                filter.push_str(&ldap_escape(name.as_str()));
                rest = after;
            } else if let Some(after) = tail.strip_prefix("{upn}") {
                filter.push_str(&ldap_escape(upn.as_str()));
                rest = after;
            } else {
                filter.push('{');
                rest = &tail[1..];
            }
        }
        filter.push_str(rest);
        filter
    }

    /// The open connection, or a new one bound as the server's account.
    async fn connection(&self) -> Result<Ldap, ldap3::LdapError> {
        let mut open = self.connection.lock().await;
        if let Some(ldap) = open.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        let settings = LdapConnSettings::new()
            .set_config(Arc::clone(&self.tls))
            .set_starttls(self.config.starttls)
            .set_conn_timeout(self.config.timeout);
        let (connection, mut ldap) =
            LdapConnAsync::with_settings(settings, &self.config.url).await?;
        ldap3::drive!(connection);
        ldap.with_timeout(self.config.timeout);
        ldap.simple_bind(&self.config.bind_dn, &self.config.bind_password)
            .await?
            .success()?;
        debug!(url = %self.config.url, "connected to the directory");
        *open = Some(ldap.clone());
        Ok(ldap)
    }

    /// Asks the directory what it holds on `account`: `None` when it finds
    /// no entry, or more than one (an ambiguous name).
    async fn search(&self, account: &str) -> Result<Option<AccountInfo>, ldap3::LdapError> {
        let mut ldap = self.connection().await?;
        let filter = self.filter(account);
        let attributes = [
            self.config.mail_attribute.as_str(),
            "userAccountControl",
            "memberOf",
        ];
        let (entries, _) = ldap
            .with_timeout(self.config.timeout)
            .search(&self.config.base_dn, Scope::Subtree, &filter, attributes)
            .await?
            .success()?;
        // None, or more than one (an ambiguous name): no email.
        let mut entries = entries.into_iter();
        let (Some(entry), None) = (entries.next(), entries.next()) else {
            return Ok(None);
        };
        let entry = SearchEntry::construct(entry);
        let values = |name: &str| {
            entry
                .attrs
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map_or(&[][..], |(_, values)| values.as_slice())
        };
        let disabled = values("userAccountControl")
            .first()
            .and_then(|flags| flags.trim().parse::<u32>().ok())
            .is_some_and(|flags| flags & ACCOUNT_DISABLED != 0);
        Ok(Some(AccountInfo {
            email: values(&self.config.mail_attribute)
                .first()
                .map(|mail| mail.trim().to_owned())
                .filter(|mail| !mail.is_empty()),
            disabled,
            groups: values("memberOf").to_vec(),
        }))
    }

    fn cached(&self, key: &str) -> Option<Answer> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, answer)| answer.clone())
    }

    fn keep(&self, key: String, answer: &Answer) {
        if self.config.cache.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (Instant::now() + self.config.cache, answer.clone()));
    }

    /// Looks `account` up, within the timeout; an answer is kept a while.
    async fn lookup(&self, account: &str) -> Result<Answer, DirectoryError> {
        let key = account.trim().to_lowercase();
        if let Some(answer) = self.cached(&key) {
            return Ok(answer);
        }
        let found = self.bounded_search(account).await?;
        // Disabled, or without mail: no email, as for an unknown account.
        let answer = found
            .filter(|info| !info.disabled)
            .and_then(|info| info.email);
        self.keep(key, &answer);
        Ok(answer)
    }

    /// [`Self::search`] within the timeout; a failed connection is dropped.
    async fn bounded_search(&self, account: &str) -> Result<Option<AccountInfo>, DirectoryError> {
        let searched = tokio::time::timeout(self.config.timeout, self.search(account)).await;
        match searched {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(err)) => {
                warn!(error = %err, "the directory could not be searched");
                self.drop_connection().await;
                Err(DirectoryError::Unavailable(err.to_string()))
            }
            Err(_) => {
                warn!(timeout = ?self.config.timeout, "the directory did not answer in time");
                self.drop_connection().await;
                Err(DirectoryError::Unavailable("timed out".into()))
            }
        }
    }

    async fn drop_connection(&self) {
        self.connection.lock().await.take();
    }
}

impl Directory for LdapDirectory {
    fn email_of<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<String>> {
        Box::pin(self.lookup(account))
    }

    fn describe<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<AccountInfo>> {
        Box::pin(self.bounded_search(account))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn directory(filter: &str) -> LdapDirectory {
        LdapDirectory::new(LdapConfig {
            url: "ldaps://127.0.0.1".into(),
            starttls: false,
            bind_dn: "cn=otpgate".into(),
            bind_password: "x".to_owned().into(),
            ca_file: None,
            base_dn: "dc=corp,dc=example,dc=com".into(),
            filter: filter.into(),
            mail_attribute: "mail".into(),
            timeout: Duration::from_secs(1),
            cache: Duration::from_secs(60),
            domains: [("CORP".to_owned(), "corp.example.com".to_owned())].into(),
        })
        .unwrap()
    }

    #[test]
    fn both_forms_of_an_account_find_the_same_entry() {
        let d = directory(crate::server::config::DEFAULT_LDAP_FILTER);
        let expected = "(&(objectClass=user)(|(sAMAccountName=alice)(userPrincipalName=alice@corp.example.com)))";
        assert_eq!(d.filter("CORP\\alice"), expected);
        assert_eq!(d.filter("Alice@Corp.Example.com"), expected);
    }

    #[test]
    fn values_are_escaped_and_never_widen_the_search() {
        let d = directory("(uid={name})");
        assert_eq!(d.filter("a*"), "(uid=a\\2a)");
        assert_eq!(d.filter("x)(uid=*"), "(uid=x\\29\\28uid=\\2a)");
        assert_eq!(d.filter("back\\slash"), "(uid=slash)", "a domain part");
        assert_eq!(d.filter("n\0ul"), "(uid=n\\00ul)");
        // A value cannot bring a placeholder of its own.
        let d = directory("(|(uid={name})(upn={upn}))");
        assert_eq!(d.filter("{upn}"), "(|(uid={upn})(upn={upn}))");
    }
}

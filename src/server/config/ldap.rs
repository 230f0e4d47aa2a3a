//! The `[ldap]` section: where the Active Directory (or LDAP) directory is
//! and how to search it; checked whole at start.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Password, is_loopback, secret};

/// The `[ldap]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LdapFile {
    url: Urls,
    bind_dn: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ca_file: Option<PathBuf>,
    base_dn: String,
    filter: Option<String>,
    mail_attribute: Option<String>,
    timeout_secs: Option<u64>,
    cache_secs: Option<u64>,
    pool_size: Option<usize>,
    #[serde(default)]
    domains: std::collections::HashMap<String, String>,
}

/// One directory's address, or several domain controllers' (tried in turn).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Urls {
    One(String),
    Several(Vec<String>),
}

/// One domain controller: where, and whether to upgrade with StartTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapUrl {
    /// `ldaps://host[:port]` or `ldap://host[:port]`.
    pub url: String,
    /// Over `ldap://`: upgrade with StartTLS (always, unless the host is
    /// loopback).
    pub starttls: bool,
}

impl LdapUrl {
    /// `url` checked: a scheme of LDAP's and a host.
    fn check(url: String) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not an ldap:// or ldaps:// URL"))?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        let starttls = match scheme {
            "ldaps" => false,
            "ldap" => !is_loopback(host),
            _ => return Err(format!("{url:?} is not an ldap:// or ldaps:// URL")),
        };
        Ok(Self { url, starttls })
    }
}

/// The filter that finds an OS account in Active Directory, by default.
pub const DEFAULT_LDAP_FILTER: &str =
    "(&(objectClass=user)(|(sAMAccountName={name})(userPrincipalName={upn})))";
/// How long one directory lookup may take by default.
pub const DEFAULT_LDAP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a directory answer is kept by default.
pub const DEFAULT_LDAP_CACHE: Duration = Duration::from_secs(60);
/// How many connections to the directory are kept by default.
pub const DEFAULT_LDAP_POOL: usize = 2;
/// The most connections to the directory that may be kept.
const MAX_LDAP_POOL: usize = 16;

/// The LDAP directory's settings.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// The domain controllers, tried in this order (the one that answered
    /// last first).
    pub urls: Vec<LdapUrl>,
    /// Who the server binds as to search.
    pub bind_dn: String,
    /// Its password.
    pub bind_password: Password,
    /// The CA that signs the directory's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Where accounts are searched.
    pub base_dn: String,
    /// The filter that finds an account: `{name}` and `{upn}` are replaced
    /// with the account's escaped name and user principal name.
    pub filter: String,
    /// The attribute holding an account's email.
    pub mail_attribute: String,
    /// The longest a lookup may take.
    pub timeout: Duration,
    /// How long an answer is kept.
    pub cache: Duration,
    /// How many connections are kept (lookups take them in turn; each one
    /// multiplexes).
    pub pool_size: usize,
    /// NetBIOS domain to realm.
    pub domains: std::collections::HashMap<String, String>,
}

impl LdapFile {
    pub(super) fn check(self) -> Result<LdapConfig, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            field: "ldap",
            reason,
        };
        let urls = match self.url {
            Urls::One(url) => vec![url],
            Urls::Several(urls) => urls,
        };
        if urls.is_empty() {
            return Err(invalid("url: give at least one".into()));
        }
        let urls = urls
            .into_iter()
            .map(LdapUrl::check)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let bind_password = secret(
            "ldap",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?
        .ok_or_else(|| invalid("the bind password: give password_file or password_env".into()))?;
        if let Some(ca) = &self.ca_file {
            std::fs::metadata(ca).map_err(|source| ConfigError::Read {
                path: ca.clone(),
                source,
            })?;
        }
        let filter = self
            .filter
            .unwrap_or_else(|| DEFAULT_LDAP_FILTER.to_owned());
        if !filter.contains("{name}") && !filter.contains("{upn}") {
            return Err(invalid("the filter must use {name} or {upn}".into()));
        }
        let pool_size = self.pool_size.unwrap_or(DEFAULT_LDAP_POOL);
        if !(1..=MAX_LDAP_POOL).contains(&pool_size) {
            return Err(invalid(format!(
                "pool_size must be between 1 and {MAX_LDAP_POOL}"
            )));
        }
        Ok(LdapConfig {
            pool_size,
            urls,
            bind_dn: self.bind_dn,
            bind_password,
            ca_file: self.ca_file,
            base_dn: self.base_dn,
            filter,
            mail_attribute: self.mail_attribute.unwrap_or_else(|| "mail".to_owned()),
            timeout: self
                .timeout_secs
                .map_or(DEFAULT_LDAP_TIMEOUT, Duration::from_secs),
            cache: self
                .cache_secs
                .map_or(DEFAULT_LDAP_CACHE, Duration::from_secs),
            domains: self.domains,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;

    #[test]
    fn ldap_wants_tls_a_password_and_a_filter_that_names_the_account() {
        let ldap = |url: &str, extra: &str| {
            parse(&format!(
                "[ldap]\nurl = \"{url}\"\nbind_dn = \"cn=a\"\nbase_dn = \"dc=b\"\n{extra}"
            ))
        };
        let with_password = "password_env = \"PATH\"";
        let starttls = |url| ldap(url, with_password).unwrap().ldap.unwrap().urls[0].starttls;
        assert!(!starttls("ldaps://dc1.corp.example.com"));
        assert!(
            starttls("ldap://dc1.corp.example.com:389"),
            "StartTLS off loopback"
        );
        assert!(!starttls("ldap://127.0.0.1:3389"));
        assert!(!starttls("ldap://[::1]:3389/"));
        let pool = |extra: &str| {
            let extra = format!("{with_password}\n{extra}");
            ldap("ldaps://dc1", &extra).unwrap().ldap.unwrap().pool_size
        };
        assert_eq!((pool(""), pool("pool_size = 4")), (2, 4));
        // Several domain controllers, each checked.
        let several = |urls: &str| {
            parse(&format!(
                "[ldap]\nurl = {urls}\nbind_dn = \"cn=a\"\nbase_dn = \"dc=b\"\n{with_password}"
            ))
        };
        let urls = several("[\"ldaps://dc1\", \"ldap://dc2:389\"]")
            .unwrap()
            .ldap
            .unwrap()
            .urls;
        assert_eq!(
            urls.iter()
                .map(|u| (u.url.as_str(), u.starttls))
                .collect::<Vec<_>>(),
            [("ldaps://dc1", false), ("ldap://dc2:389", true)]
        );
        assert!(several("[]").is_err());
        assert!(several("[\"ldaps://dc1\", \"http://dc2\"]").is_err());
        for (url, extra) in [
            ("http://dc1", with_password),
            ("ldaps://", with_password),
            ("ldaps://dc1", ""),
            ("ldaps://dc1", "password_file = \"/nonexistent/password\""),
            (
                "ldaps://dc1",
                "password_env = \"PATH\"\nfilter = \"(uid=alice)\"",
            ),
            (
                "ldaps://dc1",
                "password_env = \"PATH\"\nca_file = \"/nonexistent/ca.pem\"",
            ),
            ("ldaps://dc1", "password_env = \"PATH\"\npool_size = 0"),
            ("ldaps://dc1", "password_env = \"PATH\"\npool_size = 17"),
        ] {
            assert!(ldap(url, extra).is_err(), "{url} {extra}");
        }
    }

    #[test]
    fn an_empty_bind_password_is_refused_and_none_is_ever_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        let ldap = |password: &str| {
            std::fs::write(&file, password).unwrap();
            parse(&format!(
                "[ldap]\nurl = \"ldaps://dc1\"\nbind_dn = \"cn=a\"\nbase_dn = \"dc=b\"\n\
                 password_file = \"{}\"",
                file.display()
            ))
        };
        for empty in ["", "\n", "\nsecond line"] {
            let refused = ldap(empty).unwrap_err().to_string();
            assert!(refused.contains("the password is empty"), "{refused}");
        }
        let config = ldap("s3cret-bind\n").unwrap().ldap.unwrap();
        assert_eq!(config.bind_password.expose(), "s3cret-bind");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-bind"), "{shown}");
    }
}

//! The embedded directory of Active Directory accounts: a TOML file that maps OS
//! accounts to email addresses (LDAP, in [`crate::server::ldap`], stands in
//! for it behind the same `Directory` trait), and the one reading of account
//! names both use ([`Domains`]).
//!
//! ```toml
//! # NetBIOS domain = Kerberos realm: makes CORP\alice and alice@corp.example.com
//! # one account.
//! [domains]
//! CORP = "corp.example.com"
//!
//! [accounts]
//! 'CORP\alice' = "alice@example.com"
//! "bob@corp.example.com" = "bob@example.com"
//! "carol" = "carol@example.com"          # a local account
//! ```
//!
//! Accounts match case-insensitively, in either form.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use otpgate_actors::directory::{Directory, DirectoryFuture};

/// Why the directory file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryFileError {
    /// It could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, on one line.
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    domains: HashMap<String, String>,
    #[serde(default)]
    accounts: HashMap<String, String>,
}

/// NetBIOS domains and their realms: how `CORP\alice` and
/// `alice@corp.example.com` are known to be one account.
#[derive(Debug, Default, Clone)]
pub struct Domains {
    /// NetBIOS domain (lower case) to realm (lower case).
    realms: HashMap<String, String>,
}

impl Domains {
    /// The map from NetBIOS domains to realms.
    pub fn new(realms: HashMap<String, String>) -> Self {
        Self {
            realms: realms
                .into_iter()
                .map(|(domain, realm)| (domain.to_lowercase(), realm.to_lowercase()))
                .collect(),
        }
    }

    /// An account's name and, where a realm is known, its user principal name
    /// (`name@realm`), lower case: `CORP\alice` and `alice@corp.example.com`
    /// give the same; a local `alice`, the name alone. `None` for a NetBIOS
    /// domain not in the map: `OTHER\alice` is nobody here, never CORP's
    /// alice. A principal name in a realm not in the map (an alternate
    /// suffix) is its own name too, so that it matches by principal name only.
    pub fn split(&self, account: &str) -> Option<(String, Option<String>)> {
        let account = account.trim().to_lowercase();
        match account.split_once('\\') {
            Some((domain, name)) => {
                let realm = self.realms.get(domain)?;
                Some((name.to_owned(), Some(format!("{name}@{realm}"))))
            }
            None => match account.split_once('@') {
                Some((name, realm)) if self.realms.values().any(|r| r == realm) => {
                    Some((name.to_owned(), Some(account.clone())))
                }
                Some(_) => Some((account.clone(), Some(account))),
                None => Some((account, None)),
            },
        }
    }

    /// The one spelling of an account: its principal name where a realm is
    /// known, else its name, lower case; a name in an unknown domain as
    /// written (lower case), which no account of a known one has.
    pub fn canonical(&self, account: &str) -> String {
        match self.split(account) {
            Some((name, upn)) => upn.unwrap_or(name),
            None => account.trim().to_lowercase(),
        }
    }
}

/// A directory read from a file at start.
#[derive(Debug, Default)]
pub struct StaticDirectory {
    domains: Domains,
    /// Canonical account to email.
    accounts: HashMap<String, String>,
}

impl StaticDirectory {
    /// Reads the directory in file `path`.
    pub fn load(path: &Path) -> Result<Self, DirectoryFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|err| DirectoryFileError::Parse {
            path: path.to_owned(),
            message: err.message().replace('\n', " "),
        })?;
        Ok(Self::new(file.domains, file.accounts))
    }

    fn new(domains: HashMap<String, String>, accounts: HashMap<String, String>) -> Self {
        let mut directory = Self {
            domains: Domains::new(domains),
            accounts: HashMap::new(),
        };
        directory.accounts = accounts
            .into_iter()
            .map(|(account, email)| (directory.canonical(&account), email))
            .collect();
        directory
    }

    /// One spelling per account (see [`Domains::canonical`]).
    fn canonical(&self, account: &str) -> String {
        self.domains.canonical(account)
    }
}

impl Directory for StaticDirectory {
    fn email_of<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<String>> {
        let email = self.accounts.get(&self.canonical(account)).cloned();
        Box::pin(async move { Ok(email) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_forms_of_an_account_match_case_insensitively() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.toml");
        std::fs::write(
            &path,
            "[domains]\nCORP = \"Corp.Example.com\"\n[accounts]\n\
             'CORP\\alice' = \"alice@example.com\"\n\
             \"bob@corp.example.com\" = \"bob@example.com\"\n\
             \"carol\" = \"carol@example.com\"\n",
        )
        .unwrap();
        let directory = StaticDirectory::load(&path).unwrap();
        for (account, email) in [
            ("corp\\ALICE", Some("alice@example.com")),
            ("alice@CORP.example.com", Some("alice@example.com")),
            ("CORP\\bob", Some("bob@example.com")),
            ("bob@corp.example.com", Some("bob@example.com")),
            ("Carol", Some("carol@example.com")),
            ("alice", None),
            ("OTHER\\alice", None),
        ] {
            assert_eq!(
                directory.email_of(account).await.unwrap().as_deref(),
                email,
                "{account}"
            );
        }
    }

    #[test]
    fn a_bad_file_is_reported_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.toml");
        std::fs::write(&path, "[acounts]\nx = 1\n").unwrap();
        let err = StaticDirectory::load(&path).unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}

//! Active Directory (or any LDAP directory) behind the `Directory` trait: finds
//! an OS account's email by a search as the server's bind account, over LDAPS
//! or StartTLS (plain only to a directory on this machine).
//!
//! Every value put into the search filter is escaped (RFC 4515), so a name
//! with `*`, `(`, `)`, `\` or NUL cannot widen the search. An account that is
//! disabled (`userAccountControl` bit 2), locked out, expired
//! (`accountExpires`), has no mail, or is not found (or not found once) has
//! no email, alike; so is one of a NetBIOS domain not in `[ldap.domains]`. A small pool of connections is kept,
//! lookups taking them in turn (each handle multiplexes); after a failure the
//! pool is emptied and the next lookups connect again, so a directory that
//! comes back is used without a restart. Every
//! lookup is bounded by the timeout; answers are kept for a short while.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

mod cache;
mod entry;
#[cfg(test)]
mod tests;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tracing::{debug, warn};

use otpgate_actors::directory::{
    AccountInfo, Directory, DirectoryError, DirectoryFuture, DirectoryPerson, Recipient,
};
use otpgate_actors::metrics::{LdapFailure, metrics};

use crate::server::config::{LdapConfig, LdapUrl};
use crate::server::directory::Domains;
use cache::Cache;
use entry::{STANDING, is_closed, is_group, name_by_dn, values};

/// Active Directory's attributes for the principal name and account name.
const UPN: &str = "userPrincipalName";
const SAM: &str = "sAMAccountName";
/// What a root DSE lists among `supportedCapabilities` when it is AD.
const AD_CAPABILITY: &str = "1.2.840.113556.1.4.800";
/// AD's matching rule that follows group membership through nested groups.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";
/// A filter for group entries, AD's and OpenLDAP's.
const GROUP_CLASSES: &str = "(|(objectClass=group)(objectClass=groupOfNames))";
/// How deep nested groups are followed where AD does not do it.
const MAX_NESTING: usize = 8;
/// Entries asked for per page of a search (AD answers at most 1,000).
const PAGE_SIZE: i32 = 500;
/// The most people one approver entry reaches by mail.
const MAX_RECIPIENTS: usize = 200;
/// The result code of a bind with a wrong password.
const INVALID_CREDENTIALS: u32 = 49;

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
    /// The pool: each slot's connection, if one is open.
    connections: Vec<tokio::sync::Mutex<Option<Ldap>>>,
    /// Which slot the next lookup takes.
    next: std::sync::atomic::AtomicUsize,
    /// Answers by account (lower case), and until when they hold.
    emails: Cache<Answer>,
    /// Whom approver entries reach, by entry (lower case).
    recipients: Cache<Option<Vec<Recipient>>>,
    /// Whether the directory is Active Directory, once known.
    active_directory: OnceLock<bool>,
    /// Which domain controller answered last.
    answered: std::sync::atomic::AtomicUsize,
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
            connections: (0..config.pool_size.max(1))
                .map(|_| tokio::sync::Mutex::default())
                .collect(),
            emails: Cache::new(config.cache),
            recipients: Cache::new(config.cache),
            config,
            tls: Arc::new(tls),
            next: std::sync::atomic::AtomicUsize::new(0),
            active_directory: OnceLock::new(),
            answered: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The filter that finds `account`; `None` for an account of a domain
    /// not in `[ldap.domains]`, which is nobody here.
    fn filter(&self, account: &str) -> Option<String> {
        let (name, upn) = self.domains.split(account)?;
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
        Some(filter)
    }

    /// How connections to `url` are made: each domain controller gets its
    /// share of the lookup's time, so that one that does not answer at all
    /// (switched off, behind a firewall) leaves time for the next.
    fn settings(&self, url: &LdapUrl) -> LdapConnSettings {
        let share = u32::try_from(self.config.urls.len())
            .unwrap_or(u32::MAX)
            .max(1);
        LdapConnSettings::new()
            .set_config(Arc::clone(&self.tls))
            .set_starttls(url.starttls)
            .set_conn_timeout(self.config.timeout / share)
    }

    /// A new connection to the first domain controller that answers, tried
    /// from the one that answered last: fail-over without a restart.
    async fn connect(&self) -> Result<Ldap, ldap3::LdapError> {
        let urls = &self.config.urls;
        let first = self.answered.load(std::sync::atomic::Ordering::Relaxed);
        let mut failed = None;
        for at in (0..urls.len()).map(|n| (first + n) % urls.len()) {
            let url = &urls[at];
            match LdapConnAsync::with_settings(self.settings(url), &url.url).await {
                Ok((connection, mut ldap)) => {
                    ldap3::drive!(connection);
                    ldap.with_timeout(self.config.timeout);
                    self.answered
                        .store(at, std::sync::atomic::Ordering::Relaxed);
                    debug!(url = %url.url, "connected to the directory");
                    return Ok(ldap);
                }
                Err(err) => {
                    warn!(url = %url.url, error = %err, "a domain controller did not answer");
                    failed = Some(err);
                }
            }
        }
        Err(failed.unwrap_or(ldap3::LdapError::EndOfStream))
    }

    /// The next slot's open connection, or a new one bound as the server's
    /// account.
    async fn connection(&self) -> Result<Ldap, ldap3::LdapError> {
        let slot = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut open = self.connections[slot % self.connections.len()].lock().await;
        if let Some(ldap) = open.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        let mut ldap = self.connect().await?;
        ldap.simple_bind(&self.config.bind_dn, self.config.bind_password.expose())
            .await?
            .success()?;
        *open = Some(ldap.clone());
        Ok(ldap)
    }

    /// The one entry `filter` finds under the base, with `attributes`: `None`
    /// when it finds none, or more than one (an ambiguous name).
    async fn one(
        &self,
        ldap: &mut Ldap,
        filter: &str,
        attributes: &[&str],
    ) -> Result<Option<SearchEntry>, ldap3::LdapError> {
        let (entries, _) = ldap
            .search(&self.config.base_dn, Scope::Subtree, filter, attributes)
            .await?
            .success()?;
        let mut entries = entries.into_iter();
        Ok(match (entries.next(), entries.next()) {
            (Some(entry), None) => Some(SearchEntry::construct(entry)),
            _ => None,
        })
    }

    /// Every entry `filter` finds under the base, with `attributes`, asked
    /// for in pages (RFC 2696): a directory that caps what one search
    /// answers (Active Directory: 1,000 entries) gives them all, page by page.
    async fn subtree(
        &self,
        ldap: &mut Ldap,
        filter: &str,
        attributes: &[&str],
    ) -> Result<Vec<SearchEntry>, ldap3::LdapError> {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        let mut search = ldap
            .streaming_search_with(
                adapters,
                &self.config.base_dn,
                Scope::Subtree,
                filter,
                attributes.to_vec(),
            )
            .await?;
        let mut entries = Vec::new();
        while let Some(entry) = search.next().await? {
            entries.push(SearchEntry::construct(entry));
        }
        search.finish().await.success()?;
        Ok(entries)
    }

    /// Whether the directory is Active Directory (its root DSE says so), which
    /// follows nested groups in one search; asked once.
    async fn is_active_directory(&self, ldap: &mut Ldap) -> Result<bool, ldap3::LdapError> {
        if let Some(known) = self.active_directory.get() {
            return Ok(*known);
        }
        let (entries, _) = ldap
            .search(
                "",
                Scope::Base,
                "(objectClass=*)",
                ["supportedCapabilities"],
            )
            .await?
            .success()?;
        let known = entries.into_iter().any(|entry| {
            values(&SearchEntry::construct(entry), "supportedCapabilities")
                .iter()
                .any(|oid| oid == AD_CAPABILITY)
        });
        Ok(*self.active_directory.get_or_init(|| known))
    }

    /// The person `account` names, if enabled, and their entry's DN.
    async fn find_person(
        &self,
        account: &str,
    ) -> Result<Option<(String, DirectoryPerson)>, ldap3::LdapError> {
        let mut ldap = self.connection().await?;
        let mail = self.config.mail_attribute.as_str();
        let Some(filter) = self.filter(account) else {
            return Ok(None);
        };
        let attributes = [&[mail, UPN, SAM, "cn"][..], &STANDING].concat();
        let Some(entry) = self.one(&mut ldap, &filter, &attributes).await? else {
            return Ok(None);
        };
        if is_closed(&entry) {
            return Ok(None);
        }
        let groups = self.groups_of(&mut ldap, &entry.dn).await?;
        let canonical = self
            .account_name(&entry)
            .unwrap_or_else(|| self.canonical(account));
        let person = DirectoryPerson {
            name: account.trim().to_owned(),
            aliases: name_by_dn(&entry)
                .filter(|alias| *alias != canonical)
                .into_iter()
                .collect(),
            account: canonical,
            email: self.mail(&entry),
            groups,
        };
        Ok(Some((entry.dn, person)))
    }

    /// The canonical names of the groups entry `dn` is a member of, nested
    /// ones included: by Active Directory's `LDAP_MATCHING_RULE_IN_CHAIN` in
    /// one search where the directory is AD, else group by group through
    /// `member`, at most [`MAX_NESTING`] deep.
    async fn groups_of(&self, ldap: &mut Ldap, dn: &str) -> Result<Vec<String>, ldap3::LdapError> {
        let attributes = [SAM, "cn"];
        let mut names = Vec::new();
        if self.is_active_directory(ldap).await? {
            let filter = format!("(member:{IN_CHAIN}:={})", ldap_escape(dn));
            let entries = self.subtree(ldap, &filter, &attributes).await?;
            names.extend(entries.iter().filter_map(name_by_dn));
            return Ok(names);
        }
        let mut seen = HashSet::new();
        let mut frontier = vec![dn.to_owned()];
        for _ in 0..MAX_NESTING {
            if frontier.is_empty() {
                break;
            }
            let members: String = frontier
                .iter()
                .map(|dn| format!("(member={})", ldap_escape(dn.as_str())))
                .collect();
            let filter = format!("(&{GROUP_CLASSES}(|{members}))");
            let entries = self.subtree(ldap, &filter, &attributes).await?;
            frontier.clear();
            for entry in entries {
                if seen.insert(entry.dn.to_lowercase()) {
                    names.extend(name_by_dn(&entry));
                    frontier.push(entry.dn);
                }
            }
        }
        Ok(names)
    }

    /// Who approver entry `entry` reaches: the enabled account with mail it
    /// names, or the enabled members with mail of the group it names, nested
    /// ones included (at most [`MAX_RECIPIENTS`]).
    async fn find_recipients(
        &self,
        entry: &str,
    ) -> Result<Option<Vec<Recipient>>, ldap3::LdapError> {
        let mut ldap = self.connection().await?;
        let mail = self.config.mail_attribute.as_str();
        let person_attributes =
            [&[mail, UPN, SAM, "objectClass", "member"][..], &STANDING].concat();
        let Some(filter) = self.filter(entry) else {
            return Ok(None);
        };
        if let Some(person) = self.one(&mut ldap, &filter, &person_attributes).await? {
            return Ok(Some(self.recipient(&person).into_iter().collect()));
        }
        let Some((name, _)) = self.domains.split(entry) else {
            return Ok(None);
        };
        let name = ldap_escape(name.as_str());
        let filter = format!("(&{GROUP_CLASSES}(|({SAM}={name})(cn={name})))");
        let Some(group) = self.one(&mut ldap, &filter, &["cn"]).await? else {
            return Ok(None);
        };
        let mut recipients = Vec::new();
        if self.is_active_directory(&mut ldap).await? {
            let filter = format!("(memberOf:{IN_CHAIN}:={})", ldap_escape(group.dn.as_str()));
            let entries = self.subtree(&mut ldap, &filter, &person_attributes).await?;
            recipients.extend(entries.iter().filter_map(|entry| self.recipient(entry)));
        } else {
            let mut seen = HashSet::from([group.dn.to_lowercase()]);
            let mut frontier = vec![group.dn];
            for _ in 0..MAX_NESTING {
                let mut next = Vec::new();
                for dn in frontier {
                    let (entries, _) = ldap
                        .search(&dn, Scope::Base, "(objectClass=*)", ["member"])
                        .await?
                        .success()?;
                    for entry in entries.into_iter().map(SearchEntry::construct) {
                        next.extend(values(&entry, "member").iter().cloned());
                    }
                }
                frontier = Vec::new();
                for dn in next {
                    if !seen.insert(dn.to_lowercase()) || recipients.len() >= MAX_RECIPIENTS {
                        continue;
                    }
                    let (entries, _) = ldap
                        .search(&dn, Scope::Base, "(objectClass=*)", &person_attributes)
                        .await?
                        .success()?;
                    for member in entries.into_iter().map(SearchEntry::construct) {
                        if is_group(&member) {
                            frontier.push(member.dn);
                        } else {
                            recipients.extend(self.recipient(&member));
                        }
                    }
                }
                if frontier.is_empty() {
                    break;
                }
            }
        }
        recipients.truncate(MAX_RECIPIENTS);
        Ok(Some(recipients))
    }

    /// An account entry that may be used, with mail, as someone to tell.
    fn recipient(&self, entry: &SearchEntry) -> Option<Recipient> {
        if is_closed(entry) {
            return None;
        }
        Some(Recipient {
            name: self.account_name(entry)?,
            email: self.mail(entry)?,
        })
    }

    /// An account entry's canonical name: its user principal name, or its
    /// account name.
    fn account_name(&self, entry: &SearchEntry) -> Option<String> {
        let name = values(entry, UPN).first().or(values(entry, SAM).first())?;
        Some(self.canonical(name))
    }

    /// An entry's mail, if it has one.
    fn mail(&self, entry: &SearchEntry) -> Option<String> {
        values(entry, &self.config.mail_attribute)
            .first()
            .map(|mail| mail.trim().to_owned())
            .filter(|mail| !mail.is_empty())
    }

    /// Bound to the timeout, on a connection of its own: whether `password`
    /// is entry `dn`'s (the directory checks it; it is never read).
    async fn password_is(&self, dn: &str, password: &str) -> Result<bool, ldap3::LdapError> {
        let mut ldap = self.connect().await?;
        let bound = ldap.simple_bind(dn, password).await?;
        let _ = ldap.unbind().await;
        match bound.rc {
            0 => Ok(true),
            INVALID_CREDENTIALS => Ok(false),
            _ => bound.success().map(|_| false),
        }
    }

    /// [`Self::find_person`], then [`Self::password_is`].
    async fn check_sign_in(
        &self,
        account: &str,
        password: &str,
    ) -> Result<Option<DirectoryPerson>, ldap3::LdapError> {
        let Some((dn, person)) = self.find_person(account).await? else {
            return Ok(None);
        };
        Ok(self.password_is(&dn, password).await?.then_some(person))
    }

    /// What the directory holds on `account`.
    async fn search(&self, account: &str) -> Result<Option<AccountInfo>, ldap3::LdapError> {
        let mut ldap = self.connection().await?;
        let mail = self.config.mail_attribute.as_str();
        let Some(filter) = self.filter(account) else {
            return Ok(None);
        };
        let Some(entry) = self
            .one(&mut ldap, &filter, &[&[mail][..], &STANDING].concat())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(AccountInfo {
            email: self.mail(&entry),
            disabled: is_closed(&entry),
            groups: self.groups_of(&mut ldap, &entry.dn).await?,
        }))
    }

    /// Looks `account` up, within the timeout; an answer is kept a while.
    async fn lookup(&self, account: &str) -> Result<Answer, DirectoryError> {
        let key = account.trim().to_lowercase();
        if let Some(answer) = self.emails.get(&key) {
            return Ok(answer);
        }
        let found = self.bounded(self.search(account)).await?;
        // Disabled, or without mail: no email, as for an unknown account.
        let answer = found
            .filter(|info| !info.disabled)
            .and_then(|info| info.email);
        self.emails.keep(key, &answer);
        Ok(answer)
    }

    /// [`Self::find_recipients`] within the timeout; an answer is kept a
    /// while (every request to a computer with directory approvers asks).
    async fn reach(&self, entry: &str) -> Result<Option<Vec<Recipient>>, DirectoryError> {
        let key = entry.trim().to_lowercase();
        if let Some(answer) = self.recipients.get(&key) {
            return Ok(answer);
        }
        let answer = self.bounded(self.find_recipients(entry)).await?;
        self.recipients.keep(key, &answer);
        Ok(answer)
    }

    /// `work` within the timeout; a failed connection is dropped.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, ldap3::LdapError>>,
    ) -> Result<T, DirectoryError> {
        let started = std::time::Instant::now();
        let done = tokio::time::timeout(self.config.timeout, work).await;
        metrics()
            .ldap_seconds
            .observe(started.elapsed().as_secs_f64());
        match done {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(err)) => {
                metrics().ldap_failed(LdapFailure::Error);
                warn!(error = %err, "the directory could not be searched");
                self.drop_connection().await;
                Err(DirectoryError::Unavailable(err.to_string()))
            }
            Err(_) => {
                metrics().ldap_failed(LdapFailure::Timeout);
                warn!(timeout = ?self.config.timeout, "the directory did not answer in time");
                self.drop_connection().await;
                Err(DirectoryError::Unavailable("timed out".into()))
            }
        }
    }

    /// Empties the pool after a failure: the next lookups connect afresh
    /// (to a directory that may have come back).
    async fn drop_connection(&self) {
        for slot in &self.connections {
            slot.lock().await.take();
        }
    }
}

impl Directory for LdapDirectory {
    fn email_of<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<String>> {
        Box::pin(self.lookup(account))
    }

    fn describe<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<AccountInfo>> {
        Box::pin(self.bounded(self.search(account)))
    }

    fn canonical(&self, name: &str) -> String {
        self.domains.canonical(name)
    }

    fn sign_in<'a>(
        &'a self,
        account: &'a str,
        password: &'a str,
    ) -> DirectoryFuture<'a, Option<DirectoryPerson>> {
        Box::pin(async move {
            // An empty password would be an anonymous bind, which succeeds.
            if password.is_empty() {
                return Ok(None);
            }
            self.bounded(self.check_sign_in(account, password)).await
        })
    }

    fn person<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<DirectoryPerson>> {
        Box::pin(async move {
            let found = self.bounded(self.find_person(account)).await?;
            Ok(found.map(|(_, person)| person))
        })
    }

    fn recipients<'a>(&'a self, entry: &'a str) -> DirectoryFuture<'a, Option<Vec<Recipient>>> {
        Box::pin(self.reach(entry))
    }
}

//! Who people are: the directory of Active Directory accounts (OS account to
//! email), behind the [`Directory`] trait, and the internal users of the
//! Management Tool with their argon2id password hashes.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::store::StoreError;
use crate::store::record::{Body, Record, SCHEMA_V1};

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The directory could not be reached or read.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

/// A future returned by a [`Directory`].
pub type DirectoryFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, DirectoryError>> + Send + 'a>>;

/// Answers "what is this OS account's email?" (Active Directory over LDAP, or a
/// static file).
pub trait Directory: Send + Sync + 'static {
    /// The email address of OS account `account` (`name`, `DOMAIN\name` or
    /// `name@realm`), if the directory knows one.
    fn email_of<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<String>>;

    /// What the directory holds on `account`, asked afresh (no cached answer):
    /// for an operator checking the directory.
    fn describe<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<AccountInfo>> {
        Box::pin(async move {
            Ok(self.email_of(account).await?.map(|email| AccountInfo {
                email: Some(email),
                disabled: false,
                groups: Vec::new(),
            }))
        })
    }

    /// The one spelling every name of an account or group comes to (lower
    /// case; `name@realm` where the realm is known): how approver entries are
    /// compared with people.
    fn canonical(&self, name: &str) -> String {
        name.trim().to_lowercase()
    }

    /// The person `account` is, if `password` is theirs (checked by the
    /// directory itself), they are enabled, and the directory lets people sign
    /// in; `None` alike for every refusal.
    fn sign_in<'a>(
        &'a self,
        account: &'a str,
        password: &'a str,
    ) -> DirectoryFuture<'a, Option<DirectoryPerson>> {
        let _ = (account, password);
        Box::pin(async { Ok(None) })
    }

    /// The person `account` is, if enabled, without a password: for a link
    /// the server itself signed for them.
    fn person<'a>(&'a self, account: &'a str) -> DirectoryFuture<'a, Option<DirectoryPerson>> {
        let _ = account;
        Box::pin(async { Ok(None) })
    }

    /// Who approver entry `entry` (an account or a group) reaches by mail:
    /// the account, or the group's members (nested ones included) that are
    /// enabled and have mail; `None` when the directory knows no such account
    /// or group.
    fn recipients<'a>(&'a self, entry: &'a str) -> DirectoryFuture<'a, Option<Vec<Recipient>>> {
        let _ = entry;
        Box::pin(async { Ok(None) })
    }
}

/// A person of the directory, as found when they sign in (or are named by a
/// link of theirs): what they approve as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryPerson {
    /// Their account as they named it (`CORP\bob`), for display and the log.
    pub name: String,
    /// Their account in the one spelling every name of it comes to (see
    /// [`Directory::canonical`]).
    pub account: String,
    /// The other canonical names of their entry: their account name at the
    /// realm of its DN, where their principal name has another suffix (an
    /// alternate UPN suffix: `CORP\carol` names the entry whose principal
    /// name is `carol@corp-alt.example`).
    pub aliases: Vec<String>,
    /// Their email address, if the directory has one.
    pub email: Option<String>,
    /// The groups they are a member of, nested ones included, each in its
    /// canonical spelling.
    pub groups: Vec<String>,
}

impl DirectoryPerson {
    /// Whether approver entry `entry`, already canonical, names them (by
    /// any name of their entry) or a group of theirs.
    pub fn is_named_by(&self, entry: &str) -> bool {
        self.account == entry
            || self.aliases.iter().any(|alias| alias == entry)
            || self.groups.iter().any(|group| group == entry)
    }
}

/// Someone told of an access request: their name (what the links in the
/// message act as) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The internal user's login name, or the directory account's canonical
    /// name.
    pub name: String,
    /// Where the message goes.
    pub email: String,
}

/// The one name of the person OS account `os_user` is: a directory account
/// in `directory`'s canonical spelling (`CORP\ALICE`, `Corp\alice` and
/// `alice@corp.example.com` are one person), a local account as it is
/// (local names are case-sensitive).
pub fn person_name(directory: &dyn Directory, os_user: String) -> String {
    if is_directory_name(&os_user) {
        directory.canonical(&os_user)
    } else {
        os_user
    }
}

/// Whether approver entry `name` names a directory account or group
/// (`CORP\bob`, `it-approvers@corp.example.com`) rather than an internal user.
pub fn is_directory_name(name: &str) -> bool {
    name.contains('\\') || name.contains('@')
}

/// What a directory holds on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Its email address, if it has one.
    pub email: Option<String>,
    /// Disabled in the directory.
    pub disabled: bool,
    /// The groups it is a member of.
    pub groups: Vec<String>,
}

/// What an internal user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Configures clients, groups, users and settings; approves any request;
    /// generates OTPs without a request.
    Administrator,
    /// Requests OTPs for themselves and approves where listed as an approver.
    User,
}

/// An internal user of the Management Tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The login name.
    pub login: String,
    /// Where their OTPs and notices go.
    pub email: String,
    /// The argon2id hash of their password, in PHC form.
    pub password_hash: String,
    /// What they may do.
    pub role: Role,
    /// The password was made for them (the first administrator's, printed at
    /// the first start): it opens nothing until they choose their own.
    pub password_change_due: bool,
    /// Disabled by an administrator: their password opens nothing and they
    /// approve nothing, until enabled again.
    pub disabled: bool,
}

impl Record for UserRecord {
    /// Since users can be disabled.
    const VERSION: u8 = 3;

    fn upgrade(body: Body<'_>) -> Result<Self, StoreError> {
        match body.version {
            2 => Ok(body.decode::<UserRecordV2>()?.into()),
            SCHEMA_V1 => Ok(body.decode::<UserRecordV1>()?.into()),
            _ => Err(body.unknown()),
        }
    }
}

/// An internal user as stored before [`UserRecord::password_change_due`];
/// read and upgraded.
#[derive(Debug, Clone, Deserialize)]
struct UserRecordV1 {
    login: String,
    email: String,
    password_hash: String,
    role: Role,
}

impl From<UserRecordV1> for UserRecord {
    fn from(old: UserRecordV1) -> Self {
        UserRecordV2 {
            login: old.login,
            email: old.email,
            password_hash: old.password_hash,
            role: old.role,
            password_change_due: false,
        }
        .into()
    }
}

/// An internal user as stored before [`UserRecord::disabled`]; read and
/// upgraded.
#[derive(Debug, Clone, Deserialize)]
struct UserRecordV2 {
    login: String,
    email: String,
    password_hash: String,
    role: Role,
    password_change_due: bool,
}

impl From<UserRecordV2> for UserRecord {
    fn from(old: UserRecordV2) -> Self {
        Self {
            login: old.login,
            email: old.email,
            password_hash: old.password_hash,
            role: old.role,
            password_change_due: old.password_change_due,
            disabled: false,
        }
    }
}

/// A hash checked when the login name is unknown, so that a wrong login name
/// takes as long as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_password("otpgate dummy password"));

/// Makes the dummy hash now (an argon2 hash: slow), so that the first unknown
/// login is not slower than the others.
pub fn prepare() {
    LazyLock::force(&DUMMY_HASH);
}

/// Hashes `password` with argon2id and a random salt. Slow on purpose: call it
/// off the async runtime.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with its default parameters and a random salt cannot fail")
        .to_string()
}

/// Whether `password` is `user`'s; `None` (an unknown login name) costs the same
/// and is never right, nor is a disabled user's. Slow on purpose: call it off
/// the async runtime.
pub fn verify_password(user: Option<&UserRecord>, password: &str) -> bool {
    let hash = user.map_or(DUMMY_HASH.as_str(), |user| user.password_hash.as_str());
    let Ok(hash) = PasswordHash::new(hash) else {
        return false;
    };
    let right = Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok();
    right && user.is_some_and(|user| !user.disabled)
}

/// [`verify_password`] on a blocking thread (argon2 takes milliseconds): what
/// the actors and the admin handler call.
pub async fn check_password(user: Option<UserRecord>, password: Zeroizing<String>) -> bool {
    tokio::task::spawn_blocking(move || verify_password(user.as_ref(), &password))
        .await
        .unwrap_or(false)
}

/// What a login name and password come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordCheck {
    /// Wrong password, unknown or disabled user: alike.
    Refused,
    /// The right password, but one made for them (the first administrator's)
    /// and still to be changed: it opens nothing yet.
    ChangeDue,
    /// The right password: the user.
    Right(UserRecord),
}

/// Checks internal user `user`'s `password` (see [`PasswordCheck`]), off the
/// async runtime: the one check behind every use of a password.
pub async fn check_login(user: Option<UserRecord>, password: Zeroizing<String>) -> PasswordCheck {
    let right = check_password(user.clone(), password).await;
    match user {
        Some(user) if right && user.password_change_due => PasswordCheck::ChangeDue,
        Some(user) if right => PasswordCheck::Right(user),
        _ => PasswordCheck::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_for_their_user() {
        let user = UserRecord {
            login: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: hash_password("correct horse"),
            role: Role::User,
            password_change_due: false,
            disabled: false,
        };
        assert!(user.password_hash.starts_with("$argon2id$"));
        assert!(verify_password(Some(&user), "correct horse"));
        assert!(!verify_password(Some(&user), "correct horse "));
        assert!(!verify_password(None, "otpgate dummy password"));
        let disabled = UserRecord {
            disabled: true,
            ..user
        };
        assert!(!verify_password(Some(&disabled), "correct horse"));
    }
}

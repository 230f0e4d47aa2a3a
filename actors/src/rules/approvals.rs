//! Who may decide an access request and generate an OTP, who is told of a
//! request, and which ways of asking a computer's options enable.

use crate::directory::{DirectoryPerson, Recipient, Role, UserRecord, is_directory_name};
use crate::login::RequestMode;
use crate::settings::Effective;

/// Who decides an access request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    /// An internal user, by login name.
    User(String),
    /// A person of the directory, signed in with their directory password (or
    /// holding a link the server signed for them).
    Person(DirectoryPerson),
}

impl Decider {
    /// Their name, as the request records who decided it.
    pub fn name(&self) -> &str {
        match self {
            Self::User(login) => login,
            Self::Person(person) => &person.name,
        }
    }
}

/// Whether `user` may decide the access requests of a computer whose options
/// are `options`: administrators always, others when they are its approvers.
pub fn may_decide(user: Option<&UserRecord>, options: &Effective) -> bool {
    user.is_some_and(|user| {
        !user.disabled
            && (user.role == Role::Administrator || options.approvers.contains(&user.login))
    })
}

/// Whether directory person `person` may decide the access requests of a
/// computer whose options are `options`: when one of its approver entries
/// names them or a group of theirs, compared in the spelling `canonical`
/// gives.
pub fn person_may_decide(
    person: &DirectoryPerson,
    options: &Effective,
    canonical: impl Fn(&str) -> String,
) -> bool {
    options
        .approvers
        .iter()
        .filter(|entry| is_directory_name(entry))
        .any(|entry| person.is_named_by(&canonical(entry)))
}

/// Whether `user` may generate an OTP without a request: administrators only.
pub fn may_generate(user: Option<&UserRecord>) -> bool {
    user.is_some_and(|user| !user.disabled && user.role == Role::Administrator)
}

/// Who is told of a computer's access requests: its internal approvers and
/// the people its directory entries reach (`found`), once each; or the
/// administrators when that is nobody. Disabled users never.
pub fn approvers<'u>(
    users: impl IntoIterator<Item = &'u UserRecord> + Clone,
    options: &Effective,
    found: Vec<Recipient>,
) -> Vec<Recipient> {
    let recipient = |user: &UserRecord| Recipient {
        name: user.login.clone(),
        email: user.email.clone(),
    };
    let mut named: Vec<Recipient> = users
        .clone()
        .into_iter()
        .filter(|user| !user.disabled && options.approvers.contains(&user.login))
        .map(recipient)
        .collect();
    for person in found {
        if !named.iter().any(|known| known.name == person.name) {
            named.push(person);
        }
    }
    if !named.is_empty() {
        return named;
    }
    users
        .into_iter()
        .filter(|user| !user.disabled && user.role == Role::Administrator)
        .map(recipient)
        .collect()
}

/// Whether a computer with `options` takes requests in `mode`: by email only
/// when neither auto-send option is on; Active Directory and internal users only
/// when their option is; emergency access always.
pub fn enabled(mode: &RequestMode, options: &Effective) -> bool {
    match mode {
        RequestMode::Email(_) => !options.auto_directory && !options.auto_internal,
        RequestMode::Directory => options.auto_directory,
        RequestMode::Internal { .. } => options.auto_internal,
        RequestMode::Emergency(_) => true,
    }
}

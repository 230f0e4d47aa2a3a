//! Internal users of the Management Tool: listed, added and changed by
//! administrators; anyone's own password changed by themselves. The last
//! enabled administrator stays one.

use std::ops::Bound;

use zeroize::Zeroizing;

use otpgate_actors::audit::Action;
use otpgate_actors::directory::{Role, UserRecord, check_password, hash_password};
use otpgate_actors::names::{is_email_address, is_login};
use otpgate_protocol::admin::{AdminErrorCode, Page, PageRequest, RoleView, UserView};
use otpgate_protocol::login::Secret;

use super::{AdminService, Answer, Identity, Principal, refuse};
use crate::server::{convert, pages};

/// An internal user to add.
pub struct NewUser {
    /// The login name.
    pub login: String,
    /// The email address.
    pub email: String,
    /// Administrator or user.
    pub role: RoleView,
    /// The password.
    pub password: Secret,
}

/// Changes to an internal user; what is `None` stays.
#[derive(Default)]
pub struct UserChange {
    /// A new email address.
    pub email: Option<String>,
    /// A new role.
    pub role: Option<RoleView>,
    /// A new password.
    pub password: Option<Secret>,
    /// Disabled (their password opens nothing, they approve nothing), or
    /// enabled again.
    pub disabled: Option<bool>,
}

impl AdminService {
    /// Internal users, by login name.
    pub fn users(&self, who: &Principal, page: &PageRequest) -> Answer<Page<UserView>> {
        self.require_admin(who)?;
        let policy = self.policy.snapshot();
        let after = page
            .after
            .as_deref()
            .map(|after| String::from_utf8_lossy(after).into_owned());
        let users = policy
            .users
            .range::<String, _>((
                after.map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ))
            .map(|(login, user)| Ok((login.as_bytes().to_vec(), user)));
        Ok(pages::page(
            Box::new(users),
            page,
            |_| true,
            |user| UserView {
                login: user.login.clone(),
                email: user.email.clone(),
                role: convert::role_view(user.role),
                password_change_due: user.password_change_due,
                disabled: user.disabled,
            },
        )?)
    }

    /// The internal user `who` is, if they are one.
    pub fn own_user(&self, who: &Principal) -> Option<UserView> {
        let Identity::User(login) = &who.identity else {
            return None;
        };
        let policy = self.policy.snapshot();
        policy.user(login).map(|user| UserView {
            login: user.login.clone(),
            email: user.email.clone(),
            role: convert::role_view(user.role),
            password_change_due: user.password_change_due,
            disabled: user.disabled,
        })
    }

    /// Adds internal user `user`.
    pub async fn add_user(&self, who: &Principal, user: NewUser) -> Answer<()> {
        self.require_admin(who)?;
        let NewUser {
            login,
            email,
            role,
            password,
        } = user;
        if let Some(problem) = user_problem(&login, &email, Some(&password.0)) {
            return refuse(AdminErrorCode::Invalid, problem);
        }
        let password_hash = hash_off_runtime(Zeroizing::new(password.0)).await;
        let mut edit = self.policy.edit().await?;
        if edit.current().user(&login).is_some() {
            return refuse(AdminErrorCode::Conflict, format!("user {login:?} exists"));
        }
        edit.put_user(UserRecord {
            login: login.clone(),
            email,
            password_hash,
            role: convert::role(role),
            password_change_due: false,
            disabled: false,
        });
        let entry = self.entry(who, Action::Configure, None, format!("user {login} added"));
        edit.commit(&entry).await?;
        Ok(())
    }

    /// Changes internal user `login` as `change` says: an administrator may
    /// change anything of anyone; everyone may change their own password.
    pub async fn set_user(&self, who: &Principal, login: &str, change: UserChange) -> Answer<()> {
        let own_password = matches!(&who.identity, Identity::User(own) if own == login)
            && change.email.is_none()
            && change.role.is_none()
            && change.disabled.is_none();
        if !own_password {
            self.require_admin(who)?;
        }
        // Held while the password hashes: two changes of one user never race.
        let mut edit = self.policy.edit().await?;
        let Some(mut user) = edit.current().user(login).cloned() else {
            return refuse(AdminErrorCode::NotFound, format!("no user {login:?}"));
        };
        let had = user.email.clone();
        let email = change.email.as_deref().unwrap_or(&user.email).to_owned();
        let password = change.password.as_ref().map(|p| p.0.as_str());
        if let Some(problem) = user_problem(login, &email, password) {
            return refuse(AdminErrorCode::Invalid, problem);
        }
        user.email = email;
        if let Some(role) = change.role {
            user.role = convert::role(role);
        }
        if let Some(disabled) = change.disabled {
            user.disabled = disabled;
        }
        let admins_left = edit
            .current()
            .users
            .values()
            .filter(|other| other.login != login)
            .chain(std::iter::once(&user))
            .any(|u| u.role == Role::Administrator && !u.disabled);
        if !admins_left {
            return refuse(
                AdminErrorCode::Conflict,
                "the last administrator stays an enabled administrator",
            );
        }
        if let Some(password) = change.password {
            user.password_hash = hash_off_runtime(Zeroizing::new(password.0)).await;
            if user.password_change_due {
                // Only the first administrator's is made for them; the file
                // holding it now holds nothing that opens anything.
                user.password_change_due = false;
                self.remove_initial_password();
            }
        }
        // Disabled: their offline codes go with them, those issued to the
        // address they had and to the one they have now.
        let disabled = (change.disabled == Some(true)).then(|| [had, user.email.clone()]);
        edit.put_user(user);
        let entry = self.entry(
            who,
            Action::Configure,
            None,
            format!("user {login} changed"),
        );
        edit.commit(&entry).await?;
        for email in disabled.iter().flatten() {
            self.void_offline_of(who, email).await?;
        }
        Ok(())
    }

    /// Changes `who`'s own password to `new`, once `current` is shown to be
    /// theirs.
    pub async fn change_own_password(
        &self,
        who: &Principal,
        current: Zeroizing<String>,
        new: Secret,
    ) -> Answer<()> {
        let Identity::User(login) = &who.identity else {
            return refuse(
                AdminErrorCode::Forbidden,
                "only internal users have a password here",
            );
        };
        let user = self.policy.snapshot().user(login).cloned();
        if !check_password(user, current).await {
            return refuse(
                AdminErrorCode::Invalid,
                "The current password is not right.",
            );
        }
        let change = UserChange {
            password: Some(new),
            ..UserChange::default()
        };
        self.set_user(who, login, change).await
    }

    /// Removes the file of the first administrator's password, if it is there.
    fn remove_initial_password(&self) {
        let path = &self.initial_password_file;
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(
                error = %err,
                path = %path.display(),
                "cannot remove the first password's file"
            ),
        }
    }
}

/// What is wrong with a user's login name, email or new password, if anything.
fn user_problem(login: &str, email: &str, password: Option<&str>) -> Option<String> {
    if !is_login(login) {
        return Some("a login name must be 1 to 64 characters without spaces".into());
    }
    if !is_email_address(email) {
        return Some(format!("{email:?} is not an email address"));
    }
    if password.is_some_and(|p| p.chars().count() < 12) {
        return Some("a password must have at least 12 characters".into());
    }
    None
}

/// Hashes `password` with argon2id on a blocking thread.
pub(crate) async fn hash_off_runtime(password: Zeroizing<String>) -> String {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .expect("hashing a password does not panic")
}

//! Who people are: signing in with a password (an internal user's, checked
//! against its hash; a directory account's, by a bind as them), audited and
//! counted alike whatever went wrong; and what the directory says of an
//! account (`directory test`).

use zeroize::Zeroizing;

use otpgate_actors::audit::{Action, Who};
use otpgate_actors::directory::{PasswordCheck, check_login, is_directory_name};
use otpgate_actors::names::is_plain_text;
use otpgate_protocol::admin::{AdminErrorCode, DirectoryView};

use super::{
    AdminService, Answer, Credential, Identity, Principal, ServiceError, Via, refusal, refuse,
};

/// The longest comment an approver or administrator may give.
pub const MAX_COMMENT: usize = 500;

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// A wrong password, or no such user, or a disabled one: alike.
    #[error("wrong login name or password")]
    Wrong,
    /// An internal user's right password, made for them at the first start
    /// and still to be changed: it opens nothing yet.
    #[error(
        "the password of {0} was made at the first start and opens nothing until they \
         choose their own: otpgate admin users set {0} --password-stdin"
    )]
    ChangeDue(String),
    /// A directory account, but the directory cannot be reached.
    #[error("the directory cannot be reached; try again shortly")]
    Unavailable,
    /// A directory account with the right password that approves no
    /// computer: the Management Tool has nothing for them.
    #[error(
        "{0} approves no client computer, so there is nothing here for them: only \
         approvers and administrators sign in"
    )]
    ApprovesNothing(String),
    /// The attempt could not be audited.
    #[error(transparent)]
    Failed(#[from] ServiceError),
}

impl From<SignInError> for ServiceError {
    fn from(err: SignInError) -> Self {
        match err {
            SignInError::Failed(failed) => failed,
            SignInError::Unavailable => refusal(AdminErrorCode::Unavailable, err.to_string()),
            refused => refusal(AdminErrorCode::Forbidden, refused.to_string()),
        }
    }
}

impl AdminService {
    /// Checks `login`'s `password`: an internal user's by its hash; a
    /// directory account's (`CORP\bob`, `bob@corp.example.com`, when no
    /// internal user has that name) by the directory. Who they are, asking
    /// `via`. A refusal is in the audit log, and so is a web sign-in (a
    /// session starts; on the socket the act that follows is audited). The one
    /// check behind the web sign-in and the admin socket's `--as`.
    pub async fn sign_in(
        &self,
        login: &str,
        password: Zeroizing<String>,
        via: Via,
    ) -> Result<Principal, SignInError> {
        let checked = self.check_password(login, password, via).await;
        let asker = Principal {
            identity: Identity::User(login.to_owned()),
            via,
            credential: None,
        };
        let outcome = match &checked {
            Ok(_) => "signed in",
            Err(SignInError::Unavailable) => "refused: the directory cannot be reached",
            Err(SignInError::ApprovesNothing(_)) => "refused: approves no client computer",
            Err(_) => "refused",
        };
        let mut entry = self.entry(&asker, Action::SignIn, None, outcome.into());
        if let Via::Web { address } = via {
            entry.who = Who::Web {
                login: login.to_owned(),
                address,
            };
        }
        if checked.is_err() || matches!(via, Via::Web { .. }) {
            self.store
                .append_audit(&entry)
                .map_err(ServiceError::from)?;
            self.store.flush().await.map_err(ServiceError::from)?;
        }
        checked
    }

    /// [`AdminService::sign_in`]'s check, unaudited.
    pub(super) async fn check_password(
        &self,
        login: &str,
        password: Zeroizing<String>,
        via: Via,
    ) -> Result<Principal, SignInError> {
        let user = self.policy.snapshot().user(login).cloned();
        if user.is_none() && is_directory_name(login) {
            let person = match self.directory.sign_in(login, &password).await {
                Ok(Some(person)) => Principal {
                    identity: Identity::Person(person),
                    via,
                    credential: None,
                },
                Ok(None) => return Err(SignInError::Wrong),
                Err(_) => return Err(SignInError::Unavailable),
            };
            return if self.approves_any(&person)? {
                Ok(person)
            } else {
                Err(SignInError::ApprovesNothing(person.name().to_owned()))
            };
        }
        match check_login(user, password).await {
            PasswordCheck::Refused => Err(SignInError::Wrong),
            PasswordCheck::ChangeDue => Err(SignInError::ChangeDue(login.to_owned())),
            PasswordCheck::Right(user) => Ok(Principal {
                credential: Some(Credential::of(&user)),
                identity: Identity::User(user.login),
                via,
            }),
        }
    }

    /// Who the approver named by a link the server signed is: the internal
    /// user, or the directory person (found again, so their groups are
    /// today's), asking `via`.
    pub(super) async fn approver_named(&self, name: &str, via: Via) -> Answer<Principal> {
        if self.policy.snapshot().user(name).is_some() || !is_directory_name(name) {
            return Ok(Principal {
                identity: Identity::User(name.to_owned()),
                via,
                credential: None,
            });
        }
        match self.directory.person(name).await {
            Ok(Some(person)) => Ok(Principal {
                identity: Identity::Person(person),
                via,
                credential: None,
            }),
            Ok(None) => refuse(
                AdminErrorCode::Forbidden,
                "this link's approver is no longer in the directory",
            ),
            Err(_) => Err(directory_unavailable()),
        }
    }

    /// One sign-in allowance per account however it is spelled: the
    /// directory's canonical spelling of a directory account.
    pub fn account_key(&self, login: &str) -> String {
        if is_directory_name(login) {
            self.directory.canonical(login)
        } else {
            login.to_owned()
        }
    }

    /// What the directory holds on `account`, asked afresh, and how long it took.
    pub async fn directory_test(&self, who: &Principal, account: &str) -> Answer<DirectoryView> {
        self.require_admin(who)?;
        let started = std::time::Instant::now();
        let answer = self.directory.describe(account).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (info, error) = match answer {
            Ok(info) => (info, None),
            Err(err) => (None, Some(err.to_string())),
        };
        Ok(DirectoryView {
            found: info.is_some(),
            email: info.as_ref().and_then(|i| i.email.clone()),
            disabled: info.as_ref().is_some_and(|i| i.disabled),
            groups: info.map(|i| i.groups).unwrap_or_default(),
            error,
            micros,
        })
    }
}

/// The refusal when the directory cannot be reached.
fn directory_unavailable() -> ServiceError {
    refusal(
        AdminErrorCode::Unavailable,
        "the directory cannot be reached; try again shortly",
    )
}

/// Refuses a comment that is too long or holds control characters.
pub(super) fn check_comment(comment: Option<&str>) -> Answer<()> {
    match comment {
        Some(comment) if !is_plain_text(comment, MAX_COMMENT) => refuse(
            AdminErrorCode::Invalid,
            format!("a comment must be at most {MAX_COMMENT} characters on one line"),
        ),
        _ => Ok(()),
    }
}

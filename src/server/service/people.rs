//! Who people are: signing in with a password (an internal user's, checked
//! against its hash; a directory account's, by a bind as them), audited and
//! counted alike whatever went wrong; and what the directory says of an
//! account (`directory test`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use zeroize::Zeroizing;

use otpgate_actors::Timestamp;
use otpgate_actors::audit::{Action, Who};
use otpgate_actors::directory::{PasswordCheck, check_login, is_directory_name};
use otpgate_actors::names::is_plain_text;
use otpgate_protocol::admin::{AdminErrorCode, DirectoryView};

use super::{
    AdminService, Answer, Credential, Identity, Principal, ServiceError, Via, refusal, refuse,
};

/// Wrong directory passwords given through otpgate within this window...
const WRONG_BIND_WINDOW: Duration = Duration::from_secs(30 * 60);
/// ...after which no more are tried: fewer than Active Directory's usual
/// lockout thresholds (5 to 10 within 30 minutes), so that a stranger
/// guessing at the sign-in page cannot lock a person out of their account.
const MAX_WRONG_BINDS: usize = 3;

/// Tries of directory passwords lately, per account (in its canonical
/// spelling, so every spelling counts alike). A try is counted before the
/// directory is asked, so that tries sent at once cannot all pass the limit,
/// and forgotten when it was right (the directory resets its own count then)
/// or never reached the directory.
#[derive(Debug, Default)]
pub struct WrongBinds(Mutex<HashMap<String, VecDeque<Timestamp>>>);

impl WrongBinds {
    /// Takes one try for `account` at `now`; or, when it has had its wrong
    /// ones within the window, how long until one may be tried again.
    fn take(&self, account: &str, now: Timestamp) -> Result<(), Duration> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Past many accounts at once (a sweep), the oldest news goes first.
        if all.len() >= 100_000 && !all.contains_key(account) {
            all.clear();
        }
        let tries = all.entry(account.to_owned()).or_default();
        let since = now.before(WRONG_BIND_WINDOW);
        while tries.front().is_some_and(|&at| at <= since) {
            tries.pop_front();
        }
        if let Some(&oldest) = tries.front()
            && tries.len() >= MAX_WRONG_BINDS
        {
            let passed = now.unix_millis().saturating_sub(oldest.unix_millis());
            return Err(WRONG_BIND_WINDOW.saturating_sub(Duration::from_millis(passed)));
        }
        tries.push_back(now);
        Ok(())
    }

    /// The try taken at `at` for `account` does not count: it was right, or
    /// never reached the directory. A right one forgets the wrong ones too.
    fn forget(&self, account: &str, at: Timestamp, right: bool) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if right {
            all.remove(account);
        } else if let Some(tries) = all.get_mut(account)
            && let Some(place) = tries.iter().rposition(|&t| t == at)
        {
            tries.remove(place);
        }
    }
}

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
    /// A directory account given too many wrong passwords lately: no more
    /// are tried against the directory for a while, so that its own lockout
    /// is never what stops the person.
    #[error("too many wrong passwords for this account lately; try again in {minutes} minutes")]
    TooManyWrong {
        /// Minutes until one more is tried.
        minutes: u64,
    },
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
            SignInError::Unavailable | SignInError::TooManyWrong { .. } => {
                refusal(AdminErrorCode::Unavailable, err.to_string())
            }
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
            Err(SignInError::TooManyWrong { .. }) => "refused: too many wrong passwords lately",
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
            // An empty password is never sent: it would be an anonymous bind.
            if password.is_empty() {
                return Err(SignInError::Wrong);
            }
            let account = self.directory.canonical(login);
            let now = self.clock.now();
            if let Err(wait) = self.wrong_binds.take(&account, now) {
                return Err(SignInError::TooManyWrong {
                    minutes: wait.as_secs().div_ceil(60).max(1),
                });
            }
            let person = match self.directory.sign_in(login, &password).await {
                Ok(Some(person)) => {
                    self.wrong_binds.forget(&account, now, true);
                    Principal {
                        identity: Identity::Person(person),
                        via,
                        credential: None,
                    }
                }
                Ok(None) => return Err(SignInError::Wrong),
                Err(_) => {
                    self.wrong_binds.forget(&account, now, false);
                    return Err(SignInError::Unavailable);
                }
            };
            return if self.approves_any(&person).await? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_wrong_directory_passwords_stop_the_tries_for_a_while() {
        let wrong = WrongBinds::default();
        let t0 = Timestamp::from_unix_millis(1_800_000_000_000);
        let bob = "bob@corp.example.com";
        for _ in 0..MAX_WRONG_BINDS {
            assert_eq!(wrong.take(bob, t0), Ok(()));
        }
        // Tries sent at once are counted as they are taken: the next waits.
        let wait = wrong
            .take(bob, t0.after(Duration::from_secs(60)))
            .unwrap_err();
        assert_eq!(wait, WRONG_BIND_WINDOW - Duration::from_secs(60));
        assert_eq!(
            wrong.take("alice@corp.example.com", t0),
            Ok(()),
            "per account"
        );
        // Once the window has passed, tried again.
        assert_eq!(wrong.take(bob, t0.after(WRONG_BIND_WINDOW)), Ok(()));
        // A right one forgets the wrong ones; one that never reached the
        // directory is given back alone.
        let later = t0.after(WRONG_BIND_WINDOW * 3);
        assert_eq!(wrong.take(bob, later), Ok(()));
        assert_eq!(wrong.take(bob, later), Ok(()));
        wrong.forget(bob, later, false);
        assert_eq!(wrong.take(bob, later), Ok(()));
        assert_eq!(wrong.take(bob, later), Ok(()));
        assert!(wrong.take(bob, later).is_err(), "three counted");
        wrong.forget(bob, later, true);
        assert_eq!(wrong.take(bob, later), Ok(()));
    }
}

//! The login prompt's calls: status, a request for an OTP in each mode,
//! resend, verify, logout, exempt logins.

use std::sync::Arc;

use crate::audit::Action;
use crate::clock::Timestamp;
use crate::directory::{PasswordCheck, check_login};
use crate::login::{LoginRequest, LoginResponse, Logout, RequestMode, Requested, Verdict};
use crate::metrics::{RequestKind, Tally};
use crate::names;
use crate::otp::{Code, Origin};
use crate::policy;
use crate::rules::{self, Access, Admit, Ask, Effect, LimitKey, Policy, Turn, Typed};
use crate::session::SessionEnd;

use super::{ComputerState, Found, Result, service_name};

impl ComputerState {
    pub(super) async fn login(
        &mut self,
        os_user: &str,
        call: LoginRequest,
        found: Found,
    ) -> Result<LoginResponse> {
        let snapshot = self.svc.policy.snapshot();
        let settings = &snapshot.settings;
        if !names::is_os_account(os_user) {
            let (answer, effects) = rules::invalid_caller(&self.id, &call);
            self.apply(settings, effects).await?;
            self.commit().await?;
            return Ok(answer);
        }
        let options = snapshot.effective(&self.record);
        let policy = Policy {
            settings,
            options: &options,
        };
        let (id, keys, now) = (self.id.clone(), Arc::clone(&self.svc.keys), self.now());
        let who = rules::person(os_user, &id);
        let mut effects = Vec::new();
        self.logins.expire_due(&id, os_user, now, &mut effects);
        let mut started = None;
        let answer = match call {
            LoginRequest::Status => {
                LoginResponse::Status(self.logins.prompt_state(policy, os_user, now))
            }
            LoginRequest::Request(mode) => {
                let kind = match &mode {
                    RequestMode::Email(_) => RequestKind::Email,
                    RequestMode::Directory => RequestKind::Directory,
                    RequestMode::Internal { .. } => RequestKind::Internal,
                    RequestMode::Emergency(_) => RequestKind::Emergency,
                };
                let requested = self
                    .request(&snapshot, policy, os_user, mode, found, &mut effects)
                    .await?;
                let outcome = rules::request_outcome(&requested);
                effects.push(Effect::Tally(Tally::Request(kind, outcome)));
                effects.push(Effect::audit(
                    &who,
                    Action::Request,
                    &rules::describe(&requested),
                ));
                LoginResponse::Requested(requested)
            }
            LoginRequest::Resend => {
                let turn = Turn {
                    computer: &id,
                    policy,
                    keys: &keys,
                    now,
                };
                let requested = self.logins.resend(&turn, os_user, &mut effects);
                let outcome = rules::request_outcome(&requested);
                effects.push(Effect::Tally(Tally::Request(RequestKind::Resend, outcome)));
                effects.push(Effect::audit(
                    &who,
                    Action::Resend,
                    &rules::describe(&requested),
                ));
                LoginResponse::Requested(requested)
            }
            LoginRequest::Verify { email, code } => {
                let failures = self
                    .failures([
                        LimitKey::Person(id.clone(), os_user.to_owned()),
                        LimitKey::Computer(id.clone()),
                        LimitKey::Email(email.clone()),
                    ])
                    .await?;
                let session = self.svc.store.next_id().await?;
                let turn = Turn {
                    computer: &id,
                    policy,
                    keys: &keys,
                    now,
                };
                let typed = Typed {
                    os_user,
                    email: &email,
                    code: &code,
                };
                let verdict = self
                    .logins
                    .verify(&turn, &failures, session, typed, &mut effects);
                if let Verdict::Allow { session } = verdict {
                    started = Some((session, email));
                }
                LoginResponse::Verified(verdict)
            }
            LoginRequest::Logout { session } => {
                let ending: Vec<u64> = self
                    .sessions
                    .iter()
                    .filter(|(id, s)| {
                        s.os_user == os_user && session.is_none_or(|want| want == **id)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ending {
                    self.end_session(*id, now, SessionEnd::Logout)?;
                }
                LoginResponse::LoggedOut(if ending.is_empty() {
                    Logout::NothingOpen
                } else {
                    Logout::Ended
                })
            }
            LoginRequest::Exempt { service } => {
                let service = service_name(service);
                effects.push(Effect::audit(
                    &who,
                    Action::Exempt,
                    &format!("logged in without an OTP (exempt group) at {service}"),
                ));
                LoginResponse::Noted
            }
        };
        self.apply(settings, effects).await?;
        if let Some((session, email)) = started {
            self.start_session(session, os_user, &email, self.now())?;
        }
        self.commit().await?;
        Ok(answer)
    }

    /// A request for an OTP: admitted by the rules, then looked up as its mode
    /// needs (directory, password), then issued or sent to the approvers.
    pub(super) async fn request(
        &mut self,
        snapshot: &policy::Snapshot,
        policy: Policy<'_>,
        os_user: &str,
        mode: RequestMode,
        found: Found,
        effects: &mut Vec<Effect>,
    ) -> Result<Requested> {
        let (id, keys, now) = (self.id.clone(), Arc::clone(&self.svc.keys), self.now());
        let turn = Turn {
            computer: &id,
            policy,
            keys: &keys,
            now,
        };
        let person = LimitKey::Person(id.clone(), os_user.to_owned());
        let computer = LimitKey::Computer(id.clone());
        let failures = self
            .failures([
                person.clone(),
                computer.clone(),
                LimitKey::NewOnComputer(id.clone()),
            ])
            .await?;
        let enabled = rules::enabled(&mode, policy.options);
        match self
            .logins
            .admit(&turn, enabled, &failures, os_user, effects)
        {
            Admit::Answer(answer) => return Ok(answer),
            Admit::New => {}
        }
        let (email, access) = match mode {
            RequestMode::Email(email) => (email, Access::Normal),
            RequestMode::Emergency(email) => (email, Access::Emergency),
            RequestMode::Directory => {
                let email = match found.requester {
                    Some(email) => email,
                    // The options changed since the lookup was decided.
                    None => self.svc.directory.email_of(os_user).await,
                };
                return Ok(match email {
                    Ok(Some(email)) => self.send_new(policy, os_user, &email, effects),
                    Ok(None) => {
                        effects.push(Effect::Count(person));
                        effects.push(Effect::Count(computer));
                        Requested::Refuse
                    }
                    // Not the person's failure: said, logged, audited, not
                    // counted against them.
                    Err(err) => {
                        tracing::warn!(computer = %id, error = %err, "directory lookup failed");
                        Requested::DirectoryUnavailable
                    }
                });
            }
            RequestMode::Internal { login, .. } if !names::is_login(&login) => {
                effects.push(Effect::Count(person));
                effects.push(Effect::Count(computer));
                return Ok(Requested::Refuse);
            }
            RequestMode::Internal { login, password } => {
                let account = LimitKey::Login(login.clone());
                let failures = self.failures([account.clone()]).await?;
                if let Some((retry_after, _)) = rules::throttled(&failures, policy.settings, now) {
                    return Ok(Requested::Throttle { retry_after });
                }
                let user = snapshot.user(&login).cloned();
                return Ok(match check_login(user, password).await {
                    PasswordCheck::ChangeDue => {
                        // Right, but a password made for them: not a guess,
                        // so not counted; it opens nothing until changed.
                        effects.push(Effect::audit(
                            &rules::person(os_user, &self.id),
                            Action::Request,
                            &format!("refused: {login} must change the password first"),
                        ));
                        Requested::Refuse
                    }
                    PasswordCheck::Right(user) => {
                        self.send_new(policy, os_user, &user.email, effects)
                    }
                    PasswordCheck::Refused => {
                        effects.push(Effect::Count(person));
                        effects.push(Effect::Count(computer));
                        effects.push(Effect::Count(account));
                        Requested::Refuse
                    }
                });
            }
        };
        let approvers = rules::approvers(snapshot.users.values(), policy.options, found.recipients);
        let request = self.svc.store.next_id().await?;
        let ask = Ask {
            id: request,
            os_user,
            email: &email,
            access,
        };
        Ok(self.logins.open_request(&turn, &approvers, ask, effects))
    }

    /// A new OTP the person asked for, sent at once.
    pub(super) fn send_new(
        &mut self,
        policy: Policy<'_>,
        os_user: &str,
        email: &str,
        effects: &mut Vec<Effect>,
    ) -> Requested {
        let valid_until = self.issue(policy, os_user, email, Origin::AutoSend, effects);
        // The address came from the directory or the user list, not from the
        // person: the client is shown only enough of it to recognise.
        Requested::Send {
            to: names::masked(email),
            valid_until,
        }
    }

    /// Issues a fresh OTP for `os_user` and `email` (see [`Logins::issue`]).
    pub(super) fn issue(
        &mut self,
        policy: Policy<'_>,
        os_user: &str,
        email: &str,
        origin: Origin,
        effects: &mut Vec<Effect>,
    ) -> Timestamp {
        let code = Code::generate(policy.settings.otp_length);
        let turn = Turn {
            computer: &self.id,
            policy,
            keys: &self.svc.keys,
            now: self.now(),
        };
        self.logins
            .issue(&turn, os_user, email, &code, origin, effects)
    }
}

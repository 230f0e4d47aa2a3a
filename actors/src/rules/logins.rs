//! One computer's login state ([`Logins`]) and the rules that change it:
//! expiry, the prompt's state, admission of a new OTP, resends, issuing,
//! access requests and their decisions, verification.

use std::collections::HashMap;

use crate::audit::Action;
use crate::clock::Timestamp;
use crate::directory::Recipient;
use crate::id::ComputerId;
use crate::login::{PromptState, RequestState, Requested, Verdict};
use crate::mail::outbox::MailKind;
use crate::metrics::{self, Issued, LoginOutcome, Tally};
use crate::names::{is_email_address, masked};
use crate::otp::{Check, Code, Origin, Otp, OtpState, Slot};
use crate::request::{AccessRequest, Choice, Decision, Refusal, Resolution};
use crate::settings::SystemSettings;

use super::{
    Access, Ask, Bucket, Effect, LimitKey, Policy, Ruling, Turn, Typed, person, throttled,
};

/// What [`Logins::admit`] found: a new OTP may be asked for, or the answer is
/// already known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Go on: look up what the mode needs, then issue or open a request.
    New,
    /// The answer, without a new OTP.
    Answer(Requested),
}

/// The login state of one client computer: OTP slots and the latest access
/// request, per OS user.
#[derive(Debug, Clone, Default)]
pub struct Logins {
    /// OTP state per OS user.
    pub slots: HashMap<String, Slot>,
    /// The latest access request per OS user.
    pub latest: HashMap<String, AccessRequest>,
}

impl Logins {
    /// Expires what is due at `now` for `os_user`: the OTP, and a pending access
    /// request (whose requester is told). Says whether anything expired.
    pub fn expire_due(
        &mut self,
        computer: &ComputerId,
        os_user: &str,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let who = person(os_user, computer);
        let otp_expired = self
            .slots
            .get_mut(os_user)
            .and_then(|slot| slot.otp.as_mut())
            .is_some_and(|otp| otp.expire_if_due(now));
        if otp_expired {
            effects.push(Effect::SaveSlot(os_user.to_owned()));
            effects.push(Effect::audit(&who, Action::Expire, "OTP expired"));
        }
        let request_expired = self
            .latest
            .get_mut(os_user)
            .is_some_and(|request| request.expire_if_due(now));
        if request_expired && let Some(request) = self.latest.get(os_user) {
            expired(computer, request, effects);
        }
        otp_expired || request_expired
    }

    /// Expires everything due at `now`; says whether anything expired.
    pub fn expire_all_due(
        &mut self,
        computer: &ComputerId,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let mut users: Vec<String> = self
            .slots
            .keys()
            .chain(self.latest.keys())
            .cloned()
            .collect();
        users.sort_unstable();
        users.dedup();
        let mut changed = false;
        for os_user in users {
            changed |= self.expire_due(computer, &os_user, now, effects);
        }
        changed
    }

    /// When the next live OTP or pending request expires, if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        let otps = self
            .slots
            .values()
            .filter_map(|slot| slot.otp.as_ref())
            .filter(|otp| otp.state == OtpState::Live)
            .map(|otp| otp.valid_until);
        let requests = self
            .latest
            .values()
            .filter(|r| r.decision == Decision::Pending)
            .map(|r| r.expires);
        otps.chain(requests).min()
    }

    /// What the login prompt of `os_user` shows.
    pub fn prompt_state(&self, policy: Policy<'_>, os_user: &str, now: Timestamp) -> PromptState {
        let slot = self.slots.get(os_user);
        let live = slot
            .and_then(|slot| slot.otp.as_ref())
            .filter(|otp| otp.is_live(now));
        let request = self.latest.get(os_user);
        PromptState {
            allow_otp: policy.options.allow_otp,
            auto_directory: policy.options.auto_directory,
            auto_internal: policy.options.auto_internal,
            record_input: policy.options.record_input,
            // An address the person typed is theirs to see again; one from the
            // directory or the user list is not shown.
            email: match live {
                Some(otp) if otp.origin == Origin::AutoSend => None,
                Some(otp) => Some(otp.email.clone()),
                None => request.map(|r| r.email.clone()),
            },
            request: request.map(|r| (r.id, status_of(r))),
            otp_valid_until: live.map(|otp| otp.valid_until),
            next_new_at: self
                .next_new_at(policy.settings, os_user)
                .filter(|&next| next > now),
        }
    }

    /// When `os_user` may next ask for a new OTP, if they ever asked for one.
    fn next_new_at(&self, settings: &SystemSettings, os_user: &str) -> Option<Timestamp> {
        Some(
            self.slots
                .get(os_user)?
                .last_new?
                .after(settings.new_otp_interval),
        )
    }

    /// Whether `os_user` may ask for a new OTP in a mode that is `enabled`, given
    /// the `failures` of the person and the computer: not needed while OTPs are
    /// off; not while this mode is off or they are throttled; while a request of
    /// theirs is pending, that request; within the interval since an OTP was
    /// last issued to them, the live OTP resent or the time a new one may be
    /// asked for.
    pub fn admit(
        &mut self,
        turn: &Turn<'_>,
        enabled: bool,
        failures: &[(LimitKey, Bucket)],
        os_user: &str,
        effects: &mut Vec<Effect>,
    ) -> Admit {
        let (policy, now) = (turn.policy, turn.now);
        if !policy.options.allow_otp {
            return Admit::Answer(Requested::NotRequired);
        }
        if !enabled {
            return Admit::Answer(Requested::Disabled);
        }
        let new = |(key, _): &&(LimitKey, Bucket)| matches!(key, LimitKey::NewOnComputer(_));
        let failed = failures.iter().filter(|entry| !new(entry));
        if let Some((retry_after, _)) = throttled(failed, policy.settings, now) {
            return Admit::Answer(Requested::Throttle { retry_after });
        }
        if let Some(request) = self.latest.get(os_user)
            && request.decision == Decision::Pending
        {
            return Admit::Answer(Requested::AwaitApproval {
                request: request.id,
                expires: request.expires,
            });
        }
        let Some(next_at) = self
            .next_new_at(policy.settings, os_user)
            .filter(|&next| now < next)
        else {
            // Something new: unless the computer has made too much of it.
            return match throttled(failures.iter().filter(new), policy.settings, now) {
                Some((retry_after, _)) => Admit::Answer(Requested::Throttle { retry_after }),
                None => Admit::New,
            };
        };
        Admit::Answer(match self.resend(turn, os_user, effects) {
            Requested::NoLiveOtp => Requested::TooSoon { next_at },
            other => other,
        })
    }

    /// Emails the live OTP of `os_user` again, unless the last email is more
    /// recent than the resend gap (then it says when it may be sent again).
    pub fn resend(
        &mut self,
        turn: &Turn<'_>,
        os_user: &str,
        effects: &mut Vec<Effect>,
    ) -> Requested {
        let (computer, policy, now) = (turn.computer, turn.policy, turn.now);
        if !policy.options.allow_otp {
            return Requested::NotRequired;
        }
        let Some(slot) = self.slots.get_mut(os_user) else {
            return Requested::NoLiveOtp;
        };
        let Some(otp) = slot.otp.as_ref().filter(|otp| otp.is_live(now)) else {
            return Requested::NoLiveOtp;
        };
        let to = if otp.origin == Origin::AutoSend {
            masked(&otp.email)
        } else {
            otp.email.clone()
        };
        let valid_until = otp.valid_until;
        if let Some(next_at) = slot
            .last_sent
            .map(|sent| sent.after(policy.settings.resend_gap))
            .filter(|&next_at| now < next_at)
        {
            return Requested::ResendLater { to, next_at };
        }
        if let Some(sealed) = otp.sealed() {
            effects.push(Effect::QueueMail {
                to: otp.email.clone(),
                kind: otp_mail(computer, os_user, sealed.to_vec(), valid_until),
                request: otp.origin.request(),
            });
            slot.last_sent = Some(now);
            effects.push(Effect::SaveSlot(os_user.to_owned()));
        }
        Requested::Resend { to, valid_until }
    }

    /// Issues a new OTP `code` for `os_user` and `email`, replacing any other, and
    /// queues its email. One the person asked for (sent at once, or approved)
    /// starts the interval; one an administrator generated does not.
    pub fn issue(
        &mut self,
        turn: &Turn<'_>,
        os_user: &str,
        email: &str,
        code: &Code,
        origin: Origin,
        effects: &mut Vec<Effect>,
    ) -> Timestamp {
        let (computer, now) = (turn.computer, turn.now);
        let valid_until = now.after(turn.policy.settings.expiration);
        let asked = !matches!(origin, Origin::Generated { .. });
        // Sent at once: new on this computer (an approval's request counted).
        let origin_counts = origin == Origin::AutoSend;
        let binding = turn.binding(os_user, email);
        effects.push(Effect::Tally(Tally::Issued(match origin {
            Origin::AutoSend => Issued::AutoSend,
            Origin::Approval { .. } => Issued::Approval,
            Origin::Generated { .. } => Issued::Generated,
        })));
        let otp = Otp::new(turn.keys, binding, code, now, valid_until, origin);
        effects.push(Effect::QueueMail {
            to: email.to_owned(),
            kind: otp_mail(
                computer,
                os_user,
                otp.sealed().map(<[u8]>::to_vec).unwrap_or_default(),
                valid_until,
            ),
            request: otp.origin.request(),
        });
        if origin_counts {
            effects.push(Effect::Count(LimitKey::NewOnComputer(computer.clone())));
        }
        let slot = self.slots.entry(os_user.to_owned()).or_default();
        slot.otp = Some(otp);
        slot.last_sent = Some(now);
        if asked {
            slot.last_new = Some(now);
        }
        effects.push(Effect::SaveSlot(os_user.to_owned()));
        valid_until
    }

    /// Opens the access request `ask` says, and notifies `approvers` (see
    /// [`approvers`]). Only an approval, which issues an OTP, starts the
    /// interval. Refused when the email is not an address.
    pub fn open_request(
        &mut self,
        turn: &Turn<'_>,
        approvers: &[Recipient],
        ask: Ask<'_>,
        effects: &mut Vec<Effect>,
    ) -> Requested {
        let (computer, now) = (turn.computer, turn.now);
        let Ask {
            id,
            os_user,
            email,
            access,
        } = ask;
        let emergency = access == Access::Emergency;
        if !is_email_address(email) {
            effects.push(Effect::Count(LimitKey::Person(
                computer.clone(),
                os_user.to_owned(),
            )));
            effects.push(Effect::Count(LimitKey::Computer(computer.clone())));
            return Requested::Refuse;
        }
        let request = AccessRequest {
            id,
            computer: computer.clone(),
            os_user: os_user.to_owned(),
            email: email.to_owned(),
            emergency,
            created: now,
            expires: now.after(turn.policy.settings.expiration),
            decision: Decision::Pending,
        };
        effects.push(Effect::SaveRequest(request.clone()));
        effects.push(Effect::Count(LimitKey::NewOnComputer(computer.clone())));
        for approver in approvers {
            effects.push(Effect::QueueMail {
                to: approver.email.clone(),
                kind: MailKind::Approval {
                    approver: approver.name.clone(),
                    request: id,
                    computer: computer.clone(),
                    os_user: os_user.to_owned(),
                    requester: email.to_owned(),
                    emergency,
                    expires: request.expires,
                },
                request: Some(id),
            });
        }
        let answer = Requested::AwaitApproval {
            request: id,
            expires: request.expires,
        };
        self.latest.insert(os_user.to_owned(), request);
        answer
    }

    /// Checks `code` typed by `os_user` with `email`, given the `failures` of the
    /// person, the computer and the email; not needed while OTPs are off. On Allow the OTP is used up and client
    /// session `session` may start; every wrong answer looks the same to the
    /// caller and is counted.
    pub fn verify(
        &mut self,
        turn: &Turn<'_>,
        failures: &[(LimitKey, Bucket)],
        session: u64,
        typed: Typed<'_>,
        effects: &mut Vec<Effect>,
    ) -> Verdict {
        let (computer, policy, now) = (turn.computer, turn.policy, turn.now);
        let Typed {
            os_user,
            email,
            code,
        } = typed;
        if !policy.options.allow_otp {
            effects.push(Effect::Tally(Tally::Login(LoginOutcome::NotRequired)));
            return Verdict::NotRequired;
        }
        let who = person(os_user, computer);
        if !is_email_address(email) {
            effects.push(Effect::Tally(Tally::Login(LoginOutcome::DenyNotAnEmail)));
            // Not an address: a denial like any other, counted, never written out.
            effects.push(Effect::Count(LimitKey::Person(
                computer.clone(),
                os_user.to_owned(),
            )));
            effects.push(Effect::Count(LimitKey::Computer(computer.clone())));
            effects.push(Effect::audit(
                &who,
                Action::Verify,
                "denied (not an email address)",
            ));
            return Verdict::Deny;
        }
        if let Some((retry_after, key)) = throttled(failures, policy.settings, now) {
            let outcome = format!("throttled: too many failures for {}", key.describe());
            effects.push(Effect::audit(&who, Action::Verify, &outcome));
            effects.push(Effect::Tally(Tally::Login(LoginOutcome::Throttled)));
            return Verdict::Throttle { retry_after };
        }
        // A user with no OTP gets no slot: names the agent sends cost no storage.
        let check = match self
            .slots
            .get_mut(os_user)
            .and_then(|slot| slot.otp.as_mut())
        {
            Some(otp) => {
                effects.push(Effect::SaveSlot(os_user.to_owned()));
                let binding = turn.binding(os_user, email);
                otp.check(turn.keys, binding, code, now, policy.settings.max_attempts)
            }
            None => Check::NotLive,
        };
        effects.push(Effect::Tally(Tally::Login(match check {
            Check::Allow => LoginOutcome::Allow,
            Check::Wrong { locked: false } => LoginOutcome::DenyWrongCode,
            Check::Wrong { locked: true } => LoginOutcome::DenyLocked,
            Check::NotLive => LoginOutcome::DenyNoLiveOtp,
        })));
        match check {
            Check::Allow => {
                effects.push(Effect::audit(
                    &who,
                    Action::Verify,
                    &format!("allowed ({email})"),
                ));
                Verdict::Allow { session }
            }
            Check::Wrong { .. } | Check::NotLive => {
                for key in [
                    LimitKey::Person(computer.clone(), os_user.to_owned()),
                    LimitKey::Computer(computer.clone()),
                    LimitKey::Email(email.to_owned()),
                ] {
                    effects.push(Effect::Count(key));
                }
                effects.push(Effect::audit(
                    &who,
                    Action::Verify,
                    &format!("denied ({email})"),
                ));
                if check == (Check::Wrong { locked: true }) {
                    effects.push(Effect::audit(
                        &who,
                        Action::Lock,
                        "locked after too many wrong attempts",
                    ));
                }
                Verdict::Deny
            }
        }
    }

    /// Decides pending access request `request` as `choice` (by `by`, who may
    /// decide it). Approval issues OTP `code`; denial tells the requester. Says
    /// whether it was still pending; one that expired meanwhile is expired now.
    pub fn decide(
        &mut self,
        turn: &Turn<'_>,
        request: &mut AccessRequest,
        ruling: Ruling<'_>,
        code: &Code,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let (computer, now) = (turn.computer, turn.now);
        let Ruling {
            by,
            seen_as: who,
            choice,
            comment,
        } = ruling;
        if request.expire_if_due(now) {
            expired(computer, request, effects);
        }
        if request.decision != Decision::Pending {
            self.remember(request);
            return false;
        }
        let resolution = Resolution {
            by: by.to_owned(),
            at: now,
            comment: comment.clone(),
        };
        let id = request.id;
        let decision = match choice {
            Choice::Approve => metrics::Decision::Approved,
            Choice::Deny => metrics::Decision::Denied,
        };
        effects.push(Effect::Tally(Tally::Decided(
            decision,
            now.since(request.created),
        )));
        match choice {
            Choice::Approve => {
                let origin = Origin::Approval { request: id };
                self.issue(
                    turn,
                    &request.os_user,
                    &request.email,
                    code,
                    origin,
                    effects,
                );
                request.decision = Decision::Approve(resolution);
                effects.push(Effect::audit(
                    who,
                    Action::Approve,
                    &format!("request {id} approved by {by}"),
                ));
            }
            Choice::Deny => {
                request.decision = Decision::Deny(resolution);
                effects.push(Effect::QueueMail {
                    to: request.email.clone(),
                    kind: MailKind::Outcome {
                        computer: computer.clone(),
                        refusal: Refusal::Deny,
                        comment,
                    },
                    request: Some(id),
                });
                effects.push(Effect::audit(
                    who,
                    Action::Deny,
                    &format!("request {id} denied by {by}"),
                ));
            }
        }
        effects.push(Effect::SaveRequest(request.clone()));
        self.remember(request);
        true
    }

    /// Keeps `request` as the latest of its OS user, if it is that one.
    fn remember(&mut self, request: &AccessRequest) {
        if let Some(latest) = self.latest.get_mut(&request.os_user)
            && latest.id == request.id
        {
            latest.clone_from(request);
        }
    }
}

/// Records that `request` expired and tells its requester.
fn expired(computer: &ComputerId, request: &AccessRequest, effects: &mut Vec<Effect>) {
    effects.push(Effect::Tally(Tally::Decided(
        metrics::Decision::Expired,
        request.expires.since(request.created),
    )));
    effects.push(Effect::SaveRequest(request.clone()));
    effects.push(Effect::QueueMail {
        to: request.email.clone(),
        kind: MailKind::Outcome {
            computer: computer.clone(),
            refusal: Refusal::Expire,
            comment: None,
        },
        request: Some(request.id),
    });
    effects.push(Effect::audit(
        &person(&request.os_user, computer),
        Action::Expire,
        &format!("request {} expired", request.id),
    ));
}

pub(crate) fn otp_mail(
    computer: &ComputerId,
    os_user: &str,
    sealed: Vec<u8>,
    valid_until: Timestamp,
) -> MailKind {
    MailKind::Otp {
        computer: computer.clone(),
        os_user: os_user.to_owned(),
        sealed,
        valid_until,
    }
}

/// Where an access request stands, for the prompt.
pub fn status_of(request: &AccessRequest) -> RequestState {
    match &request.decision {
        Decision::Pending => RequestState::Pending {
            expires: request.expires,
        },
        Decision::Approve(_) => RequestState::Approve,
        Decision::Deny(resolution) => RequestState::Deny {
            comment: resolution.comment.clone(),
        },
        Decision::Expire => RequestState::Expire,
    }
}

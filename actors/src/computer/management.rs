//! What approvers and administrators do to a computer: decide its access
//! requests, generate an OTP without a request, change its group and options.

use crate::audit::{Action, Who};
use crate::otp::{Code, Origin};
use crate::request::Choice;
use crate::rules::{self, Decider, Effect, Policy, Ruling, Turn};
use crate::settings::OptionsPatch;
use crate::store::ComputerRecord;

use super::{ComputerState, Decided, Generated, Result};

impl ComputerState {
    pub(super) async fn decide(
        &mut self,
        request: u64,
        (by, seen_as): (&Decider, &Who),
        choice: Choice,
        comment: Option<String>,
    ) -> Result<Decided> {
        let found = match self.logins.latest.values().find(|r| r.id == request) {
            Some(found) => Some(found.clone()),
            None => self.svc.store.request(request).await?,
        };
        let Some(mut found) = found.filter(|found| found.computer == self.id) else {
            return Ok(Decided::NotFound);
        };
        let snapshot = self.svc.policy.snapshot();
        let settings = &snapshot.settings;
        let options = snapshot.effective(&self.record);
        let allowed = match by {
            Decider::User(login) => rules::may_decide(snapshot.user(login), &options),
            Decider::Person(person) => rules::person_may_decide(person, &options, |entry| {
                self.svc.directory.canonical(entry)
            }),
        };
        if !allowed {
            return Ok(Decided::NotAllowed);
        }
        let policy = Policy {
            settings,
            options: &options,
        };
        let code = Code::generate(settings.otp_length);
        let mut effects = Vec::new();
        let turn = Turn {
            computer: &self.id,
            policy,
            keys: &self.svc.keys,
            now: self.svc.clock.now(),
        };
        let ruling = Ruling {
            by: by.name(),
            seen_as,
            choice,
            comment,
        };
        let pending = self
            .logins
            .decide(&turn, &mut found, ruling, &code, &mut effects);
        self.apply(settings, effects).await?;
        self.commit().await?;
        Ok(if pending {
            Decided::Done(found)
        } else {
            Decided::NotPending(found)
        })
    }

    pub(super) async fn generate(
        &mut self,
        os_user: &str,
        email: &str,
        comment: String,
        by: &str,
    ) -> Result<Generated> {
        let snapshot = self.svc.policy.snapshot();
        if !rules::may_generate(snapshot.user(by)) {
            return Ok(Generated::NotAllowed);
        }
        let settings = &snapshot.settings;
        let options = snapshot.effective(&self.record);
        let policy = Policy {
            settings,
            options: &options,
        };
        let mut effects = Vec::new();
        let origin = Origin::Generated {
            by: by.to_owned(),
            comment: comment.clone(),
        };
        let valid_until = self.issue(policy, os_user, email, origin, &mut effects);
        effects.push(Effect::audit(
            &Who::User {
                login: by.to_owned(),
            },
            Action::Generate,
            &format!("for {os_user} ({email}): {comment}"),
        ));
        self.apply(settings, effects).await?;
        self.commit().await?;
        Ok(Generated::Send { valid_until })
    }

    pub(super) async fn configure(
        &mut self,
        group: Option<Option<String>>,
        options: &OptionsPatch,
        by: &Who,
    ) -> Result<ComputerRecord> {
        if let Some(group) = group {
            self.record.group = group;
        }
        self.record.options.apply(options);
        self.save_record()?;
        self.audit(by, Action::Configure, "client changed")?;
        self.commit().await?;
        Ok(self.record.clone())
    }
}

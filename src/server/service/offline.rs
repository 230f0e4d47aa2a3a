//! Offline codes (see `otpgate_actors::offline`): issued by administrators
//! (`otpgate admin offline issue`), shown once and kept only as verifiers,
//! listed, and voided; each change is told at once to the computer's agent
//! if it is connected here, and at its next connection otherwise.

use std::time::Duration;

use otpgate_actors::ComputerId;
use otpgate_actors::names::{is_email_address, is_os_account};
use otpgate_actors::offline::{MAX_CODES, MAX_SETS, MAX_VALID_DAYS, OfflineSet, Order};
use otpgate_actors::store::{self, BATCH};
use otpgate_protocol::admin::{AdminErrorCode, OfflineSpec, OfflineView};
use otpgate_protocol::login::Secret;

use super::clients::computer_id;
use super::{AdminService, Answer, Principal, refuse};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl AdminService {
    /// Issues offline codes as `spec` says, replacing the OS user's on that
    /// computer; the codes (shown this once) and what was issued.
    pub async fn issue_offline(
        &self,
        who: &Principal,
        spec: OfflineSpec,
    ) -> Answer<(Vec<Secret>, OfflineView)> {
        self.require_admin(who)?;
        let id = computer_id(&spec.computer)?;
        if !is_os_account(&spec.os_user) {
            return refuse(AdminErrorCode::Invalid, "not an OS account's name");
        }
        if !is_email_address(&spec.email) {
            return refuse(AdminErrorCode::Invalid, "not an email address");
        }
        if !(1..=MAX_CODES).contains(&spec.count) {
            return refuse(
                AdminErrorCode::Invalid,
                format!("a set holds 1 to {MAX_CODES} codes"),
            );
        }
        if !(1..=MAX_VALID_DAYS).contains(&spec.valid_days) {
            return refuse(
                AdminErrorCode::Invalid,
                format!("offline codes work for 1 to {MAX_VALID_DAYS} days"),
            );
        }
        if self.store.computer(&id).await?.is_none() {
            return refuse(
                AdminErrorCode::NotFound,
                format!("client computer {id} has never connected"),
            );
        }
        let sets = self.store.offline_sets(&id).await?;
        let replaces =
            |set: &OfflineSet| set.login_name == spec.os_user || set.os_user == spec.os_user;
        if sets.len() >= MAX_SETS && !sets.iter().any(replaces) {
            return refuse(
                AdminErrorCode::Invalid,
                format!("a computer holds offline codes for at most {MAX_SETS} OS users"),
            );
        }
        let order = Order {
            id: self.store.next_id().await?,
            os_user: spec.os_user,
            email: spec.email,
            count: spec.count,
            now: self.clock.now(),
            valid: DAY * spec.valid_days,
            by: who.who().to_string(),
        };
        // One Argon2id hash per code: off the runtime.
        let issued = tokio::task::spawn_blocking(move || OfflineSet::issue(order))
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "making offline codes failed");
                super::refusal(AdminErrorCode::Internal, "the codes could not be made")
            })?;
        self.computers
            .offline_issue(&id, &issued.set, &who.who())
            .await?;
        self.live.offline_changed(&id);
        let codes = issued
            .codes
            .iter()
            .map(|code| Secret(code.as_str().to_owned()))
            .collect();
        Ok((codes, view(&id, &issued.set)))
    }

    /// Computer `computer`'s offline codes, by OS user.
    pub async fn offline_codes(&self, who: &Principal, computer: &str) -> Answer<Vec<OfflineView>> {
        self.require_admin(who)?;
        let id = computer_id(computer)?;
        let sets = self.store.offline_sets(&id).await?;
        Ok(sets.iter().map(|set| view(&id, set)).collect())
    }

    /// Voids computer `computer`'s offline codes of `os_user` (every OS
    /// user's with `None`); how many sets went.
    pub async fn void_offline(
        &self,
        who: &Principal,
        computer: &str,
        os_user: Option<&str>,
    ) -> Answer<usize> {
        self.require_admin(who)?;
        let id = computer_id(computer)?;
        let voided = self
            .computers
            .offline_void(&id, os_user, &who.who())
            .await?;
        if voided > 0 {
            self.live.offline_changed(&id);
        }
        Ok(voided)
    }

    /// Voids, on every computer, the offline codes issued to the person of
    /// `email` (an internal user disabled), as `who`; how many sets went.
    pub(super) async fn void_offline_of(&self, who: &Principal, email: &str) -> Answer<usize> {
        let sets = store::all_keyed(|after| self.store.offline_from(after, BATCH)).await?;
        let mut voided = 0;
        for (_, (computer, set)) in sets {
            if set.email.eq_ignore_ascii_case(email) {
                voided += self
                    .computers
                    .offline_void(&computer, Some(&set.os_user), &who.who())
                    .await?;
                self.live.offline_changed(&computer);
            }
        }
        Ok(voided)
    }
}

/// Set `set` of computer `id` as the lists show it.
fn view(id: &ComputerId, set: &OfflineSet) -> OfflineView {
    OfflineView {
        set: set.id,
        computer: id.to_string(),
        os_user: set.os_user.clone(),
        email: set.email.clone(),
        issued_at: set.issued_at.unix_millis(),
        expires_at: set.expires_at.unix_millis(),
        issued_by: set.issued_by.clone(),
        codes: u32::try_from(set.codes.len()).unwrap_or(u32::MAX),
        used: set
            .codes
            .iter()
            .enumerate()
            .filter_map(|(index, code)| {
                let place = u32::try_from(index + 1).ok()?;
                Some((place, code.used_at?.unix_millis()))
            })
            .collect(),
    }
}

//! Client computers and client groups (administrators): lists, options,
//! groups, and revoking a computer's certificates.

use std::sync::Arc;

use otpgate_actors::audit::Action;
use otpgate_actors::directory::is_directory_name;
use otpgate_actors::names::is_plain_text;
use otpgate_actors::settings::GroupRecord;
use otpgate_actors::store::{BATCH, ComputerRecord};
use otpgate_actors::{ComputerId, policy};
use otpgate_protocol::admin::{
    AdminErrorCode, ClientView, GroupView, OptionsView, Page, PageRequest,
};
use tracing::warn;

use super::{AdminService, Answer, Principal, ServiceError, refusal, refuse};
use crate::server::{convert, pages};

impl AdminService {
    /// Client computers, by name.
    pub async fn clients(&self, who: &Principal, page: &PageRequest) -> Answer<Page<ClientView>> {
        self.require_admin(who)?;
        let policy = self.policy.snapshot();
        Ok(pages::page_of(
            |after| self.store.computers_from(after, BATCH),
            page,
            |_| true,
            |(id, record)| client_view(id, record, &policy),
        )
        .await?)
    }

    /// Client computer `computer`.
    pub async fn client(&self, who: &Principal, computer: &str) -> Answer<ClientView> {
        self.require_admin(who)?;
        let id = computer_id(computer)?;
        match self.store.computer(&id).await? {
            Some(record) => Ok(client_view(&id, &record, &self.policy.snapshot())),
            None => refuse(
                AdminErrorCode::NotFound,
                format!("No client computer {computer}."),
            ),
        }
    }

    /// Puts computer `computer` in `group` (`Some(None)`: in none) and sets
    /// its `options`; its actor writes the change and the audit entry.
    pub async fn set_client(
        &self,
        who: &Principal,
        computer: &str,
        group: Option<Option<String>>,
        options: &OptionsView,
    ) -> Answer<()> {
        self.require_admin(who)?;
        let id = computer_id(computer)?;
        let policy = self
            .policy_naming(|policy| {
                matches!(&group, Some(Some(name)) if !policy.groups.contains_key(name))
                    || names_unknown_users(policy, options)
            })
            .await?;
        if let Some(Some(name)) = &group
            && !policy.groups.contains_key(name)
        {
            return refuse(AdminErrorCode::NotFound, format!("no group {name:?}"));
        }
        self.check_approvers(&policy, options).await?;
        self.computers
            .configure(&id, group, &convert::options(options), &who.who())
            .await?;
        Ok(())
    }

    /// Every client group.
    pub fn groups(&self, who: &Principal) -> Answer<Vec<GroupView>> {
        self.require_admin(who)?;
        Ok(self
            .policy
            .snapshot()
            .groups
            .iter()
            .map(|(name, group)| GroupView {
                name: name.clone(),
                options: convert::options_view(&group.options),
            })
            .collect())
    }

    /// Creates client group `name`, or changes its `options`.
    pub async fn set_group(
        &self,
        who: &Principal,
        name: &str,
        options: &OptionsView,
    ) -> Answer<()> {
        self.require_admin(who)?;
        if name.is_empty() || !is_plain_text(name, 128) {
            return refuse(
                AdminErrorCode::Invalid,
                "a group's name must be 1 to 128 characters, none of them control characters",
            );
        }
        let policy = self
            .policy_naming(|policy| names_unknown_users(policy, options))
            .await?;
        self.check_approvers(&policy, options).await?;
        let mut edit = self.policy.edit().await?;
        let mut group: GroupRecord = edit.current().groups.get(name).cloned().unwrap_or_default();
        group.options.apply(&convert::options(options));
        edit.put_group(name, group);
        let entry = self.entry(
            who,
            Action::Configure,
            None,
            format!("group {name} changed"),
        );
        edit.commit(&entry).await?;
        Ok(())
    }

    /// Revokes every certificate issued so far to `computer` and closes its
    /// connections; how many there were.
    pub async fn revoke(&self, who: &Principal, computer: &str) -> Answer<u32> {
        self.require_admin(who)?;
        let id = computer_id(computer)?;
        let seconds = self.clock.now().unix_seconds();
        if let Err(err) = self.revocations.revoke_off_runtime(&id, seconds).await {
            warn!(error = %err, "cannot write the revocation list");
            // Closed all the same: a revocation whose commit failed is in
            // force here until a restart, and a computer whose revocation
            // was not written at all reconnects.
            self.live.close_all(&id);
            return refuse(
                AdminErrorCode::Internal,
                "the revocation list could not be written",
            );
        }
        let disconnected = self.live.close_all(&id);
        self.audit(
            who,
            Action::Configure,
            Some(&id),
            format!("certificates of {id} revoked"),
        )
        .await?;
        // Its agent hears of it at its next try to connect, and voids its
        // own copy then.
        if let Err(err) = self.computers.offline_void(&id, None, &who.who()).await {
            warn!(error = %err, "the offline codes of a revoked computer could not be voided");
        }
        Ok(u32::try_from(disconnected).unwrap_or(u32::MAX))
    }

    /// The policy, read again from the store first when `lacks` says this
    /// node's may be behind: a name it lacks may have been made on another
    /// server a moment ago (heard within a second, see
    /// [`crate::server::heard`]).
    pub(super) async fn policy_naming(
        &self,
        lacks: impl Fn(&policy::Snapshot) -> bool,
    ) -> Answer<Arc<policy::Snapshot>> {
        let policy = self.policy.snapshot();
        if !lacks(&policy) {
            return Ok(policy);
        }
        self.policy.reload().await?;
        Ok(self.policy.snapshot())
    }

    /// Refuses the approvers in `options` that are neither internal users nor
    /// accounts or groups the directory knows: nobody would be told of a
    /// request. A directory that cannot be asked now is not a refusal (logged).
    async fn check_approvers(
        &self,
        policy: &policy::Snapshot,
        options: &OptionsView,
    ) -> Answer<()> {
        let mut unknown = Vec::new();
        for entry in options.approvers.iter().flatten() {
            if policy.users.contains_key(entry) {
                continue;
            }
            if is_directory_name(entry) {
                match self.directory.recipients(entry).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(err) => {
                        warn!(%entry, error = %err, "an approver entry could not be checked");
                        continue;
                    }
                }
            }
            unknown.push(entry.as_str());
        }
        if unknown.is_empty() {
            return Ok(());
        }
        refuse(
            AdminErrorCode::NotFound,
            format!(
                "no internal user, directory account or group {}: add them first",
                unknown.join(", ")
            ),
        )
    }
}

/// Whether `options` name an approver that is no internal user of `policy`
/// (a directory name, or a user `policy` lacks).
fn names_unknown_users(policy: &policy::Snapshot, options: &OptionsView) -> bool {
    options
        .approvers
        .iter()
        .flatten()
        .any(|entry| !policy.users.contains_key(entry))
}

/// Computer `id` as the lists show it, its options resolved by `policy`.
fn client_view(id: &ComputerId, record: &ComputerRecord, policy: &policy::Snapshot) -> ClientView {
    ClientView {
        computer: id.to_string(),
        group: record.group.clone(),
        connected_since: record.connected_since.map(|t| t.unix_millis()),
        last_seen: record.last_seen.unix_millis(),
        host_name: record.host_name.clone(),
        options: convert::options_view(&record.options),
        effective: convert::effective_view(&policy.effective(record)),
        agent_version: record.agent_version.clone(),
        protocol: record.protocol,
    }
}

/// The computer named `name`.
pub(super) fn computer_id(name: &str) -> Result<ComputerId, ServiceError> {
    name.parse().map_err(|_| {
        refusal(
            AdminErrorCode::Invalid,
            format!("{name:?} is not a valid computer name"),
        )
    })
}

//! The System Settings: read by administrators, changed by them (validated
//! whole, written through the policy's owner with its audit entry).

use otpgate_actors::audit::Action;
use otpgate_protocol::admin::{AdminErrorCode, SettingsPatch, SettingsView};

use super::{AdminService, Answer, Principal, refuse};
use crate::server::convert;

impl AdminService {
    /// The System Settings.
    pub fn settings(&self, who: &Principal) -> Answer<SettingsView> {
        self.require_admin(who)?;
        Ok(convert::settings_view(&self.policy.snapshot().settings))
    }

    /// Changes the settings `patch` names; the settings now.
    pub async fn set_settings(
        &self,
        who: &Principal,
        patch: &SettingsPatch,
    ) -> Answer<SettingsView> {
        self.require_admin(who)?;
        let mut edit = self.policy.edit().await?;
        let settings = convert::patch_settings(edit.current().settings.clone(), patch);
        if let Err(invalid) = settings.validate() {
            return refuse(AdminErrorCode::Invalid, invalid.to_string());
        }
        edit.set_settings(settings.clone());
        let entry = self.entry(
            who,
            Action::Configure,
            None,
            "system settings changed".into(),
        );
        edit.commit(&entry).await?;
        Ok(convert::settings_view(&settings))
    }
}

//! Settings: the System Settings, and the options of client groups and client
//! computers. A computer inherits each option from its group unless it overrides
//! it; a group inherits from the defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::store::record::{Body, Record, SCHEMA_V1};

/// The default Access Request Expiration Time.
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(30 * 60);
/// The default shortest time between two new OTPs for one computer and OS user.
pub const DEFAULT_NEW_OTP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// The default number of digits in an OTP.
pub const DEFAULT_OTP_LENGTH: u8 = 8;
/// The fewest digits an OTP may have (NIST SP 800-63B).
pub const MIN_OTP_LENGTH: u8 = 6;
/// The most digits an OTP may have.
pub const MAX_OTP_LENGTH: u8 = 12;
/// The default number of wrong attempts after which an OTP is locked.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The default number of failures allowed per client computer and per account
/// within the failure window.
pub const DEFAULT_MAX_FAILURES: u32 = 100;
/// The default window over which failures are counted.
pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(60 * 60);
/// The default shortest time between two emails of the same OTP.
pub const DEFAULT_RESEND_GAP: Duration = Duration::from_secs(30);
/// The default number of new OTPs and access requests one client computer may
/// cause within the failure window: a shared terminal server's users each
/// asking once an hour, with room to spare.
pub const DEFAULT_MAX_NEW_PER_COMPUTER: u32 = 300;
/// How long by default a client session stays open while its computer's agent
/// is not heard from (a machine that crashed, or was unplugged).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// How long by default the audit log, ended sessions, decided requests and
/// given-up messages are kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(365 * 86_400);

/// The System Settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemSettings {
    /// How long an OTP, and an unprocessed access request, stays valid.
    pub expiration: Duration,
    /// The shortest time between two new OTPs for one computer and OS user.
    pub new_otp_interval: Duration,
    /// Digits per OTP.
    pub otp_length: u8,
    /// Wrong attempts after which an OTP is locked.
    pub max_attempts: u32,
    /// Failures allowed per client computer and per account within the window;
    /// a person (an OS user on one computer) is allowed a tenth of it
    /// (`rules::PERSON_SHARE`).
    pub max_failures: u32,
    /// The window over which failures are counted.
    pub failure_window: Duration,
    /// The shortest time between two emails of the same OTP.
    pub resend_gap: Duration,
    /// New OTPs and access requests one client computer may cause within the
    /// failure window, whatever OS user names it uses.
    pub max_new_per_computer: u32,
    /// How long a client session stays open while its computer's agent is not
    /// heard from.
    pub session_timeout: Duration,
    /// How long the audit log, ended sessions, decided requests and given-up
    /// messages are kept.
    pub retention: Duration,
}

impl Default for SystemSettings {
    fn default() -> Self {
        Self {
            expiration: DEFAULT_EXPIRATION,
            new_otp_interval: DEFAULT_NEW_OTP_INTERVAL,
            otp_length: DEFAULT_OTP_LENGTH,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_failures: DEFAULT_MAX_FAILURES,
            failure_window: DEFAULT_FAILURE_WINDOW,
            resend_gap: DEFAULT_RESEND_GAP,
            max_new_per_computer: DEFAULT_MAX_NEW_PER_COMPUTER,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            retention: DEFAULT_RETENTION,
        }
    }
}

impl Record for SystemSettings {
    /// Since the cap on new OTPs per computer and the session timeout.
    const VERSION: u8 = 3;

    fn upgrade(body: Body<'_>) -> Result<Self, StoreError> {
        match body.version {
            2 => Ok(body.decode::<SystemSettingsV2>()?.into()),
            SCHEMA_V1 => Ok(body.decode::<SystemSettingsV1>()?.into()),
            _ => Err(body.unknown()),
        }
    }
}

/// The System Settings as schema version 2 stored them (before the cap on new
/// OTPs per computer): read once and upgraded, never written.
#[derive(Debug, Clone, Deserialize)]
struct SystemSettingsV2 {
    expiration: Duration,
    new_otp_interval: Duration,
    otp_length: u8,
    max_attempts: u32,
    max_failures: u32,
    failure_window: Duration,
    resend_gap: Duration,
}

impl From<SystemSettingsV2> for SystemSettings {
    fn from(old: SystemSettingsV2) -> Self {
        Self {
            expiration: old.expiration,
            new_otp_interval: old.new_otp_interval,
            otp_length: old.otp_length,
            max_attempts: old.max_attempts,
            max_failures: old.max_failures,
            failure_window: old.failure_window,
            resend_gap: old.resend_gap,
            ..Self::default()
        }
    }
}

/// The System Settings as the first release stored them (schema version 1):
/// read once and upgraded, never written.
#[derive(Debug, Clone, Deserialize)]
struct SystemSettingsV1 {
    expiration: Duration,
    new_otp_interval: Duration,
    otp_length: u8,
    max_attempts: u32,
    max_failures_per_hour: u32,
}

impl From<SystemSettingsV1> for SystemSettings {
    fn from(old: SystemSettingsV1) -> Self {
        Self {
            expiration: old.expiration,
            new_otp_interval: old.new_otp_interval,
            otp_length: old.otp_length,
            max_attempts: old.max_attempts,
            max_failures: old.max_failures_per_hour,
            ..Self::default()
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidSetting {
    /// Which setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SystemSettings {
    /// Checks every value against its range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |field, reason: &str| {
            Err(InvalidSetting {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.expiration < Duration::from_secs(60)
            || self.expiration > Duration::from_secs(86_400)
        {
            return invalid("expiration", "must be between 1 minute and 24 hours");
        }
        if self.new_otp_interval > Duration::from_secs(7 * 86_400) {
            return invalid("new_otp_interval", "must be at most 7 days");
        }
        if !(MIN_OTP_LENGTH..=MAX_OTP_LENGTH).contains(&self.otp_length) {
            return invalid("otp_length", "must be between 6 and 12 digits");
        }
        if !(1..=100).contains(&self.max_attempts) {
            return invalid("max_attempts", "must be between 1 and 100");
        }
        if self.max_failures == 0 {
            return invalid("max_failures", "must be at least 1");
        }
        if self.failure_window < Duration::from_secs(60)
            || self.failure_window > Duration::from_secs(86_400)
        {
            return invalid("failure_window", "must be between 1 minute and 24 hours");
        }
        if self.resend_gap > Duration::from_secs(3600) {
            return invalid("resend_gap", "must be at most 1 hour");
        }
        if self.max_new_per_computer == 0 {
            return invalid("max_new_per_computer", "must be at least 1");
        }
        if self.session_timeout < Duration::from_secs(60)
            || self.session_timeout > Duration::from_secs(30 * 86_400)
        {
            return invalid("session_timeout", "must be between 1 minute and 30 days");
        }
        if self.retention < Duration::from_secs(86_400)
            || self.retention > Duration::from_secs(3650 * 86_400)
        {
            return invalid("retention", "must be between 1 day and 10 years");
        }
        Ok(())
    }
}

/// The options of a client group or a client computer. `None` inherits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Allow the use of one-time passwords.
    pub allow_otp: Option<bool>,
    /// Users Who Can Approve Access: internal users' login names.
    pub approvers: Option<Vec<String>>,
    /// Automatically send one-time passwords to Active Directory users.
    pub auto_directory: Option<bool>,
    /// Automatically send one-time passwords to internal users.
    pub auto_internal: Option<bool>,
    /// Record what people type in recorded terminals, not only what is shown
    /// (off by default: it holds passwords typed at prompts).
    pub record_input: Option<bool>,
}

/// The options as stored before [`Options::record_input`]; read and upgraded.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OptionsV1 {
    allow_otp: Option<bool>,
    approvers: Option<Vec<String>>,
    auto_directory: Option<bool>,
    auto_internal: Option<bool>,
}

impl From<OptionsV1> for Options {
    fn from(old: OptionsV1) -> Self {
        Self {
            allow_otp: old.allow_otp,
            approvers: old.approvers,
            auto_directory: old.auto_directory,
            auto_internal: old.auto_internal,
            record_input: None,
        }
    }
}

impl Options {
    /// These options laid over `base`: what is set here wins.
    pub fn over(&self, base: &Effective) -> Effective {
        Effective {
            allow_otp: self.allow_otp.unwrap_or(base.allow_otp),
            approvers: self
                .approvers
                .clone()
                .unwrap_or_else(|| base.approvers.clone()),
            auto_directory: self.auto_directory.unwrap_or(base.auto_directory),
            auto_internal: self.auto_internal.unwrap_or(base.auto_internal),
            record_input: self.record_input.unwrap_or(base.record_input),
        }
    }

    /// Sets what `patch` sets, puts back to inherit what it names so, and
    /// leaves the rest.
    pub fn apply(&mut self, patch: &OptionsPatch) {
        let set = &patch.set;
        if set.allow_otp.is_some() {
            self.allow_otp = set.allow_otp;
        }
        if set.approvers.is_some() {
            self.approvers.clone_from(&set.approvers);
        }
        if set.auto_directory.is_some() {
            self.auto_directory = set.auto_directory;
        }
        if set.auto_internal.is_some() {
            self.auto_internal = set.auto_internal;
        }
        if set.record_input.is_some() {
            self.record_input = set.record_input;
        }
        for name in &patch.inherit {
            match name {
                OptionName::AllowOtp => self.allow_otp = None,
                OptionName::Approvers => self.approvers = None,
                OptionName::AutoDirectory => self.auto_directory = None,
                OptionName::AutoInternal => self.auto_internal = None,
                OptionName::RecordInput => self.record_input = None,
            }
        }
    }
}

/// One option of a group or computer, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptionName {
    /// Allow the use of one-time passwords.
    AllowOtp,
    /// Users Who Can Approve Access.
    Approvers,
    /// Automatically send one-time passwords to Active Directory users.
    AutoDirectory,
    /// Automatically send one-time passwords to internal users.
    AutoInternal,
    /// Record typed input.
    RecordInput,
}

/// A change to a group's or computer's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionsPatch {
    /// What it sets; `None` stays.
    pub set: Options,
    /// What goes back to inherit (from the group, or the defaults).
    pub inherit: Vec<OptionName>,
}

/// The options in force for one computer, every inheritance resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effective {
    /// Allow the use of one-time passwords.
    pub allow_otp: bool,
    /// Users Who Can Approve Access; empty means the administrators.
    pub approvers: Vec<String>,
    /// Automatically send one-time passwords to Active Directory users.
    pub auto_directory: bool,
    /// Automatically send one-time passwords to internal users.
    pub auto_internal: bool,
    /// Record typed input in recorded terminals.
    pub record_input: bool,
}

impl Default for Effective {
    /// What applies where neither group nor computer says otherwise: OTPs allowed,
    /// every request approved by the administrators.
    fn default() -> Self {
        Self {
            allow_otp: true,
            approvers: Vec::new(),
            auto_directory: false,
            auto_internal: false,
            record_input: false,
        }
    }
}

/// A client group: a name and options its computers inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group's options.
    pub options: Options,
}

impl Record for GroupRecord {
    const VERSION: u8 = 2;

    fn upgrade(body: Body<'_>) -> Result<Self, StoreError> {
        match body.version {
            SCHEMA_V1 => Ok(body.decode::<GroupRecordV1>()?.into()),
            _ => Err(body.unknown()),
        }
    }
}

/// A group as stored before [`Options::record_input`]; read and upgraded.
#[derive(Debug, Clone, Deserialize)]
struct GroupRecordV1 {
    options: OptionsV1,
}

impl From<GroupRecordV1> for GroupRecord {
    fn from(old: GroupRecordV1) -> Self {
        Self {
            options: old.options.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_computer_inherits_from_its_group_unless_it_overrides() {
        let group = Options {
            auto_directory: Some(true),
            approvers: Some(vec!["alice".into()]),
            ..Options::default()
        };
        let computer = Options {
            approvers: Some(vec!["bob".into()]),
            ..Options::default()
        };
        let effective = computer.over(&group.over(&Effective::default()));
        assert!(effective.allow_otp);
        assert!(effective.auto_directory, "from the group");
        assert!(!effective.auto_internal, "from the defaults");
        assert_eq!(effective.approvers, ["bob"], "the computer's own");
    }

    #[test]
    fn patches_set_only_what_they_name() {
        let mut options = Options {
            allow_otp: Some(false),
            auto_internal: Some(true),
            ..Options::default()
        };
        options.apply(&OptionsPatch {
            set: Options {
                allow_otp: Some(true),
                ..Options::default()
            },
            inherit: vec![],
        });
        assert_eq!(options.allow_otp, Some(true));
        assert_eq!(options.auto_internal, Some(true));
        options.apply(&OptionsPatch {
            set: Options::default(),
            inherit: vec![OptionName::AutoInternal],
        });
        assert_eq!(options.allow_otp, Some(true));
        assert_eq!(options.auto_internal, None, "back to inherit");
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(SystemSettings::default().validate(), Ok(()));
        let short = SystemSettings {
            otp_length: 5,
            ..SystemSettings::default()
        };
        assert_eq!(short.validate().unwrap_err().field, "otp_length");
        let brief = SystemSettings {
            expiration: Duration::from_secs(1),
            ..SystemSettings::default()
        };
        assert_eq!(brief.validate().unwrap_err().field, "expiration");
    }
}

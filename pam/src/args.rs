//! The module's arguments, as the PAM service file gives them:
//!
//! ```text
//! auth     required  pam_otpgate.so  [socket=/run/otpgate/agent.sock] [on_unreachable=deny|allow|offline]
//!                                    [exempt_group=GROUP] [approval_wait=300] [timeout=10]
//! session  optional  pam_otpgate.so  [socket=...] [timeout=10]
//! ```
//!
//! A value that cannot be read keeps the safe default (deny when unreachable)
//! and is reported; so is an unknown name.

use std::path::PathBuf;
use std::time::Duration;

/// Where the agent serves its socket unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/otpgate/agent.sock";

/// What to do when the agent or the server cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Fail closed: no login.
    Deny,
    /// Let the login through (and log it).
    Allow,
    /// Ask for one of the person's offline codes, which the agent checks
    /// (the choice for laptops): only while the agent runs and the server
    /// cannot be reached.
    Offline,
}

/// The module's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The agent's socket.
    pub socket: PathBuf,
    /// Without the agent or the server: deny (the default), allow, or ask
    /// for an offline code.
    pub on_unreachable: Unreachable,
    /// Members of this group pass without a prompt (break-glass accounts).
    pub exempt_group: Option<String>,
    /// The longest wait for approvers, in seconds.
    pub approval_wait: u64,
    /// The longest wait for one answer of the agent.
    pub timeout: Duration,
    /// Test builds: panic inside the hook.
    pub panic_for_test: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            on_unreachable: Unreachable::Deny,
            exempt_group: None,
            approval_wait: 300,
            timeout: Duration::from_secs(10),
            panic_for_test: false,
        }
    }
}

impl Args {
    /// Reads `args`; what could not be read, in words, beside.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> (Self, Vec<String>) {
        let mut parsed = Self::default();
        let mut problems = Vec::new();
        for arg in args {
            let (name, value) = arg.split_once('=').unwrap_or((arg, ""));
            let seconds = |value: &str| value.parse::<u64>().ok().filter(|s| *s <= 24 * 3600);
            match name {
                "socket" if !value.is_empty() => parsed.socket = PathBuf::from(value),
                "on_unreachable" if value == "allow" => {
                    parsed.on_unreachable = Unreachable::Allow;
                }
                "on_unreachable" if value == "deny" => parsed.on_unreachable = Unreachable::Deny,
                "on_unreachable" if value == "offline" => {
                    parsed.on_unreachable = Unreachable::Offline;
                }
                "exempt_group" if !value.is_empty() => {
                    parsed.exempt_group = Some(value.to_owned());
                }
                "approval_wait" if seconds(value).is_some() => {
                    parsed.approval_wait = seconds(value).unwrap_or(parsed.approval_wait);
                }
                "timeout" if seconds(value).is_some_and(|s| s > 0) => {
                    parsed.timeout = Duration::from_secs(seconds(value).unwrap_or(10));
                }
                "panic_for_test" if cfg!(feature = "fault-injection") => {
                    parsed.panic_for_test = true;
                }
                _ => problems.push(format!("argument {arg:?} ignored")),
            }
        }
        (parsed, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_is_read() {
        let (args, problems) = Args::parse([
            "socket=/tmp/a.sock",
            "on_unreachable=allow",
            "exempt_group=breakglass",
            "approval_wait=60",
            "timeout=3",
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            args,
            Args {
                socket: PathBuf::from("/tmp/a.sock"),
                on_unreachable: Unreachable::Allow,
                exempt_group: Some("breakglass".into()),
                approval_wait: 60,
                timeout: Duration::from_secs(3),
                panic_for_test: false,
            }
        );
    }

    #[test]
    fn what_cannot_be_read_keeps_the_safe_default_and_is_reported() {
        let (args, problems) = Args::parse([
            "on_unreachable=alow",
            "approval_wait=soon",
            "timeout=0",
            "debug",
        ]);
        assert_eq!(args, Args::default());
        assert_eq!(args.on_unreachable, Unreachable::Deny);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn offline_codes_are_asked_for_when_told() {
        let (args, problems) = Args::parse(["on_unreachable=offline"]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(args.on_unreachable, Unreachable::Offline);
    }
}

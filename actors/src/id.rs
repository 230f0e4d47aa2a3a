//! The identity of a client computer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest computer name we accept: a DNS label's limit is 63, and host names
/// with a domain are longer, so this leaves room for both.
const MAX_LEN: usize = 128;

/// A client computer's name, as written in its certificate: 1 to 128 characters
/// from `a-z`, `0-9`, `.`, `-` and `_`, starting with a letter or digit. Names are
/// case-insensitive and kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ComputerId(String);

/// A string that is not a valid [`ComputerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a client computer's name must be 1 to {MAX_LEN} characters of letters, digits, '.', '-' \
     and '_', starting with a letter or digit"
)]
pub struct InvalidComputerId;

impl ComputerId {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ComputerId {
    type Err = InvalidComputerId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        let valid = (1..=MAX_LEN).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars().all(allowed);
        if valid {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(InvalidComputerId)
        }
    }
}

impl TryFrom<String> for ComputerId {
    type Error = InvalidComputerId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ComputerId> for String {
    fn from(id: ComputerId) -> Self {
        id.0
    }
}

impl fmt::Display for ComputerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept_in_lower_case() {
        let id: ComputerId = "WS-0042.corp_eu".parse().unwrap();
        assert_eq!(id.as_str(), "ws-0042.corp_eu");
    }

    #[test]
    fn invalid_names_are_refused() {
        for bad in [
            "",
            "-lead",
            ".lead",
            "has space",
            "slash/",
            "uni\u{e9}",
            "a:b",
        ] {
            assert_eq!(bad.parse::<ComputerId>(), Err(InvalidComputerId), "{bad:?}");
        }
        assert!("a".repeat(MAX_LEN).parse::<ComputerId>().is_ok());
        assert!("a".repeat(MAX_LEN + 1).parse::<ComputerId>().is_err());
    }
}

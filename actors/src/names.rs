//! One rule per kind of name that enters the server from an agent, a person or
//! an administrator: email addresses, OS accounts (`DOMAIN\name`, `name@realm`
//! or a local name) and internal login names (computer names are
//! [`ComputerId`](crate::ComputerId); the host name an agent reports is a
//! rule of the wire's `Hello`). A name that breaks its rule is refused
//! before it reaches a rule, a failure key or the audit log. (Text shown on a
//! terminal is made safe by `otpgate_screens::printable`.)

/// Whether `text` can be used as an email address: a local part, one `@`, a
/// domain (dotted or not: on-premises mail often uses internal names), at most
/// 254 characters, no spaces or control characters. The one rule for every
/// address the server accepts, typed by people or set by administrators.
pub fn is_email_address(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && text.len() <= 254
                && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// The longest OS account name taken, domain or realm included.
pub const MAX_OS_ACCOUNT: usize = 256;

/// Whether `name` can be an OS account: a local name, `DOMAIN\name` or
/// `name@realm`; 1 to [`MAX_OS_ACCOUNT`] bytes; letters, digits, spaces inside
/// (Windows allows them) and `. _ - $ '`; no control characters.
pub fn is_os_account(name: &str) -> bool {
    let part = |part: &str| {
        !part.is_empty()
            && !part.starts_with(' ')
            && !part.ends_with(' ')
            && part
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-' | '$' | '\''))
    };
    if name.is_empty() || name.len() > MAX_OS_ACCOUNT {
        return false;
    }
    match (name.split_once('\\'), name.split_once('@')) {
        (Some((domain, user)), None) => part(domain) && part(user),
        (None, Some((user, realm))) => part(user) && part(realm),
        (None, None) => part(name),
        (Some(_), Some(_)) => false,
    }
}

/// Whether `login` can be an internal user's login name: 1 to 64 characters
/// without spaces or control characters.
pub fn is_login(login: &str) -> bool {
    (1..=64).contains(&login.chars().count())
        && !login.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `email` as a client computer may see it when the person did not type it: its
/// first character and its domain (`a***@example.com`).
pub fn masked(email: &str) -> String {
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let first: String = local.chars().take(1).collect();
    format!("{first}***@{domain}")
}

/// Whether `text` is free text of at most `max` characters (a comment, a group
/// name) without control characters.
pub fn is_plain_text(text: &str, max: usize) -> bool {
    text.chars().count() <= max && !text.chars().any(char::is_control)
}

/// Whether `host` (a name, or an address, bracketed or not) is this
/// machine's: where a plain connection is allowed.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_tells_addresses_from_other_text() {
        for good in ["alice@example.com", "admin@localhost", "a.b+c@corp"] {
            assert!(is_email_address(good), "{good}");
        }
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@.com",
            "alice@example.",
            "a@b@c",
            "alice @example.com",
            "alice@exa\nmple.com",
        ] {
            assert!(!is_email_address(bad), "{bad:?}");
        }
        assert!(!is_email_address(&format!(
            "{}@example.com",
            "a".repeat(250)
        )));
    }

    #[test]
    fn os_accounts_are_local_domain_or_realm_names() {
        for good in [
            "alice",
            "CORP\\alice",
            "alice@CORP.EXAMPLE",
            "John Smith",
            "svc-backup$",
            "o'brien",
        ] {
            assert!(is_os_account(good), "{good}");
        }
        for bad in [
            "",
            " alice",
            "alice\n",
            "a\\b\\c",
            "a@b@c",
            "CORP\\a@b",
            "\\alice",
            "alice@",
            "al\u{1b}[2Jice",
            "a/b",
            "a:b",
        ] {
            assert!(!is_os_account(bad), "{bad:?}");
        }
        assert!(!is_os_account(&"a".repeat(MAX_OS_ACCOUNT + 1)));
    }

    #[test]
    fn a_masked_address_shows_its_first_letter_and_domain() {
        assert_eq!(masked("alice@example.com"), "a***@example.com");
        assert_eq!(masked("\u{e9}mile@corp"), "\u{e9}***@corp");
    }

    #[test]
    fn plain_text_has_no_control_characters_and_a_length() {
        assert!(is_plain_text("fine, thanks", 20));
        assert!(!is_plain_text("two\nlines", 20));
        assert!(!is_plain_text(&"x".repeat(21), 20));
    }
}

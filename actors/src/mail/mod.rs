//! Mail: the durable outbox ([`outbox`]), how its entries become messages
//! ([`render`]), and the [`Mailer`] that delivers them ([`mailer`]).

pub mod mailer;
pub mod outbox;
pub mod render;

pub use mailer::{
    BACKOFF, DEFAULT_BATCH, DEFAULT_MAX_ATTEMPTS, DeliveryError, DeliveryFuture, MailTransport,
    Mailer, MailerArgs, MailerMsg, SyncFuture,
};
pub use outbox::{MailFailure, MailKind, OutboxEntry};
pub use render::Mail;

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
}

//! Rendering: an outbox entry becomes a message with a plain-text part and an
//! HTML alternative, laid out once for both. An OTP is opened only here.

use askama::Template;

use crate::clock::Timestamp;
use crate::mail::outbox::{MailKind, OutboxEntry};
use crate::otp::{DecisionToken, OtpKeys};
use crate::request::{Choice, Refusal};

/// A message ready for a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Unique per message.
    pub message_id: String,
    /// The recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// When it was queued.
    pub date: Timestamp,
    /// The plain-text body.
    pub body: String,
    /// The same, as HTML.
    pub html: String,
}

/// What a message says, laid out once for both its text and its HTML part.
struct Content {
    subject: String,
    intro: String,
    /// Shown large: the OTP.
    highlight: Option<String>,
    facts: Vec<(&'static str, String)>,
    outro: Vec<String>,
}

impl Content {
    fn text(&self) -> String {
        let mut text = format!("{}\n\n", self.intro);
        if let Some(highlight) = &self.highlight {
            text.push_str(&format!("    {highlight}\n\n"));
        }
        for (label, value) in &self.facts {
            text.push_str(&format!("{label}: {value}\n"));
        }
        for line in &self.outro {
            text.push_str(&format!("\n{line}"));
        }
        text.push('\n');
        text
    }

    fn html(&self) -> String {
        MailHtml { content: self }.render().unwrap_or_else(|err| {
            // Only a template's own bug could fail here: the text part stands.
            tracing::error!(error = %err, "a message's HTML part could not be made");
            String::new()
        })
    }
}

/// A message's HTML part (`templates/mail.html`), every value escaped.
#[derive(Template)]
#[template(path = "mail.html")]
struct MailHtml<'a> {
    content: &'a Content,
}

impl OutboxEntry {
    /// Renders the message. `None` when an OTP can no longer be opened (the server
    /// secret changed): such a message cannot be sent.
    pub fn render(&self, keys: &OtpKeys, host: &str, management_url: &str) -> Option<Mail> {
        let content = match &self.kind {
            MailKind::Otp {
                computer,
                os_user,
                sealed,
                valid_until,
            } => {
                let code = keys.open(computer, os_user, sealed)?;
                Content {
                    subject: format!("Your one-time password for {computer}"),
                    intro: "Your one-time password is:".into(),
                    highlight: Some(code.expose().to_owned()),
                    facts: vec![
                        ("Client computer", computer.to_string()),
                        ("User", os_user.clone()),
                        ("Valid until", valid_until.rfc3339()),
                    ],
                    outro: vec![
                        "It works once, only on this computer and for this user.".into(),
                        "Nobody from IT will ever ask you for this code.".into(),
                    ],
                }
            }
            MailKind::Approval {
                approver,
                request,
                computer,
                os_user,
                requester,
                emergency,
                expires,
            } => {
                let link = |choice| {
                    let token = keys.decision_token(&DecisionToken {
                        request: *request,
                        choice,
                        approver: approver.clone(),
                        expires: *expires,
                    });
                    format!("{management_url}/requests/decide?token={token}")
                };
                let kind = if *emergency {
                    "EMERGENCY access request"
                } else {
                    "Access request"
                };
                Content {
                    subject: format!("{kind} for {computer} from {requester}"),
                    intro: format!("{kind} #{request}"),
                    highlight: None,
                    facts: vec![
                        ("From", requester.clone()),
                        ("Client computer", computer.to_string()),
                        ("User", os_user.clone()),
                        ("Emergency", if *emergency { "yes" } else { "no" }.into()),
                        ("Expires", expires.rfc3339()),
                    ],
                    outro: vec![
                        format!("Approve: {}", link(Choice::Approve)),
                        format!("Deny: {}", link(Choice::Deny)),
                        "Each link works once, until the request expires.".into(),
                    ],
                }
            }
            MailKind::Outcome {
                computer,
                refusal,
                comment,
            } => {
                let what = match refusal {
                    Refusal::Deny => "denied",
                    Refusal::Expire => "expired",
                };
                Content {
                    subject: format!("Your access request for {computer} was {what}"),
                    intro: format!("Your access request for {computer} was {what}."),
                    highlight: None,
                    facts: comment
                        .iter()
                        .map(|comment| ("Comment", comment.clone()))
                        .collect(),
                    outro: Vec::new(),
                }
            }
        };
        Some(Mail {
            // The id zero-padded: Message-IDs (and the `.eml` files named after
            // them) sort in the order the messages were queued, across restarts.
            message_id: format!("<{:020}.{}@{host}>", self.id, self.queued.unix_millis()),
            to: self.to.clone(),
            subject: content.subject.clone(),
            date: self.queued,
            body: content.text(),
            html: content.html(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ComputerId;
    use crate::otp::Code;
    use crate::testing::outcome_entry;

    #[test]
    fn message_ids_sort_in_queue_order_across_an_id_jump() {
        // sled's ids jump by millions after a restart: 999 then 2,000,000.
        let keys = OtpKeys::derive(&[1; 32]);
        let id = |id: u64| {
            outcome_entry(id, Timestamp::from_unix_millis(0))
                .render(&keys, "h", "https://m")
                .unwrap()
                .message_id
        };
        assert!(id(999) < id(2_000_000), "{} {}", id(999), id(2_000_000));
    }

    #[test]
    fn html_parts_escape_what_people_typed() {
        let entry = OutboxEntry {
            id: 1,
            to: "x@example.com".into(),
            queued: Timestamp::from_unix_millis(0),
            kind: MailKind::Outcome {
                computer: "ws-1".parse().unwrap(),
                refusal: Refusal::Deny,
                comment: Some("<script>alert('x')</script> & co".into()),
            },
            request: Some(7),
            attempts: 0,
            next_try: Timestamp::from_unix_millis(0),
        };
        let mail = entry
            .render(&OtpKeys::derive(&[1; 32]), "h", "https://m")
            .unwrap();
        // Every character HTML gives meaning to, escaped (askama's entities).
        assert!(
            mail.html
                .contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62; &#38; co"),
            "{}",
            mail.html
        );
        assert!(!mail.html.contains("<script>"));
        assert!(mail.body.contains("<script>"), "the text part is text");
    }

    #[test]
    fn an_otp_message_carries_the_code_computer_user_and_validity() {
        let keys = OtpKeys::derive(&[1; 32]);
        let computer: ComputerId = "ws-1".parse().unwrap();
        let code = Code::generate(8);
        let entry = OutboxEntry {
            id: 42,
            to: "alice@example.com".into(),
            queued: Timestamp::from_unix_millis(0),
            kind: MailKind::Otp {
                computer: computer.clone(),
                os_user: "alice".into(),
                sealed: keys.seal(&computer, "alice", code.expose()),
                valid_until: Timestamp::from_unix_millis(1_800_000),
            },
            request: None,
            attempts: 0,
            next_try: Timestamp::from_unix_millis(0),
        };
        assert!(
            !format!("{entry:?}").contains(code.expose()),
            "sealed in the outbox"
        );
        let mail = entry.render(&keys, "otp.example.com", "https://m").unwrap();
        assert_eq!(mail.message_id, "<00000000000000000042.0@otp.example.com>");
        assert!(mail.subject.contains("ws-1"));
        for part in [
            code.expose(),
            "ws-1",
            "alice",
            "1970-01-01T00:30:00Z",
            "Nobody",
        ] {
            assert!(mail.body.contains(part), "{part} in {}", mail.body);
        }
        assert!(
            entry
                .render(&OtpKeys::derive(&[2; 32]), "h", "https://m")
                .is_none()
        );
    }
}

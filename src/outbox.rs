//! The embedded mail transport: every message becomes an `.eml` file (RFC 5322,
//! plain text) in `<data folder>/outbox/`, written whole under a temporary name
//! and renamed, so a reader never sees half a message. SMTP replaces it when a
//! relay is configured (a later release), behind the same `MailTransport` trait.

use std::path::PathBuf;

use otpgate_actors::mail::{DeliveryError, DeliveryFuture, Mail, MailTransport};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::files::write_private;

/// Writes messages as `.eml` files into a folder.
#[derive(Debug, Clone)]
pub struct EmlDir {
    dir: PathBuf,
    from: String,
}

impl EmlDir {
    /// Messages from `from` into folder `dir` (created 0700 if missing).
    pub fn new(dir: PathBuf, from: String) -> std::io::Result<Self> {
        crate::files::create_private_dir(&dir)?;
        Ok(Self { dir, from })
    }

    fn render(&self, mail: &Mail) -> String {
        let date = OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(mail.date.unix_millis()) * 1_000_000,
        )
        .ok()
        .and_then(|date| date.format(&Rfc2822).ok())
        .unwrap_or_default();
        // Header values come from our own templates and validated addresses; fold
        // any line break out of them all the same.
        let clean = |value: &str| value.replace(['\r', '\n'], " ");
        format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: {}\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n{}",
            clean(&self.from),
            clean(&mail.to),
            clean(&mail.subject),
            clean(&mail.message_id),
            mail.body.replace('\n', "\r\n")
        )
    }
}

impl MailTransport for EmlDir {
    fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let name: String = mail
                .message_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '@'))
                .collect();
            let path = self.dir.join(format!("{name}.eml"));
            let text = self.render(mail);
            tokio::task::spawn_blocking(move || write_private(&path, text.as_bytes()))
                .await
                .map_err(|err| DeliveryError::Temporary(err.to_string()))?
                .map_err(|err| DeliveryError::Temporary(err.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use otpgate_actors::Timestamp;

    use super::*;

    #[tokio::test]
    async fn a_message_becomes_one_eml_file_with_its_headers() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = EmlDir::new(
            dir.path().join("outbox"),
            "otpgate <otp@example.com>".into(),
        )
        .unwrap();
        let mail = Mail {
            message_id: "<7.0@otp.example.com>".into(),
            to: "alice@example.com".into(),
            subject: "Your one-time password for ws-1".into(),
            date: Timestamp::from_unix_millis(0),
            body: "Your one-time password is: 12345678\n".into(),
        };
        outbox.deliver(&mail).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        for header in [
            "From: otpgate <otp@example.com>\r\n",
            "To: alice@example.com\r\n",
            "Subject: Your one-time password for ws-1\r\n",
            "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n",
            "Message-ID: <7.0@otp.example.com>\r\n",
            "\r\n\r\nYour one-time password is: 12345678\r\n",
        ] {
            assert!(text.contains(header), "{header:?} in {text}");
        }
    }
}

//! Mail transports: the embedded default writes every message as an `.eml` file
//! into `<data folder>/outbox/`; with an `[smtp]` section, messages go to an SMTP
//! relay through mail-send. Both write the same message: a plain-text part and an
//! HTML alternative, with the Message-ID the outbox gave it, so that a relay or a
//! reader can tell a repeat from a new message.

use std::path::PathBuf;
use std::sync::Arc;

use mail_send::SmtpClientBuilder;
use mail_send::mail_builder::MessageBuilder;
use mail_send::mail_builder::headers::date::Date;
use rustls::RootCertStore;

use otpgate_actors::mail::{BatchFuture, DeliveryError, DeliveryFuture, Mail, MailTransport};
use otpgate_screens::printable;

use crate::files::write_private_together;
use crate::server::config::{SmtpConfig, SmtpSecurity};

/// The sender of every message: a display name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    name: String,
    address: String,
}

impl Sender {
    /// Reads `Name <address>` or a bare `address`.
    pub fn parse(text: &str) -> Self {
        match text.split_once('<') {
            Some((name, rest)) => Self {
                name: name.trim().trim_matches('"').to_owned(),
                address: rest.trim_end().trim_end_matches('>').trim().to_owned(),
            },
            None => Self {
                name: String::new(),
                address: text.trim().to_owned(),
            },
        }
    }
}

/// The message `mail` from `from`, ready to be written or sent.
fn compose<'a>(mail: &'a Mail, from: &'a Sender) -> MessageBuilder<'a> {
    let message_id = mail
        .message_id
        .trim_start_matches('<')
        .trim_end_matches('>');
    let seconds = i64::try_from(mail.date.unix_millis() / 1000).unwrap_or(i64::MAX);
    MessageBuilder::new()
        .from((from.name.as_str(), from.address.as_str()))
        .to(mail.to.as_str())
        .subject(mail.subject.as_str())
        .date(Date::new(seconds))
        .message_id(message_id)
        .text_body(mail.body.as_str())
        .html_body(mail.html.as_str())
}

/// How many `.eml` files are written at once.
const EML_BATCH: usize = 64;

/// Writes messages as `.eml` files into a folder, whole under a temporary name and
/// then renamed, so a reader never sees half a message; a batch's files are
/// made durable together. A message delivered again (after a crash) finds its file
/// and leaves it as it is.
#[derive(Debug, Clone)]
pub struct EmlDir {
    dir: PathBuf,
    from: Sender,
}

impl EmlDir {
    /// Messages from `from` into folder `dir` (created 0700 if missing).
    pub fn new(dir: PathBuf, from: Sender) -> std::io::Result<Self> {
        crate::files::create_private_dir(&dir)?;
        Ok(Self { dir, from })
    }

    /// Where message `mail` is written.
    fn path(&self, mail: &Mail) -> PathBuf {
        let name: String = mail
            .message_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '@'))
            .collect();
        self.dir.join(format!("{name}.eml"))
    }
}

impl MailTransport for EmlDir {
    fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let mut said = self.deliver_all(std::slice::from_ref(mail)).await;
            said.pop()
                .unwrap_or_else(|| Err(DeliveryError::Temporary("not written".into())))
        })
    }

    /// The batch's files are written side by side and made durable together.
    /// A file is renamed into place whole, so one that is there was
    /// delivered: after a crash between writing it and leaving the outbox, it
    /// is not written again (a reader would see an old message arrive anew,
    /// after newer ones).
    fn deliver_all<'a>(&'a self, mails: &'a [Mail]) -> BatchFuture<'a> {
        Box::pin(async move {
            let temporary = |err: &dyn std::fmt::Display| DeliveryError::Temporary(err.to_string());
            let mut files = Vec::with_capacity(mails.len());
            let composed: Vec<Result<(), DeliveryError>> = mails
                .iter()
                .map(|mail| {
                    let bytes = compose(mail, &self.from)
                        .write_to_vec()
                        .map_err(|err| temporary(&err))?;
                    files.push((self.path(mail), bytes));
                    Ok(())
                })
                .collect();
            let dir = self.dir.clone();
            let written = tokio::task::spawn_blocking(move || {
                let written = write_private_together(&dir, &files);
                (files, written)
            })
            .await;
            let (files, written) = match written {
                Ok((files, Ok(written))) => (files, written),
                Ok((_, Err(err))) => return mails.iter().map(|_| Err(temporary(&err))).collect(),
                Err(err) => return mails.iter().map(|_| Err(temporary(&err))).collect(),
            };
            let mut written = files.into_iter().zip(written);
            composed
                .into_iter()
                .map(|composed| {
                    composed?;
                    let Some(((path, _), written)) = written.next() else {
                        return Err(DeliveryError::Temporary("not written".into()));
                    };
                    match written {
                        Ok(true) => Ok(format!("written to {}", path.display())),
                        Ok(false) => Ok(format!("already written to {}", path.display())),
                        Err(err) => Err(temporary(&err)),
                    }
                })
                .collect()
        })
    }

    /// Files are cheap to write side by side; a batch shares one sync and one
    /// database flush.
    fn batch(&self) -> usize {
        EML_BATCH
    }
}

/// Hands messages to an SMTP relay, one connection per message.
pub struct Smtp {
    builder: SmtpClientBuilder<String>,
    security: SmtpSecurity,
    from: Sender,
}

/// Why the SMTP transport could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpSetupError {
    /// The CA file is unusable.
    #[error(transparent)]
    Ca(#[from] crate::tls::pki::PkiError),
    /// rustls refused a CA certificate.
    #[error("CA certificate refused: {0}")]
    Rustls(#[from] rustls::Error),
}

impl Smtp {
    /// A transport to the relay `config` describes, sending as `from`.
    pub fn new(config: &SmtpConfig, from: Sender) -> Result<Self, SmtpSetupError> {
        let mut roots = RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                for cert in crate::tls::pki::read_chain(path)? {
                    roots.add(cert)?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut builder = SmtpClientBuilder::new_with_tls_connector(
            config.host.clone(),
            config.port,
            tokio_rustls::TlsConnector::from(Arc::new(tls)),
        )
        .implicit_tls(config.security == SmtpSecurity::Tls)
        .timeout(config.timeout);
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials((user.clone(), password.expose().to_owned()));
        }
        Ok(Self {
            builder,
            security: config.security,
            from,
        })
    }

    /// Reaches the relay and logs in as the configuration says (TLS and
    /// authentication included), then says goodbye: nothing is sent. What
    /// went wrong is said without credentials.
    pub async fn reach(&self) -> Result<(), String> {
        // A failed goodbye changes nothing: the relay was reached.
        let reached = match self.security {
            SmtpSecurity::Plain => match self.builder.connect_plain().await {
                Ok(client) => client.quit().await.or(Ok(())),
                Err(err) => Err(err),
            },
            SmtpSecurity::Tls | SmtpSecurity::StartTls => match self.builder.connect().await {
                Ok(client) => client.quit().await.or(Ok(())),
                Err(err) => Err(err),
            },
        };
        reached.map_err(|err| describe(&err))
    }

    /// Sends `mail` now, outside any queue: the relay's reply, or what went
    /// wrong, without credentials.
    pub async fn send_now(&self, mail: &Mail) -> Result<String, String> {
        self.send(mail).await.map_err(|err| describe(&err))
    }

    /// Sends `mail`; returns the relay's reply to it.
    async fn send(&self, mail: &Mail) -> mail_send::Result<String> {
        let message = compose(mail, &self.from);
        let reply = match self.security {
            SmtpSecurity::Plain => {
                let mut client = self.builder.connect_plain().await?;
                let reply = client.send(message).await?;
                // The message is taken; a failed goodbye changes nothing.
                let _ = client.quit().await;
                reply
            }
            SmtpSecurity::Tls | SmtpSecurity::StartTls => {
                let mut client = self.builder.connect().await?;
                let reply = client.send(message).await?;
                let _ = client.quit().await;
                reply
            }
        };
        Ok(said(reply.code(), reply.message()))
    }
}

impl MailTransport for Smtp {
    fn deliver<'a>(&'a self, mail: &'a Mail) -> DeliveryFuture<'a> {
        Box::pin(async move {
            self.send(mail).await.map_err(|err| {
                let reason = describe(&err);
                match &err {
                    // Refused credentials are the configuration's fault, not the
                    // message's: it waits in the queue until they are put right.
                    mail_send::Error::AuthenticationFailed(_)
                    | mail_send::Error::UnsupportedAuthMechanism => {
                        tracing::error!(%reason, "the SMTP relay refused otpgate's login: check [smtp] username and password_file");
                        DeliveryError::Temporary(format!("configuration: {reason}"))
                    }
                    // A 5xx reply to the message will not change by trying again.
                    mail_send::Error::UnexpectedReply(reply) if reply.code() >= 500 => {
                        DeliveryError::Permanent(reason)
                    }
                    _ => DeliveryError::Temporary(reason),
                }
            })
        })
    }
}

/// A relay's reply, on one line, safe for the audit log and a terminal.
fn said(code: u16, message: &str) -> String {
    format!(
        "relay said {code} {}",
        printable(&message.replace(['\r', '\n'], " "))
    )
}

/// What went wrong, on one line, without credentials.
fn describe(err: &mail_send::Error) -> String {
    match err {
        mail_send::Error::UnexpectedReply(reply)
        | mail_send::Error::AuthenticationFailed(reply) => said(reply.code(), reply.message()),
        mail_send::Error::Io(err) => format!("relay unreachable: {err}"),
        mail_send::Error::Timeout => "relay timed out".into(),
        mail_send::Error::Tls(err) => format!("TLS with the relay failed: {err}"),
        mail_send::Error::MissingStartTls => "relay does not offer STARTTLS".into(),
        mail_send::Error::UnsupportedAuthMechanism => {
            "relay offers no usable AUTH mechanism".into()
        }
        other => format!("SMTP error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use otpgate_actors::Timestamp;

    use super::*;

    #[test]
    fn senders_parse_with_and_without_a_name() {
        assert_eq!(
            Sender::parse("\"otpgate\" <otp@example.com>"),
            Sender {
                name: "otpgate".into(),
                address: "otp@example.com".into()
            }
        );
        assert_eq!(
            Sender::parse(" otp@example.com ").address,
            "otp@example.com"
        );
    }

    #[tokio::test]
    async fn a_message_becomes_one_eml_file_with_both_parts() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = EmlDir::new(
            dir.path().join("outbox"),
            Sender::parse("otpgate <otp@example.com>"),
        )
        .unwrap();
        let mail = Mail {
            message_id: "<7.0@otp.example.com>".into(),
            to: "alice@example.com".into(),
            subject: "Your one-time password for ws-1".into(),
            date: Timestamp::from_unix_millis(1_795_931_627_266),
            body: "Your one-time password is: 12345678\n".into(),
            html: "<p>12345678</p>".into(),
        };
        outbox.deliver(&mail).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let first = std::fs::metadata(&files[0]).unwrap();
        let again = outbox.deliver(&mail).await.unwrap();
        assert!(again.starts_with("already written"), "{again}");
        let after = std::fs::metadata(&files[0]).unwrap();
        assert_eq!(
            (first.ino(), first.modified().unwrap()),
            (after.ino(), after.modified().unwrap()),
            "a repeat leaves the delivered file alone"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("outbox"))
                .unwrap()
                .count(),
            1
        );
        let text = std::fs::read_to_string(&files[0]).unwrap();
        for part in [
            "From: \"otpgate\" <otp@example.com>\r\n",
            "To: <alice@example.com>\r\n",
            "Subject: Your one-time password for ws-1\r\n",
            "Date: Sun, 29 Nov 2026 05:53:47 +0000\r\n",
            "Message-ID: <7.0@otp.example.com>\r\n",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "Your one-time password is: 12345678",
            "<p>12345678</p>",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
    }
}

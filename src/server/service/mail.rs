//! Mail (administrators): the outbox and what was given up on, and a test
//! message sent at once through the transport.

use otpgate_actors::audit::Action;
use otpgate_actors::mail::{DeliveryError, Mail};
use otpgate_actors::names::is_email_address;
use otpgate_actors::store::BATCH;
use otpgate_protocol::admin::{AdminErrorCode, MailFailureView, Page, PageRequest, QueuedMailView};

use super::{AdminService, Answer, Principal, refuse};
use crate::server::{convert, pages};

impl AdminService {
    /// Messages waiting in the outbox, oldest first.
    pub async fn mail_queue(
        &self,
        who: &Principal,
        page: &PageRequest,
    ) -> Answer<Page<QueuedMailView>> {
        self.require_admin(who)?;
        Ok(pages::page_of(
            |after| self.store.outbox_from(after, BATCH),
            page,
            |_| true,
            convert::queued_mail_view,
        )
        .await?)
    }

    /// Messages given up on, oldest first.
    pub async fn mail_failures(
        &self,
        who: &Principal,
        page: &PageRequest,
    ) -> Answer<Page<MailFailureView>> {
        self.require_admin(who)?;
        Ok(pages::page_of(
            |after| self.store.mail_failures_from(after, BATCH),
            page,
            |_| true,
            convert::mail_failure_view,
        )
        .await?)
    }

    /// Sends a test message to `to` now, bypassing the outbox: what the relay
    /// (or the outbox folder) said.
    pub async fn mail_test(&self, who: &Principal, to: &str) -> Answer<String> {
        self.require_admin(who)?;
        if !is_email_address(to) {
            return refuse(
                AdminErrorCode::Invalid,
                format!("{to:?} is not an email address"),
            );
        }
        let now = self.clock.now();
        let body = "This is a test message from otpgate. If you can read it, mail works.\n";
        let mail = Mail {
            message_id: format!("<test.{}@{}>", now.unix_millis(), self.host),
            to: to.to_owned(),
            subject: "otpgate test message".into(),
            date: now,
            body: body.into(),
            html: format!("<p>{}</p>", body.trim_end()),
        };
        self.store.append_audit(&self.entry(
            who,
            Action::Configure,
            None,
            format!("test message to {to}"),
        ))?;
        match self.transport.deliver(&mail).await {
            Ok(said) => Ok(said),
            Err(DeliveryError::Permanent(reason)) => refuse(AdminErrorCode::Conflict, reason),
            Err(err) => refuse(AdminErrorCode::Internal, err.to_string()),
        }
    }
}

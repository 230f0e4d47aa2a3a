//! Access requests: the lists (each principal sees the computers they
//! approve, administrators all), a request decided by an approver or through
//! the link in their mail, and OTPs an administrator generates without a
//! request.

use otpgate_actors::names::is_email_address;
use otpgate_actors::otp::DecisionToken;
use otpgate_actors::request::{Choice, Decision};
use otpgate_actors::store::BATCH;
use otpgate_actors::{Decided, Generated, Timestamp};
use otpgate_protocol::admin::{AdminErrorCode, ListFilter, Page, PageRequest, RequestView};
use otpgate_protocol::login::Secret;
use zeroize::Zeroizing;

use super::clients::computer_id;
use super::people::check_comment;
use super::{AdminService, Answer, Identity, Principal, refuse};
use crate::server::convert;
use crate::server::pages::{self, Matches};

/// The comment of an OTP generated without a request, unless one is given.
pub const DEFAULT_GENERATE_COMMENT: &str = "Generated without request.";

/// Which access requests a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Those still waiting for an approver.
    Pending,
    /// Every one, decided or not.
    All,
}

/// Whether an OTP may be generated for a computer that never connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Only for one the server knows.
    Known,
    /// For one it has never seen too (a computer about to be set up).
    New,
}

/// An OTP to generate without a request.
pub struct Generate {
    /// The client computer.
    pub computer: String,
    /// The OS user.
    pub os_user: String,
    /// Where it goes.
    pub email: String,
    /// Why; [`DEFAULT_GENERATE_COMMENT`] when not given.
    pub comment: Option<String>,
    /// Whether the computer may be one never seen.
    pub client: Client,
}

impl AdminService {
    /// Access requests `who` may see (`which` of them, as `filter` says), by
    /// computer then age.
    pub async fn requests(
        &self,
        who: &Principal,
        which: Which,
        filter: &ListFilter,
        page: &PageRequest,
    ) -> Answer<Page<RequestView>> {
        let failures = self.store.mail_failures().await?;
        let visible = self.visibility(who).await?;
        Ok(pages::page_of(
            |after| self.store.requests_from(after, BATCH),
            page,
            |r| {
                (which == Which::All || r.decision == Decision::Pending)
                    && r.matches(filter)
                    && visible.covers(r.computer.as_str())
            },
            |r| convert::request_view(r, &failures),
        )
        .await?)
    }

    /// Access request `id`, if `who` may see it.
    pub async fn request(&self, who: &Principal, id: u64) -> Answer<RequestView> {
        match self.store.request(id).await? {
            Some(request) if self.covers(who, &request.computer).await? => {
                Ok(convert::request_view(&request, &[]))
            }
            _ => refuse(AdminErrorCode::NotFound, format!("no request {id}")),
        }
    }

    /// Approves or denies access request `id` as `who`, with `comment`.
    pub async fn decide(
        &self,
        who: &Principal,
        id: u64,
        choice: Choice,
        comment: Option<String>,
    ) -> Answer<RequestView> {
        self.decide_as(who, id, choice, comment).await
    }

    /// The decision the mail link `token` carries, if it is valid and was
    /// sent to `who`.
    pub fn open_link(&self, who: &Principal, token: &str) -> Answer<DecisionToken> {
        match self.keys.open_decision_token(token, self.clock.now()) {
            Some(link) if link.approver == who.name() => Ok(link),
            Some(_) => refuse(
                AdminErrorCode::Forbidden,
                "This link was sent to another approver.",
            ),
            None => refuse(
                AdminErrorCode::NotFound,
                "This link is not valid, or its request has expired.",
            ),
        }
    }

    /// Makes `choice` on the request of the mail link `token`, as the approver
    /// it was sent to (the link is the proof of who they are): `choice` must
    /// be the link's.
    pub async fn decide_by_link(
        &self,
        who: &Principal,
        token: &str,
        choice: Choice,
        comment: Option<String>,
    ) -> Answer<RequestView> {
        let Some(link) = self.keys.open_decision_token(token, self.clock.now()) else {
            return refuse(AdminErrorCode::Forbidden, "this link is not valid");
        };
        if link.choice != choice {
            return refuse(
                AdminErrorCode::Conflict,
                "this link makes the other choice: use the command of its own",
            );
        }
        let approver = self.approver_named(&link.approver, who.via).await?;
        self.decide_as(&approver, link.request, link.choice, comment)
            .await
    }

    /// Has `who` decide request `id` through its computer's actor, which
    /// checks that they approve that computer and records the decision (its
    /// audit entry says who, and through what).
    async fn decide_as(
        &self,
        who: &Principal,
        id: u64,
        choice: Choice,
        comment: Option<String>,
    ) -> Answer<RequestView> {
        check_comment(comment.as_deref())?;
        let Some(by) = who.decider() else {
            return refuse(
                AdminErrorCode::Forbidden,
                "decide as an approver (--as NAME), with their password",
            );
        };
        let Some(request) = self.store.request(id).await? else {
            return refuse(AdminErrorCode::NotFound, format!("no request {id}"));
        };
        // Not theirs: refused without saying whose it is.
        let not_theirs = || {
            refuse(
                AdminErrorCode::Forbidden,
                format!("{:?} may not decide request {id}", by.name()),
            )
        };
        if !self.covers(who, &request.computer).await? {
            return not_theirs();
        }
        let decided = self
            .computers
            .decide(&request.computer, id, (&by, &who.who()), choice, comment)
            .await?;
        match decided {
            Decided::Done(request) => Ok(convert::request_view(&request, &[])),
            Decided::NotPending(request) => refuse(
                AdminErrorCode::Conflict,
                format!(
                    "request {id} is {} already",
                    convert::request_view(&request, &[]).state
                ),
            ),
            Decided::NotFound => refuse(AdminErrorCode::NotFound, format!("no request {id}")),
            Decided::NotAllowed => not_theirs(),
        }
    }

    /// Generates and mails an OTP without a request, as administrator `who`,
    /// whose `password` is asked again: until when it is valid.
    pub async fn generate(
        &self,
        who: &Principal,
        password: Secret,
        otp: Generate,
    ) -> Answer<Timestamp> {
        let Identity::User(login) = &who.identity else {
            return refuse(
                AdminErrorCode::Forbidden,
                "generate as an administrator (--as NAME), with their password",
            );
        };
        self.check_password(login, Zeroizing::new(password.0), who.via)
            .await?;
        let id = computer_id(&otp.computer)?;
        if otp.os_user.is_empty() || !is_email_address(&otp.email) {
            return refuse(
                AdminErrorCode::Invalid,
                "an OS user and an email address are needed",
            );
        }
        if otp.client == Client::Known && self.store.computer(&id).await?.is_none() {
            return refuse(
                AdminErrorCode::NotFound,
                format!(
                    "client computer {id} has never connected (a typo?); \
                     --new-client generates the OTP anyway"
                ),
            );
        }
        check_comment(otp.comment.as_deref())?;
        let comment = otp
            .comment
            .unwrap_or_else(|| DEFAULT_GENERATE_COMMENT.to_owned());
        let generated = self
            .computers
            .generate(&id, &otp.os_user, &otp.email, &comment, login)
            .await?;
        match generated {
            Generated::Send { valid_until } => Ok(valid_until),
            Generated::NotAllowed => refuse(
                AdminErrorCode::Forbidden,
                format!("{login:?} is not an administrator"),
            ),
        }
    }
}

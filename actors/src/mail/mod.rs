//! Mail: the durable outbox ([`outbox`]), how its entries become messages
//! ([`render`]), and the [`Mailer`] that delivers them ([`mailer`]).

pub mod mailer;
pub mod outbox;
pub mod render;

pub use mailer::{
    BACKOFF, BatchFuture, DEFAULT_BATCH, DEFAULT_MAX_ATTEMPTS, DeliveryError, DeliveryFuture,
    MailTransport, Mailer, MailerArgs, MailerHandle, MailerMsg,
};
pub use outbox::{MailFailure, MailKind, OutboxEntry};
pub use render::Mail;

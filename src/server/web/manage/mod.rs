//! The Management Tool's administration pages (administrators only, but for
//! the profile): System Settings, Clients and Client Groups (and each
//! client's offline codes), Users, Generate OTP, the audit log with its
//! exports, Mail. Each calls the admin service,
//! as `otpgate admin` does; the service checks that the signed-in person is an
//! administrator ([`Admin`] only shows the others a page that says so).

mod audit;
mod clients;
mod mail;
mod offline;
mod otp;
mod settings;
mod users;

pub use audit::audit;
pub use clients::{client, client_set, clients, group, group_open, group_set};
pub use mail::{mail, mail_test};
pub use offline::{offline, offline_issue, offline_void};
pub use otp::{otp, otp_generate};
pub use settings::{settings, settings_set};
pub use users::{profile, profile_password, user_add, user_set, users};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::warn;

use otpgate_protocol::admin::AdminErrorCode;

use super::App;
use super::auth::SignedIn;
use super::views::{message, nav};
use crate::server::service::ServiceError;

/// A signed-in administrator: the pages here take no one else.
pub struct Admin(pub SignedIn);

impl FromRequestParts<App> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let signed = SignedIn::from_request_parts(parts, app).await?;
        if signed.is_admin() {
            return Ok(Self(signed));
        }
        Err(message(
            StatusCode::FORBIDDEN,
            Some(nav(app, &signed).await),
            "Administrators only",
            Some("This page is for administrators.".into()),
        ))
    }
}

/// The answer to a change the service did not make: the page again
/// (`again`) with the reason and its status (422), or, to one who may not
/// make it, a page that says so (403), or the server's error page for a
/// failure (logged).
async fn not_done<F: Future<Output = Response>>(
    err: ServiceError,
    again: impl FnOnce(StatusCode, String) -> F,
) -> Response {
    match err {
        ServiceError::Refused(refused) if refused.code == AdminErrorCode::Forbidden => message(
            StatusCode::FORBIDDEN,
            None,
            "Refused",
            Some(refused.message),
        ),
        ServiceError::Refused(refused) => {
            again(StatusCode::UNPROCESSABLE_ENTITY, refused.message).await
        }
        failed => unavailable(failed),
    }
}

/// The server's error page for what a page could not read (logged).
fn unavailable(err: ServiceError) -> Response {
    warn!(error = %err, "a page could not be shown");
    message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None)
}

/// Where a page goes after a change: back to itself, saying what was done.
fn done(path: &str, what: &str) -> Response {
    Redirect::to(&format!(
        "{path}?done={}",
        crate::server::web::query_escape(what)
    ))
    .into_response()
}

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

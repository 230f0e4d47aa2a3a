//! The Management Tool's administration pages (administrators only, but for
//! the profile): System Settings, Clients and Client Groups, Users, Generate
//! OTP, the audit log with its exports, Mail. Each goes through the admin
//! handler's operations, as `otpgate admin` does.

mod audit;
mod clients;
mod mail;
mod otp;
mod settings;
mod users;

pub use audit::audit;
pub use clients::{client, client_set, clients, group, group_open, group_set};
pub use mail::{mail, mail_test};
pub use otp::{otp, otp_generate};
pub use settings::{settings, settings_set};
pub use users::{profile, profile_password, user_add, user_set, users};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::warn;

use otpgate_protocol::admin::{AdminRequest, AdminResponse};

use super::App;
use super::auth::SignedIn;
use super::views::{csrf_refused, message, nav};
use crate::server::admin;

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

/// For a change: the refusal when `csrf` is not the form's token.
fn refuse_change(signed: &SignedIn, csrf: &str) -> Option<Response> {
    (!signed.csrf_ok(csrf)).then(csrf_refused)
}

/// Runs `request` through the admin handler as `signed`.
async fn ask(app: &App, signed: &SignedIn, request: AdminRequest) -> AdminResponse {
    match admin::handle(&app.admin, &signed.operator(), request).await {
        Ok(answer) => answer,
        Err(err) => {
            warn!(error = %err, "a web admin request failed");
            AdminResponse::Fail(otpgate_protocol::admin::AdminError {
                code: otpgate_protocol::admin::AdminErrorCode::Internal,
                message: "The server could not do it; see its log.".into(),
            })
        }
    }
}

/// The answer to a change that was not done: the page again with the reason
/// (`again`), or the server's error page for an answer no change gives.
async fn not_done<F: Future<Output = Response>>(
    answer: AdminResponse,
    again: impl FnOnce(String) -> F,
) -> Response {
    match answer {
        AdminResponse::Fail(fail) => again(fail.message).await,
        other => {
            warn!(?other, "an unexpected answer to a change");
            message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None)
        }
    }
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

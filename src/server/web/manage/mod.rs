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

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::warn;

use otpgate_protocol::admin::{AdminRequest, AdminResponse};

use super::App;
use super::auth::SignedIn;
use super::views::{csrf_refused, message, nav};
use crate::server::admin;

/// A refusal for who is not an administrator.
async fn admins_only(app: &App, signed: &SignedIn) -> Option<Response> {
    (!signed.is_admin()).then_some(())?;
    Some(message(
        StatusCode::FORBIDDEN,
        Some(nav(app, signed).await),
        "Administrators only",
        Some("This page is for administrators.".into()),
    ))
}

/// For a change: the refusal when `signed` is not an administrator, or `csrf`
/// is not their form's token.
async fn refuse_change(app: &App, signed: &SignedIn, csrf: &str) -> Option<Response> {
    if let Some(refused) = admins_only(app, signed).await {
        return Some(refused);
    }
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

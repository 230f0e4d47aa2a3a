//! Mail: the messages given up on, and a test message.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use otpgate_protocol::admin::{AdminRequest, AdminResponse, PageRequest};

use super::{Admin, Done, ask, done, not_done, refuse_change};
use crate::server::web::App;
use crate::server::web::auth::SignedIn;
use crate::server::web::views::{Nav, message, nav, render, time};

struct FailureRow {
    at: String,
    to: String,
    computer: String,
    request: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "mail.html")]
struct MailPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    failures: Vec<FailureRow>,
}

async fn mail_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let page = PageRequest {
        limit: 200,
        after: None,
    };
    let AdminResponse::MailFailures(failures) =
        ask(app, signed, AdminRequest::MailFailures { page }).await
    else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None);
    };
    render(
        status,
        &MailPage {
            title: "Mail",
            nav: Some(nav(app, signed).await),
            notice,
            error,
            csrf: signed.csrf.clone(),
            failures: failures
                .items
                .iter()
                .map(|f| FailureRow {
                    at: time(f.at),
                    to: f.to.clone(),
                    computer: f.computer.clone().unwrap_or_default(),
                    request: f.request.map(|r| r.to_string()).unwrap_or_default(),
                    reason: f.reason.clone(),
                })
                .collect(),
        },
    )
}

pub async fn mail(
    State(app): State<App>,
    Admin(signed): Admin,
    Query(query): Query<Done>,
) -> Response {
    mail_page(&app, &signed, StatusCode::OK, query.done, None).await
}

#[derive(Deserialize)]
pub struct MailTestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
}

pub async fn mail_test(
    State(app): State<App>,
    Admin(signed): Admin,
    Form(form): Form<MailTestForm>,
) -> Response {
    if let Some(refused) = refuse_change(&signed, &form.csrf) {
        return refused;
    }
    let to = form.to.trim().to_owned();
    match ask(&app, &signed, AdminRequest::MailTest { to: to.clone() }).await {
        AdminResponse::MailSent { said } => done("/mail", &format!("Sent to {to}: {said}")),
        other => {
            not_done(other, |reason| async move {
                mail_page(
                    &app,
                    &signed,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    None,
                    Some(reason),
                )
                .await
            })
            .await
        }
    }
}

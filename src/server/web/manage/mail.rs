//! Mail: the messages given up on, and a test message.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use otpgate_protocol::admin::PageRequest;

use super::{Admin, Done, done, not_done, unavailable};
use crate::server::web::App;
use crate::server::web::auth::{Posted, SignedIn};
use crate::server::web::views::{Nav, nav, render, time};

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
    let failures = match app.service.mail_failures(&signed.principal, &page).await {
        Ok(failures) => failures,
        Err(err) => return unavailable(err),
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
    to: String,
}

pub async fn mail_test(
    State(app): State<App>,
    Posted { signed, form }: Posted<MailTestForm>,
) -> Response {
    let to = form.to.trim().to_owned();
    match app.service.mail_test(&signed.principal, &to).await {
        Ok(said) => done("/mail", &format!("Sent to {to}: {said}")),
        Err(err) => {
            not_done(err, |status, reason| async move {
                mail_page(&app, &signed, status, None, Some(reason)).await
            })
            .await
        }
    }
}

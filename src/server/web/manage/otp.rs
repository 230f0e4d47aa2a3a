//! Generate OTP: an OTP without a request, with the administrator's password
//! again.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use zeroize::Zeroizing;

use otpgate_protocol::login::Secret;

use super::{Admin, Done, done, not_done};
use crate::server::service::{Client, DEFAULT_GENERATE_COMMENT, Generate};
use crate::server::web::App;
use crate::server::web::auth::{Posted, SignedIn};
use crate::server::web::views::{Nav, nav, non_empty, render, time};

#[derive(Template)]
#[template(path = "otp.html")]
struct OtpPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    computer: String,
    os_user: String,
    email: String,
    comment: String,
}

#[derive(Deserialize, Default)]
pub struct OtpForm {
    #[serde(default)]
    computer: String,
    #[serde(default)]
    os_user: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    password: String,
}

async fn otp_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    form: OtpForm,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    render(
        status,
        &OtpPage {
            title: "Generate OTP",
            nav: Some(nav(app, signed).await),
            notice,
            error,
            csrf: signed.csrf.clone(),
            computer: form.computer,
            os_user: form.os_user,
            email: form.email,
            comment: if form.comment.is_empty() {
                DEFAULT_GENERATE_COMMENT.to_owned()
            } else {
                form.comment
            },
        },
    )
}

pub async fn otp(
    State(app): State<App>,
    Admin(signed): Admin,
    Query(query): Query<Done>,
) -> Response {
    otp_page(
        &app,
        &signed,
        StatusCode::OK,
        OtpForm::default(),
        query.done,
        None,
    )
    .await
}

pub async fn otp_generate(
    State(app): State<App>,
    Posted { signed, mut form }: Posted<OtpForm>,
) -> Response {
    let password = Zeroizing::new(std::mem::take(&mut form.password));
    let otp = Generate {
        computer: form.computer.trim().to_owned(),
        os_user: form.os_user.trim().to_owned(),
        email: form.email.trim().to_owned(),
        comment: non_empty(form.comment.clone()),
        client: Client::Known,
    };
    let password = Secret(password.to_string());
    match app.service.generate(&signed.principal, password, otp).await {
        Ok(valid_until) => {
            let what = format!(
                "The one-time password has been sent to {}. It is valid until {}.",
                form.email.trim(),
                time(valid_until.unix_millis())
            );
            done("/otp", &what)
        }
        Err(err) => {
            not_done(err, |status, reason| async move {
                otp_page(&app, &signed, status, form, None, Some(reason)).await
            })
            .await
        }
    }
}

//! Signing in and out of the Management Tool: the form, the password check
//! (an internal user's, or a directory account's by the directory; throttled
//! per account and per address, one answer for every wrong attempt), the
//! session cookie.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::App;
use super::auth::{self, Posted};
use super::views::{Nav, render};
use crate::server::service::{SignInError, Via};
use otpgate_actors::metrics::{SignIn, metrics};

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    next: String,
    login: String,
}

fn signin_form(status: StatusCode, next: String, login: String, error: Option<String>) -> Response {
    render(
        status,
        &SigninPage {
            title: "Sign in",
            nav: None,
            notice: None,
            error,
            next,
            login,
        },
    )
}

pub async fn signin_page(Query(query): Query<NextQuery>) -> Response {
    let next = query
        .next
        .filter(|n| auth::local_path(n))
        .unwrap_or_default();
    signin_form(StatusCode::OK, next, String::new(), None)
}

#[derive(Deserialize)]
pub struct SigninForm {
    login: String,
    password: String,
    #[serde(default)]
    next: String,
}

pub async fn signin(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<SigninForm>,
) -> Response {
    let SigninForm {
        login,
        password,
        next,
    } = form;
    let password = Zeroizing::new(password);
    let next = if auth::local_path(&next) {
        next
    } else {
        "/requests".to_owned()
    };
    if !app
        .sessions
        .may_try(&app.service.account_key(&login), peer.ip())
    {
        metrics().sign_in(SignIn::Throttled);
        return signin_form(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            login,
            Some("Too many attempts. Wait a minute and try again.".into()),
        );
    }
    let via = Via::Web {
        address: Some(peer.ip()),
    };
    let principal = match app.service.sign_in(&login, password, via).await {
        Ok(principal) => principal,
        Err(err) => {
            let (outcome, status, error) = match err {
                SignInError::Unavailable => (
                    SignIn::DirectoryUnavailable,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The directory cannot be reached. Try again shortly.".to_owned(),
                ),
                SignInError::Wrong => (
                    SignIn::Refused,
                    StatusCode::UNAUTHORIZED,
                    "Wrong login name or password.".to_owned(),
                ),
                SignInError::ChangeDue(_) => (
                    SignIn::Refused,
                    StatusCode::FORBIDDEN,
                    format!(
                        "This password was made at the first start and opens nothing until \
                         changed: otpgate admin users set {login} --password-stdin"
                    ),
                ),
                SignInError::TooManyWrong { minutes } => (
                    SignIn::Throttled,
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Too many wrong passwords for this account lately. Try again in \
                         {minutes} minutes."
                    ),
                ),
                SignInError::ApprovesNothing(_) => (
                    SignIn::Refused,
                    StatusCode::FORBIDDEN,
                    "Your account approves no client computer, so there is nothing here for \
                     you: only approvers and administrators sign in."
                        .to_owned(),
                ),
                SignInError::Failed(failed) => (
                    SignIn::Error,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    failed.told().message,
                ),
            };
            metrics().sign_in(outcome);
            return signin_form(status, next, login, Some(error));
        }
    };
    let session = match app.sessions.start(principal).await {
        Ok(session) => session,
        Err(unavailable) => {
            metrics().sign_in(SignIn::Error);
            return unavailable.into_response();
        }
    };
    metrics().sign_in(SignIn::Ok);
    let mut response = Redirect::to(&next).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&auth::session_cookie(&session)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// A form that holds nothing but its CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

pub async fn signout(State(app): State<App>, posted: Posted<Empty>) -> Response {
    if let Err(unavailable) = app.sessions.end(&posted.signed.session).await {
        return unavailable.into_response();
    }
    let mut response = Redirect::to("/signin").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&auth::cleared_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

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

use otpgate_actors::audit::{Action, AuditEntry};

use otpgate_actors::directory::is_directory_name;

use crate::server::admin::{self, SignIn};

use super::App;
use super::auth::{self, SignedIn};
use super::views::{Nav, csrf_refused, render};

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
    // One account, however it is spelled, shares one allowance.
    let account = if is_directory_name(&login) {
        app.admin.directory.canonical(&login)
    } else {
        login.clone()
    };
    if !app.sessions.may_try(&account, peer.ip()) {
        return signin_form(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            login,
            Some("Too many attempts. Wait a minute and try again.".into()),
        );
    }
    let checked = admin::sign_in(&app.admin, &login, password).await;
    let audit = |outcome: &str| AuditEntry {
        at: app.admin.clock.now(),
        who: format!("web({login}) from {}", peer.ip()),
        computer: None,
        action: Action::SignIn,
        outcome: outcome.to_owned(),
    };
    if checked == SignIn::Unavailable {
        let _ = app
            .admin
            .store
            .append_audit(&audit("refused: the directory cannot be reached"));
        return signin_form(
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            login,
            Some("The directory cannot be reached. Try again shortly.".into()),
        );
    }
    if checked == SignIn::Refused {
        let _ = app.admin.store.append_audit(&audit("refused"));
        return signin_form(
            StatusCode::UNAUTHORIZED,
            next,
            login,
            Some("Wrong login name or password.".into()),
        );
    }
    if checked == SignIn::ChangeDue {
        return signin_form(
            StatusCode::FORBIDDEN,
            next,
            login.clone(),
            Some(format!(
                "This password was made at the first start and opens nothing until changed: \
                 otpgate admin users set {login} --password-stdin"
            )),
        );
    }
    let person = match checked {
        SignIn::Person(person) => Some(person),
        _ => None,
    };
    let _ = app.admin.store.append_audit(&audit("signed in"));
    let session = app.sessions.start(&login, person);
    let mut response = Redirect::to(&next).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&auth::session_cookie(&session)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn signout(
    State(app): State<App>,
    signed: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !signed.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    app.sessions.end(&signed.session);
    let mut response = Redirect::to("/signin").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&auth::cleared_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

//! Users (add, role, password reset, disable) and everyone's Profile (their
//! own password, the current one first).

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use zeroize::Zeroizing;

use otpgate_protocol::admin::{PageRequest, RoleView};
use otpgate_protocol::login::Secret;

use super::{Admin, Done, done, not_done, unavailable};
use crate::server::service::{Answer, NewUser, UserChange};
use crate::server::web::App;
use crate::server::web::auth::{Posted, SignedIn};
use crate::server::web::views::{Nav, nav, render};

struct UserRow {
    login: String,
    email: String,
    role: &'static str,
    due: bool,
    disabled: bool,
}

fn role_name(role: RoleView) -> &'static str {
    match role {
        RoleView::Administrator => "administrator",
        RoleView::User => "user",
    }
}

fn role(text: &str) -> Option<RoleView> {
    match text {
        "administrator" => Some(RoleView::Administrator),
        "user" => Some(RoleView::User),
        _ => None,
    }
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    users: Vec<UserRow>,
}

async fn users_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let page = PageRequest {
        limit: 1000,
        after: None,
    };
    let users = match app.service.users(&signed.principal, &page) {
        Ok(users) => users,
        Err(err) => return unavailable(err),
    };
    render(
        status,
        &UsersPage {
            title: "Users",
            nav: Some(nav(app, signed).await),
            notice,
            error,
            csrf: signed.csrf.clone(),
            users: users
                .items
                .iter()
                .map(|u| UserRow {
                    login: u.login.clone(),
                    email: u.email.clone(),
                    role: role_name(u.role),
                    due: u.password_change_due,
                    disabled: u.disabled,
                })
                .collect(),
        },
    )
}

pub async fn users(
    State(app): State<App>,
    Admin(signed): Admin,
    Query(query): Query<Done>,
) -> Response {
    users_page(&app, &signed, StatusCode::OK, query.done, None).await
}

#[derive(Deserialize)]
pub struct UserForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    /// Present when the box is ticked.
    disabled: Option<String>,
}

/// Shows the outcome of a change on the users page.
async fn users_outcome(app: &App, signed: &SignedIn, answer: Answer<()>, what: &str) -> Response {
    match answer {
        Ok(()) => done("/users", what),
        Err(err) => {
            not_done(err, |status, reason| async move {
                users_page(app, signed, status, None, Some(reason)).await
            })
            .await
        }
    }
}

pub async fn user_add(
    State(app): State<App>,
    Posted { signed, form }: Posted<UserForm>,
) -> Response {
    let password = Zeroizing::new(form.password);
    let user = NewUser {
        login: form.login.trim().to_owned(),
        email: form.email.trim().to_owned(),
        role: role(&form.role).unwrap_or(RoleView::User),
        password: Secret(password.to_string()),
    };
    let answer = app.service.add_user(&signed.principal, user).await;
    users_outcome(
        &app,
        &signed,
        answer,
        &format!("User {} added.", form.login.trim()),
    )
    .await
}

pub async fn user_set(
    State(app): State<App>,
    Path(login): Path<String>,
    Posted { signed, form }: Posted<UserForm>,
) -> Response {
    let password = Zeroizing::new(form.password);
    let change = UserChange {
        email: None,
        role: role(&form.role),
        password: (!password.is_empty()).then(|| Secret(password.to_string())),
        disabled: Some(form.disabled.is_some()),
    };
    let answer = app
        .service
        .set_user(&signed.principal, &login, change)
        .await;
    users_outcome(&app, &signed, answer, &format!("User {login} changed.")).await
}

#[derive(Template)]
#[template(path = "profile.html")]
struct ProfilePage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    login: String,
    role: &'static str,
}

async fn profile_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    render(
        status,
        &ProfilePage {
            title: "Profile",
            nav: Some(nav(app, signed).await),
            notice,
            error,
            csrf: signed.csrf.clone(),
            login: signed.login().to_owned(),
            role: if signed.is_admin() {
                "administrator"
            } else {
                "user"
            },
        },
    )
}

pub async fn profile(
    State(app): State<App>,
    signed: SignedIn,
    Query(query): Query<Done>,
) -> Response {
    profile_page(&app, &signed, StatusCode::OK, query.done, None).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
}

/// Changes the signed-in person's own password: the current one first.
pub async fn profile_password(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Posted { signed, form }: Posted<PasswordForm>,
) -> Response {
    let (current, new) = (Zeroizing::new(form.current), Zeroizing::new(form.new));
    if !app.sessions.may_try(signed.login(), peer.ip()) {
        let error = "Too many attempts. Wait a minute and try again.".to_owned();
        return profile_page(
            &app,
            &signed,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            Some(error),
        )
        .await;
    }
    match app
        .service
        .change_own_password(&signed.principal, current, Secret(new.to_string()))
        .await
    {
        Ok(()) => done("/profile", "Password changed."),
        Err(err) => {
            not_done(err, |status, reason| async move {
                profile_page(&app, &signed, status, None, Some(reason)).await
            })
            .await
        }
    }
}

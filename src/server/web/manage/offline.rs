//! A client computer's offline codes: how many each OS user has left and
//! which were used, a form to issue a set (its codes shown on the answer
//! page, once), and a button to void one.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use otpgate_actors::offline::{DEFAULT_CODES, DEFAULT_VALID_DAYS};
use otpgate_protocol::admin::{OfflineSpec, OfflineView};
use otpgate_protocol::login::Secret;

use super::clients::path_segment;
use super::{Admin, Done, done, not_done, unavailable};
use crate::server::web::App;
use crate::server::web::auth::{Posted, SignedIn};
use crate::server::web::views::{Nav, nav, render, time};

/// One OS user's set as the table shows it.
struct SetRow {
    os_user: String,
    email: String,
    left: usize,
    codes: u32,
    until: String,
    issued: String,
    by: String,
    /// The codes used: their place, and when.
    used: Vec<(u32, String)>,
}

#[derive(Template)]
#[template(path = "offline.html")]
struct OfflinePage {
    title: String,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    computer: String,
    action: String,
    sets: Vec<SetRow>,
    /// The codes just issued, shown this once.
    codes: Option<Vec<String>>,
    os_user: String,
    email: String,
    count: u32,
    valid_days: u32,
}

#[derive(Deserialize)]
pub struct IssueForm {
    #[serde(default)]
    os_user: String,
    #[serde(default)]
    email: String,
    #[serde(default = "default_codes")]
    count: u32,
    #[serde(default = "default_days")]
    valid_days: u32,
}

impl Default for IssueForm {
    fn default() -> Self {
        Self {
            os_user: String::new(),
            email: String::new(),
            count: default_codes(),
            valid_days: default_days(),
        }
    }
}

fn default_codes() -> u32 {
    DEFAULT_CODES
}

fn default_days() -> u32 {
    DEFAULT_VALID_DAYS
}

#[derive(Deserialize)]
pub struct VoidForm {
    #[serde(default)]
    os_user: String,
}

/// What the page shows besides the sets.
struct Shown {
    status: StatusCode,
    form: IssueForm,
    codes: Option<Vec<String>>,
    notice: Option<String>,
    error: Option<String>,
}

async fn offline_page(app: &App, signed: &SignedIn, computer: &str, shown: Shown) -> Response {
    let sets = match app.service.offline_codes(&signed.principal, computer).await {
        Ok(sets) => sets,
        Err(err) => return unavailable(err),
    };
    let now = app.service.clock.now().unix_millis();
    render(
        shown.status,
        &OfflinePage {
            title: format!("Offline codes of {computer}"),
            nav: Some(nav(app, signed).await),
            notice: shown.notice,
            error: shown.error,
            csrf: signed.csrf.clone(),
            computer: computer.to_owned(),
            action: format!("/clients/{}/offline", path_segment(computer)),
            sets: sets.iter().map(|set| row(set, now)).collect(),
            codes: shown.codes,
            os_user: shown.form.os_user,
            email: shown.form.email,
            count: shown.form.count,
            valid_days: shown.form.valid_days,
        },
    )
}

fn row(set: &OfflineView, now: u64) -> SetRow {
    SetRow {
        os_user: set.os_user.clone(),
        email: set.email.clone(),
        left: set.left(now),
        codes: set.codes,
        until: time(set.expires_at),
        issued: time(set.issued_at),
        by: set.issued_by.clone(),
        used: set
            .used
            .iter()
            .map(|&(place, at)| (place, time(at)))
            .collect(),
    }
}

pub async fn offline(
    State(app): State<App>,
    Admin(signed): Admin,
    Path(computer): Path<String>,
    Query(query): Query<Done>,
) -> Response {
    let shown = Shown {
        status: StatusCode::OK,
        form: IssueForm::default(),
        codes: None,
        notice: query.done,
        error: None,
    };
    offline_page(&app, &signed, &computer, shown).await
}

pub async fn offline_issue(
    State(app): State<App>,
    Path(computer): Path<String>,
    Posted { signed, form }: Posted<IssueForm>,
) -> Response {
    let spec = OfflineSpec {
        computer: computer.clone(),
        os_user: form.os_user.trim().to_owned(),
        email: form.email.trim().to_owned(),
        count: form.count,
        valid_days: form.valid_days,
    };
    match app.service.issue_offline(&signed.principal, spec).await {
        Ok((codes, view)) => {
            let shown = Shown {
                status: StatusCode::OK,
                form: IssueForm::default(),
                codes: Some(codes.into_iter().map(|Secret(code)| code).collect()),
                notice: Some(format!(
                    "{} offline codes issued for {} ({}), until {}.",
                    view.codes,
                    view.os_user,
                    view.email,
                    time(view.expires_at)
                )),
                error: None,
            };
            offline_page(&app, &signed, &computer, shown).await
        }
        Err(err) => {
            not_done(err, |status, reason| async move {
                let shown = Shown {
                    status,
                    form,
                    codes: None,
                    notice: None,
                    error: Some(reason),
                };
                offline_page(&app, &signed, &computer, shown).await
            })
            .await
        }
    }
}

pub async fn offline_void(
    State(app): State<App>,
    Path(computer): Path<String>,
    Posted { signed, form }: Posted<VoidForm>,
) -> Response {
    let os_user = form.os_user.trim();
    let os_user = (!os_user.is_empty()).then_some(os_user);
    match app
        .service
        .void_offline(&signed.principal, &computer, os_user)
        .await
    {
        Ok(_) => done(
            &format!("/clients/{}/offline", path_segment(&computer)),
            "Voided.",
        ),
        Err(err) => {
            not_done(err, |status, reason| async move {
                let shown = Shown {
                    status,
                    form: IssueForm::default(),
                    codes: None,
                    notice: None,
                    error: Some(reason),
                };
                offline_page(&app, &signed, &computer, shown).await
            })
            .await
        }
    }
}

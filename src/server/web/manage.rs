//! The Management Tool's administration pages (administrators only, but for
//! the profile): System Settings, Clients and Client Groups, Users, Generate
//! OTP, the audit log with its exports, Mail. Each goes through the admin
//! handler's operations, as `otpgate admin` does.

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::warn;
use zeroize::Zeroizing;

use otpgate_actors::directory::check_password;
use otpgate_actors::settings::SystemSettings;
use otpgate_protocol::admin::{
    AdminRequest, AdminResponse, AuditView, ListFilter, OptionNameView, OptionsView, PageRequest,
    RoleView, SettingsPatch, SettingsView,
};
use otpgate_protocol::login::Secret;

use super::App;
use super::auth::SignedIn;
use super::views::{Nav, comment, csrf_refused, message, nav, render, time};
use crate::server::{admin, convert};

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
    Redirect::to(&format!("{path}?done={}", super::query_escape(what))).into_response()
}

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

/// One setting as the form shows it.
struct SettingRow {
    name: &'static str,
    label: &'static str,
    unit: &'static str,
    value: u64,
    default: u64,
}

/// The settings form's fields: name, label, unit, divisor from the view's
/// unit, and the view's field.
type SettingField = (
    &'static str,
    &'static str,
    &'static str,
    u64,
    fn(&SettingsView) -> u64,
);

const SETTINGS: [SettingField; 10] = [
    (
        "expiration_minutes",
        "Access Request Expiration Time",
        "minutes",
        60,
        |s| s.expiration_secs,
    ),
    (
        "new_otp_interval_minutes",
        "Time between two new OTPs",
        "minutes",
        60,
        |s| s.new_otp_interval_secs,
    ),
    ("otp_length", "OTP length", "digits", 1, |s| {
        u64::from(s.otp_length)
    }),
    (
        "max_attempts",
        "Wrong attempts before an OTP locks",
        "attempts",
        1,
        |s| u64::from(s.max_attempts),
    ),
    (
        "max_failures",
        "Failures per computer and per account within the window",
        "failures",
        1,
        |s| u64::from(s.max_failures),
    ),
    (
        "failure_window_minutes",
        "Failure window",
        "minutes",
        60,
        |s| s.failure_window_secs,
    ),
    (
        "resend_gap_secs",
        "Shortest time between two emails of one OTP",
        "seconds",
        1,
        |s| s.resend_gap_secs,
    ),
    (
        "max_new_per_computer",
        "New OTPs and requests per computer within the window",
        "per window",
        1,
        |s| u64::from(s.max_new_per_computer),
    ),
    (
        "session_timeout_minutes",
        "Client session timeout without its agent",
        "minutes",
        60,
        |s| s.session_timeout_secs,
    ),
    (
        "retention_days",
        "Keep the audit log and finished records",
        "days",
        1,
        |s| s.retention_days,
    ),
];

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    rows: Vec<SettingRow>,
}

async fn settings_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let AdminResponse::Settings(current) = ask(app, signed, AdminRequest::SettingsGet).await else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None);
    };
    let defaults = convert::settings_view(&SystemSettings::default());
    let rows = SETTINGS
        .iter()
        .map(|(name, label, unit, divisor, field)| SettingRow {
            name,
            label,
            unit,
            value: field(&current) / divisor,
            default: field(&defaults) / divisor,
        })
        .collect();
    render(
        status,
        &SettingsPage {
            title: "System Settings",
            nav: Some(nav(app, signed).await),
            notice,
            error,
            csrf: signed.csrf.clone(),
            rows,
        },
    )
}

pub async fn settings(
    State(app): State<App>,
    signed: SignedIn,
    Query(query): Query<Done>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    settings_page(&app, &signed, StatusCode::OK, query.done, None).await
}

pub async fn settings_set(
    State(app): State<App>,
    signed: SignedIn,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    if !signed.csrf_ok(form.get("csrf").map_or("", String::as_str)) {
        return csrf_refused();
    }
    let mut values = HashMap::new();
    for (name, label, _, factor, _) in SETTINGS {
        match form.get(name).map(|v| v.trim().parse::<u64>()) {
            Some(Ok(value)) => {
                values.insert(name, value.saturating_mul(factor));
            }
            _ => {
                let error = format!("{label}: give a whole number.");
                return settings_page(
                    &app,
                    &signed,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    None,
                    Some(error),
                )
                .await;
            }
        }
    }
    let narrow = |name| u32::try_from(values[name]).unwrap_or(u32::MAX);
    let patch = SettingsPatch {
        expiration_secs: Some(values["expiration_minutes"]),
        new_otp_interval_secs: Some(values["new_otp_interval_minutes"]),
        otp_length: Some(u8::try_from(values["otp_length"]).unwrap_or(u8::MAX)),
        max_attempts: Some(narrow("max_attempts")),
        max_failures: Some(narrow("max_failures")),
        failure_window_secs: Some(values["failure_window_minutes"]),
        resend_gap_secs: Some(values["resend_gap_secs"]),
        max_new_per_computer: Some(narrow("max_new_per_computer")),
        session_timeout_secs: Some(values["session_timeout_minutes"]),
        retention_days: Some(values["retention_days"]),
    };
    match ask(&app, &signed, AdminRequest::SettingsSet(patch)).await {
        AdminResponse::Settings(_) => done("/settings", "Settings saved."),
        AdminResponse::Fail(fail) => {
            settings_page(
                &app,
                &signed,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(fail.message),
            )
            .await
        }
        _ => message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    }
}

/// An option's value in a table, and whether it is inherited.
struct Cell {
    value: String,
    inherited: bool,
}

fn cells(own: &OptionsView, effective: Option<&OptionsView>) -> Vec<Cell> {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let cell = |own: Option<String>, inherited: Option<String>| match own {
        Some(value) => Cell {
            value,
            inherited: false,
        },
        None => Cell {
            value: inherited.unwrap_or_else(|| "(default)".into()),
            inherited: true,
        },
    };
    let names = |list: &Vec<String>| {
        if list.is_empty() {
            "(the administrators)".to_owned()
        } else {
            list.join(", ")
        }
    };
    vec![
        cell(
            own.allow_otp.map(yes_no),
            effective.and_then(|e| e.allow_otp).map(yes_no),
        ),
        cell(
            own.auto_directory.map(yes_no),
            effective.and_then(|e| e.auto_directory).map(yes_no),
        ),
        cell(
            own.auto_internal.map(yes_no),
            effective.and_then(|e| e.auto_internal).map(yes_no),
        ),
        cell(
            own.approvers.as_ref().map(names),
            effective.and_then(|e| e.approvers.as_ref()).map(names),
        ),
    ]
}

struct ClientRow {
    href: String,
    computer: String,
    online: bool,
    last_seen: String,
    group: String,
    cells: Vec<Cell>,
}

struct GroupRow {
    href: String,
    name: String,
    cells: Vec<Cell>,
}

#[derive(Template)]
#[template(path = "clients.html")]
struct ClientsPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    clients: Vec<ClientRow>,
    groups: Vec<GroupRow>,
}

pub async fn clients(State(app): State<App>, signed: SignedIn) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    let page = PageRequest {
        limit: 1000,
        after: None,
    };
    let clients = match ask(&app, &signed, AdminRequest::ClientsList { page }).await {
        AdminResponse::Clients(page) => page.items,
        _ => return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    };
    let groups = match ask(&app, &signed, AdminRequest::GroupsList).await {
        AdminResponse::Groups(groups) => groups,
        _ => return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    };
    render(
        StatusCode::OK,
        &ClientsPage {
            title: "Clients",
            nav: Some(nav(&app, &signed).await),
            notice: None,
            error: None,
            clients: clients
                .iter()
                .map(|c| ClientRow {
                    href: format!("/clients/{}", path_segment(&c.computer)),
                    computer: c.computer.clone(),
                    online: c.connected_since.is_some(),
                    last_seen: time(c.last_seen),
                    group: c.group.clone().unwrap_or_default(),
                    cells: cells(&c.options, Some(&c.effective)),
                })
                .collect(),
            groups: groups
                .iter()
                .map(|g| GroupRow {
                    href: format!("/groups/{}", path_segment(&g.name)),
                    name: g.name.clone(),
                    cells: cells(&g.options, None),
                })
                .collect(),
        },
    )
}

/// `text` as one segment of a URL's path.
fn path_segment(text: &str) -> String {
    super::query_escape(text).replace('/', "%2F")
}

/// A yes/no option as its form shows it.
struct SelectRow {
    name: &'static str,
    label: &'static str,
    current: &'static str,
    effective: String,
}

#[derive(Template)]
#[template(path = "options.html")]
struct OptionsPage {
    title: String,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    action: String,
    /// For a client: every group, and whether it is the client's.
    groups: Option<Vec<(String, bool)>>,
    rows: Vec<SelectRow>,
    approvers: String,
    approvers_inherit: bool,
    approvers_effective: String,
}

/// The yes/no options: form name, label, and the field of a view.
type FlagField = (&'static str, &'static str, fn(&OptionsView) -> Option<bool>);

const FLAGS: [FlagField; 3] = [
    ("allow_otp", "Allow the use of one-time passwords", |o| {
        o.allow_otp
    }),
    (
        "auto_directory",
        "Automatically send one-time passwords to Active Directory users",
        |o| o.auto_directory,
    ),
    (
        "auto_internal",
        "Automatically send one-time passwords to internal users",
        |o| o.auto_internal,
    ),
];

/// The form for `own` options, `effective` beside them where known.
#[allow(clippy::too_many_arguments)]
async fn options_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    title: String,
    action: String,
    groups: Option<Vec<(String, bool)>>,
    own: &OptionsView,
    effective: Option<&OptionsView>,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "inherit",
    };
    let in_force = |b: Option<bool>| match b {
        Some(b) => yes_no(Some(b)).to_owned(),
        None => "from the group or the defaults".to_owned(),
    };
    let rows = FLAGS
        .iter()
        .map(|(name, label, field)| SelectRow {
            name,
            label,
            current: yes_no(field(own)),
            effective: in_force(effective.and_then(field)),
        })
        .collect();
    let approvers_effective = match effective.and_then(|e| e.approvers.as_ref()) {
        Some(list) if list.is_empty() => "(the administrators)".to_owned(),
        Some(list) => list.join(", "),
        None => "from the group or the defaults".to_owned(),
    };
    render(
        status,
        &OptionsPage {
            title,
            nav: Some(nav(app, signed).await),
            notice,
            error,
            csrf: signed.csrf.clone(),
            action,
            groups,
            rows,
            approvers: own
                .approvers
                .as_ref()
                .map(|a| a.join(", "))
                .unwrap_or_default(),
            approvers_inherit: own.approvers.is_none(),
            approvers_effective,
        },
    )
}

/// The options a submitted form sets, and what it puts back to inherit.
fn options_from(form: &HashMap<String, String>) -> OptionsView {
    let mut view = OptionsView::default();
    let names = [
        OptionNameView::AllowOtp,
        OptionNameView::AutoDirectory,
        OptionNameView::AutoInternal,
    ];
    for ((name, _, _), option) in FLAGS.iter().zip(names) {
        let value = match form.get(*name).map(String::as_str) {
            Some("yes") => Some(true),
            Some("no") => Some(false),
            _ => {
                view.inherit.push(option);
                None
            }
        };
        match option {
            OptionNameView::AllowOtp => view.allow_otp = value,
            OptionNameView::AutoDirectory => view.auto_directory = value,
            _ => view.auto_internal = value,
        }
    }
    if form.get("approvers_inherit").is_some() {
        view.inherit.push(OptionNameView::Approvers);
    } else {
        let list = form.get("approvers").map_or("", String::as_str);
        view.approvers = Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    view
}

/// A client as its form shows it, with the groups to choose from.
async fn client_form(
    app: &App,
    signed: &SignedIn,
    name: &str,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let page = PageRequest {
        limit: 1000,
        after: None,
    };
    let client = match ask(app, signed, AdminRequest::ClientsList { page }).await {
        AdminResponse::Clients(page) => page.items.into_iter().find(|c| c.computer == name),
        _ => None,
    };
    let Some(client) = client else {
        return message(
            StatusCode::NOT_FOUND,
            Some(nav(app, signed).await),
            "Not found",
            Some(format!("No client computer {name}.")),
        );
    };
    let groups = match ask(app, signed, AdminRequest::GroupsList).await {
        AdminResponse::Groups(groups) => groups
            .into_iter()
            .map(|g| {
                let mine = client.group.as_deref() == Some(g.name.as_str());
                (g.name, mine)
            })
            .collect(),
        _ => Vec::new(),
    };
    options_page(
        app,
        signed,
        status,
        format!("Client {name}"),
        format!("/clients/{}", path_segment(name)),
        Some(groups),
        &client.options,
        Some(&client.effective),
        notice,
        error,
    )
    .await
}

pub async fn client(
    State(app): State<App>,
    signed: SignedIn,
    Path(name): Path<String>,
    Query(query): Query<Done>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    client_form(&app, &signed, &name, StatusCode::OK, query.done, None).await
}

pub async fn client_set(
    State(app): State<App>,
    signed: SignedIn,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    if !signed.csrf_ok(form.get("csrf").map_or("", String::as_str)) {
        return csrf_refused();
    }
    let group = form.get("group").map(|g| g.trim().to_owned());
    let request = AdminRequest::ClientSet {
        computer: name.clone(),
        group: Some(group.filter(|g| !g.is_empty())),
        options: options_from(&form),
    };
    match ask(&app, &signed, request).await {
        AdminResponse::Done => done(&format!("/clients/{}", path_segment(&name)), "Saved."),
        AdminResponse::Fail(fail) => {
            client_form(
                &app,
                &signed,
                &name,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(fail.message),
            )
            .await
        }
        _ => message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    }
}

#[derive(Deserialize)]
pub struct GroupQuery {
    #[serde(default)]
    name: String,
}

/// The "new group" form: to the group's own page.
pub async fn group_open(Query(query): Query<GroupQuery>) -> Redirect {
    Redirect::to(&format!("/groups/{}", path_segment(query.name.trim())))
}

async fn group_form(
    app: &App,
    signed: &SignedIn,
    name: &str,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let own = match ask(app, signed, AdminRequest::GroupsList).await {
        AdminResponse::Groups(groups) => groups
            .into_iter()
            .find(|g| g.name == name)
            .map(|g| g.options)
            .unwrap_or_default(),
        _ => OptionsView::default(),
    };
    options_page(
        app,
        signed,
        status,
        format!("Client group {name}"),
        format!("/groups/{}", path_segment(name)),
        None,
        &own,
        None,
        notice,
        error,
    )
    .await
}

pub async fn group(
    State(app): State<App>,
    signed: SignedIn,
    Path(name): Path<String>,
    Query(query): Query<Done>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    group_form(&app, &signed, &name, StatusCode::OK, query.done, None).await
}

pub async fn group_set(
    State(app): State<App>,
    signed: SignedIn,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    if !signed.csrf_ok(form.get("csrf").map_or("", String::as_str)) {
        return csrf_refused();
    }
    let request = AdminRequest::GroupSet {
        name: name.clone(),
        options: options_from(&form),
    };
    match ask(&app, &signed, request).await {
        AdminResponse::Done => done(&format!("/groups/{}", path_segment(&name)), "Saved."),
        AdminResponse::Fail(fail) => {
            group_form(
                &app,
                &signed,
                &name,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(fail.message),
            )
            .await
        }
        _ => message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    }
}

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
    let AdminResponse::Users(users) = ask(app, signed, AdminRequest::UsersList { page }).await
    else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None);
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
    signed: SignedIn,
    Query(query): Query<Done>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    users_page(&app, &signed, StatusCode::OK, query.done, None).await
}

#[derive(Deserialize)]
pub struct UserForm {
    #[serde(default)]
    csrf: String,
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
async fn users_outcome(
    app: &App,
    signed: &SignedIn,
    answer: AdminResponse,
    what: &str,
) -> Response {
    match answer {
        AdminResponse::Done => done("/users", what),
        AdminResponse::Fail(fail) => {
            users_page(
                app,
                signed,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(fail.message),
            )
            .await
        }
        _ => message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    }
}

pub async fn user_add(
    State(app): State<App>,
    signed: SignedIn,
    Form(form): Form<UserForm>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    if !signed.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let password = Zeroizing::new(form.password);
    let request = AdminRequest::UserAdd {
        login: form.login.trim().to_owned(),
        email: form.email.trim().to_owned(),
        role: role(&form.role).unwrap_or(RoleView::User),
        password: Secret(password.to_string()),
    };
    let answer = ask(&app, &signed, request).await;
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
    signed: SignedIn,
    Path(login): Path<String>,
    Form(form): Form<UserForm>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    if !signed.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let password = Zeroizing::new(form.password);
    let request = AdminRequest::UserSet {
        login: login.clone(),
        email: None,
        role: role(&form.role),
        password: (!password.is_empty()).then(|| Secret(password.to_string())),
        disabled: Some(form.disabled.is_some()),
    };
    let answer = ask(&app, &signed, request).await;
    users_outcome(&app, &signed, answer, &format!("User {login} changed.")).await
}

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
    csrf: String,
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
                admin::DEFAULT_GENERATE_COMMENT.to_owned()
            } else {
                form.comment
            },
        },
    )
}

pub async fn otp(State(app): State<App>, signed: SignedIn, Query(query): Query<Done>) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
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
    signed: SignedIn,
    Form(mut form): Form<OtpForm>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    if !signed.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let password = Zeroizing::new(std::mem::take(&mut form.password));
    let request = AdminRequest::OtpGenerate {
        computer: form.computer.trim().to_owned(),
        os_user: form.os_user.trim().to_owned(),
        email: form.email.trim().to_owned(),
        comment: comment(form.comment.clone()),
        by: signed.login.clone(),
        password: Secret(password.to_string()),
        new_client: false,
    };
    match ask(&app, &signed, request).await {
        AdminResponse::Generated { valid_until } => {
            let what = format!(
                "The one-time password has been sent to {}. It is valid until {}.",
                form.email.trim(),
                time(valid_until)
            );
            done("/otp", &what)
        }
        AdminResponse::Fail(fail) => {
            otp_page(
                &app,
                &signed,
                StatusCode::UNPROCESSABLE_ENTITY,
                form,
                None,
                Some(fail.message),
            )
            .await
        }
        _ => message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    }
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    computer: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    format: String,
}

impl AuditQuery {
    /// The query again, without the cursor and format.
    fn query(&self) -> String {
        [
            ("computer", &self.computer),
            ("user", &self.user),
            ("kind", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}", super::query_escape(value)))
        .collect::<Vec<_>>()
        .join("&")
    }

    fn filter(&self) -> ListFilter {
        ListFilter {
            computer: comment(self.computer.clone()),
            user: comment(self.user.clone()),
            since: minute(&self.since),
            until: minute(&self.until),
        }
    }
}

/// A `datetime-local` value, read as UTC, in milliseconds since the epoch.
fn minute(text: &str) -> Option<u64> {
    let format =
        time::format_description::parse_borrowed::<2>("[year]-[month]-[day]T[hour]:[minute]")
            .ok()?;
    let at = time::PrimitiveDateTime::parse(text.trim(), &format).ok()?;
    u64::try_from(at.assume_utc().unix_timestamp())
        .ok()
        .map(|s| s * 1000)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cursor from the URL; `None` (the first page) for nothing or nonsense.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

struct AuditRow {
    at: String,
    who: String,
    computer: String,
    action: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    computer: String,
    user: String,
    kind: String,
    since: String,
    until: String,
    query: String,
    entries: Vec<AuditRow>,
    next: Option<String>,
}

/// The most entries an export holds.
const MAX_EXPORT: usize = 10_000;

pub async fn audit(
    State(app): State<App>,
    signed: SignedIn,
    Query(query): Query<AuditQuery>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    let kind = query.kind.trim().to_owned();
    let keep = |e: &AuditView| kind.is_empty() || e.action == kind;
    if query.format == "csv" || query.format == "json" {
        let mut entries = Vec::new();
        let mut after = None;
        while entries.len() < MAX_EXPORT {
            let request = AdminRequest::AuditList {
                filter: query.filter(),
                page: PageRequest { limit: 1000, after },
            };
            let AdminResponse::Audit(page) = ask(&app, &signed, request).await else {
                return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None);
            };
            entries.extend(page.items.into_iter().filter(keep));
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        entries.truncate(MAX_EXPORT);
        return export(&entries, &query.format);
    }
    let request = AdminRequest::AuditList {
        filter: query.filter(),
        page: PageRequest {
            limit: 100,
            after: unhex(&query.after),
        },
    };
    let AdminResponse::Audit(page) = ask(&app, &signed, request).await else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None);
    };
    let entries = page
        .items
        .iter()
        .filter(|e| keep(e))
        .map(|e| AuditRow {
            at: time(e.at),
            who: e.who.clone(),
            computer: e.computer.clone().unwrap_or_default(),
            action: e.action.clone(),
            outcome: e.outcome.clone(),
        })
        .collect();
    render(
        StatusCode::OK,
        &AuditPage {
            title: "Audit log",
            nav: Some(nav(&app, &signed).await),
            notice: None,
            error: None,
            query: query.query(),
            computer: query.computer,
            user: query.user,
            kind: query.kind,
            since: query.since,
            until: query.until,
            entries,
            next: page.next.as_deref().map(hex),
        },
    )
}

/// One CSV field: quoted, and never read as a formula by a spreadsheet.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn export(entries: &[AuditView], format: &str) -> Response {
    if format == "json" {
        return match serde_json::to_string(entries) {
            Ok(body) => (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"audit.json\"",
                    ),
                ],
                body,
            )
                .into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    let mut body = String::from("at,who,computer,action,outcome\r\n");
    for e in entries {
        let fields = [
            time(e.at),
            e.who.clone(),
            e.computer.clone().unwrap_or_default(),
            e.action.clone(),
            e.outcome.clone(),
        ];
        body.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        body.push_str("\r\n");
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        body,
    )
        .into_response()
}

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

pub async fn mail(State(app): State<App>, signed: SignedIn, Query(query): Query<Done>) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
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
    signed: SignedIn,
    Form(form): Form<MailTestForm>,
) -> Response {
    if let Some(refused) = admins_only(&app, &signed).await {
        return refused;
    }
    if !signed.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let to = form.to.trim().to_owned();
    match ask(&app, &signed, AdminRequest::MailTest { to: to.clone() }).await {
        AdminResponse::MailSent { said } => done("/mail", &format!("Sent to {to}: {said}")),
        AdminResponse::Fail(fail) => {
            mail_page(
                &app,
                &signed,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(fail.message),
            )
            .await
        }
        _ => message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    }
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
            login: signed.login.clone(),
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
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
}

/// Changes the signed-in person's own password: the current one first.
pub async fn profile_password(
    State(app): State<App>,
    signed: SignedIn,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<PasswordForm>,
) -> Response {
    if !signed.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let (current, new) = (Zeroizing::new(form.current), Zeroizing::new(form.new));
    if !app.sessions.may_try(&signed.login, peer.ip()) {
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
    let user = app.admin.policy.snapshot().user(&signed.login).cloned();
    if !check_password(user, current).await {
        let error = "The current password is not right.".to_owned();
        return profile_page(
            &app,
            &signed,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(error),
        )
        .await;
    }
    let request = AdminRequest::UserSet {
        login: signed.login.clone(),
        email: None,
        role: None,
        password: Some(Secret(new.to_string())),
        disabled: None,
    };
    match ask(&app, &signed, request).await {
        AdminResponse::Done => done("/profile", "Password changed."),
        AdminResponse::Fail(fail) => {
            profile_page(
                &app,
                &signed,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(fail.message),
            )
            .await
        }
        _ => message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("a \"b\", c"), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }

    #[test]
    fn cursors_survive_the_url() {
        let cursor = vec![0, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&cursor)), Some(cursor));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex(""), None, "the first page");
        assert_eq!(unhex("zz"), None);
        assert_eq!(minute("2026-11-30T10:15"), Some(1_796_033_700_000));
    }
}

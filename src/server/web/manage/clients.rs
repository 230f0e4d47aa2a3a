//! Clients and Client Groups: status and options, inherited values marked,
//! each changed on its own page and put back to inherit if wanted.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use serde::Deserialize;

use otpgate_protocol::admin::{OptionNameView, OptionsView, PageRequest};

use super::{Admin, Done, done, not_done, unavailable};
use crate::server::service::ServiceError;
use crate::server::web::App;
use crate::server::web::auth::{Posted, SignedIn};
use crate::server::web::views::{Nav, message, nav, render, time};

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
            own.record_input.map(yes_no),
            effective.and_then(|e| e.record_input).map(yes_no),
        ),
        cell(
            own.approvers.as_ref().map(names),
            effective.and_then(|e| e.approvers.as_ref()).map(names),
        ),
    ]
}

struct ClientRow {
    href: String,
    /// Its offline codes' page.
    offline: String,
    computer: String,
    online: bool,
    last_seen: String,
    /// Its agent's software and protocol version.
    agent: String,
    /// Its certificate, if it enrolled: until when, and since when enrolled.
    certificate: Option<(String, String)>,
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

pub async fn clients(State(app): State<App>, Admin(signed): Admin) -> Response {
    let page = PageRequest {
        limit: 1000,
        after: None,
    };
    let clients = match app.service.clients(&signed.principal, &page).await {
        Ok(page) => page.items,
        Err(err) => return unavailable(err),
    };
    let groups = match app.service.groups(&signed.principal) {
        Ok(groups) => groups,
        Err(err) => return unavailable(err),
    };
    let certificates: HashMap<String, (String, String)> =
        match app.service.certificates(&signed.principal).await {
            Ok(certs) => certs
                .into_iter()
                .map(|c| (c.computer, (time(c.expires_at), time(c.enrolled_at))))
                .collect(),
            Err(err) => return unavailable(err),
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
                    offline: format!("/clients/{}/offline", path_segment(&c.computer)),
                    computer: c.computer.clone(),
                    online: c.connected_since.is_some(),
                    last_seen: time(c.last_seen),
                    agent: c.agent(),
                    certificate: certificates.get(&c.computer).cloned(),
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
pub(super) fn path_segment(text: &str) -> String {
    crate::server::web::query_escape(text).replace('/', "%2F")
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

const FLAGS: [FlagField; 4] = [
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
    (
        "record_input",
        "Record typed input in recorded terminals (passwords typed at prompts too)",
        |o| o.record_input,
    ),
];

/// What an options form shows: a client's or a group's.
struct Options<'a> {
    /// The page's title.
    title: String,
    /// Where the form posts.
    action: String,
    /// A client's choice of groups (with its own marked); none for a group.
    groups: Option<Vec<(String, bool)>>,
    /// Its own options.
    own: &'a OptionsView,
    /// Those in force, where known.
    effective: Option<&'a OptionsView>,
}

/// The form of `options`, with a `notice` or an `error`.
async fn options_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    options: Options<'_>,
    (notice, error): (Option<String>, Option<String>),
) -> Response {
    let Options {
        title,
        action,
        groups,
        own,
        effective,
    } = options;
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
        OptionNameView::RecordInput,
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
            OptionNameView::AutoInternal => view.auto_internal = value,
            _ => view.record_input = value,
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
    let client = match app.service.client(&signed.principal, name).await {
        Ok(client) => client,
        Err(err @ ServiceError::Refused(_)) => {
            return message(
                StatusCode::NOT_FOUND,
                Some(nav(app, signed).await),
                "Not found",
                Some(err.told().message),
            );
        }
        Err(err) => return unavailable(err),
    };
    let groups = match app.service.groups(&signed.principal) {
        Ok(groups) => groups
            .into_iter()
            .map(|g| {
                let mine = client.group.as_deref() == Some(g.name.as_str());
                (g.name, mine)
            })
            .collect(),
        Err(err) => return unavailable(err),
    };
    let options = Options {
        title: format!("Client {name}"),
        action: format!("/clients/{}", path_segment(name)),
        groups: Some(groups),
        own: &client.options,
        effective: Some(&client.effective),
    };
    options_page(app, signed, status, options, (notice, error)).await
}

pub async fn client(
    State(app): State<App>,
    Admin(signed): Admin,
    Path(name): Path<String>,
    Query(query): Query<Done>,
) -> Response {
    client_form(&app, &signed, &name, StatusCode::OK, query.done, None).await
}

pub async fn client_set(
    State(app): State<App>,
    Path(name): Path<String>,
    Posted { signed, form }: Posted<HashMap<String, String>>,
) -> Response {
    let group = form.get("group").map(|g| g.trim().to_owned());
    let group = Some(group.filter(|g| !g.is_empty()));
    let options = options_from(&form);
    match app
        .service
        .set_client(&signed.principal, &name, group, &options)
        .await
    {
        Ok(()) => done(&format!("/clients/{}", path_segment(&name)), "Saved."),
        Err(err) => {
            not_done(err, |status, reason| async move {
                client_form(&app, &signed, &name, status, None, Some(reason)).await
            })
            .await
        }
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
    let own = match app.service.groups(&signed.principal) {
        Ok(groups) => groups
            .into_iter()
            .find(|g| g.name == name)
            .map(|g| g.options)
            .unwrap_or_default(),
        Err(err) => return unavailable(err),
    };
    let options = Options {
        title: format!("Client group {name}"),
        action: format!("/groups/{}", path_segment(name)),
        groups: None,
        own: &own,
        effective: None,
    };
    options_page(app, signed, status, options, (notice, error)).await
}

pub async fn group(
    State(app): State<App>,
    Admin(signed): Admin,
    Path(name): Path<String>,
    Query(query): Query<Done>,
) -> Response {
    group_form(&app, &signed, &name, StatusCode::OK, query.done, None).await
}

pub async fn group_set(
    State(app): State<App>,
    Path(name): Path<String>,
    Posted { signed, form }: Posted<HashMap<String, String>>,
) -> Response {
    let options = options_from(&form);
    match app
        .service
        .set_group(&signed.principal, &name, &options)
        .await
    {
        Ok(()) => done(&format!("/groups/{}", path_segment(&name)), "Saved."),
        Err(err) => {
            not_done(err, |status, reason| async move {
                group_form(&app, &signed, &name, status, None, Some(reason)).await
            })
            .await
        }
    }
}

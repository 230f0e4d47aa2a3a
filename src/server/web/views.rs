//! The approvers' pages of the Management Tool: Access Requests (decided here or from
//! a mail link, always by a POST), Client Sessions, and the live pending count.
//! Lists come from the admin service, which cuts them to the computers the
//! signed-in person approves unless they are an administrator.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::warn;

use otpgate_actors::request::Choice;
use otpgate_protocol::admin::{
    AdminErrorCode, Decision, ListFilter, MAX_PAGE, PageRequest, RecordingView, RequestView,
    SessionView,
};

use super::App;
use super::auth::{Held, Posted, SignedIn};
use crate::server::service::{Open, ServiceError, Which};

/// The most entries a list page shows.
const PAGE: u32 = 200;

/// What the navigation shows to a signed-in person.
pub(super) struct Nav {
    pub(super) login: String,
    pub(super) csrf: String,
    pub(super) pending: usize,
    pub(super) admin: bool,
}

/// A page in words, for a status other than 200.
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    title: String,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
}

pub(super) fn message(
    status: StatusCode,
    nav: Option<Nav>,
    title: &str,
    error: Option<String>,
) -> Response {
    render(
        status,
        &MessagePage {
            title: title.to_owned(),
            nav,
            notice: None,
            error,
        },
    )
}

pub(super) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            warn!(error = %err, "a page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be shown",
            )
                .into_response()
        }
    }
}

/// A time as the pages carry it: RFC 3339 in UTC (the script shows it local).
pub(super) use otpgate_actors::clock::shown as time;

pub async fn home() -> Redirect {
    Redirect::to("/requests")
}

pub(super) fn csrf_refused() -> Response {
    message(
        StatusCode::FORBIDDEN,
        None,
        "Refused",
        Some("This form has expired. Reload the page and try again.".into()),
    )
}

pub(super) async fn nav(app: &App, signed: &SignedIn) -> Nav {
    let page = PageRequest {
        limit: PAGE,
        after: None,
    };
    let pending = app
        .service
        .requests(
            &signed.principal,
            Which::Pending,
            &ListFilter::default(),
            &page,
        )
        .await
        .map_or(0, |page| page.items.len());
    nav_with(signed, pending)
}

/// The navigation of `signed`, `pending` requests waiting for them.
fn nav_with(signed: &SignedIn, pending: usize) -> Nav {
    Nav {
        login: signed.login().to_owned(),
        csrf: signed.csrf.clone(),
        pending,
        admin: signed.is_admin(),
    }
}

/// A request as a page shows it.
struct RequestRow {
    id: u64,
    computer: String,
    os_user: String,
    email: String,
    emergency: bool,
    created: String,
    expires: String,
    state: &'static str,
    pending: bool,
    decided_by: String,
    comment: String,
}

impl From<&RequestView> for RequestRow {
    fn from(r: &RequestView) -> Self {
        Self {
            id: r.id,
            computer: r.computer.clone(),
            os_user: r.os_user.clone(),
            email: r.email.clone(),
            emergency: r.emergency,
            created: time(r.created),
            expires: time(r.expires),
            state: match r.state {
                Decision::Pending => "pending",
                Decision::Approve => "approved",
                Decision::Deny => "denied",
                Decision::Expire => "expired",
            },
            pending: r.state == Decision::Pending,
            decided_by: r.decided_by.clone().unwrap_or_default(),
            comment: r.comment.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "requests.html")]
struct RequestsPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    pending: Vec<RequestRow>,
    decided: Vec<RequestRow>,
}

#[derive(Deserialize)]
pub struct RequestsQuery {
    done: Option<String>,
}

pub async fn requests(
    State(app): State<App>,
    signed: SignedIn,
    Query(query): Query<RequestsQuery>,
) -> Response {
    requests_page(&app, &signed, StatusCode::OK, query.done, None).await
}

async fn requests_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    // The requests `signed` may see, newest page first by computer.
    let page = PageRequest {
        limit: PAGE,
        after: None,
    };
    let listed = app
        .service
        .requests(&signed.principal, Which::All, &ListFilter::default(), &page)
        .await;
    let requests = match listed {
        Ok(page) => page.items,
        Err(err) => {
            warn!(error = %err, "the requests could not be listed");
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "Unavailable",
                Some("The requests could not be listed; see the server's log.".into()),
            );
        }
    };
    let (pending, mut decided): (Vec<_>, Vec<_>) = requests
        .iter()
        .map(RequestRow::from)
        .partition(|r| r.pending);
    // The history newest first, as the audit log lists.
    decided.sort_by_key(|r| std::cmp::Reverse(r.id));
    render(
        status,
        &RequestsPage {
            title: "Access Requests",
            // The list is at hand: the badge is counted from it, not listed again.
            nav: Some(nav_with(signed, pending.len())),
            notice,
            error,
            csrf: signed.csrf.clone(),
            pending,
            decided,
        },
    )
}

#[derive(Deserialize)]
pub struct DecideForm {
    choice: String,
    #[serde(default)]
    comment: String,
}

fn choice(text: &str) -> Option<Choice> {
    match text {
        "approve" => Some(Choice::Approve),
        "deny" => Some(Choice::Deny),
        _ => None,
    }
}

/// `text` trimmed, or `None` when that leaves nothing (an empty comment or
/// filter field).
pub(super) fn non_empty(text: String) -> Option<String> {
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Decides request `id` as `signed` and shows the requests page with the
/// outcome.
async fn decide_and_show(
    app: &App,
    signed: &SignedIn,
    id: u64,
    choice: Choice,
    comment: Option<String>,
) -> Response {
    match app
        .service
        .decide(&signed.principal, id, choice, comment)
        .await
    {
        Ok(request) => {
            let done = format!(
                "Request #{} {}.",
                request.id,
                if choice == Choice::Approve {
                    "approved: the one-time password is on its way"
                } else {
                    "denied"
                }
            );
            Redirect::to(&format!("/requests?done={}", super::query_escape(&done))).into_response()
        }
        Err(ServiceError::Refused(refused)) => {
            let status = match refused.code {
                AdminErrorCode::Forbidden => StatusCode::FORBIDDEN,
                AdminErrorCode::NotFound => StatusCode::NOT_FOUND,
                AdminErrorCode::Conflict => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            requests_page(app, signed, status, None, Some(refused.message)).await
        }
        Err(err) => {
            err.told();
            requests_page(
                app,
                signed,
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                Some("The decision could not be made; see the server's log.".into()),
            )
            .await
        }
    }
}

pub async fn decide(
    State(app): State<App>,
    Path(id): Path<u64>,
    Posted { signed, form }: Posted<DecideForm>,
) -> Response {
    let Some(choice) = choice(&form.choice) else {
        return requests_page(
            &app,
            &signed,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some("Choose Approve or Deny.".into()),
        )
        .await;
    };
    decide_and_show(&app, &signed, id, choice, non_empty(form.comment)).await
}

#[derive(Template)]
#[template(path = "decide.html")]
struct LinkPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    token: String,
    verb: &'static str,
    class: &'static str,
    request: RequestRow,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The refusal of a mail link that is not valid or not `signed`'s.
async fn link_refused(app: &App, signed: &SignedIn, err: ServiceError) -> Response {
    let status = if err.is(AdminErrorCode::Forbidden) {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::NOT_FOUND
    };
    let why = err.told().message;
    message(
        status,
        Some(nav(app, signed).await),
        "Link refused",
        Some(why),
    )
}

/// An Approve or Deny link from an approver's mail: shows the request and asks
/// for the decision to be confirmed (a GET never decides: mail scanners fetch
/// links).
pub async fn link_page(
    State(app): State<App>,
    signed: SignedIn,
    Query(query): Query<TokenQuery>,
) -> Response {
    let link = match app.service.open_link(&signed.principal, &query.token) {
        Ok(link) => link,
        Err(err) => return link_refused(&app, &signed, err).await,
    };
    let request = match app.service.request(&signed.principal, link.request).await {
        Ok(request) => request,
        Err(_) => {
            return message(
                StatusCode::NOT_FOUND,
                Some(nav(&app, &signed).await),
                "Not found",
                Some(format!("There is no request #{}.", link.request)),
            );
        }
    };
    let request = RequestRow::from(&request);
    let notice = (!request.pending).then(|| format!("This request is {} already.", request.state));
    let (verb, class) = match link.choice {
        Choice::Approve => ("Approve", "approve"),
        Choice::Deny => ("Deny", "deny"),
    };
    render(
        StatusCode::OK,
        &LinkPage {
            title: verb,
            nav: Some(nav(&app, &signed).await),
            notice,
            error: None,
            csrf: signed.csrf.clone(),
            token: query.token,
            verb,
            class,
            request,
        },
    )
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    comment: String,
}

pub async fn link_decide(
    State(app): State<App>,
    Posted { signed, form }: Posted<LinkForm>,
) -> Response {
    match app.service.open_link(&signed.principal, &form.token) {
        Ok(link) => {
            decide_and_show(
                &app,
                &signed,
                link.request,
                link.choice,
                non_empty(form.comment),
            )
            .await
        }
        Err(err) => link_refused(&app, &signed, err).await,
    }
}

/// A client session as the page shows it.
struct SessionRow {
    user_name: String,
    computer: String,
    started: String,
    ended: String,
    reason: String,
    open: bool,
    /// Its terminal recordings, oldest first.
    recordings: Vec<u64>,
}

impl SessionRow {
    fn new(s: &SessionView, recordings: &[RecordingView]) -> Self {
        Self {
            user_name: s.user_name.clone(),
            computer: s.computer.clone(),
            started: time(s.started),
            ended: s.ended.map(time).unwrap_or_default(),
            reason: s.end_reason.clone().unwrap_or_default(),
            open: s.ended.is_none(),
            recordings: recordings
                .iter()
                .rev()
                .filter(|r| r.session == Some(s.id))
                .map(|r| r.id)
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    computer: String,
    user: String,
    sessions: Vec<SessionRow>,
}

#[derive(Deserialize)]
pub struct SessionsQuery {
    #[serde(default)]
    computer: String,
    #[serde(default)]
    user: String,
}

pub async fn sessions(
    State(app): State<App>,
    signed: SignedIn,
    Query(query): Query<SessionsQuery>,
) -> Response {
    let filter = ListFilter {
        computer: non_empty(query.computer.clone()),
        user: non_empty(query.user.clone()),
        ..ListFilter::default()
    };
    let page = PageRequest {
        limit: PAGE,
        after: None,
    };
    let sessions = match app
        .service
        .sessions(&signed.principal, Open::AndEnded, &filter, &page)
        .await
    {
        Ok(page) => page.items,
        Err(err @ ServiceError::Refused(_)) => {
            return message(
                StatusCode::BAD_REQUEST,
                Some(nav(&app, &signed).await),
                "Refused",
                Some(err.told().message),
            );
        }
        Err(err) => {
            err.told();
            return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None);
        }
    };
    // The newest recordings, to link from their sessions.
    let page = PageRequest {
        limit: MAX_PAGE,
        after: None,
    };
    let recordings = match app.service.recordings(&signed.principal, None, page).await {
        Ok(page) => page.items,
        Err(err) => {
            warn!(error = %err, "the recordings could not be listed");
            Vec::new()
        }
    };
    let mut rows: Vec<SessionRow> = sessions
        .iter()
        .map(|s| SessionRow::new(s, &recordings))
        .collect();
    // Open ones first, each part newest first.
    rows.sort_by(|a, b| b.open.cmp(&a.open).then(b.started.cmp(&a.started)));
    render(
        StatusCode::OK,
        &SessionsPage {
            title: "Client Sessions",
            nav: Some(nav(&app, &signed).await),
            notice: None,
            error: None,
            computer: query.computer,
            user: query.user,
            sessions: rows,
        },
    )
}

/// Server-sent events: the signed-in person's pending count, whenever it
/// changes (looked at every second), until their session ends or they no
/// longer stand (the stream itself does not keep the session alive).
pub async fn events(State(app): State<App>, signed: SignedIn) -> Response {
    // Each open page holds a stream: a few per session, not any number.
    let Some(slot) = app.sessions.hold(&signed.session, Held::Stream) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many pages of this session are open",
        )
            .into_response();
    };
    let stream = futures_util::stream::unfold(
        (app, signed, None::<usize>, slot),
        |(app, signed, last, slot)| async move {
            loop {
                // A session that ended, or whose person no longer stands (a
                // password changed, an account disabled), ends the stream;
                // each count is made with their role of now.
                if !app.sessions.is_open(&signed.session).await
                    || !app.service.stands(&signed.principal)
                {
                    return None;
                }
                let count = nav(&app, &signed).await.pending;
                if last != Some(count) {
                    let event = Event::default().event("pending").data(count.to_string());
                    return Some((Ok::<_, Infallible>(event), (app, signed, Some(count), slot)));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

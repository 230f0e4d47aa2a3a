//! Terminal recordings in the Management Tool: a recording played in the
//! browser (asciinema-player, served from the binary), its asciicast file,
//! and a search across recordings' text. Administrators see every recording,
//! approvers those of the computers they approve, like the sessions.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::warn;

use otpgate_protocol::admin::RecordingView;

use super::App;
use super::auth::{Held, SignedIn};
use super::views::{Nav, message, nav, render, time};
use crate::server::service::ServiceError;

/// The play page's policy: the player compiles its terminal emulator from
/// WebAssembly and sizes its elements by their style attributes.
const PLAYER_POLICY: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self'; connect-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A recording as the pages show it.
struct RecordingRow {
    id: u64,
    who: String,
    started: String,
    ended: String,
    command: String,
    incomplete: bool,
}

impl From<&RecordingView> for RecordingRow {
    fn from(r: &RecordingView) -> Self {
        Self {
            id: r.id,
            who: format!("{}@{}", r.os_user, r.computer),
            started: time(r.started),
            ended: r.ended.map(time).unwrap_or_default(),
            command: r.command.clone(),
            incomplete: r.incomplete,
        }
    }
}

/// Recording `id`, if `signed` may see it; else the page that says no.
async fn visible(app: &App, signed: &SignedIn, id: u64) -> Result<RecordingView, Response> {
    match app.service.recording(&signed.principal, id).await {
        Ok(recording) => Ok(recording),
        Err(ServiceError::Refused(_)) => Err(message(
            StatusCode::NOT_FOUND,
            Some(nav(app, signed).await),
            "Not found",
            Some(format!("There is no recording #{id} for you.")),
        )),
        Err(err) => {
            err.told();
            Err(message(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "Unavailable",
                None,
            ))
        }
    }
}

/// Runs `work` (a reading of recordings, which inflates them) as one of the
/// few a session may have going; in a task of its own that holds the
/// session's place until it is done, even when the browser gives up waiting.
async fn reading<T: Send + 'static>(
    app: &App,
    signed: &SignedIn,
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, Response> {
    let Some(slot) = app.sessions.hold(&signed.session, Held::Reading) else {
        return Err(message(
            StatusCode::TOO_MANY_REQUESTS,
            Some(nav(app, signed).await),
            "Busy",
            Some("Searches or checks of yours are still running: wait for them to finish.".into()),
        ));
    };
    let done = tokio::spawn(async move {
        let _slot = slot;
        work.await
    });
    done.await.map_err(|err| {
        warn!(error = %err, "a reading of recordings stopped");
        message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None)
    })
}

/// What is wrong with recording `id` (altered since it was stored), if
/// anything, as `signed` is told; the page that says no when it cannot be
/// checked.
async fn problem(app: &App, signed: &SignedIn, id: u64) -> Result<Option<String>, Response> {
    let (service, principal) = (Arc::clone(&app.service), signed.principal.clone());
    let checked = reading(app, signed, async move {
        service.verify_recordings(&principal, Some(id)).await
    })
    .await?;
    match checked {
        Ok(verified) => Ok(verified.into_iter().find_map(|v| v.problem)),
        Err(err) => {
            warn!(error = %err, "a recording could not be checked");
            Err(message(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "Unavailable",
                None,
            ))
        }
    }
}

#[derive(Template)]
#[template(path = "play.html")]
struct PlayPage {
    title: String,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    recording: RecordingRow,
    /// Where the player and the download get the file.
    cast: String,
    start_at: u64,
}

#[derive(Deserialize)]
pub struct PlayQuery {
    /// Seconds in to start at.
    #[serde(default)]
    t: u64,
}

pub async fn play(
    State(app): State<App>,
    signed: SignedIn,
    Path(id): Path<u64>,
    Query(query): Query<PlayQuery>,
) -> Response {
    let recording = match visible(&app, &signed, id).await {
        Ok(recording) => recording,
        Err(refused) => return refused,
    };
    let problem = match problem(&app, &signed, id).await {
        Ok(problem) => problem,
        Err(refused) => return refused,
    };
    // An altered recording is still shown, under a warning no one can miss.
    let cast = match problem {
        Some(_) => format!("/recordings/{id}/cast?force=1"),
        None => format!("/recordings/{id}/cast"),
    };
    let mut page = render(
        StatusCode::OK,
        &PlayPage {
            title: format!("Recording #{id}"),
            nav: Some(nav(&app, &signed).await),
            notice: recording.incomplete.then(|| {
                "Output was lost on the client computer: this recording is incomplete.".into()
            }),
            error: problem.map(|problem| {
                format!(
                    "This recording does not verify ({problem}): what it shows may have been \
                     altered since it was recorded."
                )
            }),
            recording: RecordingRow::from(&recording),
            cast,
            start_at: query.t,
        },
    );
    page.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PLAYER_POLICY),
    );
    page
}

#[derive(Deserialize)]
pub struct CastQuery {
    /// Hand it out even if it does not verify.
    #[serde(default)]
    force: u8,
}

/// The recording as an asciicast v2 file, streamed a part at a time; refused
/// (409) when it does not verify, unless `force=1`.
pub async fn cast(
    State(app): State<App>,
    signed: SignedIn,
    Path(id): Path<u64>,
    Query(query): Query<CastQuery>,
) -> Response {
    if let Err(refused) = visible(&app, &signed, id).await {
        return refused;
    }
    match problem(&app, &signed, id).await {
        Ok(None) => {}
        Ok(Some(problem)) if query.force == 1 => {
            warn!(id, problem, "an altered recording handed out, as asked");
        }
        Ok(Some(problem)) => {
            return (
                StatusCode::CONFLICT,
                format!(
                    "recording {id} does not verify ({problem}): it may have been altered \
                     since it was recorded; add force=1 to have it anyway"
                ),
            )
                .into_response();
        }
        Err(refused) => return refused,
    }
    // Each part is read when the one before has been sent: one part in
    // memory, whatever the recording's length.
    let parts = futures_util::stream::unfold(Some(0), move |from| {
        let (app, principal) = (app.clone(), signed.principal.clone());
        async move {
            let part = app.service.recording_part(&principal, id, from?).await;
            Some(match part {
                Ok(part) => {
                    let mut text = part.header.unwrap_or_default();
                    text.push_str(&part.events);
                    (Ok(text), part.next)
                }
                Err(err) => {
                    warn!(error = %err, "a recording could not be read");
                    (
                        Err(std::io::Error::other("the recording could not be read")),
                        None,
                    )
                }
            })
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-asciicast"),
            (
                header::CONTENT_DISPOSITION,
                &format!("attachment; filename=\"recording-{id}.cast\""),
            ),
        ],
        Body::from_stream(parts),
    )
        .into_response()
}

/// A place where searched text shows, as the page lists it.
struct HitRow {
    recording: RecordingRow,
    offset: u64,
    at: String,
    line: String,
}

#[derive(Template)]
#[template(path = "recordings.html")]
struct SearchPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    q: String,
    hits: Vec<HitRow>,
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

pub async fn search(
    State(app): State<App>,
    signed: SignedIn,
    Query(query): Query<SearchQuery>,
) -> Response {
    let mut hits = Vec::new();
    if !query.q.trim().is_empty() {
        let (service, principal, q) = (
            Arc::clone(&app.service),
            signed.principal.clone(),
            query.q.clone(),
        );
        let searched = reading(&app, &signed, async move {
            service.search_recordings(&principal, q).await
        })
        .await;
        let searched = match searched {
            Ok(searched) => searched,
            Err(busy) => return busy,
        };
        match searched {
            Ok(found) => {
                hits = found
                    .iter()
                    .map(|hit| {
                        let seconds = hit.offset_ms / 1000;
                        HitRow {
                            recording: RecordingRow::from(&hit.recording),
                            offset: seconds,
                            at: format!("{}:{:02}", seconds / 60, seconds % 60),
                            line: hit.line.clone(),
                        }
                    })
                    .collect();
            }
            Err(err) => {
                warn!(error = %err, "the recordings could not be searched");
                return message(StatusCode::INTERNAL_SERVER_ERROR, None, "Unavailable", None);
            }
        }
    }
    render(
        StatusCode::OK,
        &SearchPage {
            title: "Recordings",
            nav: Some(nav(&app, &signed).await),
            notice: None,
            error: None,
            q: query.q,
            hits,
        },
    )
}

//! The admin operations on recordings (list, read, verify, search), for the
//! socket and the web pages alike; blocking (they read and inflate chunks):
//! called off the async runtime.

use otpgate_actors::StoreError;
use otpgate_protocol::MAX_FRAME_LEN;
use otpgate_protocol::admin::{
    AdminErrorCode, AdminRequest, AdminResponse, HitView, RecordingPartView, RecordingView,
    VerifiedView,
};

use super::{Recording, Recordings};
use crate::cast;
use crate::server::admin::fail;
use crate::server::pages;

/// The most places a search answers with.
pub const MAX_HITS: usize = 100;
/// Event bytes in one part of a recording: with its envelope, within a frame.
const PART_BUDGET: usize = MAX_FRAME_LEN / 2;

/// A recording as the admin answers show it.
pub fn view(recording: &Recording) -> RecordingView {
    RecordingView {
        id: recording.id,
        computer: recording.computer.clone(),
        os_user: recording.os_user.clone(),
        session: recording.session,
        started: recording.start.started_ms,
        ended: recording.end.map(|end| end.at_ms),
        status: recording.end.map(|end| end.status),
        command: recording.start.command.clone(),
        width: recording.start.width,
        height: recording.start.height,
        chunks: recording.chunks,
        bytes: recording.bytes,
        incomplete: recording.incomplete,
    }
}

/// The answer to a recordings request; `None` for any other request.
pub fn answer(
    recordings: &Recordings,
    request: &AdminRequest,
) -> Result<Option<AdminResponse>, StoreError> {
    Ok(Some(match request {
        AdminRequest::RecordingsList { session, page } => AdminResponse::Recordings(pages::page(
            recordings.list(page.after.as_deref()),
            page,
            |recording| session.is_none_or(|session| recording.session == Some(session)),
            view,
        )?),
        AdminRequest::RecordingRead { id, from } => match recordings.get(*id)? {
            Some(recording) => {
                let (events, next) = recordings.read(*id, *from, PART_BUDGET)?;
                AdminResponse::RecordingPart(Box::new(RecordingPartView {
                    header: (*from == 0).then(|| cast::header(&recording.start)),
                    recording: view(&recording),
                    events,
                    next,
                }))
            }
            None => return Ok(Some(not_found(*id))),
        },
        AdminRequest::RecordingsVerify { id } => {
            let mut verified = Vec::new();
            let mut check = |recording: &Recording| -> Result<(), StoreError> {
                verified.push(VerifiedView {
                    id: recording.id,
                    problem: recordings.verify(recording)?.err().map(|t| t.to_string()),
                });
                Ok(())
            };
            match id {
                Some(id) => match recordings.get(*id)? {
                    Some(recording) => check(&recording)?,
                    None => return Ok(Some(not_found(*id))),
                },
                None => {
                    for entry in recordings.list(None) {
                        check(&entry?.1)?;
                    }
                }
            }
            AdminResponse::Verified(verified)
        }
        AdminRequest::RecordingsSearch { text } => {
            let mut hits = Vec::new();
            if !text.trim().is_empty() {
                for entry in recordings.list(None) {
                    let (_, recording) = entry?;
                    let found =
                        recordings.search(&recording, text.trim(), MAX_HITS - hits.len())?;
                    hits.extend(found.into_iter().map(|hit| HitView {
                        recording: view(&recording),
                        offset_ms: (hit.seconds * 1000.0) as u64,
                        line: hit.line,
                    }));
                    if hits.len() >= MAX_HITS {
                        break;
                    }
                }
            }
            AdminResponse::Hits(hits)
        }
        _ => return Ok(None),
    }))
}

fn not_found(id: u64) -> AdminResponse {
    fail(AdminErrorCode::NotFound, format!("no recording {id}"))
}

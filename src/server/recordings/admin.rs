//! The reading side of recordings (list, read, verify, search), as the admin
//! service answers with them; blocking (they read and inflate chunks): called
//! off the async runtime. Whose recordings are taken is the caller's `keep`.

use otpgate_actors::StoreError;
use otpgate_protocol::MAX_FRAME_LEN;
use otpgate_protocol::admin::{
    HitView, Page, PageRequest, RecordingPartView, RecordingView, VerifiedView,
};

use super::{Recording, Recordings};
use crate::cast;
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

/// Recordings, newest first: those of client session `session` when given,
/// of those `keep` accepts.
pub fn list(
    recordings: &Recordings,
    session: Option<u64>,
    page: &PageRequest,
    keep: impl Fn(&Recording) -> bool,
) -> Result<Page<RecordingView>, StoreError> {
    pages::page(
        recordings.list(page.after.as_deref()),
        page,
        |recording| {
            session.is_none_or(|session| recording.session == Some(session)) && keep(recording)
        },
        view,
    )
}

/// Part of recording `id`, from chunk `from` on: its events as fit in one
/// answer. `None` when there is no such recording, or `keep` refuses it.
pub fn part(
    recordings: &Recordings,
    id: u64,
    from: u64,
    keep: impl Fn(&Recording) -> bool,
) -> Result<Option<RecordingPartView>, StoreError> {
    let Some(recording) = recordings.get(id)?.filter(|r| keep(r)) else {
        return Ok(None);
    };
    let (events, next) = recordings.read(id, from, PART_BUDGET)?;
    Ok(Some(RecordingPartView {
        header: (from == 0).then(|| cast::header(&recording.start)),
        recording: view(&recording),
        events,
        next,
    }))
}

/// The number a verification answer gives the recordings as a whole (no
/// recording has it: sled numbers them from 0 up).
pub const WHOLE: u64 = u64::MAX;

/// What checking recording `id` (or, `None`, every one and the census)
/// against its hash chain and the server's seal found, of those `keep`
/// accepts; `None` when
/// there is no such recording, or `keep` refuses it.
pub fn verify(
    recordings: &Recordings,
    id: Option<u64>,
    keep: impl Fn(&Recording) -> bool,
) -> Result<Option<Vec<VerifiedView>>, StoreError> {
    let mut verified = Vec::new();
    let mut check = |recording: &Recording| -> Result<(), StoreError> {
        verified.push(VerifiedView {
            id: recording.id,
            problem: recordings.verify(recording)?.err().map(|t| t.to_string()),
        });
        Ok(())
    };
    match id {
        Some(id) => match recordings.get(id)?.filter(|r| keep(r)) {
            Some(recording) => check(&recording)?,
            None => return Ok(None),
        },
        None => {
            for entry in recordings.list(None) {
                let recording = entry?.1;
                if keep(&recording) {
                    check(&recording)?;
                }
            }
            if let Err(problem) = recordings.verify_census()? {
                verified.push(VerifiedView {
                    id: WHOLE,
                    problem: Some(problem.to_string()),
                });
            }
        }
    }
    Ok(Some(verified))
}

/// Where `text` shows in the recordings `keep` accepts (escapes left out, case
/// ignored): at most [`MAX_HITS`] places, the newest recordings first.
pub fn search(
    recordings: &Recordings,
    text: &str,
    keep: impl Fn(&Recording) -> bool,
) -> Result<Vec<HitView>, StoreError> {
    let mut hits = Vec::new();
    let text = text.trim();
    if text.is_empty() {
        return Ok(hits);
    }
    for entry in recordings.list(None) {
        let (_, recording) = entry?;
        if !keep(&recording) {
            continue;
        }
        let found = recordings.search(&recording, text, MAX_HITS - hits.len())?;
        hits.extend(found.into_iter().map(|hit| HitView {
            recording: view(&recording),
            offset_ms: (hit.seconds * 1000.0) as u64,
            line: hit.line,
        }));
        if hits.len() >= MAX_HITS {
            break;
        }
    }
    Ok(hits)
}

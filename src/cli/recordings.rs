//! `otpgate admin sessions play` and `otpgate admin recordings ...`: a
//! recording replayed in this terminal with its timing, written out as an
//! asciicast file, and the lists, checks and search results in words. What is
//! handed out is verified first: a recording altered since it was stored is
//! refused, or with `--force` handed out with a warning.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use otpgate_protocol::admin::{
    AdminRequest, AdminResponse, HitView, PageRequest, RecordingPartView, RecordingView,
    VerifiedView,
};

use crate::cast::{self, Kind};
use crate::cli::admin::report;
use crate::cli::args::{ForceArg, PlayArgs};
use crate::cli::time;
use crate::server::admin::socket_path;
use crate::server::recordings::admin::WHOLE;
use crate::unix;

/// Part of recording `id` from chunk `from`, or the answer that refused it.
async fn part(
    data_dir: &Path,
    id: u64,
    from: u64,
) -> anyhow::Result<Result<RecordingPartView, AdminResponse>> {
    let request = AdminRequest::RecordingRead { id, from };
    Ok(match unix::ask(&socket_path(data_dir), &request).await? {
        AdminResponse::RecordingPart(part) => Ok(*part),
        other => Err(other),
    })
}

/// Every part of recording `id`, in order, handed to `each` as it comes.
async fn parts(
    data_dir: &Path,
    id: u64,
    mut each: impl AsyncFnMut(RecordingPartView) -> anyhow::Result<()>,
) -> anyhow::Result<Option<AdminResponse>> {
    let mut from = 0;
    loop {
        let part = match part(data_dir, id, from).await? {
            Ok(part) => part,
            Err(refused) => return Ok(Some(refused)),
        };
        let next = part.next;
        each(part).await?;
        match next {
            Some(next) => from = next,
            None => return Ok(None),
        }
    }
}

/// Whether recording `id` may be handed out: `Ok(())` when it verifies, or
/// when it does not and `force` says to go on (warned on standard error);
/// else the exit code, said why.
async fn checked(
    data_dir: &Path,
    id: u64,
    force: ForceArg,
) -> anyhow::Result<Result<(), ExitCode>> {
    let request = AdminRequest::RecordingsVerify { id: Some(id) };
    let problem = match unix::ask(&socket_path(data_dir), &request).await? {
        AdminResponse::Verified(verified) => verified.into_iter().find_map(|v| v.problem),
        other => return Ok(Err(report(&other, false)?)),
    };
    let Some(problem) = problem else {
        return Ok(Ok(()));
    };
    if force.force {
        eprintln!(
            "otpgate: WARNING: recording {id} does not verify ({problem}): what follows may \
             have been altered since it was recorded"
        );
        Ok(Ok(()))
    } else {
        eprintln!(
            "otpgate: recording {id} does not verify ({problem}): it may have been altered \
             since it was recorded, so it is not handed out (--force to have it anyway)"
        );
        Ok(Err(ExitCode::from(1)))
    }
}

/// `admin recordings export ID`: the asciicast file on standard output, once
/// it verifies (or `force`).
pub(super) async fn export(data_dir: &Path, id: u64, force: ForceArg) -> anyhow::Result<ExitCode> {
    if let Err(refused) = checked(data_dir, id, force).await? {
        return Ok(refused);
    }
    let mut out = std::io::stdout().lock();
    let refused = parts(data_dir, id, async |part| {
        if let Some(header) = &part.header {
            out.write_all(header.as_bytes())?;
        }
        out.write_all(part.events.as_bytes())?;
        Ok(())
    })
    .await?;
    out.flush()?;
    match refused {
        Some(refused) => report(&refused, false),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `admin sessions play SESSION`: the session's recording (the first, or
/// `recording`) replayed as `how` says.
pub(super) async fn play_session(
    data_dir: &Path,
    session: u64,
    recording: Option<u64>,
    how: PlayArgs,
) -> anyhow::Result<ExitCode> {
    let list = AdminRequest::RecordingsList {
        session: Some(session),
        page: PageRequest::default(),
    };
    let found = match unix::ask(&socket_path(data_dir), &list).await? {
        AdminResponse::Recordings(page) => page.items,
        other => return report(&other, false),
    };
    // Oldest first: the list is newest first.
    let chosen = match recording {
        Some(id) => found.iter().find(|r| r.id == id),
        None => found.last(),
    };
    let Some(chosen) = chosen else {
        eprintln!("otpgate: session {session} has no such recording");
        return Ok(ExitCode::from(1));
    };
    play(data_dir, chosen.id, how).await
}

/// `admin recordings play ID`: recording `id` replayed at `how.speed`, from
/// `how.from` seconds in, once it verifies (or `how.force`).
pub(super) async fn play(data_dir: &Path, id: u64, how: PlayArgs) -> anyhow::Result<ExitCode> {
    let PlayArgs { speed, from, force } = how;
    if !(speed.is_finite() && speed > 0.0) {
        anyhow::bail!("--speed must be a number above 0");
    }
    if let Err(refused) = checked(data_dir, id, force).await? {
        return Ok(refused);
    }
    let started = tokio::time::Instant::now();
    let mut out = std::io::stdout().lock();
    let refused = parts(data_dir, id, async |part| {
        for event in cast::events(&part.events) {
            if event.kind != Some(Kind::Output) {
                continue;
            }
            // What came before `from` is shown at once, the rest in time.
            let due = ((event.seconds - from).max(0.0)) / speed;
            tokio::time::sleep_until(started + Duration::from_secs_f64(due)).await;
            out.write_all(event.data.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    })
    .await?;
    match refused {
        Some(refused) => report(&refused, false),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Recordings, a line each.
pub(super) fn describe_list(out: &mut String, recordings: &[RecordingView]) {
    for r in recordings {
        let ended = match (r.ended, r.status) {
            (Some(ended), Some(status)) => format!("ended {} (status {status})", time(ended)),
            _ => "still recording".to_owned(),
        };
        let _ = writeln!(
            out,
            "recording {}\t{}@{}\tsession {}\t{}\t{ended}\t{} chunks, {} bytes{}\t{}",
            r.id,
            r.os_user,
            r.computer,
            r.session.map_or("-".to_owned(), |s| s.to_string()),
            time(r.started),
            r.chunks,
            r.bytes,
            if r.incomplete { ", INCOMPLETE" } else { "" },
            r.command,
        );
    }
}

/// What verification found, a line each.
pub(super) fn describe_verified(out: &mut String, verified: &[VerifiedView]) {
    for v in verified {
        let what = match v.id {
            WHOLE => "the recordings as a whole".to_owned(),
            id => format!("recording {id}"),
        };
        let _ = match &v.problem {
            None => writeln!(out, "{what}: intact"),
            Some(problem) => writeln!(out, "{what}: ALTERED: {problem}"),
        };
    }
}

/// Search results, a line each.
pub(super) fn describe_hits(out: &mut String, hits: &[HitView]) {
    if hits.is_empty() {
        out.push_str("not found");
    }
    for h in hits {
        let seconds = h.offset_ms / 1000;
        let _ = writeln!(
            out,
            "recording {} (session {}, {}@{}) at {}:{:02}\t{}",
            h.recording.id,
            h.recording
                .session
                .map_or("-".to_owned(), |s| s.to_string()),
            h.recording.os_user,
            h.recording.computer,
            seconds / 60,
            seconds % 60,
            h.line,
        );
    }
}

//! Searching recordings for text as a person read it: output only, escapes
//! left out, case ignored, each hit with its line as it was shown.

use otpgate_actors::StoreError;

use super::{Recording, Recordings};
use crate::cast;

/// One place where a search's text was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The recording.
    pub recording: u64,
    /// Seconds from its start.
    pub seconds: f64,
    /// The line of plain text it is on.
    pub line: String,
}

impl Recordings {
    /// Where `text` (case-insensitive, in what a person reads: escapes left
    /// out) shows in recording `recording`, at most `limit` places, each with
    /// its line as it was shown.
    pub fn search(
        &self,
        recording: &Recording,
        text: &str,
        limit: usize,
    ) -> Result<Vec<Hit>, StoreError> {
        let wanted = text.to_lowercase();
        let mut hits = Vec::new();
        // The plain text seen lately, so that a match split across events is
        // found; cut back once it has been searched.
        let mut window = String::new();
        // A match found whose line has not ended yet: where its line starts
        // in `window`, and when the match was shown.
        let mut open: Option<(usize, f64)> = None;
        let mut from = 0;
        loop {
            let (events, next) = self.read(recording.id, from, 1 << 20)?;
            for event in cast::events(&events) {
                if event.kind != Some(cast::Kind::Output) {
                    continue;
                }
                window.push_str(&cast::plain_text(&event.data));
                if open.is_none()
                    && let Some(at) = find_ignoring_case(&window, &wanted)
                {
                    let start = window[..at].rfind('\n').map_or(0, |n| n + 1);
                    open = Some((start, event.seconds));
                }
                if let Some((start, seconds)) = open {
                    // The line shown whole: up to its end, which may come
                    // with a later event (or up to a screenful).
                    let end = window[start..].find('\n').map(|n| start + n);
                    if end.is_none() && window.len() - start < LONGEST_LINE {
                        continue;
                    }
                    hits.push(hit(
                        recording,
                        seconds,
                        &window[start..],
                        end.map(|end| end - start),
                    ));
                    open = None;
                    window.clear();
                    if hits.len() >= limit {
                        return Ok(hits);
                    }
                    continue;
                }
                // Keep only what a match could still start in.
                let keep = wanted.len().saturating_sub(1) + 200;
                if window.len() > 4 * keep {
                    let mut cut = window.len() - keep;
                    while !window.is_char_boundary(cut) {
                        cut += 1;
                    }
                    window.drain(..cut);
                }
            }
            match next {
                Some(next) => from = next,
                None => {
                    // The recording ended inside a match's line.
                    if let Some((start, seconds)) = open {
                        hits.push(hit(recording, seconds, &window[start..], None));
                    }
                    return Ok(hits);
                }
            }
        }
    }
}

/// How much of a line without an end a hit shows.
const LONGEST_LINE: usize = 4096;

/// A hit at `seconds` on the line `text` begins with (up to `end`, or all of
/// it).
fn hit(recording: &Recording, seconds: f64, text: &str, end: Option<usize>) -> Hit {
    let mut end = end.unwrap_or(text.len()).min(LONGEST_LINE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Hit {
        recording: recording.id,
        seconds,
        line: text[..end].trim().to_owned(),
    }
}

/// Where `wanted` (lowercase) starts in `text`, compared in lowercase: a byte
/// offset of `text` itself, whose case is kept (lowercasing may change a
/// text's length, so the two cannot share offsets).
fn find_ignoring_case(text: &str, wanted: &str) -> Option<usize> {
    text.char_indices().map(|(at, _)| at).find(|&at| {
        let mut lowered = text[at..].chars().flat_map(char::to_lowercase);
        wanted.chars().all(|w| lowered.next() == Some(w))
    })
}

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
        let mut from = 0;
        loop {
            let (events, next) = self.read(recording.id, from, 1 << 20)?;
            for event in cast::events(&events) {
                if event.kind != Some(cast::Kind::Output) {
                    continue;
                }
                window.push_str(&cast::plain_text(&event.data));
                if let Some(at) = find_ignoring_case(&window, &wanted) {
                    let start = window[..at].rfind('\n').map_or(0, |n| n + 1);
                    let end = window[at..].find('\n').map_or(window.len(), |n| at + n);
                    hits.push(Hit {
                        recording: recording.id,
                        seconds: event.seconds,
                        line: window[start..end].trim().to_owned(),
                    });
                    if hits.len() >= limit {
                        return Ok(hits);
                    }
                    window.clear();
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
                None => return Ok(hits),
            }
        }
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

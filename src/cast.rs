//! asciicast v2, the text form of a terminal recording that asciinema and its
//! player read: a JSON header line, then one JSON event per line
//! (`[seconds, "o", "output"]`, `"i"` for input, `"r"` for a resize to
//! `"COLSxROWS"`). The recorder writes it, the server searches it, the admin
//! command plays and exports it.

use otpgate_protocol::record::RecordingStart;
use serde::Serialize;

/// The header line of a recording that started as `start` (with its `\n`).
pub fn header(start: &RecordingStart) -> String {
    #[derive(Serialize)]
    struct Env<'a> {
        #[serde(rename = "TERM")]
        term: &'a str,
    }
    #[derive(Serialize)]
    struct Header<'a> {
        version: u8,
        width: u16,
        height: u16,
        timestamp: u64,
        command: &'a str,
        env: Env<'a>,
    }
    let header = Header {
        version: 2,
        width: start.width,
        height: start.height,
        timestamp: start.started_ms / 1000,
        command: &start.command,
        env: Env { term: &start.term },
    };
    let mut line = serde_json::to_string(&header).expect("a header always serializes");
    line.push('\n');
    line
}

/// One event line (with its `\n`): `kind` at `seconds` from the start.
pub fn event(seconds: f64, kind: Kind, data: &str) -> String {
    // Microseconds, as asciinema writes them.
    let seconds = (seconds * 1e6).round() / 1e6;
    let mut line =
        serde_json::to_string(&(seconds, kind.code(), data)).expect("an event always serializes");
    line.push('\n');
    line
}

/// What an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Output to the terminal.
    Output,
    /// Input typed.
    Input,
    /// A resize.
    Resize,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Self::Output => "o",
            Self::Input => "i",
            Self::Resize => "r",
        }
    }
}

/// One event read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds from the start.
    pub seconds: f64,
    /// What it is; `None` for a kind this build does not know (kept out of
    /// playback).
    pub kind: Option<Kind>,
    /// Its data.
    pub data: String,
}

/// Reads event line `line`; `None` if it is not one.
pub fn parse(line: &str) -> Option<Event> {
    let (seconds, code, data): (f64, String, String) = serde_json::from_str(line).ok()?;
    let kind = match code.as_str() {
        "o" => Some(Kind::Output),
        "i" => Some(Kind::Input),
        "r" => Some(Kind::Resize),
        _ => None,
    };
    (seconds.is_finite() && seconds >= 0.0).then_some(Event {
        seconds,
        kind,
        data,
    })
}

/// The events of `lines` (event lines, as stored).
pub fn events(lines: &str) -> impl Iterator<Item = Event> + '_ {
    lines.lines().filter_map(parse)
}

/// `output` without terminal escape sequences (CSI, OSC, two-character
/// escapes) and control characters other than newlines: what a person reads,
/// for search.
pub fn plain_text(output: &str) -> String {
    let mut text = String::with_capacity(output.len());
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // A character set designation: one more character.
                Some('(' | ')' | '*' | '+') => {
                    chars.next();
                }
                _ => {}
            },
            '\n' => text.push('\n'),
            c if c.is_control() => {}
            c => text.push(c),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_any_text() {
        let data = "a \"quoted\" \\ line\r\n\u{1b}[1mbold\u{1b}[0m é\u{7}";
        let line = event(1.234_567_8, Kind::Output, data);
        assert!(line.starts_with("[1.234568,\"o\","), "{line}");
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
        let read = parse(line.trim_end()).unwrap();
        assert_eq!(read.kind, Some(Kind::Output));
        assert_eq!(read.data, data);
        assert!(parse("[1, \"o\"]").is_none());
        assert!(parse("[-1, \"o\", \"x\"]").is_none());
        assert_eq!(parse("[1, \"m\", \"marker\"]").unwrap().kind, None);
    }

    #[test]
    fn a_header_is_what_asciinema_reads() {
        let start = RecordingStart {
            width: 100,
            height: 30,
            started_ms: 1_800_000_000_123,
            command: "/bin/bash".into(),
            term: "xterm-256color".into(),
            input: false,
        };
        let header: serde_json::Value = serde_json::from_str(&header(&start)).unwrap();
        assert_eq!(header["version"], 2);
        assert_eq!(header["width"], 100);
        assert_eq!(header["timestamp"], 1_800_000_000u64);
        assert_eq!(header["env"]["TERM"], "xterm-256color");
    }

    #[test]
    fn plain_text_keeps_what_a_person_reads() {
        assert_eq!(
            plain_text("\u{1b}[1;31mrm -rf\u{1b}[0m /tmp\r\n\u{1b}]0;title\u{7}$ \u{1b}(B"),
            "rm -rf /tmp\n$ "
        );
        assert_eq!(plain_text("a\u{1b}]2;t\u{1b}\\b"), "ab");
    }
}

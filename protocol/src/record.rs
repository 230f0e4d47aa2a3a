//! Terminal recordings on the wire: the pieces the recorder (`otpgate record`)
//! hands its agent, and the agent ships to the server.
//!
//! A recording is asciicast v2 (the format asciinema reads): a header, then
//! one JSON event per line (`[seconds, "o", "output"]`, `[seconds, "r",
//! "80x24"]`). It travels in [`RecordChunk`]s numbered from 0 without gaps,
//! each carrying whole event lines, so that every hop can acknowledge, resend
//! and deduplicate by number alone.

use serde::{Deserialize, Serialize};

/// The most event bytes one chunk carries: with its envelope it stays well
/// inside a frame.
pub const MAX_CHUNK_EVENTS: usize = 48 * 1024;

/// A recording's name, chosen at random by its recorder: the same after a
/// reconnection or an agent's restart, so nothing is stored twice.
pub type RecordingKey = [u8; 16];

/// How a recording starts (asciicast v2's header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingStart {
    /// Terminal columns.
    pub width: u16,
    /// Terminal rows.
    pub height: u16,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// What runs under the recorder (the shell, or the command asked for).
    pub command: String,
    /// The terminal type (`TERM`).
    pub term: String,
    /// Whether typed input is recorded too (`"i"` events).
    pub input: bool,
}

/// How a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingEnd {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The exit status of what ran (128 + signal when killed).
    pub status: i32,
}

/// A piece of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordChunk {
    /// Which recording.
    pub recording: RecordingKey,
    /// Its number: 0, 1, 2, ... without gaps.
    pub seq: u64,
    /// The header, on chunk 0 only.
    pub start: Option<RecordingStart>,
    /// Whole asciicast event lines, each ending in `\n`.
    #[serde(with = "events")]
    pub events: Vec<u8>,
    /// Output was dropped before this chunk (the recorder's buffer or the
    /// agent's spool was full): the recording is incomplete.
    pub lost: bool,
    /// The end, on the last chunk only.
    pub end: Option<RecordingEnd>,
}

impl RecordChunk {
    /// Whether the pieces agree with each other: a header on chunk 0 and only
    /// there, whole lines of at most [`MAX_CHUNK_EVENTS`] bytes.
    pub fn is_well_formed(&self) -> bool {
        (self.seq == 0) == self.start.is_some()
            && self.events.len() <= MAX_CHUNK_EVENTS
            && (self.events.is_empty() || self.events.ends_with(b"\n"))
            && std::str::from_utf8(&self.events).is_ok()
    }
}

/// A chunk's events on the wire: as bytes, so that the decoder checks the
/// length a frame claims against its limit before it reserves room (read as
/// a sequence, serde would reserve room for up to 1 MiB whatever the frame
/// holds). In bincode, the very bytes of a `Vec<u8>` written as a sequence.
mod events {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(events: &[u8], to: S) -> Result<S::Ok, S::Error> {
        to.serialize_bytes(events)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Vec<u8>, D::Error> {
        from.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        /// Formats that write bytes as a sequence: nothing reserved on the
        /// claim of a length.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::new();
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, events: &[u8]) -> RecordChunk {
        RecordChunk {
            recording: [7; 16],
            seq,
            start: (seq == 0).then(|| RecordingStart {
                width: 80,
                height: 24,
                started_ms: 1,
                command: "/bin/sh".into(),
                term: "xterm".into(),
                input: false,
            }),
            events: events.to_vec(),
            lost: false,
            end: None,
        }
    }

    #[test]
    fn chunks_carry_a_header_first_and_whole_lines() {
        assert!(chunk(0, b"").is_well_formed());
        assert!(chunk(1, b"[0.1, \"o\", \"x\"]\n").is_well_formed());
        assert!(
            !chunk(1, b"[0.1, \"o\", \"x\"]").is_well_formed(),
            "a cut line"
        );
        assert!(!chunk(1, &[0xff, b'\n']).is_well_formed(), "not UTF-8");
        let mut headless = chunk(0, b"");
        headless.start = None;
        assert!(!headless.is_well_formed());
        let mut second_header = chunk(1, b"");
        second_header.start = chunk(0, b"").start;
        assert!(!second_header.is_well_formed());
        let big = vec![b'\n'; MAX_CHUNK_EVENTS + 1];
        assert!(!chunk(1, &big).is_well_formed());
    }
}

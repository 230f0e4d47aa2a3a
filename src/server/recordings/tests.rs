//! The recordings store's unit tests: chunks kept whole and in order, and
//! every tampering found.

use otpgate_protocol::record::RecordingStart;

use super::*;
use crate::cast;

fn open(dir: &std::path::Path) -> Recordings {
    open_with(dir, DEFAULT_QUOTAS)
}

fn open_with(dir: &std::path::Path, quotas: Quotas) -> Recordings {
    let keys = Arc::new(OtpKeys::derive(&[5; 32]));
    let folder = dir.join("recordings");
    std::fs::create_dir_all(&folder).unwrap();
    Recordings::open(SideDb::open(&folder).unwrap(), &folder, keys, quotas).unwrap()
}

/// Puts `value` at `key` of `table`, behind the server's back.
fn put(r: &Recordings, table: &SideTable, key: &[u8], value: &[u8]) {
    r.db.write(&[SideWrite::Put(table, key, value)]).unwrap();
}

/// Removes `key` of `table` behind the server's back; what it held.
fn take(r: &Recordings, table: &SideTable, key: &[u8]) -> Option<Vec<u8>> {
    let held = table.get(key).unwrap();
    r.db.write(&[SideWrite::Remove(table, key)]).unwrap();
    held
}

fn chunk(seq: u64, text: &str) -> RecordChunk {
    RecordChunk {
        recording: [9; 16],
        seq,
        start: (seq == 0).then(|| RecordingStart {
            width: 80,
            height: 24,
            started_ms: 1_800_000_000_000,
            command: "/bin/sh".into(),
            term: "xterm".into(),
            input: false,
        }),
        events: cast::event(seq as f64, cast::Kind::Output, text).into_bytes(),
        lost: false,
        end: None,
    }
}

fn ws() -> ComputerId {
    "ws-1".parse().unwrap()
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn kept(stored: Stored) -> u64 {
    match stored {
        Stored::Kept { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn chunks_are_taken_in_order_once_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    assert_eq!(
        r.store(&ws(), "alice", Some(3), &chunk(1, "early"), at(1))
            .unwrap(),
        Stored::OutOfOrder { expected: 0 }
    );
    let id = kept(
        r.store(&ws(), "alice", Some(3), &chunk(0, "$ ls\r\n"), at(1))
            .unwrap(),
    );
    assert_eq!(
        r.store(&ws(), "alice", Some(3), &chunk(2, "late"), at(2))
            .unwrap(),
        Stored::OutOfOrder { expected: 1 }
    );
    let mut last = chunk(1, "a.txt\r\n");
    last.end = Some(RecordingEnd {
        at_ms: 5,
        status: 0,
    });
    assert_eq!(
        kept(r.store(&ws(), "alice", None, &last, at(3)).unwrap()),
        id
    );
    // Sent again (the acknowledgement was lost): taken as stored.
    assert_eq!(
        kept(r.store(&ws(), "alice", None, &last, at(4)).unwrap()),
        id
    );
    let recording = r.get(id).unwrap().unwrap();
    assert_eq!((recording.chunks, recording.session), (2, Some(3)));
    assert_eq!(recording.end.map(|e| e.status), Some(0));
    let (events, next) = r.read(id, 0, 1 << 20).unwrap();
    assert_eq!(next, None);
    let output: String = cast::events(&events).map(|e| e.data).collect();
    assert_eq!(output, "$ ls\r\na.txt\r\n");
    // Page by page: one chunk at a time when the budget is small.
    assert_eq!(r.read(id, 0, 1).unwrap().1, Some(1));
    assert_eq!(r.verify(&recording).unwrap(), Ok(()));
    // Another computer's recording with the same key is another one.
    let other: ComputerId = "ws-2".parse().unwrap();
    assert_ne!(
        kept(r.store(&other, "bob", None, &chunk(0, "x"), at(5)).unwrap()),
        id
    );
    let mut bad = chunk(1, "x");
    bad.events.pop();
    assert_eq!(
        r.store(&ws(), "alice", None, &bad, at(6)).unwrap(),
        Stored::Malformed
    );
}

#[test]
fn a_tampered_recording_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let id = kept(
        r.store(&ws(), "alice", None, &chunk(0, "one"), at(1))
            .unwrap(),
    );
    for seq in 1..4 {
        r.store(&ws(), "alice", None, &chunk(seq, "more"), at(2))
            .unwrap();
    }
    let recording = r.get(id).unwrap().unwrap();
    assert_eq!(r.verify(&recording).unwrap(), Ok(()));

    // A chunk's text changed.
    let original = r.chunks.get(&chunk_key(id, 2)).unwrap().unwrap();
    put(
        &r,
        &r.chunks,
        &chunk_key(id, 2),
        &deflate(&chunk(2, "MORE").events),
    );
    assert_eq!(r.verify(&recording).unwrap(), Err(Tampered::Chain));
    put(&r, &r.chunks, &chunk_key(id, 2), &original.clone());

    // A chunk removed, or one added.
    let first = take(&r, &r.chunks, &chunk_key(id, 1)).unwrap();
    assert_eq!(r.verify(&recording).unwrap(), Err(Tampered::Missing(1)));
    put(&r, &r.chunks, &chunk_key(id, 1), &first);
    put(&r, &r.chunks, &chunk_key(id, 4), &original);
    assert_eq!(r.verify(&recording).unwrap(), Err(Tampered::Extra));
    take(&r, &r.chunks, &chunk_key(id, 4));

    // The summary rewritten without the server's key (the last chunk
    // dropped and the head recomputed to match).
    let mut shorter = recording.clone();
    shorter.chunks = 3;
    take(&r, &r.chunks, &chunk_key(id, 3));
    let mut head = [0; 32];
    for seq in 0..3 {
        let events = inflate(&r.chunks.get(&chunk_key(id, seq)).unwrap().unwrap()).unwrap();
        head = chain(&head, seq, &events);
    }
    shorter.head = head;
    assert_eq!(r.verify(&shorter).unwrap(), Err(Tampered::Seal));
}

#[test]
fn search_finds_text_as_a_person_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let parts = [
        "$ \u{1b}[1mcat /etc/Sha",
        "dow\u{1b}[0m\r\n",
        "root:x:0:0\r\n",
        "NEEDLE-Q7Z \u{130}stanbul\r\n",
        "line 2999 of a long",
        " listing\r\n",
        "the last line, unended",
    ];
    let mut id = 0;
    for (seq, text) in parts.iter().enumerate() {
        id = kept(
            r.store(&ws(), "alice", None, &chunk(seq as u64, text), at(1))
                .unwrap(),
        );
    }
    let recording = r.get(id).unwrap().unwrap();
    let hits = r.search(&recording, "/ETC/SHADOW", 10).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].line, "$ cat /etc/Shadow", "as it was shown");
    assert_eq!(hits[0].seconds, 1.0, "where the match ends");
    // Lowercasing changes a text's length (the dotted capital I takes two
    // characters): the line shown is still the one read.
    let hits = r
        .search(&recording, "needle-q7z i\u{307}stanbul", 10)
        .unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].line, "NEEDLE-Q7Z \u{130}stanbul");
    // A line whose end came with a later event is shown whole, and one the
    // recording ended in as far as it went.
    let hits = r.search(&recording, "LINE 2999 of", 10).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].line, "line 2999 of a long listing");
    assert_eq!(hits[0].seconds, 4.0, "where the match ends");
    let hits = r.search(&recording, "last line", 10).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].line, "the last line, unended");
    assert!(
        r.search(&recording, "nothing like it", 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn recordings_past_their_retention_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let old = kept(
        r.store(&ws(), "alice", None, &chunk(0, "old"), at(1_000))
            .unwrap(),
    );
    let mut new = chunk(0, "new");
    new.recording = [1; 16];
    let new = kept(r.store(&ws(), "alice", None, &new, at(9_000)).unwrap());
    assert_eq!(r.prune(at(5_000)).unwrap(), 1);
    assert!(r.get(old).unwrap().is_none());
    assert!(r.get(new).unwrap().is_some());
    assert_eq!(r.read(old, 0, 1 << 20).unwrap().0, "");
    // Its key is free again: the same recorder key starts a new one.
    assert_ne!(
        kept(
            r.store(&ws(), "alice", None, &chunk(0, "again"), at(9_500))
                .unwrap()
        ),
        old
    );
    let listed: Vec<u64> = r.list(None).map(|e| e.unwrap().1.id).collect();
    assert_eq!(listed.len(), 2);
    assert!(listed[0] > listed[1], "newest first");
}

#[test]
fn a_chunk_naming_another_user_does_not_extend_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    kept(
        r.store(&ws(), "alice", None, &chunk(0, "alice's"), at(1))
            .unwrap(),
    );
    assert_eq!(
        r.store(&ws(), "mallory", None, &chunk(1, "mallory's"), at(2))
            .unwrap(),
        Stored::Malformed
    );
    let recording = r.list(None).next().unwrap().unwrap().1;
    assert_eq!((recording.os_user.as_str(), recording.chunks), ("alice", 1));
    // The same key on another computer is another recording.
    let other: ComputerId = "ws-2".parse().unwrap();
    kept(
        r.store(&other, "mallory", None, &chunk(0, "mine"), at(3))
            .unwrap(),
    );
}

#[test]
fn past_a_quota_output_is_left_out_and_the_recording_marked_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let line = chunk(1, "x").events.len() as u64;
    // Room for three lines before less than a whole chunk is left.
    let whole = MAX_CHUNK_EVENTS as u64;
    let quotas = Quotas {
        per_computer: 100 * whole,
        per_user: whole + 3 * line - 1,
        session_only: false,
    };
    let r = open_with(dir.path(), quotas);
    let id = kept(
        r.store(&ws(), "alice", None, &chunk(0, "x"), at(1))
            .unwrap(),
    );
    for seq in 1..3 {
        let stored = r
            .store(&ws(), "alice", None, &chunk(seq, "x"), at(2))
            .unwrap();
        assert_eq!(
            stored,
            Stored::Kept {
                id,
                first_loss: None
            }
        );
    }
    // Alice's fourth line is over her quota: acknowledged, left out, said once.
    let stored = r
        .store(&ws(), "alice", None, &chunk(3, "x"), at(3))
        .unwrap();
    assert_eq!(
        stored,
        Stored::Kept {
            id,
            first_loss: Some(Loss::Quota)
        }
    );
    let stored = r
        .store(&ws(), "alice", None, &chunk(4, "x"), at(4))
        .unwrap();
    assert_eq!(
        stored,
        Stored::Kept {
            id,
            first_loss: None
        }
    );
    let recording = r.get(id).unwrap().unwrap();
    assert!(recording.incomplete);
    assert_eq!((recording.chunks, recording.bytes), (5, 3 * line));
    assert_eq!(r.verify(&recording).unwrap(), Ok(()), "still sealed whole");
    // Bob on the same computer has a quota of his own, and counts are kept
    // across a restart (an older database's are counted once at open).
    let mut bobs = chunk(0, "x");
    bobs.recording = [8; 16];
    assert!(matches!(
        r.store(&ws(), "bob", None, &bobs, at(5)).unwrap(),
        Stored::Kept {
            first_loss: None,
            ..
        }
    ));
    drop(r);
    let r = open_with(dir.path(), quotas);
    let stored = r
        .store(&ws(), "alice", None, &chunk(5, "x"), at(6))
        .unwrap();
    assert_eq!(
        stored,
        Stored::Kept {
            id,
            first_loss: None
        }
    );
    assert_eq!(r.get(id).unwrap().unwrap().bytes, 3 * line);
    // Pruned, a recording gives its room back.
    assert_eq!(r.prune(at(100)).unwrap(), 2);
    let mut again = chunk(0, "x");
    again.recording = [7; 16];
    assert!(matches!(
        r.store(&ws(), "alice", None, &again, at(101)).unwrap(),
        Stored::Kept {
            first_loss: None,
            ..
        }
    ));
}

#[test]
fn with_sessions_only_a_recording_outside_one_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let quotas = Quotas {
        session_only: true,
        ..DEFAULT_QUOTAS
    };
    let r = open_with(dir.path(), quotas);
    assert_eq!(
        r.store(&ws(), "alice", None, &chunk(0, "x"), at(1))
            .unwrap(),
        Stored::Refused { first: true }
    );
    assert_eq!(
        r.store(&ws(), "alice", None, &chunk(1, "x"), at(2))
            .unwrap(),
        Stored::Refused { first: false }
    );
    assert_eq!(r.list(None).count(), 0);
    let mut tied = chunk(0, "x");
    tied.recording = [1; 16];
    kept(r.store(&ws(), "alice", Some(4), &tied, at(3)).unwrap());
}

#[test]
fn a_terminal_size_is_clamped_at_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let mut huge = chunk(0, "x");
    if let Some(start) = huge.start.as_mut() {
        (start.width, start.height) = (u16::MAX, u16::MAX);
    }
    let id = kept(r.store(&ws(), "alice", None, &huge, at(1)).unwrap());
    let start = r.get(id).unwrap().unwrap().start;
    assert_eq!((start.width, start.height), (MAX_COLUMNS, MAX_ROWS));
}

#[test]
fn the_seal_covers_the_whole_start_and_the_last_write() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let id = kept(
        r.store(&ws(), "alice", None, &chunk(0, "one"), at(1))
            .unwrap(),
    );
    let recording = r.get(id).unwrap().unwrap();
    assert_eq!(r.verify(&recording).unwrap(), Ok(()));
    let changes: [fn(&mut Recording); 6] = [
        |r| r.start.command = "/bin/true".into(),
        |r| r.start.width = 81,
        |r| r.start.height = 25,
        |r| r.start.term = "vt100".into(),
        |r| r.start.input = true,
        // Made to look older, to be pruned early.
        |r| r.updated = at(0),
    ];
    for change in changes {
        let mut altered = recording.clone();
        change(&mut altered);
        assert_eq!(
            r.verify(&altered).unwrap(),
            Err(Tampered::Seal),
            "{altered:?}"
        );
    }
}

/// Recording `key`'s first chunk, of ws-1's alice, stored at `ms`.
fn first(r: &Recordings, key: u8, ms: u64) -> u64 {
    let mut chunk = chunk(0, "one");
    chunk.recording = [key; 16];
    kept(r.store(&ws(), "alice", None, &chunk, at(ms)).unwrap())
}

#[test]
fn a_recording_removed_whole_or_rolled_back_is_found_by_the_census() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    first(&r, 1, 1);
    let id = first(&r, 2, 1);
    assert_eq!(r.verify_census().unwrap(), Ok(()));

    // Rolled back: its summary of one chunk put back, the second chunk gone.
    let earlier = r.meta.get(&id.to_be_bytes()).unwrap().unwrap();
    let mut second = chunk(1, "two");
    second.recording = [2; 16];
    r.store(&ws(), "alice", None, &second, at(2)).unwrap();
    assert_eq!(r.verify_census().unwrap(), Ok(()));
    let later = r.meta.get(&id.to_be_bytes()).unwrap().unwrap();
    put(&r, &r.meta, &id.to_be_bytes(), &earlier);
    take(&r, &r.chunks, &chunk_key(id, 1));
    let recording = r.get(id).unwrap().unwrap();
    assert_eq!(r.verify(&recording).unwrap(), Ok(()), "on its own it holds");
    assert!(matches!(
        r.verify_census().unwrap(),
        Err(Tampered::Census { .. })
    ));
    put(&r, &r.meta, &id.to_be_bytes(), &later);

    // Removed whole.
    take(&r, &r.meta, &id.to_be_bytes());
    assert_eq!(
        r.verify_census().unwrap(),
        Err(Tampered::Census {
            counted: 2,
            stored: 1
        })
    );
}

#[test]
fn pruning_keeps_the_census() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    first(&r, 1, 1);
    first(&r, 2, 5);
    assert_eq!(r.prune(at(3)).unwrap(), 1);
    assert_eq!(r.verify_census().unwrap(), Ok(()));
}

#[test]
fn recordings_gone_from_the_database_are_found_at_the_next_opening() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    first(&r, 1, 1);
    first(&r, 2, 1);
    let made = r.made();
    r.db.flush_blocking().unwrap();
    r.anchor(made).unwrap();
    assert_eq!(r.found_gone(), 0);
    drop(r);
    // As sled leaves a log it cut short: what was in it is gone, the census
    // with it; the anchor file beside sled's own is not.
    let folder = dir.path().join("recordings");
    for file in std::fs::read_dir(&folder).unwrap() {
        let path = file.unwrap().path();
        if path.file_name() != Some("made".as_ref()) {
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    let r = open(dir.path());
    assert_eq!(r.found_gone(), 2);
    assert_eq!(r.verify_census().unwrap(), Err(Tampered::Lost(2)));
    drop(r);
    let r = open(dir.path());
    assert_eq!(r.found_gone(), 0, "found once");
    assert_eq!(
        r.verify_census().unwrap(),
        Err(Tampered::Lost(2)),
        "reported on"
    );
}

#[test]
fn a_recording_of_the_first_release_verifies_and_is_sealed_whole_at_its_next_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(OtpKeys::derive(&[5; 32]));
    let r = open(dir.path());
    let id = first(&r, 1, 1);
    // Stored as the first release stored it: its schema (the same fields
    // but the last), its seal.
    let current = r.get(id).unwrap().unwrap();
    let mut old = current.clone();
    old.summary_v1 = true;
    old.seal = keys.seal_recording(&old.summary());
    let v1 = (
        old.id,
        &old.computer,
        old.key,
        &old.os_user,
        old.session,
        &old.start,
        old.chunks,
        old.bytes,
        old.updated,
        old.end,
        old.incomplete,
        old.head,
        &old.seal,
    );
    let bytes = otpgate_actors::store::record::encode_as(1, &v1).unwrap();
    put(&r, &r.meta, &id.to_be_bytes(), &bytes);
    let mut census = r.census().unwrap().unwrap();
    census.fold(&current.seal);
    census.fold(&old.seal);
    put(&r, &r.census, b"census", &census.sealed(&keys).unwrap());

    let read = r.get(id).unwrap().unwrap();
    assert!(read.summary_v1);
    assert_eq!(r.verify(&read).unwrap(), Ok(()));
    let mut next = chunk(1, "two");
    next.recording = [1; 16];
    r.store(&ws(), "alice", None, &next, at(2)).unwrap();
    let read = r.get(id).unwrap().unwrap();
    assert!(!read.summary_v1, "sealed whole now");
    assert_eq!(r.verify(&read).unwrap(), Ok(()));
    assert_eq!(r.verify_census().unwrap(), Ok(()));
}

#[test]
fn a_recording_still_being_written_verifies_and_the_census_holds_while_chunks_come() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let id = first(&r, 1, 1);
    let listed = r.get(id).unwrap().unwrap();
    // A chunk arrives after the summary was read, before the check.
    let mut next = chunk(1, "two");
    next.recording = [1; 16];
    r.store(&ws(), "alice", None, &next, at(2)).unwrap();
    assert_eq!(r.verify(&listed).unwrap(), Ok(()), "grown, not altered");
    // One put there behind the server's back is found.
    let now = r.get(id).unwrap().unwrap();
    put(
        &r,
        &r.chunks,
        &chunk_key(id, 2),
        &deflate(b"[1.0, \"o\", \"x\"]\n"),
    );
    assert_eq!(r.verify(&now).unwrap(), Err(Tampered::Extra));
}

#[test]
fn a_recording_written_to_while_pruned_is_kept_and_the_census_holds() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path());
    let id = first(&r, 1, 1);
    // Listed as old, then a chunk comes before it is removed.
    let mut next = chunk(1, "two");
    next.recording = [1; 16];
    r.store(&ws(), "alice", None, &next, at(9)).unwrap();
    assert!(!r.remove_if_before(id, at(5)).unwrap(), "written since");
    assert!(r.get(id).unwrap().is_some());
    assert_eq!(r.verify_census().unwrap(), Ok(()));
}

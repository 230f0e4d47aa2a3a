//! The recordings store's unit tests: chunks kept whole and in order, and
//! every tampering found.

use otpgate_protocol::record::RecordingStart;

use super::*;

fn open(dir: &std::path::Path) -> Recordings {
    Recordings::open(&dir.join("recordings"), Arc::new(OtpKeys::derive(&[5; 32]))).unwrap()
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
    let original = r.chunks.get(chunk_key(id, 2)).unwrap().unwrap();
    r.chunks
        .insert(chunk_key(id, 2), deflate(&chunk(2, "MORE").events))
        .unwrap();
    assert_eq!(r.verify(&recording).unwrap(), Err(Tampered::Chain));
    r.chunks.insert(chunk_key(id, 2), original.clone()).unwrap();

    // A chunk removed, or one added.
    r.chunks.remove(chunk_key(id, 1)).unwrap();
    assert_eq!(r.verify(&recording).unwrap(), Err(Tampered::Missing(1)));
    r.chunks.insert(chunk_key(id, 1), original.clone()).unwrap();
    r.chunks.insert(chunk_key(id, 4), original).unwrap();
    assert_eq!(r.verify(&recording).unwrap(), Err(Tampered::Extra));
    r.chunks.remove(chunk_key(id, 4)).unwrap();

    // The summary rewritten without the server's key (the last chunk
    // dropped and the head recomputed to match).
    let mut shorter = recording.clone();
    shorter.chunks = 3;
    r.chunks.remove(chunk_key(id, 3)).unwrap();
    let mut head = [0; 32];
    for seq in 0..3 {
        let events = inflate(&r.chunks.get(chunk_key(id, seq)).unwrap().unwrap()).unwrap();
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
        "$ \u{1b}[1mcat /etc/sha",
        "dow\u{1b}[0m\r\n",
        "root:x:0:0\r\n",
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
    assert_eq!(hits[0].line, "$ cat /etc/shadow");
    assert_eq!(hits[0].seconds, 1.0, "where the match ends");
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

//! Bad input from the network: oversized, truncated, unknown-version and
//! undecodable frames, and messages out of place, each close that one connection
//! with an error code; random bytes thrown at a live server do not stop it
//! serving its agents.

use std::time::Duration;

use crate::common::agent::{RawTls, connect_tls};
use crate::common::server::TestServer;
use otpgate::frames::{FrameReader, FrameWriter};
use otpgate::tls;
use otpgate_protocol::{
    AgentMessage, ErrorCode, Hello, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, ServerMessage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WITHIN: Duration = Duration::from_secs(20);

/// The version the test agents speak: the newest.
const NEWEST: u8 = otpgate_protocol::version::AGENT.newest;

fn hello(min_version: u16, max_version: u16) -> AgentMessage {
    AgentMessage::Hello(Hello {
        min_version,
        max_version,
        agent_version: "test".into(),
        host_name: "test".into(),
    })
}

/// A TLS connection with a valid identity; welcomed first if `greet`.
async fn open(server: &TestServer, greet: bool) -> RawTls {
    let config = tls::client_config(&server.identity("ws-raw")).unwrap();
    let mut stream = connect_tls(config, server.addr).await.unwrap();
    if greet {
        let mut buf = bytes::BytesMut::new();
        otpgate_protocol::encode(
            &hello(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION),
            NEWEST,
            &mut buf,
        )
        .unwrap();
        stream.write_all(&buf).await.unwrap();
        let mut reader = FrameReader::new(&mut stream);
        let welcome = reader.read::<ServerMessage>().await.unwrap();
        assert!(
            matches!(welcome, Some(ServerMessage::Welcome(_))),
            "{welcome:?}"
        );
    }
    stream
}

/// Reads until the server's Close, which must carry `code`, then expects the end
/// of the stream.
async fn expect_close(stream: RawTls, code: ErrorCode) {
    let mut reader = FrameReader::new(stream);
    let closing = async {
        loop {
            match reader.read::<ServerMessage>().await {
                Ok(Some(ServerMessage::Close(got))) => return got,
                Ok(Some(ServerMessage::Ping { .. })) => continue,
                other => panic!("expected Close({code:?}), got {other:?}"),
            }
        }
    };
    let got = tokio::time::timeout(WITHIN, closing).await.unwrap();
    assert_eq!(got, code);
    let end = tokio::time::timeout(WITHIN, reader.read::<ServerMessage>())
        .await
        .unwrap();
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "connection closed: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_the_connection_with_a_code() {
    let server = TestServer::start().await;
    let cases: [(&str, &[u8], ErrorCode); 4] = [
        (
            "oversized",
            &[0xff, 0xff, 0xff, 0xff, 1],
            ErrorCode::FrameTooLarge,
        ),
        (
            "unknown version",
            &[0, 0, 0, 2, 9, 0],
            ErrorCode::UnsupportedFrameVersion,
        ),
        (
            "not bincode",
            &[0, 0, 0, 4, 1, 0xff, 0xff, 0xff],
            ErrorCode::Malformed,
        ),
        ("empty", &[0, 0, 0, 0], ErrorCode::Malformed),
    ];
    for greet in [false, true] {
        for (what, bytes, code) in cases {
            let mut stream = open(&server, greet).await;
            stream.write_all(bytes).await.unwrap();
            stream.flush().await.unwrap();
            eprintln!("{what}, after hello: {greet}");
            expect_close(stream, code).await;
        }
        // A frame cut short by the end of the stream.
        let mut stream = open(&server, greet).await;
        stream.write_all(&[0, 0, 0, 10, 1, 0]).await.unwrap();
        stream.shutdown().await.unwrap();
        expect_close(stream, ErrorCode::FrameTruncated).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_out_of_place_close_the_connection_with_a_code() {
    let server = TestServer::start().await;

    let mut stream = open(&server, false).await;
    send(&mut stream, &AgentMessage::Pong { nonce: 1 }).await;
    expect_close(stream, ErrorCode::UnexpectedMessage).await;

    let mut stream = open(&server, false).await;
    send(&mut stream, &hello(MAX_PROTOCOL_VERSION + 1, u16::MAX)).await;
    expect_close(stream, ErrorCode::UnsupportedProtocolVersion).await;

    let mut stream = open(&server, true).await;
    send(
        &mut stream,
        &hello(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION),
    )
    .await;
    expect_close(stream, ErrorCode::UnexpectedMessage).await;

    // Saying nothing at all: closed once the handshake timeout (2 s here) is up.
    expect_close(open(&server, false).await, ErrorCode::Timeout).await;
}

async fn send(stream: &mut RawTls, msg: &AgentMessage) {
    let (_, write) = tokio::io::split(stream);
    FrameWriter::new(write).write(msg, NEWEST).await.unwrap();
}

/// A small deterministic generator, so that a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = 1 + (self.next() as usize) % max;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_do_not_stop_the_server() {
    let server = TestServer::start().await;
    let agent = server.agent(&server.identity("ws-steady"));
    agent.welcomed(1, WITHIN).await;

    let mut rng = XorShift(0x5eed_0f0b_9a7e);
    let mut attacks = tokio::task::JoinSet::new();
    for round in 0..80 {
        let junk = rng.bytes(4096);
        match round % 4 {
            // Not even TLS.
            0 => {
                let addr = server.addr;
                attacks.spawn(async move {
                    let mut tcp = TcpStream::connect(addr).await.unwrap();
                    let _ = tcp.write_all(&junk).await;
                    let _ = tcp.shutdown().await;
                    let mut rest = Vec::new();
                    let _ = tcp.read_to_end(&mut rest).await;
                });
            }
            // TLS, then junk instead of Hello, or after Hello, or junk inside a
            // well-formed frame header.
            kind => {
                let mut stream = open(&server, kind != 1).await;
                let junk = if kind == 3 {
                    let mut framed = ((junk.len() + 1) as u32).to_be_bytes().to_vec();
                    framed.push(1);
                    framed.extend_from_slice(&junk);
                    framed
                } else {
                    junk
                };
                attacks.spawn(async move {
                    let _ = stream.write_all(&junk).await;
                    let _ = stream.shutdown().await;
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                });
            }
        }
    }
    // Every attacker's connection is closed by the server: none hangs.
    tokio::time::timeout(WITHIN, async {
        while let Some(done) = attacks.join_next().await {
            done.unwrap();
        }
    })
    .await
    .expect("the server closed every bad connection");

    // The agent that was there all along is still served, and newcomers get in.
    agent.still_served(WITHIN).await;
    let newcomer = server.agent(&server.identity("ws-newcomer"));
    newcomer.welcomed(1, WITHIN).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_a_host_name_that_breaks_its_rule_is_refused() {
    let server = TestServer::start().await;
    for host_name in ["evil\u{1b}[2J", "two words", &"a".repeat(300)] {
        let mut stream = open(&server, false).await;
        let hello = AgentMessage::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: MAX_PROTOCOL_VERSION,
            agent_version: "test".into(),
            host_name: host_name.into(),
        });
        let mut writer = FrameWriter::new(&mut stream);
        writer.write(&hello, NEWEST).await.unwrap();
        expect_close(stream, ErrorCode::Malformed).await;
    }
    // A proper one is welcomed.
    open(&server, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_holds_a_few_connections_and_heartbeats_are_flood_controlled() {
    let server = TestServer::start().await;
    let mut held = Vec::new();
    for _ in 0..otpgate_actors::computer::MAX_CONNECTIONS_PER_COMPUTER {
        held.push(open(&server, true).await);
    }
    // One more with the same identity is closed with its reason.
    let mut extra = open(&server, false).await;
    let mut writer = FrameWriter::new(&mut extra);
    writer
        .write(&hello(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION), NEWEST)
        .await
        .unwrap();
    expect_close(extra, ErrorCode::TooManyConnections).await;

    // Heartbeats as fast as one can send them: refused past the flood limit,
    // and the connection stays open.
    let mut flooding = held.pop().unwrap();
    let mut frames = bytes::BytesMut::new();
    for id in 0..500 {
        let beat = AgentMessage::Request {
            id,
            request: otpgate_protocol::Request::Heartbeat,
        };
        otpgate_protocol::encode(&beat, NEWEST, &mut frames).unwrap();
    }
    flooding.write_all(&frames).await.unwrap();
    let mut reader = FrameReader::new(&mut flooding);
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < 500 {
        match tokio::time::timeout(WITHIN, reader.read::<ServerMessage>())
            .await
            .unwrap()
        {
            Ok(Some(ServerMessage::Response { response, .. })) => match response {
                otpgate_protocol::Response::Heartbeat => answered += 1,
                otpgate_protocol::Response::Fail(ErrorCode::TooManyRequests) => refused += 1,
                other => panic!("{other:?}"),
            },
            Ok(Some(ServerMessage::Ping { .. })) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        refused > 0 && answered > 0,
        "{answered} answered, {refused} refused"
    );

    // A connection that leaves frees its place.
    drop(reader);
    drop(flooding);
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let mut stream = open(&server, false).await;
        let mut writer = FrameWriter::new(&mut stream);
        writer
            .write(&hello(MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION), NEWEST)
            .await
            .unwrap();
        let mut reader = FrameReader::new(&mut stream);
        match reader.read::<ServerMessage>().await {
            Ok(Some(ServerMessage::Welcome(_))) => break,
            Ok(Some(ServerMessage::Close(ErrorCode::TooManyConnections))) => {
                assert!(tokio::time::Instant::now() < deadline, "no place freed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{other:?}"),
        }
    }
}

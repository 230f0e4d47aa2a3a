//! Mixed releases on the three wires, through real sockets: an agent of
//! protocol version 1 is served in version 1; a request the server does not
//! know is answered `Unsupported` and the connection stays; the local and
//! admin sockets answer each request in the version it is written in (or, when
//! it is newer than theirs, in their newest), and keep the connection after
//! one they cannot read.

use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::common::agent::{RawTls, connect_tls};
use crate::common::server::TestServer;
use otpgate::frames::FrameReader;
use otpgate::tls;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, PageRequest};
use otpgate_protocol::frame::{Frame, encode_as};
use otpgate_protocol::local::{LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, LoginResponse};
use otpgate_protocol::{
    AgentMessage, ErrorCode, HANDSHAKE_VERSION, Hello, Message, Request, Response, ServerMessage,
};

const WITHIN: Duration = Duration::from_secs(20);

/// A connection of computer `name` welcomed after a Hello offering
/// `min..=max`; the version the Welcome named.
async fn greeted(server: &TestServer, name: &str, min: u16, max: u16) -> (RawTls, u16) {
    let config = tls::client_config(&server.identity(name)).unwrap();
    let mut stream = connect_tls(config, server.addr).await.unwrap();
    let hello = AgentMessage::Hello(Hello {
        min_version: min,
        max_version: max,
        agent_version: "0.1.0".into(),
        host_name: name.into(),
    });
    write(&mut stream, &hello, HANDSHAKE_VERSION).await;
    let frame = next_frame(&mut stream).await;
    assert_eq!(
        frame.version, HANDSHAKE_VERSION,
        "a Welcome is a version 1 frame"
    );
    match ServerMessage::decode(&frame).unwrap() {
        ServerMessage::Welcome(welcome) => (stream, welcome.version),
        other => panic!("not welcomed: {other:?}"),
    }
}

async fn write<M: Message>(stream: &mut (impl AsyncWriteExt + Unpin), msg: &M, version: u8) {
    let mut buf = BytesMut::new();
    msg.encode(version, &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
}

/// A frame of `version` holding `payload`, whatever bincode it is.
async fn write_raw(
    stream: &mut (impl AsyncWriteExt + Unpin),
    payload: &impl serde::Serialize,
    version: u8,
) {
    let mut buf = BytesMut::new();
    encode_as(payload, version, &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
}

/// The next frame that is not a ping.
async fn next_frame(stream: &mut (impl AsyncReadExt + Unpin)) -> Frame {
    let mut reader = FrameReader::new(stream);
    loop {
        let frame = tokio::time::timeout(WITHIN, reader.read_frame())
            .await
            .expect("an answer in time")
            .unwrap()
            .expect("the connection is open");
        if !matches!(
            ServerMessage::decode(&frame),
            Ok(ServerMessage::Ping { .. })
        ) {
            return frame;
        }
    }
}

/// Asks `request` under id `id` and returns the response's frame version and
/// the response.
async fn request(stream: &mut RawTls, id: u64, request: Request, version: u8) -> (u8, Response) {
    write(stream, &AgentMessage::Request { id, request }, version).await;
    let frame = next_frame(stream).await;
    match ServerMessage::decode(&frame).unwrap() {
        ServerMessage::Response {
            id: answered,
            response,
        } => {
            assert_eq!(answered, id);
            (frame.version, response)
        }
        other => panic!("not a response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_does_not_know_is_answered_and_the_connection_stays() {
    let server = TestServer::start().await;
    let (mut stream, version) = greeted(&server, "ws-new", 1, 2).await;
    assert_eq!(version, 2, "the newest both speak");
    // A request kind (index 99) no release has: the envelope says `Request`
    // (index 1) with id 77.
    write_raw(&mut stream, &(1u32, 77u64, 99u32, "from the future"), 2).await;
    let frame = next_frame(&mut stream).await;
    assert_eq!(frame.version, 2);
    assert_eq!(
        ServerMessage::decode(&frame).unwrap(),
        ServerMessage::Response {
            id: 77,
            response: Response::Fail(ErrorCode::Unsupported)
        }
    );
    // A message kind (index 9) the server does not know at all is let pass.
    write_raw(&mut stream, &(9u32, "a newer agent's push"), 2).await;
    let (_, answer) = request(&mut stream, 78, Request::Heartbeat, 2).await;
    assert_eq!(
        answer,
        Response::Heartbeat,
        "the connection is still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_version_1_is_served_in_version_1_and_shown_as_such() {
    let server = TestServer::start().await;
    let (mut stream, version) = greeted(&server, "ws-old", 1, 1).await;
    assert_eq!(version, 1);
    let status = Request::Login {
        os_user: "alice".into(),
        request: LoginRequest::Status,
    };
    let (frame_version, answer) = request(&mut stream, 1, status, 1).await;
    assert_eq!(frame_version, 1, "answered in version 1 frames");
    assert!(
        matches!(answer, Response::Login(LoginResponse::Status(_))),
        "{answer:?}"
    );
    // What version 1 has no code for is said as the nearest code it has.
    write_raw(&mut stream, &(1u32, 5u64, 99u32), 1).await;
    let frame = next_frame(&mut stream).await;
    assert_eq!(
        (frame.version, ServerMessage::decode(&frame).unwrap()),
        (
            1,
            ServerMessage::Response {
                id: 5,
                response: Response::Fail(ErrorCode::Malformed)
            }
        )
    );

    let page = PageRequest::default();
    let AdminResponse::Clients(clients) = server.admin(AdminRequest::ClientsList { page }).await
    else {
        panic!("no clients")
    };
    let old = clients
        .items
        .iter()
        .find(|c| c.computer == "ws-old")
        .unwrap();
    assert_eq!(
        (old.agent_version.as_str(), old.protocol),
        ("0.1.0", Some(1))
    );
    let listed = server.admin_cli(&["clients", "list"]).await;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("agent 0.1.0 (protocol 1)"), "{listed}");
}

/// Asks `payload` (a raw frame of `version`) on the local or admin socket at
/// `socket`, over `stream`; the answer's frame.
async fn ask_raw(stream: &mut UnixStream, payload: &impl serde::Serialize, version: u8) -> Frame {
    write_raw(stream, payload, version).await;
    let mut reader = FrameReader::new(stream);
    tokio::time::timeout(WITHIN, reader.read_frame())
        .await
        .unwrap()
        .unwrap()
        .expect("an answer")
}

async fn connect(socket: &Path) -> UnixStream {
    UnixStream::connect(socket).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_socket_answers_each_request_in_its_version() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-local").await;
    let mut stream = connect(&desk.socket).await;

    // A request of version 1 (the first release's PAM module) is answered in 1.
    let frame = ask_raw(&mut stream, &LocalRequest::Status, 1).await;
    assert_eq!(frame.version, 1);
    assert!(matches!(
        LocalResponse::decode(&frame).unwrap(),
        LocalResponse::Status(_)
    ));
    // One it cannot read is answered Unsupported, and the connection stays.
    let frame = ask_raw(&mut stream, &(99u32, "from the future"), 2).await;
    assert_eq!(
        (frame.version, LocalResponse::decode(&frame).unwrap()),
        (2, LocalResponse::Fail(LocalError::Unsupported))
    );
    // A version newer than the agent's is answered in the agent's newest, so
    // that the client asks again in it.
    let frame = ask_raw(&mut stream, &LocalRequest::Status, 9).await;
    assert_eq!(
        (frame.version, LocalResponse::decode(&frame).unwrap()),
        (2, LocalResponse::Fail(LocalError::Unsupported))
    );
    let frame = ask_raw(&mut stream, &LocalRequest::Status, 2).await;
    assert!(matches!(
        LocalResponse::decode(&frame).unwrap(),
        LocalResponse::Status(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_answers_a_first_release_client_in_its_shapes() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-new").await;
    let socket = otpgate::server::admin::socket_path(&server.data_dir());
    let mut stream = connect(&socket).await;
    let list = AdminRequest::ClientsList {
        page: PageRequest::default(),
    };
    // Version 1's client view is read with version 1's shape: no agent versions.
    let frame = ask_raw(&mut stream, &list, 1).await;
    assert_eq!(frame.version, 1);
    let (_, page): (
        u32,
        otpgate_protocol::admin::Page<otpgate_protocol::admin::v1::ClientView>,
    ) = frame.decode().expect("version 1's shape, to the last byte");
    assert_eq!(page.items.len(), 1);
    // Version 2's carries them.
    let frame = ask_raw(&mut stream, &list, 2).await;
    let AdminResponse::Clients(page) = AdminResponse::decode(&frame).unwrap() else {
        panic!("no clients")
    };
    assert_eq!(page.items[0].protocol, Some(2));
    assert_eq!(page.items[0].agent_version, env!("CARGO_PKG_VERSION"));
    // A request the daemon does not know: answered, and the connection stays.
    let frame = ask_raw(&mut stream, &(99u32,), 2).await;
    assert!(matches!(
        AdminResponse::decode(&frame).unwrap(),
        AdminResponse::Fail(fail) if fail.code == otpgate_protocol::admin::AdminErrorCode::Unsupported
    ));
    let frame = ask_raw(&mut stream, &AdminRequest::SettingsGet, 2).await;
    assert!(matches!(
        AdminResponse::decode(&frame).unwrap(),
        AdminResponse::Settings(_)
    ));
    desk.stop().await;
}

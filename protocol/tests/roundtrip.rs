//! Property tests of the frame codec: every message round-trips, and no sequence
//! of bytes makes the decoder panic or allocate beyond the frame limit.

use bytes::{BufMut, BytesMut};
use otpgate_protocol::frame::{FRAME_VERSION, MAX_FRAME_LEN};
use otpgate_protocol::local::{AgentStatus, LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};
use otpgate_protocol::{
    AgentMessage, ErrorCode, FrameError, Hello, Request, Response, ServerMessage, Welcome, decode,
    encode,
};
use proptest::prelude::*;

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::FrameTooLarge),
        Just(ErrorCode::FrameTruncated),
        Just(ErrorCode::UnsupportedFrameVersion),
        Just(ErrorCode::Malformed),
        Just(ErrorCode::UnexpectedMessage),
        Just(ErrorCode::UnsupportedProtocolVersion),
        Just(ErrorCode::Timeout),
        Just(ErrorCode::TooManyRequests),
        Just(ErrorCode::Unavailable),
        Just(ErrorCode::ShuttingDown),
        Just(ErrorCode::Internal),
    ]
}

fn agent_message() -> impl Strategy<Value = AgentMessage> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), ".{0,40}", ".{0,80}").prop_map(
            |(min_version, max_version, agent_version, host_name)| {
                AgentMessage::Hello(Hello {
                    min_version,
                    max_version,
                    agent_version,
                    host_name,
                })
            }
        ),
        any::<u64>().prop_map(|id| AgentMessage::Request {
            id,
            request: Request::Heartbeat
        }),
        (any::<u64>(), ".{0,32}", login_request()).prop_map(|(id, os_user, request)| {
            AgentMessage::Request {
                id,
                request: Request::Login { os_user, request },
            }
        }),
        any::<u64>().prop_map(|nonce| AgentMessage::Pong { nonce }),
    ]
}

fn login_request() -> impl Strategy<Value = LoginRequest> {
    let mode = prop_oneof![
        ".{0,64}".prop_map(RequestMode::Email),
        Just(RequestMode::Directory),
        (".{0,32}", ".{0,64}").prop_map(|(login, password)| RequestMode::Internal {
            login,
            password: Secret(password)
        }),
        ".{0,64}".prop_map(RequestMode::Emergency),
    ];
    prop_oneof![
        Just(LoginRequest::Status),
        mode.prop_map(LoginRequest::Request),
        Just(LoginRequest::Resend),
        (".{0,64}", "[0-9]{0,12}").prop_map(|(email, code)| LoginRequest::Verify {
            email,
            code: Secret(code)
        }),
        any::<Option<u64>>().prop_map(|session| LoginRequest::Logout { session }),
    ]
}

fn login_response() -> impl Strategy<Value = LoginResponse> {
    prop_oneof![
        (".{0,64}", any::<u64>()).prop_map(|(to, valid_until)| {
            LoginResponse::Requested(Requested::Send { to, valid_until })
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(request, expires)| {
            LoginResponse::Requested(Requested::AwaitApproval { request, expires })
        }),
        any::<u64>().prop_map(|session| LoginResponse::Verified(Verdict::Allow { session })),
        Just(LoginResponse::Verified(Verdict::Deny)),
        any::<u64>()
            .prop_map(|retry_after| LoginResponse::Verified(Verdict::Throttle { retry_after })),
        any::<bool>().prop_map(|ended| LoginResponse::LoggedOut { ended }),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    let response = prop_oneof![
        Just(Response::Heartbeat),
        error_code().prop_map(Response::Fail),
        login_response().prop_map(Response::Login),
    ];
    prop_oneof![
        (any::<u16>(), ".{0,64}", ".{0,40}", any::<u32>()).prop_map(
            |(version, client_id, server_version, heartbeat_interval_ms)| {
                ServerMessage::Welcome(Welcome {
                    version,
                    client_id,
                    server_version,
                    heartbeat_interval_ms,
                })
            }
        ),
        (any::<u64>(), response)
            .prop_map(|(id, response)| ServerMessage::Response { id, response }),
        any::<u64>().prop_map(|nonce| ServerMessage::Ping { nonce }),
        error_code().prop_map(ServerMessage::Close),
    ]
}

fn local_message() -> impl Strategy<Value = LocalResponse> {
    prop_oneof![
        (
            ".{0,32}",
            proptest::option::of(".{0,64}"),
            any::<bool>(),
            any::<Option<u64>>()
        )
            .prop_map(|(os_user, client_id, connected, server_rtt_us)| {
                LocalResponse::Status(AgentStatus {
                    os_user,
                    client_id,
                    connected,
                    server_rtt_us,
                })
            }),
        prop_oneof![
            Just(LocalError::Malformed),
            Just(LocalError::UnknownCaller),
            Just(LocalError::Internal)
        ]
        .prop_map(LocalResponse::Fail),
    ]
}

fn round_trip<M>(msg: &M) -> M
where
    M: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut buf = BytesMut::new();
    encode(msg, &mut buf).expect("encodes");
    let out = decode(&mut buf).expect("decodes").expect("whole frame");
    assert!(buf.is_empty(), "the frame is consumed whole");
    out
}

proptest! {
    #[test]
    fn agent_messages_round_trip(msg in agent_message()) {
        prop_assert_eq!(round_trip(&msg), msg);
    }

    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        prop_assert_eq!(round_trip(&msg), msg);
    }

    #[test]
    fn local_messages_round_trip(msg in local_message()) {
        prop_assert_eq!(round_trip(&msg), msg);
        prop_assert_eq!(round_trip(&LocalRequest::Status), LocalRequest::Status);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        // Keep decoding until the decoder asks for more bytes or gives up.
        while let Ok(Some(_)) = decode::<AgentMessage>(&mut buf) {}
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode::<ServerMessage>(&mut buf) {}
    }

    #[test]
    fn arbitrary_payloads_in_valid_frames_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let mut buf = BytesMut::new();
        buf.put_u32(payload.len() as u32 + 1);
        buf.put_u8(FRAME_VERSION);
        buf.put_slice(&payload);
        let _ = decode::<AgentMessage>(&mut buf);
        prop_assert!(buf.capacity() <= 5 + payload.len() + MAX_FRAME_LEN);
    }

    #[test]
    fn any_length_over_the_maximum_is_refused_at_once(
        len in (MAX_FRAME_LEN as u32 + 1)..=u32::MAX
    ) {
        let mut buf = BytesMut::with_capacity(5);
        buf.put_u32(len);
        buf.put_u8(FRAME_VERSION);
        let capacity = buf.capacity();
        let refused = matches!(
            decode::<AgentMessage>(&mut buf),
            Err(FrameError::TooLarge { .. })
        );
        prop_assert!(refused);
        prop_assert_eq!(buf.capacity(), capacity);
    }
}

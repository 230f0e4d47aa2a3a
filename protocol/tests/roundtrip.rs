//! Property tests of the frame codec: every message (agent, server, local and
//! admin) round-trips, and no frame makes the decoder panic or allocate more
//! than a bounded multiple of the length it declares. Most generated frames are
//! valid messages with a few bytes changed, so that bincode's decoding runs, not
//! only the length check.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, BytesMut};
use otpgate_protocol::admin::{
    AdminError, AdminErrorCode, AdminRequest, AdminResponse, AuditView, Choice, ListFilter,
    OptionNameView, OptionsView, Page, PageRequest, RoleView, SessionView, SettingsPatch,
};
use otpgate_protocol::frame::{MAX_DECODED, MAX_FRAME_LEN, decode_limit};
use otpgate_protocol::local::{AgentStatus, LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};
use otpgate_protocol::record::{RecordChunk, RecordingEnd, RecordingStart};
use otpgate_protocol::{
    AgentMessage, ErrorCode, FrameError, Hello, Message, Request, Response, ServerMessage, Welcome,
    decode, encode,
};

/// The version byte of the frames made by hand here.
const FRAME_VERSION: u8 = otpgate_protocol::version::AGENT.newest;
use proptest::prelude::*;

/// The system allocator, counting this thread's peak of live bytes.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the counters
// are const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.with(|live| {
            live.set(live.get() + layout.size());
            live.get()
        });
        PEAK.with(|peak| peak.set(peak.get().max(live)));
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.with(|live| live.set(live.get().saturating_sub(layout.size())));
        // SAFETY: the caller's pointer and layout, as given.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes `f` had allocated at once on this thread, beyond what was
/// live before it.
fn peak_allocation(f: impl FnOnce()) -> usize {
    let before = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    f();
    PEAK.with(Cell::get) - before
}

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
        Just(ErrorCode::TooManyConnections),
        Just(ErrorCode::CertificateRefused),
        Just(ErrorCode::Internal),
        Just(ErrorCode::OutOfOrder),
        Just(ErrorCode::Unsupported),
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
        (
            any::<u64>(),
            ".{0,32}",
            any::<Option<u64>>(),
            record_chunk()
        )
            .prop_map(|(id, os_user, session, chunk)| AgentMessage::Request {
                id,
                request: Request::Record {
                    os_user,
                    session,
                    chunk
                },
            }),
    ]
}

fn record_chunk() -> impl Strategy<Value = RecordChunk> {
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        proptest::option::of((
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            ".{0,32}",
            any::<bool>(),
        )),
        ".{0,256}",
        any::<bool>(),
        proptest::option::of((any::<u64>(), any::<i32>())),
    )
        .prop_map(|(recording, seq, start, events, lost, end)| RecordChunk {
            recording,
            seq,
            start: start.map(
                |(width, height, started_ms, command, input)| RecordingStart {
                    width,
                    height,
                    started_ms,
                    term: command.clone(),
                    command,
                    input,
                },
            ),
            events: events.into_bytes(),
            lost,
            end: end.map(|(at_ms, status)| RecordingEnd { at_ms, status }),
        })
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
        Just(Response::Recorded),
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
            Just(LocalError::Internal),
            Just(LocalError::Unsupported)
        ]
        .prop_map(LocalResponse::Fail),
    ]
}

fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn options_view() -> impl Strategy<Value = OptionsView> {
    (
        any::<Option<bool>>(),
        proptest::option::of(proptest::collection::vec(text(), 0..3)),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        proptest::collection::vec(
            prop_oneof![
                Just(OptionNameView::AllowOtp),
                Just(OptionNameView::Approvers),
                Just(OptionNameView::AutoDirectory),
                Just(OptionNameView::AutoInternal),
                Just(OptionNameView::RecordInput),
            ],
            0..5,
        ),
    )
        .prop_map(
            |(allow_otp, approvers, auto_directory, auto_internal, record_input, inherit)| {
                OptionsView {
                    allow_otp,
                    approvers,
                    auto_directory,
                    auto_internal,
                    record_input,
                    inherit,
                }
            },
        )
}

fn page_request() -> impl Strategy<Value = PageRequest> {
    (
        any::<u32>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
    )
        .prop_map(|(limit, after)| PageRequest { limit, after })
}

fn list_filter() -> impl Strategy<Value = ListFilter> {
    (
        proptest::option::of(text()),
        proptest::option::of(text()),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
    )
        .prop_map(|(computer, user, since, until)| ListFilter {
            computer,
            user,
            since,
            until,
        })
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![Just(Choice::Approve), Just(Choice::Deny)]
}

fn admin_request() -> impl Strategy<Value = AdminRequest> {
    prop_oneof![
        Just(AdminRequest::SettingsGet),
        (
            any::<Option<u64>>(),
            any::<Option<u8>>(),
            any::<Option<u32>>()
        )
            .prop_map(|(expiration_secs, otp_length, max_failures)| {
                AdminRequest::SettingsSet(SettingsPatch {
                    expiration_secs,
                    otp_length,
                    max_failures,
                    ..SettingsPatch::default()
                })
            }),
        page_request().prop_map(|page| AdminRequest::ClientsList { page }),
        (
            text(),
            proptest::option::of(proptest::option::of(text())),
            options_view()
        )
            .prop_map(|(computer, group, options)| AdminRequest::ClientSet {
                computer,
                group,
                options
            }),
        (text(), options_view())
            .prop_map(|(name, options)| AdminRequest::GroupSet { name, options }),
        (text(), text(), any::<bool>(), text()).prop_map(|(login, email, admin, password)| {
            AdminRequest::UserAdd {
                login,
                email,
                role: if admin {
                    RoleView::Administrator
                } else {
                    RoleView::User
                },
                password: Secret(password),
            }
        }),
        (any::<bool>(), list_filter(), page_request())
            .prop_map(|(all, filter, page)| { AdminRequest::RequestsList { all, filter, page } }),
        (
            any::<u64>(),
            text(),
            text(),
            choice(),
            proptest::option::of(text())
        )
            .prop_map(
                |(id, by, password, choice, comment)| AdminRequest::RequestDecide {
                    id,
                    by,
                    password: Secret(password),
                    choice,
                    comment
                }
            ),
        (text(), choice(), proptest::option::of(text())).prop_map(|(token, choice, comment)| {
            AdminRequest::RequestDecideToken {
                token,
                choice,
                comment,
            }
        }),
        (
            text(),
            text(),
            text(),
            proptest::option::of(text()),
            text(),
            text(),
            any::<bool>()
        )
            .prop_map(
                |(computer, os_user, email, comment, by, password, new_client)| {
                    AdminRequest::OtpGenerate {
                        computer,
                        os_user,
                        email,
                        comment,
                        by,
                        password: Secret(password),
                        new_client,
                    }
                }
            ),
        (any::<bool>(), list_filter(), page_request())
            .prop_map(|(all, filter, page)| { AdminRequest::SessionsList { all, filter, page } }),
        page_request().prop_map(|page| AdminRequest::MailQueue { page }),
        (list_filter(), page_request())
            .prop_map(|(filter, page)| AdminRequest::AuditList { filter, page }),
    ]
}

fn admin_response() -> impl Strategy<Value = AdminResponse> {
    let session = (
        any::<u64>(),
        text(),
        text(),
        any::<u64>(),
        any::<Option<u64>>(),
        proptest::option::of(text()),
    )
        .prop_map(
            |(id, computer, user_name, started, ended, end_reason)| SessionView {
                id,
                computer,
                user_name,
                started,
                last_activity: started,
                ended,
                end_reason,
            },
        );
    let audit = (
        any::<u64>(),
        text(),
        proptest::option::of(text()),
        text(),
        text(),
    )
        .prop_map(|(at, who, computer, action, outcome)| AuditView {
            at,
            who,
            computer,
            action,
            outcome,
        });
    let next = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24));
    prop_oneof![
        (proptest::collection::vec(session, 0..4), next.clone())
            .prop_map(|(items, next)| AdminResponse::Sessions(Page { items, next })),
        (proptest::collection::vec(audit, 0..4), next)
            .prop_map(|(items, next)| AdminResponse::Audit(Page { items, next })),
        any::<u64>().prop_map(|valid_until| AdminResponse::Generated { valid_until }),
        text().prop_map(|said| AdminResponse::MailSent { said }),
        Just(AdminResponse::Done),
        (
            prop_oneof![
                Just(AdminErrorCode::NotFound),
                Just(AdminErrorCode::Invalid),
                Just(AdminErrorCode::Forbidden),
                Just(AdminErrorCode::Conflict),
                Just(AdminErrorCode::Internal),
                Just(AdminErrorCode::TooLarge),
                Just(AdminErrorCode::Unavailable),
                Just(AdminErrorCode::Unsupported),
            ],
            text()
        )
            .prop_map(|(code, message)| AdminResponse::Fail(AdminError { code, message })),
    ]
}

/// A valid frame of `msg` with `changes` applied to its payload (a byte set at
/// an offset) and, `cut`, its declared length moved by up to 8 bytes (so that
/// it says less or more than follows): the length is under the limit.
fn altered<M: Message>(msg: &M, changes: &[(usize, u8)], cut: i8) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(msg, M::VERSIONS.newest, &mut buf).expect("encodes");
    let payload_len = buf.len() - 5;
    for &(at, byte) in changes {
        if payload_len > 0 {
            buf[5 + at % payload_len] = byte;
        }
    }
    let declared = (buf.len() as i64 - 4 + i64::from(cut)).max(1) as u32;
    buf[..4].copy_from_slice(&declared.to_be_bytes());
    buf
}

/// Decodes `frame` as `M` until it ends or fails; the peak of what that
/// allocated, against what the first frame declared.
fn decode_all<M: Message>(mut frame: BytesMut) -> (usize, usize) {
    let declared = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let peak = peak_allocation(|| while let Ok(Some(_)) = decode::<M>(&mut frame) {});
    (peak, declared)
}

/// What decoding a frame that declares `declared` bytes may allocate, for the
/// messages of the agent's connection and of the login socket (which any local
/// user reaches): bincode's limit for a frame of that length (a string's length
/// is checked against it before its room is reserved), and a constant for the
/// decoder's own bookkeeping.
fn allowed(declared: usize) -> usize {
    decode_limit(declared) + 16 * 1024
}

/// What decoding an admin frame may allocate: serde reserves room for a
/// sequence (`approvers`, a page) of up to 1 MiB whatever the frame holds, and
/// bincode's serde path does not count that against its limit. Only the
/// operator reaches the admin socket.
fn allowed_admin(declared: usize) -> usize {
    MAX_DECODED + allowed(declared)
}

fn changes() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)
}

fn cut() -> impl Strategy<Value = i8> {
    prop_oneof![6 => Just(0i8), 1 => -8i8..8]
}

/// `msg` written in the newest version of its wire, and read back.
fn round_trip<M: Message>(msg: &M) -> M {
    let mut buf = BytesMut::new();
    encode(msg, M::VERSIONS.newest, &mut buf).expect("encodes");
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
    fn local_messages_round_trip(msg in local_message(), chunk in record_chunk()) {
        prop_assert_eq!(round_trip(&msg), msg);
        prop_assert_eq!(round_trip(&LocalRequest::Status), LocalRequest::Status);
        let record = LocalRequest::Record(chunk);
        prop_assert_eq!(round_trip(&record), record);
    }

    #[test]
    fn admin_messages_round_trip(request in admin_request(), response in admin_response()) {
        prop_assert_eq!(round_trip(&request), request);
        prop_assert_eq!(round_trip(&response), response);
    }

    #[test]
    fn altered_frames_never_panic_nor_allocate_beyond_their_bound(
        agent in agent_message(),
        server in server_message(),
        local in local_message(),
        login in (proptest::option::of(".{0,32}"), login_request()),
        admin in admin_request(),
        changes in changes(),
        cut in cut(),
    ) {
        let (os_user, request) = login;
        let login = LocalRequest::Login { os_user, request };
        for (peak, declared) in [
            decode_all::<AgentMessage>(altered(&agent, &changes, cut)),
            decode_all::<ServerMessage>(altered(&server, &changes, cut)),
            decode_all::<LocalResponse>(altered(&local, &changes, cut)),
            decode_all::<LocalRequest>(altered(&login, &changes, cut)),
        ] {
            prop_assert!(declared <= MAX_FRAME_LEN);
            prop_assert!(peak <= allowed(declared), "{} bytes for a frame of {}", peak, declared);
        }
        let (peak, declared) = decode_all::<AdminRequest>(altered(&admin, &changes, cut));
        prop_assert!(peak <= allowed_admin(declared), "{} bytes for an admin frame of {}", peak, declared);
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

//! Golden bytes: every message of every released version of the four wires
//! (agent link, local socket, admin socket, enrollment), encoded once into the files under
//! `tests/golden/` and checked in. Today's build must decode each old line into
//! the value listed here and encode that value, for that version, into the very
//! same bytes: a change that moves a variant, inserts a field or renames a
//! version's shape fails here.
//!
//! A line is `name hex-of-the-whole-frame`. Lines are only ever added: with
//! `OTPGATE_GOLDEN=write` a run appends the samples that have no line yet (a
//! new variant appended to a version not yet released, say) and fails, so that
//! the new lines are looked at and committed. An existing line is never
//! rewritten by the tool.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::path::PathBuf;

use bytes::BytesMut;

use otpgate_protocol::admin::*;
use otpgate_protocol::enroll::{EnrollError, EnrollErrorCode, EnrollRequest, EnrollResponse};
use otpgate_protocol::local::{AgentStatus, LocalError, LocalRequest, LocalResponse};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, PromptState, RequestMode, RequestState, Requested, Secret, Verdict,
};
use otpgate_protocol::offline::{OfflineCodes, OfflineUse, OfflineVerdict};
use otpgate_protocol::record::{RecordChunk, RecordingEnd, RecordingStart};
use otpgate_protocol::{
    AgentMessage, ErrorCode, Hello, Message, Request, Response, ServerMessage, Welcome, decode,
};

/// Checks the bytes of a version against a sample: what is wrong, if anything.
type Check = Box<dyn Fn(u8, &[u8]) -> Result<(), String>>;

/// One sample: its name in the file, how to write it in a version, and how to
/// check a version's bytes against it.
struct Sample {
    name: String,
    encode: Box<dyn Fn(u8) -> Vec<u8>>,
    check: Check,
}

fn sample<M>(name: &str, value: M) -> Sample
where
    M: Message + PartialEq + Debug + Clone + 'static,
{
    let encoded = value.clone();
    let write = move |version| {
        let mut buf = BytesMut::new();
        encoded.encode(version, &mut buf).map(|()| buf.to_vec())
    };
    let written = write.clone();
    Sample {
        name: name.to_owned(),
        encode: Box::new(move |version| written(version).expect("encodes")),
        check: Box::new(move |version, golden| {
            let mut buf = BytesMut::from(golden);
            let decoded = decode::<M>(&mut buf).map_err(|err| format!("does not decode: {err}"))?;
            if decoded.as_ref() != Some(&value) {
                return Err(format!("decodes to {decoded:?}, not {value:?}"));
            }
            let again = write(version).map_err(|err| format!("does not encode: {err}"))?;
            if again[..] != golden[..] {
                return Err(format!("encodes to {}", hex(&again)));
            }
            Ok(())
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn golden_file(wire: &str, version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{wire}-v{version}.txt"))
}

/// Checks `samples` against the golden file of `wire` version `version`.
fn check(wire: &str, version: u8, samples: Vec<Sample>) {
    let path = golden_file(wire, version);
    let text = fs::read_to_string(&path).unwrap_or_default();
    let mut lines = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, bytes) = line.split_once(' ').expect("`name hex`");
        assert!(
            lines.insert(name.to_owned(), unhex(bytes)).is_none(),
            "{name} twice in {}",
            path.display()
        );
    }
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    for sample in &samples {
        match lines.remove(&sample.name) {
            Some(golden) => {
                if let Err(problem) = (sample.check)(version, &golden) {
                    problems.push(format!("{}: {problem}", sample.name));
                }
            }
            None => missing.push(sample),
        }
    }
    for orphan in lines.keys() {
        problems.push(format!(
            "{orphan}: in the file, but no sample says what it is"
        ));
    }
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|s| s.name.as_str()).collect();
        if std::env::var("OTPGATE_GOLDEN").as_deref() == Ok("write") {
            let mut text = text;
            if text.is_empty() {
                text = format!(
                    "# otpgate {wire} wire, version {version}: one frame per line, `name hex`.\n\
                     # Lines are only added (OTPGATE_GOLDEN=write), never changed: see tests/golden.rs.\n"
                );
            }
            for sample in &missing {
                let bytes = (sample.encode)(version);
                text.push_str(&format!("{} {}\n", sample.name, hex(&bytes)));
            }
            fs::write(&path, text).expect("write the golden file");
            problems.push(format!(
                "wrote {names:?} to {}: check and commit",
                path.display()
            ));
        } else {
            problems.push(format!(
                "no golden bytes for {names:?} in {} (OTPGATE_GOLDEN=write adds them)",
                path.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn secret(text: &str) -> Secret {
    Secret(text.to_owned())
}

fn chunk() -> RecordChunk {
    RecordChunk {
        recording: [0xa5; 16],
        seq: 0,
        start: Some(RecordingStart {
            width: 80,
            height: 24,
            started_ms: 1_765_000_000_000,
            command: "/bin/bash".into(),
            term: "xterm-256color".into(),
            input: true,
        }),
        events: b"[0.5, \"o\", \"$ \"]\n".to_vec(),
        lost: false,
        end: Some(RecordingEnd {
            at_ms: 1_765_000_060_000,
            status: 129,
        }),
    }
}

fn login_requests() -> Vec<(&'static str, LoginRequest)> {
    vec![
        ("status", LoginRequest::Status),
        (
            "request-email",
            LoginRequest::Request(RequestMode::Email("alice@example.com".into())),
        ),
        (
            "request-directory",
            LoginRequest::Request(RequestMode::Directory),
        ),
        (
            "request-internal",
            LoginRequest::Request(RequestMode::Internal {
                login: "bob".into(),
                password: secret("correct horse"),
            }),
        ),
        (
            "request-emergency",
            LoginRequest::Request(RequestMode::Emergency("carol@example.com".into())),
        ),
        ("resend", LoginRequest::Resend),
        (
            "verify",
            LoginRequest::Verify {
                email: "alice@example.com".into(),
                code: secret("12345678"),
            },
        ),
        ("logout-one", LoginRequest::Logout { session: Some(42) }),
        ("logout-all", LoginRequest::Logout { session: None }),
        (
            "exempt",
            LoginRequest::Exempt {
                service: "sshd".into(),
            },
        ),
    ]
}

fn login_responses() -> Vec<(&'static str, LoginResponse)> {
    let prompt = PromptState {
        os_user: "alice".into(),
        allow_otp: true,
        auto_directory: false,
        auto_internal: true,
        record_input: true,
        email: Some("alice@example.com".into()),
        request: Some((7, RequestState::Pending { expires: 1_800 })),
        otp_valid_until: Some(1_765_000_001_000),
        next_new_at: Some(1_765_003_600_000),
    };
    let states = [
        ("pending", RequestState::Pending { expires: 1_800 }),
        ("approve", RequestState::Approve),
        (
            "deny",
            RequestState::Deny {
                comment: Some("not today".into()),
            },
        ),
        ("expire", RequestState::Expire),
    ];
    let mut all = vec![("status", LoginResponse::Status(prompt.clone()))];
    for (name, state) in states {
        let mut prompt = prompt.clone();
        prompt.request = Some((8, state));
        all.push((name, LoginResponse::Status(prompt)));
    }
    all.push((
        "status-empty",
        LoginResponse::Status(PromptState {
            os_user: "root".into(),
            allow_otp: false,
            auto_directory: true,
            auto_internal: false,
            record_input: false,
            email: None,
            request: None,
            otp_valid_until: None,
            next_new_at: None,
        }),
    ));
    let requested = [
        (
            "send",
            Requested::Send {
                to: "alice@example.com".into(),
                valid_until: 1_765_000_001_000,
            },
        ),
        (
            "resend",
            Requested::Resend {
                to: "alice@example.com".into(),
                valid_until: 1_765_000_001_000,
            },
        ),
        (
            "await-approval",
            Requested::AwaitApproval {
                request: 9,
                expires: 1_765_000_001_000,
            },
        ),
        (
            "too-soon",
            Requested::TooSoon {
                next_at: 1_765_003_600_000,
            },
        ),
        (
            "resend-later",
            Requested::ResendLater {
                to: "alice@example.com".into(),
                next_at: 1_765_000_030_000,
            },
        ),
        ("no-live-otp", Requested::NoLiveOtp),
        ("not-required", Requested::NotRequired),
        ("disabled", Requested::Disabled),
        ("refuse", Requested::Refuse),
        ("directory-unavailable", Requested::DirectoryUnavailable),
        ("throttle", Requested::Throttle { retry_after: 60 }),
    ];
    for (name, requested) in requested {
        all.push((name, LoginResponse::Requested(requested)));
    }
    let verdicts = [
        ("allow", Verdict::Allow { session: 11 }),
        ("deny-verdict", Verdict::Deny),
        ("not-required-verdict", Verdict::NotRequired),
        ("throttle-verdict", Verdict::Throttle { retry_after: 30 }),
    ];
    for (name, verdict) in verdicts {
        all.push((name, LoginResponse::Verified(verdict)));
    }
    all.push(("logged-out", LoginResponse::LoggedOut { ended: true }));
    all.push(("noted", LoginResponse::Noted));
    all.push(("throttled", LoginResponse::Throttled { retry_after: 2 }));
    all
}

fn error_codes() -> Vec<(&'static str, ErrorCode)> {
    vec![
        ("frame-too-large", ErrorCode::FrameTooLarge),
        ("frame-truncated", ErrorCode::FrameTruncated),
        (
            "unsupported-frame-version",
            ErrorCode::UnsupportedFrameVersion,
        ),
        ("malformed", ErrorCode::Malformed),
        ("unexpected-message", ErrorCode::UnexpectedMessage),
        (
            "unsupported-protocol-version",
            ErrorCode::UnsupportedProtocolVersion,
        ),
        ("timeout", ErrorCode::Timeout),
        ("too-many-requests", ErrorCode::TooManyRequests),
        ("unavailable", ErrorCode::Unavailable),
        ("shutting-down", ErrorCode::ShuttingDown),
        ("too-many-connections", ErrorCode::TooManyConnections),
        ("certificate-refused", ErrorCode::CertificateRefused),
        ("internal", ErrorCode::Internal),
        ("out-of-order", ErrorCode::OutOfOrder),
    ]
}

fn agent_samples() -> Vec<Sample> {
    let mut all = vec![
        sample(
            "hello",
            AgentMessage::Hello(Hello {
                min_version: 1,
                max_version: 1,
                agent_version: "0.1.0".into(),
                host_name: "ws-0042".into(),
            }),
        ),
        sample("pong", AgentMessage::Pong { nonce: u64::MAX }),
        sample(
            "heartbeat",
            AgentMessage::Request {
                id: 1,
                request: Request::Heartbeat,
            },
        ),
        sample(
            "record",
            AgentMessage::Request {
                id: 300,
                request: Request::Record {
                    os_user: "alice".into(),
                    session: Some(12),
                    chunk: chunk(),
                },
            },
        ),
        sample(
            "welcome",
            ServerMessage::Welcome(Welcome {
                version: 1,
                client_id: "ws-0042".into(),
                server_version: "0.1.0".into(),
                heartbeat_interval_ms: 30_000,
            }),
        ),
        sample("ping", ServerMessage::Ping { nonce: 77 }),
        sample(
            "response-heartbeat",
            ServerMessage::Response {
                id: 1,
                response: Response::Heartbeat,
            },
        ),
        sample(
            "response-recorded",
            ServerMessage::Response {
                id: 300,
                response: Response::Recorded,
            },
        ),
    ];
    for (name, request) in login_requests() {
        all.push(sample(
            &format!("login-{name}"),
            AgentMessage::Request {
                id: 5,
                request: Request::Login {
                    os_user: "alice".into(),
                    request,
                },
            },
        ));
    }
    for (name, response) in login_responses() {
        all.push(sample(
            &format!("response-login-{name}"),
            ServerMessage::Response {
                id: 5,
                response: Response::Login(response),
            },
        ));
    }
    for (name, code) in error_codes() {
        all.push(sample(
            &format!("response-fail-{name}"),
            ServerMessage::Response {
                id: 6,
                response: Response::Fail(code),
            },
        ));
        all.push(sample(&format!("close-{name}"), ServerMessage::Close(code)));
    }
    all
}

fn local_samples() -> Vec<Sample> {
    let mut all = vec![
        sample("status", LocalRequest::Status),
        sample(
            "session-open",
            LocalRequest::SessionOpen {
                os_user: "alice".into(),
            },
        ),
        sample(
            "session-close",
            LocalRequest::SessionClose {
                os_user: "alice".into(),
            },
        ),
        sample(
            "exempt",
            LocalRequest::Exempt {
                os_user: "root".into(),
                service: "login".into(),
            },
        ),
        sample("record", LocalRequest::Record(chunk())),
        sample(
            "response-status",
            LocalResponse::Status(AgentStatus {
                os_user: "alice".into(),
                client_id: Some("ws-0042".into()),
                connected: true,
                server_rtt_us: Some(350),
            }),
        ),
        sample(
            "response-status-alone",
            LocalResponse::Status(AgentStatus {
                os_user: "alice".into(),
                client_id: None,
                connected: false,
                server_rtt_us: None,
            }),
        ),
        sample(
            "response-session-opened",
            LocalResponse::SessionOpened { session: Some(11) },
        ),
        sample(
            "response-session-opened-none",
            LocalResponse::SessionOpened { session: None },
        ),
        sample("response-done", LocalResponse::Done),
    ];
    for (name, request) in login_requests() {
        all.push(sample(
            &format!("login-{name}"),
            LocalRequest::Login {
                os_user: None,
                request: request.clone(),
            },
        ));
        all.push(sample(
            &format!("login-for-{name}"),
            LocalRequest::Login {
                os_user: Some("alice".into()),
                request,
            },
        ));
    }
    for (name, response) in login_responses() {
        all.push(sample(
            &format!("response-login-{name}"),
            LocalResponse::Login(response),
        ));
    }
    let errors = [
        ("malformed", LocalError::Malformed),
        ("unknown-caller", LocalError::UnknownCaller),
        ("forbidden", LocalError::Forbidden),
        ("not-connected", LocalError::NotConnected),
        ("unavailable", LocalError::Unavailable),
        ("internal", LocalError::Internal),
    ];
    for (name, error) in errors {
        all.push(sample(
            &format!("response-fail-{name}"),
            LocalResponse::Fail(error),
        ));
    }
    all
}

fn page() -> PageRequest {
    PageRequest {
        limit: 50,
        after: Some(b"cursor".to_vec()),
    }
}

fn filter() -> ListFilter {
    ListFilter {
        computer: Some("ws-0042".into()),
        user: Some("alice".into()),
        since: Some(1_765_000_000_000),
        until: None,
    }
}

fn options() -> OptionsView {
    OptionsView {
        allow_otp: Some(true),
        approvers: Some(vec!["bob".into(), "CORP\\it-approvers".into()]),
        auto_directory: Some(false),
        auto_internal: None,
        record_input: Some(true),
        inherit: vec![
            OptionNameView::AllowOtp,
            OptionNameView::Approvers,
            OptionNameView::AutoDirectory,
            OptionNameView::AutoInternal,
            OptionNameView::RecordInput,
        ],
    }
}

fn recording() -> RecordingView {
    RecordingView {
        id: 3,
        computer: "ws-0042".into(),
        os_user: "alice".into(),
        session: Some(11),
        started: 1_765_000_000_000,
        ended: Some(1_765_000_060_000),
        status: Some(0),
        command: "/bin/bash".into(),
        width: 80,
        height: 24,
        chunks: 2,
        bytes: 4096,
        incomplete: false,
    }
}

fn request_view() -> RequestView {
    RequestView {
        id: 9,
        computer: "ws-0042".into(),
        os_user: "alice".into(),
        email: "alice@example.com".into(),
        emergency: true,
        created: 1_765_000_000_000,
        expires: 1_765_001_800_000,
        state: Decision::Deny,
        decided_by: Some("bob".into()),
        comment: Some("no".into()),
        mail_failure: Some("550 no such user".into()),
    }
}

fn admin_samples() -> Vec<Sample> {
    let requests = vec![
        ("settings-get", AdminRequest::SettingsGet),
        (
            "settings-set",
            AdminRequest::SettingsSet(SettingsPatch {
                expiration_secs: Some(1_800),
                new_otp_interval_secs: Some(3_600),
                otp_length: Some(8),
                max_attempts: Some(5),
                max_failures: Some(100),
                failure_window_secs: Some(3_600),
                resend_gap_secs: Some(30),
                max_new_per_computer: Some(20),
                session_timeout_secs: Some(120),
                retention_days: Some(365),
            }),
        ),
        (
            "settings-set-none",
            AdminRequest::SettingsSet(SettingsPatch::default()),
        ),
        ("clients-list", AdminRequest::ClientsList { page: page() }),
        (
            "client-set",
            AdminRequest::ClientSet {
                computer: "ws-0042".into(),
                group: Some(Some("finance".into())),
                options: options(),
            },
        ),
        (
            "client-set-ungroup",
            AdminRequest::ClientSet {
                computer: "ws-0042".into(),
                group: Some(None),
                options: OptionsView::default(),
            },
        ),
        ("groups-list", AdminRequest::GroupsList),
        (
            "group-set",
            AdminRequest::GroupSet {
                name: "finance".into(),
                options: options(),
            },
        ),
        (
            "users-list",
            AdminRequest::UsersList {
                page: PageRequest::default(),
            },
        ),
        (
            "user-add",
            AdminRequest::UserAdd {
                login: "bob".into(),
                email: "bob@example.com".into(),
                role: RoleView::User,
                password: secret("a long password"),
            },
        ),
        (
            "user-set",
            AdminRequest::UserSet {
                login: "bob".into(),
                email: Some("robert@example.com".into()),
                role: Some(RoleView::Administrator),
                password: Some(secret("another one")),
                disabled: Some(true),
            },
        ),
        (
            "requests-list",
            AdminRequest::RequestsList {
                all: true,
                filter: filter(),
                page: page(),
            },
        ),
        (
            "request-decide",
            AdminRequest::RequestDecide {
                id: 9,
                by: "bob".into(),
                password: secret("pw"),
                choice: Choice::Approve,
                comment: Some("ok".into()),
            },
        ),
        (
            "request-decide-token",
            AdminRequest::RequestDecideToken {
                token: "tok".into(),
                choice: Choice::Deny,
                comment: None,
            },
        ),
        (
            "otp-generate",
            AdminRequest::OtpGenerate {
                computer: "ws-0042".into(),
                os_user: "alice".into(),
                email: "alice@example.com".into(),
                comment: None,
                by: "admin".into(),
                password: secret("pw"),
                new_client: true,
            },
        ),
        (
            "sessions-list",
            AdminRequest::SessionsList {
                all: false,
                filter: ListFilter::default(),
                page: page(),
            },
        ),
        ("mail-failures", AdminRequest::MailFailures { page: page() }),
        ("mail-queue", AdminRequest::MailQueue { page: page() }),
        (
            "mail-test",
            AdminRequest::MailTest {
                to: "ops@example.com".into(),
            },
        ),
        (
            "cert-revoke",
            AdminRequest::CertRevoke {
                computer: "ws-0042".into(),
            },
        ),
        (
            "directory-test",
            AdminRequest::DirectoryTest {
                account: "CORP\\alice".into(),
            },
        ),
        (
            "audit-list",
            AdminRequest::AuditList {
                filter: filter(),
                page: page(),
            },
        ),
        (
            "recordings-list",
            AdminRequest::RecordingsList {
                session: Some(11),
                page: page(),
            },
        ),
        (
            "recording-read",
            AdminRequest::RecordingRead { id: 3, from: 1 },
        ),
        (
            "recordings-verify",
            AdminRequest::RecordingsVerify { id: Some(3) },
        ),
        (
            "recordings-verify-all",
            AdminRequest::RecordingsVerify { id: None },
        ),
        (
            "recordings-search",
            AdminRequest::RecordingsSearch {
                text: "needle".into(),
            },
        ),
    ];
    let settings = SettingsView {
        expiration_secs: 1_800,
        new_otp_interval_secs: 3_600,
        otp_length: 8,
        max_attempts: 5,
        max_failures: 100,
        failure_window_secs: 3_600,
        resend_gap_secs: 30,
        max_new_per_computer: 20,
        session_timeout_secs: 120,
        retention_days: 365,
    };
    let next = Some(b"next".to_vec());
    let mut responses = vec![
        ("settings", AdminResponse::Settings(settings)),
        (
            "clients",
            AdminResponse::Clients(Page {
                items: vec![ClientView {
                    computer: "ws-0042".into(),
                    group: Some("finance".into()),
                    connected_since: Some(1_765_000_000_000),
                    last_seen: 1_765_000_030_000,
                    host_name: "ws-0042.corp".into(),
                    options: options(),
                    effective: OptionsView {
                        inherit: Vec::new(),
                        ..options()
                    },
                    agent_version: String::new(),
                    protocol: None,
                }],
                next: next.clone(),
            }),
        ),
        (
            "groups",
            AdminResponse::Groups(vec![GroupView {
                name: "finance".into(),
                options: options(),
            }]),
        ),
        (
            "users",
            AdminResponse::Users(Page {
                items: vec![UserView {
                    login: "bob".into(),
                    email: "bob@example.com".into(),
                    role: RoleView::Administrator,
                    password_change_due: true,
                    disabled: false,
                }],
                next: None,
            }),
        ),
        (
            "requests",
            AdminResponse::Requests(Page {
                items: vec![request_view()],
                next: next.clone(),
            }),
        ),
        (
            "generated",
            AdminResponse::Generated {
                valid_until: 1_765_001_800_000,
            },
        ),
        (
            "sessions",
            AdminResponse::Sessions(Page {
                items: vec![SessionView {
                    id: 11,
                    computer: "ws-0042".into(),
                    user_name: "alice (alice@example.com)".into(),
                    started: 1_765_000_000_000,
                    last_activity: 1_765_000_030_000,
                    ended: Some(1_765_000_060_000),
                    end_reason: Some("logged out".into()),
                }],
                next: None,
            }),
        ),
        (
            "audit",
            AdminResponse::Audit(Page {
                items: vec![AuditView {
                    at: 1_765_000_000_000,
                    who: "alice@ws-0042".into(),
                    computer: Some("ws-0042".into()),
                    action: "verify".into(),
                    outcome: "allow".into(),
                }],
                next: next.clone(),
            }),
        ),
        (
            "mail-failures",
            AdminResponse::MailFailures(Page {
                items: vec![MailFailureView {
                    id: 4,
                    to: "x@example.com".into(),
                    at: 1_765_000_000_000,
                    reason: "550".into(),
                    computer: Some("ws-0042".into()),
                    request: Some(9),
                }],
                next: None,
            }),
        ),
        (
            "mail-queue",
            AdminResponse::MailQueue(Page {
                items: vec![QueuedMailView {
                    id: 5,
                    to: "x@example.com".into(),
                    queued: 1_765_000_000_000,
                    attempts: 2,
                    next_try: 1_765_000_060_000,
                }],
                next: None,
            }),
        ),
        ("decided", AdminResponse::Decided(Box::new(request_view()))),
        (
            "mail-sent",
            AdminResponse::MailSent {
                said: "250 OK".into(),
            },
        ),
        ("revoked", AdminResponse::Revoked { disconnected: 1 }),
        ("done", AdminResponse::Done),
        (
            "directory-account",
            AdminResponse::DirectoryAccount(DirectoryView {
                found: true,
                email: Some("alice@corp.example.com".into()),
                disabled: false,
                groups: vec!["it-approvers".into()],
                error: None,
                micros: 250,
            }),
        ),
        (
            "recordings",
            AdminResponse::Recordings(Page {
                items: vec![recording()],
                next: None,
            }),
        ),
        (
            "recording-part",
            AdminResponse::RecordingPart(Box::new(RecordingPartView {
                recording: recording(),
                header: Some("{\"version\": 2}".into()),
                events: "[0.5, \"o\", \"$ \"]\n".into(),
                next: Some(2),
            })),
        ),
        (
            "verified",
            AdminResponse::Verified(vec![
                VerifiedView {
                    id: 3,
                    problem: None,
                },
                VerifiedView {
                    id: 4,
                    problem: Some("chunk 1 altered".into()),
                },
            ]),
        ),
        (
            "hits",
            AdminResponse::Hits(vec![HitView {
                recording: recording(),
                offset_ms: 500,
                line: "$ needle".into(),
            }]),
        ),
    ];
    let codes = [
        ("not-found", AdminErrorCode::NotFound),
        ("invalid", AdminErrorCode::Invalid),
        ("forbidden", AdminErrorCode::Forbidden),
        ("conflict", AdminErrorCode::Conflict),
        ("internal", AdminErrorCode::Internal),
        ("too-large", AdminErrorCode::TooLarge),
        ("unavailable", AdminErrorCode::Unavailable),
    ];
    for (name, code) in codes {
        responses.push((
            name,
            AdminResponse::Fail(AdminError {
                code,
                message: "for the administrator".into(),
            }),
        ));
    }
    let decisions = [
        ("pending", Decision::Pending),
        ("approve", Decision::Approve),
        ("expire", Decision::Expire),
    ];
    for (name, state) in decisions {
        responses.push((
            name,
            AdminResponse::Decided(Box::new(RequestView {
                state,
                ..request_view()
            })),
        ));
    }
    let mut all: Vec<Sample> = requests
        .into_iter()
        .map(|(name, request)| sample(name, request))
        .collect();
    all.extend(
        responses
            .into_iter()
            .map(|(name, response)| sample(&format!("response-{name}"), response)),
    );
    all
}

/// What version 2 of the agent wire adds.
fn agent_samples_since_2() -> Vec<Sample> {
    vec![
        sample(
            "response-fail-unsupported",
            ServerMessage::Response {
                id: 6,
                response: Response::Fail(ErrorCode::Unsupported),
            },
        ),
        sample(
            "close-unsupported",
            ServerMessage::Close(ErrorCode::Unsupported),
        ),
        sample(
            "time",
            AgentMessage::Request {
                id: 7,
                request: Request::Time,
            },
        ),
        sample(
            "response-time",
            ServerMessage::Response {
                id: 7,
                response: Response::Time(1_796_601_600_000),
            },
        ),
        sample(
            "renew",
            AgentMessage::Request {
                id: 8,
                request: Request::Renew {
                    csr: vec![0x30, 0x82, 0x01, 0x02],
                },
            },
        ),
        sample(
            "status",
            AgentMessage::Request {
                id: 9,
                request: Request::Status {
                    spool_bytes: 1_048_576,
                },
            },
        ),
        sample(
            "offline",
            AgentMessage::Request {
                id: 10,
                request: Request::Offline {
                    used: vec![OfflineUse {
                        set: 3072,
                        code: 1,
                        os_user: "alice".into(),
                        service: "sshd".into(),
                        at_ms: 1_796_601_600_000,
                        session: (1 << 63) | 0x0123_4567_89ab_cdef,
                    }],
                },
            },
        ),
        sample(
            "response-offline",
            ServerMessage::Response {
                id: 10,
                response: Response::Offline(vec![OfflineCodes {
                    set: 3072,
                    os_user: "alice".into(),
                    salt: [7; 16],
                    memory_kib: 65_536,
                    passes: 3,
                    verifiers: vec![None, Some([9; 32])],
                    expires_ms: 1_799_193_600_000,
                }]),
            },
        ),
        sample("offline-changed", ServerMessage::OfflineChanged),
        sample(
            "response-renewed",
            ServerMessage::Response {
                id: 8,
                response: Response::Renewed {
                    certificate: vec![0x30, 0x82, 0x01],
                    expires_ms: 1_799_193_600_000,
                },
            },
        ),
    ]
}

/// What version 2 of the local wire adds.
fn local_samples_since_2() -> Vec<Sample> {
    vec![
        sample(
            "response-fail-unsupported",
            LocalResponse::Fail(LocalError::Unsupported),
        ),
        sample(
            "offline",
            LocalRequest::Offline {
                os_user: "alice".into(),
                service: "sshd".into(),
                code: secret("1234-5678-9012"),
            },
        ),
        sample(
            "response-offline-allowed",
            LocalResponse::Offline(OfflineVerdict::Allow {
                session: (1 << 63) | 5,
            }),
        ),
        sample(
            "response-offline-wrong",
            LocalResponse::Offline(OfflineVerdict::Wrong),
        ),
        sample(
            "response-offline-locked",
            LocalResponse::Offline(OfflineVerdict::Locked {
                until_ms: 1_796_602_500_000,
            }),
        ),
        sample(
            "response-offline-no-codes",
            LocalResponse::Offline(OfflineVerdict::NoCodes),
        ),
        sample(
            "response-offline-away-too-long",
            LocalResponse::Offline(OfflineVerdict::AwayTooLong {
                since_ms: 1_795_000_000_000,
            }),
        ),
        sample(
            "response-offline-online",
            LocalResponse::Offline(OfflineVerdict::Online),
        ),
        sample(
            "response-offline-unavailable",
            LocalResponse::Offline(OfflineVerdict::Unavailable),
        ),
        sample(
            "response-offline-damaged",
            LocalResponse::Offline(OfflineVerdict::Damaged),
        ),
    ]
}

/// What version 2 of the admin wire adds.
fn admin_samples_since_2() -> Vec<Sample> {
    vec![
        sample(
            "response-clients-versions",
            AdminResponse::Clients(Page {
                items: vec![ClientView {
                    computer: "ws-0042".into(),
                    group: None,
                    connected_since: None,
                    last_seen: 1_765_000_030_000,
                    host_name: "ws-0042.corp".into(),
                    options: OptionsView::default(),
                    effective: options(),
                    agent_version: "0.2.0".into(),
                    protocol: Some(2),
                }],
                next: None,
            }),
        ),
        sample(
            "response-unsupported",
            AdminResponse::Fail(AdminError {
                code: AdminErrorCode::Unsupported,
                message: "for the administrator".into(),
            }),
        ),
        sample("backup", AdminRequest::Backup { keys: true }),
        sample(
            "response-backed-up",
            AdminResponse::BackedUp(Box::new(BackupView {
                path: "/var/lib/otpgate/backups/1796601600000.otpgate-backup".into(),
                bytes: 123_456,
                sha256: "ab".repeat(32),
                made_at: 1_796_601_600_000,
                keys: true,
                files: vec!["secret.key".into(), "pki/ca.pem".into()],
                trees: vec![("db/audit".into(), 42)],
                store_paused_us: 1_500,
                recordings_paused_us: 20_000,
            })),
        ),
        sample("token-create", AdminRequest::TokenCreate(token_spec())),
        sample("tokens-list", AdminRequest::TokensList),
        sample("token-revoke", AdminRequest::TokenRevoke { id: 7 }),
        sample(
            "response-token-made",
            AdminResponse::TokenMade {
                token: secret("otpgate-join-1:AAAA"),
                view: token_view(),
            },
        ),
        sample("response-tokens", AdminResponse::Tokens(vec![token_view()])),
        sample("certs-list", AdminRequest::CertsList),
        sample(
            "response-certs",
            AdminResponse::Certs(vec![CertView {
                computer: "ws-0042".into(),
                serial: "7f".repeat(16),
                enrolled_at: 1_796_601_600_000,
                expires_at: 1_799_193_600_000,
                token: 7,
            }]),
        ),
        sample(
            "offline-issue",
            AdminRequest::OfflineIssue(OfflineSpec {
                computer: "ws-0042".into(),
                os_user: "alice".into(),
                email: "alice@example.com".into(),
                count: 5,
                valid_days: 30,
            }),
        ),
        sample(
            "response-offline-issued",
            AdminResponse::OfflineIssued {
                codes: vec![secret("1234-5678-9012"), secret("3456-7890-1234")],
                view: offline_view(),
            },
        ),
        sample(
            "offline-list",
            AdminRequest::OfflineList {
                computer: "ws-0042".into(),
            },
        ),
        sample(
            "response-offline",
            AdminResponse::Offline(vec![offline_view()]),
        ),
        sample(
            "offline-void",
            AdminRequest::OfflineVoid {
                computer: "ws-0042".into(),
                os_user: Some("alice".into()),
            },
        ),
    ]
}

fn offline_view() -> OfflineView {
    OfflineView {
        set: 4096,
        computer: "ws-0042".into(),
        os_user: "alice".into(),
        email: "alice@example.com".into(),
        issued_at: 1_796_601_600_000,
        expires_at: 1_799_193_600_000,
        issued_by: "user:admin".into(),
        codes: 2,
        used: vec![(2, 1_796_688_000_000)],
    }
}

fn token_spec() -> TokenSpec {
    TokenSpec {
        ttl_secs: 86_400,
        uses: 50,
        group: Some("finance".into()),
        name_pattern: Some("ws-*".into()),
        replace: false,
    }
}

fn token_view() -> TokenView {
    TokenView {
        id: 7,
        spec: token_spec(),
        created_at: 1_796_601_600_000,
        expires_at: 1_796_688_000_000,
        used: 3,
        revoked_at: Some(1_796_602_000_000),
        created_by: "operator(uid 0)".into(),
    }
}

fn enroll_samples() -> Vec<Sample> {
    let refused = |code| {
        EnrollResponse::Refused(EnrollError {
            code,
            message: "for the operator".into(),
        })
    };
    vec![
        sample(
            "enroll",
            EnrollRequest {
                token: secret("otpgate-join-1:AAAA"),
                name: "ws-0042".into(),
                csr: vec![0x30, 0x82, 0x01, 0x02],
            },
        ),
        sample(
            "response-enrolled",
            EnrollResponse::Enrolled {
                name: "ws-0042".into(),
                certificate: vec![0x30, 0x82, 0x01],
                ca: vec![0x30, 0x82, 0x02],
                expires_ms: 1_799_193_600_000,
            },
        ),
        sample("refused-bad-token", refused(EnrollErrorCode::BadToken)),
        sample("refused-expired", refused(EnrollErrorCode::Expired)),
        sample("refused-used-up", refused(EnrollErrorCode::UsedUp)),
        sample("refused-revoked", refused(EnrollErrorCode::Revoked)),
        sample("refused-name", refused(EnrollErrorCode::NameRefused)),
        sample("refused-name-taken", refused(EnrollErrorCode::NameTaken)),
        sample("refused-bad-request", refused(EnrollErrorCode::BadRequest)),
        sample("refused-throttled", refused(EnrollErrorCode::Throttled)),
        sample("refused-unavailable", refused(EnrollErrorCode::Unavailable)),
        sample("refused-unsupported", refused(EnrollErrorCode::Unsupported)),
    ]
}

#[test]
fn the_enroll_wire_of_version_1_is_as_released() {
    check("enroll", 1, enroll_samples());
}

#[test]
fn the_agent_wire_of_version_1_is_as_released() {
    check("agent", 1, agent_samples());
}

#[test]
fn the_local_wire_of_version_1_is_as_released() {
    check("local", 1, local_samples());
}

#[test]
fn the_admin_wire_of_version_1_is_as_released() {
    check("admin", 1, admin_samples());
}

#[test]
fn the_agent_wire_of_version_2_is_as_released() {
    let mut samples = agent_samples();
    samples.extend(agent_samples_since_2());
    check("agent", 2, samples);
}

#[test]
fn the_local_wire_of_version_2_is_as_released() {
    let mut samples = local_samples();
    samples.extend(local_samples_since_2());
    check("local", 2, samples);
}

#[test]
fn the_admin_wire_of_version_2_is_as_released() {
    let mut samples = admin_samples();
    samples.extend(admin_samples_since_2());
    check("admin", 2, samples);
}

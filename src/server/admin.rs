//! The daemon's side of `otpgate admin`: a Unix socket in the data folder, mode
//! 0600, so only the account that runs the daemon may use it (the operator). A
//! thin adapter: each request becomes a call of the admin service
//! ([`crate::server::service`]) as the operator (or, for `--as`, as the user
//! whose password came with it), and its answer the wire's response.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use zeroize::Zeroizing;

use otpgate_protocol::admin::{AdminError, AdminErrorCode, AdminRequest, AdminResponse};
use otpgate_protocol::login::Secret;

use crate::server::convert;
use crate::server::service::{
    AdminService, Answer, Client, Generate, Identity, NewUser, Open, Principal, ServiceError,
    UserChange, Which,
};
use crate::unix::{self, Refusal};

/// The socket's name in the data folder.
pub const SOCKET: &str = "admin.sock";

/// Creates the admin socket at `path`, for the owner only.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    crate::unix::bind(path, 0o600)
}

/// Serves administrators on `listener` until `cancel` fires.
pub async fn serve(listener: UnixListener, service: Arc<AdminService>, cancel: CancellationToken) {
    crate::unix::accept("admin", listener, cancel, |stream| {
        serve_one(stream, service.clone())
    })
    .await;
}

async fn serve_one(stream: UnixStream, service: Arc<AdminService>) {
    // The socket is the daemon's account's only (mode 0600): the operator.
    let operator = Principal::operator(stream.peer_cred().ok().map(|cred| cred.uid()));
    let (service, operator) = (&service, &operator);
    unix::serve_requests(stream, Some(unix::IDLE), refuse, |request| async move {
        answer(service, operator, request)
            .await
            .unwrap_or_else(|err| AdminResponse::Fail(err.told()))
    })
    .await;
    debug!("admin connection closed");
}

/// The answer to a request that cannot be answered as asked.
fn refuse(refusal: Refusal) -> AdminResponse {
    AdminResponse::Fail(match refusal {
        Refusal::Unreadable => AdminError {
            code: AdminErrorCode::Unsupported,
            message: "the server does not know this request: upgrade the server, or use an \
                      `otpgate admin` of its release"
                .into(),
        },
        Refusal::TooLarge { len, max } => AdminError {
            code: AdminErrorCode::TooLarge,
            message: format!(
                "the answer ({len} bytes) would not fit in one frame ({max}); ask for less"
            ),
        },
    })
}

/// Has `service` answer `request` of `operator`: the request, in the
/// service's typed terms, and its answer back in the wire's.
async fn answer(
    service: &AdminService,
    operator: &Principal,
    request: AdminRequest,
) -> Answer<AdminResponse> {
    // An act as another user (`--as`): they prove who they are here.
    let acting = |by: String, password: Secret| async move {
        service
            .sign_in(&by, Zeroizing::new(password.0), operator.via)
            .await
            .map_err(ServiceError::from)
    };
    Ok(match request {
        AdminRequest::SettingsGet => AdminResponse::Settings(service.settings(operator)?),
        AdminRequest::SettingsSet(patch) => {
            AdminResponse::Settings(service.set_settings(operator, &patch).await?)
        }
        AdminRequest::ClientsList { page } => {
            AdminResponse::Clients(service.clients(operator, &page).await?)
        }
        AdminRequest::ClientSet {
            computer,
            group,
            options,
        } => {
            service
                .set_client(operator, &computer, group, &options)
                .await?;
            AdminResponse::Done
        }
        AdminRequest::GroupsList => AdminResponse::Groups(service.groups(operator)?),
        AdminRequest::GroupSet { name, options } => {
            service.set_group(operator, &name, &options).await?;
            AdminResponse::Done
        }
        AdminRequest::UsersList { page } => AdminResponse::Users(service.users(operator, &page)?),
        AdminRequest::UserAdd {
            login,
            email,
            role,
            password,
        } => {
            let user = NewUser {
                login,
                email,
                role,
                password,
            };
            service.add_user(operator, user).await?;
            AdminResponse::Done
        }
        AdminRequest::UserSet {
            login,
            email,
            role,
            password,
            disabled,
        } => {
            let change = UserChange {
                email,
                role,
                password,
                disabled,
            };
            service.set_user(operator, &login, change).await?;
            AdminResponse::Done
        }
        AdminRequest::RequestsList { all, filter, page } => {
            let which = if all { Which::All } else { Which::Pending };
            AdminResponse::Requests(service.requests(operator, which, &filter, &page).await?)
        }
        AdminRequest::RequestDecide {
            id,
            by,
            password,
            choice,
            comment,
        } => {
            let approver = acting(by, password).await?;
            let choice = convert::choice(choice);
            AdminResponse::Decided(Box::new(
                service.decide(&approver, id, choice, comment).await?,
            ))
        }
        AdminRequest::RequestDecideToken {
            token,
            choice,
            comment,
        } => {
            let choice = convert::choice(choice);
            let decided = service
                .decide_by_link(operator, &token, choice, comment)
                .await?;
            AdminResponse::Decided(Box::new(decided))
        }
        AdminRequest::OtpGenerate {
            computer,
            os_user,
            email,
            comment,
            by,
            password,
            new_client,
        } => {
            let administrator = Principal {
                identity: Identity::User(by),
                via: operator.via,
                credential: None,
            };
            let otp = Generate {
                computer,
                os_user,
                email,
                comment,
                client: if new_client {
                    Client::New
                } else {
                    Client::Known
                },
            };
            let valid_until = service.generate(&administrator, password, otp).await?;
            AdminResponse::Generated {
                valid_until: valid_until.unix_millis(),
            }
        }
        AdminRequest::SessionsList { all, filter, page } => {
            let open = if all { Open::AndEnded } else { Open::Only };
            AdminResponse::Sessions(service.sessions(operator, open, &filter, &page).await?)
        }
        AdminRequest::MailFailures { page } => {
            AdminResponse::MailFailures(service.mail_failures(operator, &page).await?)
        }
        AdminRequest::MailQueue { page } => {
            AdminResponse::MailQueue(service.mail_queue(operator, &page).await?)
        }
        AdminRequest::MailTest { to } => AdminResponse::MailSent {
            said: service.mail_test(operator, &to).await?,
        },
        AdminRequest::CertRevoke { computer } => AdminResponse::Revoked {
            disconnected: service.revoke(operator, &computer).await?,
        },
        AdminRequest::DirectoryTest { account } => {
            AdminResponse::DirectoryAccount(service.directory_test(operator, &account).await?)
        }
        AdminRequest::AuditList { filter, page } => {
            AdminResponse::Audit(service.audit_log(operator, &filter, &page).await?)
        }
        AdminRequest::RecordingsList { session, page } => {
            AdminResponse::Recordings(service.recordings(operator, session, page).await?)
        }
        AdminRequest::RecordingRead { id, from } => AdminResponse::RecordingPart(Box::new(
            service.recording_part(operator, id, from).await?,
        )),
        AdminRequest::RecordingsVerify { id } => {
            AdminResponse::Verified(service.verify_recordings(operator, id).await?)
        }
        AdminRequest::RecordingsSearch { text } => {
            AdminResponse::Hits(service.search_recordings(operator, text).await?)
        }
        AdminRequest::Backup { keys } => {
            AdminResponse::BackedUp(Box::new(service.backup(operator, keys).await?))
        }
        AdminRequest::TokenCreate(spec) => {
            let (token, view) = service.create_token(operator, spec).await?;
            AdminResponse::TokenMade { token, view }
        }
        AdminRequest::TokensList => AdminResponse::Tokens(service.tokens(operator).await?),
        AdminRequest::TokenRevoke { id } => {
            service.revoke_token(operator, id).await?;
            AdminResponse::Done
        }
        AdminRequest::CertsList => AdminResponse::Certs(service.certificates(operator).await?),
        AdminRequest::OfflineIssue(spec) => {
            let (codes, view) = service.issue_offline(operator, spec).await?;
            AdminResponse::OfflineIssued { codes, view }
        }
        AdminRequest::OfflineList { computer } => {
            AdminResponse::Offline(service.offline_codes(operator, &computer).await?)
        }
        AdminRequest::OfflineVoid { computer, os_user } => {
            service
                .void_offline(operator, &computer, os_user.as_deref())
                .await?;
            AdminResponse::Done
        }
    })
}

/// The admin socket's path in data folder `data`.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join(SOCKET)
}

//! The daemon's side of `otpgate admin`: a Unix socket in the data folder, mode
//! 0600, so only the account that runs the daemon may use it (the operator). It
//! serves the Management Tool's operations; changes to a computer go through its
//! actor, global changes (settings, groups, users) straight to the store, and all
//! of them into the audit log.

use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use zeroize::Zeroizing;

use otpgate_actors::audit::{Action, AuditEntry};
use otpgate_actors::directory::{
    Directory, DirectoryPerson, PasswordCheck, Role, UserRecord, check_login, hash_password,
    is_directory_name,
};
use otpgate_actors::mail::{DeliveryError, Mail, MailTransport};
use otpgate_actors::names::{is_email_address, is_login, is_plain_text};
use otpgate_actors::otp::OtpKeys;
use otpgate_actors::policy;
use otpgate_actors::request::{Choice, Decision};
use otpgate_actors::rules::Decider;
use otpgate_actors::settings::GroupRecord;
use otpgate_actors::{
    CallError, Clock, ComputerId, Computers, Decided, Generated, Store, StoreError,
};
use otpgate_protocol::admin::{
    AdminError, AdminErrorCode, AdminRequest, AdminResponse, ClientView, DirectoryView, GroupView,
    OptionsView, UserView,
};
use otpgate_protocol::login::Secret;

use crate::server::convert;
use crate::server::live::Live;
use crate::server::pages::{self, Matches};
use crate::server::recordings::{self, Recordings};
use crate::tls::revoked::Revocations;
use crate::unix::{self, Refusal};

/// The comment of an OTP generated without a request, unless one is given.
pub const DEFAULT_GENERATE_COMMENT: &str = "Generated without request.";

/// The socket's name in the data folder.
pub const SOCKET: &str = "admin.sock";

/// What the admin handler works with.
#[derive(Clone)]
pub struct AdminContext {
    /// Where state is kept, for the lists.
    pub store: Arc<dyn Store>,
    /// The settings, groups and users, and the one way to change them.
    pub policy: policy::Owner,
    /// The computers' actors.
    pub computers: Computers,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// Opens the tokens of approvers' links.
    pub keys: Arc<OtpKeys>,
    /// Where mail goes, for test messages.
    pub transport: Arc<dyn MailTransport>,
    /// The host name in Message-IDs.
    pub host: String,
    /// Revoked client certificates.
    pub revocations: Arc<Revocations>,
    /// The agent connections open now.
    pub live: Arc<Live>,
    /// Terminal recordings.
    pub recordings: Arc<Recordings>,
    /// Who people are, for `directory test`.
    pub directory: Arc<dyn Directory>,
    /// The file the first administrator's password was written to at the
    /// first start; removed once they have chosen their own.
    pub initial_password_file: PathBuf,
}

/// Creates the admin socket at `path`, for the owner only.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    crate::unix::bind(path, 0o600)
}

/// Serves administrators on `listener` until `cancel` fires.
pub async fn serve(listener: UnixListener, context: AdminContext, cancel: CancellationToken) {
    crate::unix::accept(listener, cancel, |stream| {
        serve_one(stream, context.clone())
    })
    .await;
}

async fn serve_one(stream: UnixStream, context: AdminContext) {
    let operator = stream.peer_cred().map_or_else(
        |_| "operator".to_owned(),
        |cred| format!("operator(uid {})", cred.uid()),
    );
    let operator = &operator;
    let context = &context;
    unix::serve_requests(stream, refuse, |request| async move {
        handle(context, operator, request)
            .await
            .unwrap_or_else(|err| {
                warn!(error = %err, "admin request failed");
                fail(
                    AdminErrorCode::Internal,
                    "the server could not do it; see its log",
                )
            })
    })
    .await;
    debug!("admin connection closed");
}

/// The answer to a request that cannot be answered as asked.
fn refuse(refusal: Refusal) -> AdminResponse {
    match refusal {
        Refusal::Unreadable => fail(
            AdminErrorCode::Unsupported,
            "the server does not know this request: upgrade the server, or use an \
             `otpgate admin` of its release",
        ),
        Refusal::TooLarge { len, max } => fail(
            AdminErrorCode::TooLarge,
            format!("the answer ({len} bytes) would not fit in one frame ({max}); ask for less"),
        ),
    }
}

pub(crate) fn fail(code: AdminErrorCode, message: impl Into<String>) -> AdminResponse {
    AdminResponse::Fail(AdminError {
        code,
        message: message.into(),
    })
}

/// Why an admin request failed inside the daemon.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Serves one administrator's request: the one path to the Management Tool's
/// operations, for the socket and the web alike. `operator` is who asked, as
/// the audit log records them.
pub(crate) async fn handle(
    context: &AdminContext,
    operator: &str,
    request: AdminRequest,
) -> Result<AdminResponse, HandleError> {
    let store = context.store.as_ref();
    let policy = context.policy.snapshot();
    let audit_as = |action: Action, outcome: String| AuditEntry {
        at: context.clock.now(),
        who: operator.to_owned(),
        computer: None,
        action,
        outcome,
    };
    let audit = |outcome: String| audit_as(Action::Configure, outcome);
    Ok(match request {
        request @ (AdminRequest::RecordingsList { .. }
        | AdminRequest::RecordingRead { .. }
        | AdminRequest::RecordingsVerify { .. }
        | AdminRequest::RecordingsSearch { .. }) => {
            let recordings = Arc::clone(&context.recordings);
            let answered = tokio::task::spawn_blocking(move || {
                recordings::admin::answer(&recordings, &request)
            })
            .await;
            match answered {
                Ok(Ok(Some(answer))) => answer,
                Ok(Ok(None)) => fail(AdminErrorCode::Invalid, "not a recordings request"),
                Ok(Err(err)) => return Err(err.into()),
                Err(_) => fail(AdminErrorCode::Internal, "the recordings could not be read"),
            }
        }
        AdminRequest::SettingsGet => {
            AdminResponse::Settings(convert::settings_view(&policy.settings))
        }
        AdminRequest::SettingsSet(patch) => {
            let mut edit = context.policy.edit().await;
            let settings = convert::patch_settings(edit.current().settings.clone(), &patch);
            if let Err(invalid) = settings.validate() {
                return Ok(fail(AdminErrorCode::Invalid, invalid.to_string()));
            }
            edit.set_settings(settings.clone());
            edit.commit(&audit("system settings changed".into()))
                .await?;
            AdminResponse::Settings(convert::settings_view(&settings))
        }
        AdminRequest::ClientsList { page } => AdminResponse::Clients(pages::page(
            store.computers_from(page.after.as_deref()),
            &page,
            |_| true,
            |(id, record)| ClientView {
                computer: id.to_string(),
                group: record.group.clone(),
                connected_since: record.connected_since.map(|t| t.unix_millis()),
                last_seen: record.last_seen.unix_millis(),
                host_name: record.host_name.clone(),
                options: convert::options_view(&record.options),
                effective: convert::effective_view(&policy.effective(record)),
                agent_version: record.agent_version.clone(),
                protocol: record.protocol,
            },
        )?),
        AdminRequest::ClientSet {
            computer,
            group,
            options,
        } => {
            let id = match computer_id(&computer) {
                Ok(id) => id,
                Err(refused) => return Ok(refused),
            };
            if let Some(Some(name)) = &group
                && !policy.groups.contains_key(name)
            {
                return Ok(fail(AdminErrorCode::NotFound, format!("no group {name:?}")));
            }
            if let Some(refused) = unknown_approvers(context, &policy, &options).await {
                return Ok(refused);
            }
            context
                .computers
                .configure(&id, group, &convert::options(&options), operator)
                .await?;
            AdminResponse::Done
        }
        AdminRequest::GroupsList => AdminResponse::Groups(
            policy
                .groups
                .iter()
                .map(|(name, group)| GroupView {
                    name: name.clone(),
                    options: convert::options_view(&group.options),
                })
                .collect(),
        ),
        AdminRequest::GroupSet { name, options } => {
            if name.is_empty() || !is_plain_text(&name, 128) {
                return Ok(fail(
                    AdminErrorCode::Invalid,
                    "a group's name must be 1 to 128 characters, none of them control characters",
                ));
            }
            if let Some(refused) = unknown_approvers(context, &policy, &options).await {
                return Ok(refused);
            }
            let mut edit = context.policy.edit().await;
            let mut group: GroupRecord = edit
                .current()
                .groups
                .get(&name)
                .cloned()
                .unwrap_or_default();
            group.options.apply(&convert::options(&options));
            edit.put_group(&name, group);
            edit.commit(&audit(format!("group {name} changed"))).await?;
            AdminResponse::Done
        }
        AdminRequest::UsersList { page } => {
            let after = page
                .after
                .as_deref()
                .map(|after| String::from_utf8_lossy(after).into_owned());
            let users = policy
                .users
                .range::<String, _>((
                    after.map_or(Bound::Unbounded, Bound::Excluded),
                    Bound::Unbounded,
                ))
                .map(|(login, user)| Ok((login.as_bytes().to_vec(), user)));
            AdminResponse::Users(pages::page(
                Box::new(users),
                &page,
                |_| true,
                |user| UserView {
                    login: user.login.clone(),
                    email: user.email.clone(),
                    role: convert::role_view(user.role),
                    password_change_due: user.password_change_due,
                    disabled: user.disabled,
                },
            )?)
        }
        AdminRequest::UserAdd {
            login,
            email,
            role,
            password,
        } => {
            if let Some(problem) = user_problem(&login, &email, Some(&password.0)) {
                return Ok(fail(AdminErrorCode::Invalid, problem));
            }
            let password_hash = hash_off_runtime(Zeroizing::new(password.0)).await;
            let mut edit = context.policy.edit().await;
            if edit.current().user(&login).is_some() {
                return Ok(fail(
                    AdminErrorCode::Conflict,
                    format!("user {login:?} exists"),
                ));
            }
            edit.put_user(UserRecord {
                login: login.clone(),
                email,
                password_hash,
                role: convert::role(role),
                password_change_due: false,
                disabled: false,
            });
            edit.commit(&audit(format!("user {login} added"))).await?;
            AdminResponse::Done
        }
        AdminRequest::UserSet {
            login,
            email,
            role,
            password,
            disabled,
        } => {
            // Held while the password hashes: two changes of one user never race.
            let mut edit = context.policy.edit().await;
            let Some(mut user) = edit.current().user(&login).cloned() else {
                return Ok(fail(AdminErrorCode::NotFound, format!("no user {login:?}")));
            };
            let new_email = email.as_deref().unwrap_or(&user.email).to_owned();
            if let Some(problem) =
                user_problem(&login, &new_email, password.as_ref().map(|p| p.0.as_str()))
            {
                return Ok(fail(AdminErrorCode::Invalid, problem));
            }
            user.email = new_email;
            if let Some(role) = role {
                user.role = convert::role(role);
            }
            if let Some(disabled) = disabled {
                user.disabled = disabled;
            }
            let admins_left = edit
                .current()
                .users
                .values()
                .filter(|other| other.login != login)
                .chain(std::iter::once(&user))
                .any(|u| u.role == Role::Administrator && !u.disabled);
            if !admins_left {
                return Ok(fail(
                    AdminErrorCode::Conflict,
                    "the last administrator stays an enabled administrator",
                ));
            }
            if let Some(password) = password {
                user.password_hash = hash_off_runtime(Zeroizing::new(password.0)).await;
                if user.password_change_due {
                    // Only the first administrator's is made for them; the
                    // file holding it now holds nothing that opens anything.
                    user.password_change_due = false;
                    remove_initial_password(&context.initial_password_file);
                }
            }
            edit.put_user(user);
            edit.commit(&audit(format!("user {login} changed"))).await?;
            AdminResponse::Done
        }
        AdminRequest::RequestsList { all, filter, page } => {
            let failures = store.mail_failures()?;
            AdminResponse::Requests(pages::page(
                store.requests_from(page.after.as_deref()),
                &page,
                |r| (all || r.decision == Decision::Pending) && r.matches(&filter),
                |r| convert::request_view(r, &failures),
            )?)
        }
        AdminRequest::MailTest { to } => {
            if !is_email_address(&to) {
                return Ok(fail(
                    AdminErrorCode::Invalid,
                    format!("{to:?} is not an email address"),
                ));
            }
            let now = context.clock.now();
            let body = "This is a test message from otpgate. If you can read it, mail works.\n";
            let mail = Mail {
                message_id: format!("<test.{}@{}>", now.unix_millis(), context.host),
                to,
                subject: "otpgate test message".into(),
                date: now,
                body: body.into(),
                html: format!("<p>{}</p>", body.trim_end()),
            };
            store.append_audit(&audit(format!("test message to {}", mail.to)))?;
            match context.transport.deliver(&mail).await {
                Ok(said) => AdminResponse::MailSent { said },
                Err(DeliveryError::Permanent(reason)) => fail(AdminErrorCode::Conflict, reason),
                Err(err) => fail(AdminErrorCode::Internal, err.to_string()),
            }
        }
        AdminRequest::MailQueue { page } => AdminResponse::MailQueue(pages::page(
            store.outbox_from(page.after.as_deref()),
            &page,
            |_| true,
            convert::queued_mail_view,
        )?),
        AdminRequest::MailFailures { page } => AdminResponse::MailFailures(pages::page(
            store.mail_failures_from(page.after.as_deref()),
            &page,
            |_| true,
            convert::mail_failure_view,
        )?),
        AdminRequest::RequestDecide {
            id,
            by,
            password,
            choice,
            comment,
        } => {
            let by = match authenticate(context, operator, &by, password).await {
                Ok(by) => by,
                Err(refused) => return Ok(refused),
            };
            decide_as(context, operator, id, by, convert::choice(choice), comment).await?
        }
        AdminRequest::RequestDecideToken {
            token,
            choice,
            comment,
        } => match context
            .keys
            .open_decision_token(&token, context.clock.now())
        {
            Some(token) if token.choice == convert::choice(choice) => {
                match decider_named(context, &token.approver).await {
                    Ok(by) => decide(context, token.request, by, token.choice, comment).await?,
                    Err(refused) => refused,
                }
            }
            Some(_) => fail(
                AdminErrorCode::Conflict,
                "this link makes the other choice: use the command of its own",
            ),
            None => fail(AdminErrorCode::Forbidden, "this link is not valid"),
        },
        AdminRequest::CertRevoke { computer } => {
            let id = match computer_id(&computer) {
                Ok(id) => id,
                Err(refused) => return Ok(refused),
            };
            let seconds = context.clock.now().unix_seconds();
            if let Err(err) = context.revocations.revoke(&id, seconds) {
                warn!(error = %err, "cannot write the revocation list");
                return Ok(fail(
                    AdminErrorCode::Internal,
                    "the revocation list could not be written",
                ));
            }
            let disconnected = context.live.close_all(&id);
            store.append_audit(&audit(format!("certificates of {id} revoked")))?;
            store.flush().await?;
            AdminResponse::Revoked {
                disconnected: u32::try_from(disconnected).unwrap_or(u32::MAX),
            }
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
            if let Err(refused) = authenticate(context, operator, &by, password).await {
                return Ok(refused);
            }
            let id = match computer_id(&computer) {
                Ok(id) => id,
                Err(refused) => return Ok(refused),
            };
            if os_user.is_empty() || !is_email_address(&email) {
                return Ok(fail(
                    AdminErrorCode::Invalid,
                    "an OS user and an email address are needed",
                ));
            }
            if !new_client && store.computer(&id)?.is_none() {
                return Ok(fail(
                    AdminErrorCode::NotFound,
                    format!(
                        "client computer {id} has never connected (a typo?); \
                         --new-client generates the OTP anyway"
                    ),
                ));
            }
            if let Some(refused) = bad_comment(comment.as_deref()) {
                return Ok(refused);
            }
            let comment = comment.unwrap_or_else(|| DEFAULT_GENERATE_COMMENT.to_owned());
            let generated = context
                .computers
                .generate(&id, &os_user, &email, &comment, &by)
                .await?;
            match generated {
                Generated::Send { valid_until } => AdminResponse::Generated {
                    valid_until: valid_until.unix_millis(),
                },
                Generated::NotAllowed => fail(
                    AdminErrorCode::Forbidden,
                    format!("{by:?} is not an administrator"),
                ),
            }
        }
        AdminRequest::SessionsList { all, filter, page } => AdminResponse::Sessions(pages::page(
            store.sessions_from(page.after.as_deref()),
            &page,
            |s| (all || s.ended.is_none()) && s.matches(&filter),
            convert::session_view,
        )?),
        AdminRequest::DirectoryTest { account } => {
            let started = std::time::Instant::now();
            let answer = context.directory.describe(&account).await;
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let (info, error) = match answer {
                Ok(info) => (info, None),
                Err(err) => (None, Some(err.to_string())),
            };
            AdminResponse::DirectoryAccount(DirectoryView {
                found: info.is_some(),
                email: info.as_ref().and_then(|i| i.email.clone()),
                disabled: info.as_ref().is_some_and(|i| i.disabled),
                groups: info.map(|i| i.groups).unwrap_or_default(),
                error,
                micros,
            })
        }
        AdminRequest::AuditList { filter, page } => AdminResponse::Audit(pages::page(
            store.audit_from(page.after.as_deref()),
            &page,
            |entry| entry.matches(&filter),
            convert::audit_view,
        )?),
    })
}

/// What a login name and password come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignIn {
    /// Wrong password, unknown or disabled: alike.
    Refused,
    /// An internal user's right password, made for them and still to be
    /// changed: it opens nothing yet.
    ChangeDue,
    /// A directory account, but the directory cannot be reached.
    Unavailable,
    /// The internal user.
    User(UserRecord),
    /// The directory person (their password checked by a bind as them).
    Person(DirectoryPerson),
}

/// Checks `login`'s `password`: an internal user's by its hash; a directory
/// account's (`CORP\bob`, `bob@corp.example.com`, when no internal user has
/// that name) by the directory. The one check behind the admin socket's `--as`
/// and the web sign-in.
pub(crate) async fn sign_in(
    context: &AdminContext,
    login: &str,
    password: Zeroizing<String>,
) -> SignIn {
    let user = context.policy.snapshot().user(login).cloned();
    if user.is_none() && is_directory_name(login) {
        return match context.directory.sign_in(login, &password).await {
            Ok(Some(person)) => SignIn::Person(person),
            Ok(None) => SignIn::Refused,
            Err(_) => SignIn::Unavailable,
        };
    }
    match check_login(user, password).await {
        PasswordCheck::Refused => SignIn::Refused,
        PasswordCheck::ChangeDue => SignIn::ChangeDue,
        PasswordCheck::Right(user) => SignIn::User(user),
    }
}

/// Checks that `password` is `by`'s (see [`sign_in`]) and opens something;
/// who they are, or the refusal to send back.
async fn authenticate(
    context: &AdminContext,
    operator: &str,
    by: &str,
    password: Secret,
) -> Result<Decider, AdminResponse> {
    match sign_in(context, by, Zeroizing::new(password.0)).await {
        SignIn::User(user) => Ok(Decider::User(user.login)),
        SignIn::Person(person) => Ok(Decider::Person(person)),
        SignIn::Refused => {
            warn!(%operator, "an action as another user with a wrong password");
            Err(fail(
                AdminErrorCode::Forbidden,
                "wrong login name or password",
            ))
        }
        SignIn::ChangeDue => Err(fail(
            AdminErrorCode::Forbidden,
            format!(
                "the password of {by} was made at the first start and opens nothing until \
                 they choose their own: otpgate admin users set {by} --password-stdin"
            ),
        )),
        SignIn::Unavailable => Err(directory_unavailable()),
    }
}

/// The refusal when the directory cannot be reached.
fn directory_unavailable() -> AdminResponse {
    fail(
        AdminErrorCode::Unavailable,
        "the directory cannot be reached; try again shortly",
    )
}

/// Who approver `name` of a link the server signed is: the internal user,
/// or the directory person (found again, so their groups are today's).
async fn decider_named(context: &AdminContext, name: &str) -> Result<Decider, AdminResponse> {
    if context.policy.snapshot().user(name).is_some() || !is_directory_name(name) {
        return Ok(Decider::User(name.to_owned()));
    }
    match context.directory.person(name).await {
        Ok(Some(person)) => Ok(Decider::Person(person)),
        Ok(None) => Err(fail(
            AdminErrorCode::Forbidden,
            "this link's approver is no longer in the directory",
        )),
        Err(_) => Err(directory_unavailable()),
    }
}

/// Removes the file of the first administrator's password, if it is there.
fn remove_initial_password(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            warn!(error = %err, path = %path.display(), "cannot remove the first password's file")
        }
    }
}

/// A refusal naming the approvers in `options` that are neither internal
/// users nor accounts or groups the directory knows: nobody would be told of a
/// request. A directory that cannot be asked now is not a refusal (logged).
async fn unknown_approvers(
    context: &AdminContext,
    policy: &policy::Snapshot,
    options: &OptionsView,
) -> Option<AdminResponse> {
    let mut unknown = Vec::new();
    for entry in options.approvers.iter().flatten() {
        if policy.users.contains_key(entry) {
            continue;
        }
        if is_directory_name(entry) {
            match context.directory.recipients(entry).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(err) => {
                    warn!(%entry, error = %err, "an approver entry could not be checked");
                    continue;
                }
            }
        }
        unknown.push(entry.as_str());
    }
    (!unknown.is_empty()).then(|| {
        fail(
            AdminErrorCode::NotFound,
            format!(
                "no internal user, directory account or group {}: add them first",
                unknown.join(", ")
            ),
        )
    })
}

/// The computer named `name`, or the refusal to send back.
fn computer_id(name: &str) -> Result<ComputerId, AdminResponse> {
    name.parse().map_err(|_| {
        fail(
            AdminErrorCode::Invalid,
            format!("{name:?} is not a valid computer name"),
        )
    })
}

/// The longest comment an approver or administrator may give.
const MAX_COMMENT: usize = 500;

/// A refusal of a comment that is too long or holds control characters.
fn bad_comment(comment: Option<&str>) -> Option<AdminResponse> {
    comment
        .filter(|comment| !is_plain_text(comment, MAX_COMMENT))
        .map(|_| {
            fail(
                AdminErrorCode::Invalid,
                format!("a comment must be at most {MAX_COMMENT} characters on one line"),
            )
        })
}

/// Approves or denies access request `id` as `by`, whose identity the caller
/// checked (their password on the socket, their session on the web);
/// `operator` is who asked, recorded beside the approver.
pub(crate) async fn decide_as(
    context: &AdminContext,
    operator: &str,
    id: u64,
    by: Decider,
    choice: Choice,
    comment: Option<String>,
) -> Result<AdminResponse, HandleError> {
    let name = by.name().to_owned();
    let decided = decide(context, id, by, choice, comment).await?;
    if matches!(decided, AdminResponse::Decided(_)) {
        let action = match choice {
            Choice::Approve => Action::Approve,
            Choice::Deny => Action::Deny,
        };
        context.store.append_audit(&AuditEntry {
            at: context.clock.now(),
            who: operator.to_owned(),
            computer: None,
            action,
            outcome: format!("request {id} decided as {name}"),
        })?;
        context.store.flush().await?;
    }
    Ok(decided)
}

/// Approves or denies access request `id` as `by`.
async fn decide(
    context: &AdminContext,
    id: u64,
    by: Decider,
    choice: Choice,
    comment: Option<String>,
) -> Result<AdminResponse, HandleError> {
    if let Some(refused) = bad_comment(comment.as_deref()) {
        return Ok(refused);
    }
    let Some(request) = context.store.request(id)? else {
        return Ok(fail(AdminErrorCode::NotFound, format!("no request {id}")));
    };
    let decided = context
        .computers
        .decide(&request.computer, id, &by, choice, comment)
        .await?;
    Ok(match decided {
        Decided::Done(request) => {
            AdminResponse::Decided(Box::new(convert::request_view(&request, &[])))
        }
        Decided::NotPending(request) => fail(
            AdminErrorCode::Conflict,
            format!(
                "request {id} is {} already",
                convert::request_view(&request, &[]).state
            ),
        ),
        Decided::NotFound => fail(AdminErrorCode::NotFound, format!("no request {id}")),
        Decided::NotAllowed => fail(
            AdminErrorCode::Forbidden,
            format!(
                "{:?} may not decide requests of {}",
                by.name(),
                request.computer
            ),
        ),
    })
}

/// What is wrong with a user's login name, email or new password, if anything.
fn user_problem(login: &str, email: &str, password: Option<&str>) -> Option<String> {
    if !is_login(login) {
        return Some("a login name must be 1 to 64 characters without spaces".into());
    }
    if !is_email_address(email) {
        return Some(format!("{email:?} is not an email address"));
    }
    if password.is_some_and(|p| p.chars().count() < 12) {
        return Some("a password must have at least 12 characters".into());
    }
    None
}

/// Hashes `password` with argon2id on a blocking thread.
pub(crate) async fn hash_off_runtime(password: Zeroizing<String>) -> String {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .expect("hashing a password does not panic")
}

/// The admin socket's path in data folder `data`.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join(SOCKET)
}

//! `otpgate admin`: the Management Tool on the command line. Turns a subcommand
//! into one request on the daemon's admin socket and prints the answer, in words
//! or as JSON.

use std::path::Path;
use std::process::ExitCode;

use otpgate_protocol::admin::{
    AdminRequest, AdminResponse, Choice, ListFilter, MAX_PAGE, OfflineSpec, PageRequest,
    SettingsPatch,
};
use otpgate_protocol::login::Secret;

use crate::cli::args::{
    Admin, AdminAudit, AdminClients, AdminDirectory, AdminGroups, AdminMail, AdminOffline,
    AdminOtp, AdminRecordings, AdminRequests, AdminSessions, AdminSettings, AdminStore, AdminUsers,
    DecideArgs, FilterArgs, PageArgs,
};
use otpgate_screens::for_terminal;

use crate::cli::describe::{describe, exit_code};
use crate::cli::{backup, prompt, recordings, store};
use crate::server::admin::socket_path;
use crate::server::config::StoreConfig;
use crate::unix;

pub(super) async fn command(
    data_dir: &Path,
    command: Admin,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let password = |prompt: &str| -> anyhow::Result<Secret> {
        Ok(Secret(prompt::read_secret(prompt)?.to_string()))
    };
    let request = match command {
        Admin::Settings(AdminSettings::Get) => AdminRequest::SettingsGet,
        Admin::Settings(AdminSettings::Set {
            expiration_minutes,
            new_otp_interval_minutes,
            otp_length,
            max_attempts,
            max_failures,
            failure_window_minutes,
            resend_gap_secs,
            max_new_per_computer,
            session_timeout_minutes,
            retention_days,
        }) => AdminRequest::SettingsSet(SettingsPatch {
            expiration_secs: expiration_minutes.map(|m| m * 60),
            new_otp_interval_secs: new_otp_interval_minutes.map(|m| m * 60),
            otp_length,
            max_attempts,
            max_failures,
            failure_window_secs: failure_window_minutes.map(|m| m * 60),
            resend_gap_secs,
            max_new_per_computer,
            session_timeout_secs: session_timeout_minutes.map(|m| m * 60),
            retention_days,
        }),
        Admin::Clients(AdminClients::List(PageArgs { limit })) => {
            let listed = list(data_dir, json, limit, |page| AdminRequest::ClientsList {
                page,
            })
            .await?;
            // Then the certificates of those that enrolled (a server that
            // keeps none, or is older, shows nothing more).
            if !json
                && listed == ExitCode::SUCCESS
                && let Ok(certs @ AdminResponse::Certs(_)) =
                    unix::ask(&socket_path(data_dir), &AdminRequest::CertsList).await
            {
                let text = describe(&certs);
                if !text.is_empty() {
                    println!("\ncertificates of enrolled computers:\n{text}");
                }
            }
            return Ok(listed);
        }
        Admin::Clients(AdminClients::Set {
            name,
            group,
            no_group,
            options,
        }) => AdminRequest::ClientSet {
            computer: name,
            group: if no_group {
                Some(None)
            } else {
                group.map(Some)
            },
            options: options.view(),
        },
        Admin::Groups(AdminGroups::List) => AdminRequest::GroupsList,
        Admin::Groups(AdminGroups::Set { name, options }) => AdminRequest::GroupSet {
            name,
            options: options.view(),
        },
        Admin::Users(AdminUsers::List(PageArgs { limit })) => {
            return list(data_dir, json, limit, |page| AdminRequest::UsersList {
                page,
            })
            .await;
        }
        Admin::Users(AdminUsers::Add { login, email, role }) => AdminRequest::UserAdd {
            login,
            email,
            role: role.into(),
            password: password("Password: ")?,
        },
        Admin::Users(AdminUsers::Set {
            login,
            email,
            role,
            password_stdin,
            disabled,
        }) => AdminRequest::UserSet {
            login,
            email,
            role: role.map(Into::into),
            disabled,
            password: if password_stdin {
                Some(password("New password: ")?)
            } else {
                None
            },
        },
        Admin::Requests(AdminRequests::List { all, filter, page }) => {
            let filter = list_filter(filter);
            return list(data_dir, json, page.limit, |page| {
                AdminRequest::RequestsList {
                    all,
                    filter: filter.clone(),
                    page,
                }
            })
            .await;
        }
        Admin::Requests(AdminRequests::Approve(args)) => decision(args, Choice::Approve, password)?,
        Admin::Requests(AdminRequests::Deny(args)) => decision(args, Choice::Deny, password)?,
        Admin::Otp(AdminOtp::Generate {
            client,
            os_user,
            email,
            comment,
            by,
            new_client,
        }) => AdminRequest::OtpGenerate {
            computer: client,
            os_user,
            email,
            comment: Some(comment),
            password: password(&format!("Password of {by}: "))?,
            by,
            new_client,
        },
        Admin::Offline(AdminOffline::Issue {
            client,
            os_user,
            email,
            count,
            valid_days,
        }) => AdminRequest::OfflineIssue(OfflineSpec {
            computer: client,
            os_user,
            email,
            count,
            valid_days,
        }),
        Admin::Offline(AdminOffline::List { client }) => {
            AdminRequest::OfflineList { computer: client }
        }
        Admin::Offline(AdminOffline::Void { client, os_user }) => AdminRequest::OfflineVoid {
            computer: client,
            os_user,
        },
        Admin::Sessions(AdminSessions::List { all, filter, page }) => {
            let filter = list_filter(filter);
            return list(data_dir, json, page.limit, |page| {
                AdminRequest::SessionsList {
                    all,
                    filter: filter.clone(),
                    page,
                }
            })
            .await;
        }
        Admin::Audit(AdminAudit::List { limit, filter }) => {
            let filter = list_filter(filter);
            return list(data_dir, json, Some(limit), |page| {
                AdminRequest::AuditList {
                    filter: filter.clone(),
                    page,
                }
            })
            .await;
        }
        Admin::Mail(AdminMail::Failures(PageArgs { limit })) => {
            return list(data_dir, json, limit, |page| AdminRequest::MailFailures {
                page,
            })
            .await;
        }
        Admin::Mail(AdminMail::Queue(PageArgs { limit })) => {
            return list(data_dir, json, limit, |page| AdminRequest::MailQueue {
                page,
            })
            .await;
        }
        Admin::Mail(AdminMail::Test { to }) => AdminRequest::MailTest { to },
        Admin::Directory(AdminDirectory::Test { account }) => {
            AdminRequest::DirectoryTest { account }
        }
        Admin::Sessions(AdminSessions::Play {
            session,
            recording,
            play,
        }) => {
            return recordings::play_session(data_dir, session, recording, play).await;
        }
        Admin::Recordings(AdminRecordings::Play { id, play }) => {
            return recordings::play(data_dir, id, play).await;
        }
        Admin::Recordings(AdminRecordings::List { session, page }) => {
            return list(data_dir, json, page.limit, |page| {
                AdminRequest::RecordingsList { session, page }
            })
            .await;
        }
        Admin::Recordings(AdminRecordings::Verify { id }) => AdminRequest::RecordingsVerify { id },
        Admin::Recordings(AdminRecordings::Export { id, force }) => {
            return recordings::export(data_dir, id, force).await;
        }
        Admin::Recordings(AdminRecordings::Search { text }) => {
            AdminRequest::RecordingsSearch { text }
        }
        Admin::Backup { out, without_keys } => {
            return backup::backup(data_dir, &out, !without_keys, json).await;
        }
        Admin::Store(AdminStore::Copy {
            from,
            to,
            password_file,
            password_env,
            ca_file,
        }) => {
            let target = StoreConfig::postgres(to, password_file, password_env, ca_file)?;
            anyhow::ensure!(
                !target.url_has_password(),
                "give the password with --password-file or --password-env, not in --to \
                 (every user of this machine can read a command line)"
            );
            return store::copy(&from, &target, json).await;
        }
    };
    let response: AdminResponse = unix::ask(&socket_path(data_dir), &request).await?;
    report(&response, json)
}

/// Does to each kind of paged answer what `$body` says of its page `$page`.
macro_rules! paged {
    ($response:expr, |$page:ident| $body:expr) => {
        match $response {
            AdminResponse::Clients($page) => Some($body),
            AdminResponse::Users($page) => Some($body),
            AdminResponse::Requests($page) => Some($body),
            AdminResponse::Sessions($page) => Some($body),
            AdminResponse::Audit($page) => Some($body),
            AdminResponse::MailFailures($page) => Some($body),
            AdminResponse::MailQueue($page) => Some($body),
            AdminResponse::Recordings($page) => Some($body),
            _ => None,
        }
    };
}

/// Prints `response`, in words or as JSON; the exit status it calls for. A
/// list, all its pages followed, prints as `{"<list>": [entries]}`.
pub(super) fn report(response: &AdminResponse, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let mut value = serde_json::to_value(response)?;
        if paged!(response, |_page| ()).is_some()
            && let Some((_, page)) = value.as_object_mut().and_then(|o| o.iter_mut().next())
        {
            *page = page["items"].take();
        }
        println!("{value}");
    } else {
        println!("{}", for_terminal(&describe(response)));
    }
    Ok(ExitCode::from(exit_code(response)))
}

/// Asks for a list page by page (`ask` makes the request for a page) until it
/// ends or `limit` entries have come, and prints them as one answer.
async fn list(
    data_dir: &Path,
    json: bool,
    limit: Option<usize>,
    ask: impl Fn(PageRequest) -> AdminRequest,
) -> anyhow::Result<ExitCode> {
    let socket = socket_path(data_dir);
    // `--limit 0` asks for no limit, as for the audit log.
    let limit = limit.filter(|&limit| limit > 0);
    let mut all: Option<AdminResponse> = None;
    let mut request = PageRequest::default();
    loop {
        let left = limit.map_or(usize::MAX, |limit| {
            limit.saturating_sub(all.as_ref().map_or(0, count))
        });
        request.limit = u32::try_from(left).unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let mut page: AdminResponse = unix::ask(&socket, &ask(request.clone())).await?;
        let Some(next) = paged!(&mut page, |page| page.next.take()) else {
            // A refusal or failure: shown as it is.
            return report(&page, json);
        };
        all = Some(match all {
            None => page,
            Some(mut all) => {
                append(&mut all, page);
                all
            }
        });
        let have = all.as_ref().map_or(0, count);
        match next {
            Some(next) if limit.is_none_or(|limit| have < limit) => request.after = Some(next),
            _ => break,
        }
    }
    report(&all.unwrap_or(AdminResponse::Done), json)
}

/// How many entries a paged answer holds.
fn count(response: &AdminResponse) -> usize {
    paged!(response, |page| page.items.len()).unwrap_or(0)
}

/// Adds `more`'s entries to `all`, when both are pages of the same list.
fn append(all: &mut AdminResponse, more: AdminResponse) {
    match (all, more) {
        (AdminResponse::Clients(all), AdminResponse::Clients(more)) => all.items.extend(more.items),
        (AdminResponse::Users(all), AdminResponse::Users(more)) => all.items.extend(more.items),
        (AdminResponse::Requests(all), AdminResponse::Requests(more)) => {
            all.items.extend(more.items);
        }
        (AdminResponse::Sessions(all), AdminResponse::Sessions(more)) => {
            all.items.extend(more.items);
        }
        (AdminResponse::Audit(all), AdminResponse::Audit(more)) => all.items.extend(more.items),
        (AdminResponse::MailFailures(all), AdminResponse::MailFailures(more)) => {
            all.items.extend(more.items);
        }
        (AdminResponse::MailQueue(all), AdminResponse::MailQueue(more)) => {
            all.items.extend(more.items);
        }
        (AdminResponse::Recordings(all), AdminResponse::Recordings(more)) => {
            all.items.extend(more.items);
        }
        _ => {}
    }
}

/// The filter of a list command.
fn list_filter(args: FilterArgs) -> ListFilter {
    ListFilter {
        computer: args.computer,
        user: args.user,
        since: args.since,
        until: args.until,
    }
}

/// A decision by id (as `--as`, whose password is read), or by the token of a
/// link (which names the request and the approver, and must make the same
/// choice).
fn decision(
    args: DecideArgs,
    choice: Choice,
    password: impl Fn(&str) -> anyhow::Result<Secret>,
) -> anyhow::Result<AdminRequest> {
    Ok(match args.token {
        Some(token) => AdminRequest::RequestDecideToken {
            token,
            choice,
            comment: args.comment,
        },
        None => AdminRequest::RequestDecide {
            // clap requires one of the two.
            id: args.id.unwrap_or_default(),
            password: password(&format!("Password of {}: ", args.by))?,
            by: args.by,
            choice,
            comment: args.comment,
        },
    })
}

//! `otpgate admin`: the Management Tool on the command line. Turns a subcommand
//! into one request on the daemon's admin socket and prints the answer, in words
//! or as JSON.

use std::path::Path;
use std::process::ExitCode;

use otpgate_protocol::admin::{
    AdminError, AdminErrorCode, AdminRequest, AdminResponse, Choice, SettingsPatch,
};
use otpgate_protocol::login::Secret;

use crate::cli::args::{
    Admin, AdminAudit, AdminClients, AdminGroups, AdminMail, AdminOtp, AdminRequests,
    AdminSessions, AdminSettings, AdminUsers, DecideArgs,
};
use crate::cli::{prompt, time};
use crate::server::admin::socket_path;
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
        }) => AdminRequest::SettingsSet(SettingsPatch {
            expiration_secs: expiration_minutes.map(|m| m * 60),
            new_otp_interval_secs: new_otp_interval_minutes.map(|m| m * 60),
            otp_length,
            max_attempts,
            max_failures,
            failure_window_secs: failure_window_minutes.map(|m| m * 60),
            resend_gap_secs,
        }),
        Admin::Clients(AdminClients::List) => AdminRequest::ClientsList,
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
        Admin::Users(AdminUsers::List) => AdminRequest::UsersList,
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
        }) => AdminRequest::UserSet {
            login,
            email,
            role: role.map(Into::into),
            password: if password_stdin {
                Some(password("New password: ")?)
            } else {
                None
            },
        },
        Admin::Requests(AdminRequests::List { all }) => AdminRequest::RequestsList { all },
        Admin::Requests(AdminRequests::Approve(args)) => decision(args, Choice::Approve),
        Admin::Requests(AdminRequests::Deny(args)) => decision(args, Choice::Deny),
        Admin::Otp(AdminOtp::Generate {
            client,
            os_user,
            email,
            comment,
            by,
        }) => AdminRequest::OtpGenerate {
            computer: client,
            os_user,
            email,
            comment: Some(comment),
            by,
        },
        Admin::Sessions(AdminSessions::List { all }) => AdminRequest::SessionsList { all },
        Admin::Audit(AdminAudit::List { limit }) => AdminRequest::AuditList { limit },
        Admin::Mail(AdminMail::Failures) => AdminRequest::MailFailures,
        Admin::Mail(AdminMail::Queue) => AdminRequest::MailQueue,
        Admin::Mail(AdminMail::Test { to }) => AdminRequest::MailTest { to },
    };
    let response: AdminResponse = unix::ask(&socket_path(data_dir), &request).await?;
    if json {
        println!("{}", serde_json::to_string(&response)?);
    } else {
        println!("{}", describe(&response));
    }
    Ok(ExitCode::from(exit_code(&response)))
}

/// A decision by id (as `--as`), or by the token of a link (which says all).
fn decision(args: DecideArgs, choice: Choice) -> AdminRequest {
    match args.token {
        Some(token) => AdminRequest::RequestDecideToken {
            token,
            comment: args.comment,
        },
        None => AdminRequest::RequestDecide {
            // clap requires one of the two.
            id: args.id.unwrap_or_default(),
            by: args.by,
            choice,
            comment: args.comment,
        },
    }
}

/// An answer in words, for the administrator's terminal.
pub fn describe(response: &AdminResponse) -> String {
    use std::fmt::Write;

    let options = |o: &otpgate_protocol::admin::OptionsView| {
        let flag = |v: Option<bool>| v.map_or("-".to_owned(), |v| v.to_string());
        format!(
            "allow_otp={} auto_ad={} auto_internal={} approvers={}",
            flag(o.allow_otp),
            flag(o.auto_directory),
            flag(o.auto_internal),
            o.approvers.as_ref().map_or("-".to_owned(), |a| a.join(","))
        )
    };
    let mut out = String::new();
    match response {
        AdminResponse::Settings(s) => {
            let _ = write!(
                out,
                "expiration_minutes       {}\nnew_otp_interval_minutes {}\notp_length               {}\n\
                 max_attempts             {}\nmax_failures             {}\nfailure_window_minutes   {}\n\
                 resend_gap_secs          {}",
                s.expiration_secs / 60,
                s.new_otp_interval_secs / 60,
                s.otp_length,
                s.max_attempts,
                s.max_failures,
                s.failure_window_secs / 60,
                s.resend_gap_secs
            );
        }
        AdminResponse::Clients(clients) => {
            for c in clients {
                let state = c.connected_since.map_or("disconnected".to_owned(), |t| {
                    format!("connected since {}", time(t))
                });
                let _ = writeln!(
                    out,
                    "{}\tgroup={}\t{state}\tlast seen {}\n\tin force: {}",
                    c.computer,
                    c.group.as_deref().unwrap_or("-"),
                    time(c.last_seen),
                    options(&c.effective)
                );
            }
        }
        AdminResponse::Groups(groups) => {
            for g in groups {
                let _ = writeln!(out, "{}\t{}", g.name, options(&g.options));
            }
        }
        AdminResponse::Users(users) => {
            for u in users {
                let _ = writeln!(out, "{}\t{}\t{:?}", u.login, u.email, u.role);
            }
        }
        AdminResponse::Requests(requests) => {
            for r in requests {
                let _ = writeln!(
                    out,
                    "#{}\t{}\t{} ({})\t{}{}\tcreated {}\texpires {}{}",
                    r.id,
                    r.computer,
                    r.os_user,
                    r.email,
                    r.state,
                    if r.emergency { " EMERGENCY" } else { "" },
                    time(r.created),
                    time(r.expires),
                    r.decided_by
                        .as_ref()
                        .map_or(String::new(), |by| format!("\tby {by}"))
                );
                if let Some(failure) = &r.mail_failure {
                    let _ = writeln!(out, "\tmail failed {failure}");
                }
            }
        }
        AdminResponse::Generated { valid_until } => {
            let _ = write!(
                out,
                "OTP generated and emailed; valid until {}",
                time(*valid_until)
            );
        }
        AdminResponse::Sessions(sessions) => {
            let _ = writeln!(out, "COMPUTER\tUSER NAME\tSTARTED\tLAST ACTIVITY\tENDED");
            for s in sessions {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    s.computer,
                    s.user_name,
                    time(s.started),
                    time(s.last_activity),
                    s.ended.map_or("-".to_owned(), |t| format!(
                        "{} ({})",
                        time(t),
                        s.end_reason.as_deref().unwrap_or("")
                    ))
                );
            }
        }
        AdminResponse::Audit(entries) => {
            for e in entries {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    time(e.at),
                    e.who,
                    e.computer.as_deref().unwrap_or("-"),
                    e.action,
                    e.outcome
                );
            }
        }
        AdminResponse::MailFailures(failures) => {
            for f in failures {
                let _ = writeln!(
                    out,
                    "{}\tmessage {} to {}\t{}{}",
                    time(f.at),
                    f.id,
                    f.to,
                    f.reason,
                    f.request
                        .map_or(String::new(), |r| format!("\trequest #{r}"))
                );
            }
        }
        AdminResponse::MailQueue(queue) => {
            for m in queue {
                let _ = writeln!(
                    out,
                    "{}\tmessage {} to {}\t{} failed tries\tnext try {}",
                    time(m.queued),
                    m.id,
                    m.to,
                    m.attempts,
                    time(m.next_try)
                );
            }
        }
        AdminResponse::MailSent { said } => {
            let _ = write!(out, "sent: {said}");
        }
        AdminResponse::Done => out.push_str("done"),
        AdminResponse::Fail(error) => {
            let _ = write!(out, "refused ({:?}): {}", error.code, error.message);
        }
    }
    out.trim_end().to_owned()
}

/// The exit status for an answer: 0 done, 1 refused, 2 error.
pub fn exit_code(response: &AdminResponse) -> u8 {
    match response {
        AdminResponse::Fail(AdminError { code, .. }) => match code {
            AdminErrorCode::NotFound | AdminErrorCode::Forbidden | AdminErrorCode::Conflict => 1,
            _ => 2,
        },
        _ => 0,
    }
}

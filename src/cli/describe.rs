//! How an answer of the admin socket reads on the administrator's terminal:
//! in words, and as the exit status `otpgate admin` ends with.

use otpgate_actors::{Clock, SystemClock};
use otpgate_protocol::admin::{AdminError, AdminErrorCode, AdminResponse, RequestView};

use crate::cli::{backup, recordings, time};

/// An answer in words, for the administrator's terminal.
pub fn describe(response: &AdminResponse) -> String {
    use std::fmt::Write;

    let options = |o: &otpgate_protocol::admin::OptionsView| {
        let flag = |v: Option<bool>| v.map_or("-".to_owned(), |v| v.to_string());
        format!(
            "allow_otp={} auto_ad={} auto_internal={} record_input={} approvers={}",
            flag(o.allow_otp),
            flag(o.auto_directory),
            flag(o.auto_internal),
            flag(o.record_input),
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
                 resend_gap_secs          {}\nmax_new_per_computer     {}\nsession_timeout_minutes  {}\nretention_days           {}",
                s.expiration_secs / 60,
                s.new_otp_interval_secs / 60,
                s.otp_length,
                s.max_attempts,
                s.max_failures,
                s.failure_window_secs / 60,
                s.resend_gap_secs,
                s.max_new_per_computer,
                s.session_timeout_secs / 60,
                s.retention_days
            );
        }
        AdminResponse::Clients(clients) => {
            for c in &clients.items {
                let state = c.connected_since.map_or("disconnected".to_owned(), |t| {
                    format!("connected since {}", time(t))
                });
                let _ = writeln!(
                    out,
                    "{}\tgroup={}\t{state}\tlast seen {}\tagent {}\n\tin force: {}",
                    c.computer,
                    c.group.as_deref().unwrap_or("-"),
                    time(c.last_seen),
                    c.agent(),
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
            for u in &users.items {
                let due = if u.password_change_due {
                    "\tpassword change due"
                } else {
                    ""
                };
                let disabled = if u.disabled { "\tdisabled" } else { "" };
                let _ = writeln!(out, "{}\t{}\t{:?}{due}{disabled}", u.login, u.email, u.role);
            }
        }
        AdminResponse::Requests(requests) => {
            for r in &requests.items {
                request_line(&mut out, r);
            }
        }
        AdminResponse::Decided(r) => request_line(&mut out, r),
        AdminResponse::Generated { valid_until } => {
            let _ = write!(
                out,
                "OTP generated and emailed; valid until {}",
                time(*valid_until)
            );
        }
        AdminResponse::Sessions(sessions) => {
            let _ = writeln!(out, "COMPUTER\tUSER NAME\tSTARTED\tLAST ACTIVITY\tENDED");
            for s in &sessions.items {
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
            // Newest first on the wire; read top to bottom, oldest first.
            for e in entries.items.iter().rev() {
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
            for f in &failures.items {
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
            for m in &queue.items {
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
        AdminResponse::Recordings(page) => recordings::describe_list(&mut out, &page.items),
        AdminResponse::RecordingPart(part) => {
            recordings::describe_list(&mut out, std::slice::from_ref(&part.recording));
        }
        AdminResponse::Verified(verified) => recordings::describe_verified(&mut out, verified),
        AdminResponse::Hits(hits) => recordings::describe_hits(&mut out, hits),
        AdminResponse::BackedUp(made) => backup::describe(&mut out, made),
        AdminResponse::TokenMade { token, view } => {
            let _ = write!(
                out,
                "{}\n\njoin token {}: {}\nShown this once; enroll with: otpgate agent enroll \
                 --server HOST:PORT --token <the token>",
                token.0,
                view.id,
                token_line(view)
            );
        }
        AdminResponse::Tokens(tokens) => {
            for view in tokens {
                let _ = writeln!(out, "{}\t{}", view.id, token_line(view));
            }
        }
        AdminResponse::OfflineIssued { codes, view } => {
            let _ = writeln!(
                out,
                "offline codes for {} ({}) on {}, until {}: each lets {} in once, and only while \
                 the server cannot be reached. Shown this once:",
                view.os_user,
                view.email,
                view.computer,
                time(view.expires_at),
                view.os_user
            );
            for (place, code) in codes.iter().enumerate() {
                let _ = writeln!(out, "  {:>2}. {}", place + 1, code.0);
            }
        }
        AdminResponse::Offline(sets) => {
            for view in sets {
                let used: Vec<String> = view
                    .used
                    .iter()
                    .map(|(place, at)| format!("{place} at {}", time(*at)))
                    .collect();
                let _ = writeln!(
                    out,
                    "{}\t{} ({})\t{} of {} left\tuntil {}\tissued {} by {}\tused: {}",
                    view.computer,
                    view.os_user,
                    view.email,
                    view.left(SystemClock.now().unix_millis()),
                    view.codes,
                    time(view.expires_at),
                    time(view.issued_at),
                    view.issued_by,
                    if used.is_empty() {
                        "none".to_owned()
                    } else {
                        used.join(", ")
                    }
                );
            }
        }
        AdminResponse::Certs(certs) => {
            for cert in certs {
                let _ = writeln!(
                    out,
                    "{}\tserial {}\tuntil {}\tenrolled {} with join token {}",
                    cert.computer,
                    cert.serial,
                    time(cert.expires_at),
                    time(cert.enrolled_at),
                    cert.token
                );
            }
        }
        AdminResponse::DirectoryAccount(d) => {
            let took = format!("({} ms)", d.micros / 1000);
            let _ = match (&d.error, d.found) {
                (Some(error), _) => write!(out, "the directory cannot be reached: {error} {took}"),
                (None, false) => write!(out, "not found (or found more than once) {took}"),
                (None, true) => write!(
                    out,
                    "email:    {}\ndisabled: {}\ngroups:   {}\n{took}",
                    d.email.as_deref().unwrap_or("(none)"),
                    if d.disabled { "yes" } else { "no" },
                    if d.groups.is_empty() {
                        "(none)".to_owned()
                    } else {
                        d.groups.join("; ")
                    },
                ),
            };
        }
        AdminResponse::Revoked { disconnected } => {
            let _ = write!(
                out,
                "revoked; {disconnected} connection(s) closed; a certificate issued from now on is accepted"
            );
        }
        AdminResponse::Done => out.push_str("done"),
        AdminResponse::Fail(error) => {
            let _ = write!(out, "refused ({:?}): {}", error.code, error.message);
        }
    }
    out.trim_end().to_owned()
}

/// The exit status for an answer: 0 done, 1 refused, 2 error.
/// One access request on a line, and its mail failure on the next.
fn request_line(out: &mut String, r: &RequestView) {
    use std::fmt::Write;

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

pub fn exit_code(response: &AdminResponse) -> u8 {
    match response {
        AdminResponse::Fail(AdminError { code, .. }) => match code {
            AdminErrorCode::NotFound | AdminErrorCode::Forbidden | AdminErrorCode::Conflict => 1,
            // EX_TEMPFAIL: try again later.
            AdminErrorCode::Unavailable => 75,
            _ => 2,
        },
        AdminResponse::Verified(verified) if verified.iter().any(|v| v.problem.is_some()) => 1,
        _ => 0,
    }
}

/// What a join token allows and how much of it is left, on one line.
fn token_line(view: &otpgate_protocol::admin::TokenView) -> String {
    let state = match view.revoked_at {
        Some(at) => format!("revoked {}", time(at)),
        None => format!("until {}", time(view.expires_at)),
    };
    format!(
        "{}/{} used\t{state}\tnames {}\tgroup {}{}\tmade by {} at {}",
        view.used,
        view.spec.uses,
        view.spec.name_pattern.as_deref().unwrap_or("*"),
        view.spec.group.as_deref().unwrap_or("-"),
        if view.spec.replace { "\treplaces" } else { "" },
        view.created_by,
        time(view.created_at)
    )
}

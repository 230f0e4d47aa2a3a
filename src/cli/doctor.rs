//! `otpgate doctor`: what is wrong with this server or this agent, asked of
//! the program itself. Each check says OK, WARN or FAIL, what it found and,
//! when not OK, the fix; the exit status is 1 when one failed. It reads the
//! configuration and the data folder, and asks what they name (the relay,
//! the directory, the server), but changes nothing, and sends no mail unless
//! `--send-test` asks for a test message.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use otpgate_actors::directory::Directory;
use otpgate_actors::mail::Mail;
use otpgate_actors::{Clock, PgConfig, SystemClock};
use otpgate_protocol::{ErrorCode, Request, Response};

use crate::agent::link::{Failures, Link, LinkStatus, ServerAddr};
use crate::server::admin::socket_path;
use crate::server::config::{Overrides, ServerConfig, StoreConfig};
use crate::server::ldap::LdapDirectory;
use crate::server::mail::{Sender, Smtp};
use crate::tls::pki::{self, ClientPaths};

/// What to do about the server's own certificates.
const RENEW_SERVER: &str =
    "the server's is renewed at its next start; a new CA needs every computer re-issued";
/// What to do when the agent is not welcomed.
const UNWELCOME: &str = "check that the server runs and listens there, that this host name is in \
     its certificate, and that this computer's certificate is not revoked";
/// A certificate this close to its end is warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
/// Free space below this in the data folder's file system is warned about.
const LOW_DISK: u64 = 1 << 30;
/// How long the agent's doctor waits for the server's welcome, and then for
/// its time.
const REACH_WITHIN: Duration = Duration::from_secs(10);
/// A computer's clock this far from the server's is warned about...
const CLOCK_WARN: Duration = Duration::from_secs(30);
/// ...and this far fails (Kerberos, which Active Directory sites run, allows
/// five minutes).
const CLOCK_FAIL: Duration = Duration::from_secs(5 * 60);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but will not for long, or not as well as it should.
    Warn,
    /// Does not work.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub found: String,
    /// What to do, when it is not OK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: impl Into<String>, found: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status: Status::Ok,
            found: found.into(),
            fix: None,
        }
    }

    fn not_ok(
        status: Status,
        check: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            status,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Prints `checks` (as one JSON document with `json`) and gives the exit
/// status: 1 when one failed.
pub fn report(checks: &[Check], json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(checks).unwrap_or_default()
        );
    } else {
        for check in checks {
            let status = match check.status {
                Status::Ok => "OK  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            println!("{status}  {}: {}", check.check, check.found);
            if let Some(fix) = &check.fix {
                println!("      fix: {fix}");
            }
        }
    }
    if checks.iter().any(|c| c.status == Status::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The server's checks: its configuration, data folder, certificates, what
/// the configuration names, the machine's limits, and whether it serves.
pub async fn server(
    config: Option<&Path>,
    overrides: Overrides,
    send_test: Option<&str>,
) -> Vec<Check> {
    let config = match ServerConfig::load(config, overrides) {
        Ok(config) => config,
        Err(err) => {
            return vec![Check::not_ok(
                Status::Fail,
                "configuration",
                err.to_string(),
                "correct the configuration file",
            )];
        }
    };
    let mut checks = vec![Check::ok("configuration", "read and checked")];
    let data = &config.data_dir;
    checks.extend(data_folder(data));
    for (what, path) in [
        ("CA certificate", data.join("pki/ca.pem")),
        ("server certificate", data.join("pki/server.pem")),
    ] {
        checks.push(certificate(what, &path, MadeBy::FirstStart, RENEW_SERVER));
    }
    if let Some((cert, _)) = config.web.as_ref().and_then(|web| web.identity.clone()) {
        checks.push(certificate(
            "web certificate",
            &cert,
            MadeBy::Operator,
            "give [web] a renewed certificate",
        ));
    }
    checks.push(smtp(&config, send_test).await);
    if let Some(ldap) = &config.ldap {
        checks.push(directory(ldap.clone()).await);
    }
    if let StoreConfig::Postgres(pg) = &config.store {
        checks.push(postgres(pg).await);
    }
    checks.push(disk(data));
    checks.push(open_files(&config));
    checks.push(serving(data).await);
    checks
}

/// The data folder and the secrets in it: there, the owner's only, and all
/// of one owner (files left by a `serve` run as another user, root say, are
/// files the service cannot open).
fn data_folder(data: &Path) -> Vec<Check> {
    use std::os::unix::fs::MetadataExt;
    let Ok(folder) = std::fs::metadata(data) else {
        return vec![Check::not_ok(
            Status::Warn,
            "data folder",
            format!("{} does not exist yet", data.display()),
            "it is made at the first start (otpgate serve)",
        )];
    };
    let mut open = Vec::new();
    let mut strangers = Vec::new();
    for path in [
        data.to_owned(),
        data.join("secret.key"),
        data.join("pki/ca.key"),
        data.join("pki/server.key"),
        data.join("db"),
        data.join("recordings"),
    ] {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.mode() & 0o077 != 0 {
            open.push(format!("{} ({:o})", path.display(), meta.mode() & 0o777));
        }
        if meta.uid() != folder.uid() {
            strangers.push(format!("{} (uid {})", path.display(), meta.uid()));
        }
    }
    let mut checks = Vec::new();
    if !open.is_empty() {
        checks.push(Check::not_ok(
            Status::Fail,
            "data folder",
            format!("others may read: {}", open.join(", ")),
            format!("chmod -R go-rwx {}", data.display()),
        ));
    }
    if !strangers.is_empty() {
        checks.push(Check::not_ok(
            Status::Fail,
            "data folder",
            format!(
                "not the folder's owner's (uid {}): {}",
                folder.uid(),
                strangers.join(", ")
            ),
            format!("chown -R {}: {}", folder.uid(), data.display()),
        ));
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "data folder",
            format!("{}, uid {}'s only", data.display(), folder.uid()),
        ));
    }
    checks
}

/// Who makes a certificate that is missing.
#[derive(Clone, Copy)]
enum MadeBy {
    /// The server, at its first start: missing is expected before it.
    FirstStart,
    /// The operator: missing is a failure, fixed by `fix`.
    Operator,
}

/// The certificate in `path`: there, readable, and not about to end.
fn certificate(what: &str, path: &Path, made_by: MadeBy, fix: &str) -> Check {
    if !path.exists() {
        return match made_by {
            MadeBy::FirstStart => Check::not_ok(
                Status::Warn,
                what,
                format!("{} is not made yet", path.display()),
                "start the server once to make it",
            ),
            MadeBy::Operator => Check::not_ok(
                Status::Fail,
                what,
                format!("{} is missing", path.display()),
                fix,
            ),
        };
    }
    let expires = match pki::read_cert(path).and_then(|cert| pki::expiry(&cert)) {
        Ok(expires) => expires,
        Err(err) => return Check::not_ok(Status::Fail, what, err.to_string(), fix),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let left = expires - now;
    let shown =
        otpgate_actors::clock::shown(u64::try_from(expires).unwrap_or(0).saturating_mul(1000));
    if left <= 0 {
        Check::not_ok(Status::Fail, what, format!("expired at {shown}"), fix)
    } else if left < i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX) {
        Check::not_ok(Status::Warn, what, format!("expires at {shown}"), fix)
    } else {
        Check::ok(what, format!("valid until {shown}"))
    }
}

/// The mail relay: reached, and the login taken; with `send_test`, a test
/// message sent to that address.
async fn smtp(config: &ServerConfig, send_test: Option<&str>) -> Check {
    let Some(smtp) = &config.smtp else {
        return Check::ok(
            "mail",
            format!(
                "no [smtp]: messages are written to {}",
                config.data_dir.join("outbox").display()
            ),
        );
    };
    let relay = format!("{}:{}", smtp.host, smtp.port);
    let transport = match Smtp::new(smtp, Sender::parse(&config.mail_from)) {
        Ok(transport) => transport,
        Err(err) => return mail_failed(&relay, &err.to_string()),
    };
    if let Err(err) = transport.reach().await {
        return mail_failed(&relay, &err);
    }
    let Some(to) = send_test else {
        return Check::ok("mail", format!("{relay} reached and the login taken"));
    };
    let now = SystemClock.now();
    let test = Mail {
        message_id: format!("<doctor-{}@otpgate>", now.unix_millis()),
        to: to.to_owned(),
        subject: "otpgate test message".into(),
        date: now,
        body: "otpgate doctor sent this to check that mail from the server arrives.".into(),
        html: "<p>otpgate doctor sent this to check that mail from the server arrives.</p>".into(),
    };
    match transport.send_now(&test).await {
        Ok(reply) => Check::ok(
            "mail",
            format!("{relay} took a test message to {to}: {reply}"),
        ),
        Err(err) => mail_failed(&relay, &format!("the test message to {to}: {err}")),
    }
}

/// The mail check when the relay or the message was not taken.
fn mail_failed(relay: &str, err: &str) -> Check {
    Check::not_ok(
        Status::Fail,
        "mail",
        format!("{relay}: {err}"),
        "check [smtp] (host, port, security, username, password_file, ca_file) and the relay",
    )
}

/// The directory: bound as the server's account and searched.
async fn directory(ldap: crate::server::config::LdapConfig) -> Check {
    let urls: Vec<String> = ldap.urls.iter().map(|u| u.url.clone()).collect();
    let searched = match LdapDirectory::new(ldap) {
        Ok(directory) => directory
            .describe("otpgate-doctor")
            .await
            .map(|_| ())
            .map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match searched {
        Ok(()) => Check::ok(
            "directory",
            format!("{} bound and searched", urls.join(", ")),
        ),
        Err(err) => Check::not_ok(
            Status::Fail,
            "directory",
            err,
            "check [ldap] (url, bind_dn, the password, ca_file, base_dn) and the domain controllers",
        ),
    }
}

/// Free space where the data folder is.
fn disk(data: &Path) -> Check {
    // The folder, or where it will be made.
    let folder = data
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match nix::sys::statvfs::statvfs(folder) {
        Ok(fs) => {
            let free = fs.blocks_available().saturating_mul(fs.fragment_size());
            let total = fs.blocks().saturating_mul(fs.fragment_size()).max(1);
            let found = format!("{} MiB free of {} MiB", free >> 20, total >> 20);
            if free < LOW_DISK || free.saturating_mul(10) < total {
                Check::not_ok(
                    Status::Warn,
                    "disk",
                    found,
                    "free space where the data folder is (recordings are the largest part: see their quotas and retention)",
                )
            } else {
                Check::ok("disk", found)
            }
        }
        Err(err) => Check::not_ok(
            Status::Warn,
            "disk",
            err.to_string(),
            "check the data folder's file system",
        ),
    }
}

/// The open-files limit a server started from here could raise itself to,
/// against the connections it is to hold (a service's unit sets its own:
/// `LimitNOFILE=` in otpgate.service).
fn open_files(config: &ServerConfig) -> Check {
    let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return Check::not_ok(
            Status::Warn,
            "open files",
            "the limit cannot be read",
            "check ulimit -n",
        );
    };
    let needed = u64::try_from(config.max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(crate::server::RESERVED_FILES);
    let found = format!(
        "up to {hard} open files from here (a unit sets its own); {needed} wanted for \
         max_connections = {}",
        config.max_connections
    );
    if hard >= needed {
        Check::ok("open files", found)
    } else if config.max_connections_given {
        Check::not_ok(
            Status::Warn,
            "open files",
            found,
            "raise it: LimitNOFILE= in the service unit, or ulimit -n",
        )
    } else {
        Check::ok(
            "open files",
            format!("up to {hard} open files from here; max_connections is sized to it"),
        )
    }
}

/// The PostgreSQL store: reached, its schema one this build reads, and
/// how many servers serve it (asked without changing anything).
async fn postgres(pg: &PgConfig) -> Check {
    const CHECK: &str = "PostgreSQL store";
    let fix = "check [store] url, the password and ca_file, and that PostgreSQL runs and \
               takes connections from this host";
    match tokio::time::timeout(Duration::from_secs(10), pg.probe()).await {
        Err(_) => Check::not_ok(Status::Fail, CHECK, "no answer in 10 s", fix),
        Ok(Err(err)) => Check::not_ok(Status::Fail, CHECK, err.to_string(), fix),
        Ok(Ok(probe)) if probe.schema.needs > probe.newest => Check::not_ok(
            Status::Fail,
            CHECK,
            format!(
                "schema version {}, newer than this build's ({}) and not served by it",
                probe.schema.version, probe.newest
            ),
            "upgrade otpgate to the release that made it",
        ),
        Ok(Ok(probe)) if probe.schema.version > probe.newest => Check::not_ok(
            Status::Warn,
            CHECK,
            format!(
                "schema version {}, newer than this build's ({}); this build still serves it",
                probe.schema.version, probe.newest
            ),
            "upgrade this server to the release of the site's other servers",
        ),
        Ok(Ok(probe)) if probe.schema.version == 0 => Check::not_ok(
            Status::Warn,
            CHECK,
            "reached; no otpgate tables yet",
            "they are made at the first start (otpgate serve)",
        ),
        Ok(Ok(probe)) => Check::ok(
            CHECK,
            format!(
                "reached; schema version {}; {}",
                probe.schema.version,
                match (probe.copying, probe.servers) {
                    (true, _) => "a site is being copied into it".to_owned(),
                    (false, 0) => "no server serves it now".to_owned(),
                    (false, 1) => "1 server serves it".to_owned(),
                    (false, n) => format!("{n} servers serve it"),
                }
            ),
        ),
    }
}

/// Whether a server serves this data folder now (its admin socket answers).
async fn serving(data: &Path) -> Check {
    let socket = socket_path(data);
    match tokio::net::UnixStream::connect(&socket).await {
        Ok(_) => Check::ok("server", format!("serving ({} answers)", socket.display())),
        Err(_) => Check::not_ok(
            Status::Warn,
            "server",
            "not running on this data folder",
            "start it: otpgate serve (or systemctl start otpgate)",
        ),
    }
}

/// The agent's checks: its identity folder and certificates, and for each of
/// its servers whether it welcomes this computer and how far apart the
/// clocks are.
pub async fn agent(identity: &Path, servers: Vec<ServerAddr>) -> Vec<Check> {
    use std::os::unix::fs::MetadataExt;
    let paths = ClientPaths::new(identity);
    let key = paths.key.display();
    // Run as the agent is (root, in its unit, without capabilities: it
    // reads its own files only).
    let me = nix::unistd::Uid::effective().as_raw();
    let mut checks = vec![match std::fs::metadata(&paths.key) {
        Ok(meta) if meta.uid() == 0 && me != 0 => Check::not_ok(
            Status::Warn,
            "identity",
            format!("{key} is root's, and this runs as uid {me}"),
            "run the doctor as root, as the agent runs (sudo otpgate doctor agent ...)",
        ),
        Ok(meta) if meta.uid() != me => Check::not_ok(
            Status::Fail,
            "identity",
            format!(
                "{key} belongs to uid {}, not to uid {me} who runs this",
                meta.uid()
            ),
            format!("chown {me}: {key}"),
        ),
        Ok(meta) if meta.mode() & 0o077 != 0 => Check::not_ok(
            Status::Fail,
            "identity",
            format!("others may read {key} ({:o})", meta.mode() & 0o777),
            format!("chmod 600 {key}"),
        ),
        Ok(_) => Check::ok("identity", format!("{key}, uid {me}'s only")),
        Err(err) => Check::not_ok(
            Status::Fail,
            "identity",
            format!("{key}: {err}"),
            "issue this computer's certificate (otpgate certs client NAME --out DIR) and copy it here",
        ),
    }];
    checks.push(certificate(
        "computer certificate",
        &paths.cert,
        MadeBy::Operator,
        "issue a new one: otpgate certs client NAME",
    ));
    checks.push(certificate(
        "CA certificate",
        &paths.ca,
        MadeBy::Operator,
        "copy the server's pki/ca.pem here",
    ));
    let tls = match crate::tls::client_config(identity) {
        Ok(tls) => tls,
        Err(err) => {
            checks.push(Check::not_ok(
                Status::Fail,
                "server",
                err.to_string(),
                "fix the identity folder",
            ));
            return checks;
        }
    };
    for server in servers {
        checks.extend(reach(Arc::clone(&tls), server).await);
    }
    checks
}

/// Whether the server at `server` welcomes the computer whose identity `tls`
/// presents and, when it does, how far the clocks are apart.
async fn reach(tls: Arc<rustls::ClientConfig>, server: ServerAddr) -> Vec<Check> {
    let shown = server.to_string();
    let cancel = CancellationToken::new();
    let (link, task) = match Link::spawn(tls, vec![server], cancel.clone()) {
        Ok(spawned) => spawned,
        Err(err) => {
            return vec![Check::not_ok(
                Status::Fail,
                "server",
                err.to_string(),
                "check --server",
            )];
        }
    };
    let mut watch = link.watch();
    // Welcomed, or refused once: the link would try again and again. Only
    // whether: the status seen is a read guard, which would hold up the
    // link's next change of status.
    let settled = |s: &LinkStatus| s.connected || s.failures.by_kind().next().is_some();
    let _ = tokio::time::timeout(REACH_WITHIN, watch.wait_for(settled)).await;
    let welcomed = link.status().connected;
    let status = link.status();
    let checks = if welcomed {
        let server = Check::ok(
            "server",
            format!(
                "{shown} welcomes this computer as {}",
                status.client_id.unwrap_or_default()
            ),
        );
        let mut clock = skew(&link).await;
        clock.found = format!("{shown}: {}", clock.found);
        vec![server, clock]
    } else {
        vec![Check::not_ok(
            Status::Fail,
            "server",
            format!(
                "{shown} did not welcome this computer ({})",
                tried(&status.failures)
            ),
            UNWELCOME,
        )]
    };
    cancel.cancel();
    let _ = task.await;
    checks
}

/// What the link's tries came to, as people read it.
fn tried(failures: &Failures) -> String {
    let kinds: Vec<String> = failures
        .by_kind()
        .map(|(kind, count)| format!("{kind}: {count}"))
        .collect();
    if kinds.is_empty() {
        format!("no answer within {} s", REACH_WITHIN.as_secs())
    } else {
        format!("failures {}", kinds.join(", "))
    }
}

/// How far this computer's clock is from the server's: the server's time
/// against the middle of the round trip that asked for it.
async fn skew(link: &Link) -> Check {
    let asked = std::time::Instant::now();
    let before = SystemClock.now().unix_millis();
    let answer = tokio::time::timeout(REACH_WITHIN, link.call(Request::Time)).await;
    let rtt = asked.elapsed();
    match answer {
        Ok(Ok(Response::Time(server))) => {
            let half = u64::try_from(rtt.as_millis() / 2).unwrap_or(u64::MAX);
            let ours = before.saturating_add(half);
            clock_check(
                i128::from(ours) - i128::from(server),
                u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX),
            )
        }
        Ok(Ok(Response::Fail(ErrorCode::Unsupported))) => {
            untold("the server's release does not tell its time")
        }
        _ => untold("the server did not tell its time"),
    }
}

/// The clock check when the server's time is not known: `found` says why.
fn untold(found: &str) -> Check {
    Check::not_ok(
        Status::Warn,
        "clock",
        found,
        "compare `date -u` here and on the server",
    )
}

/// The clock check for this computer being `ahead_ms` ahead of the server
/// (behind when negative), measured over a round trip of `rtt_ms`.
fn clock_check(ahead_ms: i128, rtt_ms: u64) -> Check {
    let seconds = ahead_ms.unsigned_abs() / 1000;
    let way = if ahead_ms < 0 { "behind" } else { "ahead of" };
    let found = format!("{seconds} s {way} the server's (asked in {rtt_ms} ms)");
    let fix = "keep both clocks set by NTP (timedatectl set-ntp true): certificates and the times people see depend on them";
    if seconds >= CLOCK_FAIL.as_secs().into() {
        Check::not_ok(Status::Fail, "clock", found, fix)
    } else if seconds >= CLOCK_WARN.as_secs().into() {
        Check::not_ok(Status::Warn, "clock", found, fix)
    } else {
        Check::ok("clock", found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_is_fine_within_half_a_minute_warned_beyond_and_fails_at_five() {
        assert_eq!(clock_check(0, 3).status, Status::Ok);
        assert_eq!(clock_check(-29_999, 3).status, Status::Ok);
        assert_eq!(clock_check(30_000, 3).status, Status::Warn);
        let behind = clock_check(-300_000, 3);
        assert_eq!(behind.status, Status::Fail);
        assert_eq!(behind.found, "300 s behind the server's (asked in 3 ms)");
        assert!(clock_check(301_000, 3).found.contains("ahead of"));
    }
}

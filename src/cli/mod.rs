//! The `otpgate` command line: reads the arguments ([`args`]), sets up logging
//! and the runtime, and runs the program asked for: the server, the agent, the
//! login prompt ([`prompt`]), the Management Tool's commands ([`admin`]), the PKI
//! tools or a load test.

mod admin;
mod args;
mod backup;
mod describe;
mod doctor;
pub mod prompt;
mod recordings;
mod store;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use otpgate_actors::{Clock, ComputerId, SystemClock};
use otpgate_protocol::admin::{AdminRequest, AdminResponse, TokenSpec};

use crate::agent::socket::Limits;
use crate::agent::{self, AgentConfig};
use crate::recorder::{self, RecorderConfig};
use crate::server::admin::socket_path;
use crate::server::config::{Overrides, ServerConfig};
use crate::server::{self, Listeners, Server};
use crate::tls::pki;
use crate::tls::revoked::Revocations;
use crate::unix;
use args::{AgentAction, Bench, Certs, Cli, Command, DoctorAgent, Generate, TokenCommand};
use prompt::{EXIT_ERROR, Prompt};

/// Exit status for a configuration that cannot be used (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// Runs the command line; what `otpgate` does.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bench's thousands of simulated agents would drown its progress in their
    // connection notices.
    let default_level = match cli.command {
        Command::Bench(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("otpgate: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("otpgate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            config,
            data_dir,
            listen,
        } => serve(config, Overrides { data_dir, listen }).await,
        Command::Certs(Certs::Client {
            name,
            out,
            data_dir,
        }) => {
            let paths = pki::issue_client(&data_dir, &name, &out)?;
            println!(
                "issued {name}: {} {} {}",
                paths.cert.display(),
                paths.key.display(),
                paths.ca.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(Certs::Revoke { name, data_dir }) => revoke(&data_dir, &name).await,
        Command::Certs(Certs::Token(command)) => token(command).await,
        Command::Certs(Certs::List { data_dir, json }) => {
            let certs = ask_running(&data_dir, &AdminRequest::CertsList).await?;
            admin::report(&certs, json)
        }
        Command::Agent {
            action:
                Some(AgentAction::Enroll {
                    server,
                    token_file,
                    identity,
                    name,
                }),
            ..
        } => {
            let token = join_token(token_file.as_deref())?
                .context("give the join token with --token-file or OTPGATE_JOIN_TOKEN")?;
            let enrolled =
                agent::enroll::enroll(&server, &token, &identity, name.as_deref()).await?;
            println!(
                "enrolled as {}; certificate until {}; identity in {}",
                enrolled.name,
                otpgate_actors::Timestamp::from_unix_millis(enrolled.expires_ms).rfc3339(),
                identity.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent {
            action: None,
            identity: None,
            ..
        } => unreachable!("clap requires --identity without a subcommand"),
        Command::Agent {
            action: None,
            server,
            identity: Some(identity),
            token_file,
            socket,
            per_user_per_second,
            chunks_per_second,
            connections_per_user,
            idle_secs,
            spool,
            spool_mib,
            metrics_listen,
            offline_max_days,
        } => {
            raise_fd_limit();
            // A first start with a token: enrolled before anything else.
            if !pki::ClientPaths::new(&identity).cert.exists()
                && let Some(token) = join_token(token_file.as_deref())?
            {
                let enrolled = agent::enroll::enroll(&server, &token, &identity, None).await?;
                tracing::info!(computer = %enrolled.name, "enrolled on first start");
            }
            let cancel = CancellationToken::new();
            tokio::spawn(stop_on_signal(cancel.clone()));
            let config = AgentConfig {
                servers: server,
                identity,
                socket,
                limits: Limits {
                    logins_per_second: per_user_per_second,
                    chunks_per_second,
                    connections: connections_per_user,
                    idle: Duration::from_secs(idle_secs.get()),
                },
                spool,
                spool_limit: spool_mib.saturating_mul(1 << 20),
                metrics: metrics_listen,
                offline_max_away: agent::offline::max_away(offline_max_days),
            };
            agent::run(config, cancel).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login {
            socket,
            os_user,
            json,
            approval_wait,
            step,
        } => {
            let prompt = Prompt { socket, os_user };
            Ok(prompt::step(&prompt, step, json, approval_wait)
                .await
                .unwrap_or_else(|err| {
                    eprintln!("otpgate: {err}");
                    ExitCode::from(err.exit_code())
                }))
        }
        Command::Record {
            socket,
            input: _,
            buffer_mib: _,
            deliver: true,
            command: _,
        } => {
            recorder::deliver(socket).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Record {
            socket,
            input,
            buffer_mib,
            deliver: false,
            command,
        } => {
            let config = RecorderConfig {
                socket,
                command,
                input,
                buffer_limit: buffer_mib.saturating_mul(1 << 20),
            };
            let status = recorder::run(config).await?;
            Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)))
        }
        Command::Bench(scenario) => {
            raise_fd_limit();
            bench(scenario).await
        }
        Command::Doctor {
            config,
            data_dir,
            send_test,
            json,
            agent: None,
        } => {
            let overrides = Overrides {
                data_dir,
                listen: None,
            };
            Ok(doctor::report(
                &doctor::server(config.as_deref(), overrides, send_test.as_deref()).await,
                json,
            ))
        }
        Command::Restore {
            file,
            data_dir,
            keys_from,
        } => backup::restore(&file, &data_dir, keys_from.as_deref()).await,
        Command::Generate(what) => {
            generate(what)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor {
            json,
            agent: Some(DoctorAgent::Agent { server, identity }),
            ..
        } => Ok(doctor::report(
            &doctor::agent(&identity, server).await,
            json,
        )),
        Command::Admin {
            data_dir,
            json,
            command,
        } => Ok(admin::command(&data_dir, command, json)
            .await
            .unwrap_or_else(|err| {
                eprintln!("otpgate: {err:#}");
                ExitCode::from(EXIT_ERROR)
            })),
    }
}

async fn serve(path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<ExitCode> {
    // Everything the server creates (database, keys, outbox) is for its owner only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut config = match ServerConfig::load(path.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => return Ok(config_error(&err)),
    };
    if let Some(ldap) = &config.ldap
        && ldap.domains.is_empty()
    {
        tracing::warn!(
            "[ldap] names no NetBIOS domain in [ldap.domains]: accounts written DOMAIN\\name \
             (logins, approvers) match nobody; add e.g. CORP = \"corp.example.com\""
        );
    }
    if let Some(files) = raise_fd_limit() {
        let room =
            usize::try_from(files.saturating_sub(server::RESERVED_FILES)).unwrap_or(usize::MAX);
        if config.max_connections > room {
            if config.max_connections_given {
                tracing::warn!(
                    max_connections = config.max_connections,
                    open_files_limit = files,
                    "the open-files limit is below max_connections: connections beyond it \
                     will wait; raise it (LimitNOFILE= in the service unit, or ulimit -n)"
                );
            } else {
                // The default sized to what this machine allows, not warned about.
                config.max_connections = room.max(1);
            }
        }
    }
    // Every port first: one in use stops the start with nothing made.
    let opened = match Listeners::bind(&config) {
        Ok(listeners) => Server::open(&config, listeners).await,
        Err(err) => Err(err),
    };
    let mut server = match opened {
        Ok(server) => server,
        Err(err) if err.is_config() => return Ok(config_error(&err)),
        Err(err) => return Err(err.into()),
    };
    let addr = server.agent_addr()?;
    if let Some(password) = server.take_initial_password() {
        let file = config.data_dir.join(server::INITIAL_PASSWORD_FILE);
        // On a terminal the operator sees it once; elsewhere (a service whose
        // output a journal keeps) it is only in the owner's file.
        if std::io::stdout().is_terminal() {
            println!(
                "otpgate: created administrator '{}' with password {} (also in {}, mode 0600)",
                server::INITIAL_ADMIN,
                password.as_str(),
                file.display()
            );
        } else {
            println!(
                "otpgate: created administrator '{}'; the password is in {} (mode 0600)",
                server::INITIAL_ADMIN,
                file.display()
            );
        }
    }
    // Scripts and tests wait for this line.
    println!("otpgate listening on {addr}");
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    match server.run(cancel.cancelled_owned()).await {
        server::Stopped::Clean => Ok(ExitCode::SUCCESS),
        server::Stopped::Late(step) => {
            tracing::warn!(step, "stopped without waiting for everything");
            Ok(ExitCode::SUCCESS)
        }
        server::Stopped::Taken => Ok(ExitCode::FAILURE),
    }
}

/// Revokes computer `id`'s certificates through the running server, or, when
/// none runs on `data_dir`, in its revocation list for its next start.
async fn revoke(data_dir: &Path, id: &ComputerId) -> anyhow::Result<ExitCode> {
    let request = AdminRequest::CertRevoke {
        computer: id.to_string(),
    };
    match unix::ask::<_, AdminResponse>(&socket_path(data_dir), &request).await {
        Ok(response) => admin::report(&response, false),
        Err(unix::PromptError::Connect { .. }) => {
            Revocations::load(data_dir)?.revoke(id, SystemClock.now().unix_seconds())?;
            println!(
                "revoked {id}; no server runs on {}: it refuses them from its start",
                data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(err.into()),
    }
}

/// The join token in file `file`, else in the environment variable
/// OTPGATE_JOIN_TOKEN, if either is given.
fn join_token(file: Option<&Path>) -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the join token in {}", file.display()))?;
        return Ok(Some(zeroize::Zeroizing::new(text.trim().to_owned())));
    }
    Ok(std::env::var("OTPGATE_JOIN_TOKEN")
        .ok()
        .map(|text| zeroize::Zeroizing::new(text.trim().to_owned())))
}

/// `otpgate certs token`: asks the running server.
async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let (data_dir, request) = match command {
        TokenCommand::Create {
            ttl,
            uses,
            group,
            name_pattern,
            replace,
            data_dir,
        } => (
            data_dir,
            AdminRequest::TokenCreate(TokenSpec {
                ttl_secs: ttl,
                uses,
                group,
                name_pattern,
                replace,
            }),
        ),
        TokenCommand::List { data_dir } => (data_dir, AdminRequest::TokensList),
        TokenCommand::Revoke { id, data_dir } => (data_dir, AdminRequest::TokenRevoke { id }),
    };
    admin::report(&ask_running(&data_dir, &request).await?, false)
}

/// The answer of the server running on data folder `data_dir` to `request`.
async fn ask_running(data_dir: &Path, request: &AdminRequest) -> anyhow::Result<AdminResponse> {
    unix::ask(&socket_path(data_dir), request)
        .await
        .with_context(|| {
            format!(
                "tokens and certificates are kept by the running server; is one running on {}?",
                data_dir.display()
            )
        })
}

fn config_error(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("otpgate: configuration: {err}");
    ExitCode::from(EXIT_CONFIG)
}

/// Cancels `cancel` on the first SIGINT or SIGTERM.
async fn stop_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    cancel.cancel();
}

/// Runs a bench scenario and prints its report; fails when the run fell short.
async fn bench(scenario: Bench) -> anyhow::Result<ExitCode> {
    use crate::bench::{self, Report};
    let (report, json) = match scenario {
        Bench::Hold { fleet, duration } => (
            Report::Hold(bench::hold(fleet.options(), Duration::from_secs(duration)).await?),
            fleet.json,
        ),
        Bench::Reconnect { fleet, kill } => (
            Report::Reconnect(bench::reconnect(fleet.options(), kill).await?),
            fleet.json,
        ),
        Bench::Logins { fleet, storm } => (
            Report::Logins(bench::logins(fleet.options(), storm.options()).await?),
            fleet.json,
        ),
        Bench::Flood {
            fleet,
            storm,
            attackers,
        } => (
            Report::Flood(bench::flood(fleet.options(), storm.options(), attackers).await?),
            fleet.json,
        ),
        Bench::Directory {
            config,
            account,
            count,
            json,
        } => (
            Report::Directory(bench::directory(&config, &account, count).await?),
            json,
        ),
        Bench::Enroll {
            count,
            concurrency,
            work_dir,
            json,
        } => (
            Report::Enroll(bench::enroll(&work_dir, count, concurrency).await?),
            json,
        ),
        Bench::Record {
            keys,
            mebibytes,
            json,
        } => (
            Report::Record(bench::recording(keys, mebibytes).await?),
            json,
        ),
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.describe());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Raises this process's open-files limit as far as it may go; returns the limit.
fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
        .inspect_err(|err| tracing::warn!(error = %err, "cannot raise the open-files limit"))
        .ok()
}

/// A time in milliseconds since the Unix epoch, as people read it.
pub(super) use otpgate_actors::clock::shown as time;

/// Writes the man pages or the completions `what` asks for.
fn generate(what: Generate) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let command = Cli::command();
    match what {
        Generate::Man { out } => {
            std::fs::create_dir_all(&out)?;
            clap_mangen::generate_to(command, &out)?;
        }
        Generate::Completions { out } => {
            std::fs::create_dir_all(&out)?;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut command.clone(), "otpgate", &out)?;
            }
        }
    }
    Ok(())
}

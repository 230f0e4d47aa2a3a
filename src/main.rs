//! The `otpgate` command: the server, the agent, the login prompt and the PKI
//! tools in one binary.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use otpgate::agent::{self, AgentConfig, ServerAddr};
use otpgate::config::{DEFAULT_DATA_DIR, Overrides, ServerConfig};
use otpgate::local::{self, DEFAULT_SOCKET};
use otpgate::pki;
use otpgate::server::{self, Server};
use otpgate_actors::ComputerId;
use otpgate_protocol::local::{LocalRequest, LocalResponse};

/// Exit status for a configuration that cannot be used (sysexits' EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "Gates logins to client computers behind one-time passwords"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// A TOML configuration file; without it the embedded defaults apply.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data folder (database, PKI, outbox).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The address to listen on for agents.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Issue certificates.
    #[command(subcommand)]
    Certs(Certs),
    /// Run the agent of a client computer.
    Agent {
        /// The server, as HOST:PORT; HOST must be a name in its certificate.
        #[arg(long)]
        server: ServerAddr,
        /// The folder that `otpgate certs client` wrote for this computer.
        #[arg(long)]
        identity: PathBuf,
        /// Where to serve the login prompt.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The login prompt, talking to the local agent.
    #[command(subcommand)]
    Login(Login),
}

#[derive(Subcommand)]
enum Certs {
    /// Issue a client computer's certificate and key, with the CA certificate.
    Client {
        /// The computer's name; it becomes its identity.
        name: ComputerId,
        /// The folder to write client.pem, client.key and ca.pem into.
        #[arg(long)]
        out: PathBuf,
        /// The server's data folder, which holds the CA.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum Login {
    /// Show whether the agent is connected, and who it takes you for.
    Status {
        /// The agent's socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
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
        Command::Agent {
            server,
            identity,
            socket,
        } => {
            raise_fd_limit();
            let cancel = CancellationToken::new();
            tokio::spawn(stop_on_signal(cancel.clone()));
            let config = AgentConfig {
                server,
                identity,
                socket,
            };
            agent::run(config, cancel).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Login(Login::Status { socket, json }) => {
            match local::ask(&socket, &LocalRequest::Status).await? {
                LocalResponse::Status(status) => {
                    if json {
                        println!("{}", serde_json::to_string(&status)?);
                    } else {
                        let client = status.client_id.as_deref().unwrap_or("(not yet known)");
                        let link = match (status.connected, status.server_rtt_us) {
                            (true, Some(rtt)) => format!("connected, round trip {rtt} µs"),
                            (true, None) => "connected, server not answering".to_owned(),
                            (false, _) => "not connected".to_owned(),
                        };
                        println!("user:     {}", status.os_user);
                        println!("computer: {client}");
                        println!("server:   {link}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                LocalResponse::Fail(code) => anyhow::bail!("the agent refused: {code:?}"),
            }
        }
    }
}

async fn serve(path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<ExitCode> {
    // Everything the server creates (database, keys, outbox) is for its owner only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let config = match ServerConfig::load(path.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => return Ok(config_error(&err)),
    };
    raise_fd_limit();
    let server = match Server::open(&config).await {
        Ok(server) => server,
        Err(err) if err.is_config() => return Ok(config_error(&err)),
        Err(err) => return Err(err.into()),
    };
    let listener = server::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Scripts and tests wait for this line.
    println!("otpgate listening on {addr}");
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    server.run(listener, cancel.cancelled_owned()).await;
    Ok(ExitCode::SUCCESS)
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

/// One descriptor per agent connection: lift the soft limit to the hard one.
fn raise_fd_limit() {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %err, "cannot raise the open-files limit");
    }
}

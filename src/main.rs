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
use otpgate::prompt::{self, EXIT_ERROR, Prompt};
use otpgate::server::{self, Server};
use otpgate::{admin, pki};
use otpgate_actors::ComputerId;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, OptionsView, RoleView, SettingsPatch};
use otpgate_protocol::local::{LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, RequestMode, Secret};

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
    /// The login prompt, talking to the local agent: interactive without a
    /// subcommand. Exits 0 on success, 1 when refused or denied, 2 on an error.
    Login {
        /// The agent's socket.
        #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Act for another OS user (root only).
        #[arg(long, global = true)]
        os_user: Option<String>,
        /// Print one JSON document.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        step: Option<Login>,
    },
    /// Load-test a server it starts itself, over real mutual TLS on loopback.
    #[command(subcommand)]
    Bench(Bench),
    /// The Management Tool on the command line, talking to the running server.
    /// Exits 0 on success, 1 when refused, 2 on an error.
    Admin {
        /// The server's data folder (its admin socket is there).
        #[arg(long, global = true, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Print one JSON document.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: Admin,
    },
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
    /// What the prompt would show: options, the request's state, validity.
    Status,
    /// Whether the agent is connected, and who it takes you for.
    Agent,
    /// Request a one-time password.
    Request {
        /// With your email address (an access request to the approvers).
        #[arg(long, conflicts_with_all = ["ad", "internal"])]
        email: Option<String>,
        /// As an Active Directory user: the directory knows your address.
        #[arg(long)]
        ad: bool,
        /// As internal user LOGIN; the password is read from standard input.
        #[arg(long, value_name = "LOGIN")]
        internal: Option<String>,
        /// I need emergency access to computer (with --email).
        #[arg(long, requires = "email")]
        emergency: bool,
    },
    /// Email the valid one-time password again.
    Resend,
    /// Check a one-time password, read from standard input.
    Verify {
        /// The email address it was sent to.
        #[arg(long)]
        email: String,
    },
    /// Log out: end your client session.
    Logout {
        /// One session in particular.
        #[arg(long)]
        session: Option<u64>,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// N agents connect at once and hold their connections with heartbeats.
    Hold {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Seconds to hold once all are connected.
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// N agents connect; the server is restarted under them; time their return.
    Reconnect {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Stop the server with SIGKILL instead of SIGTERM.
        #[arg(long)]
        kill: bool,
    },
    /// Agents log in over and over: request (auto-send), OTP from the mail,
    /// verify, log out. Each agent does one login at a time, and the server's
    /// flood control lets one connection send 20 requests a second (a login is
    /// three): run at least one agent per 6 logins a second of target rate.
    Logins {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        storm: StormArgs,
    },
    /// Attackers send wrong OTPs as fast as they can while the other agents log in.
    Flood {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        storm: StormArgs,
        /// How many of the agents attack.
        #[arg(long, default_value_t = 10)]
        attackers: usize,
    },
}

/// What every bench scenario is run with.
#[derive(clap::Args)]
struct FleetArgs {
    /// How many agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// How many 127.0.0.x source addresses to spread them over.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// The server's heartbeat interval, in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
    /// Where the server's data and the agents' identities are kept between runs.
    #[arg(long, default_value = "./otpgate-bench")]
    work_dir: PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

impl FleetArgs {
    fn options(&self) -> otpgate::bench::FleetOptions {
        otpgate::bench::FleetOptions {
            agents: self.agents,
            sources: self.sources,
            heartbeat: std::time::Duration::from_secs(self.heartbeat.max(1)),
            work_dir: self.work_dir.clone(),
        }
    }
}

/// How hard a login storm goes.
#[derive(clap::Args)]
struct StormArgs {
    /// Logins started per second; without it, as fast as the agents can.
    #[arg(long)]
    rate: Option<f64>,
    /// Logins in all, at most.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Seconds after which no login starts.
    #[arg(long, default_value_t = 30)]
    duration: u64,
}

impl StormArgs {
    fn options(&self) -> otpgate::bench::LoginOptions {
        otpgate::bench::LoginOptions {
            count: self.count,
            rate: self.rate.filter(|r| *r > 0.0),
            duration: std::time::Duration::from_secs(self.duration),
        }
    }
}

#[derive(Subcommand)]
enum Admin {
    /// System Settings.
    #[command(subcommand)]
    Settings(AdminSettings),
    /// Client computers.
    #[command(subcommand)]
    Clients(AdminClients),
    /// Client groups.
    #[command(subcommand)]
    Groups(AdminGroups),
    /// Internal users.
    #[command(subcommand)]
    Users(AdminUsers),
    /// Access requests.
    #[command(subcommand)]
    Requests(AdminRequests),
    /// One-time passwords.
    #[command(subcommand)]
    Otp(AdminOtp),
    /// Client sessions.
    #[command(subcommand)]
    Sessions(AdminSessions),
    /// The audit log.
    #[command(subcommand)]
    Audit(AdminAudit),
    /// Mail delivery.
    #[command(subcommand)]
    Mail(AdminMail),
}

#[derive(Subcommand)]
enum AdminMail {
    /// Messages given up on (a 5xx from the relay, or too many tries).
    Failures,
    /// Send a test message now and show what the relay said.
    Test {
        /// The recipient.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum AdminSettings {
    /// Show them.
    Get,
    /// Change those named.
    Set {
        /// Access Request Expiration Time.
        #[arg(long)]
        expiration_minutes: Option<u64>,
        /// Shortest time between two new OTPs for one computer and user.
        #[arg(long)]
        new_otp_interval_minutes: Option<u64>,
        /// Digits per OTP (6 to 12).
        #[arg(long)]
        otp_length: Option<u8>,
        /// Wrong attempts after which an OTP is locked.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Failures allowed per computer and per account per hour.
        #[arg(long)]
        max_failures_per_hour: Option<u32>,
    },
}

/// The options of a group or a computer; what is not given stays.
#[derive(clap::Args)]
struct OptionArgs {
    /// Allow the use of one-time passwords.
    #[arg(long)]
    allow_otp: Option<bool>,
    /// Users Who Can Approve Access (login names, comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    approvers: Option<Vec<String>>,
    /// Automatically send one-time passwords to Active Directory users.
    #[arg(long)]
    auto_ad: Option<bool>,
    /// Automatically send one-time passwords to internal users.
    #[arg(long)]
    auto_internal: Option<bool>,
}

impl OptionArgs {
    fn view(self) -> OptionsView {
        OptionsView {
            allow_otp: self.allow_otp,
            approvers: self
                .approvers
                .map(|a| a.into_iter().filter(|s| !s.is_empty()).collect()),
            auto_directory: self.auto_ad,
            auto_internal: self.auto_internal,
        }
    }
}

#[derive(Subcommand)]
enum AdminClients {
    /// List them.
    List,
    /// Change one.
    Set {
        /// The computer.
        name: String,
        /// Put it in this group.
        #[arg(long, conflicts_with = "no_group")]
        group: Option<String>,
        /// Take it out of its group.
        #[arg(long)]
        no_group: bool,
        #[command(flatten)]
        options: OptionArgs,
    },
}

#[derive(Subcommand)]
enum AdminGroups {
    /// List them.
    List,
    /// Create or change one.
    Set {
        /// The group.
        name: String,
        #[command(flatten)]
        options: OptionArgs,
    },
}

#[derive(Subcommand)]
enum AdminUsers {
    /// List them.
    List,
    /// Add one; the password is read from standard input.
    Add {
        /// The login name.
        login: String,
        /// The email address.
        #[arg(long)]
        email: String,
        /// administrator or user.
        #[arg(long, value_enum, default_value = "user")]
        role: RoleArg,
    },
    /// Change one.
    Set {
        /// The login name.
        login: String,
        /// A new email address.
        #[arg(long)]
        email: Option<String>,
        /// A new role.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Read a new password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Administrator,
    User,
}

impl From<RoleArg> for RoleView {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Administrator => Self::Administrator,
            RoleArg::User => Self::User,
        }
    }
}

#[derive(Subcommand)]
enum AdminRequests {
    /// List the pending ones (or all).
    List {
        /// All, not only the pending ones.
        #[arg(long)]
        all: bool,
    },
    /// Approve one: its OTP is emailed.
    Approve(DecideArgs),
    /// Deny one.
    Deny(DecideArgs),
}

/// Which request to decide, and as whom.
#[derive(clap::Args)]
struct DecideArgs {
    /// The request (or give --token).
    #[arg(required_unless_present = "token")]
    id: Option<u64>,
    /// The token of the link in an approver's mail (it names the request, the
    /// decision and the approver).
    #[arg(long, conflicts_with = "id")]
    token: Option<String>,
    /// A comment, for the person.
    #[arg(long)]
    comment: Option<String>,
    /// The internal user deciding.
    #[arg(long = "as", default_value = server::INITIAL_ADMIN)]
    by: String,
}

#[derive(Subcommand)]
enum AdminOtp {
    /// Generate an OTP without a request, and email it.
    Generate {
        /// The client computer.
        #[arg(long)]
        client: String,
        /// The OS user.
        #[arg(long)]
        os_user: String,
        /// Where it goes.
        #[arg(long)]
        email: String,
        /// Why.
        #[arg(long, default_value = admin::DEFAULT_GENERATE_COMMENT)]
        comment: String,
        /// The administrator generating it.
        #[arg(long = "as", default_value = server::INITIAL_ADMIN)]
        by: String,
    },
}

#[derive(Subcommand)]
enum AdminSessions {
    /// List the open ones (or all).
    List {
        /// All, not only the open ones.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum AdminAudit {
    /// The newest entries.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

fn main() -> ExitCode {
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
        Command::Login {
            socket,
            os_user,
            json,
            step,
        } => {
            let prompt = Prompt {
                socket: &socket,
                os_user,
            };
            Ok(login(&prompt, step, json).await.unwrap_or_else(|err| {
                eprintln!("otpgate: {err}");
                ExitCode::from(EXIT_ERROR)
            }))
        }
        Command::Bench(scenario) => {
            raise_fd_limit();
            bench(scenario).await
        }
        Command::Admin {
            data_dir,
            json,
            command,
        } => Ok(admin_command(&data_dir, command, json)
            .await
            .unwrap_or_else(|err| {
                eprintln!("otpgate: {err:#}");
                ExitCode::from(EXIT_ERROR)
            })),
    }
}

async fn login(
    prompt: &Prompt<'_>,
    step: Option<Login>,
    json: bool,
) -> Result<ExitCode, prompt::LoginError> {
    let request = match step {
        None => return prompt::interactive(prompt).await,
        Some(Login::Agent) => {
            return match local::ask(prompt.socket, &LocalRequest::Status).await? {
                LocalResponse::Status(status) => {
                    if json {
                        println!("{}", serde_json::to_string(&status).unwrap_or_default());
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
                LocalResponse::Fail(error) => Err(prompt::LoginError::Local(error)),
                LocalResponse::Login(_) => Err(prompt::LoginError::Unexpected),
            };
        }
        Some(Login::Status) => LoginRequest::Status,
        Some(Login::Request {
            email,
            ad,
            internal,
            emergency,
        }) => LoginRequest::Request(match (email, ad, internal) {
            (Some(email), _, _) if emergency => RequestMode::Emergency(email),
            (Some(email), _, _) => RequestMode::Email(email),
            (None, true, _) => RequestMode::Directory,
            (None, false, Some(login)) => RequestMode::Internal {
                login,
                password: Secret(prompt::read_secret("Password: ")?.to_string()),
            },
            (None, false, None) => {
                eprintln!(
                    "otpgate: say how: --email, --ad, --internal LOGIN or --emergency --email"
                );
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        }),
        Some(Login::Resend) => LoginRequest::Resend,
        Some(Login::Verify { email }) => LoginRequest::Verify {
            email,
            code: Secret(prompt::read_secret("One-time password: ")?.to_string()),
        },
        Some(Login::Logout { session }) => LoginRequest::Logout { session },
    };
    Ok(prompt::report(&prompt.ask(request).await?, json))
}

async fn admin_command(
    data_dir: &std::path::Path,
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
            max_failures_per_hour,
        }) => AdminRequest::SettingsSet(SettingsPatch {
            expiration_secs: expiration_minutes.map(|m| m * 60),
            new_otp_interval_secs: new_otp_interval_minutes.map(|m| m * 60),
            otp_length,
            max_attempts,
            max_failures_per_hour,
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
        Admin::Requests(AdminRequests::Approve(args)) => decision(args, true),
        Admin::Requests(AdminRequests::Deny(args)) => decision(args, false),
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
        Admin::Mail(AdminMail::Test { to }) => AdminRequest::MailTest { to },
    };
    let response: AdminResponse = local::ask(&admin::socket_path(data_dir), &request).await?;
    if json {
        println!("{}", serde_json::to_string(&response)?);
    } else {
        println!("{}", admin::describe(&response));
    }
    Ok(ExitCode::from(admin::exit_code(&response)))
}

/// A decision by id (as `--as`), or by the token of a link (which says all).
fn decision(args: DecideArgs, approve: bool) -> AdminRequest {
    match args.token {
        Some(token) => AdminRequest::RequestDecideToken {
            token,
            comment: args.comment,
        },
        None => AdminRequest::RequestDecide {
            // clap requires one of the two.
            id: args.id.unwrap_or_default(),
            by: args.by,
            approve,
            comment: args.comment,
        },
    }
}

async fn serve(path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<ExitCode> {
    // Everything the server creates (database, keys, outbox) is for its owner only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let config = match ServerConfig::load(path.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => return Ok(config_error(&err)),
    };
    if let Some(files) = raise_fd_limit()
        && u64::try_from(config.max_connections).unwrap_or(u64::MAX) + server::RESERVED_FILES
            > files
    {
        tracing::warn!(
            max_connections = config.max_connections,
            open_files_limit = files,
            "the open-files limit is below max_connections: connections beyond it will wait; \
             raise it (LimitNOFILE= in the service unit, or ulimit -n)"
        );
    }
    let mut server = match Server::open(&config).await {
        Ok(server) => server,
        Err(err) if err.is_config() => return Ok(config_error(&err)),
        Err(err) => return Err(err.into()),
    };
    let listener = server::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    if let Some(password) = server.take_initial_password() {
        println!(
            "otpgate: created administrator '{}' with password {} (also in {}, mode 0600)",
            server::INITIAL_ADMIN,
            password.as_str(),
            config
                .data_dir
                .join(server::INITIAL_PASSWORD_FILE)
                .display()
        );
    }
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
/// Runs a bench scenario and prints its report; fails when the run fell short.
async fn bench(scenario: Bench) -> anyhow::Result<ExitCode> {
    use otpgate::bench::{self, Report};
    let (report, json) = match scenario {
        Bench::Hold { fleet, duration } => (
            Report::Hold(
                bench::hold(fleet.options(), std::time::Duration::from_secs(duration)).await?,
            ),
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

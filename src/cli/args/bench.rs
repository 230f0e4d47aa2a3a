//! `otpgate bench`: the load scenarios and their fleets.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub(in crate::cli) enum Bench {
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
    /// How long the [ldap] directory of a server's configuration takes to
    /// answer for one account, cache cold and warm.
    Directory {
        /// The server's configuration file (its [ldap] section).
        #[arg(long)]
        config: PathBuf,
        /// The account to look up.
        #[arg(long)]
        account: String,
        /// Lookups in each run.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Computers enroll with one join token against a fresh server, a few at
    /// a time: the time for all, each one's latency, the server's CPU.
    Enroll {
        /// How many computers.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// How many enroll at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Where the server's data and the computers' identities go (its
        /// `enroll` folder is made afresh).
        #[arg(long, default_value = "./otpgate-bench")]
        work_dir: PathBuf,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// What `otpgate record` costs a terminal: keystroke-to-echo time and the
    /// throughput of a `cat` of a large file, straight and recorded; then how
    /// fast that recording reaches a server through a real agent.
    Record {
        /// Keystrokes, one at a time, in each run.
        #[arg(long, default_value_t = 2000)]
        keys: u64,
        /// The size of the file printed, in MiB.
        #[arg(long, default_value_t = 100)]
        mebibytes: u64,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// What every bench scenario is run with.
#[derive(Args)]
pub(in crate::cli) struct FleetArgs {
    /// How many agents.
    #[arg(long, default_value_t = 1000)]
    pub(in crate::cli) agents: usize,
    /// How many 127.0.0.x source addresses to spread them over.
    #[arg(long, default_value_t = 8)]
    pub(in crate::cli) sources: u8,
    /// The server's heartbeat interval, in seconds.
    #[arg(long, default_value_t = 30)]
    pub(in crate::cli) heartbeat: u64,
    /// Where the server's data and the agents' identities are kept between runs.
    #[arg(long, default_value = "./otpgate-bench")]
    pub(in crate::cli) work_dir: PathBuf,
    /// A TOML file with the server's `[store]` section, to measure it on
    /// PostgreSQL (give it an empty database each run); sled in the work
    /// folder without one.
    #[arg(long)]
    pub(in crate::cli) store: Option<PathBuf>,
    /// Server processes of one site over that store (PostgreSQL): agent i
    /// is given node i mod N first, and the others after it.
    #[arg(long, default_value_t = 1)]
    pub(in crate::cli) nodes: usize,
    /// Print one JSON document.
    #[arg(long)]
    pub(in crate::cli) json: bool,
}

impl FleetArgs {
    pub(in crate::cli) fn options(&self) -> crate::bench::FleetOptions {
        crate::bench::FleetOptions {
            agents: self.agents,
            sources: self.sources,
            heartbeat: std::time::Duration::from_secs(self.heartbeat.max(1)),
            work_dir: self.work_dir.clone(),
            store: self.store.clone(),
            nodes: self.nodes.max(1),
        }
    }
}

/// How hard a login storm goes.
#[derive(Args)]
pub(in crate::cli) struct StormArgs {
    /// Logins started per second; without it, as fast as the agents can.
    #[arg(long)]
    pub(in crate::cli) rate: Option<f64>,
    /// Logins in all, at most.
    #[arg(long, default_value_t = 10_000)]
    pub(in crate::cli) count: usize,
    /// Seconds after which no login starts.
    #[arg(long, default_value_t = 30)]
    pub(in crate::cli) duration: u64,
}

impl StormArgs {
    pub(in crate::cli) fn options(&self) -> crate::bench::LoginOptions {
        crate::bench::LoginOptions {
            count: self.count,
            rate: self.rate.filter(|r| *r > 0.0),
            duration: std::time::Duration::from_secs(self.duration),
        }
    }
}

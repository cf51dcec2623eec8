//! Command line (SPEC §4): `args` here, one file per subcommand.

pub mod admin;
pub mod observe;
pub mod policy;
pub mod run;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

pub use crate::config::{DEFAULT_METRICS_ADDR, DEFAULT_PIN_DIR, DEFAULT_STATE_DIR};
use crate::{config::Overrides, datapath::XdpMode};

#[derive(Parser, Debug)]
#[command(
    name = "zone-agent",
    version,
    about = "XDP enforcement of 特定通信 between network zones"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the policy, attach to the zone interfaces and enforce until stopped.
    Run(RunArgs),
    /// Check, explain and inspect policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Show what the running agent enforces (interfaces, policy, failsafe flows, tables).
    Status(AdminArgs),
    /// List the flows in the running agent's flow table.
    Flows(AdminArgs),
    /// Ask the running agent to reload its policy file now.
    Reload(AdminArgs),
    /// Stream the running agent's decisions live (denials, audits, flows opened and ended),
    /// one line each, until interrupted.
    Observe(ObserveArgs),
    /// Remove zone-agent from every interface and delete its pinned programs and maps: the
    /// one explicit way to stop enforcement (stopping or killing the agent does not).
    Detach(DetachArgs),
}

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    /// The running agent's state directory (holds its admin socket).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ObserveArgs {
    /// Only this verdict: allow (flows opened and ended), deny or audit.
    #[arg(long, value_parser = crate::events::observe::VERDICTS)]
    pub verdict: Option<String>,
    /// Only traffic from or to this zone.
    #[arg(long)]
    pub zone: Option<String>,
    /// Only traffic from or to an address in this network (an address is a /32 or /128).
    #[arg(long, value_name = "CIDR")]
    pub host: Option<String>,
    /// Only traffic of this rule.
    #[arg(long)]
    pub rule: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(clap::Args, Debug)]
pub struct DetachArgs {
    /// bpffs directory holding the pins.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// State directory of the agent (to refuse while it is still running).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// Options of `run`. Each may also come from `--config`; the command line wins.
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Configuration file (TOML, see docs/config.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Policy file (TOML) [default: /etc/zone-agent/policy.toml].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Address of the Prometheus endpoint; keep it on loopback unless you mean otherwise
    /// [default: 127.0.0.1:9750].
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Directory for the agent's state and admin socket [default: /var/lib/zone-agent].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// bpffs directory for the pinned programs, links and maps (mounted if needed)
    /// [default: /sys/fs/bpf/zone-agent].
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// XDP attach mode [default: auto].
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,
    /// Detach XDP when the agent exits (the gates OPEN while it is down). Off by default:
    /// enforcement normally outlives the agent.
    #[arg(long)]
    pub fail_open_on_exit: bool,
    /// Write every decision event (deny, audit, flow open/end) to FILE as JSON lines with
    /// ECS field names, rotated by size (config: flow_log_max_bytes, flow_log_keep).
    #[arg(long, value_name = "FILE")]
    pub flow_log: Option<PathBuf>,
}

impl RunArgs {
    /// The options as config's overrides (the command line wins over the config file).
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            policy: self.policy.clone(),
            metrics_addr: self.metrics_addr,
            state_dir: self.state_dir.clone(),
            pin_dir: self.pin_dir.clone(),
            xdp_mode: self.xdp_mode,
            fail_open_on_exit: self.fail_open_on_exit,
            flow_log: self.flow_log.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file; every error with file:line:column.
    Check {
        file: PathBuf,
        /// Do not check that the interfaces exist on this host.
        #[arg(long)]
        offline: bool,
    },
    /// Show the verdict the policy gives a described packet, and why.
    Explain(policy::ExplainArgs),
    /// Write a commented starting policy for a model of the 総務省 guideline.
    Init {
        /// Which model of 三層の対策 the site follows (where its staff terminals are).
        #[arg(long, value_enum)]
        model: crate::policy::template::Model,
        /// Write the policy to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Replace OUTPUT if it exists.
        #[arg(long, requires = "output")]
        force: bool,
    },
    /// Show what reloading NEW over OLD would change: rules added, removed, widened,
    /// narrowed. Exit status 0: no difference, 1: different, 2: trouble (e.g. an invalid file).
    Diff {
        /// The policy in service.
        old: PathBuf,
        /// The policy that would replace it.
        new: PathBuf,
    },
    /// Write the policy as another enforcement's ruleset, to read, audit or fall back to.
    /// `nft`: a stateful nftables script (`nft -f`) replacing `table inet zone_agent`.
    Export {
        file: PathBuf,
        #[arg(long, value_enum)]
        format: policy::ExportFormat,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Policy { command } => policy::run(command),
        Command::Status(a) => admin::status(a),
        Command::Flows(a) => admin::flows(a),
        Command::Reload(a) => admin::reload(a),
        Command::Observe(a) => observe::observe(a),
        Command::Detach(a) => admin::detach(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zone-agent: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

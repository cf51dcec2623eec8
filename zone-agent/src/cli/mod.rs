//! Command line (SPEC §4): `args` here, one file per subcommand.

pub mod policy;
pub mod run;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

use crate::datapath::XdpMode;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/zone-agent";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/zone-agent";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9750";

#[derive(Parser, Debug)]
#[command(name = "zone-agent", version, about = "XDP enforcement of 特定通信 between network zones")]
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
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Policy file (TOML).
    #[arg(long, default_value = "/etc/zone-agent/policy.toml")]
    pub policy: PathBuf,
    /// Address of the Prometheus endpoint (keep it on loopback unless you mean otherwise).
    #[arg(long, default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,
    /// Directory for the agent's state.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// bpffs directory for pins.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,
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
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Policy { command } => policy::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zone-agent: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

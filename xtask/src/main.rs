//! `cargo xtask`: zone-agent's build, test and demo orchestration.
//!
//! - `setup`: install every prerequisite (idempotent; each step printed).
//! - `build`: setup, then `target/release/zone-agent` with the eBPF object embedded.
//! - `test`:  setup + build, unit tests, then the privileged namespace suites under `unshare`.
//! - `demo`:  setup + build, then a three-zone lab with the agent enforcing a policy.
//! - `bench`: setup, then the SPEC §7 benchmark (per packet, scaling, end to end, reload,
//!   agent cost) into BENCHMARKS.md and docs/bench/.
//! - `install`: build, then the binary, systemd unit, example config and policy in place.
//! - `fuzz`:  the cargo-fuzz targets, then the differential tests with fresh seeds, in N minutes.

mod bench;
mod build;
mod demo;
mod fuzz;
mod install;
mod setup;
mod test;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test and demo zone-agent",
    version
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every prerequisite: nightly rust-src, bpf-linker, Debian tools, bpffs.
    Setup,
    /// Setup, then build target/release/zone-agent (eBPF object embedded).
    Build(build::Args),
    /// Setup + build, unit tests, then the privileged namespace suites (root).
    Test(test::Args),
    /// Setup + build, then run the three-zone demo in network namespaces (root).
    Demo(demo::Args),
    /// Setup, then the SPEC §7 benchmark: per-packet cost vs floor and xdp-filter, scaling,
    /// goodput vs nftables, reload under load, agent cost; writes BENCHMARKS.md (root).
    Bench(bench::Args),
    /// Build, then install the binary, the systemd unit, an example config and policy
    /// (existing config and policy are kept). See docs/operations.md.
    Install(install::Args),
    /// Fuzz the policy loader and the frame parser (nightly, cargo-fuzz; installed if
    /// missing), then run the differential tests with fresh seeds (root), within --minutes.
    /// A crash or hang is kept in fuzz/regressions/<target>/ and fails the run.
    Fuzz(fuzz::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ws = Workspace::locate();
    let result = match cli.task {
        Task::Setup => setup::run(&ws),
        Task::Build(args) => build::run(&ws, &args).map(|_| ()),
        Task::Test(args) => test::run(&ws, &args),
        Task::Demo(args) => demo::run(&ws, &args),
        Task::Bench(args) => bench::run(&ws, &args),
        Task::Install(args) => install::run(&ws, &args),
        Task::Fuzz(args) => fuzz::run(&ws, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where things are: the workspace, its target dir, and the `PATH` every child gets.
pub struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
    /// `$CARGO_HOME/bin` (rustup's proxies, bpf-linker).
    pub cargo_bin: PathBuf,
    /// `PATH` with `cargo_bin` first, so `cargo +nightly` and bpf-linker resolve in children.
    pub path: OsString,
}

impl Workspace {
    fn locate() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives one level below the workspace root")
            .to_owned();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
        let cargo_bin = cargo_home.join("bin");
        let mut dirs = vec![cargo_bin.clone()];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path).filter(|d| *d != cargo_bin));
        }
        // sbin holds ip, bpftool, xdp-loader; a non-login root shell may lack it.
        for sbin in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
            if !dirs.iter().any(|d| d == Path::new(sbin)) {
                dirs.push(sbin.into());
            }
        }
        let path = std::env::join_paths(dirs).expect("PATH entries contain no ':'");
        Workspace {
            root,
            target,
            cargo_bin,
            path,
        }
    }

    /// A command run in the workspace root with the xtask `PATH`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root).env("PATH", &self.path);
        cmd
    }

    /// The release agent binary `cargo xtask build` produces.
    pub fn release_agent(&self) -> PathBuf {
        self.target.join("release").join("zone-agent")
    }
}

/// Prints a step header.
pub fn step(msg: &str) {
    println!("==> {msg}");
}

/// The command line as a shell would show it (environment overrides other than PATH first).
pub fn show(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '\n', '$']) {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Runs a command with inherited stdio after printing it; fails naming it on non-zero exit.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let line = show(cmd);
    println!("+ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout if it succeeded.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

//! `cargo xtask test`: setup + build, then
//! 1. `cargo test --workspace --exclude zone-agent-lab` (unit and no-root tests), then
//! 2. the privileged suites, `cargo test -p zone-agent-lab --release`, run as root under
//!    `unshare --mount --net` as a second safety net: whatever a test creates or forgets
//!    lives in a network namespace that dies with the run, never in the host's.
//!
//! Every phase runs even when an earlier one failed (except setup); all failures are
//! reported at the end and make the exit status non-zero.

use anyhow::{Result, bail};

use crate::{Workspace, build, exec, is_root, setup, step};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Only `cargo test --workspace --exclude zone-agent-lab`.
    Unit,
    /// Only the privileged namespace suites (zone-agent-lab).
    Lab,
}

#[derive(clap::Args)]
pub struct Args {
    /// Run only one phase.
    #[arg(long, value_enum)]
    only: Option<Phase>,
    /// Passed to each `cargo test` after the package selection, e.g.
    /// `cargo xtask test --only lab -- --test lab_smoke -- --nocapture`.
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Runs inside the sandbox before the tests: a private bpffs, a private `/run/netns` (so
/// `ip netns` works and its names cannot collide with the host's), loopback up.
pub(crate) const SANDBOX_SH: &str = r#"set -e
mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/netns
mount -t tmpfs -o mode=0755 tmpfs /run/netns
ip link set lo up
exec "$@"
"#;

pub fn run(ws: &Workspace, args: &Args) -> Result<()> {
    // Without the prerequisites no phase means anything: stop here with setup's message.
    setup::run(ws)?;
    let mut failures: Vec<String> = Vec::new();
    let mut record = |phase: &str, result: Result<()>| match result {
        Ok(()) => println!("    {phase}: ok"),
        Err(err) => {
            eprintln!("    {phase}: FAILED: {err:#}");
            failures.push(format!("{phase}: {err:#}"));
        }
    };

    record("build", build::agent(ws, true).map(|_| ()));

    if args.only != Some(Phase::Lab) {
        step("test: unit and no-root tests");
        let mut cmd = ws.command("cargo");
        cmd.args(["test", "--workspace", "--exclude", "zone-agent-lab"])
            .args(&args.extra);
        record("unit tests", exec(&mut cmd));
    }

    if args.only != Some(Phase::Unit) {
        step("test: privileged namespace suites (zone-agent-lab)");
        record("lab tests", lab_phase(ws, &args.extra));
    }

    step("test: summary");
    if failures.is_empty() {
        println!("    every phase passed");
        return Ok(());
    }
    for failure in &failures {
        eprintln!("    FAILED {failure}");
    }
    bail!("{} phase(s) failed", failures.len())
}

fn lab_phase(ws: &Workspace, extra: &[String]) -> Result<()> {
    if !is_root() {
        bail!(
            "the privileged suites need root (network namespaces, XDP, bpffs); \
             re-run as root: `sudo -E cargo xtask test`"
        );
    }
    // Compile outside the sandbox (network for crates.io, normal output); only run inside.
    let cargo_args = extra.split(|a| a == "--").next().unwrap_or_default();
    let mut build = ws.command("cargo");
    build
        .args(["test", "-p", "zone-agent-lab", "--release", "--no-run"])
        .args(cargo_args);
    exec(&mut build)?;

    let agent = ws.release_agent();
    let mut cmd = ws.command("unshare");
    cmd.args([
        "--mount",
        "--net",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        SANDBOX_SH,
    ])
    .arg("xtask-sandbox")
    .args([
        "cargo",
        "test",
        "-p",
        "zone-agent-lab",
        "--release",
        "--offline",
    ])
    .args(extra)
    .env(zone_agent_lab::AGENT_BIN_ENV, &agent);
    if !agent.is_file() {
        eprintln!(
            "    note: {} does not exist; tests that need the agent will fail",
            agent.display()
        );
    }
    exec(&mut cmd)
}

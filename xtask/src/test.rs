//! `cargo xtask test`: setup + build, then
//! 0. the habits: `cargo fmt --check` over the three cargo workspaces (agent, zone-agent-ebpf,
//!    fuzz), `cargo clippy --workspace --all-targets -- -D warnings` and the same for the XDP
//!    program (nightly, bpfel-unknown-none), then
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
    /// Only rustfmt and clippy.
    Lint,
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

    if args.only.is_none() || args.only == Some(Phase::Lint) {
        step("test: rustfmt and clippy");
        record("format", fmt_check(ws));
        let mut clippy = ws.command("cargo");
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        record("clippy", exec(&mut clippy));
        record("clippy (eBPF)", ebpf_clippy(ws));
    }

    if args.only.is_none() || args.only == Some(Phase::Unit) {
        step("test: unit and no-root tests");
        let mut cmd = ws.command("cargo");
        cmd.args(["test", "--workspace", "--exclude", "zone-agent-lab"])
            .args(&args.extra);
        record("unit tests", exec(&mut cmd));
    }

    if args.only.is_none() || args.only == Some(Phase::Lab) {
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

/// `cargo fmt --check` in each cargo workspace of the tree (the eBPF crate and the fuzz
/// targets are workspaces of their own; one `rustfmt.toml` at the root serves all three).
fn fmt_check(ws: &Workspace) -> Result<()> {
    let mut failed = Vec::new();
    for (dir, toolchain) in [
        (".", None),
        ("zone-agent-ebpf", Some("+nightly")),
        ("fuzz", None),
    ] {
        let mut cmd = ws.command("cargo");
        cmd.current_dir(ws.root.join(dir));
        cmd.args(toolchain).args(["fmt", "--all", "--check"]);
        if exec(&mut cmd).is_err() {
            failed.push(dir);
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    bail!(
        "unformatted code in {}; run `cargo fmt --all` there (the eBPF crate with `cargo +nightly fmt`)",
        failed.join(", ")
    )
}

/// `cargo +nightly clippy -D warnings` over the XDP program, for the target and with the
/// flags `zone-agent/build.rs` builds it with. Its own target dir: about 30 s the first time
/// (build-std checks `core`), under a second after.
fn ebpf_clippy(ws: &Workspace) -> Result<()> {
    let mut cmd = ws.command("cargo");
    cmd.current_dir(ws.root.join("zone-agent-ebpf"))
        // As in build.rs: settings of an outer cargo are for the host, not for bpfel.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(ws.target.join("ebpf-clippy"))
        .args(["--", "-D", "warnings"]);
    exec(&mut cmd)
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

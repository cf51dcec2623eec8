//! `cargo xtask test`: setup + build, then
//! 0. the habits: `cargo fmt --check` over the three cargo workspaces (agent, zone-agent-ebpf,
//!    fuzz), `cargo clippy --workspace --all-targets -- -D warnings` and the same for the XDP
//!    program (nightly, bpfel-unknown-none), then
//! 1. `cargo test --workspace --exclude zone-agent-lab` (unit and no-root tests), then
//! 2. the privileged suites of zone-agent-lab: built with `cargo test --release --no-run`,
//!    then each test binary run as root in a sandbox of its own (`unshare --mount --net`) as
//!    a second safety net: whatever a test creates or forgets lives in a network namespace
//!    that dies with the binary, never in the host's. Labs have unique names, so binaries run
//!    concurrently (`ZA_LAB_JOBS`, default the CPU count, at least 2); each one's output
//!    is printed whole after the last has ended, then a summary with each binary's wall time.
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

/// Test binaries known to take longest, started first so the pool ends together (the rest
/// follow in name order).
const LONGEST_FIRST: [&str; 7] = [
    "differential",
    // A UDP flow's end is waited for (120 s idle).
    "events",
    "enforcement",
    "flow_abuse",
    "agent_abuse",
    "nft_oracle",
    "evasion",
];

/// Environment variable bounding how many lab test binaries run at once (default: the number
/// of CPUs, at least 2; more makes the timing-bound suites — watchdog gaps, revocation
/// within 2 s — share too little CPU; `1` runs them one after another).
const LAB_JOBS_ENV: &str = "ZA_LAB_JOBS";

/// One test binary of zone-agent-lab, as `cargo test --no-run` reports it.
struct TestBinary {
    /// The target's name (`enforcement`, or `zone_agent_lab` for the library's unit tests).
    name: String,
    path: std::path::PathBuf,
}

/// What one test binary did.
struct Outcome {
    name: String,
    status: Result<std::process::ExitStatus, String>,
    wall: std::time::Duration,
    output: String,
}

impl Outcome {
    fn passed(&self) -> bool {
        matches!(&self.status, Ok(s) if s.success())
    }
}

fn lab_phase(ws: &Workspace, extra: &[String]) -> Result<()> {
    if !is_root() {
        bail!(
            "the privileged suites need root (network namespaces, XDP, bpffs); \
             re-run as root: `sudo -E cargo xtask test`"
        );
    }
    // Compile outside the sandbox (network for crates.io, normal output); only run inside.
    // `extra` is `<cargo test args> [-- <test binary args>]`: the first part selects what is
    // built, the second goes to every binary.
    let mut parts = extra.splitn(2, |a| a == "--");
    let cargo_args = parts.next().unwrap_or_default();
    let binary_args = parts.next().unwrap_or_default();
    let binaries = build_lab_tests(ws, cargo_args)?;
    if binaries.is_empty() {
        bail!("`cargo test --no-run` reported no test binary for zone-agent-lab");
    }

    let agent = ws.release_agent();
    if !agent.is_file() {
        eprintln!(
            "    note: {} does not exist; tests that need the agent will fail",
            agent.display()
        );
    }
    let jobs = lab_jobs().min(binaries.len());
    println!(
        "    {} test binaries, {jobs} at a time, each in its own sandbox \
         (unshare --mount --net; {LAB_JOBS_ENV}=N to change)",
        binaries.len()
    );
    let started = std::time::Instant::now();
    let outcomes = run_pool(binaries, jobs, |bin| {
        run_lab_binary(ws, &agent, bin, binary_args)
    });
    let wall = started.elapsed();

    // Every binary's output, whole, one after another; then the summary.
    for o in &outcomes {
        step(&format!("test: output of {}", o.name));
        print!("{}", o.output);
        if let Err(e) = &o.status {
            eprintln!("    cannot run {}: {e}", o.name);
        }
    }
    step("test: lab binaries");
    for o in &outcomes {
        let status = match &o.status {
            Ok(s) if s.success() => "ok".to_owned(),
            Ok(s) => format!("FAILED ({s})"),
            Err(_) => "FAILED (not started)".to_owned(),
        };
        println!(
            "    {:<16} {:>7.1} s  {status}",
            o.name,
            o.wall.as_secs_f64()
        );
    }
    let serial: f64 = outcomes.iter().map(|o| o.wall.as_secs_f64()).sum();
    println!(
        "    wall time {:.1} s ({serial:.1} s of test binaries, {jobs} at a time)",
        wall.as_secs_f64()
    );
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.name.as_str())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    bail!("lab test binaries failed: {}", failed.join(", "))
}

/// `cargo test -p zone-agent-lab --release --no-run` with `cargo_args`; the test binaries it
/// built, longest-running first.
fn build_lab_tests(ws: &Workspace, cargo_args: &[String]) -> Result<Vec<TestBinary>> {
    use anyhow::Context as _;
    let mut build = ws.command("cargo");
    build
        .args(["test", "-p", "zone-agent-lab", "--release", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .args(cargo_args)
        .stdout(std::process::Stdio::piped());
    let line = crate::show(&build);
    println!("+ {line}");
    let out = build
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!("`{line}` failed ({})", out.status);
    }
    let mut binaries = Vec::new();
    for msg in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(msg) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(path)) = (v["target"]["name"].as_str(), v["executable"].as_str())
        else {
            continue;
        };
        binaries.push(TestBinary {
            name: name.to_owned(),
            path: path.into(),
        });
    }
    let rank = |b: &TestBinary| {
        LONGEST_FIRST
            .iter()
            .position(|n| *n == b.name)
            .unwrap_or(LONGEST_FIRST.len())
    };
    binaries.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name)));
    Ok(binaries)
}

fn lab_jobs() -> usize {
    match std::env::var(LAB_JOBS_ENV) {
        Ok(v) => v.trim().parse().ok().filter(|n| *n > 0).unwrap_or(1),
        Err(_) => std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
    }
}

/// Runs `run` over `items` on `jobs` threads; the outcomes in the order of `items`. Prints a
/// line as each one ends.
fn run_pool<T: Send, R: Send>(items: Vec<T>, jobs: usize, run: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate().collect::<Vec<_>>());
    let results = std::sync::Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    // Take the next item (the queue is consumed from its front).
                    let next = {
                        let mut q = queue.lock().expect("queue");
                        if q.is_empty() {
                            None
                        } else {
                            Some(q.remove(0))
                        }
                    };
                    let Some((i, item)) = next else { break };
                    let r = run(item);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

/// Runs one test binary as root in a sandbox of its own: `unshare --mount --net` with a
/// private bpffs and `/run/netns` ([`SANDBOX_SH`]), so whatever it creates or forgets dies
/// with it. Its cwd is the package dir, as under `cargo test`; stdout and stderr go to one
/// buffer, returned whole.
fn run_lab_binary(
    ws: &Workspace,
    agent: &std::path::Path,
    bin: TestBinary,
    args: &[String],
) -> Outcome {
    let started = std::time::Instant::now();
    let log =
        std::env::temp_dir().join(format!("xtask-lab-{}-{}.log", std::process::id(), bin.name));
    let status = (|| -> std::result::Result<std::process::ExitStatus, String> {
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = ws.command("unshare");
        cmd.current_dir(ws.root.join("tests"))
            .args([
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
            .arg(&bin.path)
            .args(args)
            .env(zone_agent_lab::AGENT_BIN_ENV, agent)
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(err);
        cmd.status()
            .map_err(|e| format!("cannot start unshare: {e}"))
    })();
    let wall = started.elapsed();
    let mut output = format!("+ {} {}\n", bin.path.display(), args.join(" "));
    output.push_str(&String::from_utf8_lossy(
        &std::fs::read(&log).unwrap_or_default(),
    ));
    let _ = std::fs::remove_file(&log);
    let ok = matches!(&status, Ok(s) if s.success());
    println!(
        "    {:<16} {:>7.1} s  {}",
        bin.name,
        wall.as_secs_f64(),
        if ok { "ok" } else { "FAILED" }
    );
    Outcome {
        name: bin.name,
        status,
        wall,
        output,
    }
}

//! `cargo xtask bench`: the benchmark of SPEC §7, in one run, written to BENCHMARKS.md with
//! PNG plots (docs/bench/).
//!
//! 1. `tests/benches/per_packet.rs`: the XDP program's per-packet cost with
//!    BPF_PROG_TEST_RUN over a frame corpus, against the XDP_DROP floor and xdp-filter, at
//!    10 … 100 000 rules (and destination lists of as many prefixes), with each policy's
//!    load and reload time and map memory.
//! 2. `tests/benches/end_to_end.rs`: a lab gateway with no filter, zone-agent and nftables
//!    (iperf3 goodput, connection rate, a denied flood's softirq cost), reloads of a 10 000-rule
//!    policy under continuous traffic, the agent's CPU and memory.
//!
//! Both run as root inside `unshare --mount --net` with a private bpffs and `/run/netns`, as
//! the lab tests do: nothing they make can reach the host's network, and whatever a failure
//! leaves behind dies with the sandbox. Each part writes JSON under `<target>/bench/`; a
//! failed part is reported as such and the other still runs. The report computes every
//! verdict from the run (`report.rs`). `ZONE_AGENT_BIN=<path>` benchmarks that agent binary
//! instead of building one.

mod plot;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use zone_agent_lab::bench::{EndToEnd, PerPacket};

use crate::{Workspace, build, exec, is_root, setup, step};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// BPF_PROG_TEST_RUN: per-packet cost, scaling, load/reload time, map memory.
    PerPacket,
    /// The lab: goodput, connection rate, denied flood, reload under load, agent cost.
    EndToEnd,
}

#[derive(clap::Args)]
pub struct Args {
    /// A smoke run (about two minutes): small policies, one short round; writes
    /// <target>/bench/quick/BENCHMARKS.md, not the committed one.
    #[arg(long)]
    quick: bool,
    /// BPF_PROG_TEST_RUN repeat count per sample [default: 200000; --quick: 20000].
    #[arg(long)]
    repeat: Option<u32>,
    /// Interleaved samples per frame and program; the median is reported [default: 7; --quick: 3].
    #[arg(long)]
    samples: Option<usize>,
    /// Policy sizes (rules, or prefixes in the destination-list variant) [default:
    /// 10,1000,10000,100000; --quick: 10,1000].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// End-to-end rounds, each running every gate once [default: 3; --quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds of each iperf3 run [default: 5; --quick: 2].
    #[arg(long)]
    seconds: Option<u32>,
    /// Run one part only.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Directory for BENCHMARKS.md and its plots [default: the workspace root (plots in
    /// docs/bench/); --quick: <target>/bench/quick].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Every knob of one run, after `--quick` and the explicit arguments.
struct Plan {
    repeat: u32,
    samples: usize,
    sizes: Vec<usize>,
    reloads: usize,
    rounds: usize,
    seconds: u32,
    crr_seconds: u32,
    flood_seconds: u32,
    idle_seconds: u32,
    e2e_rules: usize,
    reload_rules: usize,
    reload_seconds: u32,
}

impl Plan {
    fn of(a: &Args) -> Plan {
        let q = a.quick;
        Plan {
            repeat: a.repeat.unwrap_or(if q { 20_000 } else { 200_000 }),
            samples: a.samples.unwrap_or(if q { 3 } else { 7 }),
            sizes: a.sizes.clone().unwrap_or_else(|| {
                if q {
                    vec![10, 1000]
                } else {
                    vec![10, 1000, 10_000, 100_000]
                }
            }),
            reloads: if q { 1 } else { 3 },
            rounds: a.rounds.unwrap_or(if q { 1 } else { 3 }),
            seconds: a.seconds.unwrap_or(if q { 2 } else { 5 }),
            crr_seconds: if q { 1 } else { 3 },
            flood_seconds: if q { 2 } else { 5 },
            idle_seconds: if q { 1 } else { 5 },
            e2e_rules: 1000,
            reload_rules: if q { 1000 } else { 10_000 },
            reload_seconds: if q { 8 } else { 20 },
        }
    }
}

pub fn run(ws: &Workspace, args: &Args) -> Result<()> {
    setup::run(ws)?;
    if !is_root() {
        bail!("the benchmark loads XDP programs and builds network namespaces: re-run as root");
    }
    let plan = Plan::of(args);
    let started = Instant::now();
    let meta = report::Meta::now(args.quick);
    if meta.loadavg > 0.5 * meta.cpus as f64 {
        println!(
            "    note: load average {:.2} on {} CPUs: other work is running, the numbers will be noisy",
            meta.loadavg, meta.cpus
        );
    }
    let dir = ws.target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;

    // `ZONE_AGENT_BIN` runs that binary instead of building one (as the demo does). The
    // binary is copied at once: a target dir shared with other builds may get another
    // zone-agent at the same path while the benchmark runs.
    let built = match std::env::var_os(zone_agent_lab::AGENT_BIN_ENV) {
        Some(bin) => {
            println!(
                "    using {}={}",
                zone_agent_lab::AGENT_BIN_ENV,
                bin.to_string_lossy()
            );
            PathBuf::from(bin)
        }
        None => build::agent(ws, true)?,
    };
    let agent = dir.join("zone-agent");
    std::fs::copy(&built, &agent)
        .with_context(|| format!("copy {} to {}", built.display(), agent.display()))?;
    step("bench: building the benchmarks");
    exec(
        ws.command("cargo")
            .args(["bench", "-p", "zone-agent-lab", "--benches", "--no-run"]),
    )?;

    let pp_json = dir.join("per_packet.json");
    let e2e_json = dir.join("end_to_end.json");
    let per_packet: Result<PerPacket, String> = if args.only == Some(Part::EndToEnd) {
        Err("not run (--only end-to-end)".into())
    } else {
        step("bench: per-packet cost, scaling, load time, memory (BPF_PROG_TEST_RUN)");
        let sizes: Vec<String> = plan.sizes.iter().map(usize::to_string).collect();
        let bench_args = [
            "--repeat".into(),
            plan.repeat.to_string(),
            "--samples".into(),
            plan.samples.to_string(),
            "--sizes".into(),
            sizes.join(","),
            "--reloads".into(),
            plan.reloads.to_string(),
        ];
        part(ws, "per_packet", &bench_args, &pp_json, &agent).and_then(|t| {
            serde_json::from_str(&t).map_err(|e| format!("parse {}: {e}", pp_json.display()))
        })
    };
    let end_to_end: Result<EndToEnd, String> = if args.only == Some(Part::PerPacket) {
        Err("not run (--only per-packet)".into())
    } else {
        step(
            "bench: end to end through a lab gateway (iperf3, connections, flood, reloads, agent)",
        );
        let n = |v: u32| v.to_string();
        let bench_args = [
            "--rounds".into(),
            plan.rounds.to_string(),
            "--seconds".into(),
            n(plan.seconds),
            "--crr-seconds".into(),
            n(plan.crr_seconds),
            "--flood-seconds".into(),
            n(plan.flood_seconds),
            "--idle-seconds".into(),
            n(plan.idle_seconds),
            "--rules".into(),
            plan.e2e_rules.to_string(),
            "--reload-rules".into(),
            plan.reload_rules.to_string(),
            "--reload-seconds".into(),
            n(plan.reload_seconds),
        ];
        part(ws, "end_to_end", &bench_args, &e2e_json, &agent).and_then(|t| {
            serde_json::from_str(&t).map_err(|e| format!("parse {}: {e}", e2e_json.display()))
        })
    };

    step("bench: report");
    let out = match (&args.out, args.quick) {
        (Some(o), _) => o.clone(),
        (None, true) => dir.join("quick"),
        (None, false) => ws.root.clone(),
    };
    let plot_dir = if args.out.is_none() && !args.quick {
        out.join("docs/bench")
    } else {
        out.clone()
    };
    std::fs::create_dir_all(&plot_dir).with_context(|| format!("create {}", plot_dir.display()))?;
    let plots = plot::draw(
        per_packet.as_ref().ok(),
        end_to_end.as_ref().ok(),
        &plot_dir,
    );
    let plots: Vec<(String, String)> = match plots {
        Ok(files) => files
            .into_iter()
            .map(|(title, path)| (title, relative(&path, &out)))
            .collect(),
        Err(e) => {
            println!("    plots: not drawn: {e:#}");
            vec![("plots not drawn".into(), format!("{e:#}"))]
        }
    };
    let mut meta = meta;
    meta.elapsed_s = started.elapsed().as_secs_f64();
    let doc = report::render(&report::Inputs {
        meta,
        per_packet: &per_packet,
        end_to_end: &end_to_end,
        plots,
    });
    let md = out.join("BENCHMARKS.md");
    std::fs::write(&md, &doc).with_context(|| format!("write {}", md.display()))?;
    println!("\n{doc}");
    println!(
        "    wrote {} ({:.0} s)",
        md.display(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = [
        ("per-packet", per_packet.err()),
        ("end-to-end", end_to_end.err()),
    ]
    .into_iter()
    .filter_map(|(what, e)| {
        e.filter(|e| !e.starts_with("not run"))
            .map(|e| format!("{what}: {e}"))
    })
    .collect();
    if !failed.is_empty() {
        bail!("benchmark part(s) failed: {}", failed.join("; "));
    }
    Ok(())
}

/// Runs one benchmark binary in the sandbox; its JSON, or what went wrong.
fn part(
    ws: &Workspace,
    bench: &str,
    args: &[String],
    json: &Path,
    agent: &Path,
) -> Result<String, String> {
    let _ = std::fs::remove_file(json);
    let mut cmd = ws.command("unshare");
    cmd.args([
        "--mount",
        "--net",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        crate::test::SANDBOX_SH,
        "xtask-sandbox",
    ])
    .args([
        "cargo",
        "bench",
        "--offline",
        "-p",
        "zone-agent-lab",
        "--bench",
        bench,
        "--",
    ])
    .args(args)
    .arg("--json")
    .arg(json)
    .env(zone_agent_lab::AGENT_BIN_ENV, agent);
    exec(&mut cmd).map_err(|e| format!("{e:#}"))?;
    std::fs::read_to_string(json).map_err(|e| format!("read {}: {e}", json.display()))
}

/// `path` relative to `base` when it lies below it (links in the Markdown), else absolute.
fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn uname_r() -> String {
    Command::new("uname")
        .arg("-r")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

//! `cargo xtask fuzz --minutes N`: the cargo-fuzz targets in `fuzz/` (the policy loader and
//! the model's frame parser), then the differential property tests with fresh seeds, within
//! one time budget.
//!
//! - Installs what it needs first: the nightly toolchain and cargo-fuzz.
//! - Each target runs from the committed corpus (`fuzz/corpus/<target>/`) into a working
//!   corpus under the target directory, so the committed corpus only changes by hand (see
//!   fuzz/README.md). A crash or hang is copied into `fuzz/regressions/<target>/`, where
//!   `zone-agent/tests/fuzz_corpus.rs` replays it with the corpus.
//! - The differential tests (`tests/tests/differential/`, root) run in batches, each with a
//!   fresh `ZA_DIFF_SEED`, until the budget is spent; every seed is printed so a failure can
//!   be rerun exactly.
//!
//! Exits non-zero if a target found a crash or hang, or a differential batch failed.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Workspace, exec, is_root, probe, setup, show, step};

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`) and the longest input each is given: a
/// policy template is about 7 KB; eight frames of a few hundred bytes fit in 4 KB.
const TARGETS: &[(&str, usize)] = &[("policy_loader", 16_384), ("frame_parser", 4096)];

/// libFuzzer's limit for one input: anything slower is a hang, reported as a crash.
const INPUT_TIMEOUT_S: u64 = 5;

/// Cases of the first differential batch; later batches are sized from its rate.
const FIRST_DIFF_CASES: u64 = 1000;
/// A later batch is at most this many times the previous one (the rate is an estimate).
const DIFF_GROWTH: u64 = 10;
/// Below this much time left, no further differential batch is started.
const DIFF_MIN_BATCH: Duration = Duration::from_secs(30);

const DIFF_TEST: &str = "tests/tests/differential/main.rs";

#[derive(clap::Args)]
pub struct Args {
    /// Total time budget in minutes, split evenly between the phases that run: each fuzz
    /// target, then the differential tests for whatever remains (with both targets and the
    /// differential tests, each gets a third). The budget starts once the fuzz targets are
    /// built; the first differential batch always runs and may overrun it while the lab builds.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Fuzz only this target (repeatable; default: all).
    #[arg(long = "target", value_parser = clap::builder::PossibleValuesParser::new(["policy_loader", "frame_parser"]))]
    targets: Vec<String>,
    /// Do not run the differential tests.
    #[arg(long)]
    no_differential: bool,
}

/// What one fuzz target run found.
struct TargetReport {
    name: &'static str,
    seconds: f64,
    execs: Option<u64>,
    execs_per_s: Option<u64>,
    /// The last `cov: … ft: … corp: …` libFuzzer printed.
    coverage: Option<String>,
    corpus: usize,
    /// Inputs copied into fuzz/regressions/<target>/.
    found: Vec<PathBuf>,
    failure: Option<String>,
}

pub fn run(ws: &Workspace, args: &Args) -> Result<()> {
    if !args.minutes.is_finite() || args.minutes <= 0.0 {
        bail!("--minutes must be a number above 0");
    }
    let start = Instant::now();
    let targets: Vec<(&'static str, usize)> = TARGETS
        .iter()
        .copied()
        .filter(|(name, _)| args.targets.is_empty() || args.targets.iter().any(|t| t == name))
        .collect();
    let differential = differential_skip(ws, args);
    if let Some(why) = &differential {
        println!("    differential tests: skipped: {why}");
    }

    step("fuzz: prerequisites");
    setup::nightly_sysroot(ws)?;
    cargo_fuzz(ws)?;

    step("fuzz: build the targets");
    exec(fuzz_command(ws, "build").args(["-s", "none"]))
        .context("building the fuzz targets failed (compiler output above)")?;
    // The budget is for fuzzing and testing: a rebuild after a change would eat a short one.
    let deadline = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);

    let mut phases_left = targets.len() + usize::from(differential.is_none());
    let mut reports = Vec::new();
    for &(name, max_len) in &targets {
        let share = deadline.saturating_duration_since(Instant::now()) / phases_left.max(1) as u32;
        phases_left -= 1;
        step(&format!("fuzz: {name} for {}s", share.as_secs().max(1)));
        reports.push(fuzz_target(
            ws,
            name,
            max_len,
            share.max(Duration::from_secs(1)),
        )?);
    }

    let diff = match differential {
        None => {
            step("fuzz: differential property tests with fresh seeds");
            Some(run_differential(ws, deadline))
        }
        Some(_) => None,
    };

    step("fuzz: summary");
    let mut failed = false;
    for r in &reports {
        let num = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
        println!(
            "    {}: {:.0}s, {} executions, {} exec/s, {}, working corpus {} inputs: {}",
            r.name,
            r.seconds,
            num(r.execs),
            num(r.execs_per_s),
            r.coverage.as_deref().unwrap_or("no coverage line"),
            r.corpus,
            r.failure.as_deref().unwrap_or("no crash, no hang")
        );
        for path in &r.found {
            println!("      kept {}", path.display());
        }
        failed |= r.failure.is_some();
    }
    if let Some(d) = &diff {
        println!(
            "    differential: {} batch(es), {} cases, seeds {}: {}",
            d.batches.len(),
            d.batches.iter().map(|b| b.1).sum::<u64>(),
            d.batches
                .iter()
                .map(|b| b.0.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            d.failure.as_deref().unwrap_or("all passed")
        );
        failed |= d.failure.is_some();
    }
    println!("    total {:.0}s", start.elapsed().as_secs_f64());
    if failed {
        bail!(
            "fuzzing found a problem (see above); replay with `cargo test -p zone-agent --test fuzz_corpus`"
        );
    }
    Ok(())
}

/// cargo-fuzz, installed when `cargo fuzz` does not run.
fn cargo_fuzz(ws: &Workspace) -> Result<()> {
    if let Some(version) = probe(ws.command("cargo").args(["fuzz", "--version"])) {
        println!("    cargo-fuzz: present ({version})");
        return Ok(());
    }
    println!("    cargo-fuzz: missing, installing");
    exec(ws.command("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz failed; it needs crates.io access: `cargo install cargo-fuzz --locked`")
}

/// `cargo +nightly fuzz <sub> --target-dir …` in the workspace root, without the eBPF build:
/// the targets only need the policy code, and the build script would otherwise compile the
/// XDP program for every sanitizer configuration.
fn fuzz_command(ws: &Workspace, sub: &str) -> std::process::Command {
    let mut cmd = ws.command("nice");
    cmd.args(["-n", "10", "cargo", "+nightly", "fuzz", sub, "--target-dir"])
        .arg(ws.target.join("fuzz"))
        .env("ZONE_AGENT_SKIP_EBPF", "1");
    cmd
}

fn fuzz_target(
    ws: &Workspace,
    name: &'static str,
    max_len: usize,
    time: Duration,
) -> Result<TargetReport> {
    let fuzz = ws.root.join("fuzz");
    let work = ws.target.join("fuzz-corpus").join(name);
    let artifacts = ws.target.join("fuzz-artifacts").join(name);
    let logs = ws.target.join("fuzz-logs");
    let log_path = logs.join(format!("{name}.log"));
    // Artifacts of an earlier run were kept already; start empty so only this run's count.
    if artifacts.exists() {
        fs::remove_dir_all(&artifacts)
            .with_context(|| format!("cannot clear {}", artifacts.display()))?;
    }
    for dir in [&work, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let mut cmd = fuzz_command(ws, "run");
    cmd.args(["-s", "none", name])
        .arg(&work)
        .arg(fuzz.join("corpus").join(name));
    // Not fuzz/regressions: the unit tests replay those, and a hang that was fixed can still
    // be slow (the policies near the rule-key capacity take most of a second), which the
    // fuzzer would then spend its time mutating.
    let regressions = fuzz.join("regressions").join(name);
    cmd.arg("--")
        .arg(format!("-max_total_time={}", time.as_secs().max(1)))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(format!("-max_len={max_len}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    let dict = fuzz.join(format!("{name}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    println!("+ {}", show(&cmd));

    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start `cargo fuzz run`")?;
    let mut log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut stats = Stats::default();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading libFuzzer's output")?;
            writeln!(log, "{line}").ok();
            stats.read(&line);
            if shown(&line) {
                println!("    {line}");
            }
        }
    }
    let status = child.wait().context("waiting for `cargo fuzz run`")?;
    println!("    full output: {}", log_path.display());

    let found = keep_artifacts(name, &artifacts, &regressions)?;
    let failure = if !found.is_empty() {
        Some(format!("{} input(s) crashed or hung", found.len()))
    } else if !status.success() {
        Some(format!(
            "`cargo fuzz run` failed ({status}); see {}",
            log_path.display()
        ))
    } else {
        None
    };
    Ok(TargetReport {
        name,
        seconds: started.elapsed().as_secs_f64(),
        execs: stats.execs,
        execs_per_s: stats.execs_per_s,
        coverage: stats.coverage,
        corpus: fs::read_dir(&work).map_or(0, |d| d.count()),
        found,
        failure,
    })
}

/// libFuzzer lines worth showing live: progress every few seconds and anything unusual, not
/// the stream of `NEW`/`REDUCE` lines (they are in the log).
fn shown(line: &str) -> bool {
    !line.starts_with('#') || ["pulse", "INITED", "DONE"].iter().any(|w| line.contains(w))
}

#[derive(Default)]
struct Stats {
    execs: Option<u64>,
    execs_per_s: Option<u64>,
    coverage: Option<String>,
}

impl Stats {
    fn read(&mut self, line: &str) {
        let stat = |key: &str| {
            line.strip_prefix(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(n) = stat("stat::number_of_executed_units:") {
            self.execs = Some(n);
        } else if let Some(n) = stat("stat::average_exec_per_sec:") {
            self.execs_per_s = Some(n);
        } else if let Some(rest) = line.strip_prefix('#') {
            // "#4096\tpulse  cov: 1234 ft: 5678 corp: 90/12Kb exec/s: 800 rss: 60Mb"
            let mut words = rest.split_whitespace();
            if let Some(n) = words.next().and_then(|n| n.parse::<u64>().ok()) {
                // Until the final stats arrive (they do not after a crash).
                self.execs = self.execs.max(Some(n));
            }
            if let Some(cov) = line.find("cov:") {
                let end = line
                    .find(" exec/s:")
                    .filter(|&e| e > cov)
                    .unwrap_or(line.len());
                self.coverage = Some(line[cov..end].trim().to_owned());
            }
        }
    }
}

/// Moves this run's crash, hang and out-of-memory inputs into `fuzz/regressions/<target>/`.
fn keep_artifacts(name: &str, artifacts: &Path, regressions: &Path) -> Result<Vec<PathBuf>> {
    let mut kept = Vec::new();
    let Ok(entries) = fs::read_dir(artifacts) else {
        return Ok(kept);
    };
    for entry in entries {
        let from = entry.context("reading the artifact directory")?.path();
        let Some(file) = from.file_name() else {
            continue;
        };
        fs::create_dir_all(regressions)
            .with_context(|| format!("cannot create {}", regressions.display()))?;
        let to = regressions.join(file);
        fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        println!(
            "    FOUND {}: minimise with `cargo +nightly fuzz tmin -s none {name} {}`",
            to.display(),
            to.display()
        );
        kept.push(to);
    }
    kept.sort();
    Ok(kept)
}

/// Why the differential tests cannot run here, if they cannot.
fn differential_skip(ws: &Workspace, args: &Args) -> Option<String> {
    if args.no_differential {
        Some("--no-differential".into())
    } else if !ws.root.join(DIFF_TEST).is_file() {
        Some(format!("{DIFF_TEST} does not exist in this tree"))
    } else if !is_root() {
        Some("they run in the privileged lab (XDP, network namespaces): re-run as root".into())
    } else {
        None
    }
}

struct DiffReport {
    /// (seed, cases) of each batch run.
    batches: Vec<(u64, u64)>,
    failure: Option<String>,
}

/// Batches of `cargo xtask test --only lab -- --test differential`, each with a fresh seed,
/// until `deadline`; the first always runs. A batch's size comes from the previous one's rate.
fn run_differential(ws: &Workspace, deadline: Instant) -> DiffReport {
    let mut report = DiffReport {
        batches: Vec::new(),
        failure: None,
    };
    let mut cases = FIRST_DIFF_CASES;
    loop {
        let seed = match fresh_seed() {
            Ok(seed) => seed,
            Err(e) => {
                report.failure = Some(format!("no random seed: {e:#}"));
                return report;
            }
        };
        println!(
            "    differential batch {}: ZA_DIFF_SEED={seed} ZA_DIFF_CASES={cases} \
             (rerun: ZA_DIFF_SEED={seed} ZA_DIFF_CASES={cases} cargo xtask test --only lab -- --test differential)",
            report.batches.len() + 1
        );
        let started = Instant::now();
        let result = std::env::current_exe()
            .context("cannot find the xtask binary")
            .and_then(|xtask| {
                let mut cmd = ws.command(xtask);
                cmd.args(["test", "--only", "lab", "--", "--test", "differential"])
                    .env("ZA_DIFF_SEED", seed.to_string())
                    .env("ZA_DIFF_CASES", cases.to_string())
                    // The lab compares the real XDP program with the model: never the stub.
                    .env_remove("ZONE_AGENT_SKIP_EBPF");
                exec(&mut cmd)
            });
        report.batches.push((seed, cases));
        if let Err(e) = result {
            report.failure = Some(format!("seed {seed} with {cases} cases failed: {e:#}"));
            return report;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left < DIFF_MIN_BATCH {
            return report;
        }
        cases = next_batch(cases, started.elapsed(), left);
    }
}

/// Cases for the next batch: what the last one's rate fits into a little less than the time
/// left (the rate includes the lab's start-up), between the first batch's size and
/// `DIFF_GROWTH` times the last.
fn next_batch(cases: u64, took: Duration, left: Duration) -> u64 {
    let rate = cases as f64 / took.as_secs_f64().max(1.0);
    let fit = (rate * left.as_secs_f64() * 0.8) as u64;
    fit.clamp(FIRST_DIFF_CASES, cases.saturating_mul(DIFF_GROWTH))
}

/// A seed nobody chose: 8 bytes of the kernel's randomness.
fn fresh_seed() -> Result<u64> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differential_batches_fill_the_time_left() {
        let s = Duration::from_secs;
        // 1000 cases in 10 s, 100 s left: 8000 fit in 80 % of it.
        assert_eq!(next_batch(1000, s(10), s(100)), 8000);
        // A fast batch grows at most tenfold; a slow one never shrinks below the first size.
        assert_eq!(next_batch(1000, s(1), s(3600)), 10_000);
        assert_eq!(next_batch(5000, s(600), s(40)), FIRST_DIFF_CASES);
    }

    #[test]
    fn libfuzzer_lines_give_the_stats() {
        let mut st = Stats::default();
        st.read("#4096\tpulse  cov: 1234 ft: 5678 corp: 90/12Kb exec/s: 800 rss: 60Mb");
        assert_eq!(st.execs, Some(4096));
        assert_eq!(
            st.coverage.as_deref(),
            Some("cov: 1234 ft: 5678 corp: 90/12Kb")
        );
        st.read("#8000\tDONE   cov: 1300 ft: 6000 corp: 95/13Kb lim: 4096 exec/s: 790 rss: 61Mb");
        assert_eq!(
            st.coverage.as_deref(),
            Some("cov: 1300 ft: 6000 corp: 95/13Kb lim: 4096")
        );
        st.read("stat::number_of_executed_units: 8123");
        st.read("stat::average_exec_per_sec:     790");
        assert_eq!((st.execs, st.execs_per_s), (Some(8123), Some(790)));
        assert!(shown("#8000\tDONE   cov: 1"));
        assert!(!shown("#12\tNEW    cov: 1"));
        assert!(shown("==123== ERROR: libFuzzer: deadly signal"));
    }
}

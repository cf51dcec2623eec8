//! The real agent in a lab: `zone-agent run` in the gateway namespace with a policy file, and
//! its Prometheus counters read over real HTTP.
//!
//! [`Start`] is the one way every namespace test, the demo and the benchmarks start the agent:
//! [`start`] for the common case, the builder for another binary, a `--config`, a wrapper
//! (systemd's limits, `setpriv`), or a second agent beside the first.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::child::ChildGuard;
use crate::lab::Lab;
use crate::scrape;

/// Where the agent serves metrics, inside the gateway namespace (each lab has its own).
pub const METRICS_ADDR: &str = "127.0.0.1:9750";
/// Bound for the agent to load, attach and answer /metrics.
pub const AGENT_READY: Duration = Duration::from_secs(30);

/// Writes `policy` to `<lab dir>/policy.toml` and starts `zone-agent run` in the gateway with
/// the lab's own bpffs as pin dir and `<lab dir>/state` as state dir. Returns once /metrics
/// answers, which the agent only does after the policy is applied and attached.
pub fn start(lab: &Lab, policy: &str) -> ChildGuard {
    let path = lab.dir().join("policy.toml");
    fs::write(&path, policy).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    start_file(lab, &path)
}

/// `<lab dir>/state`: the default state dir (and admin socket) of the agent [`Start`] starts.
pub fn state_dir(lab: &Lab) -> PathBuf {
    lab.dir().join("state")
}

/// The default pin dir of the agent in a lab. `ip netns exec` remounts /sys, so /sys/fs/bpf
/// is no bpffs in there: the lab's own.
pub fn pin_dir(lab: &Lab) -> PathBuf {
    lab.bpffs().join("zone-agent")
}

/// Starts `zone-agent run --policy <path>` in the gateway, as [`start`] does.
pub fn start_file(lab: &Lab, path: &Path) -> ChildGuard {
    Start::new(lab, path).run()
}

/// [`start_file`] with another agent binary (an older build, for upgrade tests).
pub fn start_bin(lab: &Lab, bin: &Path, path: &Path) -> ChildGuard {
    Start::new(lab, path).bin(bin).run()
}

/// Writes `text` to `path` as an editor does: a new file renamed over the old one, so the
/// agent's file watcher never reads a half-written policy.
pub fn write_policy(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("cannot rename to {}: {e}", path.display()));
}

/// How to start one `zone-agent run` in a lab's gateway. The defaults are the lab's:
/// [`crate::agent_bin`], [`state_dir`], [`pin_dir`], [`METRICS_ADDR`], log `zone-agent`.
#[derive(Clone)]
pub struct Start<'a> {
    lab: &'a Lab,
    /// The agent binary.
    pub bin: PathBuf,
    /// `--policy`.
    pub policy: PathBuf,
    /// `--config`, if any.
    pub config: Option<PathBuf>,
    /// `--state-dir` (created before the start).
    pub state: PathBuf,
    /// `--pin-dir`.
    pub pins: PathBuf,
    /// `--metrics-addr`, inside the gateway.
    pub metrics: String,
    /// Run in front of the agent's argv (e.g. `setpriv …`, `prlimit … --`).
    pub wrapper: Vec<String>,
    /// The log's name in the lab dir.
    pub log: String,
    /// Bound for /metrics to answer.
    pub ready_within: Duration,
    /// How often /metrics is polled while waiting.
    pub poll: Duration,
}

/// Why [`Start::wait_ready`] gave up.
#[derive(Debug)]
pub enum NotReady {
    /// The agent exited before it served metrics.
    Exited(ExitStatus),
    /// /metrics did not answer within the bound.
    TimedOut(Duration),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(status) => {
                write!(f, "zone-agent exited ({status}) before serving metrics")
            }
            NotReady::TimedOut(bound) => write!(
                f,
                "zone-agent did not answer http://{METRICS_ADDR}/metrics within {bound:?}"
            ),
        }
    }
}

impl<'a> Start<'a> {
    /// The defaults, with `policy` as `--policy`.
    pub fn new(lab: &'a Lab, policy: &Path) -> Start<'a> {
        Start {
            lab,
            bin: crate::agent_bin(),
            policy: policy.to_owned(),
            config: None,
            state: state_dir(lab),
            pins: pin_dir(lab),
            metrics: METRICS_ADDR.to_owned(),
            wrapper: Vec::new(),
            log: "zone-agent".to_owned(),
            ready_within: AGENT_READY,
            poll: Duration::from_millis(100),
        }
    }

    /// Another agent binary.
    pub fn bin(mut self, bin: &Path) -> Self {
        bin.clone_into(&mut self.bin);
        self
    }

    /// A `--config` file.
    pub fn config(mut self, config: Option<&Path>) -> Self {
        self.config = config.map(Path::to_owned);
        self
    }

    /// The argv: the wrapper, then `<bin> run --policy … --metrics-addr … --state-dir …
    /// --pin-dir …` and `--config …` when set.
    pub fn argv(&self) -> Vec<String> {
        let s = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
        let mut argv = self.wrapper.clone();
        argv.extend([
            s(&self.bin),
            "run".into(),
            "--policy".into(),
            s(&self.policy),
            "--metrics-addr".into(),
            self.metrics.clone(),
            "--state-dir".into(),
            s(&self.state),
            "--pin-dir".into(),
            s(&self.pins),
        ]);
        if let Some(c) = &self.config {
            argv.extend(["--config".into(), s(c)]);
        }
        argv
    }

    /// Creates the state dir and spawns the agent in the gateway; does not wait.
    pub fn spawn(&self) -> ChildGuard {
        fs::create_dir_all(&self.state)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.state.display()));
        let argv = self.argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.lab
            .spawn(self.lab.gateway(), &argv, &self.lab.log_path(&self.log))
    }

    /// Polls /metrics until it answers (how long that took), the agent exits or the bound
    /// passes; `between` runs before each pause and may stop the wait (an interrupt).
    pub fn wait_ready<E>(
        &self,
        agent: &mut ChildGuard,
        mut between: impl FnMut() -> Result<(), E>,
    ) -> Result<Result<Duration, NotReady>, E> {
        let started = Instant::now();
        loop {
            if let Some(status) = agent.exited() {
                return Ok(Err(NotReady::Exited(status)));
            }
            if scrape::metrics(self.lab, self.lab.gateway(), &self.metrics).is_some() {
                return Ok(Ok(started.elapsed()));
            }
            if started.elapsed() > self.ready_within {
                return Ok(Err(NotReady::TimedOut(self.ready_within)));
            }
            between()?;
            std::thread::sleep(self.poll);
        }
    }

    /// Spawns the agent and returns once /metrics answers; panics with its log otherwise.
    pub fn run(&self) -> ChildGuard {
        let mut agent = self.spawn();
        let ready = self
            .wait_ready(&mut agent, || Ok::<(), std::convert::Infallible>(()))
            .unwrap_or_else(|never| match never {});
        match ready {
            Ok(_) => agent,
            Err(why) => panic!("{why}:\n{}", agent.log_text()),
        }
    }
}

/// One scrape of the agent's /metrics.
#[derive(Clone, Debug)]
pub struct Metrics(pub String);

/// Scrapes the agent of `lab`; panics if /metrics does not answer.
pub fn metrics(lab: &Lab) -> Metrics {
    match scrape::metrics(lab, lab.gateway(), METRICS_ADDR) {
        Some(text) => Metrics(text),
        None => panic!(
            "GET http://{METRICS_ADDR}/metrics in {} failed",
            lab.gateway()
        ),
    }
}

impl Metrics {
    /// Sum of the matching samples; 0 when none (a counter that never moved may be absent).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        scrape::metric_value(&self.0, name, labels).unwrap_or(0.0)
    }

    /// How much a counter moved from `before` to `self`.
    pub fn delta(&self, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels) - before.get(name, labels)
    }

    /// Every `zone_agent_*` counter that moved since `before` (for failure messages).
    pub fn changes(&self, before: &Metrics) -> String {
        let key = |s: &scrape::Sample| format!("{}{:?}", s.name, s.labels);
        let old: HashMap<String, f64> = before
            .0
            .lines()
            .filter_map(scrape::parse_sample)
            .map(|s| (key(&s), s.value))
            .collect();
        let mut out = String::new();
        for s in self.0.lines().filter_map(scrape::parse_sample) {
            let was = old.get(&key(&s)).copied().unwrap_or(0.0);
            if s.name.starts_with("zone_agent_") && s.value != was {
                out.push_str(&format!("  {}: {was} -> {}\n", key(&s), s.value));
            }
        }
        out
    }
}

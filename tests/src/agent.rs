//! The real agent in a lab: `zone-agent run` in the gateway namespace with a policy file, and
//! its Prometheus counters read over real HTTP.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::child::ChildGuard;
use crate::lab::Lab;
use crate::scrape;

/// Where the agent serves metrics, inside the gateway namespace (each lab has its own).
pub const METRICS_ADDR: &str = "127.0.0.1:9750";
/// Bound for the agent to load, attach and answer /metrics.
const AGENT_READY: Duration = Duration::from_secs(30);

/// Writes `policy` to `<lab dir>/policy.toml` and starts `zone-agent run` in the gateway with
/// the lab's own bpffs as pin dir and `<lab dir>/state` as state dir. Returns once /metrics
/// answers, which the agent only does after the policy is applied and attached.
pub fn start(lab: &Lab, policy: &str) -> ChildGuard {
    let path = lab.dir().join("policy.toml");
    fs::write(&path, policy).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    start_file(lab, &path)
}

/// `<lab dir>/state`: the state dir (and admin socket) of the agent [`start_file`] starts.
pub fn state_dir(lab: &Lab) -> std::path::PathBuf {
    lab.dir().join("state")
}

/// Starts `zone-agent run --policy <path>` in the gateway, as [`start`] does.
pub fn start_file(lab: &Lab, path: &Path) -> ChildGuard {
    start_bin(lab, &crate::agent_bin(), path)
}

/// [`start_file`] with another agent binary (an older build, for upgrade tests).
pub fn start_bin(lab: &Lab, bin: &Path, path: &Path) -> ChildGuard {
    let state = state_dir(lab);
    fs::create_dir_all(&state).expect("state dir");
    // `ip netns exec` remounts /sys: /sys/fs/bpf is no bpffs in there, the lab's own is.
    let pins = lab.bpffs().join("zone-agent");
    let s = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let argv = [
        s(bin),
        "run".into(),
        "--policy".into(),
        s(path),
        "--metrics-addr".into(),
        METRICS_ADDR.into(),
        "--state-dir".into(),
        s(&state),
        "--pin-dir".into(),
        s(&pins),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let gw = lab.gateway();
    let mut agent = lab.spawn(gw, &argv, &lab.log_path("zone-agent"));
    let started = Instant::now();
    while scrape::metrics(lab, gw, METRICS_ADDR).is_none() {
        if let Some(status) = agent.exited() {
            panic!(
                "zone-agent exited ({status}) before serving metrics:\n{}",
                agent.log_text()
            );
        }
        if started.elapsed() > AGENT_READY {
            panic!(
                "zone-agent did not answer /metrics within {AGENT_READY:?}:\n{}",
                agent.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
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

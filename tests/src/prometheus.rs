//! A real Prometheus (Debian's `prometheus`) in a lab namespace, configured from the shipped
//! `deploy/prometheus/` files, and its HTTP API read with curl from inside the namespace.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::child::ChildGuard;
use crate::deploy;
use crate::lab::Lab;

/// Where Prometheus listens, on the loopback of the namespace it runs in.
pub const ADDR: &str = "127.0.0.1:9090";
/// Bound for Prometheus to open its TSDB, load the rules and answer `/-/ready`.
pub const READY: Duration = Duration::from_secs(30);
/// Bound for one API call.
const CALL: Duration = Duration::from_secs(5);
/// The interval lines of the shipped configuration that [`lab_config`] rewrites.
const INTERVAL_KEYS: [&str; 2] = ["scrape_interval", "evaluation_interval"];

/// Copies the shipped configuration and rules into `dir` with the global scrape and rule
/// evaluation intervals set to `every` (a test cannot wait for 15 s scrapes); returns the
/// configuration's path. Panics if the shipped file no longer has those settings.
pub fn lab_config(dir: &Path, every: Duration) -> PathBuf {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let every = format!("{}ms", every.as_millis());
    let mut config = deploy::read(deploy::PROMETHEUS_CONFIG);
    for key in INTERVAL_KEYS {
        let line = config
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("{} has no {key} line", deploy::PROMETHEUS_CONFIG))
            .to_owned();
        let indent = &line[..line.len() - line.trim_start().len()];
        config = config.replacen(&line, &format!("{indent}{key}: {every}"), 1);
    }
    let path = dir.join("prometheus.yml");
    fs::write(&path, config).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    // rule_files is relative to the configuration: the rules go beside it, as shipped.
    let rules = deploy::path(deploy::RULES);
    let name = rules.file_name().expect("rules file name");
    fs::copy(&rules, dir.join(name))
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", rules.display(), dir.display()));
    path
}

/// A running Prometheus; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Prometheus<'a> {
    lab: &'a Lab,
    ns: String,
    child: ChildGuard,
}

impl<'a> Prometheus<'a> {
    /// Starts `prometheus --config.file <config>` in `ns` with its TSDB in the lab dir and
    /// returns once `/-/ready` answers; panics with its log if it exits or is not ready
    /// within [`READY`].
    pub fn start(lab: &'a Lab, ns: &str, config: &Path) -> Prometheus<'a> {
        let storage = lab.dir().join("prometheus-data");
        let args = [
            "prometheus".to_owned(),
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", storage.display()),
            format!("--web.listen-address={ADDR}"),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = lab.spawn(ns, &argv, &lab.log_path("prometheus"));
        let mut prom = Prometheus {
            lab,
            ns: ns.to_owned(),
            child,
        };
        prom.wait_ready();
        prom
    }

    fn wait_ready(&mut self) {
        let ready = crate::poll_until(READY, || {
            if let Some(status) = self.child.exited() {
                panic!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.child.log_text()
                );
            }
            self.http(&format!("http://{ADDR}/-/ready"), &[]).is_some()
        });
        if !ready {
            panic!(
                "prometheus did not answer /-/ready within {READY:?}:\n{}",
                self.child.log_text()
            );
        }
    }

    /// Prometheus' own log so far (for failure messages).
    pub fn log_text(&self) -> String {
        self.child.log_text()
    }

    /// `curl -G <url> --data-urlencode k=v…` in the namespace: the body of a 2xx answer.
    fn http(&self, url: &str, params: &[(&str, &str)]) -> Option<String> {
        let secs = format!("{:.3}", CALL.as_secs_f64());
        let mut argv = vec![
            "curl".to_owned(),
            "-sS".into(),
            "--fail".into(),
            "--max-time".into(),
            secs,
            "-G".into(),
            url.into(),
        ];
        for (k, v) in params {
            argv.extend(["--data-urlencode".to_owned(), format!("{k}={v}")]);
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self
            .lab
            .run_timeout(&self.ns, &argv, CALL + Duration::from_secs(2));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `GET /api/v1/<endpoint>`: its `data`; panics unless the answer is `"status":"success"`.
    pub fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> Value {
        let url = format!("http://{ADDR}/api/v1/{endpoint}");
        let body = self.http(&url, params).unwrap_or_else(|| {
            panic!(
                "GET {url} {params:?} failed (a bad query answers 400); prometheus log:\n{}",
                self.log_text()
            )
        });
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"));
        if v["status"] != "success" {
            panic!("GET {url} {params:?}: {body}");
        }
        v["data"].clone()
    }

    /// The samples of instant query `expr` (`data.result`, empty when it has no data).
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", expr)]);
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Every rule of every loaded group (`/api/v1/rules`).
    pub fn rules(&self) -> Vec<Value> {
        let data = self.api("rules", &[]);
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The active (pending or firing) alerts (`/api/v1/alerts`).
    pub fn alerts(&self) -> Vec<Value> {
        let data = self.api("alerts", &[]);
        data["alerts"].as_array().cloned().unwrap_or_default()
    }
}

/// The value of one sample of a query result (`"value": [time, "1.5"]`).
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The label `name` of one sample of a query result ("" when it has none).
pub fn sample_label<'v>(sample: &'v Value, name: &str) -> &'v str {
    sample["metric"][name].as_str().unwrap_or_default()
}

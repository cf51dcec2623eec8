//! The monitoring files under `deploy/`, checked without root by the tool Prometheus itself
//! ships (`promtool`, a prerequisite `cargo xtask setup` installs):
//! - the alert rules load (`promtool check rules`), every alert has a `promtool test rules`
//!   case where it fires and the cases pass, and every alert carries what a receiver shows;
//! - the example `prometheus.yml` is valid (`promtool check config`, which loads the rules);
//! - every PromQL expression of the Grafana dashboard and of its variables parses, once
//!   Grafana's variables are replaced (each written as a recording rule, `promtool check
//!   rules`); every panel uses the `datasource` variable and filters on `job` and
//!   `instance`; the dashboard shows every metric of SPEC §5 this issue names.
//!
//! That every dashboard query returns data from a real agent is `tests/tests/prometheus.rs`
//! (a lab test, root).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zone_agent_lab::deploy::{self, Dashboard, LabelValues, Values};

/// Labels and annotations every alert carries (a receiver's routing and its message).
const ALERT_LABELS: [&str; 1] = ["severity"];
const ALERT_ANNOTATIONS: [&str; 3] = ["summary", "summary_ja", "description"];
const SEVERITIES: [&str; 2] = ["critical", "warning"];

/// The metrics the dashboard must show (SPEC §5 and issue 15 part 6); `up` is Prometheus'
/// own, for the agent being down.
const DASHBOARD_METRICS: [&str; 17] = [
    "up",
    "zone_agent_packets_total",
    "zone_agent_bytes_total",
    "zone_agent_rule_packets_total",
    "zone_agent_rule_bytes_total",
    "zone_agent_rule_info",
    "zone_agent_drops_total",
    "zone_agent_map_entries",
    "zone_agent_map_capacity",
    "zone_agent_flows_active",
    "zone_agent_policy_reloads_total",
    "zone_agent_policy_generation",
    "zone_agent_policy_last_reload_timestamp_seconds",
    "zone_agent_events_total",
    "zone_agent_events_lost_total",
    "zone_agent_interface_attached",
    "zone_agent_build_info",
];

/// The Grafana dashboard schema this file is written for (Grafana 10.4/11).
const SCHEMA_VERSION: u64 = 39;

// === promtool ===

/// `promtool <args>` in `dir`; panics if promtool cannot run (it is a prerequisite).
fn promtool(dir: &Path, args: &[&str]) -> Output {
    Command::new("promtool")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): it is a prerequisite, install it with \
                 `cargo xtask setup` (Debian package prometheus)"
            )
        })
}

/// [`promtool`], panicking with its output unless it succeeded.
fn promtool_ok(dir: &Path, args: &[&str]) -> String {
    let out = promtool(dir, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`promtool {}` in {} failed ({}):\n{text}",
        args.join(" "),
        dir.display(),
        out.status
    );
    text
}

fn prometheus_dir() -> PathBuf {
    deploy::path(deploy::RULES)
        .parent()
        .expect("rules file has a directory")
        .to_owned()
}

fn file_name(rel: &str) -> String {
    Path::new(rel)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name")
        .to_owned()
}

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("za-deploy-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// === the rules files, as YAML ===

#[derive(Deserialize, Serialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize, Serialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize, Serialize, Default)]
struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    expr: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct TestFile {
    rule_files: Vec<String>,
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
struct TestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_yaml_ng::Value>,
}

fn alert_rules() -> Vec<Rule> {
    let file: RuleFile = serde_yaml_ng::from_str(&deploy::read(deploy::RULES))
        .unwrap_or_else(|e| panic!("{}: {e}", deploy::RULES));
    file.groups.into_iter().flat_map(|g| g.rules).collect()
}

// === alert rules ===

#[test]
fn alert_rules_load_in_promtool() {
    let out = promtool_ok(
        &prometheus_dir(),
        &["check", "rules", &file_name(deploy::RULES)],
    );
    let n = alert_rules().len();
    assert!(
        out.contains(&format!("SUCCESS: {n} rules found")),
        "promtool did not load all {n} rules:\n{out}"
    );
}

#[test]
fn every_alert_fires_in_a_promtool_test_and_the_tests_pass() {
    let tests: TestFile = serde_yaml_ng::from_str(&deploy::read(deploy::RULES_TEST))
        .unwrap_or_else(|e| panic!("{}: {e}", deploy::RULES_TEST));
    assert_eq!(
        tests.rule_files,
        [file_name(deploy::RULES)],
        "{} must test the shipped rules file",
        deploy::RULES_TEST
    );
    let cases: Vec<&AlertTest> = tests
        .tests
        .iter()
        .flat_map(|t| &t.alert_rule_test)
        .collect();
    let alerts: BTreeSet<String> = alert_rules().into_iter().filter_map(|r| r.alert).collect();
    let firing: BTreeSet<String> = cases
        .iter()
        .filter(|c| !c.exp_alerts.is_empty())
        .map(|c| c.alertname.clone())
        .collect();
    let untested: Vec<&String> = alerts.difference(&firing).collect();
    assert!(
        untested.is_empty(),
        "alerts without a case in {} where they fire: {untested:?}",
        deploy::RULES_TEST
    );
    let unknown: Vec<&String> = firing.difference(&alerts).collect();
    assert!(
        unknown.is_empty(),
        "{} expects alerts the rules do not have: {unknown:?}",
        deploy::RULES_TEST
    );
    let quiet: BTreeSet<&str> = cases
        .iter()
        .filter(|c| c.exp_alerts.is_empty())
        .map(|c| c.alertname.as_str())
        .collect();
    let never_quiet: Vec<&String> = alerts
        .iter()
        .filter(|a| !quiet.contains(a.as_str()))
        .collect();
    assert!(
        never_quiet.is_empty(),
        "alerts without a case where they stay quiet: {never_quiet:?}"
    );

    let out = promtool_ok(
        &prometheus_dir(),
        &["test", "rules", &file_name(deploy::RULES_TEST)],
    );
    assert!(out.contains("SUCCESS"), "promtool test rules:\n{out}");
}

#[test]
fn every_alert_has_a_severity_and_the_annotations_a_receiver_shows() {
    let rules = alert_rules();
    assert!(!rules.is_empty(), "{} has no rules", deploy::RULES);
    for rule in rules {
        let name = rule.alert.as_deref().unwrap_or("(a recording rule)");
        assert!(rule.alert.is_some(), "{name}: the file holds alerts only");
        for label in ALERT_LABELS {
            assert!(rule.labels.contains_key(label), "{name}: no label {label}");
        }
        let severity = rule.labels["severity"].as_str();
        assert!(
            SEVERITIES.contains(&severity),
            "{name}: severity {severity:?} is not one of {SEVERITIES:?}"
        );
        for key in ALERT_ANNOTATIONS {
            let text = rule.annotations.get(key).map(|s| s.trim()).unwrap_or("");
            assert!(!text.is_empty(), "{name}: no annotation {key}");
        }
    }
}

#[test]
fn example_prometheus_config_is_valid_and_loads_the_rules() {
    let out = promtool_ok(
        &prometheus_dir(),
        &["check", "config", &file_name(deploy::PROMETHEUS_CONFIG)],
    );
    assert!(
        out.contains(&file_name(deploy::RULES)) && out.contains("SUCCESS: 1 rule files found"),
        "the example configuration does not load {}:\n{out}",
        deploy::RULES
    );
    assert!(
        deploy::read(deploy::PROMETHEUS_CONFIG).contains(&format!("job_name: {}", deploy::JOB)),
        "the example configuration has no job {:?} (ZoneAgentDown and the dashboard use it)",
        deploy::JOB
    );
}

// === the dashboard ===

/// Values for Grafana's variables: any valid ones do for parsing.
fn values() -> Values {
    Values::new(
        "127.0.0.1:9750",
        Duration::from_secs(15),
        Duration::from_secs(6 * 3600),
    )
}

#[test]
fn every_dashboard_expression_parses() {
    let dash = Dashboard::load();
    let values = values();
    let mut rules = Vec::new();
    let mut names = Vec::new();
    for q in dash.queries() {
        assert!(!q.expr.trim().is_empty(), "{q}: empty expression");
        let expr = values
            .substitute(&q.expr)
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        names.push(format!("{} = {q}", q.record_name()));
        rules.push(Rule {
            record: Some(q.record_name()),
            expr,
            ..Rule::default()
        });
    }
    // The variables' `label_values(selector, label)`: the selector is PromQL too.
    for v in dash.variables().iter().filter(|v| v.kind == "query") {
        let lv = LabelValues::parse(&v.query)
            .unwrap_or_else(|| panic!("variable {}: not label_values(…): {}", v.name, v.query));
        let expr = values
            .substitute(&lv.selector)
            .unwrap_or_else(|e| panic!("variable {}: {e}", v.name));
        let record = format!("dashboard:variable_{}", v.name);
        names.push(format!("{record} = {}", v.query));
        rules.push(Rule {
            record: Some(record),
            expr,
            ..Rule::default()
        });
    }
    assert!(!rules.is_empty(), "{} has no queries", deploy::DASHBOARD);

    let n = rules.len();
    let file = RuleFile {
        groups: vec![Group {
            name: "dashboard".into(),
            rules,
        }],
    };
    let dir = TempDir::new("dashboard");
    let path = dir.0.join("dashboard.rules.yml");
    std::fs::write(&path, serde_yaml_ng::to_string(&file).expect("YAML"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let out = promtool(&dir.0, &["check", "rules", "dashboard.rules.yml"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(&format!("SUCCESS: {n} rules found")),
        "dashboard expressions that promtool rejects:\n{text}\nthe expressions:\n{}",
        names.join("\n")
    );
}

#[test]
fn dashboard_uses_its_variables_everywhere() {
    let dash = Dashboard::load();
    let schema = dash.0["schemaVersion"].as_u64().unwrap_or_default();
    assert!(
        schema >= SCHEMA_VERSION,
        "schemaVersion {schema} < {SCHEMA_VERSION}"
    );
    let vars = dash.variables();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("the dashboard has no variable {name}"))
    };
    let ds = var("datasource");
    assert_eq!(
        (ds.kind.as_str(), ds.query.as_str()),
        ("datasource", "prometheus")
    );
    for name in ["job", "instance"] {
        assert_eq!(var(name).kind, "query", "variable {name}");
    }

    let mut ids = BTreeSet::new();
    for p in dash.panels() {
        let title = p["title"].as_str().unwrap_or_default();
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} ({title}) is used twice");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: the panel's data source is not the variable"
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{title}: a target's data source is not the variable"
            );
        }
    }
    for q in dash.queries() {
        for var in ["$job", "$instance"] {
            assert!(q.expr.contains(var), "{q}: does not filter on {var}");
        }
    }
}

#[test]
fn dashboard_shows_every_metric_of_the_spec() {
    let dash = Dashboard::load();
    let exprs: Vec<String> = dash.queries().into_iter().map(|q| q.expr).collect();
    let used = |metric: &str| {
        exprs.iter().any(|e| {
            e.match_indices(metric).any(|(at, _)| {
                let next = e[at + metric.len()..].chars().next();
                let prev = e[..at].chars().next_back();
                let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !ident(prev) && !ident(next)
            })
        })
    };
    let missing: Vec<&str> = DASHBOARD_METRICS
        .iter()
        .copied()
        .filter(|m| !used(m))
        .collect();
    assert!(
        missing.is_empty(),
        "{} shows none of {missing:?}",
        deploy::DASHBOARD
    );
}

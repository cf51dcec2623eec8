//! What `/metrics` says about the agent itself (SPEC §5), checked the way monitoring uses it:
//! the build, each zone interface's XDP attachment as the kernel reports it (a link detached
//! behind the agent's back shows 0), the time of the last reload, each rule's zones and mode;
//! the exposition passes `promtool check metrics`; and scrapes keep answering within a second
//! while a policy of 100 000 rules loads.
//!
//! Needs root; `cargo xtask test` runs it under `unshare --mount --net`.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zone_agent::datapath::pin::Pins;
use zone_agent_lab::agent::{self, METRICS_ADDR, Metrics, pin_dir, write_policy};
use zone_agent_lab::fixture::ZONES;
use zone_agent_lab::{Lab, ThreeZones, scrape, wait_until};

/// Bound for a reload of a small policy to show.
const RELOAD_WAIT: Duration = Duration::from_secs(10);
/// What a scrape may take, whatever the agent is doing.
const SCRAPE_BOUND: Duration = Duration::from_secs(1);
/// How often the scraper asks during the large reload.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

const RULES: &str = r#"[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]

[[rules]]
name = "web-trial"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80"]
mode = "audit"
"#;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The `mode` label of the interface's one `zone_agent_interface_attached` sample, and its
/// value.
fn attachment(m: &Metrics, iface: &str) -> (String, f64) {
    let samples: Vec<_> =
        m.0.lines()
            .filter_map(scrape::parse_sample)
            .filter(|s| {
                s.name == "zone_agent_interface_attached"
                    && s.labels.iter().any(|(k, v)| k == "interface" && v == iface)
            })
            .collect();
    assert_eq!(samples.len(), 1, "one attachment sample for {iface}");
    let mode = samples[0]
        .labels
        .iter()
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.clone())
        .expect("mode label");
    (mode, samples[0].value)
}

#[test]
fn metrics_tell_build_attachment_reload_time_and_rule_modes() {
    let mut lab = Lab::new("metrics_agent_info");
    let _hosts = ThreeZones::add(&mut lab);
    let path = lab.dir().join("policy.toml");
    let started = unix_now();
    write_policy(&path, &ThreeZones::policy().rules(RULES).build());
    let _agent = agent::start_file(&lab, &path);
    let m = agent::metrics(&lab);
    scrape::promtool_check(&m.0).unwrap_or_else(|e| panic!("promtool check metrics:\n{e}"));

    assert_eq!(
        m.get(
            "zone_agent_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for z in ZONES {
        let (mode, value) = attachment(&m, z.iface);
        assert_eq!(value, 1.0, "{} attached", z.iface);
        assert!(mode == "native" || mode == "generic", "mode {mode}");
    }
    let loaded = m.get("zone_agent_policy_last_reload_timestamp_seconds", &[]);
    assert!(
        loaded >= started.floor() && loaded <= unix_now(),
        "last reload {loaded}, agent started at {started}"
    );
    let rule = |name: &str, mode: &str| {
        m.get(
            "zone_agent_rule_info",
            &[("rule", name), ("from_zone", "lgwan"), ("mode", mode)],
        )
    };
    assert_eq!(rule("relay-https", "enforce"), 1.0);
    assert_eq!(rule("web-trial", "audit"), 1.0);

    // A reload moves the timestamp (whole seconds: wait for the next one first).
    let next_second = loaded + 1.0;
    wait_until(Duration::from_secs(3), "the clock passes a second", || {
        unix_now() >= next_second
    });
    write_policy(
        &path,
        &ThreeZones::policy()
            .rules(&RULES.replace("web-trial", "web-trial-2"))
            .build(),
    );
    wait_until(RELOAD_WAIT, "the reload shows in the metrics", || {
        let m = agent::metrics(&lab);
        m.get("zone_agent_policy_generation", &[]) == 2.0
            && m.get("zone_agent_policy_last_reload_timestamp_seconds", &[]) >= next_second
            && m.get("zone_agent_rule_info", &[("rule", "web-trial-2")]) == 1.0
            && m.get("zone_agent_rule_info", &[("rule", "web-trial")]) == 0.0
    });

    // Detached behind the agent's back: the next scrape says so.
    let link = Pins::new(&pin_dir(&lab)).link(ZONES[0].iface);
    let out = Command::new("bpftool")
        .args(["link", "detach", "pinned"])
        .arg(&link)
        .output()
        .expect("bpftool runs");
    assert!(
        out.status.success(),
        "bpftool link detach pinned {}: {}",
        link.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = agent::metrics(&lab);
    assert_eq!(attachment(&m, ZONES[0].iface).1, 0.0, "{}", ZONES[0].iface);
    assert_eq!(attachment(&m, ZONES[1].iface).1, 1.0, "{}", ZONES[1].iface);
}

/// A policy of `n` rules lgwan → mynumber, one (protocol, port) each.
fn large_policy(n: u32) -> String {
    let mut rules = String::new();
    for i in 0..n {
        let protocol = if i % 2 == 0 { "tcp" } else { "udp" };
        rules.push_str(&format!(
            "[[rules]]\nname = \"bulk-{i}\"\nfrom = \"lgwan\"\nto = \"mynumber\"\nprotocol = \"{protocol}\"\nports = [\"{}\"]\n\n",
            10_000 + i / 2
        ));
    }
    // Not critical zones: no lint warning per rule.
    ThreeZones::policy()
        .rules(&rules)
        .build()
        .replace("criticality = \"critical\"", "criticality = \"low\"")
        .replace("criticality = \"high\"", "criticality = \"low\"")
}

#[test]
fn scrapes_answer_within_a_second_while_100_000_rules_load() {
    const RULES_N: u32 = 100_000;
    let mut lab = Lab::new("metrics_large_reload");
    let _hosts = ThreeZones::add(&mut lab);
    let path = lab.dir().join("policy.toml");
    write_policy(&path, &ThreeZones::policy().rules(RULES).build());
    let _agent = agent::start_file(&lab, &path);
    let url = format!("http://{METRICS_ADDR}/metrics");

    write_policy(&path, &large_policy(RULES_N));
    let t0 = Instant::now();
    let mut scrapes: Vec<Duration> = Vec::new();
    let mut reloaded = None;
    while reloaded.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "the {RULES_N}-rule policy did not load within 180 s"
        );
        let asked = Instant::now();
        let text = scrape::http_get(&lab, lab.gateway(), &url, SCRAPE_BOUND * 3);
        let took = asked.elapsed();
        let text = text.unwrap_or_else(|| {
            panic!(
                "a scrape failed after {took:?}, {:?} into the reload (earlier: {scrapes:?})",
                t0.elapsed()
            )
        });
        scrapes.push(took);
        if scrape::metric_value(&text, "zone_agent_policy_generation", &[]) == Some(2.0) {
            reloaded = Some(t0.elapsed());
        }
        std::thread::sleep(SCRAPE_EVERY.saturating_sub(took));
    }
    let worst = scrapes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{RULES_N}-rule reload enforcing after {:?}; {} scrapes meanwhile, worst {worst:?}",
        reloaded.unwrap(),
        scrapes.len()
    );
    assert!(
        scrapes.len() >= 5,
        "the reload was too quick to prove anything ({} scrapes)",
        scrapes.len()
    );
    assert!(
        worst < SCRAPE_BOUND,
        "a scrape took {worst:?} during the reload: {scrapes:?}"
    );
    // The page's JSON answers too, with every rule.
    let overview = scrape::http_get(
        &lab,
        lab.gateway(),
        &format!("http://{METRICS_ADDR}/api/v1/overview"),
        SCRAPE_BOUND * 5,
    )
    .expect("overview answers");
    let o: serde_json::Value = serde_json::from_str(&overview).expect("JSON");
    assert_eq!(o["rules_total"].as_u64(), Some(u64::from(RULES_N)));
    let shown = o["rules"].as_array().map_or(0, Vec::len);
    assert!(
        shown > 0 && shown < RULES_N as usize,
        "{shown} rules in the overview"
    );
}

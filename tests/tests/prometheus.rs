//! The shipped monitoring (`deploy/`) against the real agent: a real Prometheus, configured
//! from `deploy/prometheus/prometheus.yml` (only the intervals shortened to 1 s) with the
//! shipped alert rules, scrapes `zone-agent run` in the lab gateway while the test sends
//! allowed, denied and audited traffic. Then, as an operator opening the Grafana dashboard
//! would see it:
//! - the dashboard's variables find the agent's job and instance;
//! - every query of the dashboard (Grafana's variables replaced as Grafana would) returns
//!   data, and the zone matrix shows the test's allowed and denied connections in their cells;
//! - every series the alert rules watch is exported from the start (at 0 for counters);
//! - the alert rules are loaded and evaluate without error, and none fires for a healthy
//!   agent; a refused reload fires ZoneAgentReloadFailing, and once the agent is stopped,
//!   ZoneAgentDown becomes pending.
//!
//! Needs root; `cargo xtask test` runs it under `unshare --mount --net`.

use std::time::Duration;

use serde_json::Value;
use zone_agent_common::{
    DropReason, LABEL_EMBRYOS, LABEL_FLOWS, LOST_AGENT_QUEUE, LOST_FLOW_LOG, LOST_RATE_LIMITED,
    LOST_RING_FULL, LOST_UNDECODABLE,
};
use zone_agent_lab::agent::{self, METRICS_ADDR, write_policy};
use zone_agent_lab::deploy::{self, Dashboard, JOB, LabelValues, Query, Values};
use zone_agent_lab::fixture::ZONES;
use zone_agent_lab::prometheus::{self, Prometheus, sample_label, sample_value};
use zone_agent_lab::{
    Lab, Signal, ThreeZones, poll_until, tcp_connect, tcp_listen, udp_echo, udp_exchange,
    wait_until,
};

/// Scrape and rule-evaluation interval of the lab's Prometheus.
const SCRAPE: Duration = Duration::from_secs(1);
/// The dashboard's time range (`$__range`): longer than the test, so it covers all traffic.
const RANGE: Duration = Duration::from_secs(300);
/// Bound for a few scrapes and rule evaluations to happen.
const SCRAPES: Duration = Duration::from_secs(15);
/// Bound for a refused reload to be counted, scraped and fire ZoneAgentReloadFailing.
const RELOAD_NOTICED: Duration = Duration::from_secs(10);
/// Bound for ZoneAgentDown to be pending after the agent stops (a scrape fails, then a rule
/// evaluation sees `up == 0`).
const DOWN_NOTICED: Duration = Duration::from_secs(10);
/// Per connection attempt that should succeed / fail.
const T: Duration = Duration::from_secs(3);
const T_FAIL: Duration = Duration::from_millis(700);

const HTTPS: u16 = 443;
const NTP: u16 = 123;
/// The dashboard's zone-matrix panels.
const ALLOWED_MATRIX: &str = "Allowed packets, from → to (range)";
const DENIED_MATRIX: &str = "Denied packets, from → to (range)";

/// One allowed rule (lgwan → mynumber HTTPS) and one in audit mode (lgwan → internet NTP).
const RULES: &str = r#"[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]

[[rules]]
name = "ntp-trial"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["123"]
mode = "audit"
"#;

#[test]
fn prometheus_scrapes_the_agent_and_every_dashboard_query_has_data() {
    let mut lab = Lab::new("prometheus");
    let ThreeZones { my, lg, inet } = ThreeZones::add(&mut lab);
    let mut agent = agent::start(&lab, &ThreeZones::policy().rules(RULES).build());
    let config = prometheus::lab_config(&lab.dir().join("prometheus"), SCRAPE);
    let prom = Prometheus::start(&lab, lab.gateway(), &config);
    let dash = Dashboard::load();
    let values = Values::new(METRICS_ADDR, SCRAPE, RANGE);

    // increase() over the range only counts what happens after Prometheus' first sample of a
    // series: wait for the agent's series before the traffic.
    wait_until(SCRAPES, "Prometheus has scraped the agent", || {
        !prom
            .query(&format!("zone_agent_policy_generation{{job=\"{JOB}\"}}"))
            .is_empty()
    });

    let _https = tcp_listen(&lab, &my, HTTPS, false);
    let _ntp = udp_echo(&lab, &inet, NTP, false);
    let send = || {
        assert!(
            tcp_connect(&lab, &lg, my.v4, HTTPS, None, T),
            "lgwan -> mynumber:443 (relay-https) must pass"
        );
        assert!(
            !tcp_connect(&lab, &inet, my.v4, HTTPS, None, T_FAIL),
            "internet -> mynumber:443 must be denied"
        );
        assert_eq!(
            udp_exchange(&lab, &lg, inet.v4, NTP, 1, None, T),
            1,
            "lgwan -> internet:123 (ntp-trial, audit) must pass"
        );
    };
    // A zone pair's counter only exists from its first packet, and increase() cannot count
    // the sample a series is born with: a first round creates the series, the second is
    // what the matrix must show.
    send();
    wait_until(SCRAPES, "Prometheus has the denied zone pair", || {
        !prom
            .query(r#"zone_agent_packets_total{from_zone="internet", to_zone="mynumber", verdict="deny"}"#)
            .is_empty()
    });
    send();

    variables_find_the_agent(&prom, &dash, &values);
    wait_until(SCRAPES, "the zone matrix shows the connections", || {
        matrix_cell(&prom, &dash, &values, ALLOWED_MATRIX, "lgwan", "mynumber") >= 1.0
            && matrix_cell(&prom, &dash, &values, DENIED_MATRIX, "internet", "mynumber") >= 1.0
    });
    // Reported together at the end, so one run lists everything that is missing.
    let mut missing: Vec<String> = queries_without_data(&prom, &dash, &values)
        .iter()
        .map(|q| format!("no data: {q}"))
        .collect();
    missing.extend(alert_inputs_missing(&prom));
    for m in &missing {
        eprintln!("MISSING {m}");
    }

    rules_are_loaded_and_healthy(&prom);
    let active = prom.alerts();
    assert!(
        active.is_empty(),
        "a healthy agent with a little traffic raised alerts: {active:#?}"
    );

    // A policy the agent refuses: the real counter's label fires the real rule.
    write_policy(&lab.dir().join("policy.toml"), "version = 1\nzones = 7\n");
    agent.signal(Signal::SIGHUP);
    wait_for_alert(&prom, "ZoneAgentReloadFailing", "firing", RELOAD_NOTICED);

    agent.stop();
    wait_for_alert(&prom, "ZoneAgentDown", "pending", DOWN_NOTICED);

    assert!(
        missing.is_empty(),
        "{} things the dashboard or the alerts need were missing (listed above); the first: {}",
        missing.len(),
        missing[0]
    );
}

/// Polls `/api/v1/alerts` until `alert` of the lab's agent is in `state`; panics after `within`.
fn wait_for_alert(prom: &Prometheus, alert: &str, state: &str, within: Duration) {
    let seen = poll_until(within, || {
        prom.alerts().iter().any(|a| {
            a["labels"]["alertname"] == alert
                && a["labels"]["instance"] == METRICS_ADDR
                && a["state"] == state
        })
    });
    assert!(
        seen,
        "{alert} is not {state} after {within:?}; alerts: {:#?}",
        prom.alerts()
    );
}

/// The series the alert rules watch that the agent does not export yet. An `increase()`
/// cannot count the sample a series is born with, so a counter that only appears with its
/// first event would never fire its alert for that event: every label value an alert
/// watches must be exported (at 0) from the start, and the gauges must be there.
fn alert_inputs_missing(prom: &Prometheus) -> Vec<String> {
    let mut wanted = vec![
        // ZoneAgentReloadFailing; the label value is the agent's (telemetry/metrics.rs).
        r#"zone_agent_policy_reloads_total{result="error"}"#.to_owned(),
        format!(
            r#"zone_agent_drops_total{{reason="{}"}}"#,
            DropReason::TableFull.label()
        ),
    ];
    for stage in [
        LOST_RATE_LIMITED,
        LOST_RING_FULL,
        LOST_AGENT_QUEUE,
        LOST_FLOW_LOG,
        LOST_UNDECODABLE,
    ] {
        wanted.push(format!(
            r#"zone_agent_events_lost_total{{stage="{stage}"}}"#
        ));
    }
    for map in [LABEL_FLOWS, LABEL_EMBRYOS] {
        wanted.push(format!(r#"zone_agent_map_entries{{map="{map}"}}"#));
        wanted.push(format!(r#"zone_agent_map_capacity{{map="{map}"}} > 0"#));
    }
    for zone in ZONES {
        wanted.push(format!(
            r#"zone_agent_interface_attached{{interface="{}"}} == 1"#,
            zone.iface
        ));
    }
    wanted
        .into_iter()
        .filter(|expr| prom.query(expr).is_empty())
        .map(|expr| format!("alert input: {expr}"))
        .collect()
}

/// `label_values(selector, label)` of each query variable, as Grafana asks it
/// (`/api/v1/series`): the job variable offers [`JOB`], the instance variable the agent.
fn variables_find_the_agent(prom: &Prometheus, dash: &Dashboard, values: &Values) {
    for v in dash.variables().iter().filter(|v| v.kind == "query") {
        let lv = LabelValues::parse(&v.query)
            .unwrap_or_else(|| panic!("variable {}: not label_values(…): {}", v.name, v.query));
        let selector = values.substitute(&lv.selector).expect("known variables");
        let series = prom.api("series", &[("match[]", &selector)]);
        let offered: Vec<&str> = series
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s[lv.label.as_str()].as_str())
            .collect();
        let expected = match lv.label.as_str() {
            "job" => JOB,
            "instance" => METRICS_ADDR,
            other => panic!("variable {}: no expectation for label {other}", v.name),
        };
        assert!(
            offered.contains(&expected),
            "variable {} ({selector}) offers {offered:?}, not {expected:?}",
            v.name
        );
    }
}

/// The value in row `from`, column `to` of a zone-matrix panel: its query's sample with
/// those labels (the panel's groupingToMatrix transformation lays them out); 0 if absent.
fn matrix_cell(
    prom: &Prometheus,
    dash: &Dashboard,
    values: &Values,
    title: &str,
    from: &str,
    to: &str,
) -> f64 {
    let expr = values
        .substitute(&dash.query(title).expr)
        .expect("known variables");
    prom.query(&expr)
        .iter()
        .find(|s| sample_label(s, "from_zone") == from && sample_label(s, "to_zone") == to)
        .map_or(0.0, sample_value)
}

/// The dashboard queries that still return no data after [`SCRAPES`] (each polled until it
/// has some, so `rate()` windows have their two samples).
fn queries_without_data(prom: &Prometheus, dash: &Dashboard, values: &Values) -> Vec<Query> {
    let mut pending = dash.queries();
    assert!(!pending.is_empty(), "{} has no queries", deploy::DASHBOARD);
    poll_until(SCRAPES, || {
        pending.retain(|q| {
            let expr = values
                .substitute(&q.expr)
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            prom.query(&expr).is_empty()
        });
        pending.is_empty()
    });
    pending
}

/// Every alert of the shipped rules file is loaded and has been evaluated without error.
fn rules_are_loaded_and_healthy(prom: &Prometheus) {
    let shipped = deploy::read(deploy::RULES).matches("- alert:").count();
    let mut rules: Vec<Value> = Vec::new();
    let healthy = poll_until(SCRAPES, || {
        rules = prom.rules();
        rules.len() == shipped
            && rules.iter().all(|r| {
                r["health"] == "ok"
                    && !r["lastEvaluation"]
                        .as_str()
                        .unwrap_or("0001")
                        .starts_with("0001")
            })
    });
    assert!(
        healthy,
        "Prometheus did not load and evaluate the {shipped} alerts of {} without error: {rules:#?}",
        deploy::RULES
    );
}

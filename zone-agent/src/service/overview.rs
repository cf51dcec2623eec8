//! `GET /api/v1/overview`: what the operator's page shows, as one JSON document read from
//! the same [`Figures`] as `/metrics` (so the page and Prometheus agree).
//!
//! Counters are totals since the agent first ran (like the metrics): the page computes rates
//! from two successive answers (`time_ms` apart). Field names are the metrics' label names.

use std::collections::BTreeMap;

use serde::Serialize;
use zone_agent_common::DropReason;

use crate::{
    events::Record,
    telemetry::{PolicyInfo, RuleInfo, Telemetry, ZoneInfo, figures::Figures, unix_ms},
};

/// Denied (and audited) attempts returned, newest first.
pub const RECENT_SHOWN: usize = 50;
/// Rules returned at most: a larger policy's rules with the most packets (in policy order),
/// so that a browser refreshing every 2 s is not handed 100 000 rows.
pub const RULES_SHOWN: usize = 1000;

#[derive(Serialize)]
pub struct Overview<'a> {
    /// When this was read, ms since the Unix epoch (the page's clock for rates).
    pub time_ms: u64,
    pub agent: AgentInfo,
    pub zones: &'a [ZoneInfo],
    /// One cell per (from_zone, to_zone, verdict) with traffic, including the pseudo-zone
    /// `none` (addresses of no zone) and zones of earlier policies.
    pub matrix: Vec<Cell<'a>>,
    /// In policy order; at most [`RULES_SHOWN`] (those with the most packets).
    pub rules: Vec<RuleFigures<'a>>,
    /// Rules in the policy.
    pub rules_total: usize,
    /// Newest first: the last denied and audited attempts (from the event stream).
    pub recent_denied: Vec<Record>,
    pub health: Health<'a>,
}

#[derive(Serialize)]
pub struct AgentInfo {
    pub version: &'static str,
    /// The policy's global mode: `enforce` | `audit`.
    pub mode: &'static str,
    pub generation: u32,
    /// 0: no successful load yet.
    pub last_reload_unix_ms: u64,
    pub reloads_ok: u64,
    pub reloads_error: u64,
}

#[derive(Serialize)]
pub struct Cell<'a> {
    pub from_zone: &'a str,
    pub to_zone: &'a str,
    /// `allow` | `deny` | `audit`.
    pub verdict: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct RuleFigures<'a> {
    #[serde(flatten)]
    pub rule: &'a RuleInfo,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct Health<'a> {
    pub flows_active: u64,
    pub maps: Vec<MapFill>,
    pub interfaces: Vec<InterfaceFigures<'a>>,
    /// Packets dropped, by reason (`zone_agent_drops_total`).
    pub drops: BTreeMap<&'static str, u64>,
    /// Events delivered and lost; `None` while the agent reads no events (shown as n/a).
    pub events: Option<EventHealth>,
}

#[derive(Serialize)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Serialize)]
pub struct InterfaceFigures<'a> {
    pub interface: &'a str,
    pub mode: &'static str,
    pub attached: bool,
}

/// `zone_agent_events_total{kind}` and `zone_agent_events_lost_total{stage}`, by label.
#[derive(Serialize, Default)]
pub struct EventHealth {
    pub total: BTreeMap<String, u64>,
    pub lost: BTreeMap<String, u64>,
}

/// The overview of `f` (read with `t`), with `recent` denials and `events` figures if any.
pub fn build<'a>(
    f: &'a Figures,
    t: &'a Telemetry,
    recent: Vec<Record>,
    events: Option<EventHealth>,
) -> Overview<'a> {
    let policy: &PolicyInfo = &t.policy;
    Overview {
        time_ms: unix_ms(),
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION"),
            mode: policy.mode,
            generation: t.generation,
            last_reload_unix_ms: t.last_reload_unix_ms,
            reloads_ok: t.reloads_ok,
            reloads_error: t.reloads_error,
        },
        zones: &policy.zones,
        matrix: f
            .totals
            .zones
            .iter()
            .map(|((from, to, verdict), c)| Cell {
                from_zone: from,
                to_zone: to,
                verdict,
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect(),
        rules: busiest_rules(f, policy),
        rules_total: policy.rules.len(),
        recent_denied: recent,
        health: Health {
            flows_active: f.flows_active,
            maps: f
                .usage
                .iter()
                .map(|(map, entries, capacity)| MapFill {
                    map,
                    entries: *entries,
                    capacity: *capacity,
                })
                .collect(),
            interfaces: f
                .interfaces
                .iter()
                .map(|i| InterfaceFigures {
                    interface: &i.interface,
                    mode: i.mode,
                    attached: i.attached,
                })
                .collect(),
            drops: f
                .global
                .drops
                .iter()
                .map(|(r, c)| (DropReason::label(*r), c.packets))
                .collect(),
            events,
        },
    }
}

/// The policy's rules with their counters: all of them, or the [`RULES_SHOWN`] with the most
/// packets, still in policy order.
fn busiest_rules<'a>(f: &Figures, policy: &'a PolicyInfo) -> Vec<RuleFigures<'a>> {
    let mut rules: Vec<(usize, RuleFigures<'a>)> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = f.totals.rules.get(&r.name).copied().unwrap_or_default();
            let figures = RuleFigures {
                rule: r,
                packets: c.packets,
                bytes: c.bytes,
            };
            (i, figures)
        })
        .collect();
    if rules.len() > RULES_SHOWN {
        rules.sort_by_key(|(i, r)| (std::cmp::Reverse(r.packets), *i));
        rules.truncate(RULES_SHOWN);
        rules.sort_by_key(|(i, _)| *i);
    }
    rules.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zone_agent_common::Counter;

    use super::*;
    use crate::telemetry::{Totals, figures::InterfaceState};

    fn rule(name: &str) -> RuleInfo {
        RuleInfo {
            name: name.into(),
            description: None,
            from_zone: "lgwan".into(),
            to_zone: "mynumber".into(),
            protocol: "tcp",
            ports: vec!["443".into()],
            mode: "enforce",
        }
    }

    fn figures(rules: &[(&str, u64)]) -> Figures {
        let mut totals = Totals::default();
        totals.zones.insert(
            ("lgwan".into(), "mynumber".into(), "deny"),
            Counter {
                packets: 2,
                bytes: 120,
            },
        );
        for (name, packets) in rules {
            totals.rules.insert(
                (*name).into(),
                Counter {
                    packets: *packets,
                    bytes: packets * 100,
                },
            );
        }
        Figures {
            totals,
            global: Default::default(),
            usage: vec![("rules", 3, 10)],
            flows_active: 1,
            flow_events: Vec::new(),
            embryo_evictions: 0,
            kernel_events: Default::default(),
            interfaces: vec![InterfaceState {
                interface: "zmyn".into(),
                mode: "native",
                attached: true,
            }],
        }
    }

    #[test]
    fn the_json_carries_matrix_rules_and_health_under_stable_names() {
        let t = Telemetry {
            generation: 4,
            policy: Arc::new(PolicyInfo {
                mode: "enforce",
                zones: Vec::new(),
                rules: vec![rule("a"), rule("b")],
            }),
            ..Default::default()
        };
        let f = figures(&[("a", 5)]);
        let v = serde_json::to_value(build(&f, &t, Vec::new(), None)).unwrap();
        assert_eq!(v["agent"]["generation"], 4);
        assert_eq!(
            v["matrix"][0],
            serde_json::json!({"from_zone": "lgwan", "to_zone": "mynumber", "verdict": "deny", "packets": 2, "bytes": 120})
        );
        assert_eq!(v["rules"][0]["name"], "a");
        assert_eq!(v["rules"][0]["packets"], 5);
        assert_eq!(v["rules"][1]["packets"], 0);
        assert_eq!(v["rules_total"], 2);
        assert_eq!(v["health"]["events"], serde_json::Value::Null);
        assert_eq!(v["health"]["interfaces"][0]["attached"], true);
        assert_eq!(v["health"]["maps"][0]["capacity"], 10);
    }

    #[test]
    fn a_large_policy_shows_its_busiest_rules_in_policy_order() {
        let names: Vec<String> = (0..RULES_SHOWN + 5).map(|i| format!("r{i}")).collect();
        let t = Telemetry {
            policy: Arc::new(PolicyInfo {
                mode: "enforce",
                zones: Vec::new(),
                rules: names.iter().map(|n| rule(n)).collect(),
            }),
            ..Default::default()
        };
        let last = names.last().unwrap().clone();
        let f = figures(&[(&last, 9), ("r3", 1)]);
        let shown = busiest_rules(&f, &t.policy);
        assert_eq!(shown.len(), RULES_SHOWN);
        assert_eq!(shown.last().unwrap().rule.name, last);
        assert_eq!(shown[0].rule.name, "r0");
        assert!(shown.iter().any(|r| r.rule.name == "r3"));
    }
}

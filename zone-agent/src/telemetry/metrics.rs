//! Every Prometheus name the agent exports, defined here only.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::{collections::BTreeMap, fmt::Write as _, sync::atomic::Ordering};

use zone_agent_common::{Counter, DropReason, LABEL_EMBRYOS, LABEL_FLOWS, PassReason};

use super::{EVENTS, Telemetry, figures::Figures};
use crate::datapath::{DatapathError, stats::View};

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// Reads the counters ([`super::figures::gather`]) and renders them as Prometheus text.
pub fn render(dp: &View<'_>, t: &Telemetry) -> Result<String, DatapathError> {
    Ok(render_figures(&super::figures::gather(dp, t)?, t))
}

/// Renders `f` (and what `t` knows beyond the maps) as Prometheus text.
pub fn render_figures(f: &Figures, t: &Telemetry) -> String {
    let totals = &f.totals;
    let global = &f.global;
    let reg = Registry::new();

    let packets = counter(
        &reg,
        "zone_agent_packets_total",
        "Packets decided, by source zone, destination zone and verdict.",
        &["from_zone", "to_zone", "verdict"],
    );
    let bytes = counter(
        &reg,
        "zone_agent_bytes_total",
        "Bytes decided, by source zone, destination zone and verdict.",
        &["from_zone", "to_zone", "verdict"],
    );
    for ((from, to, v), c) in &totals.zones {
        packets.with_label_values(&[from, to, v]).inc_by(c.packets);
        bytes.with_label_values(&[from, to, v]).inc_by(c.bytes);
    }
    let drops = counter(
        &reg,
        "zone_agent_drops_total",
        "Packets dropped, by reason.",
        &["reason"],
    );
    for (r, c) in &global.drops {
        drops
            .with_label_values(&[DropReason::label(*r)])
            .inc_by(c.packets);
    }
    let audit = counter(
        &reg,
        "zone_agent_audit_passes_total",
        "Packets audit mode passed that enforcement would drop, by reason.",
        &["reason"],
    );
    for (r, c) in &global.audit_drops {
        audit
            .with_label_values(&[DropReason::label(*r)])
            .inc_by(c.packets);
    }
    let passes = counter(
        &reg,
        "zone_agent_passes_total",
        "Packets passed, by reason.",
        &["reason"],
    );
    for (r, c) in &global.passes {
        passes
            .with_label_values(&[PassReason::label(*r)])
            .inc_by(c.packets);
    }
    let usage = &f.usage;
    let entries = gauge(
        &reg,
        "zone_agent_map_entries",
        "Entries in a data-path table (both policy sets).",
        &["map"],
    );
    let capacity = gauge(
        &reg,
        "zone_agent_map_capacity",
        "Capacity of a data-path table.",
        &["map"],
    );
    for (name, n, cap) in usage {
        entries.with_label_values(&[name]).set(*n as i64);
        capacity.with_label_values(&[name]).set(*cap as i64);
    }
    let flows = single(
        &reg,
        "zone_agent_flows_active",
        "Flows in the flow tables (replied and embryonic).",
    );
    flows.set(f.flows_active as i64);
    let fe = counter(
        &reg,
        "zone_agent_flow_events_total",
        "Flow-table events: opened (embryonic), promoted (first reply), promotion_refused (replied table full), open_refused (insert failed, dropped table_full), embryo_removed (expired/revoked in the data path), embryo_expired (removed by the expiry sweep), reset (a RST shortened a flow's life).",
        &["event"],
    );
    for (e, n) in &f.flow_events {
        fe.with_label_values(&[e.label()]).inc_by(*n);
    }
    let evictions = counter(
        &reg,
        "zone_agent_flow_evictions_total",
        "Flows evicted to make room for new ones, by table (only embryonic flows are ever evicted).",
        &["map"],
    );
    evictions
        .with_label_values(&[LABEL_EMBRYOS])
        .inc_by(f.embryo_evictions);
    evictions.with_label_values(&[LABEL_FLOWS]).inc_by(0);
    let generation = single(
        &reg,
        "zone_agent_policy_generation",
        "Generation of the enforcing policy (1 = first load).",
    );
    generation.set(t.generation as i64);
    let reloads = counter(
        &reg,
        "zone_agent_policy_reloads_total",
        "Policy reloads, by result.",
        &["result"],
    );
    reloads.with_label_values(&["success"]).inc_by(t.reloads_ok);
    reloads
        .with_label_values(&["error"])
        .inc_by(t.reloads_error);

    let fail_open = single(
        &reg,
        "zone_agent_fail_open_on_exit",
        "1 if the agent detaches XDP when it exits (the zone gates open while it is down); 0 if enforcement outlives it.",
    );
    fail_open.set(i64::from(t.fail_open_on_exit));

    let refused = counter(
        &reg,
        "zone_agent_connections_refused_total",
        "Connections closed on accept because the listener already served its maximum (a local user flooding it), by listener.",
        &["listener"],
    );
    for (listener, n) in super::refused_connections() {
        refused.with_label_values(&[listener]).inc_by(n);
    }

    event_metrics(&reg, f);
    agent_info(&reg, f, t);

    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&reg.gather(), &mut buf)
        .expect("encode to memory");
    let mut text = String::from_utf8(buf).expect("prometheus text is UTF-8");
    per_rule(&mut text, f, t);
    text
}

/// The families with one sample per rule, written as text directly: the registry clones and
/// sorts every sample it gathers, which takes seconds for a policy of 100 000 rules.
fn per_rule(out: &mut String, f: &Figures, t: &Telemetry) {
    // Every rule of the enforcing policy appears, also at zero, so dashboards see unused
    // rules; rules of earlier policies appear with what they counted.
    let mut counts: BTreeMap<&str, Counter> = t
        .policy
        .rules
        .iter()
        .map(|r| (r.name.as_str(), Counter::default()))
        .collect();
    for (rule, c) in &f.totals.rules {
        counts.insert(rule, *c);
    }
    let packets = Family::new(
        out,
        "zone_agent_rule_packets_total",
        "counter",
        "Packets counted to a rule (first matching rule in file order), both directions of its flows. An audit rule counts the traffic it passed on trial.",
    );
    for (rule, c) in &counts {
        packets.sample(out, &[("rule", rule)], c.packets);
    }
    let bytes = Family::new(
        out,
        "zone_agent_rule_bytes_total",
        "counter",
        "Bytes counted to a rule, both directions of its flows.",
    );
    for (rule, c) in &counts {
        bytes.sample(out, &[("rule", rule)], c.bytes);
    }
    let info = Family::new(
        out,
        "zone_agent_rule_info",
        "gauge",
        "Always 1 per rule of the enforcing policy: its zones and its own mode (audit: its traffic passes counted with verdict audit, a trial).",
    );
    for r in &t.policy.rules {
        info.sample(
            out,
            &[
                ("rule", &r.name),
                ("from_zone", &r.from_zone),
                ("to_zone", &r.to_zone),
                ("mode", r.mode),
            ],
            1,
        );
    }
}

/// One metric family in the Prometheus text format (version 0.0.4).
struct Family {
    name: &'static str,
}

impl Family {
    /// Writes the family's `# HELP` and `# TYPE` lines.
    fn new(out: &mut String, name: &'static str, kind: &str, help: &str) -> Family {
        let _ = writeln!(
            out,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { name }
    }

    fn sample(&self, out: &mut String, labels: &[(&str, &str)], value: u64) {
        out.push_str(self.name);
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(out, v);
            out.push('"');
        }
        let _ = writeln!(out, "}} {value}");
    }
}

/// A label value as the text format quotes it: backslash, double quote and newline escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A gauge without labels, registered.
fn single(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// What the agent is and runs: build, interfaces, last reload.
fn agent_info(reg: &Registry, f: &Figures, t: &Telemetry) {
    gauge(
        reg,
        "zone_agent_build_info",
        "Always 1; the agent's version as a label.",
        &["version"],
    )
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);

    let attached = gauge(
        reg,
        "zone_agent_interface_attached",
        "1 if the agent's XDP program runs at the zone interface now (asked of the kernel at each scrape; mode as the kernel reports it), 0 if not (detached or replaced behind the agent's back; mode as the agent attached it).",
        &["interface", "mode"],
    );
    for i in &f.interfaces {
        attached
            .with_label_values(&[&i.interface, i.mode])
            .set(i64::from(i.attached));
    }

    // Seconds as a float would need a second gauge type; whole seconds are what alerts use.
    single(
        reg,
        "zone_agent_policy_last_reload_timestamp_seconds",
        "Unix time of the last successful policy load or reload (0: none yet).",
    )
    .set((t.last_reload_unix_ms / 1000) as i64);
}

/// The event stream's counters: what the kernel emitted (`kernel`: a `ZA_EVSTATS` slot
/// summed over CPUs) and the agent's own, every label present (0 included).
fn event_metrics(reg: &Registry, f: &Figures) {
    let (produced, lost_by_stage) = super::event_counts(&f.kernel_events);
    let total = counter(
        reg,
        "zone_agent_events_total",
        "Decision events produced, by kind: written to the event ring by the data path (deny, audit, flow_open, flow_end), plus flow_end for the flows the agent's expiry sweep removed. Events lost after that are in zone_agent_events_lost_total.",
        &["kind"],
    );
    for (kind, n) in produced {
        total.with_label_values(&[kind]).inc_by(n);
    }
    let lost = counter(
        reg,
        "zone_agent_events_lost_total",
        "Decision events not delivered, by stage: rate_limited (refused by the data path's per-CPU budget, never written), ring_full (no room in the event ring), agent_queue (the agent's queue behind the ring reader was full), undecodable (a record the agent could not read), flow_log (not written to the flow log; the other consumers got it).",
        &["stage"],
    );
    for (stage, n) in lost_by_stage {
        lost.with_label_values(&[stage]).inc_by(n);
    }
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let clients = IntGauge::new(
        "zone_agent_observe_clients",
        "zone-agent observe clients connected to the admin socket.",
    )
    .expect("valid");
    reg.register(Box::new(clients.clone())).expect("unique");
    clients.set(load(&EVENTS.observe_clients) as i64);
    let dropped = IntCounter::new(
        "zone_agent_observe_clients_dropped_total",
        "zone-agent observe clients disconnected because they did not keep up (their queue filled, or a line could not be written to them in time).",
    )
    .expect("valid");
    reg.register(Box::new(dropped.clone())).expect("unique");
    dropped.inc_by(load(&EVENTS.observe_dropped));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_quoted_as_the_text_format_says() {
        let mut out = String::new();
        let f = Family::new(&mut out, "m", "gauge", "a \\ b\nc");
        f.sample(&mut out, &[("rule", "x\"y\\z\nw"), ("mode", "audit")], 7);
        assert_eq!(
            out,
            "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm{rule=\"x\\\"y\\\\z\\nw\",mode=\"audit\"} 7\n"
        );
    }
}

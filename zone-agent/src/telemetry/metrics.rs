//! Every Prometheus name the agent exports, defined here only.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use zone_agent_common::{DropReason, LABEL_EMBRYOS, LABEL_FLOWS, PassReason};

use super::{Telemetry, figures::Figures};
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
    let rp = counter(
        &reg,
        "zone_agent_rule_packets_total",
        "Packets counted to a rule (first matching rule in file order).",
        &["rule"],
    );
    let rb = counter(
        &reg,
        "zone_agent_rule_bytes_total",
        "Bytes counted to a rule.",
        &["rule"],
    );
    // Every rule of the enforcing policy appears, also at zero, so dashboards see unused
    // rules.
    for r in &t.policy.rules {
        rp.with_label_values(&[&r.name]).inc_by(0);
        rb.with_label_values(&[&r.name]).inc_by(0);
    }
    for (rule, c) in &totals.rules {
        rp.with_label_values(&[rule]).inc_by(c.packets);
        rb.with_label_values(&[rule]).inc_by(c.bytes);
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

    agent_info(&reg, f, t);

    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&reg.gather(), &mut buf)
        .expect("encode to memory");
    String::from_utf8(buf).expect("prometheus text is UTF-8")
}

/// A gauge without labels, registered.
fn single(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// What the agent is and runs: build, interfaces, last reload, the rules' modes.
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

    let rules = gauge(
        reg,
        "zone_agent_rule_info",
        "Always 1 per rule of the enforcing policy: its zones and its own mode. An audit rule's zone_agent_rule_packets_total counts the traffic it passed on trial (counted with verdict audit).",
        &["rule", "from_zone", "to_zone", "mode"],
    );
    for r in &t.policy.rules {
        rules
            .with_label_values(&[&r.name, &r.from_zone, &r.to_zone, r.mode])
            .set(1);
    }
}

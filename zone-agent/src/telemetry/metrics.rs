//! Every Prometheus name the agent exports, defined here only.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::Ordering;

use zone_agent_common::{
    DropReason, EventKind, EventStat, LABEL_EMBRYOS, LABEL_FLOWS, LOST_AGENT_QUEUE, LOST_FLOW_LOG,
    LOST_RATE_LIMITED, LOST_RING_FULL, LOST_UNDECODABLE, PassReason,
};

use super::{EVENTS, Telemetry, Totals};
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

/// Renders the current counters (live sets + retired totals) as Prometheus text.
pub fn render(dp: &View<'_>, t: &Telemetry) -> Result<String, DatapathError> {
    let mut live = Totals::default();
    for set in 0..2u32 {
        if let Some(names) = &t.sets[set as usize] {
            live.add_set(
                names,
                &dp.set_counters(set, names.zones.len(), names.rules.len())?,
            );
        }
    }
    let totals = t.retired.merged(&live);
    let global = dp.global_counters()?;
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
    // Every rule of the active policy appears, also at zero, so dashboards see unused rules.
    if let Some(names) = &t.sets[dp.active_set as usize] {
        for r in &names.rules {
            rp.with_label_values(&[r]).inc_by(0);
            rb.with_label_values(&[r]).inc_by(0);
        }
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
    let usage = dp.map_usage();
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
    for (name, n, cap) in &usage {
        entries.with_label_values(&[name]).set(*n as i64);
        capacity.with_label_values(&[name]).set(*cap as i64);
    }
    let fill = |label: &str| usage.iter().find(|u| u.0 == label).map_or(0, |u| u.1);
    let flows = IntGauge::new(
        "zone_agent_flows_active",
        "Flows in the flow tables (replied and embryonic).",
    )
    .expect("valid");
    reg.register(Box::new(flows.clone())).expect("unique");
    flows.set((fill(LABEL_FLOWS) + fill(LABEL_EMBRYOS)) as i64);
    let events = dp.flow_events()?;
    let fe = counter(
        &reg,
        "zone_agent_flow_events_total",
        "Flow-table events: opened (embryonic), promoted (first reply), promotion_refused (replied table full), open_refused (insert failed, dropped table_full), embryo_removed (expired/revoked in the data path), embryo_expired (removed by the expiry sweep), reset (a RST shortened a flow's life).",
        &["event"],
    );
    for (e, n) in &events {
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
        .inc_by(dp.embryo_evictions(&events, fill(LABEL_EMBRYOS)));
    evictions.with_label_values(&[LABEL_FLOWS]).inc_by(0);
    let generation = IntGauge::new(
        "zone_agent_policy_generation",
        "Generation of the enforcing policy (1 = first load).",
    )
    .expect("valid");
    reg.register(Box::new(generation.clone())).expect("unique");
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

    let fail_open = IntGauge::new(
        "zone_agent_fail_open_on_exit",
        "1 if the agent detaches XDP when it exits (the zone gates open while it is down); 0 if enforcement outlives it.",
    )
    .expect("valid");
    reg.register(Box::new(fail_open.clone())).expect("unique");
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

    let kernel_events = dp.event_stats()?;
    event_metrics(&reg, &|s| kernel_events[s as usize]);

    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&reg.gather(), &mut buf)
        .expect("encode to memory");
    Ok(String::from_utf8(buf).expect("prometheus text is UTF-8"))
}

/// The event stream's counters: what the kernel emitted (`kernel`: a `ZA_EVSTATS` slot
/// summed over CPUs) and the agent's own, every label present (0 included).
fn event_metrics(reg: &Registry, kernel: &dyn Fn(EventStat) -> u64) {
    let total = counter(
        reg,
        "zone_agent_events_total",
        "Decision events produced, by kind: written to the event ring by the data path (deny, audit, flow_open, flow_end), plus flow_end for the flows the agent's expiry sweep removed. Events lost after that are in zone_agent_events_lost_total.",
        &["kind"],
    );
    for kind in EventKind::ALL {
        let agent = if kind == EventKind::FlowEnd {
            EVENTS.flow_end_swept.load(Ordering::Relaxed)
        } else {
            0
        };
        total
            .with_label_values(&[kind.label()])
            .inc_by(kernel(EventStat::emitted(kind)) + agent);
    }
    let lost = counter(
        reg,
        "zone_agent_events_lost_total",
        "Decision events not delivered, by stage: rate_limited (refused by the data path's per-CPU budget, never written), ring_full (no room in the event ring), agent_queue (the agent's queue behind the ring reader was full), undecodable (a record the agent could not read), flow_log (not written to the flow log; the other consumers got it).",
        &["stage"],
    );
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    for (stage, n) in [
        (LOST_RATE_LIMITED, kernel(EventStat::RateLimited)),
        (LOST_RING_FULL, kernel(EventStat::RingFull)),
        (LOST_AGENT_QUEUE, load(&EVENTS.lost_agent_queue)),
        (LOST_UNDECODABLE, load(&EVENTS.lost_undecodable)),
        (LOST_FLOW_LOG, load(&EVENTS.lost_flow_log)),
    ] {
        lost.with_label_values(&[stage]).inc_by(n);
    }
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

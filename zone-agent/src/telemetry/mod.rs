//! Telemetry: the kernel's per-CPU counters, folded across policy generations by name, and
//! exported in the Prometheus text format (`metrics`, `server`).

pub mod figures;
pub mod metrics;
pub mod persist;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use zone_agent_common::{Counter, Verdict};

use crate::{datapath::stats::SetCounters, policy::Policy};

/// Connections closed on accept, by listener (`zone_agent_connections_refused_total`).
pub static REFUSED_METRICS: AtomicU64 = AtomicU64::new(0);
pub static REFUSED_ADMIN: AtomicU64 = AtomicU64::new(0);

/// (listener label, connections refused so far).
pub fn refused_connections() -> [(&'static str, u64); 2] {
    [
        ("metrics", REFUSED_METRICS.load(Ordering::Relaxed)),
        ("admin", REFUSED_ADMIN.load(Ordering::Relaxed)),
    ]
}

/// What the agent itself counts of the event stream (the kernel counts the rest in
/// `ZA_EVSTATS`): exported as `zone_agent_events_total`, `zone_agent_events_lost_total`
/// and the `observe` client metrics.
pub struct EventCounters {
    /// `flow_end` records made by the expiry sweep for the flows it removed.
    pub flow_end_swept: AtomicU64,
    /// Records dropped because the queue behind the ring reader was full.
    pub lost_agent_queue: AtomicU64,
    /// Records the flow log could not write.
    pub lost_flow_log: AtomicU64,
    /// Ring records the agent could not decode.
    pub lost_undecodable: AtomicU64,
    /// `observe` clients connected now.
    pub observe_clients: AtomicU64,
    /// `observe` clients disconnected because they did not keep up.
    pub observe_dropped: AtomicU64,
}

pub static EVENTS: EventCounters = EventCounters {
    flow_end_swept: AtomicU64::new(0),
    lost_agent_queue: AtomicU64::new(0),
    lost_flow_log: AtomicU64::new(0),
    lost_undecodable: AtomicU64::new(0),
    observe_clients: AtomicU64::new(0),
    observe_dropped: AtomicU64::new(0),
};

/// The counters of [`EventCounters`] that a restarted agent continues (saved in
/// `telemetry.json` like the other totals; the kernel's own are pinned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventTotals {
    pub flow_end_swept: u64,
    pub lost_agent_queue: u64,
    pub lost_flow_log: u64,
    pub lost_undecodable: u64,
    pub observe_dropped: u64,
}

impl EventCounters {
    /// Adds one to `c` (relaxed: a counter read by scrapes only).
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn counters(&self) -> [&AtomicU64; 5] {
        [
            &self.flow_end_swept,
            &self.lost_agent_queue,
            &self.lost_flow_log,
            &self.lost_undecodable,
            &self.observe_dropped,
        ]
    }

    pub fn totals(&self) -> EventTotals {
        let [a, b, c, d, e] = self.counters().map(|x| x.load(Ordering::Relaxed));
        EventTotals {
            flow_end_swept: a,
            lost_agent_queue: b,
            lost_flow_log: c,
            lost_undecodable: d,
            observe_dropped: e,
        }
    }

    /// Adds what a previous run counted (once, at start).
    pub fn restore(&self, t: &EventTotals) {
        let saved = [
            t.flow_end_swept,
            t.lost_agent_queue,
            t.lost_flow_log,
            t.lost_undecodable,
            t.observe_dropped,
        ];
        for (c, n) in self.counters().into_iter().zip(saved) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Names needed to label one policy set's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetNames {
    /// Generation of the policy installed in the set.
    #[serde(default)]
    pub generation: u32,
    /// Zone names by data-path id (index 0 = "none").
    pub zones: Vec<String>,
    /// Rule names by rule id.
    pub rules: Vec<String>,
}

impl SetNames {
    pub fn of(p: &Policy) -> Self {
        let mut zones = vec![zone_agent_common::NO_ZONE_LABEL.to_string()];
        zones.extend(p.zones.iter().map(|z| z.name.clone()));
        SetNames {
            generation: 0,
            zones,
            rules: p.rules.iter().map(|r| r.name.clone()).collect(),
        }
    }

    fn zone(&self, id: u8) -> String {
        self.zones
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| zone_agent_common::NO_ZONE_LABEL.into())
    }
}

/// Labelled totals.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub zones: BTreeMap<(String, String, &'static str), Counter>,
    pub rules: BTreeMap<String, Counter>,
}

impl Totals {
    pub fn add_set(&mut self, names: &SetNames, c: &SetCounters) {
        for (from, to, v, n) in &c.zones {
            add(
                self.zones
                    .entry((names.zone(*from), names.zone(*to), Verdict::label(*v)))
                    .or_default(),
                n,
            );
        }
        for (i, n) in c.rules.iter().enumerate() {
            if let Some(name) = names.rules.get(i) {
                add(self.rules.entry(name.clone()).or_default(), n);
            }
        }
    }

    pub fn merged(&self, other: &Totals) -> Totals {
        let mut t = self.clone();
        for (k, n) in &other.zones {
            add(t.zones.entry(k.clone()).or_default(), n);
        }
        for (k, n) in &other.rules {
            add(t.rules.entry(k.clone()).or_default(), n);
        }
        t
    }
}

fn add(a: &mut Counter, b: &Counter) {
    a.packets += b.packets;
    a.bytes += b.bytes;
}

/// What the agent knows beyond the maps: names per set, totals of retired sets, reloads.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    pub sets: [Option<SetNames>; 2],
    pub retired: Totals,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    pub generation: u32,
    /// `fail_open_on_exit` is configured (exported so that monitoring can alert on it).
    pub fail_open_on_exit: bool,
    /// Wall-clock time of the last successful load or reload, milliseconds since the Unix
    /// epoch (0: none yet).
    pub last_reload_unix_ms: u64,
    /// What the enforcing policy says, for labels and the page (shared: a snapshot per
    /// publish must not copy a large policy's rules).
    pub policy: Arc<PolicyInfo>,
    /// The zone interfaces the agent attached, and how.
    pub attachments: Vec<Attachment>,
    /// Kernel id of the agent's XDP program (what an interface must run to count as attached).
    pub program_id: Option<u32>,
}

/// One zone interface the agent holds an XDP link on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    /// How the agent attached it (`native`, `generic`; `adopted` for a link of an earlier run).
    pub mode: &'static str,
}

/// The enforcing policy as the operator wrote it: zones and rules in file order, with the
/// words of the policy file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyInfo {
    /// `enforce` | `audit`.
    pub mode: &'static str,
    pub zones: Vec<ZoneInfo>,
    pub rules: Vec<RuleInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ZoneInfo {
    pub name: String,
    pub label: Option<String>,
    pub criticality: &'static str,
}

/// One 特定通信.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleInfo {
    pub name: String,
    pub description: Option<String>,
    pub from_zone: String,
    pub to_zone: String,
    pub protocol: &'static str,
    /// Destination ports as written (`443`, `8000-8010`); empty: every port.
    pub ports: Vec<String>,
    /// The rule's own mode: `audit` passes its traffic counted as audit (a trial).
    pub mode: &'static str,
}

impl PolicyInfo {
    pub fn of(p: &Policy) -> PolicyInfo {
        let zone = |i: usize| p.zones.get(i).map_or_else(String::new, |z| z.name.clone());
        PolicyInfo {
            mode: p.mode.label(),
            zones: p
                .zones
                .iter()
                .map(|z| ZoneInfo {
                    name: z.name.clone(),
                    label: z.label.clone(),
                    criticality: z.criticality.label(),
                })
                .collect(),
            rules: p
                .rules
                .iter()
                .map(|r| RuleInfo {
                    name: r.name.clone(),
                    description: r.description.clone(),
                    from_zone: zone(r.from),
                    to_zone: zone(r.to),
                    protocol: r.protocol.label(),
                    ports: r
                        .ports
                        .iter()
                        .map(|pr| match pr.lo == pr.hi {
                            true => pr.lo.to_string(),
                            false => format!("{}-{}", pr.lo, pr.hi),
                        })
                        .collect(),
                    mode: r.mode.label(),
                })
                .collect(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Telemetry {
    /// Called before `set` is overwritten: its final counts move to the retired totals.
    pub fn retire(&mut self, set: u32, counters: &SetCounters) {
        if let Some(names) = self.sets[set as usize].take() {
            self.retired.add_set(&names, counters);
        }
    }
}

/// Counts by label value.
pub type Labelled = Vec<(&'static str, u64)>;

/// Events produced by kind and lost by stage (the labels of `zone_agent_events_total` and
/// `zone_agent_events_lost_total`, every one present): the data path's counters `kernel`
/// (`EventStat` slots) and the agent's own. `/metrics` and the page both use this.
pub fn event_counts(kernel: &crate::datapath::events::EventStats) -> (Labelled, Labelled) {
    use std::sync::atomic::Ordering::Relaxed;
    use zone_agent_common::{
        EventKind, EventStat, LOST_AGENT_QUEUE, LOST_FLOW_LOG, LOST_RATE_LIMITED, LOST_RING_FULL,
        LOST_UNDECODABLE,
    };
    let k = |s: EventStat| kernel[s as usize];
    let produced = EventKind::ALL
        .into_iter()
        .map(|kind| {
            let swept = if kind == EventKind::FlowEnd {
                EVENTS.flow_end_swept.load(Relaxed)
            } else {
                0
            };
            (kind.label(), k(EventStat::emitted(kind)) + swept)
        })
        .collect();
    let lost = vec![
        (LOST_RATE_LIMITED, k(EventStat::RateLimited)),
        (LOST_RING_FULL, k(EventStat::RingFull)),
        (LOST_AGENT_QUEUE, EVENTS.lost_agent_queue.load(Relaxed)),
        (LOST_UNDECODABLE, EVENTS.lost_undecodable.load(Relaxed)),
        (LOST_FLOW_LOG, EVENTS.lost_flow_log.load(Relaxed)),
    ];
    (produced, lost)
}

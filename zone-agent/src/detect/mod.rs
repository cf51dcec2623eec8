//! Detection on the data path's decisions (SPEC §6, 検知). Pure: no I/O, no clock of its
//! own; every call is given the time, so tests drive it with a fake clock.
//!
//! Inside an allowlisted network a legitimate host is almost never denied, so each
//! *distinct* denied attempt is evidence (the idea behind Threshold Random Walk and Zeek's
//! scan policy). The engine counts, with memory that fades over hours ([`decay`]):
//! distinct (protocol, port) pairs per (source, destination) → `port_scan`; distinct
//! destinations per (source, protocol, port) → `host_sweep`; distinct sources per
//! destination → `distributed_scan`. Single events that are alerts on their own:
//! `spoofed_source`, `mac_binding_violation`, and `exfiltration_attempt` (a denial from a
//! critical zone toward the internet). A spoofed source never counts toward a scan: it
//! is a decoy as likely as not, and must never make an innocent address a "scanner".
//!
//! Repeats are aggregated, never silently suppressed: one alert per (kind, source or
//! target, zones), reported when it first crosses its threshold and again as an update
//! (`update` > 0, the `count` so far) when its count has doubled or `update_every` has
//! passed with new attempts.

pub mod decay;
mod probe;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use zone_agent_common::{AlertKind, DropReason, PROTO_ICMP, PROTO_ICMPV6, Severity};

use crate::events::Record;
use decay::Decaying;
pub use probe::Probe;

/// Thresholds and memory (config `[detect]`; defaults documented in docs/alerts.md).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Decayed distinct (protocol, port) pairs on one destination that make a port scan.
    pub port_scan_ports: f64,
    /// Decayed distinct destinations on one (protocol, port) that make a host sweep.
    pub host_sweep_hosts: f64,
    /// Decayed distinct sources denied on one destination that make a distributed scan.
    pub distributed_sources: f64,
    /// Half-life of the scan memory.
    pub half_life_ms: u64,
    /// An aggregated alert is reported again after this long if it saw new attempts.
    pub update_every_ms: u64,
    /// Most keys each tracker holds (sources, pairs); beyond it new keys are not tracked
    /// and counted in `Engine::untracked`.
    pub max_keys: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port_scan_ports: 10.0,
            host_sweep_hosts: 10.0,
            distributed_sources: 20.0,
            half_life_ms: 3_600_000,
            update_every_ms: 300_000,
            max_keys: 65_536,
        }
    }
}

/// What the engine must know of a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneFacts {
    pub criticality: Severity,
    /// The internet segment (exfiltration target).
    pub internet: bool,
}

/// Zone facts by zone name (from the active policy).
pub trait Zones {
    fn facts(&self, zone: &str) -> Option<ZoneFacts>;
}

impl Zones for HashMap<String, ZoneFacts> {
    fn facts(&self, zone: &str) -> Option<ZoneFacts> {
        self.get(zone).copied()
    }
}

/// One alert (first report or update) as the detector sees it; delivery adds id, host,
/// time format and the summaries.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub kind: AlertKind,
    pub severity: Severity,
    /// The attacker (absent for a distributed scan: many sources).
    pub src_ip: Option<IpAddr>,
    pub src_mac: Option<String>,
    /// The target, when there is one (port scan, distributed scan).
    pub dst_ip: Option<IpAddr>,
    pub from_zone: String,
    pub to_zone: String,
    pub rule: Option<String>,
    /// Distinct attempts (or events, for single-event kinds) aggregated so far.
    pub count: u64,
    /// A few `ip:port` (or source addresses, for a distributed scan).
    pub sample: Vec<String>,
    /// Probe types seen (`syn`, `ack`, `fin`, `null`, `xmas`, `udp`, …), sorted.
    pub probes: Vec<&'static str>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// 0 for the first report, then 1, 2, … for updates of the same aggregate.
    pub update: u32,
}

/// Identity of an aggregate: one alert per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: AlertKind,
    who: Option<IpAddr>,
    target: Option<IpAddr>,
    from: String,
    to: String,
}

impl Key {
    fn new(kind: AlertKind, who: Option<IpAddr>, target: Option<IpAddr>, r: &Record) -> Key {
        Key {
            kind,
            who,
            target,
            from: r.from_zone.clone(),
            to: r.to_zone.clone(),
        }
    }
}

/// Whether the aggregate of `key` has been reported already.
fn reported(aggregates: &HashMap<Key, Aggregate>, key: &Key) -> bool {
    aggregates.get(key).is_some_and(|a| a.reported.is_some())
}

/// State of one aggregate.
#[derive(Debug)]
struct Aggregate {
    first_seen_ms: u64,
    last_seen_ms: u64,
    /// Count at the last report, and when it was (None: not reported yet).
    reported: Option<(u64, u64)>,
    update: u32,
    probes: BTreeSet<&'static str>,
    /// Single-event kinds count events here; scans use their tracker's distinct total.
    events: u64,
    sample: Vec<String>,
    src_mac: Option<String>,
    rule: Option<String>,
}

const SAMPLE: usize = 5;

impl Aggregate {
    /// A new aggregate's sample starts with what its tracker remembers (the attempts that
    /// led up to the threshold), not only the one that crossed it.
    fn seed(&mut self, first_ms: u64, seen: Vec<String>) {
        if self.reported.is_none() {
            self.first_seen_ms = self.first_seen_ms.min(first_ms);
            for s in seen {
                if self.sample.len() < SAMPLE && !self.sample.contains(&s) {
                    self.sample.push(s);
                }
            }
        }
    }
}

/// `ip:port` strings.
fn endpoints(v: impl Iterator<Item = (IpAddr, u16)>) -> Vec<String> {
    v.map(|(ip, port)| std::net::SocketAddr::new(ip, port).to_string())
        .collect()
}

/// The detection engine. Feed it every deny/audit record with `observe`.
pub struct Engine {
    settings: Settings,
    /// (source, destination) → distinct (protocol, port).
    ports: HashMap<(IpAddr, IpAddr), Decaying<(u8, u16)>>,
    /// (source, protocol, port) → distinct destinations.
    hosts: HashMap<(IpAddr, u8, u16), Decaying<IpAddr>>,
    /// destination → distinct sources.
    sources: HashMap<IpAddr, Decaying<IpAddr>>,
    aggregates: HashMap<Key, Aggregate>,
    /// Observations not tracked because a tracker was full (exported as a metric).
    pub untracked: u64,
}

impl Engine {
    pub fn new(settings: Settings) -> Engine {
        Engine {
            settings,
            ports: HashMap::new(),
            hosts: HashMap::new(),
            sources: HashMap::new(),
            aggregates: HashMap::new(),
            untracked: 0,
        }
    }

    /// Takes one decoded event at `now_ms`; returns the alerts (first reports and updates)
    /// it causes. Records other than deny and audit are ignored.
    pub fn observe(&mut self, r: &Record, zones: &dyn Zones, now_ms: u64) -> Vec<Detection> {
        if r.kind != "deny" && r.kind != "audit" {
            return Vec::new();
        }
        let Some(reason) = r.reason.as_deref() else {
            // An audit rule's own pass: allowed traffic, not a denial.
            return Vec::new();
        };
        let mut out = Vec::new();
        if reason == DropReason::SpoofedSource.label() {
            self.single(AlertKind::SpoofedSource, r, zones, now_ms, &mut out);
            return out;
        }
        if reason == DropReason::MacMismatch.label() {
            self.single(AlertKind::MacBindingViolation, r, zones, now_ms, &mut out);
            return out;
        }
        if !is_probe(reason) {
            return out;
        }
        let from = zones.facts(&r.from_zone);
        let to = zones.facts(&r.to_zone);
        if from.is_some_and(|f| f.criticality == Severity::Critical)
            && to.is_some_and(|t| t.internet)
        {
            self.single(AlertKind::ExfiltrationAttempt, r, zones, now_ms, &mut out);
        }
        self.scans(r, zones, now_ms, &mut out);
        out
    }

    /// Forgets faded memory and empty trackers; call now and then (every minute).
    pub fn tidy(&mut self, now_ms: u64) {
        let min = 1.0 / 64.0;
        self.ports.retain(|_, d| d.score(now_ms) >= min);
        self.hosts.retain(|_, d| d.score(now_ms) >= min);
        self.sources.retain(|_, d| d.score(now_ms) >= min);
        for d in self.ports.values_mut() {
            d.forget_faded(now_ms);
        }
        for d in self.hosts.values_mut() {
            d.forget_faded(now_ms);
        }
        for d in self.sources.values_mut() {
            d.forget_faded(now_ms);
        }
        let quiet = 6 * self.settings.half_life_ms;
        self.aggregates
            .retain(|_, a| now_ms.saturating_sub(a.last_seen_ms) <= quiet);
    }

    /// Keys tracked over all trackers (for a gauge).
    pub fn tracked(&self) -> usize {
        self.ports.len() + self.hosts.len() + self.sources.len()
    }

    fn single(
        &mut self,
        kind: AlertKind,
        r: &Record,
        zones: &dyn Zones,
        now_ms: u64,
        out: &mut Vec<Detection>,
    ) {
        let key = Key::new(kind, Some(r.src_ip), None, r);
        let a = self.aggregate(key.clone(), r, now_ms);
        a.events += 1;
        let count = a.events;
        self.report(&key, count, zones, now_ms, out);
    }

    fn scans(&mut self, r: &Record, zones: &dyn Zones, now_ms: u64, out: &mut Vec<Detection>) {
        let s = self.settings.clone();
        let port = probe_port(r);
        let (src, dst) = (r.src_ip, r.dst_ip);

        let ports = tracker(&mut self.ports, (src, dst), &s, &mut self.untracked);
        if let Some(d) = ports {
            d.touch((r.protocol, port), now_ms);
            let (score, total, first) = (d.score(now_ms), d.total, d.first_ms);
            if reached(score, s.port_scan_ports) {
                let key = Key::new(AlertKind::PortScan, Some(src), Some(dst), r);
                let seen = match reported(&self.aggregates, &key) {
                    false => endpoints(d.smallest(SAMPLE).iter().map(|(_, p)| (dst, *p))),
                    true => Vec::new(),
                };
                self.aggregate(key.clone(), r, now_ms).seed(first, seen);
                self.report(&key, total, zones, now_ms, out);
            } else {
                self.note(AlertKind::PortScan, Some(src), Some(dst), r, now_ms);
            }
        }

        let hosts = tracker(
            &mut self.hosts,
            (src, r.protocol, port),
            &s,
            &mut self.untracked,
        );
        if let Some(d) = hosts {
            d.touch(dst, now_ms);
            let (score, total, first) = (d.score(now_ms), d.total, d.first_ms);
            if reached(score, s.host_sweep_hosts) {
                let key = Key::new(AlertKind::HostSweep, Some(src), None, r);
                let seen = match reported(&self.aggregates, &key) {
                    false => endpoints(d.smallest(SAMPLE).iter().map(|h| (*h, port))),
                    true => Vec::new(),
                };
                self.aggregate(key.clone(), r, now_ms).seed(first, seen);
                self.report(&key, total, zones, now_ms, out);
            } else {
                self.note(AlertKind::HostSweep, Some(src), None, r, now_ms);
            }
        }

        let sources = tracker(&mut self.sources, dst, &s, &mut self.untracked);
        if let Some(d) = sources {
            d.touch(src, now_ms);
            let (score, total, first) = (d.score(now_ms), d.total, d.first_ms);
            if reached(score, s.distributed_sources) {
                let key = Key::new(AlertKind::DistributedScan, None, Some(dst), r);
                // The evidence is the sources, not the ports.
                let seen = match reported(&self.aggregates, &key) {
                    false => d.smallest(SAMPLE).iter().map(|a| a.to_string()).collect(),
                    true => Vec::new(),
                };
                self.aggregate(key.clone(), r, now_ms).seed(first, seen);
                self.report(&key, total, zones, now_ms, out);
            }
        }
    }

    /// Below threshold: keep the evidence (probe types, sample) of an aggregate that is
    /// already open, so its next update carries it.
    fn note(
        &mut self,
        kind: AlertKind,
        who: Option<IpAddr>,
        target: Option<IpAddr>,
        r: &Record,
        now_ms: u64,
    ) {
        let key = Key::new(kind, who, target, r);
        if self.aggregates.contains_key(&key) {
            self.aggregate(key, r, now_ms);
        }
    }

    fn aggregate(&mut self, key: Key, r: &Record, now_ms: u64) -> &mut Aggregate {
        let kind = key.kind;
        let a = self.aggregates.entry(key).or_insert_with(|| Aggregate {
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            reported: None,
            update: 0,
            probes: BTreeSet::new(),
            events: 0,
            sample: Vec::new(),
            src_mac: None,
            rule: None,
        });
        a.last_seen_ms = now_ms;
        a.probes.insert(Probe::of(r).label());
        // A distributed scan's sample is its sources (`seed`), not what they probed.
        if a.sample.len() < SAMPLE && kind != AlertKind::DistributedScan {
            let s = match r.dst_port {
                Some(p) => format!("{}", std::net::SocketAddr::new(r.dst_ip, p)),
                None => r.dst_ip.to_string(),
            };
            if !a.sample.contains(&s) {
                a.sample.push(s);
            }
        }
        a.src_mac.get_or_insert_with(|| r.src_mac.clone());
        if a.rule.is_none() {
            a.rule = r.rule.clone();
        }
        a
    }

    /// Reports `key`'s aggregate if it is new, or if its count doubled or `update_every`
    /// passed with new attempts since its last report.
    fn report(
        &mut self,
        key: &Key,
        count: u64,
        zones: &dyn Zones,
        now_ms: u64,
        out: &mut Vec<Detection>,
    ) {
        let every = self.settings.update_every_ms;
        let Some(a) = self.aggregates.get_mut(key) else {
            return;
        };
        let due = match a.reported {
            None => true,
            Some((n, at)) => count >= 2 * n || (count > n && now_ms.saturating_sub(at) >= every),
        };
        if !due {
            return;
        }
        if a.reported.is_some() {
            a.update += 1;
        }
        a.reported = Some((count, now_ms));
        out.push(Detection {
            kind: key.kind,
            severity: severity(key.kind, &key.from, &key.to, zones),
            src_ip: key.who,
            src_mac: if key.who.is_some() {
                a.src_mac.clone()
            } else {
                None
            },
            dst_ip: key.target,
            from_zone: key.from.clone(),
            to_zone: key.to.clone(),
            rule: a.rule.clone(),
            count,
            sample: a.sample.clone(),
            probes: a.probes.iter().copied().collect(),
            first_seen_ms: a.first_seen_ms,
            last_seen_ms: a.last_seen_ms,
            update: a.update,
        });
    }
}

/// The tracker of `key`, created if there is room; `None` (counted) when full.
fn tracker<'a, K: Eq + std::hash::Hash, T: Eq + std::hash::Hash + Clone>(
    map: &'a mut HashMap<K, Decaying<T>>,
    key: K,
    s: &Settings,
    untracked: &mut u64,
) -> Option<&'a mut Decaying<T>> {
    if !map.contains_key(&key) && map.len() >= s.max_keys {
        *untracked += 1;
        return None;
    }
    // Each tracker remembers at most as many items as matter well past its threshold.
    let cap = 4096;
    Some(
        map.entry(key)
            .or_insert_with(|| Decaying::new(s.half_life_ms, cap)),
    )
}

/// Whether a decayed count reached `threshold`. Ten ports probed within a second have
/// already lost a few millionths of their weight: a hundredth of slack keeps "10 distinct
/// attempts just now" equal to 10.
fn reached(score: f64, threshold: f64) -> bool {
    score + 0.01 >= threshold
}

/// Drop reasons that a probe of a closed (not allowed) service gets: the scan evidence.
fn is_probe(reason: &str) -> bool {
    [
        DropReason::NoRule,
        DropReason::UnknownZone,
        DropReason::IntraZone,
    ]
    .iter()
    .any(|r| r.label() == reason)
}

/// The "port" of a probe: TCP/UDP destination port; ICMP type (its code ignored).
fn probe_port(r: &Record) -> u16 {
    match r.protocol {
        PROTO_ICMP | PROTO_ICMPV6 => r.dst_port.unwrap_or(0) >> 8,
        _ => r.dst_port.unwrap_or(0),
    }
}

/// Severity follows the zones' criticality: the graver of the two zones (an unknown zone
/// counts as medium); an exfiltration attempt is always critical.
fn severity(kind: AlertKind, from: &str, to: &str, zones: &dyn Zones) -> Severity {
    if kind == AlertKind::ExfiltrationAttempt {
        return Severity::Critical;
    }
    let c = |z: &str| zones.facts(z).map_or(Severity::Medium, |f| f.criticality);
    c(from).max(c(to))
}

#[cfg(test)]
mod tests;

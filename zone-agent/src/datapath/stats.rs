//! Reading the per-CPU counters (summed over CPUs) and the tables' fill, and expiring flows.

use aya::maps::{MapError, PerCpuArray, MapData, PerCpuValues};
use zone_agent_common::*;

use super::{Datapath, DatapathError, Maps, map_err};

pub(crate) fn zeros() -> Result<PerCpuValues<Counter>, DatapathError> {
    let n = aya::util::nr_cpus().map_err(|(_, e)| map_err(MAP_ZONE_STATS)(MapError::IoError(e)))?;
    PerCpuValues::try_from(vec![Counter::default(); n])
        .map_err(|e| map_err(MAP_ZONE_STATS)(MapError::IoError(e)))
}

fn sum(map: &PerCpuArray<MapData, Counter>, name: &'static str, index: u32) -> Result<Counter, DatapathError> {
    let v = map.get(&index, 0).map_err(map_err(name))?;
    Ok(v.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    }))
}

/// Counters of one policy set.
#[derive(Debug, Default, Clone)]
pub struct SetCounters {
    /// (from zone id, to zone id, verdict) with a non-zero count.
    pub zones: Vec<(u8, u8, Verdict, Counter)>,
    /// Per rule id.
    pub rules: Vec<Counter>,
}

/// Global counters (not per set).
#[derive(Debug, Default, Clone)]
pub struct GlobalCounters {
    pub drops: Vec<(DropReason, Counter)>,
    pub audit_drops: Vec<(DropReason, Counter)>,
    pub passes: Vec<(PassReason, Counter)>,
}

impl Datapath {
    /// See [`Maps::set_counters`].
    pub fn set_counters(&self, set: u32, zone_ids: usize, rules: usize) -> Result<SetCounters, DatapathError> {
        self.maps.set_counters(set, zone_ids, rules)
    }

    /// See [`Maps::global_counters`].
    pub fn global_counters(&self) -> Result<GlobalCounters, DatapathError> {
        self.maps.global_counters()
    }

    /// See [`Maps::map_usage`].
    pub fn map_usage(&self) -> Vec<(&'static str, u64, u64)> {
        self.maps.map_usage()
    }

    /// See [`Maps::expire`].
    pub fn expire(&mut self) -> usize {
        self.maps.expire()
    }
}

/// What a reader needs of a data path: handles on its maps and the set the program reads
/// (as of the last published reload). Derefs to the maps.
pub struct View<'a> {
    pub maps: &'a Maps,
    pub active_set: u32,
}

impl std::ops::Deref for View<'_> {
    type Target = Maps;
    fn deref(&self) -> &Maps {
        self.maps
    }
}

/// Reads work on any handle of the maps: the agent's own, or the ones the metrics server and
/// the expiry task open for themselves (`Maps::open_pinned`), so that neither waits for a
/// reload.
impl Maps {
    /// Counters of one policy set with `zone_ids` zone ids (0 = none, then the policy's
    /// zones) and `rules` rules: only those slots are read, one syscall each.
    pub fn set_counters(&self, set: u32, zone_ids: usize, rules: usize) -> Result<SetCounters, DatapathError> {
        let m = self;
        let mut out = SetCounters::default();
        let zone_ids = zone_ids.min(MAX_ZONES as usize) as u8;
        for from in 0..zone_ids {
            for to in 0..zone_ids {
                for v in Verdict::ALL {
                    let c = sum(&m.zone_stats, MAP_ZONE_STATS, zone_stat_index(set, from, to, v as u8))?;
                    if c.packets > 0 {
                        out.zones.push((from, to, v, c));
                    }
                }
            }
        }
        for r in 0..rules.min(MAX_RULES as usize) {
            out.rules.push(sum(&m.rule_stats, MAP_RULE_STATS, set * MAX_RULES + r as u32)?);
        }
        Ok(out)
    }

    pub fn global_counters(&self) -> Result<GlobalCounters, DatapathError> {
        let m = self;
        let mut out = GlobalCounters::default();
        for r in DropReason::ALL {
            out.drops.push((r, sum(&m.drop_stats, MAP_DROP_STATS, r as u32)?));
            out.audit_drops.push((
                r,
                sum(&m.drop_stats, MAP_DROP_STATS, DropReason::AUDIT_OFFSET + r as u32)?,
            ));
        }
        for r in PassReason::ALL {
            out.passes.push((r, sum(&m.pass_stats, MAP_PASS_STATS, r as u32)?));
        }
        Ok(out)
    }

    /// (map name, entries, capacity) for the tables whose fill matters.
    pub fn map_usage(&self) -> Vec<(&'static str, u64, u64)> {
        let m = self;
        vec![
            ("flows", m.flows.keys().count() as u64, CAP_FLOWS as u64),
            ("fragments", m.frags.keys().count() as u64, CAP_FRAGS as u64),
            ("rules", m.rules.keys().count() as u64, CAP_RULES as u64),
            ("addresses_v4", m.addr4.keys().count() as u64, CAP_ADDR4 as u64),
            ("addresses_v6", m.addr6.keys().count() as u64, CAP_ADDR6 as u64),
            ("rule_macs", m.rule_macs.keys().count() as u64, CAP_RULEMACS as u64),
            ("interfaces", m.ifaces.keys().count() as u64, CAP_IFACES as u64),
        ]
    }

    /// Removes flows and fragment entries idle past their lifetime; returns how many.
    /// (The kernel ignores expired entries anyway; this frees their slots.)
    pub fn expire(&mut self) -> usize {
        let now = monotonic_coarse_ns();
        let m = self;
        let stale: Vec<FlowKey> = m
            .flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, st)| now.saturating_sub(st.last_seen_ns) > flow_lifetime(k.proto, st.flags))
            .map(|(k, _)| k)
            .collect();
        let stale_frags: Vec<FragKey> = m
            .frags
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, st)| now.saturating_sub(st.last_seen_ns) > FRAG_NS)
            .map(|(k, _)| k)
            .collect();
        let n = stale.len() + stale_frags.len();
        for k in stale {
            let _ = m.flows.remove(&k);
        }
        for k in stale_frags {
            let _ = m.frags.remove(&k);
        }
        n
    }
}

/// The clock `bpf_ktime_get_coarse_ns` reads.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

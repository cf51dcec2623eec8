//! Reading the per-CPU counters (summed over CPUs) and the tables' fill, and expiring flows.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::Ordering,
};

use aya::maps::{HashMap, IterableMap as _, MapData, MapError, PerCpuArray, PerCpuValues};
use zone_agent_common::*;

use super::{Datapath, DatapathError, Maps, map_err};

pub(crate) fn zeros() -> Result<PerCpuValues<Counter>, DatapathError> {
    let n = aya::util::nr_cpus().map_err(|(_, e)| map_err(MAP_ZONE_STATS)(MapError::IoError(e)))?;
    PerCpuValues::try_from(vec![Counter::default(); n])
        .map_err(|e| map_err(MAP_ZONE_STATS)(MapError::IoError(e)))
}

fn sum(
    map: &PerCpuArray<MapData, Counter>,
    name: &'static str,
    index: u32,
) -> Result<Counter, DatapathError> {
    let v = map.get(&index, 0).map_err(map_err(name))?;
    Ok(over_cpus(&v))
}

/// One counter's per-CPU slots added up.
fn over_cpus(per_cpu: &[Counter]) -> Counter {
    per_cpu.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

/// `BPF_MAP_LOOKUP_BATCH` (uapi `enum bpf_cmd`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Elements asked for per batch call.
const BATCH: usize = 4096;

/// The counters at indices `start..start + n` of a per-CPU array, each summed over CPUs, read
/// with `BPF_MAP_LOOKUP_BATCH` (a policy of 100 000 rules: 25 calls instead of 100 000).
fn sum_range(
    map: &PerCpuArray<MapData, Counter>,
    start: u32,
    n: u32,
) -> std::io::Result<Vec<Counter>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut out = Vec::with_capacity(n as usize);
    let mut keys = vec![0u32; BATCH];
    // Per element, one Counter per possible CPU (16 bytes: already 8-aligned).
    let mut values = vec![Counter::default(); BATCH * cpus];
    while (out.len() as u32) < n {
        let want = (n - out.len() as u32).min(BATCH as u32);
        // The batch continues after the key `in_batch` names; none: from index 0.
        let at = start + out.len() as u32;
        let previous = at.wrapping_sub(1);
        let mut next = 0u32;
        let mut attr = [0u64; 16];
        attr[0] = if at == 0 {
            0
        } else {
            &raw const previous as u64
        }; // in_batch
        attr[1] = &raw mut next as u64; // out_batch
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = u64::from(want) | (fd as u32 as u64) << 32; // count, map_fd
        let r = super::pin::sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = (attr[4] & 0xffff_ffff) as usize;
        if let Err(e) = r
            && !(e.raw_os_error() == Some(libc::ENOENT) && got > 0)
        {
            return Err(e);
        }
        if got == 0 || keys[0] != at {
            return Err(std::io::Error::other("batch read out of order"));
        }
        out.extend(values[..got * cpus].chunks(cpus).map(over_cpus));
    }
    out.truncate(n as usize);
    Ok(out)
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
    pub flow_events: Vec<(FlowEvent, u64)>,
}

impl Datapath {
    /// See [`Maps::set_counters`].
    pub fn set_counters(
        &self,
        set: u32,
        zone_ids: usize,
        rules: usize,
    ) -> Result<SetCounters, DatapathError> {
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
    pub fn expire(&mut self) -> Vec<(FlowKey, FlowState)> {
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
    pub fn set_counters(
        &self,
        set: u32,
        zone_ids: usize,
        rules: usize,
    ) -> Result<SetCounters, DatapathError> {
        let m = self;
        let mut out = SetCounters::default();
        let zone_ids = zone_ids.min(MAX_ZONES as usize) as u8;
        for from in 0..zone_ids {
            for to in 0..zone_ids {
                for v in Verdict::ALL {
                    let c = sum(
                        &m.zone_stats,
                        MAP_ZONE_STATS,
                        zone_stat_index(set, from, to, v as u8),
                    )?;
                    if c.packets > 0 {
                        out.zones.push((from, to, v, c));
                    }
                }
            }
        }
        let rules = rules.min(MAX_RULES as usize) as u32;
        out.rules = match sum_range(&m.rule_stats, set * MAX_RULES, rules) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("BPF_MAP_LOOKUP_BATCH of rule counters: {e}; one by one");
                (0..rules)
                    .map(|r| sum(&m.rule_stats, MAP_RULE_STATS, set * MAX_RULES + r))
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(out)
    }

    pub fn global_counters(&self) -> Result<GlobalCounters, DatapathError> {
        let m = self;
        let mut out = GlobalCounters::default();
        for r in DropReason::ALL {
            out.drops
                .push((r, sum(&m.drop_stats, MAP_DROP_STATS, r as u32)?));
            out.audit_drops.push((
                r,
                sum(
                    &m.drop_stats,
                    MAP_DROP_STATS,
                    DropReason::AUDIT_OFFSET + r as u32,
                )?,
            ));
        }
        for r in PassReason::ALL {
            out.passes
                .push((r, sum(&m.pass_stats, MAP_PASS_STATS, r as u32)?));
        }
        out.flow_events = self.flow_events()?;
        Ok(out)
    }

    /// Flow-table events (`ZA_FLOWSTATS`), summed over CPUs.
    pub fn flow_events(&self) -> Result<Vec<(FlowEvent, u64)>, DatapathError> {
        FlowEvent::ALL
            .iter()
            .map(|e| {
                let v = self
                    .flow_stats
                    .get(&(*e as u32), 0)
                    .map_err(map_err(MAP_FLOW_STATS))?;
                Ok((*e, v.iter().sum()))
            })
            .collect()
    }

    /// Replied and embryonic flows held (exact while the tables are quiet, see
    /// `entries`).
    pub fn flow_entries(&self) -> (u64, u64) {
        (
            entries(&self.flows, CAP_FLOWS),
            entries(&self.embryos, CAP_EMBRYOS),
        )
    }

    /// Embryonic flows the LRU evicted to make room for new ones: every embryonic flow
    /// opened either is still there, was promoted, was removed by the data path (expired,
    /// revoked) or by `expire`, or was evicted. Derived from the pinned counters (they
    /// outlive the agent) and the table's fill; kept monotonic within a run (a fill read
    /// while the table churns can be a little off either way).
    pub fn embryo_evictions(&self, events: &[(FlowEvent, u64)], embryos: u64) -> u64 {
        let ev = |e: FlowEvent| events.iter().find(|x| x.0 == e).map_or(0, |x| x.1);
        let gone = ev(FlowEvent::Promoted)
            + ev(FlowEvent::EmbryoRemoved)
            + ev(FlowEvent::EmbryoExpired)
            + embryos;
        let derived = ev(FlowEvent::Opened).saturating_sub(gone);
        self.embryo_evictions
            .fetch_max(derived, Ordering::Relaxed)
            .max(derived)
    }

    /// (map name, entries, capacity) for the tables whose fill matters.
    pub fn map_usage(&self) -> Vec<(&'static str, u64, u64)> {
        let m = self;
        let (flows, embryos) = self.flow_entries();
        vec![
            (LABEL_FLOWS, flows, CAP_FLOWS as u64),
            (LABEL_EMBRYOS, embryos, CAP_EMBRYOS as u64),
            ("fragments", entries(&m.frags, CAP_FRAGS), CAP_FRAGS as u64),
            ("rules", entries(&m.rules, CAP_RULES), CAP_RULES as u64),
            (
                "addresses_v4",
                m.addr4.keys().count() as u64,
                CAP_ADDR4 as u64,
            ),
            (
                "addresses_v6",
                m.addr6.keys().count() as u64,
                CAP_ADDR6 as u64,
            ),
            (
                "rule_macs",
                entries(&m.rule_macs, CAP_RULEMACS),
                CAP_RULEMACS as u64,
            ),
            (
                "interfaces",
                entries(&m.ifaces, CAP_IFACES),
                CAP_IFACES as u64,
            ),
        ]
    }

    /// Removes flows and fragment entries idle past their lifetime; returns the flows (replied
    /// and embryonic) it removed, as they were, so that the caller can report their end
    /// (`FlowEnd::of_expired` of their flags); fragments are only counted out. (The kernel
    /// ignores expired entries anyway; this frees their slots.) A flow the data path removed
    /// or refreshed between the walk and the removal is not reported.
    pub fn expire(&mut self) -> Vec<(FlowKey, FlowState)> {
        let now = monotonic_coarse_ns();
        let idle = |(k, st): &(FlowKey, FlowState)| {
            now.saturating_sub(st.last_seen_ns) > flow_lifetime(k.proto, st.flags)
        };
        let m = self;
        // Bounded walks: a table that churns under `get_next_key` (an LRU evicting) makes the
        // walk start over whenever the key it stands on goes, and it could go on for ever.
        let stale: Vec<(FlowKey, FlowState)> = m
            .flows
            .iter()
            .take(CAP_FLOWS as usize)
            .filter_map(Result::ok)
            .filter(idle)
            .collect();
        let stale_embryos: Vec<(FlowKey, FlowState)> = m
            .embryos
            .iter()
            .take(CAP_EMBRYOS as usize)
            .filter_map(Result::ok)
            .filter(idle)
            .collect();
        let stale_frags: Vec<FragKey> = m
            .frags
            .iter()
            .take(CAP_FRAGS as usize)
            .filter_map(Result::ok)
            .filter(|(_, st)| now.saturating_sub(st.last_seen_ns) > FRAG_NS)
            .map(|(k, _)| k)
            .collect();
        let mut removed: Vec<(FlowKey, FlowState)> = stale
            .into_iter()
            .filter(|(k, _)| m.flows.remove(k).is_ok())
            .collect();
        let replied = removed.len();
        removed.extend(
            stale_embryos
                .into_iter()
                .filter(|(k, _)| m.embryos.remove(k).is_ok()),
        );
        let swept = (removed.len() - replied) as u64;
        if swept > 0 {
            // The first CPU's slot: the data path never counts this event.
            let i = FlowEvent::EmbryoExpired as u32;
            if let Ok(v) = m.flow_stats.get(&i, 0) {
                let mut v = v.to_vec();
                v[0] += swept;
                if let Ok(v) = PerCpuValues::try_from(v) {
                    let _ = m.flow_stats.set(i, v, 0);
                }
            }
        }
        for k in stale_frags {
            let _ = m.frags.remove(&k);
        }
        removed
    }
}

/// The clock `bpf_ktime_get_coarse_ns` reads.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Entries of a hash table (flows, fragments), counted with BPF_MAP_LOOKUP_BATCH: the kernel walks the hash
/// by bucket, so a table that churns under the walk (an LRU evicting) is still walked once,
/// unlike `get_next_key`, which starts over whenever the key it stands on is deleted (and
/// then counts far past the capacity). Exact while the table is quiet; under churn an entry
/// moved between buckets may be missed or seen twice, and the count is capped at the
/// capacity. Falls back to counting keys if the kernel refuses batches.
fn entries<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>, capacity: u32) -> u64 {
    let fd = map.map().fd().as_fd().as_raw_fd();
    // Room for BATCH keys and values (the kernel copies bytes: no alignment needed).
    let mut keys = vec![0u8; BATCH * size_of::<K>()];
    let mut values = vec![0u8; BATCH * size_of::<V>()];
    let (mut cursor, mut next) = (0u32, 0u32);
    let mut total = 0u64;
    // One bucket per step at least: bounded by the number of buckets (<= capacity).
    for step in 0..=capacity as usize {
        let mut attr = [0u64; 16];
        attr[0] = if step == 0 {
            0
        } else {
            &raw const cursor as u64
        }; // in_batch
        attr[1] = &raw mut next as u64; // out_batch
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = BATCH as u64 | (fd as u32 as u64) << 32; // count, map_fd
        let r = super::pin::sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        total += attr[4] & 0xffff_ffff; // count, written back by the kernel
        match r {
            Ok(_) => cursor = next,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return total.min(capacity as u64),
            Err(e) => {
                tracing::debug!("BPF_MAP_LOOKUP_BATCH: {e}; counting keys");
                return (map.keys().count() as u64).min(capacity as u64);
            }
        }
    }
    total.min(capacity as u64)
}

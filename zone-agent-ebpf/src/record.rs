//! Per-CPU counters: packets and bytes per (set, from zone, to zone, verdict), per rule,
//! per drop reason (audit "would drop" at an offset), per pass reason and per flow-table
//! event.

use zone_agent_common::*;

use crate::maps::{DROP_STATS, FLOW_STATS, PASS_STATS, RULE_STATS, ZONE_STATS};
use aya_ebpf::maps::PerCpuArray;

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32, len: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

pub fn zone_pair(set: u32, from: u8, to: u8, verdict: Verdict, len: u64) {
    bump(
        &ZONE_STATS,
        zone_stat_index(set, from, to, verdict as u8),
        len,
    );
}

pub fn rule(set: u32, rule: u32, len: u64) {
    if rule < MAX_RULES {
        bump(&RULE_STATS, set * MAX_RULES + rule, len);
    }
}

pub fn drop(reason: DropReason, audited: bool, len: u64) {
    let base = if audited { DropReason::AUDIT_OFFSET } else { 0 };
    bump(&DROP_STATS, base + reason as u32, len);
}

pub fn pass(reason: PassReason, len: u64) {
    bump(&PASS_STATS, reason as u32, len);
}

pub fn flow_event(e: FlowEvent) {
    if let Some(c) = FLOW_STATS.get_ptr_mut(e as u32) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe { *c += 1 };
    }
}

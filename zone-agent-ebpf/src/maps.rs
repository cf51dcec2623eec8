//! Every map of the program, typed from zone-agent-common (names and sizes live there).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use zone_agent_common::*;

use crate::scratch::Scratch;

#[map(name = "ZA_ACTIVE")]
pub static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "ZA_SETCONF")]
pub static SETCONF: Array<SetConfig> = Array::with_max_entries(SETS, 0);
#[map(name = "ZA_IFACES")]
pub static IFACES: HashMap<IfaceKey, IfaceInfo> = HashMap::with_max_entries(CAP_IFACES, 0);
#[map(name = "ZA_ADDR4")]
pub static ADDR4: LpmTrie<Addr4Key, AddrClass> = LpmTrie::with_max_entries(CAP_ADDR4, 0);
#[map(name = "ZA_ADDR6")]
pub static ADDR6: LpmTrie<Addr6Key, AddrClass> = LpmTrie::with_max_entries(CAP_ADDR6, 0);
#[map(name = "ZA_PORTS")]
pub static PORT_CLASSES: Array<u16> = Array::with_max_entries(CAP_PORTS, 0);
// Not preallocated: sized for the largest policy, most sites use a tiny fraction.
#[map(name = "ZA_RULES")]
pub static RULES: HashMap<RuleKey, RuleCands> =
    HashMap::with_max_entries(CAP_RULES, BPF_F_NO_PREALLOC);
#[map(name = "ZA_RULEINFO")]
pub static RULEINFO: Array<RuleInfo> = Array::with_max_entries(SETS * MAX_RULES, 0);
#[map(name = "ZA_RULEMACS")]
pub static RULEMACS: HashMap<MacKey, u8> =
    HashMap::with_max_entries(CAP_RULEMACS, BPF_F_NO_PREALLOC);
// Replied flows: a plain (preallocated) hash, so that no insert ever evicts a live flow;
// embryonic flows: an LRU that only new flows churn. See "Flow tables" in the common crate.
#[map(name = "ZA_FLOWS")]
pub static FLOWS: HashMap<FlowKey, FlowState> = HashMap::with_max_entries(CAP_FLOWS, 0);
#[map(name = "ZA_EMBRYOS")]
pub static EMBRYOS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(CAP_EMBRYOS, 0);
#[map(name = "ZA_FLOWSTATS")]
pub static FLOW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FlowEvent::SLOTS, 0);
#[map(name = "ZA_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragState> = LruHashMap::with_max_entries(CAP_FRAGS, 0);
#[map(name = "ZA_ZONESTATS")]
pub static ZONE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(CAP_ZONE_STATS, 0);
#[map(name = "ZA_RULESTATS")]
pub static RULE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(CAP_RULE_STATS, 0);
// Two halves: drops, then audit-mode "would drop" at `DropReason::AUDIT_OFFSET`.
#[map(name = "ZA_DROPSTATS")]
pub static DROP_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(2 * DropReason::SLOTS, 0);
#[map(name = "ZA_PASSSTATS")]
pub static PASS_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(PassReason::SLOTS, 0);

// Failsafe management flows: written from the agent's configuration, not from a policy set,
// so no policy (or a mistake in one) changes them.
#[map(name = "ZA_FSPORTS")]
pub static FAILSAFE_PORTS: Array<u64> = Array::with_max_entries(CAP_FAILSAFE_PORTS, 0);
#[map(name = "ZA_FAILSAFE")]
pub static FAILSAFE: HashMap<FailsafeKey, u32> =
    HashMap::with_max_entries(CAP_FAILSAFE, BPF_F_NO_PREALLOC);
#[map(name = "ZA_FSSRC")]
pub static FAILSAFE_SRC: LpmTrie<FailsafeSrcKey, u32> =
    LpmTrie::with_max_entries(CAP_FAILSAFE_SRC, BPF_F_NO_PREALLOC);

// Events (see `events`): the ring, the per-CPU token bucket and counters, the settings.
#[map(name = "ZA_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);
#[map(name = "ZA_EVBUDGET")]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "ZA_EVSTATS")]
pub static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EventStat::SLOTS, 0);
#[map(name = "ZA_EVCONF")]
pub static EVENT_CONFIG: Array<EventConfig> = Array::with_max_entries(1, 0);

/// The per-CPU working memory, see `Scratch`.
#[map(name = "ZA_SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

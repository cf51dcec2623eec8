//! Events: what the data path tells the agent about single decisions, through the BPF ring
//! buffer `ZA_EVENTS` (one fixed-size [`Event`] per record).
//!
//! Budget: every event the kernel wants to emit first takes a token from a per-CPU token
//! bucket (`ZA_EVBUDGET`, refilled at `EventConfig::rate` per second up to
//! `EventConfig::burst`), so a flood of denied packets costs the ring and the agent at most
//! `rate` events per second per CPU; the ring reservation never forces a wakeup per packet
//! (see `EVENT_WAKEUP_BYTES`). What the bucket refuses
//! and what a full ring refuses is counted per CPU in `ZA_EVSTATS` ([`EventStat`]), so the
//! agent can say exactly how many events were not delivered (`events_lost_total{stage}`),
//! and each delivered event carries how many this CPU lost before it (`Event::lost_before`).
//!
//! The established fast path never emits: no ring call and no extra lookup there. A flow's
//! packets and bytes per direction are kept in its `FlowState` and reported when it ends.

/// The ring buffer of events (BPF_MAP_TYPE_RINGBUF).
pub const MAP_EVENTS: &str = "ZA_EVENTS";
/// Per-CPU token bucket state (`EventBudget`, one slot).
pub const MAP_EVENT_BUDGET: &str = "ZA_EVBUDGET";
/// Per-CPU counters (u64) indexed by `EventStat`.
pub const MAP_EVENT_STATS: &str = "ZA_EVSTATS";
/// The event settings the agent writes (`EventConfig`, one slot).
pub const MAP_EVENT_CONFIG: &str = "ZA_EVCONF";

/// Size of the ring in bytes (a power of two, a multiple of the page size): about 30 000
/// events, i.e. several seconds of the default budget on every CPU at once.
pub const EVENTS_RING_BYTES: u32 = 4 << 20;
/// The kernel wakes the reader only once this many bytes are pending (else the reader's
/// poll interval picks them up): no wakeup per packet in a flood. Precisely: every record is
/// submitted with `BPF_RB_NO_WAKEUP` except the one whose reservation makes the pending data
/// cross this threshold, which forces a wakeup; so at most one wakeup per this many bytes
/// produced. (Two CPUs crossing at once may both wake or neither: the poll covers a miss.)
pub const EVENT_WAKEUP_BYTES: u64 = 64 * core::mem::size_of::<Event>() as u64;
/// The agent reads the ring at least this often (milliseconds) when no wakeup came.
pub const EVENT_POLL_MS: u64 = 100;

/// Default budget: events per second per CPU, and the burst a quiet CPU may spend at once.
pub const EVENT_RATE_DEFAULT: u32 = 2_000;
pub const EVENT_BURST_DEFAULT: u32 = 500;

/// `EventConfig.flags`: which events the data path emits. 0 (the map's initial content,
/// and what an agent that does not want events writes): none.
/// `Deny` and `Audit` events (denied and audited packets, an audit rule's pass).
pub const EVENTS_DENY: u32 = 1;
/// `FlowOpen` and `FlowEnd` events (the ends the data path sees: expired on lookup,
/// revoked after a reload; the agent's sweep reports the flows it removes).
pub const EVENTS_FLOW: u32 = 1 << 1;

/// `ZA_EVCONF[0]`, written by the agent at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventConfig {
    /// Tokens added per second per CPU.
    pub rate: u32,
    /// Most tokens a CPU holds.
    pub burst: u32,
    /// `EVENTS_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// `ZA_EVBUDGET[0]` (per CPU): a token bucket. Tokens are kept in units of 1/`NS` so that
/// refilling needs no division: `tokens += elapsed_ns * rate`, capped at `burst * NS`; one
/// event takes `NS`. `elapsed_ns` is capped at `EVENT_REFILL_MAX_NS` first (so the product
/// fits in a u64 for any u32 rate). A bucket that was never used (`last_ns == 0`, the map's
/// initial content, or one the agent reset) starts full.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    pub tokens: u64,
    pub last_ns: u64,
    /// Events this CPU could not emit since its last emitted one (copied into
    /// `Event::lost_before` and reset when one is emitted).
    pub lost: u64,
}

/// Longest refill interval counted at once: 2^32 ns (about 4.3 s), so that
/// `elapsed * rate` fits in a u64 for every u32 `rate`. A bucket whose `burst` exceeds
/// 4.3 s of `rate` refills over several events instead of at once.
pub const EVENT_REFILL_MAX_NS: u64 = 1 << 32;

/// What one event reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A packet was dropped (`reason` is a `DropReason`).
    Deny = 0,
    /// A packet would have been dropped, or matched an audit rule, and was passed (audit).
    Audit = 1,
    /// An allowed packet opened a flow (`rule`, zones, tuple, MAC of the opener).
    FlowOpen = 2,
    /// A flow ended (`reason` is a `FlowEnd`), with its counters.
    FlowEnd = 3,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Deny,
        EventKind::Audit,
        EventKind::FlowOpen,
        EventKind::FlowEnd,
    ];
    /// The `kind` label of `zone_agent_events_total`.
    pub const fn label(self) -> &'static str {
        match self {
            EventKind::Deny => "deny",
            EventKind::Audit => "audit",
            EventKind::FlowOpen => "flow_open",
            EventKind::FlowEnd => "flow_end",
        }
    }
    pub const fn from_u8(v: u8) -> Option<EventKind> {
        match v {
            0 => Some(EventKind::Deny),
            1 => Some(EventKind::Audit),
            2 => Some(EventKind::FlowOpen),
            3 => Some(EventKind::FlowEnd),
            _ => None,
        }
    }
}

/// Why a flow ended (`Event::reason` of a `FlowEnd`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowEnd {
    /// Idle past its lifetime (no FIN or RST seen).
    Idle = 0,
    /// FIN seen in both directions.
    Closed = 1,
    /// The last packet was a RST.
    Reset = 2,
    /// A reload's policy no longer allows it (removed on its next packet).
    Revoked = 3,
}

impl FlowEnd {
    pub const ALL: [FlowEnd; 4] = [
        FlowEnd::Idle,
        FlowEnd::Closed,
        FlowEnd::Reset,
        FlowEnd::Revoked,
    ];
    pub const fn label(self) -> &'static str {
        match self {
            FlowEnd::Idle => "idle",
            FlowEnd::Closed => "closed",
            FlowEnd::Reset => "reset",
            FlowEnd::Revoked => "revoked",
        }
    }
    /// Why a flow that is found past its lifetime ended, from its `FLOW_*` flags (the same
    /// in the data path and in the agent's sweep): a RST last, FIN both ways, or neither.
    pub const fn of_expired(flags: u8) -> FlowEnd {
        if flags & crate::maps::FLOW_RST != 0 {
            FlowEnd::Reset
        } else if flags & crate::maps::FLOW_FIN_ORIG != 0
            && flags & crate::maps::FLOW_FIN_REPLY != 0
        {
            FlowEnd::Closed
        } else {
            FlowEnd::Idle
        }
    }
    pub const fn from_u8(v: u8) -> Option<FlowEnd> {
        match v {
            0 => Some(FlowEnd::Idle),
            1 => Some(FlowEnd::Closed),
            2 => Some(FlowEnd::Reset),
            3 => Some(FlowEnd::Revoked),
            _ => None,
        }
    }
}

/// Per-CPU counters in `ZA_EVSTATS` (u64 each). Indices; never renumber.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventStat {
    /// Written to the ring, by kind (`EmittedDeny + kind`).
    EmittedDeny = 0,
    EmittedAudit = 1,
    EmittedFlowOpen = 2,
    EmittedFlowEnd = 3,
    /// Refused by the token bucket (`events_lost_total{stage="rate_limited"}`).
    RateLimited = 4,
    /// The ring had no room (`events_lost_total{stage="ring_full"}`).
    RingFull = 5,
}

impl EventStat {
    /// Slots of `ZA_EVSTATS` (room for more without changing its size).
    pub const SLOTS: u32 = 16;
    pub const fn emitted(kind: EventKind) -> EventStat {
        match kind {
            EventKind::Deny => EventStat::EmittedDeny,
            EventKind::Audit => EventStat::EmittedAudit,
            EventKind::FlowOpen => EventStat::EmittedFlowOpen,
            EventKind::FlowEnd => EventStat::EmittedFlowEnd,
        }
    }
}

/// `stage` labels of `zone_agent_events_lost_total`: where an event was lost. The first two
/// are counted by the kernel, the others by the agent.
pub const LOST_RATE_LIMITED: &str = "rate_limited";
pub const LOST_RING_FULL: &str = "ring_full";
/// The agent's bounded queue behind the ring reader was full.
pub const LOST_AGENT_QUEUE: &str = "agent_queue";
/// The flow log could not be written.
pub const LOST_FLOW_LOG: &str = "flow_log";
/// An event the agent could not decode (a kernel/agent mismatch; never expected).
pub const LOST_UNDECODABLE: &str = "undecodable";

/// `Event::flags`.
/// The source address is IPv6 (else IPv4 in the first 4 bytes of `src`/`dst`).
pub const EVENT_V6: u8 = 1;
/// The ingress frame carried a VLAN tag (`vlan`).
pub const EVENT_VLAN: u8 = 1 << 1;
/// `FlowOpen`/`FlowEnd`: the flow was opened under an audit rule or in audit mode.
pub const EVENT_FLOW_AUDIT: u8 = 1 << 2;
/// `FlowEnd`: the flow had seen a reply.
pub const EVENT_FLOW_REPLIED: u8 = 1 << 3;

/// One record of `ZA_EVENTS`. For `Deny`/`Audit` and `FlowOpen` the tuple is the packet's
/// as it arrived (`src` sent it); for `FlowEnd` it is the flow's opener → responder, and
/// `orig_*`/`reply_*` count each direction. Times are `bpf_ktime_get_coarse_ns`
/// (CLOCK_MONOTONIC_COARSE); the agent turns them into wall-clock time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub time_ns: u64,
    /// `FlowEnd`: when the flow opened (same clock). Else 0.
    pub start_ns: u64,
    pub orig_packets: u64,
    pub orig_bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// Events this CPU lost (rate limit or full ring) since its previous emitted event.
    pub lost_before: u64,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ingress interface (for `FlowEnd`: the opener's).
    pub ifindex: u32,
    /// Rule id (index in file order of policy `generation`), or `NO_RULE`.
    pub rule: u32,
    /// Policy generation the decision was made under.
    pub generation: u32,
    /// Source port; ICMP: the echo identifier of a request (else 0).
    pub src_port: u16,
    /// Destination port; ICMP: `type << 8 | code` (for a flow: of its opening packet).
    pub dst_port: u16,
    pub vlan: u16,
    pub src_mac: [u8; 6],
    /// `EventKind`.
    pub kind: u8,
    /// `DropReason` (Deny/Audit; 0 for an audit rule's pass), `FlowEnd` (FlowEnd), else 0.
    pub reason: u8,
    pub from_zone: u8,
    pub to_zone: u8,
    /// IP protocol number.
    pub proto: u8,
    /// TCP flags byte of the packet (Deny/Audit/FlowOpen), or the flow's `FLOW_*` flags
    /// (FlowEnd).
    pub tcp_flags: u8,
    /// `EVENT_*`.
    pub flags: u8,
    pub _pad: u8,
}

/// `(src_port, dst_port)` of an event: the ports, or for ICMP/ICMPv6 the echo identifier as
/// the flow table keeps it (the source port of a request, else 0) and `type << 8 | code`.
#[inline(always)]
pub const fn event_ports(proto: u8, sport: u16, dport: u16, icmp_type: u8, code: u8) -> (u16, u16) {
    if proto == crate::maps::PROTO_ICMP || proto == crate::maps::PROTO_ICMPV6 {
        (sport, (icmp_type as u16) << 8 | code as u16)
    } else {
        (sport, dport)
    }
}

/// `EVENT_V6` and `EVENT_VLAN` of an address family and VLAN id.
#[inline(always)]
pub const fn event_flags(family: u8, vlan: u16) -> u8 {
    (if family == crate::maps::FAMILY_V6 {
        EVENT_V6
    } else {
        0
    }) | (if vlan != 0 { EVENT_VLAN } else { 0 })
}

impl Event {
    /// The `FlowEnd` record of flow `k` (`st` as it was when it ended): its opener's tuple,
    /// MAC and interface, its counters and start. What the data path writes when it removes
    /// a flow, and what the agent reports for the flows its sweep removes
    /// (`Maps::expire`, with `FlowEnd::of_expired`).
    #[inline(always)]
    pub fn flow_end(
        k: &crate::maps::FlowKey,
        st: &crate::maps::FlowState,
        end: FlowEnd,
        time_ns: u64,
        lost_before: u64,
    ) -> Event {
        use crate::maps::*;
        // The opener is end `a` or `b` of the key.
        let (src, sport, dst, dport) = if st.orig_is_a != 0 {
            (k.a, k.a_port, k.b, k.b_port)
        } else {
            (k.b, k.b_port, k.a, k.a_port)
        };
        // An echo flow keeps no ICMP type: its opener's is the request when the opener's
        // identifier sits in its source port (see `event_ports`), else the reply.
        let echo = match (k.family == FAMILY_V4, sport != 0) {
            (true, true) => ICMP_ECHO_REQUEST,
            (true, false) => ICMP_ECHO_REPLY,
            (false, true) => ICMPV6_ECHO_REQUEST,
            (false, false) => ICMPV6_ECHO_REPLY,
        };
        let (src_port, dst_port) = event_ports(k.proto, sport, dport, echo, 0);
        let audit = if st.flags & FLOW_AUDIT != 0 {
            EVENT_FLOW_AUDIT
        } else {
            0
        };
        let replied = if st.flags & FLOW_REPLIED != 0 {
            EVENT_FLOW_REPLIED
        } else {
            0
        };
        Event {
            time_ns,
            start_ns: st.start_ns,
            orig_packets: st.orig_packets,
            orig_bytes: st.orig_bytes,
            reply_packets: st.reply_packets,
            reply_bytes: st.reply_bytes,
            lost_before,
            src,
            dst,
            ifindex: st.orig_ifindex,
            rule: st.rule,
            generation: st.generation,
            src_port,
            dst_port,
            vlan: st.orig_vlan,
            src_mac: st.orig_mac,
            kind: EventKind::FlowEnd as u8,
            reason: end as u8,
            from_zone: st.from_zone,
            to_zone: st.to_zone,
            proto: k.proto,
            tcp_flags: st.flags,
            flags: event_flags(k.family, st.orig_vlan) | audit | replied,
            _pad: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<Event>() == 120);
const _: () = assert!(core::mem::size_of::<EventConfig>() == 16);
const _: () = assert!(core::mem::size_of::<EventBudget>() == 24);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), Copy, explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for EventConfig {}
    unsafe impl aya::Pod for EventBudget {}
}

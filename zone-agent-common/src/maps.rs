//! Map names, capacities and key/value layouts shared by the XDP program and the agent.
//!
//! Policy maps are double-buffered *inside* each map: every policy key carries a `set` byte
//! (0 or 1). The agent writes a complete policy into the inactive set, then flips
//! `ACTIVE[0]`; the program reads the active set once per packet, so a packet sees either the
//! old or the new policy, never a mixture. The old set is only rewritten by the next reload.

use crate::events::{
    EVENTS_RING_BYTES, EventBudget, EventConfig, EventStat, MAP_EVENT_BUDGET, MAP_EVENT_CONFIG,
    MAP_EVENT_STATS, MAP_EVENTS,
};
use crate::verdict::{DropReason, PassReason, Verdict};

/// Number of policy sets (double buffering).
pub const SETS: u32 = 2;
/// Zone ids are 1..MAX_ZONES-1; 0 means "in no zone".
pub const MAX_ZONES: u32 = 32;
/// Rules per set (rule ids are the index of the rule in file order).
pub const MAX_RULES: u32 = 1 << 17;
/// Candidate rules kept per class combination (see `RuleCands`).
pub const MAX_CANDS: usize = 4;
/// Number of ports per protocol in the port-class array.
pub const PORTS: u32 = 1 << 16;

pub const NO_ZONE: u8 = 0;
/// Reserved port class: "no port known" (non-TCP/UDP, or a fragment without L4 header).
/// Only rules without a port restriction cover it.
pub const PORT_CLASS_NONE: u16 = 0;

/// `AddrKey*.role`
pub const ROLE_SRC: u8 = 0;
pub const ROLE_DST: u8 = 1;
/// Bits of the LPM key that precede the address (`set` + `role`).
pub const ADDR_KEY_PREFIX_BITS: u32 = 16;

/// Protocol classes used in `RuleKey.proto`.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
/// Any other IP protocol (GRE, ESP, IP-in-IP...).
pub const PROTO_OTHER: u8 = 255;
pub const PROTO_CLASSES: [u8; 5] = [PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6, PROTO_OTHER];

/// ICMP echo types: the only ICMP messages that are flows (see `flowable` in the data path
/// and the model).
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Parser limits, the same for the data path (`zone-agent-ebpf/src/parse.rs`) and the
/// reference parser (`policy::frame`). 802.1Q/802.1ad tags walked; a third tag is
/// `HeaderLimit`.
pub const VLAN_MAX_DEPTH: usize = 2;
/// IPv6 extension headers walked before the upper-layer header; more is `HeaderLimit`.
pub const IPV6_EXT_MAX: usize = 6;
/// Largest offset (from the frame start) of an upper-layer header; a header chain longer
/// than that is `HeaderLimit`. Keeps every offset bounded for the verifier.
pub const MAX_L4_OFF: usize = 512;
/// No read starts beyond this offset: the furthest read is an ICMP error's quoted header,
/// 8 bytes past an upper-layer offset of at most `MAX_L4_OFF`; the bound only has to be a
/// constant the verifier can add to the packet pointer, and 128 leaves room for that.
pub const MAX_READ_OFF: usize = MAX_L4_OFF + 128;

/// Ethertypes (IEEE 802): IPv4, IPv6, ARP and the two VLAN tags (802.1Q, 802.1ad).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// IPv6 extension headers the data path walks to reach the upper-layer header (IANA
/// protocol numbers; RFC 8200 §4, RFC 4302 for AH).
pub const PROTO_IPV6_HOPOPTS: u8 = 0;
pub const PROTO_IPV6_ROUTING: u8 = 43;
pub const PROTO_IPV6_FRAGMENT: u8 = 44;
pub const PROTO_AH: u8 = 51;
pub const PROTO_IPV6_DSTOPTS: u8 = 60;

/// TCP flags: bits of byte 13 of the TCP header (RFC 9293 §3.1).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

/// ICMP errors: the messages that quote the offending packet (RFC 792).
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// ICMPv6 errors (RFC 4443 §2.1 reserves 0..=127 for errors; these four are defined): all
/// quote the offending packet.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
pub const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
/// Neighbour discovery (RFC 4861 §4): router solicitation (133), router advertisement,
/// neighbour solicitation, neighbour advertisement (136). Redirect (137) is not among the
/// messages the data path passes without policy.
pub const ICMPV6_ROUTER_SOLICIT: u8 = 133;
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// Hop limit of a neighbour-discovery message that no router has forwarded (RFC 4861 §7.1).
pub const ND_HOP_LIMIT: u8 = 255;

// Map names (<= 15 bytes: the kernel's BPF_OBJ_NAME_LEN).
pub const MAP_ACTIVE: &str = "ZA_ACTIVE";
pub const MAP_SETCONF: &str = "ZA_SETCONF";
pub const MAP_IFACES: &str = "ZA_IFACES";
pub const MAP_ADDR4: &str = "ZA_ADDR4";
pub const MAP_ADDR6: &str = "ZA_ADDR6";
pub const MAP_PORTS: &str = "ZA_PORTS";
pub const MAP_RULES: &str = "ZA_RULES";
pub const MAP_RULEINFO: &str = "ZA_RULEINFO";
pub const MAP_RULEMACS: &str = "ZA_RULEMACS";
pub const MAP_FLOWS: &str = "ZA_FLOWS";
pub const MAP_EMBRYOS: &str = "ZA_EMBRYOS";
pub const MAP_FLOW_STATS: &str = "ZA_FLOWSTATS";
pub const MAP_FRAGS: &str = "ZA_FRAGS";
pub const MAP_ZONE_STATS: &str = "ZA_ZONESTATS";
pub const MAP_RULE_STATS: &str = "ZA_RULESTATS";
pub const MAP_DROP_STATS: &str = "ZA_DROPSTATS";
pub const MAP_PASS_STATS: &str = "ZA_PASSSTATS";
pub const MAP_FAILSAFE_PORTS: &str = "ZA_FSPORTS";
pub const MAP_FAILSAFE: &str = "ZA_FAILSAFE";
pub const MAP_FAILSAFE_SRC: &str = "ZA_FSSRC";

// Capacities.
pub const CAP_IFACES: u32 = 1024;
pub const CAP_ADDR4: u32 = 2 * 262_144;
pub const CAP_ADDR6: u32 = 2 * 65_536;
pub const CAP_RULES: u32 = 2 * 524_288;
pub const CAP_RULEMACS: u32 = 2 * 65_536;
/// Replied flows (`ZA_FLOWS`): a plain hash, never evicted (see "Flow tables" below).
pub const CAP_FLOWS: u32 = 262_144;
/// Embryonic flows (`ZA_EMBRYOS`): an LRU, the only table new flows are inserted into.
pub const CAP_EMBRYOS: u32 = 131_072;
pub const CAP_FRAGS: u32 = 16_384;
pub const CAP_PORTS: u32 = SETS * 2 * PORTS;
pub const CAP_ZONE_STATS: u32 = SETS * MAX_ZONES * MAX_ZONES * Verdict::COUNT as u32;
pub const CAP_RULE_STATS: u32 = SETS * MAX_RULES;
/// Failsafe destination port bitmap: one bit per (TCP|UDP, port), 64 per slot.
pub const CAP_FAILSAFE_PORTS: u32 = 2 * PORTS / 64;
/// (interface, protocol, port, local address) tuples of failsafe flows.
pub const CAP_FAILSAFE: u32 = 4096;
/// Source prefixes of failsafe flows.
pub const CAP_FAILSAFE_SRC: u32 = 1024;
/// Failsafe entries (bits of the masks in `ZA_FAILSAFE` / `ZA_FSSRC`).
pub const MAX_FAILSAFE: usize = 32;

// Flow lifetimes (idle), in nanoseconds. Short for half-open and closing TCP so that a scan
// or a torn-down connection does not hold a slot.
pub const NS: u64 = 1_000_000_000;
pub const FLOW_TCP_OPEN_NS: u64 = 60 * NS;
pub const FLOW_TCP_ESTABLISHED_NS: u64 = 7_200 * NS;
pub const FLOW_TCP_CLOSING_NS: u64 = 10 * NS;
/// A TCP flow that saw a RST (conntrack's CLOSE): the RST does not delete the flow (a
/// forged one would cut a live connection), it only shortens its life; the next packet of
/// the flow that is not a RST gives it its normal lifetime back.
pub const FLOW_TCP_RESET_NS: u64 = 10 * NS;
pub const FLOW_UDP_NS: u64 = 120 * NS;
pub const FLOW_OTHER_NS: u64 = 30 * NS;
pub const FRAG_NS: u64 = 30 * NS;

/// Per-set configuration, `ZA_SETCONF[set]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetConfig {
    /// Policy generation installed in this set (monotonic, never 0 once installed).
    pub generation: u32,
    /// `SET_*` flags.
    pub flags: u32,
}
pub const SET_VALID: u32 = 1;
pub const SET_AUDIT: u32 = 1 << 1;
pub const SET_INTRA_ALLOW: u32 = 1 << 2;
pub const SET_UNKNOWN_ALLOW: u32 = 1 << 3;
pub const SET_FRAG_ALLOW: u32 = 1 << 4;

/// `ZA_IFACES` key: ingress interface and outer VLAN id (0 = untagged).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    pub ifindex: u32,
    pub vlan: u16,
    pub set: u8,
    pub _pad: u8,
}

/// `ZA_IFACES` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    pub zone: u8,
    pub _pad: [u8; 3],
}

/// LPM key data for `ZA_ADDR4` (prefix length = `ADDR_KEY_PREFIX_BITS` + address bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr4Key {
    pub set: u8,
    pub role: u8,
    pub addr: [u8; 4],
}

/// LPM key data for `ZA_ADDR6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr6Key {
    pub set: u8,
    pub role: u8,
    pub addr: [u8; 16],
}

/// What an address is: its zone (longest zone prefix) and its class (longest prefix among
/// zone networks and the rules' CIDRs of that role).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrClass {
    pub class: u32,
    pub zone: u8,
    pub _pad: [u8; 3],
}

/// `ZA_RULES` key: the class tuple of a packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub src_class: u32,
    pub dst_class: u32,
    pub port_class: u16,
    pub proto: u8,
    pub set: u8,
}

/// `ZA_RULES` value: the rules matching a class tuple, in file order, cut after the first
/// rule that always decides (enforcing, no MAC list). Unused slots are `u32::MAX`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleCands {
    pub rules: [u32; MAX_CANDS],
}
pub const NO_RULE: u32 = u32::MAX;

/// `ZA_RULEINFO[set * MAX_RULES + rule]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleInfo {
    pub flags: u32,
}
pub const RULE_AUDIT: u32 = 1;
pub const RULE_HAS_MACS: u32 = 1 << 1;

/// `ZA_RULEMACS` key: a source MAC a rule admits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub rule: u32,
    pub mac: [u8; 6],
    pub set: u8,
    pub _pad: u8,
}

/// `ZA_FLOWS` key. Normalised so that both directions of a flow give the same key: end `a`
/// is the (address, port) pair that sorts first in the data path's order (the address as
/// two native-endian u64 words, then the port); `FlowState::orig_is_a` says which end
/// opened the flow. IPv4 addresses use the first 4 bytes.
// align(8): the data path copies and hashes it in whole words (same size and layout).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub a: [u8; 16],
    pub b: [u8; 16],
    pub a_port: u16,
    pub b_port: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// `ZA_FLOWS` value. Keeps what is needed to re-decide the flow's opening packet after a
/// reload (ingress interface, VLAN, MAC), so the kernel can revalidate a flow of an older
/// policy generation without help from userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub last_seen_ns: u64,
    pub generation: u32,
    pub rule: u32,
    pub orig_ifindex: u32,
    pub orig_vlan: u16,
    pub orig_mac: [u8; 6],
    pub from_zone: u8,
    pub to_zone: u8,
    /// 1 if end `a` of the key opened the flow.
    pub orig_is_a: u8,
    /// `FLOW_*` flags.
    pub flags: u8,
    /// When the flow opened (same clock as `last_seen_ns`).
    pub start_ns: u64,
    /// Packets and bytes from the opener (`orig_*`) and from the responder (`reply_*`),
    /// counted by the data path (atomic adds: a flow's two directions may be handled on
    /// two CPUs) and reported when the flow ends.
    pub orig_packets: u64,
    pub orig_bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
}
pub const FLOW_AUDIT: u8 = 1;
pub const FLOW_FIN_ORIG: u8 = 1 << 1;
pub const FLOW_FIN_REPLY: u8 = 1 << 2;
pub const FLOW_REPLIED: u8 = 1 << 3;
/// The last packet of the flow was a TCP RST (lifetime `FLOW_TCP_RESET_NS`).
pub const FLOW_RST: u8 = 1 << 4;

// Flow tables. An allowed packet that opens a flow inserts it into `ZA_EMBRYOS`, an LRU:
// a host that floods new tuples (SYNs from random ports, say) only ever evicts other
// embryonic flows. The first reply (not a RST) promotes the flow into `ZA_FLOWS`, a plain
// hash that nothing evicts: entries leave it only by expiry, by revalidation after a reload
// or by being re-opened; when it is full a promotion is refused (counted) and the flow
// stays in `ZA_EMBRYOS`, where it keeps working. The data path probes `ZA_FLOWS` first
// (established traffic: one lookup, as before), then `ZA_EMBRYOS`. A key is in at most one
// of the two tables.

/// Flow-table events, counted per CPU in `ZA_FLOWSTATS[event]` (one u64 each). The numbers
/// are indices and must never be renumbered; `label()` is the metric label.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowEvent {
    /// An embryonic flow was inserted (`ZA_EMBRYOS`).
    Opened = 0,
    /// An embryonic flow got its first reply and moved to `ZA_FLOWS`.
    Promoted = 1,
    /// `ZA_FLOWS` was full: the flow stayed embryonic (evictable).
    PromotionRefused = 2,
    /// Inserting a new flow failed: the packet was dropped `table_full`.
    OpenRefused = 3,
    /// The data path removed an embryonic entry (expired, or revoked by a reload).
    EmbryoRemoved = 4,
    /// A TCP RST of a flow shortened its lifetime (it did not delete it).
    Reset = 5,
    /// The agent's expiry sweep removed an idle embryonic entry (written by the agent, in
    /// the first CPU's slot, so that the count outlives the agent like the others).
    EmbryoExpired = 6,
}

impl FlowEvent {
    /// Slots of `ZA_FLOWSTATS` (room for events added later without changing its size).
    pub const SLOTS: u32 = 16;
    pub const ALL: [FlowEvent; 7] = [
        FlowEvent::Opened,
        FlowEvent::Promoted,
        FlowEvent::PromotionRefused,
        FlowEvent::OpenRefused,
        FlowEvent::EmbryoRemoved,
        FlowEvent::Reset,
        FlowEvent::EmbryoExpired,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            FlowEvent::Opened => "opened",
            FlowEvent::Promoted => "promoted",
            FlowEvent::PromotionRefused => "promotion_refused",
            FlowEvent::OpenRefused => "open_refused",
            FlowEvent::EmbryoRemoved => "embryo_removed",
            FlowEvent::Reset => "reset",
            FlowEvent::EmbryoExpired => "embryo_expired",
        }
    }
}

/// `map` label values of the flow tables in `zone_agent_map_entries` / `_capacity` and
/// `zone_agent_flow_evictions_total`.
pub const LABEL_FLOWS: &str = "flows";
pub const LABEL_EMBRYOS: &str = "embryonic_flows";

/// `ZA_FRAGS` key: one fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// `ZA_FRAGS` value: the verdict of the first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragState {
    pub last_seen_ns: u64,
    pub generation: u32,
    pub rule: u32,
    /// Source MAC of the first fragment: later fragments must come from the same host.
    pub mac: [u8; 6],
    pub from_zone: u8,
    pub to_zone: u8,
    pub flags: u8,
    pub _pad: [u8; 7],
}

/// One per-CPU counter slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `ZA_FAILSAFE` key: a management destination on the gateway itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FailsafeKey {
    pub ifindex: u32,
    pub port: u16,
    pub proto: u8,
    pub family: u8,
    pub addr: [u8; 16],
}

/// LPM key data for `ZA_FSSRC` (prefix length = `FAILSAFE_SRC_PREFIX_BITS` + address bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailsafeSrcKey {
    pub family: u8,
    pub addr: [u8; 16],
}

/// Bits of a `FailsafeSrcKey` that precede the address (`family`).
pub const FAILSAFE_SRC_PREFIX_BITS: u32 = 8;

/// Word and bit of a failsafe port in `ZA_FSPORTS`.
#[inline(always)]
pub const fn failsafe_port_slot(udp: bool, port: u16) -> (u32, u64) {
    (
        (udp as u32) * (PORTS / 64) + (port as u32) / 64,
        1u64 << (port % 64),
    )
}

/// Index of a zone-pair counter: `[set][from][to][verdict]` in one flat array. Each
/// coordinate is reduced modulo its dimension so that the index is below `CAP_ZONE_STATS`
/// whatever the inputs (the verifier needs that bound; valid inputs are already in range).
#[inline(always)]
pub const fn zone_stat_index(set: u32, from: u8, to: u8, verdict: u8) -> u32 {
    const VERDICTS: u32 = Verdict::COUNT as u32;
    ((set * MAX_ZONES + (from as u32 % MAX_ZONES)) * MAX_ZONES + (to as u32 % MAX_ZONES)) * VERDICTS
        + (verdict as u32 % VERDICTS)
}

/// Index of a port-class entry.
#[inline(always)]
pub const fn port_index(set: u32, udp: bool, port: u16) -> u32 {
    (set * 2 + udp as u32) * PORTS + port as u32
}

const _: () = assert!(core::mem::size_of::<IfaceKey>() == 8);
const _: () = assert!(core::mem::size_of::<Addr4Key>() == 6);
const _: () = assert!(core::mem::size_of::<Addr6Key>() == 18);
const _: () = assert!(core::mem::size_of::<AddrClass>() == 8);
const _: () = assert!(core::mem::size_of::<RuleKey>() == 12);
const _: () = assert!(core::mem::size_of::<RuleCands>() == 16);
const _: () = assert!(core::mem::size_of::<MacKey>() == 12);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowState>() == 72);
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);
const _: () = assert!(core::mem::size_of::<FragState>() == 32);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<FailsafeKey>() == 24);
const _: () = assert!(core::mem::size_of::<FailsafeSrcKey>() == 17);

/// Version of the meaning of the maps' contents. Bump it whenever a change keeps a map's
/// sizes but changes what its bytes mean (a flag, a key normalisation, an index formula):
/// pinned maps of another ABI are never reused (`abi_fingerprint`).
/// 2: `ZA_FLOWS` became a plain hash of replied flows beside the `ZA_EMBRYOS` LRU, and
/// `FLOW_RST` was added (the map type is not in `MapLayout`, hence the bump).
/// 3: events (`ZA_EVENTS` ring, `ZA_EVBUDGET`, `ZA_EVSTATS`, `ZA_EVCONF`) and the per-flow
/// counters (`FlowState` grew from 32 to 72 bytes; its first 32 bytes kept their meaning).
pub const ABI_VERSION: u32 = 3;

/// Layout of one map that outlives the agent (pinned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn layout<K, V>(name: &'static str, max_entries: u32) -> MapLayout {
    MapLayout {
        name,
        key_size: core::mem::size_of::<K>() as u32,
        value_size: core::mem::size_of::<V>() as u32,
        max_entries,
    }
}

/// An LPM trie's key is a 4-byte prefix length followed by the data.
const fn lpm_layout<K, V>(name: &'static str, max_entries: u32) -> MapLayout {
    let mut l = layout::<K, V>(name, max_entries);
    l.key_size += 4;
    l
}

/// Every map that is pinned, with the layout the XDP program was built for. LPM keys carry
/// a 4-byte prefix length in front of their data. (`ZA_SCRATCH` is per invocation and
/// not pinned.)
pub const PINNED_MAPS: [MapLayout; 24] = [
    layout::<u32, u32>(MAP_ACTIVE, 1),
    layout::<u32, SetConfig>(MAP_SETCONF, SETS),
    layout::<IfaceKey, IfaceInfo>(MAP_IFACES, CAP_IFACES),
    lpm_layout::<Addr4Key, AddrClass>(MAP_ADDR4, CAP_ADDR4),
    lpm_layout::<Addr6Key, AddrClass>(MAP_ADDR6, CAP_ADDR6),
    layout::<u32, u16>(MAP_PORTS, CAP_PORTS),
    layout::<RuleKey, RuleCands>(MAP_RULES, CAP_RULES),
    layout::<u32, RuleInfo>(MAP_RULEINFO, SETS * MAX_RULES),
    layout::<MacKey, u8>(MAP_RULEMACS, CAP_RULEMACS),
    layout::<FlowKey, FlowState>(MAP_FLOWS, CAP_FLOWS),
    layout::<FlowKey, FlowState>(MAP_EMBRYOS, CAP_EMBRYOS),
    layout::<u32, u64>(MAP_FLOW_STATS, FlowEvent::SLOTS),
    layout::<FragKey, FragState>(MAP_FRAGS, CAP_FRAGS),
    layout::<u32, Counter>(MAP_ZONE_STATS, CAP_ZONE_STATS),
    layout::<u32, Counter>(MAP_RULE_STATS, CAP_RULE_STATS),
    layout::<u32, Counter>(MAP_DROP_STATS, 2 * DropReason::SLOTS),
    layout::<u32, Counter>(MAP_PASS_STATS, PassReason::SLOTS),
    layout::<u32, u64>(MAP_FAILSAFE_PORTS, CAP_FAILSAFE_PORTS),
    layout::<FailsafeKey, u32>(MAP_FAILSAFE, CAP_FAILSAFE),
    lpm_layout::<FailsafeSrcKey, u32>(MAP_FAILSAFE_SRC, CAP_FAILSAFE_SRC),
    // A ring buffer has no keys or values: the kernel reports sizes 0 and its byte size as
    // `max_entries`.
    layout::<(), ()>(MAP_EVENTS, EVENTS_RING_BYTES),
    layout::<u32, EventBudget>(MAP_EVENT_BUDGET, 1),
    layout::<u32, u64>(MAP_EVENT_STATS, EventStat::SLOTS),
    layout::<u32, EventConfig>(MAP_EVENT_CONFIG, 1),
];

/// FNV-1a over `ABI_VERSION` and `PINNED_MAPS`: pinned state is only adopted by an agent
/// with the same fingerprint; any other is replaced.
pub const fn abi_fingerprint() -> u64 {
    const fn eat(mut h: u64, bytes: &[u8]) -> u64 {
        let mut i = 0;
        while i < bytes.len() {
            h ^= bytes[i] as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
            i += 1;
        }
        h
    }
    let mut h = eat(0xcbf2_9ce4_8422_2325, &ABI_VERSION.to_le_bytes());
    let mut i = 0;
    while i < PINNED_MAPS.len() {
        let m = &PINNED_MAPS[i];
        h = eat(h, m.name.as_bytes());
        h = eat(h, &m.key_size.to_le_bytes());
        h = eat(h, &m.value_size.to_le_bytes());
        h = eat(h, &m.max_entries.to_le_bytes());
        i += 1;
    }
    h
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for SetConfig {}
    unsafe impl aya::Pod for IfaceKey {}
    unsafe impl aya::Pod for IfaceInfo {}
    unsafe impl aya::Pod for Addr4Key {}
    unsafe impl aya::Pod for Addr6Key {}
    unsafe impl aya::Pod for AddrClass {}
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for RuleCands {}
    unsafe impl aya::Pod for RuleInfo {}
    unsafe impl aya::Pod for MacKey {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowState {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragState {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for FailsafeKey {}
    unsafe impl aya::Pod for FailsafeSrcKey {}
}

/// Idle lifetime of a flow entry, shared by the kernel (expiry on lookup) and the agent
/// (garbage collection) and the model.
#[inline(always)]
pub const fn flow_lifetime(proto: u8, flags: u8) -> u64 {
    match proto {
        PROTO_TCP => {
            if flags & FLOW_RST != 0 {
                FLOW_TCP_RESET_NS
            } else if flags & FLOW_FIN_ORIG != 0 && flags & FLOW_FIN_REPLY != 0 {
                FLOW_TCP_CLOSING_NS
            } else if flags & FLOW_REPLIED != 0 {
                FLOW_TCP_ESTABLISHED_NS
            } else {
                FLOW_TCP_OPEN_NS
            }
        }
        PROTO_UDP => FLOW_UDP_NS,
        _ => FLOW_OTHER_NS,
    }
}

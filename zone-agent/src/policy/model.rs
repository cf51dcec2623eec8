//! The reference model: SPEC §3 stated as plain Rust.
//!
//! This is the oracle the XDP program is tested against, so it is written independently of
//! the data path and as simply as possible: every decision is a direct scan over the zones and
//! rules of the validated [`Policy`], flows and fragment entries are ordinary hash maps, and
//! nothing is precompiled. Where it is slow, it is slow on purpose.
//!
//! Precedence (first applicable wins). Step 1 (frame parsing, ARP/ND) lives in
//! [`super::frame`]; [`Model::decide`] starts at step 2 with a parsed [`Packet`]:
//!
//!  2. the ingress (interface, outer VLAN) belongs to no zone → drop `unknown_interface`;
//!  3. the source address's longest-prefix zone is another zone → drop `spoofed_source`
//!     (both drops are recorded with from = to = 0, as the kernel does);
//!  4. source or destination address in no zone → `defaults.unknown`;
//!  5. same zone on both sides → `defaults.intra_zone`;
//!  6. ICMP error quoting a live flow of this generation, entering through the zone opposite
//!     the quoted packet's sender → pass `related`;
//!  7. a packet of a live flow (L4 known) → pass `established` / `reply` (after lazily
//!     re-deciding a flow of an older generation against the current policy);
//!  8. a non-first fragment tied to an allowed first fragment → pass `fragment`; an untied one
//!     is dropped (`defaults.fragments = deny`) or judged by port-less rules only (`allow`);
//!  9. rules in file order → pass `rule` (audit when only audit-mode rules match) and open a
//!     flow / fragment entry; else drop `mac_mismatch` or `no_rule`.
//!
//! Global `mode = "audit"` turns an auditable drop into a pass with verdict `audit`; that is
//! an accounting matter ([`Decision::verdict`], [`Decision::xdp_pass`]) and opens no flow.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use zone_agent_common::{
    Counter, DropReason, FLOW_OTHER_NS, FLOW_TCP_CLOSING_NS, FLOW_TCP_ESTABLISHED_NS,
    FLOW_TCP_OPEN_NS, FLOW_TCP_RESET_NS, FLOW_UDP_NS, FRAG_NS, FlowEvent, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, PassReason, Verdict,
};

use super::types::{Action, Mac, Mode, Policy, Protocol, Rule};

/// Protocol numbers and TCP flags are the common crate's (one definition for the kernel and
/// the model); re-exported here for the model's users.
pub use zone_agent_common::{
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

/// Fragment position of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Frag {
    /// Not a fragment (or an IPv6 atomic fragment).
    #[default]
    None,
    /// First fragment: offset 0, more fragments follow. Its L4 header is parsed.
    First,
    /// Non-first fragment: no L4 header.
    Later,
}

/// The flow-relevant fields of a packet (also: the packet quoted by an ICMP error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP/UDP ports; ICMP echo request (id, 0), echo reply (0, id), other ICMP (0, 0).
    pub sport: u16,
    pub dport: u16,
}

/// A parsed packet, as the data path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Ingress interface name.
    pub ifname: String,
    /// Outer VLAN id, 0 if untagged.
    pub vlan: u16,
    pub src_mac: Mac,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (after the IPv6 extension headers that were walked).
    pub proto: u8,
    /// True if the ports / ICMP header are known (TCP, UDP, ICMP of the packet's family, and
    /// not a non-first fragment).
    pub l4: bool,
    /// TCP/UDP ports; ICMP echo request (id, 0), echo reply (0, id), other ICMP (0, 0).
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type when `l4` and `proto` is the family's ICMP, else 0.
    pub icmp_type: u8,
    pub frag: Frag,
    /// IPv4 identification or IPv6 fragment-header identification.
    pub frag_id: u32,
    /// For an ICMP/ICMPv6 error: the quoted packet's tuple, when the quote was complete.
    pub inner: Option<Tuple>,
    /// Frame length in bytes (what the byte counters add).
    pub len: u64,
}

impl Packet {
    /// A whole, unfragmented packet with its L4 header known when `proto` has one in this
    /// family (TCP, UDP, ICMP for IPv4, ICMPv6 for IPv6; ICMP is an echo request). Handy for
    /// tests and `explain`.
    pub fn new(
        ifname: &str,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        sport: u16,
        dport: u16,
    ) -> Packet {
        let icmp =
            (proto == PROTO_ICMP && src.is_ipv4()) || (proto == PROTO_ICMPV6 && src.is_ipv6());
        let l4 = matches!(proto, PROTO_TCP | PROTO_UDP) || icmp;
        Packet {
            ifname: ifname.to_string(),
            vlan: 0,
            src_mac: [0x02, 0, 0, 0, 0, 1],
            src,
            dst,
            proto,
            l4,
            sport: if l4 { sport } else { 0 },
            dport: if l4 { dport } else { 0 },
            tcp_flags: 0,
            icmp_type: match proto {
                _ if !icmp => 0,
                PROTO_ICMP => ICMP_ECHO_REQUEST,
                _ => ICMPV6_ECHO_REQUEST,
            },
            frag: Frag::None,
            frag_id: 0,
            inner: None,
            len: 64,
        }
    }

    /// Whether the packet belongs in the flow table: TCP, UDP and ICMP echo request/reply
    /// with their header. Other ICMP messages have no identifier to tell flows apart; they
    /// pass as related (errors quoting a flow) or by rule, never as a flow of their own.
    pub fn flowable(&self) -> bool {
        if !self.has_l4() {
            return false;
        }
        match self.proto {
            PROTO_ICMP if self.src.is_ipv4() => {
                matches!(self.icmp_type, ICMP_ECHO_REPLY | ICMP_ECHO_REQUEST)
            }
            PROTO_ICMPV6 if self.src.is_ipv6() => {
                matches!(self.icmp_type, ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY)
            }
            _ => true,
        }
    }

    /// Key of the datagram a fragment belongs to: (source, destination, identification) and,
    /// for IPv4, the protocol (RFC 791). IPv6 leaves the protocol out (RFC 8200 §4.5: the
    /// identification is unique per address pair); a later fragment only shows the fragment
    /// header's next header, not the upper-layer protocol when more extension headers follow.
    fn frag_key(&self) -> FragKey {
        let proto = if self.src.is_ipv4() { self.proto } else { 0 };
        FragKey {
            src: self.src,
            dst: self.dst,
            id: self.frag_id,
            proto,
        }
    }

    pub fn tuple(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
        }
    }

    /// Ports / ICMP ids usable: a non-first fragment never has them, whatever `l4` says.
    pub fn has_l4(&self) -> bool {
        self.l4 && self.frag != Frag::Later
    }

    pub fn tcp_rst(&self) -> bool {
        self.proto == PROTO_TCP && self.tcp_flags & TCP_RST != 0
    }

    pub fn tcp_fin(&self) -> bool {
        self.proto == PROTO_TCP && self.tcp_flags & TCP_FIN != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Pass(PassReason),
    Drop(DropReason),
}

/// What the data path decides for one packet, and what it records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Zone id the packet comes from (ingress zone), 0 when not resolved: parse drops,
    /// neighbour discovery, unknown interface and spoofed source are recorded as (0, 0).
    pub from: u8,
    /// Zone id of the destination address, 0 when not resolved or in no zone.
    pub to: u8,
    /// Index of the rule whose counters move (first matching rule, or the rule that opened
    /// the flow / first fragment the packet belongs to).
    pub rule: Option<usize>,
    /// Passed only because of an audit-mode rule (all matching rules were audit-mode, or the
    /// flow/fragment it belongs to was opened that way). Global audit mode is not included:
    /// see [`Decision::verdict`].
    pub audit: bool,
}

impl Decision {
    fn early(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            from: 0,
            to: 0,
            rule: None,
            audit: false,
        }
    }

    fn apply(&mut self, hit: Result<Hit, DropReason>) {
        match hit {
            Ok(h) => {
                self.outcome = Outcome::Pass(h.reason);
                self.rule = Some(h.rule);
                self.audit = h.audit;
            }
            Err(r) => self.outcome = Outcome::Drop(r),
        }
    }

    /// A drop that global audit mode turns into a pass.
    pub fn audited_drop(&self, policy_mode_audit: bool) -> bool {
        matches!(self.outcome, Outcome::Drop(r) if policy_mode_audit && r.auditable())
    }

    /// The verdict counted per zone pair: allow, deny, or audit (passed only because of an
    /// audit-mode rule, or a drop that global audit mode passed).
    pub fn verdict(&self, policy_mode_audit: bool) -> Verdict {
        match self.outcome {
            Outcome::Pass(_) if self.audit => Verdict::Audit,
            Outcome::Pass(_) => Verdict::Allow,
            Outcome::Drop(_) if self.audited_drop(policy_mode_audit) => Verdict::Audit,
            Outcome::Drop(_) => Verdict::Deny,
        }
    }

    /// XDP_PASS (true) or XDP_DROP (false).
    pub fn xdp_pass(&self, policy_mode_audit: bool) -> bool {
        self.verdict(policy_mode_audit) != Verdict::Deny
    }

    pub fn reason_label(&self) -> &'static str {
        match self.outcome {
            Outcome::Pass(r) => r.label(),
            Outcome::Drop(r) => r.label(),
        }
    }
}

/// The model's counters, indexed like the kernel's (without the policy set: they are
/// cumulative since [`Model::new`]; a rule index means the rule of the policy that was
/// active when the packet was decided).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCounters {
    /// Per (from zone, to zone, verdict).
    pub zone_pairs: BTreeMap<(u8, u8, Verdict), Counter>,
    /// Per rule index.
    pub rules: BTreeMap<usize, Counter>,
    /// Per drop reason: index `reason`, or `DropReason::AUDIT_OFFSET + reason` when global
    /// audit mode passed it.
    pub drops: BTreeMap<u32, Counter>,
    /// Per pass reason (`reason as u32`).
    pub passes: BTreeMap<u32, Counter>,
    /// Per flow-table event (`FlowEvent as u32`), in `packets` (`bytes` stays 0). The
    /// model has no capacity: nothing is refused or evicted.
    pub flow_events: BTreeMap<u32, Counter>,
}

fn bump(c: &mut Counter, len: u64) {
    c.packets += 1;
    c.bytes += len;
}

impl ModelCounters {
    pub fn zone_pair(&self, from: u8, to: u8, verdict: Verdict) -> Counter {
        self.zone_pairs
            .get(&(from, to, verdict))
            .copied()
            .unwrap_or_default()
    }
    pub fn rule(&self, rule: usize) -> Counter {
        self.rules.get(&rule).copied().unwrap_or_default()
    }
    pub fn drop(&self, reason: DropReason, audited: bool) -> Counter {
        let i = reason as u32 + if audited { DropReason::AUDIT_OFFSET } else { 0 };
        self.drops.get(&i).copied().unwrap_or_default()
    }
    pub fn pass(&self, reason: PassReason) -> Counter {
        self.passes
            .get(&(reason as u32))
            .copied()
            .unwrap_or_default()
    }
    pub fn flow_event(&self, e: FlowEvent) -> u64 {
        self.flow_events.get(&(e as u32)).map_or(0, |c| c.packets)
    }
    fn count_flow_event(&mut self, e: FlowEvent) {
        self.flow_events.entry(e as u32).or_default().packets += 1;
    }
    /// Total packets decided.
    pub fn packets(&self) -> u64 {
        self.zone_pairs.values().map(|c| c.packets).sum()
    }

    fn record(&mut self, d: &Decision, policy_mode_audit: bool, len: u64) {
        if let Some(r) = d.rule {
            bump(self.rules.entry(r).or_default(), len);
        }
        match d.outcome {
            Outcome::Pass(r) => bump(self.passes.entry(r as u32).or_default(), len),
            Outcome::Drop(r) => {
                let audited = d.audited_drop(policy_mode_audit);
                let i = r as u32 + if audited { DropReason::AUDIT_OFFSET } else { 0 };
                bump(self.drops.entry(i).or_default(), len);
            }
        }
        let v = d.verdict(policy_mode_audit);
        bump(self.zone_pairs.entry((d.from, d.to, v)).or_default(), len);
    }
}

// ---------------------------------------------------------------------------------------
// Stateless lookups over the policy (pub: `explain` reuses them for its hints).

/// Zone id of an ingress interface + outer VLAN (0 = untagged), 0 if none.
pub fn ingress_zone(policy: &Policy, ifname: &str, vlan: u16) -> u8 {
    for (i, z) in policy.zones.iter().enumerate() {
        for iface in &z.interfaces {
            if iface.name == ifname && iface.vlan.unwrap_or(0) == vlan {
                return Policy::zone_id(i);
            }
        }
    }
    0
}

/// Zone id of the longest zone network containing `addr` (over all zones), 0 if none.
pub fn addr_zone(policy: &Policy, addr: IpAddr) -> u8 {
    let mut best: Option<(u8, u8)> = None; // (prefix length, zone id)
    for (i, z) in policy.zones.iter().enumerate() {
        for net in &z.networks {
            if net.contains(&addr) && best.is_none_or(|(len, _)| net.prefix_len() > len) {
                best = Some((net.prefix_len(), Policy::zone_id(i)));
            }
        }
    }
    best.map(|(_, id)| id).unwrap_or(0)
}

/// Zones of a packet: ingress zone, zone of the source address, zone of the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Zones {
    from: u8,
    src_zone: u8,
    to: u8,
}

/// Steps 2 and 3.
fn resolve(
    policy: &Policy,
    ifname: &str,
    vlan: u16,
    src: IpAddr,
    dst: IpAddr,
) -> Result<Zones, DropReason> {
    let from = ingress_zone(policy, ifname, vlan);
    if from == 0 {
        return Err(DropReason::UnknownInterface);
    }
    // Link-scoped addresses belong to the ingress link (zone_agent_common::scope).
    let src_zone = if link_scoped(src, true) {
        from
    } else {
        addr_zone(policy, src)
    };
    if src_zone != 0 && src_zone != from {
        return Err(DropReason::SpoofedSource);
    }
    let to = if link_scoped(dst, false) {
        from
    } else {
        addr_zone(policy, dst)
    };
    Ok(Zones { from, src_zone, to })
}

/// `zone_agent_common::scope` on an `IpAddr` (as a source if `src`, else as a destination).
pub fn link_scoped(a: IpAddr, src: bool) -> bool {
    let (family, bytes) = match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (zone_agent_common::FAMILY_V4, b)
        }
        IpAddr::V6(v6) => (zone_agent_common::FAMILY_V6, v6.octets()),
    };
    if src {
        zone_agent_common::link_scoped_src(family, &bytes)
    } else {
        zone_agent_common::link_scoped_dst(family, &bytes)
    }
}

/// What a rule is compared against.
#[derive(Clone, Copy, Debug)]
pub struct RuleInput {
    pub from: u8,
    pub to: u8,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Destination port known (TCP/UDP header present).
    pub l4: bool,
    pub dport: u16,
    pub mac: Mac,
}

impl RuleInput {
    pub fn of(p: &Packet, from: u8, to: u8) -> RuleInput {
        RuleInput {
            from,
            to,
            proto: p.proto,
            src: p.src,
            dst: p.dst,
            l4: p.has_l4(),
            dport: p.dport,
            mac: p.src_mac,
        }
    }
}

/// Which parts of a rule a packet satisfies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleCheck {
    pub from: bool,
    pub to: bool,
    pub protocol: bool,
    pub port: bool,
    pub source: bool,
    pub destination: bool,
    pub mac: bool,
}

impl RuleCheck {
    pub fn full(&self) -> bool {
        self.all_but_mac() && self.mac
    }
    pub fn all_but_mac(&self) -> bool {
        self.from && self.to && self.protocol && self.port && self.source && self.destination
    }
    /// Number of failed criteria (for "closest rule" hints).
    pub fn failures(&self) -> usize {
        [
            self.from,
            self.to,
            self.protocol,
            self.port,
            self.source,
            self.destination,
            self.mac,
        ]
        .iter()
        .filter(|ok| !**ok)
        .count()
    }
}

/// Whether a rule's protocol covers an IP protocol number in the given family.
pub fn protocol_matches(proto: Protocol, ip_proto: u8, v4: bool) -> bool {
    match proto {
        Protocol::Tcp => ip_proto == PROTO_TCP,
        Protocol::Udp => ip_proto == PROTO_UDP,
        Protocol::Icmp => ip_proto == PROTO_ICMP && v4,
        Protocol::Icmpv6 => ip_proto == PROTO_ICMPV6 && !v4,
        Protocol::Any => true,
    }
}

pub fn check_rule(rule: &Rule, x: &RuleInput) -> RuleCheck {
    RuleCheck {
        from: Policy::zone_id(rule.from) == x.from,
        to: Policy::zone_id(rule.to) == x.to,
        protocol: protocol_matches(rule.protocol, x.proto, x.src.is_ipv4()),
        port: rule.ports.is_empty()
            || (x.l4
                && matches!(x.proto, PROTO_TCP | PROTO_UDP)
                && rule.ports.iter().any(|r| r.contains(x.dport))),
        // Rules are for routed traffic: a link-scoped source matches none.
        source: !link_scoped(x.src, true)
            && (rule.sources.is_empty() || rule.sources.iter().any(|n| n.contains(&x.src))),
        destination: rule.destinations.is_empty()
            || rule.destinations.iter().any(|n| n.contains(&x.dst)),
        mac: rule.source_macs.is_empty() || rule.source_macs.contains(&x.mac),
    }
}

/// A rule match: the first matching rule (counters) and whether only audit-mode rules matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    pub rule: usize,
    pub audit: bool,
}

/// Step 9: all rules, in file order.
pub fn find_rule(policy: &Policy, x: &RuleInput) -> Result<RuleMatch, DropReason> {
    let mut first = None;
    let mut enforced = false;
    let mut mac_only = false;
    for (i, rule) in policy.rules.iter().enumerate() {
        let c = check_rule(rule, x);
        if c.full() {
            first.get_or_insert(i);
            enforced |= rule.mode == Mode::Enforce;
        } else if c.all_but_mac() {
            mac_only = true;
        }
    }
    match first {
        Some(rule) => Ok(RuleMatch {
            rule,
            audit: !enforced,
        }),
        None if mac_only => Err(DropReason::MacMismatch),
        None => Err(DropReason::NoRule),
    }
}

// ---------------------------------------------------------------------------------------
// State.

/// One end of a flow.
type End = (IpAddr, u16);

/// Unordered pair of ends + protocol: both directions give the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    proto: u8,
    lo: End,
    hi: End,
}

impl FlowKey {
    fn new(proto: u8, x: End, y: End) -> FlowKey {
        if x <= y {
            FlowKey {
                proto,
                lo: x,
                hi: y,
            }
        } else {
            FlowKey {
                proto,
                lo: y,
                hi: x,
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Flow {
    /// Source end of the opening packet (which direction is "original").
    orig_src: End,
    orig_dst: End,
    orig_ifname: String,
    orig_vlan: u16,
    orig_mac: Mac,
    from: u8,
    to: u8,
    rule: usize,
    audit: bool,
    generation: u32,
    last_seen: u64,
    fin_orig: bool,
    fin_reply: bool,
    replied: bool,
    /// The last packet was a RST: the flow lives `FLOW_TCP_RESET_NS` more, unless a packet
    /// that is not a RST follows.
    rst: bool,
    /// Packets and bytes that passed as this flow's, from the opener (the opening packet
    /// included) and from the responder.
    counts: FlowCounts,
}

/// A flow's packets and bytes per direction (the kernel's `FlowState` counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub orig_packets: u64,
    pub orig_bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
}

impl FlowCounts {
    fn add(&mut self, orig: bool, len: u64) {
        if orig {
            self.orig_packets += 1;
            self.orig_bytes += len;
        } else {
            self.reply_packets += 1;
            self.reply_bytes += len;
        }
    }
}

impl Flow {
    fn lifetime(&self, proto: u8) -> u64 {
        match proto {
            PROTO_TCP if self.rst => FLOW_TCP_RESET_NS,
            PROTO_TCP if self.fin_orig && self.fin_reply => FLOW_TCP_CLOSING_NS,
            PROTO_TCP if self.replied => FLOW_TCP_ESTABLISHED_NS,
            PROTO_TCP => FLOW_TCP_OPEN_NS,
            PROTO_UDP => FLOW_UDP_NS,
            _ => FLOW_OTHER_NS,
        }
    }

    fn expired(&self, proto: u8, now: u64) -> bool {
        now.saturating_sub(self.last_seen) > self.lifetime(proto)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

#[derive(Clone, Debug)]
struct FragEntry {
    mac: Mac,
    from: u8,
    rule: usize,
    audit: bool,
    generation: u32,
    first_seen: u64,
}

/// A flow as listed by [`Model::flow_list`] (for tests and comparisons with the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub proto: u8,
    pub orig_src: (IpAddr, u16),
    pub orig_dst: (IpAddr, u16),
    pub from: u8,
    pub to: u8,
    pub rule: usize,
    pub audit: bool,
    pub generation: u32,
    pub replied: bool,
    /// In the embryonic table (LRU) rather than the table of replied flows. The first
    /// reply that is not a RST promotes a flow; the model has no capacity, so every
    /// promotion succeeds and this is `!replied`.
    pub embryonic: bool,
    pub counts: FlowCounts,
}

/// How a packet got through (internal).
struct Hit {
    reason: PassReason,
    rule: usize,
    audit: bool,
}

pub struct Model {
    policy: Policy,
    /// Failsafe management flows (agent configuration, checked before the policy).
    failsafe: Vec<FailsafeEntry>,
    generation: u32,
    flows: HashMap<FlowKey, Flow>,
    frags: HashMap<FragKey, FragEntry>,
    counters: ModelCounters,
}

impl Model {
    /// Generation 1, no flows.
    pub fn new(policy: Policy) -> Model {
        Model {
            policy,
            failsafe: Vec::new(),
            generation: 1,
            flows: HashMap::new(),
            frags: HashMap::new(),
            counters: ModelCounters::default(),
        }
    }

    /// Install a new policy: generation + 1. Flows and fragment entries are kept; a flow of
    /// an older generation is re-decided when a packet next looks it up (step 7), fragment
    /// entries and ICMP-related lookups simply stop matching.
    pub fn reload(&mut self, policy: Policy) {
        self.policy = policy;
        self.generation += 1;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Installs failsafe flows (step 0), as the agent does from its configuration.
    pub fn set_failsafe(&mut self, failsafe: Vec<FailsafeEntry>) {
        self.failsafe = failsafe;
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn audit_mode(&self) -> bool {
        self.policy.mode == Mode::Audit
    }

    /// The verdict of a decision under the current policy's global mode.
    pub fn verdict(&self, d: &Decision) -> Verdict {
        d.verdict(self.audit_mode())
    }

    /// Flow entries held (including expired ones not yet looked up, like the kernel's map).
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Fragment entries held.
    pub fn fragments(&self) -> usize {
        self.frags.len()
    }

    pub fn flow_list(&self) -> Vec<FlowInfo> {
        let mut v: Vec<FlowInfo> = self
            .flows
            .iter()
            .map(|(k, f)| FlowInfo {
                proto: k.proto,
                orig_src: f.orig_src,
                orig_dst: f.orig_dst,
                from: f.from,
                to: f.to,
                rule: f.rule,
                audit: f.audit,
                generation: f.generation,
                replied: f.replied,
                embryonic: !f.replied,
                counts: f.counts,
            })
            .collect();
        v.sort_by_key(|f| (f.proto, f.orig_src, f.orig_dst));
        v
    }

    pub fn counters(&self) -> &ModelCounters {
        &self.counters
    }

    /// Record a decision taken before the model (by the frame parser: a parse drop or a
    /// neighbour-discovery pass) and return it. `from` = `to` = 0.
    pub fn decide_early(&mut self, outcome: Outcome, len: u64) -> Decision {
        let d = Decision::early(outcome);
        let audit = self.audit_mode();
        self.counters.record(&d, audit, len);
        d
    }

    /// Decide a packet at time `now_ns`, updating flows, fragment entries and counters.
    pub fn decide(&mut self, p: &Packet, now_ns: u64) -> Decision {
        let failsafe = failsafe_matches(&self.failsafe, p);
        let d = match self.gates(p) {
            _ if failsafe.is_some() => Decision::early(Outcome::Pass(PassReason::Failsafe)),
            Err(d) => d,
            Ok((mut d, z)) => {
                let hit = match self.stateful(p, &z, now_ns) {
                    Some(h) => Ok(h),
                    None => self.rule_step(p, &z).map(|m| {
                        self.open(p, &z, &m, now_ns);
                        Hit {
                            reason: PassReason::Rule,
                            rule: m.rule,
                            audit: m.audit,
                        }
                    }),
                };
                if let Ok(h) = &hit {
                    self.follow_first_fragment(p, &z, h, now_ns);
                }
                d.apply(hit);
                d
            }
        };
        let audit = self.audit_mode();
        self.counters.record(&d, audit, p.len);
        d
    }

    /// Decide a packet as if no flow or fragment entry existed; changes nothing.
    pub fn explain(&self, p: &Packet) -> Decision {
        match self.gates(p) {
            Err(d) => d,
            Ok((mut d, z)) => {
                let hit = self.rule_step(p, &z).map(|m| Hit {
                    reason: PassReason::Rule,
                    rule: m.rule,
                    audit: m.audit,
                });
                d.apply(hit);
                d
            }
        }
    }

    /// Steps 2–5. `Err`: decided; `Ok`: cross-zone traffic between known zones, with the
    /// decision skeleton (zones filled in).
    fn gates(&self, p: &Packet) -> Result<(Decision, Zones), Decision> {
        // 2, 3.
        let z = resolve(&self.policy, &p.ifname, p.vlan, p.src, p.dst).map_err(|r| {
            let mut d = Decision::early(Outcome::Drop(r));
            // A spoofed packet is counted to the zone it came in from.
            if r == DropReason::SpoofedSource {
                d.from = ingress_zone(&self.policy, &p.ifname, p.vlan);
            }
            d
        })?;
        let mut d = Decision {
            outcome: Outcome::Drop(DropReason::NoRule),
            from: z.from,
            to: z.to,
            rule: None,
            audit: false,
        };
        let defaults = &self.policy.defaults;
        // 4.
        if z.src_zone == 0 || z.to == 0 {
            d.outcome = match defaults.unknown {
                Action::Allow => Outcome::Pass(PassReason::UnknownZone),
                Action::Deny => Outcome::Drop(DropReason::UnknownZone),
            };
            return Err(d);
        }
        // 5.
        if z.from == z.to {
            d.outcome = match defaults.intra_zone {
                Action::Allow => Outcome::Pass(PassReason::IntraZone),
                Action::Deny => Outcome::Drop(DropReason::IntraZone),
            };
            return Err(d);
        }
        Ok((d, z))
    }

    /// Steps 6–8, what state can decide. `None`: go on to the rules.
    fn stateful(&mut self, p: &Packet, z: &Zones, now: u64) -> Option<Hit> {
        // 6.
        if let Some(h) = self.related(p, z, now) {
            return Some(h);
        }
        // 7.
        if let Some(h) = self.lookup(p, z, now) {
            return Some(h);
        }
        // 8, tied half (the untied half is in `rule_step`, so that `explain` has it too).
        if p.frag == Frag::Later {
            return self.fragment(p, z, now);
        }
        None
    }

    /// Step 6.
    fn related(&self, p: &Packet, z: &Zones, now: u64) -> Option<Hit> {
        let inner = p.inner.as_ref()?;
        if inner.src.is_ipv4() != p.src.is_ipv4() || inner.src != p.dst {
            return None;
        }
        let key = FlowKey::new(
            inner.proto,
            (inner.src, inner.sport),
            (inner.dst, inner.dport),
        );
        let f = self.flows.get(&key)?;
        if f.generation != self.generation || f.expired(inner.proto, now) {
            return None;
        }
        // The quoted packet travelled from inner.src; the error comes back from the other
        // end's side, so it enters through the zone of the other end.
        let quoted_in_orig_direction = (inner.src, inner.sport) == f.orig_src;
        let expected = if quoted_in_orig_direction {
            f.to
        } else {
            f.from
        };
        if z.from != expected {
            return None;
        }
        Some(Hit {
            reason: PassReason::Related,
            rule: f.rule,
            audit: f.audit,
        })
    }

    /// Step 7.
    fn lookup(&mut self, p: &Packet, z: &Zones, now: u64) -> Option<Hit> {
        if !p.flowable() {
            return None;
        }
        let key = FlowKey::new(p.proto, (p.src, p.sport), (p.dst, p.dport));
        let f = self.flows.get_mut(&key)?;
        let embryonic = !f.replied;
        if f.expired(p.proto, now) {
            self.flows.remove(&key);
            if embryonic {
                self.counters.count_flow_event(FlowEvent::EmbryoRemoved);
            }
            return None;
        }
        if f.generation != self.generation {
            match revalidate(&self.policy, p.proto, f) {
                Some((from, to, m)) => {
                    f.generation = self.generation;
                    f.from = from;
                    f.to = to;
                    f.rule = m.rule;
                    f.audit = m.audit;
                }
                None => {
                    self.flows.remove(&key);
                    if embryonic {
                        self.counters.count_flow_event(FlowEvent::EmbryoRemoved);
                    }
                    return None;
                }
            }
        }
        let orig = (p.src, p.sport) == f.orig_src;
        let expected = if orig { f.from } else { f.to };
        if z.from != expected || (orig && p.src_mac != f.orig_mac) {
            return None;
        }
        f.last_seen = now;
        f.counts.add(orig, p.len);
        let hit = Hit {
            reason: if orig {
                PassReason::Established
            } else {
                PassReason::Reply
            },
            rule: f.rule,
            audit: f.audit,
        };
        // A RST shortens the flow's life instead of ending it (a forged one must not cut a
        // live connection), and is not the reply that promotes a flow.
        if p.tcp_rst() {
            f.rst = true;
            self.counters.count_flow_event(FlowEvent::Reset);
            return Some(hit);
        }
        f.rst = false;
        if p.tcp_fin() {
            if orig {
                f.fin_orig = true;
            } else {
                f.fin_reply = true;
            }
        }
        if !orig && !f.replied {
            f.replied = true;
            self.counters.count_flow_event(FlowEvent::Promoted);
        }
        Some(hit)
    }

    /// Step 8, the tied half.
    fn fragment(&self, p: &Packet, z: &Zones, now: u64) -> Option<Hit> {
        let e = self.frags.get(&p.frag_key())?;
        if e.generation != self.generation
            || e.from != z.from
            || e.mac != p.src_mac
            || now.saturating_sub(e.first_seen) > FRAG_NS
        {
            return None;
        }
        Some(Hit {
            reason: PassReason::Fragment,
            rule: e.rule,
            audit: e.audit,
        })
    }

    /// Step 8 (an untied later fragment) and step 9.
    fn rule_step(&self, p: &Packet, z: &Zones) -> Result<RuleMatch, DropReason> {
        if p.frag == Frag::Later && self.policy.defaults.fragments == Action::Deny {
            return Err(DropReason::Fragment);
        }
        find_rule(&self.policy, &RuleInput::of(p, z.from, z.to))
    }

    /// After a rule match: open a flow (flowable, not a TCP RST). Like the kernel's insert,
    /// this replaces an entry with the same key.
    fn open(&mut self, p: &Packet, z: &Zones, m: &RuleMatch, now: u64) {
        if p.flowable() && !p.tcp_rst() {
            let key = FlowKey::new(p.proto, (p.src, p.sport), (p.dst, p.dport));
            // Replacing an embryonic entry in place adds none (a replied one moves back).
            if self.flows.get(&key).is_none_or(|f| f.replied) {
                self.counters.count_flow_event(FlowEvent::Opened);
            }
            self.flows.insert(
                key,
                Flow {
                    orig_src: (p.src, p.sport),
                    orig_dst: (p.dst, p.dport),
                    orig_ifname: p.ifname.clone(),
                    orig_vlan: p.vlan,
                    orig_mac: p.src_mac,
                    from: z.from,
                    to: z.to,
                    rule: m.rule,
                    audit: m.audit,
                    generation: self.generation,
                    last_seen: now,
                    fin_orig: false,
                    fin_reply: false,
                    replied: false,
                    rst: false,
                    counts: FlowCounts {
                        orig_packets: 1,
                        orig_bytes: p.len,
                        ..FlowCounts::default()
                    },
                },
            );
        }
    }

    /// After any pass: a first fragment is remembered so that its later fragments can be
    /// tied to it, whatever let it pass (a rule, its flow, a related error). Like the
    /// kernel's insert, this replaces an entry with the same key.
    fn follow_first_fragment(&mut self, p: &Packet, z: &Zones, h: &Hit, now: u64) {
        if p.frag != Frag::First {
            return;
        }
        self.frags.insert(
            p.frag_key(),
            FragEntry {
                mac: p.src_mac,
                from: z.from,
                rule: h.rule,
                audit: h.audit,
                generation: self.generation,
                first_seen: now,
            },
        );
    }
}

/// Re-decide a flow's opening packet under `policy`: it must still be cross-zone traffic
/// between known zones that a rule allows. Returns the new (from, to, match).
fn revalidate(policy: &Policy, proto: u8, f: &Flow) -> Option<(u8, u8, RuleMatch)> {
    let (src, sport) = f.orig_src;
    let (dst, dport) = f.orig_dst;
    let z = resolve(policy, &f.orig_ifname, f.orig_vlan, src, dst).ok()?;
    if z.src_zone == 0 || z.to == 0 || z.from == z.to {
        return None;
    }
    let _ = sport; // ports of the opening packet: only the destination port is judged
    let x = RuleInput {
        from: z.from,
        to: z.to,
        proto,
        src,
        dst,
        l4: true,
        dport,
        mac: f.orig_mac,
    };
    let m = find_rule(policy, &x).ok()?;
    Some((z.from, z.to, m))
}

// === failsafe matching ===

/// A failsafe entry bound to this host (config's `[[failsafe]]` after `config::failsafe::resolve`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FailsafeEntry {
    pub name: String,
    /// (name, ifindex) of the interfaces it may enter on.
    pub interfaces: Vec<(String, u32)>,
    pub proto: u8,
    pub ports: Vec<(u16, u16)>,
    pub sources: Vec<IpNet>,
    /// The gateway's own addresses it may reach.
    pub destinations: Vec<IpAddr>,
}

/// The index of the first entry a packet matches: a whole TCP/UDP datagram entering on one
/// of the entry's interfaces, to one of its ports on one of its destinations, from one of
/// its sources. (The data path's decision, in plain Rust, for the model.)
pub fn failsafe_matches(entries: &[FailsafeEntry], p: &Packet) -> Option<usize> {
    if p.frag != Frag::None || !p.l4 || (p.proto != PROTO_TCP && p.proto != PROTO_UDP) {
        return None;
    }
    entries.iter().position(|e| {
        e.proto == p.proto
            && e.interfaces.iter().any(|(n, _)| *n == p.ifname)
            && e.ports.iter().any(|&(a, b)| (a..=b).contains(&p.dport))
            && e.destinations.contains(&p.dst)
            && e.sources.iter().any(|s| s.contains(&p.src))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::{Criticality, Defaults, Loc, PortRange, Rule, Zone, ZoneIface};
    use std::path::PathBuf;
    use zone_agent_common::NS;

    const M1: Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const M2: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];
    const M3: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x03];
    const OTHER_MAC: Mac = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
    const T0: u64 = 1_000 * NS;

    const MYNUMBER: u8 = 1;
    const LGWAN: u8 = 2;
    const INTERNET: u8 = 3;
    const CORE: u8 = 4;

    fn zone(name: &str, ifs: &[(&str, Option<u16>)], nets: &[&str]) -> Zone {
        Zone {
            name: name.into(),
            label: None,
            interfaces: ifs
                .iter()
                .map(|(n, v)| ZoneIface {
                    name: (*n).into(),
                    vlan: *v,
                    loc: Loc::default(),
                })
                .collect(),
            networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
            criticality: Criticality::High,
            segment: None,
            loc: Loc::default(),
        }
    }

    fn rule(name: &str, from: usize, to: usize, protocol: Protocol, ports: &[(u16, u16)]) -> Rule {
        Rule {
            name: name.into(),
            description: None,
            from,
            to,
            protocol,
            ports: ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
            sources: vec![],
            source_macs: vec![],
            destinations: vec![],
            mode: Mode::Enforce,
            acknowledge: None,
            loc: Loc::default(),
        }
    }

    fn nets(v: &[&str]) -> Vec<ipnet::IpNet> {
        v.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// Zones: mynumber(1) eth1; lgwan(2) eth2 + eth2.100; internet(3) eth3.300 only;
    /// core(4) eth4, nested inside lgwan's 10.20.0.0/16.
    fn policy() -> Policy {
        let mut rules = vec![];
        let mut r = rule(
            "eltax-relay",
            1,
            0,
            Protocol::Tcp,
            &[(443, 443), (8000, 8010)],
        );
        r.sources = nets(&["10.20.5.10/32"]);
        r.source_macs = vec![M1];
        r.destinations = nets(&["10.10.9.20/32"]);
        rules.push(r); // 0
        rules.push(rule("dns", 1, 2, Protocol::Udp, &[(53, 53)])); // 1
        rules.push(rule("ping", 1, 0, Protocol::Icmp, &[])); // 2
        rules.push(rule("ping6", 1, 0, Protocol::Icmpv6, &[])); // 3
        let mut r = rule("web-trial", 1, 2, Protocol::Tcp, &[(443, 443)]);
        r.mode = Mode::Audit;
        rules.push(r); // 4
        rules.push(rule("web", 1, 2, Protocol::Tcp, &[(80, 80), (443, 443)])); // 5
        let mut r = rule("proxy-trial", 1, 2, Protocol::Tcp, &[(8080, 8080)]);
        r.mode = Mode::Audit;
        rules.push(r); // 6
        let mut r = rule("batch-any", 0, 1, Protocol::Any, &[]);
        r.sources = nets(&["10.10.1.0/24"]);
        rules.push(r); // 7
        let mut r = rule("ssh6", 1, 0, Protocol::Tcp, &[(22, 22)]);
        r.sources = nets(&["fd20::/48"]);
        rules.push(r); // 8
        let mut r = rule("ssh-a-trial", 3, 0, Protocol::Tcp, &[(22, 22)]);
        r.source_macs = vec![M2];
        r.mode = Mode::Audit;
        rules.push(r); // 9
        let mut r = rule("ssh-b", 3, 0, Protocol::Tcp, &[(22, 22)]);
        r.source_macs = vec![M3];
        rules.push(r); // 10
        Policy {
            path: PathBuf::from("test.toml"),
            version: 1,
            mode: Mode::Enforce,
            defaults: Defaults::default(),
            zones: vec![
                zone(
                    "mynumber",
                    &[("eth1", None)],
                    &["10.10.0.0/16", "fd10::/48"],
                ),
                zone(
                    "lgwan",
                    &[("eth2", None), ("eth2", Some(100))],
                    &["10.20.0.0/16", "fd20::/48"],
                ),
                zone("internet", &[("eth3", Some(300))], &["0.0.0.0/0", "::/0"]),
                zone("core", &[("eth4", None)], &["10.20.99.0/24"]),
            ],
            rules,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn on(
        ifname: &str,
        vlan: u16,
        proto: u8,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
    ) -> Packet {
        let mut p = Packet::new(ifname, ip(src), ip(dst), proto, sport, dport);
        p.vlan = vlan;
        p
    }

    fn tcp(ifname: &str, src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Packet {
        let mut p = on(ifname, 0, PROTO_TCP, src, sport, dst, dport);
        p.tcp_flags = flags;
        p
    }

    fn udp(ifname: &str, vlan: u16, src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
        on(ifname, vlan, PROTO_UDP, src, sport, dst, dport)
    }

    fn mac(mut p: Packet, m: Mac) -> Packet {
        p.src_mac = m;
        p
    }

    /// The eltax-relay client's SYN (rule 0) and the server's reply.
    fn eltax_syn() -> Packet {
        mac(
            tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", 443, TCP_SYN),
            M1,
        )
    }
    fn eltax_reply(flags: u8) -> Packet {
        tcp("eth1", "10.10.9.20", 443, "10.20.5.10", 40000, flags)
    }

    fn pass(d: &Decision, r: PassReason) {
        assert_eq!(d.outcome, Outcome::Pass(r), "{d:?}");
    }
    fn drop(d: &Decision, r: DropReason) {
        assert_eq!(d.outcome, Outcome::Drop(r), "{d:?}");
    }

    // ---- step 2: interface ------------------------------------------------------------

    #[test]
    fn unknown_interface_and_vlan() {
        let mut m = Model::new(policy());
        let d = m.decide(&on("eth9", 0, PROTO_UDP, "10.20.1.1", 1, "8.8.8.8", 53), T0);
        drop(&d, DropReason::UnknownInterface);
        assert_eq!((d.from, d.to, d.rule), (0, 0, None));
        // A VLAN no zone names on a known interface.
        drop(
            &m.decide(&udp("eth2", 200, "10.20.1.1", 1, "8.8.8.8", 53), T0),
            DropReason::UnknownInterface,
        );
        // eth3 only carries the internet zone on VLAN 300: untagged frames are unknown.
        drop(
            &m.decide(&udp("eth3", 0, "8.8.8.8", 53, "10.20.1.1", 1), T0),
            DropReason::UnknownInterface,
        );
        // Tagged VLAN 100 on eth2 is lgwan.
        let d = m.decide(&udp("eth2", 100, "10.20.1.1", 1000, "8.8.8.8", 53), T0);
        pass(&d, PassReason::Rule);
        assert_eq!((d.from, d.to, d.rule), (LGWAN, INTERNET, Some(1)));
        // ...and the reply comes back on eth3.300.
        pass(
            &m.decide(&udp("eth3", 300, "8.8.8.8", 53, "10.20.1.1", 1000), T0 + 1),
            PassReason::Reply,
        );
    }

    #[test]
    fn unknown_interface_beats_spoofing() {
        let mut m = Model::new(policy());
        drop(
            &m.decide(
                &on("eth9", 0, PROTO_TCP, "10.10.1.1", 1, "10.20.1.1", 2),
                T0,
            ),
            DropReason::UnknownInterface,
        );
    }

    // ---- step 3: spoofed source -------------------------------------------------------

    #[test]
    fn spoofed_source_recorded_to_its_ingress_zone() {
        let mut m = Model::new(policy());
        let d = m.decide(&tcp("eth2", "10.10.1.1", 1, "10.20.1.1", 2, TCP_SYN), T0);
        drop(&d, DropReason::SpoofedSource);
        assert_eq!((d.from, d.to), (LGWAN, 0));
        assert_eq!(m.counters().zone_pair(LGWAN, 0, Verdict::Deny).packets, 1);
    }

    #[test]
    fn spoofing_uses_longest_prefix() {
        let mut m = Model::new(policy());
        // 10.20.99.5 is core (the /24 inside lgwan's /16): entering through lgwan is spoofed.
        drop(
            &m.decide(&tcp("eth2", "10.20.99.5", 1, "10.10.9.20", 443, 0), T0),
            DropReason::SpoofedSource,
        );
        // ...and a plain lgwan address entering through core is spoofed too.
        drop(
            &m.decide(&tcp("eth4", "10.20.5.5", 1, "10.10.9.20", 22, 0), T0),
            DropReason::SpoofedSource,
        );
        // A core address through core is fine (lgwan→core here: no rule).
        let d = m.decide(&tcp("eth4", "10.20.99.5", 1, "10.20.5.5", 22, 0), T0);
        drop(&d, DropReason::NoRule);
        assert_eq!((d.from, d.to), (CORE, LGWAN));
        // Anything outside the private zones through eth3.300 is internet; a private source
        // arriving from the internet is spoofed.
        drop(
            &m.decide(&udp("eth3", 300, "10.10.1.1", 1, "10.20.1.1", 2), T0),
            DropReason::SpoofedSource,
        );
    }

    #[test]
    fn spoofed_packet_shaped_like_a_flow_is_still_spoofed() {
        let mut m = Model::new(policy());
        pass(&m.decide(&eltax_syn(), T0), PassReason::Rule);
        // The server's reply, but injected on the client's side.
        let mut r = eltax_reply(TCP_ACK);
        r.ifname = "eth2".into();
        drop(&m.decide(&r, T0 + 1), DropReason::SpoofedSource);
        // The client's packet arriving through the server's side.
        let mut o = eltax_syn();
        o.ifname = "eth1".into();
        drop(&m.decide(&o, T0 + 1), DropReason::SpoofedSource);
        assert_eq!(m.flows(), 1);
    }

    #[test]
    fn spoofing_beats_unknown() {
        let mut p = policy();
        p.zones[2].networks = nets(&["192.0.2.0/24"]);
        let mut m = Model::new(p);
        // Source of another zone, destination in no zone: spoofed wins.
        drop(
            &m.decide(&tcp("eth2", "10.10.1.1", 1, "198.51.100.1", 2, 0), T0),
            DropReason::SpoofedSource,
        );
    }

    // ---- step 4: unknown zone ---------------------------------------------------------

    #[test]
    fn unknown_source_or_destination() {
        let mut p = policy();
        p.zones[2].networks = nets(&["192.0.2.0/24", "2001:db8::/32"]);
        let mut m = Model::new(p.clone());
        // Source in no zone (ingress is known).
        let d = m.decide(&udp("eth3", 300, "198.51.100.1", 53, "10.20.1.1", 1000), T0);
        drop(&d, DropReason::UnknownZone);
        assert_eq!((d.from, d.to), (INTERNET, LGWAN));
        // Destination in no zone.
        let d = m.decide(&udp("eth2", 0, "10.20.1.1", 1000, "198.51.100.1", 53), T0);
        drop(&d, DropReason::UnknownZone);
        assert_eq!((d.from, d.to), (LGWAN, 0));
        assert_eq!(m.counters().zone_pair(LGWAN, 0, Verdict::Deny).packets, 1);
        // IPv6 too.
        drop(
            &m.decide(&udp("eth2", 0, "fd20::1", 1, "fd99::1", 53), T0),
            DropReason::UnknownZone,
        );
        // Allowed by default: passes, opens nothing.
        p.defaults.unknown = Action::Allow;
        let mut m = Model::new(p);
        let d = m.decide(&udp("eth2", 0, "10.20.1.1", 1000, "198.51.100.1", 53), T0);
        pass(&d, PassReason::UnknownZone);
        assert_eq!((d.rule, d.audit), (None, false));
        assert_eq!(m.flows(), 0);
    }

    // ---- step 5: intra zone -----------------------------------------------------------

    #[test]
    fn intra_zone_default() {
        let mut p = policy();
        let mut m = Model::new(p.clone());
        let d = m.decide(&tcp("eth2", "10.20.1.1", 1, "10.20.2.2", 22, 0), T0);
        pass(&d, PassReason::IntraZone);
        assert_eq!((d.from, d.to, d.rule), (LGWAN, LGWAN, None));
        // Via the VLAN of the same zone too.
        let mut q = tcp("eth2", "fd20::1", 1, "fd20::2", 22, 0);
        q.vlan = 100;
        pass(&m.decide(&q, T0), PassReason::IntraZone);
        assert_eq!(m.flows(), 0);
        p.defaults.intra_zone = Action::Deny;
        let mut m = Model::new(p);
        drop(
            &m.decide(&tcp("eth2", "10.20.1.1", 1, "10.20.2.2", 22, 0), T0),
            DropReason::IntraZone,
        );
        // Nested zones are different zones: lgwan → core is cross-zone.
        drop(
            &m.decide(&tcp("eth2", "10.20.1.1", 1, "10.20.99.2", 22, 0), T0),
            DropReason::NoRule,
        );
    }

    #[test]
    fn unknown_beats_intra_zone() {
        let mut p = policy();
        p.zones[2].networks = nets(&["192.0.2.0/24"]);
        p.zones[2].interfaces.push(ZoneIface {
            name: "eth5".into(),
            vlan: None,
            loc: Loc::default(),
        });
        let mut m = Model::new(p);
        // Neither end in a zone, entering through internet's eth5.
        let d = m.decide(&udp("eth5", 0, "198.51.100.1", 1, "198.51.100.2", 2), T0);
        drop(&d, DropReason::UnknownZone);
        assert_eq!((d.from, d.to), (INTERNET, 0));
    }

    // ---- step 9: rules ----------------------------------------------------------------

    #[test]
    fn rule_match_opens_flow_and_reply_passes() {
        let mut m = Model::new(policy());
        let d = m.decide(&eltax_syn(), T0);
        pass(&d, PassReason::Rule);
        assert_eq!(
            (d.from, d.to, d.rule, d.audit),
            (LGWAN, MYNUMBER, Some(0), false)
        );
        assert_eq!(m.flows(), 1);
        let d = m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0 + NS);
        pass(&d, PassReason::Reply);
        assert_eq!((d.from, d.to, d.rule), (MYNUMBER, LGWAN, Some(0)));
        let d = m.decide(
            &mac(
                tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", 443, TCP_ACK),
                M1,
            ),
            T0 + 2 * NS,
        );
        pass(&d, PassReason::Established);
        assert_eq!(d.rule, Some(0));
        assert_eq!(m.counters().rule(0).packets, 3);
        assert_eq!(m.counters().pass(PassReason::Reply).packets, 1);
        let f = &m.flow_list()[0];
        assert!(f.replied);
        assert_eq!((f.from, f.to, f.rule), (LGWAN, MYNUMBER, 0));
    }

    #[test]
    fn rule_port_range_source_destination() {
        let m = Model::new(policy());
        for port in [8000, 8005, 8010] {
            let p = mac(
                tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", port, TCP_SYN),
                M1,
            );
            pass(&m.explain(&p), PassReason::Rule);
        }
        for port in [22, 442, 444, 7999, 8011] {
            let p = mac(
                tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", port, TCP_SYN),
                M1,
            );
            drop(&m.explain(&p), DropReason::NoRule);
        }
        // Wrong source / destination inside the right zones.
        drop(
            &m.explain(&mac(tcp("eth2", "10.20.5.11", 1, "10.10.9.20", 443, 0), M1)),
            DropReason::NoRule,
        );
        drop(
            &m.explain(&mac(tcp("eth2", "10.20.5.10", 1, "10.10.9.21", 443, 0), M1)),
            DropReason::NoRule,
        );
        // UDP to a tcp-only port list.
        drop(
            &m.explain(&mac(udp("eth2", 0, "10.20.5.10", 1, "10.10.9.20", 443), M1)),
            DropReason::NoRule,
        );
    }

    #[test]
    fn reply_without_flow_is_denied() {
        let mut m = Model::new(policy());
        let d = m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0);
        drop(&d, DropReason::NoRule);
        assert_eq!((d.from, d.to), (MYNUMBER, LGWAN));
        // A DNS "answer" nobody asked for.
        drop(
            &m.decide(&udp("eth3", 300, "8.8.8.8", 53, "10.20.1.1", 1000), T0),
            DropReason::NoRule,
        );
        // A reply to a different client port than the flow's.
        pass(
            &m.decide(&udp("eth2", 0, "10.20.1.1", 1000, "8.8.8.8", 53), T0),
            PassReason::Rule,
        );
        drop(
            &m.decide(&udp("eth3", 300, "8.8.8.8", 53, "10.20.1.1", 1001), T0),
            DropReason::NoRule,
        );
        drop(
            &m.decide(&udp("eth3", 300, "8.8.4.4", 53, "10.20.1.1", 1000), T0),
            DropReason::NoRule,
        );
        pass(
            &m.decide(&udp("eth3", 300, "8.8.8.8", 53, "10.20.1.1", 1000), T0),
            PassReason::Reply,
        );
    }

    #[test]
    fn mac_bound_rule() {
        let mut m = Model::new(policy());
        let d = m.decide(
            &mac(
                tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", 443, TCP_SYN),
                OTHER_MAC,
            ),
            T0,
        );
        drop(&d, DropReason::MacMismatch);
        assert_eq!((d.from, d.to, d.rule), (LGWAN, MYNUMBER, None));
        assert_eq!(m.flows(), 0);
        // Wrong port and wrong MAC: no rule matched everything else, so it is no_rule.
        drop(
            &m.decide(
                &mac(
                    tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", 22, 0),
                    OTHER_MAC,
                ),
                T0,
            ),
            DropReason::NoRule,
        );
        pass(&m.decide(&eltax_syn(), T0), PassReason::Rule);
    }

    #[test]
    fn flow_opening_direction_keeps_its_mac() {
        let mut m = Model::new(policy());
        pass(&m.decide(&eltax_syn(), T0), PassReason::Rule);
        pass(
            &m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0 + 1),
            PassReason::Reply,
        );
        // Another host copying the client's addresses: the flow does not carry it, and the
        // MAC-bound rule refuses it.
        let spoof = mac(
            tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", 443, TCP_ACK),
            OTHER_MAC,
        );
        drop(&m.decide(&spoof, T0 + 2), DropReason::MacMismatch);
        // Reply direction is not MAC-bound (the router's MAC there).
        pass(
            &m.decide(&mac(eltax_reply(TCP_ACK), OTHER_MAC), T0 + 3),
            PassReason::Reply,
        );
    }

    #[test]
    fn rule_match_replaces_flow_from_another_mac() {
        // Like the kernel's insert: a packet that misses the flow (other MAC) but is allowed by
        // a rule without MAC list re-opens the flow as its own.
        let mut m = Model::new(policy());
        let a = mac(udp("eth2", 0, "10.20.1.1", 1000, "8.8.8.8", 53), M2);
        let b = mac(udp("eth2", 0, "10.20.1.1", 1000, "8.8.8.8", 53), M3);
        pass(&m.decide(&a, T0), PassReason::Rule);
        pass(&m.decide(&a, T0 + 1), PassReason::Established);
        pass(&m.decide(&b, T0 + 2), PassReason::Rule);
        pass(&m.decide(&b, T0 + 3), PassReason::Established);
        pass(&m.decide(&a, T0 + 4), PassReason::Rule);
        assert_eq!(m.flows(), 1);
    }

    #[test]
    fn audit_rule_versus_enforce_rule() {
        let mut m = Model::new(policy());
        // tcp 443 lgwan→internet: web-trial (audit, rule 4) first, web (enforce, rule 5) too.
        let d = m.decide(
            &on(
                "eth2",
                0,
                PROTO_TCP,
                "10.20.1.1",
                40000,
                "93.184.216.34",
                443,
            ),
            T0,
        );
        pass(&d, PassReason::Rule);
        assert_eq!((d.rule, d.audit), (Some(4), false));
        assert_eq!(d.verdict(false), Verdict::Allow);
        assert_eq!(m.counters().rule(4).packets, 1);
        assert_eq!(m.counters().rule(5).packets, 0);
        // tcp 8080: only proxy-trial (audit) → audit verdict, flow opened as audit.
        let d = m.decide(
            &on(
                "eth2",
                0,
                PROTO_TCP,
                "10.20.1.1",
                40001,
                "93.184.216.34",
                8080,
            ),
            T0,
        );
        pass(&d, PassReason::Rule);
        assert_eq!((d.rule, d.audit), (Some(6), true));
        assert_eq!(d.verdict(false), Verdict::Audit);
        assert!(d.xdp_pass(false));
        let mut r = on(
            "eth3",
            300,
            PROTO_TCP,
            "93.184.216.34",
            8080,
            "10.20.1.1",
            40001,
        );
        r.tcp_flags = TCP_SYN | TCP_ACK;
        let d = m.decide(&r, T0 + 1);
        pass(&d, PassReason::Reply);
        assert_eq!((d.rule, d.audit), (Some(6), true));
        assert_eq!(
            m.counters()
                .zone_pair(INTERNET, LGWAN, Verdict::Audit)
                .packets,
            1
        );
        assert_eq!(
            m.counters()
                .zone_pair(LGWAN, INTERNET, Verdict::Audit)
                .packets,
            1
        );
        assert_eq!(
            m.counters()
                .zone_pair(LGWAN, INTERNET, Verdict::Allow)
                .packets,
            1
        );
    }

    #[test]
    fn audit_and_enforce_rules_with_mac_lists() {
        let mut m = Model::new(policy());
        let p = |mm| {
            mac(
                tcp("eth4", "10.20.99.5", 40000, "10.10.1.1", 22, TCP_SYN),
                mm,
            )
        };
        let d = m.decide(&p(M2), T0);
        pass(&d, PassReason::Rule);
        assert_eq!((d.rule, d.audit), (Some(9), true));
        let d = m.decide(&p(M3), T0);
        pass(&d, PassReason::Rule);
        assert_eq!((d.rule, d.audit), (Some(10), false));
        drop(&m.decide(&p(M1), T0), DropReason::MacMismatch);
    }

    #[test]
    fn protocols_per_family() {
        let m = Model::new(policy());
        // ICMPv4 echo request: rule ping (2).
        let d = m.explain(&on("eth2", 0, PROTO_ICMP, "10.20.1.1", 7, "10.10.1.1", 0));
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Rule), Some(2))
        );
        // ICMPv6: rule ping6 (3).
        let d = m.explain(&on("eth2", 0, PROTO_ICMPV6, "fd20::1", 7, "fd10::1", 0));
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Rule), Some(3))
        );
        // ICMPv4's number inside IPv6 (and the reverse) is neither rule's protocol.
        let p = on("eth2", 0, PROTO_ICMP, "fd20::1", 0, "fd10::1", 0);
        assert!(!p.l4);
        drop(&m.explain(&p), DropReason::NoRule);
        drop(
            &m.explain(&on("eth2", 0, PROTO_ICMPV6, "10.20.1.1", 0, "10.10.1.1", 0)),
            DropReason::NoRule,
        );
        // "any" without ports covers GRE, from its sources only.
        let d = m.explain(&on("eth1", 0, 47, "10.10.1.5", 0, "10.20.1.1", 0));
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Rule), Some(7))
        );
        drop(
            &m.explain(&on("eth1", 0, 47, "10.10.2.5", 0, "10.20.1.1", 0)),
            DropReason::NoRule,
        );
        // ssh6 (tcp 22 from fd20::/48): IPv6 only by its sources.
        let d = m.explain(&on("eth2", 0, PROTO_TCP, "fd20::5", 40000, "fd10::9", 22));
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Rule), Some(8))
        );
        drop(
            &m.explain(&on(
                "eth2",
                0,
                PROTO_TCP,
                "10.20.1.5",
                40000,
                "10.10.0.9",
                22,
            )),
            DropReason::NoRule,
        );
    }

    #[test]
    fn non_l4_rule_match_opens_no_flow() {
        let mut m = Model::new(policy());
        pass(
            &m.decide(&on("eth1", 0, 47, "10.10.1.5", 0, "10.20.1.1", 0), T0),
            PassReason::Rule,
        );
        assert_eq!(m.flows(), 0);
        // and its "reply" has to be allowed on its own (it is not).
        drop(
            &m.decide(&on("eth2", 0, 47, "10.20.1.1", 0, "10.10.1.5", 0), T0),
            DropReason::NoRule,
        );
    }

    #[test]
    fn icmp_echo_flow() {
        let mut m = Model::new(policy());
        pass(
            &m.decide(
                &on("eth2", 0, PROTO_ICMP, "10.20.1.1", 77, "10.10.9.20", 0),
                T0,
            ),
            PassReason::Rule,
        );
        assert_eq!(m.flows(), 1);
        // Echo reply: (0, id).
        let d = m.decide(
            &on("eth1", 0, PROTO_ICMP, "10.10.9.20", 0, "10.20.1.1", 77),
            T0 + 1,
        );
        pass(&d, PassReason::Reply);
        assert_eq!(d.rule, Some(2));
        // A reply with another id has no flow; an echo request back has none either.
        drop(
            &m.decide(
                &on("eth1", 0, PROTO_ICMP, "10.10.9.20", 0, "10.20.1.1", 78),
                T0 + 1,
            ),
            DropReason::NoRule,
        );
        drop(
            &m.decide(
                &on("eth1", 0, PROTO_ICMP, "10.10.9.20", 77, "10.20.1.1", 0),
                T0 + 1,
            ),
            DropReason::NoRule,
        );
        // ICMP flows live 30 s.
        drop(
            &m.decide(
                &on("eth1", 0, PROTO_ICMP, "10.10.9.20", 0, "10.20.1.1", 77),
                T0 + 1 + 31 * NS,
            ),
            DropReason::NoRule,
        );
        assert_eq!(m.flows(), 0);
    }

    #[test]
    fn tcp_rst_closes_and_never_opens() {
        let mut m = Model::new(policy());
        // A RST a rule allows passes but opens nothing.
        let mut rst = eltax_syn();
        rst.tcp_flags = TCP_RST;
        pass(&m.decide(&rst, T0), PassReason::Rule);
        assert_eq!(m.flows(), 0);
        // A RST inside a flow passes and only shortens its life: a forged RST does not cut
        // the connection, and the next packet that is not a RST restores the lifetime.
        pass(&m.decide(&eltax_syn(), T0), PassReason::Rule);
        pass(
            &m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0),
            PassReason::Reply,
        );
        let d = m.decide(&eltax_reply(TCP_RST | TCP_ACK), T0 + 1);
        pass(&d, PassReason::Reply);
        assert_eq!(d.rule, Some(0));
        assert_eq!(m.flows(), 1);
        pass(
            &m.decide(&eltax_reply(TCP_ACK), T0 + FLOW_TCP_RESET_NS),
            PassReason::Reply,
        );
        pass(
            &m.decide(&eltax_reply(TCP_ACK), T0 + 100 * FLOW_TCP_RESET_NS),
            PassReason::Reply,
        );
        // Unanswered, a RST ends the flow after FLOW_TCP_RESET_NS.
        let t = T0 + 100 * FLOW_TCP_RESET_NS;
        pass(&m.decide(&eltax_reply(TCP_RST), t), PassReason::Reply);
        drop(
            &m.decide(&eltax_reply(TCP_ACK), t + FLOW_TCP_RESET_NS + 1),
            DropReason::NoRule,
        );
        assert_eq!(m.flows(), 0);
    }

    #[test]
    fn flow_events_are_counted() {
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        m.decide(&eltax_syn(), T0 + 1); // a retransmitted SYN is the same embryonic flow
        m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0 + 2);
        m.decide(&eltax_reply(TCP_ACK), T0 + 3); // promoted once
        m.decide(&eltax_reply(TCP_RST), T0 + 4);
        let c = m.counters();
        let got: Vec<u64> = [
            FlowEvent::Opened,
            FlowEvent::Promoted,
            FlowEvent::Reset,
            FlowEvent::EmbryoRemoved,
        ]
        .map(|e| c.flow_event(e))
        .to_vec();
        assert_eq!(got, [1, 1, 1, 0]);
        // An embryonic flow that expires is removed and counted; a replied one is not.
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        assert!(!alive_at(&mut m, T0 + FLOW_TCP_OPEN_NS + 1));
        assert_eq!(m.counters().flow_event(FlowEvent::EmbryoRemoved), 1);
    }

    #[test]
    fn rst_reply_does_not_promote() {
        let mut m = Model::new(policy());
        pass(&m.decide(&eltax_syn(), T0), PassReason::Rule);
        pass(
            &m.decide(&eltax_reply(TCP_RST | TCP_ACK), T0),
            PassReason::Reply,
        );
        assert!(m.flow_list()[0].embryonic);
        pass(
            &m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0),
            PassReason::Reply,
        );
        let f = &m.flow_list()[0];
        assert!(!f.embryonic && f.replied);
    }

    // ---- expiry -----------------------------------------------------------------------

    /// Does the server's reply at `t` still find the flow?
    fn alive_at(m: &mut Model, t: u64) -> bool {
        matches!(
            m.decide(&eltax_reply(TCP_ACK), t).outcome,
            Outcome::Pass(PassReason::Reply)
        )
    }

    #[test]
    fn tcp_lifetimes() {
        // Not replied: 60 s.
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        assert!(alive_at(&mut m, T0 + FLOW_TCP_OPEN_NS));
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        assert!(!alive_at(&mut m, T0 + FLOW_TCP_OPEN_NS + 1));
        assert_eq!(m.flows(), 0, "expired flow removed on lookup");
        // Replied: 7200 s.
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0);
        pass(
            &m.decide(&eltax_reply(TCP_ACK), T0 + FLOW_TCP_ESTABLISHED_NS),
            PassReason::Reply,
        );
        drop(
            &m.decide(&eltax_reply(TCP_ACK), T0 + 2 * FLOW_TCP_ESTABLISHED_NS + 1),
            DropReason::NoRule,
        );
        // Both FINs: 10 s.
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0);
        let mut fin = eltax_syn();
        fin.tcp_flags = TCP_FIN | TCP_ACK;
        pass(&m.decide(&fin, T0), PassReason::Established);
        // One FIN only: still the established lifetime.
        pass(
            &m.decide(&eltax_reply(TCP_ACK), T0 + 100 * NS),
            PassReason::Reply,
        );
        pass(
            &m.decide(&eltax_reply(TCP_FIN | TCP_ACK), T0 + 100 * NS),
            PassReason::Reply,
        );
        pass(
            &m.decide(&eltax_reply(TCP_ACK), T0 + 110 * NS),
            PassReason::Reply,
        );
        drop(
            &m.decide(&eltax_reply(TCP_ACK), T0 + 120 * NS + 1),
            DropReason::NoRule,
        );
    }

    #[test]
    fn udp_and_other_lifetimes() {
        let q = udp("eth2", 0, "10.20.1.1", 1000, "8.8.8.8", 53);
        let a = udp("eth3", 300, "8.8.8.8", 53, "10.20.1.1", 1000);
        let mut m = Model::new(policy());
        m.decide(&q, T0);
        pass(&m.decide(&a, T0 + FLOW_UDP_NS), PassReason::Reply);
        // Each hit refreshes.
        pass(&m.decide(&a, T0 + 2 * FLOW_UDP_NS), PassReason::Reply);
        drop(&m.decide(&a, T0 + 3 * FLOW_UDP_NS + 1), DropReason::NoRule);
        let mut m = Model::new(policy());
        m.decide(&on("eth2", 0, PROTO_ICMPV6, "fd20::1", 9, "fd10::1", 0), T0);
        let r = on("eth1", 0, PROTO_ICMPV6, "fd10::1", 0, "fd20::1", 9);
        pass(&m.decide(&r, T0 + FLOW_OTHER_NS), PassReason::Reply);
        drop(
            &m.decide(&r, T0 + 2 * FLOW_OTHER_NS + 1),
            DropReason::NoRule,
        );
    }

    #[test]
    fn expired_flow_is_removed_even_by_a_packet_it_would_not_carry() {
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        // Opening direction from another MAC after expiry: MacMismatch, flow gone.
        let other = mac(eltax_syn(), OTHER_MAC);
        drop(
            &m.decide(&other, T0 + FLOW_TCP_OPEN_NS + 1),
            DropReason::MacMismatch,
        );
        assert_eq!(m.flows(), 0);
    }

    // ---- step 6: ICMP errors ----------------------------------------------------------

    fn icmp_error(ifname: &str, src: &str, dst: &str, inner: Tuple) -> Packet {
        let v4 = ip(src).is_ipv4();
        let mut p = on(
            ifname,
            0,
            if v4 { PROTO_ICMP } else { PROTO_ICMPV6 },
            src,
            0,
            dst,
            0,
        );
        p.inner = Some(inner);
        p
    }

    fn quoted_syn() -> Tuple {
        eltax_syn().tuple()
    }

    #[test]
    fn icmp_error_quoting_a_flow_is_related() {
        let mut m = Model::new(policy());
        pass(&m.decide(&eltax_syn(), T0), PassReason::Rule);
        // A router in mynumber says the server port is unreachable.
        let d = m.decide(
            &icmp_error("eth1", "10.10.0.1", "10.20.5.10", quoted_syn()),
            T0 + 1,
        );
        pass(&d, PassReason::Related);
        assert_eq!(
            (d.from, d.to, d.rule, d.audit),
            (MYNUMBER, LGWAN, Some(0), false)
        );
        // Errors do not refresh or change the flow.
        assert!(!m.flow_list()[0].replied);
    }

    #[test]
    fn icmp_error_must_go_back_to_the_quoted_sender() {
        let mut m = Model::new(policy());
        pass(&m.decide(&eltax_syn(), T0), PassReason::Rule);
        // Destination is not the quoted packet's source.
        drop(
            &m.decide(
                &icmp_error("eth1", "10.10.0.1", "10.20.5.11", quoted_syn()),
                T0,
            ),
            DropReason::NoRule,
        );
        // Entering through the wrong zone (core, not mynumber) for an error about the
        // client's packet.
        drop(
            &m.decide(
                &icmp_error("eth4", "10.20.99.1", "10.20.5.10", quoted_syn()),
                T0,
            ),
            DropReason::NoRule,
        );
        // An error about the server's reply goes back to the server from lgwan's side...
        let reply_quote = eltax_reply(TCP_ACK).tuple();
        let d = m.decide(
            &icmp_error("eth2", "10.20.0.1", "10.10.9.20", reply_quote),
            T0,
        );
        pass(&d, PassReason::Related);
        assert_eq!((d.from, d.to), (LGWAN, MYNUMBER));
        // ...not from core's.
        drop(
            &m.decide(
                &icmp_error("eth4", "10.20.99.1", "10.10.9.20", reply_quote),
                T0,
            ),
            DropReason::NoRule,
        );
        // Quote of a tuple with no flow.
        let mut q = quoted_syn();
        q.dport = 444;
        drop(
            &m.decide(&icmp_error("eth1", "10.10.0.1", "10.20.5.10", q), T0),
            DropReason::NoRule,
        );
    }

    #[test]
    fn icmp_error_without_quote_is_plain_icmp() {
        let mut m = Model::new(policy());
        pass(&m.decide(&eltax_syn(), T0), PassReason::Rule);
        let mut e = icmp_error("eth1", "10.10.0.1", "10.20.5.10", quoted_syn());
        e.inner = None;
        drop(&m.decide(&e, T0), DropReason::NoRule);
        // A quote-less error from lgwan to mynumber is judged by the icmp rule.
        let mut e = icmp_error("eth2", "10.20.0.1", "10.10.9.20", quoted_syn());
        e.inner = None;
        let d = m.decide(&e, T0);
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Rule), Some(2))
        );
    }

    #[test]
    fn icmp_error_not_related_to_expired_or_old_generation_flow() {
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        let e = icmp_error("eth1", "10.10.0.1", "10.20.5.10", quoted_syn());
        drop(&m.decide(&e, T0 + FLOW_TCP_OPEN_NS + 1), DropReason::NoRule);
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        m.reload(policy());
        drop(&m.decide(&e, T0 + 1), DropReason::NoRule);
        // The flow itself survives (it is revalidated on its own next packet).
        pass(&m.decide(&eltax_reply(TCP_ACK), T0 + 2), PassReason::Reply);
        pass(&m.decide(&e, T0 + 3), PassReason::Related);
    }

    #[test]
    fn icmp_errors_ipv6_and_echo_quotes() {
        let mut m = Model::new(policy());
        let syn = on("eth2", 0, PROTO_TCP, "fd20::5", 40000, "fd10::9", 22);
        pass(&m.decide(&syn, T0), PassReason::Rule);
        let d = m.decide(&icmp_error("eth1", "fd10::1", "fd20::5", syn.tuple()), T0);
        pass(&d, PassReason::Related);
        assert_eq!(d.rule, Some(8));
        // An IPv4 quote in an IPv6 error is not related.
        let mut t = syn.tuple();
        t.src = ip("10.20.5.10");
        t.dst = ip("10.10.9.20");
        drop(
            &m.decide(&icmp_error("eth1", "fd10::1", "fd20::5", t), T0),
            DropReason::NoRule,
        );
        // Time exceeded for an echo request.
        let ping = on("eth2", 0, PROTO_ICMP, "10.20.1.1", 4242, "10.10.9.20", 0);
        pass(&m.decide(&ping, T0), PassReason::Rule);
        let d = m.decide(
            &icmp_error("eth1", "10.10.0.1", "10.20.1.1", ping.tuple()),
            T0,
        );
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Related), Some(2))
        );
    }

    // ---- step 8: fragments ------------------------------------------------------------

    fn frag(mut p: Packet, f: Frag, id: u32) -> Packet {
        p.frag = f;
        p.frag_id = id;
        if f == Frag::Later {
            p.l4 = false;
            p.sport = 0;
            p.dport = 0;
        }
        p
    }

    fn dns_frag(f: Frag, id: u32) -> Packet {
        frag(
            mac(udp("eth2", 0, "10.20.1.1", 5000, "8.8.8.8", 53), M2),
            f,
            id,
        )
    }

    #[test]
    fn later_fragment_tied_to_allowed_first() {
        let mut m = Model::new(policy());
        let d = m.decide(&dns_frag(Frag::First, 999), T0);
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Rule), Some(1))
        );
        assert_eq!((m.flows(), m.fragments()), (1, 1));
        let d = m.decide(&dns_frag(Frag::Later, 999), T0 + NS);
        pass(&d, PassReason::Fragment);
        assert_eq!(
            (d.from, d.to, d.rule, d.audit),
            (LGWAN, INTERNET, Some(1), false)
        );
        // Through the zone's other VLAN: same from-zone, still tied.
        let mut p = dns_frag(Frag::Later, 999);
        p.vlan = 100;
        pass(&m.decide(&p, T0 + 2 * NS), PassReason::Fragment);
        // Entries are not refreshed: 30 s after the first fragment they are gone.
        pass(
            &m.decide(&dns_frag(Frag::Later, 999), T0 + FRAG_NS),
            PassReason::Fragment,
        );
        drop(
            &m.decide(&dns_frag(Frag::Later, 999), T0 + FRAG_NS + 1),
            DropReason::Fragment,
        );
    }

    #[test]
    fn later_fragment_untied() {
        let mut m = Model::new(policy());
        m.decide(&dns_frag(Frag::First, 999), T0);
        // Other id, other source MAC, other protocol.
        drop(
            &m.decide(&dns_frag(Frag::Later, 998), T0),
            DropReason::Fragment,
        );
        drop(
            &m.decide(&mac(dns_frag(Frag::Later, 999), M3), T0),
            DropReason::Fragment,
        );
        let mut p = dns_frag(Frag::Later, 999);
        p.proto = PROTO_TCP;
        drop(&m.decide(&p, T0), DropReason::Fragment);
        // After a reload the entry no longer ties.
        m.reload(policy());
        drop(
            &m.decide(&dns_frag(Frag::Later, 999), T0),
            DropReason::Fragment,
        );
        // A first fragment no rule allows leaves no entry.
        let mut m = Model::new(policy());
        let first = frag(
            udp("eth2", 0, "10.20.1.1", 5000, "8.8.8.8", 54),
            Frag::First,
            7,
        );
        drop(&m.decide(&first, T0), DropReason::NoRule);
        assert_eq!(m.fragments(), 0);
        drop(
            &m.decide(
                &frag(udp("eth2", 0, "10.20.1.1", 0, "8.8.8.8", 0), Frag::Later, 7),
                T0,
            ),
            DropReason::Fragment,
        );
    }

    #[test]
    fn later_fragment_with_fragments_allow_uses_portless_rules_only() {
        let mut p = policy();
        p.defaults.fragments = Action::Allow;
        let mut m = Model::new(p);
        // udp 53 has a port list: cannot match a fragment without ports.
        drop(&m.decide(&dns_frag(Frag::Later, 1), T0), DropReason::NoRule);
        // batch-any (any, no ports) can.
        let f = frag(
            on("eth1", 0, PROTO_TCP, "10.10.1.5", 1, "10.20.1.1", 2),
            Frag::Later,
            5,
        );
        let d = m.decide(&f, T0);
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Rule), Some(7))
        );
        assert_eq!((m.flows(), m.fragments()), (0, 0));
        // ping (icmp, no ports) can, for ICMP fragments.
        let f = frag(
            on("eth2", 0, PROTO_ICMP, "10.20.1.1", 0, "10.10.1.1", 0),
            Frag::Later,
            6,
        );
        assert_eq!(m.decide(&f, T0).rule, Some(2));
        // A tied fragment is still "fragment".
        m.decide(&dns_frag(Frag::First, 2), T0);
        pass(
            &m.decide(&dns_frag(Frag::Later, 2), T0),
            PassReason::Fragment,
        );
    }

    #[test]
    fn later_fragment_with_l4_flag_set_is_still_portless() {
        let mut p = policy();
        p.defaults.fragments = Action::Allow;
        let m = Model::new(p);
        let mut f = dns_frag(Frag::Later, 1);
        f.l4 = true;
        f.dport = 53;
        drop(&m.explain(&f), DropReason::NoRule);
    }

    #[test]
    fn first_fragment_inside_an_existing_flow_ties_its_later_fragments() {
        // A first fragment that passes as Established/Reply opens a fragment entry too, so
        // its later fragments follow it (a large DNS answer, say) instead of being dropped.
        let mut m = Model::new(policy());
        pass(&m.decide(&dns_frag(Frag::None, 0), T0), PassReason::Rule);
        pass(
            &m.decide(&dns_frag(Frag::First, 3), T0),
            PassReason::Established,
        );
        assert_eq!(m.fragments(), 1);
        pass(
            &m.decide(&dns_frag(Frag::Later, 3), T0),
            PassReason::Fragment,
        );
        // Another datagram's later fragment is still untied.
        drop(
            &m.decide(&dns_frag(Frag::Later, 4), T0),
            DropReason::Fragment,
        );
    }

    #[test]
    fn ipv6_fragments() {
        let mut m = Model::new(policy());
        let first = frag(
            on("eth2", 0, PROTO_TCP, "fd20::5", 40000, "fd10::9", 22),
            Frag::First,
            0x1234_5678,
        );
        pass(&m.decide(&first, T0), PassReason::Rule);
        let later = frag(
            on("eth2", 0, PROTO_TCP, "fd20::5", 0, "fd10::9", 0),
            Frag::Later,
            0x1234_5678,
        );
        let d = m.decide(&later, T0);
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Fragment), Some(8))
        );
    }

    #[test]
    fn ipv6_later_fragments_are_tied_whatever_their_next_header() {
        // The first fragment walks a destination-options header after the fragment header
        // and finds TCP; its later fragments only show the fragment header's next header.
        let mut m = Model::new(policy());
        let first = frag(
            on("eth2", 0, PROTO_TCP, "fd20::5", 40000, "fd10::9", 22),
            Frag::First,
            77,
        );
        pass(&m.decide(&first, T0), PassReason::Rule);
        let later = frag(
            on("eth2", 0, 60, "fd20::5", 0, "fd10::9", 0),
            Frag::Later,
            77,
        );
        pass(&m.decide(&later, T0), PassReason::Fragment);
        // IPv4 keeps the protocol in the key.
        let first = frag(
            on("eth2", 0, PROTO_UDP, "10.20.1.1", 5000, "8.8.8.8", 53),
            Frag::First,
            78,
        );
        pass(&m.decide(&first, T0), PassReason::Rule);
        let later = frag(
            on("eth2", 0, PROTO_TCP, "10.20.1.1", 0, "8.8.8.8", 0),
            Frag::Later,
            78,
        );
        drop(&m.decide(&later, T0), DropReason::Fragment);
    }

    #[test]
    fn only_icmp_echo_is_a_flow() {
        let mut m = Model::new(policy());
        let mut ts = on("eth2", 0, PROTO_ICMP, "10.20.1.1", 0, "10.10.9.9", 0);
        ts.icmp_type = 13; // timestamp request
        pass(&m.decide(&ts, T0), PassReason::Rule);
        assert_eq!(m.flows(), 0);
        let mut back = on("eth1", 0, PROTO_ICMP, "10.10.9.9", 0, "10.20.1.1", 0);
        back.icmp_type = 14;
        drop(&m.decide(&back, T0), DropReason::NoRule);
        // An echo request does open a flow, and its reply passes by it.
        pass(
            &m.decide(
                &on("eth2", 0, PROTO_ICMP, "10.20.1.1", 9, "10.10.9.9", 0),
                T0,
            ),
            PassReason::Rule,
        );
        let mut reply = on("eth1", 0, PROTO_ICMP, "10.10.9.9", 0, "10.20.1.1", 9);
        reply.icmp_type = 0;
        pass(&m.decide(&reply, T0), PassReason::Reply);
    }

    // ---- reload -----------------------------------------------------------------------

    #[test]
    fn reload_keeps_allowed_flows() {
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        let mut p = policy();
        p.rules
            .insert(0, rule("new-first", 0, 1, Protocol::Udp, &[(9, 9)]));
        m.reload(p);
        assert_eq!(m.generation(), 2);
        let d = m.decide(&eltax_reply(TCP_ACK), T0 + 1);
        pass(&d, PassReason::Reply);
        assert_eq!(d.rule, Some(1), "rule index of the current policy");
        let f = &m.flow_list()[0];
        assert_eq!((f.generation, f.rule), (2, 1));
    }

    #[test]
    fn reload_kills_revoked_flows() {
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        m.decide(&eltax_reply(TCP_SYN | TCP_ACK), T0);
        let mut p = policy();
        p.rules[0].ports = vec![PortRange { lo: 8443, hi: 8443 }];
        m.reload(p);
        assert_eq!(m.flows(), 1, "revalidation is lazy");
        drop(&m.decide(&eltax_reply(TCP_ACK), T0 + 1), DropReason::NoRule);
        assert_eq!(m.flows(), 0);
        drop(
            &m.decide(
                &mac(
                    tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", 443, TCP_ACK),
                    M1,
                ),
                T0 + 2,
            ),
            DropReason::NoRule,
        );
    }

    #[test]
    fn reload_revalidates_mac_zone_and_mode() {
        // MAC removed from the rule.
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        let mut p = policy();
        p.rules[0].source_macs = vec![M2];
        m.reload(p);
        drop(&m.decide(&eltax_reply(TCP_ACK), T0), DropReason::NoRule);
        // Client network moved into another zone: the stored ingress now spoofs.
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        let mut p = policy();
        p.zones[3].networks.push("10.20.5.0/24".parse().unwrap());
        m.reload(p);
        drop(&m.decide(&eltax_reply(TCP_ACK), T0), DropReason::NoRule);
        // Interface removed from the zone.
        let mut m = Model::new(policy());
        m.decide(&udp("eth2", 100, "10.20.1.1", 1000, "8.8.8.8", 53), T0);
        let mut p = policy();
        p.zones[1].interfaces.retain(|i| i.vlan.is_none());
        m.reload(p.clone());
        drop(
            &m.decide(&udp("eth3", 300, "8.8.8.8", 53, "10.20.1.1", 1000), T0),
            DropReason::NoRule,
        );
        // ...but the same flow opened on the untagged interface survives that policy.
        let mut m = Model::new(policy());
        m.decide(&udp("eth2", 0, "10.20.1.1", 1000, "8.8.8.8", 53), T0);
        m.reload(p);
        pass(
            &m.decide(&udp("eth3", 300, "8.8.8.8", 53, "10.20.1.1", 1000), T0),
            PassReason::Reply,
        );
        // Rule switched to audit mode: the flow survives as audit.
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        let mut p = policy();
        p.rules[0].mode = Mode::Audit;
        m.reload(p);
        let d = m.decide(&eltax_reply(TCP_ACK), T0);
        pass(&d, PassReason::Reply);
        assert!(d.audit);
        // intra_zone: both ends moved into one zone → not a cross-zone flow any more.
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        let mut p = policy();
        p.zones[1].networks.push("10.10.9.0/24".parse().unwrap());
        m.reload(p);
        let d = m.decide(&eltax_reply(TCP_ACK), T0);
        drop(&d, DropReason::SpoofedSource); // 10.10.9.20 is now lgwan, entering via eth1
        assert_eq!(m.flows(), 1, "spoof check happens before the flow lookup");
        let d = m.decide(
            &mac(
                tcp("eth2", "10.20.5.10", 40000, "10.10.9.20", 443, TCP_ACK),
                M1,
            ),
            T0,
        );
        pass(&d, PassReason::IntraZone);
    }

    #[test]
    fn revalidation_happens_even_when_direction_then_misses() {
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        m.reload(policy());
        // Opening direction, wrong MAC: revalidates (generation 2), then misses on the MAC.
        drop(
            &m.decide(&mac(eltax_syn(), OTHER_MAC), T0),
            DropReason::MacMismatch,
        );
        assert_eq!(m.flow_list()[0].generation, 2);
    }

    // ---- global audit mode ------------------------------------------------------------

    #[test]
    fn global_audit_mode() {
        let mut p = policy();
        p.mode = Mode::Audit;
        let mut m = Model::new(p);
        let d = m.decide(&eltax_reply(TCP_ACK), T0);
        drop(&d, DropReason::NoRule);
        assert!(!d.audit);
        assert_eq!(m.verdict(&d), Verdict::Audit);
        assert!(d.xdp_pass(true));
        assert!(!d.xdp_pass(false));
        assert_eq!(m.flows(), 0, "an audited drop opens no flow");
        assert_eq!(m.counters().drop(DropReason::NoRule, true).packets, 1);
        assert_eq!(m.counters().drop(DropReason::NoRule, false).packets, 0);
        assert_eq!(
            m.counters()
                .zone_pair(MYNUMBER, LGWAN, Verdict::Audit)
                .packets,
            1
        );
        // Spoofed and mac mismatch are auditable too.
        let d = m.decide(&tcp("eth2", "10.10.1.1", 1, "10.20.1.1", 2, 0), T0);
        assert_eq!(m.verdict(&d), Verdict::Audit);
        // What the data path cannot decide is dropped even in audit mode.
        let d = m.decide_early(Outcome::Drop(DropReason::Malformed), 60);
        assert_eq!(m.verdict(&d), Verdict::Deny);
        assert_eq!(
            m.counters().drop(DropReason::Malformed, false),
            Counter {
                packets: 1,
                bytes: 60
            }
        );
        assert_eq!(m.counters().zone_pair(0, 0, Verdict::Deny).packets, 1);
        // Allowed traffic is still allow.
        let d = m.decide(&eltax_syn(), T0);
        assert_eq!(m.verdict(&d), Verdict::Allow);
    }

    // ---- explain / counters -----------------------------------------------------------

    #[test]
    fn explain_is_stateless() {
        let mut m = Model::new(policy());
        m.decide(&eltax_syn(), T0);
        let before = m.counters().clone();
        // The reply would pass by flow; explain ignores flows.
        drop(&m.explain(&eltax_reply(TCP_ACK)), DropReason::NoRule);
        pass(&m.explain(&eltax_syn()), PassReason::Rule);
        pass(
            &m.explain(&on("eth2", 0, PROTO_TCP, "10.20.1.1", 1, "8.8.8.8", 443)),
            PassReason::Rule,
        );
        assert_eq!(m.flows(), 1);
        assert_eq!(m.counters(), &before);
        // Later fragments: as if untied.
        drop(&m.explain(&dns_frag(Frag::Later, 1)), DropReason::Fragment);
    }

    #[test]
    fn counters_follow_decisions() {
        let mut m = Model::new(policy());
        let mut syn = eltax_syn();
        syn.len = 74;
        m.decide(&syn, T0);
        let mut r = eltax_reply(TCP_SYN | TCP_ACK);
        r.len = 66;
        m.decide(&r, T0);
        m.decide(&tcp("eth2", "10.10.1.1", 1, "10.20.1.1", 2, 0), T0);
        m.decide_early(Outcome::Pass(PassReason::Neighbor), 42);
        let c = m.counters();
        assert_eq!(
            c.rule(0),
            Counter {
                packets: 2,
                bytes: 140
            }
        );
        assert_eq!(
            c.zone_pair(LGWAN, MYNUMBER, Verdict::Allow),
            Counter {
                packets: 1,
                bytes: 74
            }
        );
        assert_eq!(
            c.zone_pair(MYNUMBER, LGWAN, Verdict::Allow),
            Counter {
                packets: 1,
                bytes: 66
            }
        );
        assert_eq!(c.zone_pair(LGWAN, 0, Verdict::Deny).packets, 1);
        assert_eq!(
            c.zone_pair(0, 0, Verdict::Allow),
            Counter {
                packets: 1,
                bytes: 42
            }
        );
        assert_eq!(c.pass(PassReason::Rule).packets, 1);
        assert_eq!(c.pass(PassReason::Reply).packets, 1);
        assert_eq!(c.pass(PassReason::Neighbor).packets, 1);
        assert_eq!(c.drop(DropReason::SpoofedSource, false).packets, 1);
        assert_eq!(c.packets(), 4);
        // The flow counts its opening packet and its reply, each in its direction.
        assert_eq!(
            m.flow_list()[0].counts,
            FlowCounts {
                orig_packets: 1,
                orig_bytes: 74,
                reply_packets: 1,
                reply_bytes: 66,
            }
        );
    }

    #[test]
    fn flow_key_is_direction_free() {
        let a = FlowKey::new(6, (ip("10.0.0.2"), 1), (ip("10.0.0.1"), 2));
        let b = FlowKey::new(6, (ip("10.0.0.1"), 2), (ip("10.0.0.2"), 1));
        assert_eq!(a, b);
        assert_ne!(
            a,
            FlowKey::new(17, (ip("10.0.0.1"), 2), (ip("10.0.0.2"), 1))
        );
    }

    #[test]
    fn lpm_over_all_zones() {
        let p = policy();
        assert_eq!(addr_zone(&p, ip("10.20.99.1")), CORE);
        assert_eq!(addr_zone(&p, ip("10.20.98.1")), LGWAN);
        assert_eq!(addr_zone(&p, ip("10.10.0.0")), MYNUMBER);
        assert_eq!(addr_zone(&p, ip("10.30.0.1")), INTERNET);
        assert_eq!(addr_zone(&p, ip("fd10::1")), MYNUMBER);
        assert_eq!(addr_zone(&p, ip("2001:db8::1")), INTERNET);
        assert_eq!(ingress_zone(&p, "eth2", 0), LGWAN);
        assert_eq!(ingress_zone(&p, "eth2", 100), LGWAN);
        assert_eq!(ingress_zone(&p, "eth3", 0), 0);
        assert_eq!(ingress_zone(&p, "eth3", 300), INTERNET);
    }
}

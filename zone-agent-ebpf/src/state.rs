//! Flows: replies and later packets of an allowed flow pass without re-matching; ICMP errors
//! quoting an allowed flow pass; later fragments inherit their first fragment's verdict.
//!
//! A flow records the policy generation that allowed it. After a reload its opening packet
//! is re-decided here, in the kernel, against the new policy (from the ingress interface,
//! VLAN and MAC kept in the entry): the flow survives only if the new policy still allows
//! it, and there is no window in which a revoked flow passes.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_coarse_ns};
use zone_agent_common::*;

use crate::{
    events,
    maps::{EMBRYOS, FLOWS, FRAGS},
    parse::{FRAG_FIRST, Packet, Tuple},
    record, rule,
    scratch::{Hit, Match, Revalidation, Scratch, Zones},
    step::Step,
    zone,
};

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Key of the flow a tuple belongs to, and whether the tuple's source is end `a`.
#[inline(always)]
pub fn key(t: &Tuple) -> (FlowKey, bool) {
    // Any total order makes both directions give one key; word order is the cheapest.
    let (s, d) = (Tuple::words(&t.src), Tuple::words(&t.dst));
    let src_is_a = (s[0], s[1], t.sport) <= (d[0], d[1], t.dport);
    let (a, a_port, b, b_port) = if src_is_a {
        (t.src, t.sport, t.dst, t.dport)
    } else {
        (t.dst, t.dport, t.src, t.sport)
    };
    (
        FlowKey {
            a,
            b,
            a_port,
            b_port,
            proto: t.proto,
            family: t.family,
            _pad: [0; 2],
        },
        src_is_a,
    )
}

/// Re-decide a flow of an older generation under the active policy; updates the entry.
/// `w` is working memory for the opening packet's tuple and zones (see `Scratch`).
#[inline(always)]
fn revalidate(
    set: u32,
    generation: u32,
    k: &FlowKey,
    st: &mut FlowState,
    w: &mut Revalidation,
) -> bool {
    let (src, sport, dst, dport) = if st.orig_is_a != 0 {
        (k.a, k.a_port, k.b, k.b_port)
    } else {
        (k.b, k.b_port, k.a, k.a_port)
    };
    w.tuple = Tuple {
        family: k.family,
        proto: k.proto,
        l4: true,
        src,
        dst,
        sport,
        dport,
    };
    w.zones = match zone::resolve(set, st.orig_ifindex, st.orig_vlan, &w.tuple) {
        Ok(z) => z,
        Err(_) => return false,
    };
    if w.zones.unknown() || w.zones.from == w.zones.to {
        return false;
    }
    match rule::find(set, &w.zones, &w.tuple, &st.orig_mac, &mut w.matched).result() {
        Ok(_) => {
            st.generation = generation;
            st.rule = w.matched.rule;
            st.from_zone = w.zones.from;
            st.to_zone = w.zones.to;
            st.flags = (st.flags & !FLOW_AUDIT) | if w.matched.audit { FLOW_AUDIT } else { 0 };
            true
        }
        Err(_) => false,
    }
}

/// `lookup` found no flow that decides the packet.
pub const LOOKUP_MISS: u32 = 0;
/// `lookup` found the packet's flow: `s.pass` says how it passes.
pub const LOOKUP_HIT: u32 = 1;
/// The fast lookup found an entry that is expired or of an older generation: only the
/// lookup at step 7 proper may remove or re-decide it.
pub const LOOKUP_STALE: u32 = 2;

/// `Scratch::found`: no entry for the key was left behind by `lookup`.
pub const FOUND_NONE: u32 = 0;
/// An entry in `FLOWS` (replied flows) that did not carry the packet.
pub const FOUND_FLOWS: u32 = 1;
/// An entry in `EMBRYOS` that did not carry the packet.
pub const FOUND_EMBRYOS: u32 = 2;

/// The packet's own flow, if it has one: established (same direction) or reply.
///
/// `fast`: the lookup before the address checks (`classify`'s fast path). It takes only a
/// live flow of the active generation and changes nothing else: removing an expired entry
/// or re-deciding an older one there would do it also for packets that steps 3–5 decide
/// (a spoofed source, say), and a flow that an intermediate policy revoked would be gone
/// when a later policy allows it again. Those entries are left to the lookup at step 7.
// Own BPF function (own stack frame), see parse::packet.
#[inline(never)]
/// Only `s.zones.from` needs to be known; on a hit `s.zones.to` is set to the zone the packet goes
/// to (the flow's other end).
pub fn lookup(set: u32, generation: u32, s: &mut Scratch, fast: bool) -> Step {
    let Scratch {
        packet,
        zones,
        pass,
        flow_key,
        found,
        revalidation,
        ..
    } = s;
    match lookup_inner(
        set,
        generation,
        zones,
        packet,
        flow_key,
        found,
        revalidation,
        fast,
    ) {
        Ok((h, to)) => {
            *pass = h;
            zones.to = to;
            Step::ok(LOOKUP_HIT)
        }
        Err(r) => Step::ok(r),
    }
}

/// Whether a packet belongs in the flow table: TCP, UDP and ICMP echo request/reply with
/// their header. Other ICMP messages have no identifier to tell flows apart; they pass as
/// related (errors quoting a flow) or by rule, never as a flow of their own.
#[inline(always)]
fn flowable(p: &Packet) -> bool {
    if !p.t.l4 {
        return false;
    }
    match p.t.proto {
        PROTO_ICMP => matches!(p.icmp_type, ICMP_ECHO_REPLY | ICMP_ECHO_REQUEST),
        PROTO_ICMPV6 => matches!(p.icmp_type, ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY),
        _ => true,
    }
}

#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "the Scratch fields it works on, as separate borrows (the caller splits the \
              scratch); always inlined into `lookup`, so the count costs nothing"
)]
fn lookup_inner(
    set: u32,
    generation: u32,
    z: &Zones,
    p: &Packet,
    k: &mut FlowKey,
    found: &mut u32,
    re: &mut Revalidation,
    fast: bool,
) -> Result<(Hit, u8), u32> {
    *found = FOUND_NONE;
    if !flowable(p) {
        return Err(LOOKUP_MISS);
    }
    let src_is_a;
    (*k, src_is_a) = key(&p.t);
    let k = &*k;
    // Replied flows first: they carry nearly all packets, which then cost one lookup. Only
    // packets of a handshake (and new flows) probe the embryonic table as well.
    let (st, embryo) = match FLOWS.get_ptr_mut(k) {
        Some(st) => (st, false),
        None => (EMBRYOS.get_ptr_mut(k).ok_or(LOOKUP_MISS)?, true),
    };
    // SAFETY: an entry may be removed (or, in the LRU, recycled) under us by another CPU; a
    // torn read can only make the checks below fail (zone ids, generation), which denies:
    // fail closed.
    let st = unsafe { &mut *st };
    let t = now();
    let expired = t.saturating_sub(st.last_seen_ns) > flow_lifetime(k.proto, st.flags);
    if fast && (expired || st.generation != generation) {
        return Err(LOOKUP_STALE);
    }
    if expired || (st.generation != generation && !revalidate(set, generation, k, st, re)) {
        let end = if expired {
            FlowEnd::of_expired(st.flags)
        } else {
            FlowEnd::Revoked
        };
        events::flow_end(k, st, end);
        remove(k, embryo);
        return Err(LOOKUP_MISS);
    }
    let orig = (st.orig_is_a != 0) == src_is_a;
    // A reply must come back in through the destination zone, and a later packet of the
    // flow through the zone that opened it; anything else is not this flow.
    let expected_zone = if orig { st.from_zone } else { st.to_zone };
    // The opening direction must also keep its source MAC: a flow opened under a MAC-bound
    // 特定通信 is not a way in for another host that copies its addresses.
    if z.from != expected_zone || (orig && st.orig_mac != p.src_mac) {
        *found = if embryo { FOUND_EMBRYOS } else { FOUND_FLOWS };
        return Err(LOOKUP_MISS);
    }
    st.last_seen_ns = t;
    count(st, orig, p.len);
    let to = if orig { st.to_zone } else { st.from_zone };
    let hit = Hit {
        reason: dir_reason(orig),
        rule: st.rule,
        audit: st.flags & FLOW_AUDIT != 0,
    };
    // A RST only shortens the flow's life (`FLOW_TCP_RESET_NS`): anyone on the path of a
    // zone whose networks are wide (the internet's 0.0.0.0/0) can forge one with a random
    // sequence number, and deleting the flow would cut a live connection. The next packet
    // that is not a RST gives the flow its normal lifetime back. A RST never counts as the
    // reply that promotes a flow (a closed port answering a SYN flood fills nothing).
    if p.tcp_rst() {
        st.flags |= FLOW_RST;
        record::flow_event(FlowEvent::Reset);
        return Ok((hit, to));
    }
    st.flags &= !FLOW_RST;
    if p.tcp_fin() {
        st.flags |= if orig { FLOW_FIN_ORIG } else { FLOW_FIN_REPLY };
    }
    if !orig && st.flags & FLOW_REPLIED == 0 {
        st.flags |= FLOW_REPLIED;
        if embryo {
            promote(k, st);
        }
    }
    Ok((hit, to))
}

/// Adds the packet to its flow's counters. Atomic adds (`BPF_ATOMIC_ADD`, one locked
/// instruction each, no lookup): the two directions of a flow, and with RSS the packets of
/// one direction, are handled on several CPUs at once, and plain `+=` on the shared entry
/// would lose updates. Relaxed: the agent reads the totals only when the flow ends.
#[inline(always)]
fn count(st: &mut FlowState, orig: bool, len: u32) {
    use core::intrinsics::{AtomicOrdering::Relaxed, atomic_xadd};
    // The intrinsic, not `AtomicU64::fetch_add`: the bpfel target has no compare-and-swap,
    // so core leaves the atomic types without read-modify-write methods, while LLVM lowers
    // an add whose result is unused to BPF's own atomic add.
    let add = |field: &mut u64, n: u64| {
        // SAFETY: an aligned u64 of the map entry; every writer of these fields uses atomics
        // (the entry is initialised before it is inserted).
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(field, n) };
    };
    // Two branches, not a pointer chosen by `orig`: each add then has a constant offset.
    if orig {
        add(&mut st.orig_packets, 1);
        add(&mut st.orig_bytes, len as u64);
    } else {
        add(&mut st.reply_packets, 1);
        add(&mut st.reply_bytes, len as u64);
    }
}

/// Removes an expired or revoked entry from the table it was found in.
#[inline(always)]
fn remove(k: &FlowKey, embryo: bool) {
    if embryo {
        let _ = EMBRYOS.remove(k);
        record::flow_event(FlowEvent::EmbryoRemoved);
    } else {
        let _ = FLOWS.remove(k);
    }
}

/// The first reply moves an embryonic flow into the table nothing evicts. Inserted there
/// before it leaves the LRU, so that a packet of the flow on another CPU finds one copy or
/// the other, except in the instant between its two probes (a dropped packet that TCP
/// retransmits: fail closed). If the table is full the flow stays embryonic (it keeps
/// working, but new flows can evict it) and the refusal is counted, once per flow.
#[inline(always)]
fn promote(k: &FlowKey, st: &FlowState) {
    if FLOWS.insert(k, st, BPF_NOEXIST as u64).is_ok() {
        let _ = EMBRYOS.remove(k);
        record::flow_event(FlowEvent::Promoted);
    } else {
        record::flow_event(FlowEvent::PromotionRefused);
    }
}

/// The flow entry of `k` in either table (read-only).
#[inline(always)]
fn get(k: &FlowKey) -> Option<&FlowState> {
    // SAFETY: read-only use of plain data.
    unsafe { FLOWS.get(k).or_else(|| EMBRYOS.get(k)) }
}

#[inline(always)]
fn dir_reason(orig: bool) -> PassReason {
    if orig {
        PassReason::Established
    } else {
        PassReason::Reply
    }
}

/// An ICMP error whose quoted packet belongs to a live flow of this generation, travelling
/// back towards the quoted packet's sender.
// Own BPF function (own stack frame), see parse::packet.
#[inline(never)]
pub fn related(generation: u32, s: &mut Scratch) -> bool {
    match related_inner(generation, &s.zones, &s.packet) {
        Some(h) => {
            s.pass = h;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn related_inner(generation: u32, z: &Zones, p: &Packet) -> Option<Hit> {
    if !p.has_inner {
        return None;
    }
    let inner = &p.inner;
    if inner.family != p.t.family || inner.src != p.t.dst {
        return None;
    }
    let (k, inner_src_is_a) = key(inner);
    let st = get(&k)?;
    if st.generation != generation
        || now().saturating_sub(st.last_seen_ns) > flow_lifetime(k.proto, st.flags)
    {
        return None;
    }
    // The quoted packet went from its source to the other end; the error comes from the
    // other end's zone.
    let quoted_from_orig = (st.orig_is_a != 0) == inner_src_is_a;
    let expected_zone = if quoted_from_orig {
        st.to_zone
    } else {
        st.from_zone
    };
    if z.from != expected_zone {
        return None;
    }
    Some(Hit {
        reason: PassReason::Related,
        rule: st.rule,
        audit: st.flags & FLOW_AUDIT != 0,
    })
}

/// Record a flow a rule allowed, as embryonic; `Ok(true)` if a flow was inserted. A TCP
/// RST opens nothing. `found`: an entry `lookup` found for the key but did not take
/// (another MAC, another zone): the new flow replaces it, so a key is never in both tables.
/// The opening packet is the flow's first in its counters.
#[inline(always)]
pub fn open(
    generation: u32,
    z: &Zones,
    p: &Packet,
    ifindex: u32,
    m: &Match,
    found: u32,
) -> Result<bool, DropReason> {
    if !flowable(p) || p.tcp_rst() {
        return Ok(false);
    }
    let (k, src_is_a) = key(&p.t);
    let t = now();
    let st = FlowState {
        last_seen_ns: t,
        start_ns: t,
        orig_packets: 1,
        orig_bytes: p.len as u64,
        generation,
        rule: m.rule,
        orig_ifindex: ifindex,
        orig_vlan: p.vlan,
        orig_mac: p.src_mac,
        from_zone: z.from,
        to_zone: z.to,
        orig_is_a: src_is_a as u8,
        flags: if m.audit { FLOW_AUDIT } else { 0 },
        ..FlowState::default()
    };
    if found == FOUND_FLOWS {
        let _ = FLOWS.remove(&k);
    }
    match EMBRYOS.insert(&k, &st, 0) {
        Ok(()) => {
            // Replacing an embryonic entry in place adds none.
            if found != FOUND_EMBRYOS {
                record::flow_event(FlowEvent::Opened);
            }
            Ok(true)
        }
        Err(_) => {
            record::flow_event(FlowEvent::OpenRefused);
            Err(DropReason::TableFull)
        }
    }
}

/// Fragments of one datagram: (source, destination, identification) and, for IPv4, the
/// protocol (RFC 791). IPv6 leaves the protocol out (RFC 8200 §4.5 makes the identification
/// unique per address pair): a later fragment only shows the fragment header's next header,
/// which is not the upper-layer protocol when more extension headers follow it.
#[inline(always)]
fn frag_key(p: &Packet) -> FragKey {
    FragKey {
        src: p.t.src,
        dst: p.t.dst,
        id: p.frag_id,
        proto: if p.t.family == FAMILY_V4 {
            p.t.proto
        } else {
            0
        },
        family: p.t.family,
        _pad: [0; 2],
    }
}

/// A later fragment of a datagram whose first fragment was allowed under this generation
/// and entered through the same zone.
#[inline(always)]
pub fn fragment(generation: u32, z: &Zones, p: &Packet) -> Option<Hit> {
    let k = frag_key(p);
    // SAFETY: read-only use of plain data.
    let st = unsafe { FRAGS.get(&k) }?;
    if st.generation != generation
        || st.from_zone != z.from
        || st.mac != p.src_mac
        || now().saturating_sub(st.last_seen_ns) > FRAG_NS
    {
        return None;
    }
    Some(Hit {
        reason: PassReason::Fragment,
        rule: st.rule,
        audit: st.flags & FLOW_AUDIT != 0,
    })
}

/// After a pass (`s.pass`, zones in `s.zones`): a first fragment is remembered so that its later
/// fragments can be tied to it, whatever let it pass (a rule, its flow, a related error).
#[inline(always)]
pub fn follow_first_fragment(generation: u32, s: &Scratch) -> Result<(), DropReason> {
    if s.packet.frag != FRAG_FIRST {
        return Ok(());
    }
    let st = FragState {
        last_seen_ns: now(),
        generation,
        rule: s.pass.rule,
        mac: s.packet.src_mac,
        from_zone: s.zones.from,
        to_zone: s.zones.to,
        flags: if s.pass.audit { FLOW_AUDIT } else { 0 },
        _pad: [0; 7],
    };
    FRAGS
        .insert(&frag_key(&s.packet), &st, 0)
        .map_err(|_| DropReason::TableFull)
}

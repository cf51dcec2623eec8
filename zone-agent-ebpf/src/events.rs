//! Events (the `+ event` of the `record` step): single decisions told to the agent through
//! the `ZA_EVENTS` ring (record layout `zone_agent_common::Event`).
//!
//! Who emits: `decision` (a denied or audited packet, an audit rule's pass) from
//! `record_and_act`; `flow_open` when an allowed packet inserted a flow (`verdict::decide`);
//! `flow_end` when the data path itself removes a flow (`state::lookup`: expired, revoked).
//! The established fast path calls none of them: a packet of a live flow only adds to its
//! flow's counters (`state::count`).
//!
//! Every emitter first reads `ZA_EVCONF` and returns at once when its kind is off (flags 0,
//! the initial content: no ring call at all); then one token of the per-CPU bucket
//! (`ZA_EVBUDGET`) is taken in front of `bpf_ringbuf_reserve`, so a flood costs at most
//! `rate` reservations per second per CPU. What the bucket refuses (`RateLimited`) and what
//! the full ring refuses (`RingFull`) is counted in `ZA_EVSTATS` and in the bucket's `lost`,
//! which the next emitted event carries as `lost_before`. Each emitter is its own BPF
//! function, verified once instead of once per path of its caller; `decision` and
//! `flow_open` write the record field by field in place in the ring (no copy on the stack).
//! The verifier checks the stack of every call chain against the 512-byte limit.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    maps::ring_buf::RingBufEntry,
};
use zone_agent_common::*;

use crate::{
    maps::{EVENT_BUDGET, EVENT_CONFIG, EVENT_STATS, EVENTS},
    parse::Packet,
    scratch::Scratch,
    state,
};

/// Bytes one record takes in the ring: the record and the ring's 8-byte header
/// (`BPF_RINGBUF_HDR_SZ`); 128, already a multiple of 8, so no rounding.
const RECORD_BYTES: u64 = core::mem::size_of::<Event>() as u64 + 8;

#[inline(always)]
fn count(stat: EventStat) {
    if let Some(c) = EVENT_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, this CPU only.
        unsafe { *c += 1 };
    }
}

/// The settings, if events of `flag` (`EVENTS_*`) are on.
#[inline(always)]
fn enabled(flag: u32) -> Option<EventConfig> {
    EVENT_CONFIG.get(0).copied().filter(|c| c.flags & flag != 0)
}

/// Refills the bucket for the time since its last use and takes one token (`NS` units).
/// A bucket never used (`last_ns == 0`) starts full. See `EventBudget`.
#[inline(always)]
fn take_token(cfg: &EventConfig, b: &mut EventBudget, now: u64) -> bool {
    let cap = cfg.burst as u64 * NS;
    if b.last_ns == 0 {
        b.tokens = cap;
    } else {
        // Capped so that the product cannot overflow (`EVENT_REFILL_MAX_NS`).
        let elapsed = now.saturating_sub(b.last_ns).min(EVENT_REFILL_MAX_NS);
        let add = elapsed * cfg.rate as u64;
        // Written as a comparison against the room left, so that the sum cannot overflow;
        // a bucket above `cap` (the burst was lowered) is cut down to it.
        b.tokens = if b.tokens >= cap || add >= cap - b.tokens {
            cap
        } else {
            b.tokens + add
        };
    }
    b.last_ns = now;
    if b.tokens < NS {
        return false;
    }
    b.tokens -= NS;
    true
}

/// A record in the ring, with `time_ns` and `lost_before` written, or `None` (refused by
/// the bucket or by the full ring: counted, and added to `lost`).
#[inline(always)]
fn reserve(cfg: &EventConfig, now: u64) -> Option<RingBufEntry<Event>> {
    // SAFETY: per-CPU slot, this CPU only (XDP does not nest).
    let b = unsafe { &mut *EVENT_BUDGET.get_ptr_mut(0)? };
    if !take_token(cfg, b, now) {
        b.lost += 1;
        count(EventStat::RateLimited);
        return None;
    }
    let Some(mut e) = EVENTS.reserve::<Event>(0) else {
        b.lost += 1;
        count(EventStat::RingFull);
        return None;
    };
    let r = e.as_mut_ptr();
    // SAFETY: `r` is the reserved record (uninitialised: every field is written before
    // submit, by this function and the emitter's `fill_*`).
    unsafe {
        (*r).time_ns = now;
        (*r).lost_before = b.lost;
    }
    b.lost = 0;
    Some(e)
}

/// Commits the record: no wakeup, except for the record whose reservation made the pending
/// data cross `EVENT_WAKEUP_BYTES` (see there).
#[inline(always)]
fn submit(e: RingBufEntry<Event>, kind: EventKind) {
    // Pending bytes, this record included (reserved, so already counted by the producer).
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let crossed = (EVENT_WAKEUP_BYTES..EVENT_WAKEUP_BYTES + RECORD_BYTES).contains(&pending);
    let flags = if crossed {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    e.submit(flags as u64);
    count(EventStat::emitted(kind));
}

/// The packet's part of a record: tuple as it arrived, VLAN, MAC, TCP flags; counters 0.
///
/// # Safety
/// `r` points at a reserved record.
#[inline(always)]
unsafe fn fill_packet(r: *mut Event, p: &Packet) {
    let t = &p.t;
    let (sport, dport) = event_ports(t.proto, t.sport, t.dport, p.icmp_type, p.icmp_code);
    // SAFETY: the caller's contract.
    unsafe {
        (*r).start_ns = 0;
        (*r).orig_packets = 0;
        (*r).orig_bytes = 0;
        (*r).reply_packets = 0;
        (*r).reply_bytes = 0;
        (*r).src = t.src;
        (*r).dst = t.dst;
        (*r).src_port = sport;
        (*r).dst_port = dport;
        (*r).vlan = p.vlan;
        (*r).src_mac = p.src_mac;
        (*r).proto = t.proto;
        (*r).tcp_flags = p.tcp_flags;
        (*r)._pad = 0;
    }
}

/// A denied or audited packet: `s.note` says what was decided, `s.packet` what is known of
/// the packet (all zero if it was not parsed; the parsed part if parsing failed half-way).
// Own BPF function, see the module comment.
#[inline(never)]
pub fn decision(s: &Scratch) {
    let Some(cfg) = enabled(EVENTS_DENY) else {
        return;
    };
    let Some(mut e) = reserve(&cfg, state::now()) else {
        return;
    };
    let (n, r) = (&s.note, e.as_mut_ptr());
    // SAFETY: `r` is the reserved record.
    unsafe {
        fill_packet(r, &s.packet);
        (*r).ifindex = n.ifindex;
        (*r).rule = n.rule;
        (*r).generation = n.generation;
        (*r).kind = n.kind;
        (*r).reason = n.reason;
        (*r).from_zone = n.from;
        (*r).to_zone = n.to;
        (*r).flags = event_flags(s.packet.t.family, s.packet.vlan);
    }
    let kind = if n.kind == EventKind::Audit as u8 {
        EventKind::Audit
    } else {
        EventKind::Deny
    };
    submit(e, kind);
}

/// An allowed packet opened a flow: `s.packet` and `s.zones`, the rule in `s.pass`.
// Own BPF function, see the module comment.
#[inline(never)]
pub fn flow_open(ifindex: u32, generation: u32, s: &Scratch) {
    let Some(cfg) = enabled(EVENTS_FLOW) else {
        return;
    };
    let Some(mut e) = reserve(&cfg, state::now()) else {
        return;
    };
    let r = e.as_mut_ptr();
    // SAFETY: `r` is the reserved record.
    unsafe {
        fill_packet(r, &s.packet);
        (*r).ifindex = ifindex;
        (*r).rule = s.pass.rule;
        (*r).generation = generation;
        (*r).kind = EventKind::FlowOpen as u8;
        (*r).reason = 0;
        (*r).from_zone = s.zones.from;
        (*r).to_zone = s.zones.to;
        (*r).flags = event_flags(s.packet.t.family, s.packet.vlan)
            | if s.pass.audit { EVENT_FLOW_AUDIT } else { 0 };
    }
    submit(e, EventKind::FlowOpen);
}

/// The data path removes the flow `k` (`st`, read before the removal): see
/// `Event::flow_end`.
// Own BPF function, see the module comment.
#[inline(never)]
pub fn flow_end(k: &FlowKey, st: &FlowState, end: FlowEnd) {
    let Some(cfg) = enabled(EVENTS_FLOW) else {
        return;
    };
    let Some(mut e) = reserve(&cfg, state::now()) else {
        return;
    };
    let r = e.as_mut_ptr();
    // SAFETY: `r` is the reserved record; `reserve` wrote its time and `lost_before`.
    unsafe { r.write(Event::flow_end(k, st, end, (*r).time_ns, (*r).lost_before)) };
    submit(e, EventKind::FlowEnd);
}

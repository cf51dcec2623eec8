//! zone-agent's XDP program: every packet entering a zone interface of the gateway is
//! decided here.
//!
//! Pipeline: `parse` (headers → `Packet`) → `failsafe` → `zone` (ingress, addresses) →
//! `state` (flows, related ICMP errors, fragments) → `rule` (特定通信) → `verdict` → `record`
//! (counters, and events: `events`). `verdict.rs` holds the numbered precedence; its `classify` and `decide` are
//! the only places that turn the steps' outcomes into a `Decision`, and `zone_agent` below
//! is the only place that turns a decision into an XDP action.
//!
//! Steps hand their results over in `scratch::Scratch` (per-CPU working memory, see there
//! why not the stack). Inlined steps return `Result<_, DropReason>`. A step that is its own
//! BPF function (`#[inline(never)]`, to keep the stack and the verifier's path count down)
//! returns a `bool` if it only answers yes or no (`state::related`, `parse::quoted`,
//! `parse::source_routed`), otherwise a `step::Step`: the same as a `Result` in one
//! register, a value the step documents (`parse::PARSED_*`, `state::LOOKUP_*`, an extension
//! header's next header and length, or 0) or a drop reason.
//!
//! Imports point one way (no cycle): `step` uses nothing of the crate, `parse` only `step`;
//! `scratch` (types only) uses `parse`'s types; `maps` uses `scratch`; `zone`, `rule`,
//! `failsafe` and `record` use those; `events` uses those and `state::now`; `state` also
//! uses `zone`, `rule`, `record` and `events` (it re-decides flows after a reload, and ends
//! them); `verdict` uses the steps; `main` uses `verdict`, `maps`, `record` and `events`.
#![no_std]
#![no_main]
// `core::intrinsics::atomic_xadd` for the per-flow counters (see `state::count`).
#![feature(core_intrinsics)]
#![allow(internal_features, reason = "one intrinsic, see `state::count`")]
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values are passed by reference on purpose: by value, each call \
              may take a copy of the key on the 512-byte BPF stack"
)]

mod events;
mod failsafe;
mod maps;
mod parse;
mod record;
mod rule;
mod scratch;
mod state;
mod step;
mod verdict;
mod zone;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use zone_agent_common::*;

use crate::{
    maps::{ACTIVE, SCRATCH, SETCONF},
    scratch::{Note, Scratch},
    verdict::{Decision, Outcome, classify},
};

#[xdp]
pub fn zone_agent(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    // The active set's index, reduced to a valid one whatever the map holds (`SETS` is 2, so
    // this is `& 1`): it indexes `SETCONF` and every policy key.
    let set = ACTIVE.get(0).copied().unwrap_or(0) % SETS;
    let cfg = SETCONF.get(set).copied().unwrap_or_default();
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        // Index 0 of a one-slot array always exists; fail closed all the same.
        record::drop(DropReason::NoPolicy, false, len);
        return XDP_DROP;
    };
    // SAFETY: this CPU's slot, used by this invocation only (XDP does not nest).
    let s = unsafe { &mut *s };
    let d = if cfg.flags & SET_VALID == 0 {
        // Nothing parsed: the event of this drop reports an all-zero packet, not the last one.
        s.packet.reset();
        Decision::drop(DropReason::NoPolicy)
    } else {
        classify(&ctx, set, &cfg, s)
    };
    record_and_act(&ctx, set, &cfg, d, len, s)
}

/// The cost floor for benchmarks: an XDP program that does nothing but drop. Never attached.
#[xdp]
pub fn zone_agent_floor(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Counters, the decision's event (denied and audited packets, an audit rule's pass; never
/// a packet of a flow), and the XDP action.
#[inline(always)]
fn record_and_act(
    ctx: &XdpContext,
    set: u32,
    cfg: &SetConfig,
    d: Decision,
    len: u64,
    s: &mut Scratch,
) -> u32 {
    record::rule(set, d.rule, len);
    match d.outcome {
        Outcome::Pass(reason) => {
            record::pass(reason, len);
            let v = if d.audit {
                Verdict::Audit
            } else {
                Verdict::Allow
            };
            record::zone_pair(set, d.from, d.to, v, len);
            // Only the rule decision itself: later packets of an audit rule's flow pass as
            // established/reply and report nothing.
            if d.audit && reason == PassReason::Rule {
                note(ctx, cfg, &d, EventKind::Audit, 0, s);
                events::decision(s);
            }
            XDP_PASS
        }
        Outcome::Drop(reason) => {
            // Global audit mode passes what policy would deny, never what could not be
            // decided (fail closed).
            let audited = cfg.flags & SET_AUDIT != 0 && reason.auditable();
            record::drop(reason, audited, len);
            let kind = if audited {
                EventKind::Audit
            } else {
                EventKind::Deny
            };
            note(ctx, cfg, &d, kind, reason as u8, s);
            events::decision(s);
            if audited {
                record::zone_pair(set, d.from, d.to, Verdict::Audit, len);
                XDP_PASS
            } else {
                record::zone_pair(set, d.from, d.to, Verdict::Deny, len);
                XDP_DROP
            }
        }
    }
}

/// What `events::decision` reports besides the packet, into `s.note`.
#[inline(always)]
fn note(
    ctx: &XdpContext,
    cfg: &SetConfig,
    d: &Decision,
    kind: EventKind,
    reason: u8,
    s: &mut Scratch,
) {
    s.note = Note {
        ifindex: ctx.ingress_ifindex() as u32,
        generation: cfg.generation,
        rule: d.rule,
        kind: kind as u8,
        reason,
        from: d.from,
        to: d.to,
    };
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

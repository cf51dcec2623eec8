//! zone-agent's XDP program: every packet entering a zone interface of the gateway is
//! decided here.
//!
//! Pipeline: `parse` (headers → `Packet`) → `failsafe` → `zone` (ingress, addresses) →
//! `state` (flows, related ICMP errors, fragments) → `rule` (特定通信) → `verdict` → `record`
//! (counters). `verdict.rs` holds the numbered precedence; its `classify` and `decide` are
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
//! `failsafe` and `record` use those; `state` also uses `zone`, `rule` and `record` (it
//! re-decides flows after a reload); `verdict` uses the steps; `main` uses `verdict`, `maps`
//! and `record`.
#![no_std]
#![no_main]
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values are passed by reference on purpose: by value, each call \
              may take a copy of the key on the 512-byte BPF stack"
)]

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
    verdict::{Decision, Outcome, classify},
};

#[xdp]
pub fn zone_agent(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    // The active set's index, reduced to a valid one whatever the map holds (`SETS` is 2, so
    // this is `& 1`): it indexes `SETCONF` and every policy key.
    let set = ACTIVE.get(0).copied().unwrap_or(0) % SETS;
    let cfg = SETCONF.get(set).copied().unwrap_or_default();
    let d = match SCRATCH.get_ptr_mut(0) {
        _ if cfg.flags & SET_VALID == 0 => Decision::drop(DropReason::NoPolicy),
        // SAFETY: this CPU's slot, used by this invocation only (XDP does not nest).
        Some(s) => classify(&ctx, set, &cfg, unsafe { &mut *s }),
        // Index 0 of a one-slot array always exists; fail closed all the same.
        None => Decision::drop(DropReason::NoPolicy),
    };
    record_and_act(set, &cfg, d, len)
}

/// The cost floor for benchmarks: an XDP program that does nothing but drop. Never attached.
#[xdp]
pub fn zone_agent_floor(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

#[inline(always)]
fn record_and_act(set: u32, cfg: &SetConfig, d: Decision, len: u64) -> u32 {
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
            XDP_PASS
        }
        Outcome::Drop(reason) => {
            // Global audit mode passes what policy would deny, never what could not be
            // decided (fail closed).
            let audited = cfg.flags & SET_AUDIT != 0 && reason.auditable();
            record::drop(reason, audited, len);
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

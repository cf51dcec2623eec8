//! The verdict: the numbered precedence below, `classify` (parse, failsafe, ingress zone)
//! and `decide` (steps 3–10). The only place that turns the steps' outcomes into a
//! `Decision`; `zone_agent` in main.rs turns that into an XDP action and the counters.

use aya_ebpf::programs::XdpContext;
use zone_agent_common::*;

use crate::{
    events, failsafe, parse,
    parse::FRAG_LATER,
    rule,
    scratch::{Hit, Scratch, Zones},
    state,
    step::Step,
    zone,
};

/// What happened to the packet.
pub enum Outcome {
    Pass(PassReason),
    Drop(DropReason),
}

pub struct Decision {
    pub outcome: Outcome,
    pub from: u8,
    pub to: u8,
    pub rule: u32,
    /// Passed only because of audit mode (an audit rule, or a global-audit would-drop).
    pub audit: bool,
}

impl Decision {
    pub fn drop(reason: DropReason) -> Self {
        Decision {
            outcome: Outcome::Drop(reason),
            from: 0,
            to: 0,
            rule: NO_RULE,
            audit: false,
        }
    }
}

/// Precedence, first applicable wins:
///  0. a failsafe management flow to the gateway itself → pass failsafe (agent config);
///  1. unparseable → drop (malformed / header_limit / non_ip), a source-routed packet →
///     drop source_route; ARP and link-scoped ND pass;
///  2. ingress interface/VLAN in no zone → drop unknown_interface;
///  3. source address of another zone → drop spoofed_source (also for flow packets);
///  4. source or destination in no zone → defaults.unknown;
///  5. same zone on both sides → defaults.intra_zone;
///  6. ICMP error quoting a live flow → pass related;
///  7. packet of a live flow → pass established / reply;
///  8. later fragment: tied to an allowed first fragment → pass; else defaults.fragments
///     (allow = judged by port-less rules only, deny = drop fragment);
///  9. a rule matches → pass (audit if only audit rules) and open a flow;
/// 10. otherwise → drop mac_mismatch if a rule failed only on its MAC list, else no_rule.
///
/// Step 7 runs first, right after the ingress zone (the fast path: no address lookups for
/// packets of live flows). That gives the same verdicts as the order above: a flow entry of
/// the active generation was opened (or revalidated) for these very addresses and is only
/// found when the packet enters through the zone its end belongs to, so steps 3–5 would
/// pass it; and ICMP errors (step 6) never have a flow of their own. An expired entry or one
/// of an older generation is not touched there: step 7 proper removes or re-decides it,
/// once steps 3–6 have let the packet through.
#[inline(always)]
pub fn classify(ctx: &XdpContext, set: u32, cfg: &SetConfig, s: &mut Scratch) -> Decision {
    s.packet.reset();
    match parse::packet(ctx.ctx, &mut s.packet).result() {
        Ok(parse::PARSED_IP) => {}
        Ok(parse::PARSED_NEIGHBOR) => {
            return Decision {
                outcome: Outcome::Pass(PassReason::Neighbor),
                from: 0,
                to: 0,
                rule: NO_RULE,
                audit: false,
            };
        }
        // `packet` has no other value; fail closed all the same.
        Ok(_) => return Decision::drop(DropReason::Malformed),
        Err(r) => return Decision::drop(r),
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    // Step 0 needs the parsed tuple, so it runs right after parsing; a packet that cannot be
    // parsed is never failsafe.
    if failsafe::matches(ifindex, &s.packet) {
        return Decision {
            outcome: Outcome::Pass(PassReason::Failsafe),
            from: 0,
            to: 0,
            rule: NO_RULE,
            audit: false,
        };
    }
    let from = match zone::ingress(set, ifindex, s.packet.vlan) {
        Ok(z) => z,
        Err(r) => return Decision::drop(r),
    };
    s.zones = Zones::ingress_only(from);
    let outcome = match decide(set, cfg, ifindex, s) {
        Ok(()) => Outcome::Pass(s.pass.reason),
        Err(r) => Outcome::Drop(r),
    };
    let (rule, audit) = match outcome {
        Outcome::Pass(_) => (s.pass.rule, s.pass.audit),
        Outcome::Drop(_) => (NO_RULE, false),
    };
    Decision {
        outcome,
        from: s.zones.from,
        to: s.zones.to,
        rule,
        audit,
    }
}

/// Steps 3–10 of `classify` (7 first); on `Ok` the pass is described in `s.pass`, and
/// `s.zones` holds the zones either way.
#[inline(always)]
fn decide(set: u32, cfg: &SetConfig, ifindex: u32, s: &mut Scratch) -> Result<(), DropReason> {
    let generation = cfg.generation;
    let stale = match state::lookup(set, generation, s, true) {
        r if r == Step::ok(state::LOOKUP_HIT) => {
            return state::follow_first_fragment(generation, s);
        }
        r => r == Step::ok(state::LOOKUP_STALE),
    };
    s.zones = zone::addresses(set, s.zones.from, &s.packet.t)?;
    if s.zones.unknown() {
        return if cfg.flags & SET_UNKNOWN_ALLOW != 0 {
            s.pass = Hit::plain(PassReason::UnknownZone);
            Ok(())
        } else {
            Err(DropReason::UnknownZone)
        };
    }
    if s.zones.from == s.zones.to {
        return if cfg.flags & SET_INTRA_ALLOW != 0 {
            s.pass = Hit::plain(PassReason::IntraZone);
            Ok(())
        } else {
            Err(DropReason::IntraZone)
        };
    }
    if state::related(generation, s) {
        return state::follow_first_fragment(generation, s);
    }
    if stale && state::lookup(set, generation, s, false) == Step::ok(state::LOOKUP_HIT) {
        return state::follow_first_fragment(generation, s);
    }
    let Scratch {
        packet,
        zones,
        pass,
        matched,
        found,
        ..
    } = s;
    if packet.frag == FRAG_LATER {
        if let Some(h) = state::fragment(generation, zones, packet) {
            *pass = h;
            return Ok(());
        }
        if cfg.flags & SET_FRAG_ALLOW == 0 {
            return Err(DropReason::Fragment);
        }
    }
    rule::find(set, zones, &packet.t, &packet.src_mac, matched).result()?;
    let opened = state::open(generation, zones, packet, ifindex, matched, *found)?;
    *pass = Hit {
        reason: PassReason::Rule,
        rule: matched.rule,
        audit: matched.audit,
    };
    if opened {
        events::flow_open(ifindex, generation, s);
    }
    state::follow_first_fragment(generation, s)
}

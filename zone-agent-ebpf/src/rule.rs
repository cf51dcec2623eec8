//! 特定通信: one hash lookup on the packet's class tuple (source class, destination class,
//! protocol, destination-port class) gives the candidate rules in file order; the MAC list
//! of a candidate is one more lookup. Cost does not depend on the number of rules.

use zone_agent_common::*;

use crate::{
    maps::{PORT_CLASSES, RULEINFO, RULEMACS, RULES},
    parse::Tuple,
    scratch::{Match, Zones},
    step::Step,
};

#[inline(always)]
fn proto_class(t: &Tuple) -> u8 {
    match (t.proto, t.family) {
        (PROTO_TCP, _) => PROTO_TCP,
        (PROTO_UDP, _) => PROTO_UDP,
        (PROTO_ICMP, FAMILY_V4) => PROTO_ICMP,
        (PROTO_ICMPV6, FAMILY_V6) => PROTO_ICMPV6,
        _ => PROTO_OTHER,
    }
}

#[inline(always)]
fn port_class(set: u32, proto: u8, t: &Tuple) -> u16 {
    if !t.l4 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return PORT_CLASS_NONE;
    }
    PORT_CLASSES
        .get(port_index(set, proto == PROTO_UDP, t.dport))
        .copied()
        .unwrap_or(PORT_CLASS_NONE)
}

/// The first rule that allows the tuple, into `out`; or `NoRule`/`MacMismatch`.
// Own BPF function (own stack frame), see parse::packet.
#[inline(never)]
pub fn find(set: u32, z: &Zones, t: &Tuple, mac: &[u8; 6], out: &mut Match) -> Step {
    Step::from_result(find_inner(set, z, t, mac, out).map(|()| 0))
}

#[inline(always)]
fn find_inner(
    set: u32,
    z: &Zones,
    t: &Tuple,
    mac: &[u8; 6],
    out: &mut Match,
) -> Result<(), DropReason> {
    let proto = proto_class(t);
    let key = RuleKey {
        src_class: z.src_class,
        dst_class: z.dst_class,
        port_class: port_class(set, proto, t),
        proto,
        set: set as u8,
    };
    // SAFETY: values are plain data and never updated in the active set.
    let cands = match unsafe { RULES.get(&key) } {
        Some(c) => *c,
        None => return Err(DropReason::NoRule),
    };
    let mut first = NO_RULE;
    let mut mac_failed = false;
    for i in 0..MAX_CANDS {
        let rule = cands.rules[i];
        if rule == NO_RULE || rule >= MAX_RULES {
            break;
        }
        let flags = RULEINFO
            .get(set * MAX_RULES + rule)
            .map(|r| r.flags)
            .unwrap_or(0);
        if flags & RULE_HAS_MACS != 0 {
            let mk = MacKey {
                rule,
                mac: *mac,
                set: set as u8,
                _pad: 0,
            };
            // SAFETY: presence test only.
            if unsafe { RULEMACS.get(&mk) }.is_none() {
                mac_failed = true;
                continue;
            }
        }
        if first == NO_RULE {
            first = rule;
        }
        if flags & RULE_AUDIT == 0 {
            *out = Match {
                rule: first,
                audit: false,
            };
            return Ok(());
        }
    }
    if first != NO_RULE {
        *out = Match {
            rule: first,
            audit: true,
        };
        Ok(())
    } else if mac_failed {
        Err(DropReason::MacMismatch)
    } else {
        Err(DropReason::NoRule)
    }
}

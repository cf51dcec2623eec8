//! Failsafe management flows (step 0): TCP/UDP to the gateway's own addresses from an
//! admin source, configured in the agent (not the policy), so that no policy mistake can
//! cut the operator off the gateway. Only whole (unfragmented) datagrams qualify.
//!
//! Cost when none are configured: one array lookup (the port bitmap) per TCP/UDP packet.

use aya_ebpf::maps::lpm_trie::Key;
use zone_agent_common::*;

use crate::{
    maps::{FAILSAFE, FAILSAFE_PORTS, FAILSAFE_SRC},
    parse::{FRAG_NONE, Packet},
};

#[inline(always)]
pub fn matches(ifindex: u32, p: &Packet) -> bool {
    let t = &p.t;
    if p.frag != FRAG_NONE || !t.l4 || (t.proto != PROTO_TCP && t.proto != PROTO_UDP) {
        return false;
    }
    let (word, bit) = failsafe_port_slot(t.proto == PROTO_UDP, t.dport);
    match FAILSAFE_PORTS.get(word) {
        Some(w) if *w & bit != 0 => {}
        _ => return false,
    }
    let key = FailsafeKey {
        ifindex,
        port: t.dport,
        proto: t.proto,
        family: t.family,
        addr: t.dst,
    };
    // SAFETY: plain data.
    let Some(dst_mask) = (unsafe { FAILSAFE.get(&key) }).copied() else {
        return false;
    };
    // A full-length lookup: the family byte, then every bit of the address.
    let bits = if t.family == FAMILY_V4 {
        FAILSAFE_SRC_PREFIX_BITS + 32
    } else {
        FAILSAFE_SRC_PREFIX_BITS + 128
    };
    let src = Key::new(
        bits,
        FailsafeSrcKey {
            family: t.family,
            addr: t.src,
        },
    );
    match FAILSAFE_SRC.get(&src) {
        Some(src_mask) => dst_mask & *src_mask != 0,
        None => false,
    }
}

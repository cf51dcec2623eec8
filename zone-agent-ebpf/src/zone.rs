//! Zones: ingress interface (+ outer VLAN) → from-zone; source and destination addresses →
//! (zone, class) by longest prefix; a source whose zone is not the ingress zone is spoofed.

use aya_ebpf::maps::lpm_trie::Key;
use zone_agent_common::*;

use crate::{
    maps::{ADDR4, ADDR6, IFACES},
    parse::Tuple,
    scratch::Zones,
};

#[inline(always)]
pub fn ingress(set: u32, ifindex: u32, vlan: u16) -> Result<u8, DropReason> {
    let key = IfaceKey {
        ifindex,
        vlan,
        set: set as u8,
        _pad: 0,
    };
    // SAFETY: the value is plain data; a concurrent update can only swap one zone id for
    // another, and the agent never updates the active set's entries.
    match unsafe { IFACES.get(&key) } {
        Some(info) if info.zone != NO_ZONE => Ok(info.zone),
        _ => Err(DropReason::UnknownInterface),
    }
}

#[inline(always)]
pub fn addr(set: u32, role: u8, family: u8, a: &[u8; 16]) -> AddrClass {
    // Full-length lookups (`set` and `role`, then all 32 or 128 address bits): the trie
    // returns the longest prefix that covers the address.
    let found = if family == FAMILY_V4 {
        let key = Key::new(
            ADDR_KEY_PREFIX_BITS + 32,
            Addr4Key {
                set: set as u8,
                role,
                addr: [a[0], a[1], a[2], a[3]],
            },
        );
        ADDR4.get(&key).copied()
    } else {
        let key = Key::new(
            ADDR_KEY_PREFIX_BITS + 128,
            Addr6Key {
                set: set as u8,
                role,
                addr: *a,
            },
        );
        ADDR6.get(&key).copied()
    };
    found.unwrap_or_default()
}

/// Zones of a tuple that entered on (`ifindex`, `vlan`).
#[inline(always)]
pub fn resolve(set: u32, ifindex: u32, vlan: u16, t: &Tuple) -> Result<Zones, DropReason> {
    addresses(set, ingress(set, ifindex, vlan)?, t)
}

/// Zones and classes of a tuple's addresses, for a packet that came from zone `from`.
/// A link-scoped address (see `zone_agent_common::scope`) is in the ingress zone, in no
/// rule's class (class 0).
#[inline(always)]
pub fn addresses(set: u32, from: u8, t: &Tuple) -> Result<Zones, DropReason> {
    let link = AddrClass {
        class: 0,
        zone: from,
        _pad: [0; 3],
    };
    let src = if link_scoped_src(t.family, &t.src) {
        link
    } else {
        addr(set, ROLE_SRC, t.family, &t.src)
    };
    if src.zone != NO_ZONE && src.zone != from {
        return Err(DropReason::SpoofedSource);
    }
    let dst = if link_scoped_dst(t.family, &t.dst) {
        link
    } else {
        addr(set, ROLE_DST, t.family, &t.dst)
    };
    Ok(Zones {
        from,
        src_zone: src.zone,
        to: dst.zone,
        src_class: src.class,
        dst_class: dst.class,
    })
}

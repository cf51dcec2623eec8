//! Link-scoped addresses: they never leave the link they are seen on (a router does not
//! forward them: RFC 4291 §2.5.6 for IPv6 link-local sources and destinations, RFC 4291
//! §2.7 for link-scope multicast, RFC 919/RFC 5771 for the IPv4 limited broadcast and the
//! local network control block). Such an address belongs to the zone of the ingress
//! interface, whatever the zones' prefixes say (`::/0` of an internet zone would otherwise
//! claim `fe80::/10`, and every MLD report would look spoofed). Rules never match them:
//! rules are for traffic that is routed between zones.
//!
//! Addresses are the data path's 16-byte form: IPv4 in the first four bytes, zeros after.

use crate::FAMILY_V4;

/// Source addresses of link scope: IPv4 `0.0.0.0` (DHCP), IPv6 `::` and `fe80::/10`.
pub fn link_scoped_src(family: u8, a: &[u8; 16]) -> bool {
    if family == FAMILY_V4 {
        a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0
    } else {
        is_v6_link_local(a) || *a == [0; 16]
    }
}

/// Destination addresses of link scope: IPv4 `255.255.255.255` and `224.0.0.0/24`; IPv6
/// `fe80::/10` and multicast of interface or link scope (`ffx1::/16`, `ffx2::/16`).
pub fn link_scoped_dst(family: u8, a: &[u8; 16]) -> bool {
    if family == FAMILY_V4 {
        (a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255)
            || (a[0] == 224 && a[1] == 0 && a[2] == 0)
    } else {
        is_v6_link_local(a) || (a[0] == 0xff && matches!(a[1] & MCAST_SCOPE_MASK, 1 | 2))
    }
}

/// Destinations a neighbour-discovery message may have and still pass without policy (the
/// data path's parser, RFC 4861): `fe80::/10` and link-scope multicast (`ffx2::/16`).
/// Narrower than `link_scoped_dst`: no IPv4, and no interface-local multicast (`ffx1::`),
/// to which neighbour discovery is never sent.
#[inline(always)]
pub fn nd_link_scoped_dst(a: &[u8; 16]) -> bool {
    is_v6_link_local(a) || (a[0] == 0xff && a[1] & MCAST_SCOPE_MASK == 2)
}

/// The scope field of an IPv6 multicast address: the low four bits of its second byte
/// (RFC 4291 §2.7; 1 interface-local, 2 link-local). The high four are flags.
const MCAST_SCOPE_MASK: u8 = 0x0f;

/// `fe80::/10`: the first byte and the top two bits of the second.
#[inline(always)]
fn is_v6_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

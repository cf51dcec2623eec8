//! L2/VLAN/ARP/IPv4/IPv6(+extension headers)/L4 → `Packet`. All packet bounds checks live
//! here. Contract of every step: what it found, or the drop reason (a `Result`; a `Step`
//! where the step is its own BPF function).
//!
//! Offsets are kept below `MAX_L4_OFF` so that the verifier can bound every variable-offset
//! access; a header chain longer than that is `HeaderLimit`, not a guess. The limits
//! (`VLAN_MAX_DEPTH`, `IPV6_EXT_MAX`, `MAX_L4_OFF`, `MAX_READ_OFF`) live in
//! zone-agent-common, shared with the reference parser.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use zone_agent_common::*;

use crate::step::Step;

/// Ethernet header: destination MAC (0..6), source MAC (6..12), ethertype (12..14).
const ETH_HLEN: usize = 14;
const ETH_SRC_MAC_OFF: usize = 6;
const ETH_TYPE_OFF: usize = 12;
/// A VLAN tag: TCI (2 bytes) then the next ethertype (2 bytes).
const VLAN_TAG_LEN: usize = 4;
/// The VLAN id: the low 12 bits of the TCI (the top four are priority and DEI).
const VLAN_VID_MASK: u16 = 0x0fff;

/// IPv4 header without options, and the IHL nibble (low half of byte 0, in 4-byte words).
const IPV4_HLEN: usize = 20;
const IPV4_IHL_MASK: u8 = 0x0f;
/// IPv4 flags and fragment offset (bytes 6..8): "more fragments", and the offset in 8-byte
/// units (low 13 bits).
const IPV4_MF: u16 = 0x2000;
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Fixed IPv6 header: next header at byte 6, hop limit at 7, addresses at 8 and 24.
const IPV6_HLEN: usize = 40;
/// IPv6 fragment header, bytes 2..4: the offset in 8-byte units (top 13 bits), two reserved
/// bits, then "more fragments" (bit 0).
const IPV6_FRAG_OFFSET_SHIFT: u16 = 3;
const IPV6_FRAG_MORE: u16 = 1;
/// A fragment offset of one 8-byte unit (RFC 1858): it can only exist to overwrite the
/// first fragment's TCP header.
const FRAG_OFFSET_OVERLAP: u16 = 1;
/// TCP header without options; the data offset is the high nibble of byte 12, in 4-byte
/// words. UDP and ICMP headers are 8 bytes.
const TCP_HLEN: usize = 20;
const UDP_ICMP_HLEN: usize = 8;

/// Fragment position of the packet.
pub const FRAG_NONE: u8 = 0;
pub const FRAG_FIRST: u8 = 1;
pub const FRAG_LATER: u8 = 2;

/// The fields of a flow-like tuple: what rules and the flow table look at.
// repr(C, align(8)) with the addresses first: they sit on 8-byte boundaries, so copies and
// comparisons compile to word loads (BPF has no unaligned loads; for align-1 data LLVM emits
// one load per byte).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Tuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// TCP/UDP ports; for ICMP echo the identifier on the requester's side (see `icmp_ports`).
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub proto: u8,
    /// True if `sport`/`dport` are known (TCP/UDP/ICMP header present).
    pub l4: bool,
}

impl Tuple {
    /// An address of this tuple as two native-endian words.
    #[inline(always)]
    pub fn words(a: &[u8; 16]) -> [u64; 2] {
        // SAFETY: only called on `src`/`dst` of a `Tuple`, which are 8-byte aligned (see
        // the repr above); any bit pattern is a valid u64.
        unsafe { *(a.as_ptr() as *const [u64; 2]) }
    }
}

// align(8): `reset` clears it in whole words.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Packet {
    pub src_mac: [u8; 6],
    /// Outer VLAN id, 0 if untagged.
    pub vlan: u16,
    pub t: Tuple,
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type and code (0 for other protocols).
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub frag: u8,
    pub frag_id: u32,
    /// For an ICMP/ICMPv6 error (`has_inner`): the tuple of the quoted packet. Not an
    /// `Option`: LLVM stores `None` with undefined payload bytes, which the verifier rejects.
    pub inner: Tuple,
    pub has_inner: bool,
    /// Length of the whole frame (what the counters count).
    pub len: u32,
}

#[inline(always)]
fn bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Result<[u8; N], DropReason> {
    // Volatile reads: otherwise LLVM proves this check redundant from earlier length checks
    // on IP header fields and drops it, and the verifier (which cannot follow that proof)
    // rejects the access.
    // SAFETY: ctx.ctx points at the kernel's xdp_md for this invocation.
    let (start, end) = unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    };
    if off > MAX_READ_OFF || start + off + N > end {
        return Err(DropReason::Malformed);
    }
    // SAFETY: bounds checked against data_end just above.
    Ok(unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) })
}

#[inline(always)]
fn be16_at(ctx: &XdpContext, off: usize) -> Result<u16, DropReason> {
    Ok(u16::from_be_bytes(bytes::<2>(ctx, off)?))
}

/// The whole packet into `out`. A separate BPF function (not inlined): its temporaries get
/// their own stack frame, which keeps the whole program under the 512-byte stack limit.
/// Results come back through `out` and a `Step` (see there why): `PARSED_IP`,
/// `PARSED_NEIGHBOR` (ARP, link-scoped neighbour discovery) or the drop reason.
#[inline(never)]
pub fn packet(raw: *mut xdp_md, out: &mut Packet) -> Step {
    Step::from_result(packet_inner(raw, out).map(|kind| match kind {
        Kind::Ip => PARSED_IP,
        Kind::Neighbor => PARSED_NEIGHBOR,
    }))
}

/// `packet`'s values.
pub const PARSED_IP: u32 = 0;
pub const PARSED_NEIGHBOR: u32 = 1;

#[inline(always)]
fn packet_inner(raw: *mut xdp_md, out: &mut Packet) -> Result<Kind, DropReason> {
    let ctx = &XdpContext::new(raw);
    let len = (ctx.data_end() - ctx.data()) as u64;
    out.len = len as u32;
    let src_mac = bytes::<6>(ctx, ETH_SRC_MAC_OFF)?;
    let (ethertype, l3, vlan) = l2(ctx)?;
    out.src_mac = src_mac;
    out.vlan = vlan;
    match ethertype {
        ETH_P_ARP => Ok(Kind::Neighbor),
        ETH_P_IP => ipv4(ctx, l3, len, out),
        ETH_P_IPV6 => ipv6(ctx, l3, len, out),
        _ => Err(DropReason::NonIp),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Neighbor,
    Ip,
}

/// Ethernet and up to `VLAN_MAX_DEPTH` tags: (ethertype, L3 offset, outer VLAN id).
#[inline(always)]
fn l2(ctx: &XdpContext) -> Result<(u16, usize, u16), DropReason> {
    let mut proto = be16_at(ctx, ETH_TYPE_OFF)?;
    let mut off = ETH_HLEN;
    let mut vlan = 0u16;
    for depth in 0..VLAN_MAX_DEPTH {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            return Ok((proto, off, vlan));
        }
        let tci = be16_at(ctx, off)?;
        if depth == 0 {
            vlan = tci & VLAN_VID_MASK;
        }
        proto = be16_at(ctx, off + 2)?;
        off += VLAN_TAG_LEN;
    }
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        return Err(DropReason::HeaderLimit);
    }
    Ok((proto, off, vlan))
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, len: u64, p: &mut Packet) -> Result<Kind, DropReason> {
    let h = bytes::<IPV4_HLEN>(ctx, l3)?;
    // The version is the high nibble of byte 0.
    if h[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = ((h[0] & IPV4_IHL_MASK) as usize) * 4;
    let tot_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    // ihl < 20 or a total length that does not even cover the header is malformed, and so is
    // a datagram longer than the frame (truncated).
    if ihl < IPV4_HLEN || tot_len < ihl || l3 + tot_len > (len as usize) {
        return Err(DropReason::Malformed);
    }
    let frag_field = u16::from_be_bytes([h[6], h[7]]);
    let more = frag_field & IPV4_MF != 0;
    let offset = frag_field & IPV4_FRAG_OFFSET_MASK;
    // RFC 1858: a fragment at offset 8 can only exist to overwrite the TCP header of the first.
    if offset == FRAG_OFFSET_OVERLAP {
        return Err(DropReason::Malformed);
    }
    // Every fragment carries the option (it is copied), so this holds for all of them.
    if ihl > IPV4_HLEN && source_routed(ctx.ctx, l3 + IPV4_HLEN, ihl - IPV4_HLEN) {
        return Err(DropReason::SourceRoute);
    }
    p.frag = if offset != 0 {
        FRAG_LATER
    } else if more {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    // Identification (bytes 4..6), protocol (9), addresses (12..16, 16..20).
    p.frag_id = u16::from_be_bytes([h[4], h[5]]) as u32;
    p.t.family = FAMILY_V4;
    p.t.proto = h[9];
    p.t.src[..4].copy_from_slice(&h[12..16]);
    p.t.dst[..4].copy_from_slice(&h[16..20]);
    if p.frag != FRAG_LATER {
        l4_checked(ctx, p, l3 + ihl, l3 + tot_len)?;
    }
    Ok(Kind::Ip)
}

/// IPv4 option kinds (RFC 791): end of list, no-op, loose and strict source route.
const IPOPT_EOL: u8 = 0;
const IPOPT_NOP: u8 = 1;
const IPOPT_LSRR: u8 = 131;
const IPOPT_SSRR: u8 = 137;
/// Bytes of IPv4 options at most (IHL 15).
const IPV4_OPTS_MAX: usize = 40;

/// Whether the `len` bytes of IPv4 options at `off` hold a source route. With one, the
/// destination field is only the next hop the sender chose: a packet addressed to the
/// gateway itself (intra-zone) would be forwarded by a gateway that honours source routes
/// into whatever zone the option names next. A broken option list ends the walk (not a
/// source route): the kernel drops such a packet itself.
// Own BPF function: only packets with options get here, and its loop is verified once.
#[inline(never)]
fn source_routed(raw: *mut xdp_md, off: usize, len: usize) -> bool {
    let ctx = &XdpContext::new(raw);
    // `i` only grows (by 1, or by an option's length of at least 2) and stays below 40: the
    // loop ends. No round counter: with one, no two verifier states at the loop head would
    // be alike and the walk's branches would multiply past the instruction limit.
    let mut i = 0;
    // Kind and length are read together (a one-byte read at a variable offset compiles to a
    // bounds check the verifier cannot use). A lone last byte is a no-op, an end of list or
    // a kind without its length: no source route in any case.
    while i + 2 <= len && i < IPV4_OPTS_MAX {
        let Ok([kind, opt_len]) = bytes::<2>(ctx, off + i) else {
            return false;
        };
        match kind {
            IPOPT_EOL => return false,
            IPOPT_NOP => i += 1,
            IPOPT_LSRR | IPOPT_SSRR => return true,
            _ if opt_len < 2 => return false,
            _ => i += opt_len as usize,
        }
    }
    false
}

/// Whether `nh` is an extension header the parser walks.
#[inline(always)]
fn is_ext(nh: u8) -> bool {
    matches!(
        nh,
        PROTO_IPV6_HOPOPTS
            | PROTO_IPV6_ROUTING
            | PROTO_IPV6_FRAGMENT
            | PROTO_AH
            | PROTO_IPV6_DSTOPTS
    )
}

/// Length of the extension header `nh` whose first 8 bytes are `e` (byte 0: next header,
/// byte 1: length). A fragment header is always 8 bytes; AH counts its length in 4-byte
/// units less 2 (RFC 4302 §2.2), the others in 8-byte units less 1 (RFC 8200 §4.3).
#[inline(always)]
fn ext_len(nh: u8, e: &[u8; 8]) -> u32 {
    match nh {
        PROTO_IPV6_FRAGMENT => 8,
        PROTO_AH => (e[1] as u32 + 2) * 4,
        _ => (e[1] as u32 + 1) * 8,
    }
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, len: u64, p: &mut Packet) -> Result<Kind, DropReason> {
    let h = bytes::<8>(ctx, l3)?;
    // The version is the high nibble of byte 0; the payload length is bytes 4..6.
    if h[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    let end = l3 + IPV6_HLEN + payload;
    if end > len as usize {
        return Err(DropReason::Malformed);
    }
    p.t.family = FAMILY_V6;
    p.t.src = bytes::<16>(ctx, l3 + 8)?;
    p.t.dst = bytes::<16>(ctx, l3 + 24)?;
    let hop_limit = h[7];
    let chain = ext_walk(l3 + IPV6_HLEN, h[6], end, |off, nh| {
        let r = ext_header(ctx.ctx, off, nh, p).result()?;
        Ok(ExtHeader {
            next: (r >> EXT_NH_SHIFT) as u8,
            len: (r & EXT_LEN_MASK) as usize,
            later_fragment: p.frag == FRAG_LATER,
        })
    })?;
    let (nh, off) = match chain {
        // A later fragment has no upper-layer header; `proto` is its fragment header's next
        // header.
        ExtChain::LaterFragment { next } => {
            p.t.proto = next;
            return Ok(Kind::Ip);
        }
        ExtChain::Upper { nh, off } => (nh, off),
    };
    p.t.proto = nh;
    l4_checked(ctx, p, off, end)?;
    // Neighbour discovery (RS, RA, NS, NA) passes without policy only when it cannot leave
    // the link: hop limit 255 (RFC 4861 §7.1) and a link-local or link-scope multicast
    // destination. A unicast NS to a global address would otherwise be routed onwards.
    if nh == PROTO_ICMPV6
        && hop_limit == ND_HOP_LIMIT
        && nd_link_scoped_dst(&p.t.dst)
        && (ICMPV6_ROUTER_SOLICIT..=ICMPV6_NEIGHBOR_ADVERT).contains(&p.icmp_type)
    {
        return Ok(Kind::Neighbor);
    }
    Ok(Kind::Ip)
}

#[inline(always)]
fn l4_checked(ctx: &XdpContext, p: &mut Packet, off: usize, end: usize) -> Result<(), DropReason> {
    l4(ctx.ctx, p, off, end).result().map(|_| ())
}

/// One extension header, as `ext_walk`'s caller read it.
struct ExtHeader {
    /// Its next-header field.
    next: u8,
    len: usize,
    /// A fragment header of a later fragment: the walk ends here.
    later_fragment: bool,
}

/// Where `ext_walk` ended.
enum ExtChain {
    /// At the upper-layer header `nh`, at offset `off`.
    Upper { nh: u8, off: usize },
    /// At the fragment header of a later fragment, whose next header is `next`.
    LaterFragment { next: u8 },
}

/// The one IPv6 extension-header walk, for a packet and for the packet an ICMPv6 error
/// quotes: from offset `off` with next header `nh`, through at most `IPV6_EXT_MAX`
/// headers, each of which must end at or below `MAX_L4_OFF` and `end` (else
/// `HeaderLimit`, as is a chain still going after `IPV6_EXT_MAX`). `header` reads the
/// header `nh` at an offset and applies the caller's rules (the packet's `ext_header`
/// records fragments and refuses source routes; a quote only needs the length).
#[inline(always)]
fn ext_walk(
    mut off: usize,
    mut nh: u8,
    end: usize,
    mut header: impl FnMut(usize, u8) -> Result<ExtHeader, DropReason>,
) -> Result<ExtChain, DropReason> {
    let mut walked = 0;
    while walked < IPV6_EXT_MAX && is_ext(nh) {
        let e = header(off, nh)?;
        nh = e.next;
        off += e.len;
        if off > MAX_L4_OFF || off > end {
            return Err(DropReason::HeaderLimit);
        }
        walked += 1;
        if e.later_fragment {
            return Ok(ExtChain::LaterFragment { next: nh });
        }
    }
    if is_ext(nh) {
        return Err(DropReason::HeaderLimit);
    }
    Ok(ExtChain::Upper { nh, off })
}

/// `ext_header`'s value: the next header at `EXT_NH_SHIFT` and the header's length in the
/// low 16 bits.
const EXT_NH_SHIFT: u32 = 16;
const EXT_LEN_MASK: u32 = 0xffff;

/// One IPv6 extension header at `off`: (next header << 16 | length), or the drop reason. Its own BPF function so the verifier walks its branches once per
/// loop iteration instead of multiplying them across the chain.
#[inline(never)]
fn ext_header(raw: *mut xdp_md, off: usize, nh: u8, p: &mut Packet) -> Step {
    let ctx = &XdpContext::new(raw);
    let e = match bytes::<8>(ctx, off) {
        Ok(e) => e,
        Err(r) => return Step::drop(r),
    };
    // Segments left: the destination field is only the next of the hops the sender listed
    // (see `source_routed` for IPv4).
    // Byte 3 of a routing header: segments left.
    if nh == PROTO_IPV6_ROUTING && e[3] != 0 {
        return Step::drop(DropReason::SourceRoute);
    }
    if nh == PROTO_IPV6_FRAGMENT {
        let fo = u16::from_be_bytes([e[2], e[3]]);
        let offset = fo >> IPV6_FRAG_OFFSET_SHIFT;
        let more = fo & IPV6_FRAG_MORE != 0;
        if offset == FRAG_OFFSET_OVERLAP {
            return Step::drop(DropReason::Malformed);
        }
        // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
        if offset != 0 {
            p.frag = FRAG_LATER;
        } else if more {
            p.frag = FRAG_FIRST;
        }
        // Identification: bytes 4..8.
        p.frag_id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
    }
    Step::ok(((e[0] as u32) << EXT_NH_SHIFT) | ext_len(nh, &e))
}

/// Whether an ICMP(v6) type is an error that quotes the offending packet.
#[inline(always)]
fn icmp_error(family: u8, ty: u8) -> bool {
    if family == FAMILY_V4 {
        matches!(
            ty,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
        )
    } else {
        matches!(
            ty,
            ICMPV6_DEST_UNREACH
                | ICMPV6_PACKET_TOO_BIG
                | ICMPV6_TIME_EXCEEDED
                | ICMPV6_PARAMETER_PROBLEM
        )
    }
}

/// Ports of an ICMP message for the flow table: an echo request is (id, 0) and its reply
/// (0, id), so a reply is exactly the reverse tuple of its request.
#[inline(always)]
fn icmp_ports(family: u8, ty: u8, id: u16) -> (u16, u16) {
    let (req, rep) = if family == FAMILY_V4 {
        (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    } else {
        (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
    };
    if ty == req {
        (id, 0)
    } else if ty == rep {
        (0, id)
    } else {
        (0, 0)
    }
}

/// Upper-layer header at `off`; it must lie inside the IP datagram (`end`), not in padding.
// Own BPF function: inlined, LLVM folds the port stores into a form the verifier rejects
// ("invalid size of register spill").
#[inline(never)]
fn l4(raw: *mut xdp_md, p: &mut Packet, off: usize, end: usize) -> Step {
    Step::from_result(l4_inner(&XdpContext::new(raw), p, off, end).map(|()| 0))
}

#[inline(always)]
fn l4_inner(ctx: &XdpContext, p: &mut Packet, off: usize, end: usize) -> Result<(), DropReason> {
    if off > MAX_L4_OFF {
        return Err(DropReason::HeaderLimit);
    }
    match p.t.proto {
        PROTO_TCP => {
            let h = bytes::<TCP_HLEN>(ctx, off)?;
            let doff = ((h[12] >> 4) as usize) * 4;
            // The whole TCP header must be in this packet: a tiny first fragment that splits it
            // is how filters get bypassed (RFC 1858).
            if doff < TCP_HLEN || off + doff > end {
                return Err(DropReason::Malformed);
            }
            p.t.sport = u16::from_be_bytes([h[0], h[1]]);
            p.t.dport = u16::from_be_bytes([h[2], h[3]]);
            p.tcp_flags = h[13]; // the flags byte, see `TCP_FIN` and the others
            p.t.l4 = true;
        }
        PROTO_UDP => {
            let h = bytes::<UDP_ICMP_HLEN>(ctx, off)?;
            if off + UDP_ICMP_HLEN > end {
                return Err(DropReason::Malformed);
            }
            p.t.sport = u16::from_be_bytes([h[0], h[1]]);
            p.t.dport = u16::from_be_bytes([h[2], h[3]]);
            p.t.l4 = true;
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let icmp_proto = if p.t.family == FAMILY_V4 {
                PROTO_ICMP
            } else {
                PROTO_ICMPV6
            };
            if p.t.proto != icmp_proto {
                // ICMPv4 inside IPv6 or the reverse: an unknown protocol for this family.
                return Ok(());
            }
            let h = bytes::<UDP_ICMP_HLEN>(ctx, off)?;
            if off + UDP_ICMP_HLEN > end {
                return Err(DropReason::Malformed);
            }
            // Type at byte 0; the echo identifier at bytes 4..6.
            let (s, d) = icmp_ports(p.t.family, h[0], u16::from_be_bytes([h[4], h[5]]));
            p.t.sport = s;
            p.t.dport = d;
            p.t.l4 = true;
            p.icmp_type = h[0];
            p.icmp_code = h[1];
            if icmp_error(p.t.family, h[0]) {
                p.has_inner = quoted(ctx.ctx, p.t.family, off + UDP_ICMP_HLEN, end, &mut p.inner);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The tuple of the packet quoted by an ICMP error, if enough of it is there. A quote that
/// is cut short, a later fragment, or an IPv6 quote with more extension headers than
/// `IPV6_EXT_MAX` gives `None`: the error is then judged as plain ICMP.
// Own BPF function: keeps the verifier's path count down (only ICMP errors get here).
#[inline(never)]
fn quoted(raw: *mut xdp_md, family: u8, off: usize, end: usize, out: &mut Tuple) -> bool {
    let ctx = &XdpContext::new(raw);
    match quoted_tuple(ctx, family, off, end) {
        Some(t) => {
            *out = t;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn quoted_tuple(ctx: &XdpContext, family: u8, off: usize, end: usize) -> Option<Tuple> {
    let mut t = Tuple {
        family,
        proto: 0,
        l4: true,
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
    };
    let l4off = if family == FAMILY_V4 {
        let h = bytes::<IPV4_HLEN>(ctx, off).ok()?;
        let ihl = ((h[0] & IPV4_IHL_MASK) as usize) * 4;
        if h[0] >> 4 != 4 || ihl < IPV4_HLEN {
            return None;
        }
        t.proto = h[9];
        t.src = v4_padded([h[12], h[13], h[14], h[15]]);
        t.dst = v4_padded([h[16], h[17], h[18], h[19]]);
        off + ihl
    } else {
        let h = bytes::<IPV6_HLEN>(ctx, off).ok()?;
        if h[0] >> 4 != 6 {
            return None;
        }
        t.src.copy_from_slice(&h[8..24]);
        t.dst.copy_from_slice(&h[24..40]);
        // The quote's own extension headers, walked as a packet's are: its upper-layer
        // header is what ties the error to a flow. A later fragment quotes no ports.
        let chain = ext_walk(off + IPV6_HLEN, h[6], end, |off, nh| {
            let e = bytes::<8>(ctx, off)?;
            // A quoted later fragment names no ports: no flow to tie the error to (the
            // reason is not used, any error ends the quote).
            if nh == PROTO_IPV6_FRAGMENT
                && u16::from_be_bytes([e[2], e[3]]) >> IPV6_FRAG_OFFSET_SHIFT != 0
            {
                return Err(DropReason::Fragment);
            }
            Ok(ExtHeader {
                next: e[0],
                len: ext_len(nh, &e) as usize,
                later_fragment: false,
            })
        })
        .ok()?;
        let ExtChain::Upper { nh, off: l4off } = chain else {
            return None;
        };
        t.proto = nh;
        l4off
    };
    if l4off > MAX_L4_OFF || l4off + UDP_ICMP_HLEN > end {
        return None;
    }
    // The quote's first 8 upper-layer bytes: all RFC 792 promises (ports, or ICMP type and
    // echo identifier).
    let q = bytes::<UDP_ICMP_HLEN>(ctx, l4off).ok()?;
    match t.proto {
        PROTO_TCP | PROTO_UDP => {
            t.sport = u16::from_be_bytes([q[0], q[1]]);
            t.dport = u16::from_be_bytes([q[2], q[3]]);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let (s, d) = icmp_ports(family, q[0], u16::from_be_bytes([q[4], q[5]]));
            t.sport = s;
            t.dport = d;
        }
        _ => return None,
    }
    Some(t)
}

/// An IPv4 address in the 16-byte address field (zero-filled). Built as one integer: filling
/// a zeroed array byte-wise becomes a `memset` call (a byte loop) on this target.
#[inline(always)]
fn v4_padded(a: [u8; 4]) -> [u8; 16] {
    // bpfel is little-endian: the u32's bytes come first, then twelve zero bytes.
    (u32::from_ne_bytes(a) as u128).to_ne_bytes()
}

impl Packet {
    /// Back to "nothing parsed" (all zero: no VLAN, `FRAG_NONE`, no L4, no quote), in place:
    /// building a fresh `Packet` and copying it would take its size in stack.
    ///
    /// Word stores, not `write_bytes`: that becomes a call to a byte-at-a-time `memset`
    /// loop here (~5 instructions per byte, the largest cost of a short path).
    pub fn reset(&mut self) {
        const WORDS: usize = core::mem::size_of::<Packet>() / 8;
        let w = self as *mut Packet as *mut u64;
        for i in 0..WORDS {
            // SAFETY: in bounds (align(8) makes the size a multiple of 8); all-zero is a
            // valid `Packet` (integers, byte arrays, bools). Volatile so LLVM does not fold
            // the stores back into a `memset` call.
            unsafe { w.add(i).write_volatile(0) }
        }
    }

    pub fn tcp_fin(&self) -> bool {
        self.t.proto == PROTO_TCP && self.tcp_flags & TCP_FIN != 0
    }
    pub fn tcp_rst(&self) -> bool {
        self.t.proto == PROTO_TCP && self.tcp_flags & TCP_RST != 0
    }
}

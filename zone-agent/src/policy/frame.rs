//! Raw Ethernet frame → [`model::Packet`], for the reference model.
//!
//! Written independently of the XDP parser but to the same rules (SPEC §3 "fails closed";
//! the limits below are the data path's): every edge — what is malformed, what is a header
//! limit, which ICMP carries ports — must come out the same, because the model is the oracle
//! the kernel program is tested against.
//!
//! * Ethernet, then up to 2 VLAN tags (802.1Q 0x8100 / 802.1ad 0x88A8); the outer VID is the
//!   packet's VLAN; a third tag is `HeaderLimit`.
//! * ARP → [`Parsed::Neighbor`]; not IPv4/IPv6/ARP → `NonIp`.
//! * IPv4: version 4, IHL ≥ 5, total length ≥ IHL and within the frame, fragment offset 1
//!   (RFC 1858) → `Malformed`. Non-first fragments carry no L4 header.
//! * A source route — an IPv4 loose or strict source-route option (a broken option list or a
//!   lone last byte ends the walk), an IPv6 routing header with segments left — is
//!   `SourceRoute`: the destination field is only the next hop the sender chose.
//! * IPv6: version 6, payload within the frame; up to 6 extension headers (hop-by-hop,
//!   routing, fragment, AH, destination options) are walked; a header chain that ends past
//!   512 bytes or past the datagram, or is still going after 6, is `HeaderLimit`; an
//!   extension header whose first 8 bytes are not in the frame is `Malformed`.
//! * L4 must lie inside the IP datagram (not in Ethernet padding): TCP needs its whole header
//!   (data offset ≥ 5), UDP and ICMP 8 bytes. ICMP echo ids become ports: request (id, 0),
//!   reply (0, id). ICMP errors carry the quoted tuple when the quote is complete; an IPv6
//!   quote's extension headers are walked with the same limits (a later fragment: no tuple).
//! * IPv6 neighbour discovery (ICMPv6 133–136) with hop limit 255 to a link-local unicast or
//!   link-scope multicast destination → [`Parsed::Neighbor`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zone_agent_common::DropReason;

use super::model::{
    Decision, Frag, Model, Outcome, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, Tuple,
};
use zone_agent_common::PassReason;

// The parser's limits, ethertypes and extension-header numbers are the data path's own
// (zone-agent-common), so the model cannot drift from it.
use zone_agent_common::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ICMPV6_NEIGHBOR_ADVERT,
    ICMPV6_ROUTER_SOLICIT, MAX_READ_OFF, ND_HOP_LIMIT, PROTO_AH as NH_AH,
    PROTO_IPV6_DSTOPTS as NH_DSTOPTS, PROTO_IPV6_FRAGMENT as NH_FRAGMENT,
    PROTO_IPV6_HOPOPTS as NH_HOP, PROTO_IPV6_ROUTING as NH_ROUTING, nd_link_scoped_dst,
};
pub use zone_agent_common::{IPV6_EXT_MAX, MAX_L4_OFF, VLAN_MAX_DEPTH};

const ETH_HLEN: usize = 14;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// ARP, or link-scoped IPv6 neighbour discovery: passes without policy.
    Neighbor,
    Ip(Packet),
}

/// Bounds-checked reads: `n` bytes at `off`, or `Malformed`.
struct Frame<'a>(&'a [u8]);

impl Frame<'_> {
    fn get(&self, off: usize, n: usize) -> Result<&[u8], DropReason> {
        if off > MAX_READ_OFF || off + n > self.0.len() {
            return Err(DropReason::Malformed);
        }
        Ok(&self.0[off..off + n])
    }
    fn be16(&self, off: usize) -> Result<u16, DropReason> {
        let b = self.get(off, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn v4(b: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

fn v6(b: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    IpAddr::V6(Ipv6Addr::from(a))
}

fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

fn is_ext(nh: u8) -> bool {
    matches!(nh, NH_HOP | NH_ROUTING | NH_FRAGMENT | NH_AH | NH_DSTOPTS)
}

/// Length of the extension header `nh` whose first 8 bytes are `e`.
fn ext_len(nh: u8, e: &[u8]) -> usize {
    match nh {
        NH_FRAGMENT => 8,
        NH_AH => (e[1] as usize + 2) * 4,
        _ => (e[1] as usize + 1) * 8,
    }
}

/// Parse a frame that entered on `ifname`.
pub fn parse(frame: &[u8], ifname: &str) -> Result<Parsed, DropReason> {
    let f = Frame(frame);
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(f.get(6, 6)?);
    // L2.
    let mut ethertype = f.be16(12)?;
    let mut off = ETH_HLEN;
    let mut vlan = 0u16;
    let mut tags = 0;
    while is_vlan(ethertype) {
        if tags == VLAN_MAX_DEPTH {
            return Err(DropReason::HeaderLimit);
        }
        let tci = f.be16(off)?;
        if tags == 0 {
            vlan = tci & 0x0fff;
        }
        ethertype = f.be16(off + 2)?;
        off += 4;
        tags += 1;
    }
    let mut p = Packet {
        ifname: ifname.to_string(),
        vlan,
        src_mac,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        proto: 0,
        l4: false,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        frag: Frag::None,
        frag_id: 0,
        inner: None,
        len: frame.len() as u64,
    };
    match ethertype {
        ETH_P_ARP => Ok(Parsed::Neighbor),
        ETH_P_IP => ipv4(&f, off, p).map(Parsed::Ip),
        ETH_P_IPV6 => {
            ipv6(&f, off, &mut p).map(|nd| if nd { Parsed::Neighbor } else { Parsed::Ip(p) })
        }
        _ => Err(DropReason::NonIp),
    }
}

fn ipv4(f: &Frame, l3: usize, mut p: Packet) -> Result<Packet, DropReason> {
    let h = f.get(l3, 20)?;
    if h[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = (h[0] & 0x0f) as usize * 4;
    let tot_len = be16(h, 2) as usize;
    if ihl < 20 || tot_len < ihl || l3 + tot_len > f.0.len() {
        return Err(DropReason::Malformed);
    }
    let frag_field = be16(h, 6);
    let offset = frag_field & 0x1fff;
    let more = frag_field & 0x2000 != 0;
    if offset == 1 {
        // RFC 1858: offset 8 bytes can only serve to overwrite the first fragment's TCP header.
        return Err(DropReason::Malformed);
    }
    if source_route_option(&f.0[l3 + 20..l3 + ihl]) {
        return Err(DropReason::SourceRoute);
    }
    p.frag = match (offset, more) {
        (0, false) => Frag::None,
        (0, true) => Frag::First,
        _ => Frag::Later,
    };
    p.frag_id = be16(h, 4) as u32;
    p.proto = h[9];
    p.src = v4(&h[12..16]);
    p.dst = v4(&h[16..20]);
    if p.frag != Frag::Later {
        l4(f, &mut p, l3 + ihl, l3 + tot_len)?;
    }
    Ok(p)
}

/// Whether IPv4 options (at most 40 bytes) hold a loose (131) or strict (137) source
/// route. The walk stops at end of list (0), at a length below 2 or past the options, and at
/// a last lone byte (no room for a kind and its length).
fn source_route_option(opts: &[u8]) -> bool {
    let mut off = 0;
    loop {
        let Some(&[kind, len]) = opts.get(off..off + 2) else {
            return false;
        };
        match kind {
            0 => return false,
            1 => off += 1,
            131 | 137 => return true,
            _ if len < 2 => return false,
            _ => off += len as usize,
        }
    }
}

/// Fills `p`; returns true when the packet is link-scoped neighbour discovery.
fn ipv6(f: &Frame, l3: usize, p: &mut Packet) -> Result<bool, DropReason> {
    let h = f.get(l3, 40)?;
    if h[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let end = l3 + 40 + be16(h, 4) as usize;
    if end > f.0.len() {
        return Err(DropReason::Malformed);
    }
    let hop_limit = h[7];
    p.src = v6(&h[8..24]);
    p.dst = v6(&h[24..40]);
    let mut nh = h[6];
    let mut off = l3 + 40;
    let mut walked = 0;
    while is_ext(nh) {
        if walked == IPV6_EXT_MAX {
            return Err(DropReason::HeaderLimit);
        }
        let e = f.get(off, 8)?;
        // Segments left: the destination is only the next of the listed hops.
        if nh == NH_ROUTING && e[3] != 0 {
            return Err(DropReason::SourceRoute);
        }
        if nh == NH_FRAGMENT {
            let fo = be16(e, 2);
            let offset = fo >> 3;
            let more = fo & 1 != 0;
            if offset == 1 {
                return Err(DropReason::Malformed);
            }
            if offset != 0 {
                p.frag = Frag::Later;
            } else if more {
                p.frag = Frag::First;
            }
            // offset 0 without M: an atomic fragment, a whole packet (RFC 6946).
            p.frag_id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
        }
        off += ext_len(nh, e);
        nh = e[0];
        if off > MAX_L4_OFF || off > end {
            return Err(DropReason::HeaderLimit);
        }
        walked += 1;
        if p.frag == Frag::Later {
            // The rest of the chain is in the first fragment.
            p.proto = nh;
            return Ok(false);
        }
    }
    p.proto = nh;
    l4(f, p, off, end)?;
    let dst = match p.dst {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    if nh == PROTO_ICMPV6 && hop_limit == ND_HOP_LIMIT && nd_link_scoped_dst(&dst) {
        let ty = f.get(off, 1)?[0];
        if (ICMPV6_ROUTER_SOLICIT..=ICMPV6_NEIGHBOR_ADVERT).contains(&ty) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// ICMP echo ids as ports: a request is (id, 0) and its reply (0, id).
fn icmp_ports(v4: bool, ty: u8, id: u16) -> (u16, u16) {
    let (request, reply) = if v4 { (8, 0) } else { (128, 129) };
    if ty == request {
        (id, 0)
    } else if ty == reply {
        (0, id)
    } else {
        (0, 0)
    }
}

fn icmp_error(v4: bool, ty: u8) -> bool {
    if v4 {
        matches!(ty, 3 | 11 | 12)
    } else {
        (1..=4).contains(&ty)
    }
}

/// Upper-layer header at `off`, inside the datagram ending at `end`.
fn l4(f: &Frame, p: &mut Packet, off: usize, end: usize) -> Result<(), DropReason> {
    if off > MAX_L4_OFF {
        return Err(DropReason::HeaderLimit);
    }
    let is_v4 = p.src.is_ipv4();
    match p.proto {
        PROTO_TCP => {
            let h = f.get(off, 20)?;
            let doff = (h[12] >> 4) as usize * 4;
            if doff < 20 || off + doff > end {
                return Err(DropReason::Malformed);
            }
            p.sport = be16(h, 0);
            p.dport = be16(h, 2);
            p.tcp_flags = h[13];
            p.l4 = true;
        }
        PROTO_UDP => {
            let h = f.get(off, 8)?;
            if off + 8 > end {
                return Err(DropReason::Malformed);
            }
            p.sport = be16(h, 0);
            p.dport = be16(h, 2);
            p.l4 = true;
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if p.proto != if is_v4 { PROTO_ICMP } else { PROTO_ICMPV6 } {
                return Ok(()); // ICMP of the other family: an unknown protocol here
            }
            let h = f.get(off, 8)?;
            if off + 8 > end {
                return Err(DropReason::Malformed);
            }
            (p.sport, p.dport) = icmp_ports(is_v4, h[0], be16(h, 4));
            p.l4 = true;
            p.icmp_type = h[0];
            if icmp_error(is_v4, h[0]) {
                p.inner = quoted(f, is_v4, off + 8, end);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The packet quoted by an ICMP error (IP header + 8 bytes of its L4), if all there.
fn quoted(f: &Frame, is_v4: bool, off: usize, end: usize) -> Option<Tuple> {
    let (proto, src, dst, l4off) = if is_v4 {
        let h = f.get(off, 20).ok()?;
        let ihl = (h[0] & 0x0f) as usize * 4;
        if h[0] >> 4 != 4 || ihl < 20 {
            return None;
        }
        (h[9], v4(&h[12..16]), v4(&h[16..20]), off + ihl)
    } else {
        let h = f.get(off, 40).ok()?;
        if h[0] >> 4 != 6 {
            return None;
        }
        // The quote's extension headers, walked as a packet's are (same limits); a later
        // fragment quotes no ports.
        let (mut nh, mut l4off) = (h[6], off + 40);
        for _ in 0..IPV6_EXT_MAX {
            if !is_ext(nh) {
                break;
            }
            let e = f.get(l4off, 8).ok()?;
            if nh == NH_FRAGMENT && be16(e, 2) >> 3 != 0 {
                return None;
            }
            l4off += ext_len(nh, e);
            if l4off > MAX_L4_OFF {
                return None;
            }
            nh = e[0];
        }
        if is_ext(nh) {
            return None;
        }
        (nh, v6(&h[8..24]), v6(&h[24..40]), l4off)
    };
    if l4off > MAX_L4_OFF || l4off + 8 > end {
        return None;
    }
    let q = f.get(l4off, 8).ok()?;
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (be16(q, 0), be16(q, 2)),
        // As the data path does: either ICMP number, mapped with the outer family's types.
        PROTO_ICMP | PROTO_ICMPV6 => icmp_ports(is_v4, q[0], be16(q, 4)),
        _ => return None,
    };
    Some(Tuple {
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

/// Parse a frame and decide it with the model, recording parse drops and neighbour passes
/// as the data path does (from = to = 0, bytes = frame length).
pub fn decide(model: &mut Model, frame: &[u8], ifname: &str, now_ns: u64) -> Decision {
    match parse(frame, ifname) {
        Ok(Parsed::Ip(p)) => model.decide(&p, now_ns),
        Ok(Parsed::Neighbor) => {
            model.decide_early(Outcome::Pass(PassReason::Neighbor), frame.len() as u64)
        }
        Err(r) => model.decide_early(Outcome::Drop(r), frame.len() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{TCP_ACK, TCP_SYN};

    const SRC_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    // ---- a tiny frame builder ---------------------------------------------------------

    fn eth(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0xfe];
        f.extend_from_slice(&SRC_MAC);
        for &(tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn a4(s: &str) -> [u8; 4] {
        s.parse::<Ipv4Addr>().unwrap().octets()
    }
    fn a6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    /// IPv4 header (+ `opts`, a multiple of 4 bytes) and payload; `frag` = flags|offset field.
    fn ipv4_opts(
        src: &str,
        dst: &str,
        proto: u8,
        id: u16,
        frag: u16,
        opts: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let ihl = 20 + opts.len();
        let tot = (ihl + payload.len()) as u16;
        let mut h = vec![0x40 | (ihl / 4) as u8, 0];
        h.extend_from_slice(&tot.to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&a4(src));
        h.extend_from_slice(&a4(dst));
        h.extend_from_slice(opts);
        h.extend_from_slice(payload);
        h
    }
    fn ipv4(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
        ipv4_opts(src, dst, proto, 0x4242, 0x4000, &[], payload)
    }

    fn ipv6_hl(src: &str, dst: &str, nh: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[nh, hop_limit]);
        h.extend_from_slice(&a6(src));
        h.extend_from_slice(&a6(dst));
        h.extend_from_slice(payload);
        h
    }
    fn ipv6(src: &str, dst: &str, nh: u8, payload: &[u8]) -> Vec<u8> {
        ipv6_hl(src, dst, nh, 64, payload)
    }

    /// An extension header of `len` bytes (a multiple of 8; AH: multiple of 4).
    fn ext(kind: u8, nh: u8, len: usize) -> Vec<u8> {
        let mut e = vec![0u8; len];
        e[0] = nh;
        e[1] = if kind == NH_AH {
            (len / 4 - 2) as u8
        } else {
            (len / 8 - 1) as u8
        };
        e
    }
    fn frag6(nh: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
        let mut e = vec![nh, 0];
        e.extend_from_slice(&((offset << 3) | more as u16).to_be_bytes());
        e.extend_from_slice(&id.to_be_bytes());
        e
    }

    fn tcp_opts(sport: u16, dport: u16, flags: u8, opts: usize) -> Vec<u8> {
        let mut h = vec![0u8; 20 + opts];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = (((20 + opts) / 4) as u8) << 4;
        h[13] = flags;
        h
    }
    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        tcp_opts(sport, dport, flags, 0)
    }
    fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(data);
        h
    }
    fn icmp(ty: u8, code: u8, id: u16, rest: &[u8]) -> Vec<u8> {
        let mut h = vec![ty, code, 0, 0];
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(rest);
        h
    }

    fn v4_tcp_frame() -> Vec<u8> {
        eth(
            &[],
            ETH_P_IP,
            &ipv4(
                "10.20.5.10",
                "10.10.9.20",
                PROTO_TCP,
                &tcp(40000, 443, TCP_SYN),
            ),
        )
    }
    fn v6_tcp_frame() -> Vec<u8> {
        eth(
            &[],
            ETH_P_IPV6,
            &ipv6("fd20::5", "fd10::9", PROTO_TCP, &tcp(40000, 22, TCP_SYN)),
        )
    }

    fn ip_of(f: &[u8]) -> Packet {
        match parse(f, "eth2") {
            Ok(Parsed::Ip(p)) => p,
            other => panic!("expected an IP packet, got {other:?}"),
        }
    }
    fn err(f: &[u8]) -> DropReason {
        match parse(f, "eth2") {
            Err(r) => r,
            other => panic!("expected a drop, got {other:?}"),
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // ---- L2 ---------------------------------------------------------------------------

    #[test]
    fn ipv4_tcp_fields() {
        let f = v4_tcp_frame();
        let p = ip_of(&f);
        assert_eq!(p.ifname, "eth2");
        assert_eq!(p.vlan, 0);
        assert_eq!(p.src_mac, SRC_MAC);
        assert_eq!((p.src, p.dst), (ip("10.20.5.10"), ip("10.10.9.20")));
        assert_eq!(
            (p.proto, p.l4, p.sport, p.dport, p.tcp_flags),
            (PROTO_TCP, true, 40000, 443, TCP_SYN)
        );
        assert_eq!((p.frag, p.frag_id, p.inner), (Frag::None, 0x4242, None));
        assert_eq!(p.len, f.len() as u64);
    }

    #[test]
    fn vlan_tags() {
        let l3 = ipv4("10.20.5.10", "10.10.9.20", PROTO_UDP, &udp(1, 53, b""));
        // PCP/DEI bits are not part of the VID.
        let p = ip_of(&eth(&[(ETH_P_8021Q, 0xe000 | 100)], ETH_P_IP, &l3));
        assert_eq!((p.vlan, p.dport), (100, 53));
        // QinQ: the outer tag's VID.
        let p = ip_of(&eth(
            &[(ETH_P_8021AD, 200), (ETH_P_8021Q, 5)],
            ETH_P_IP,
            &l3,
        ));
        assert_eq!(p.vlan, 200);
        let p = ip_of(&eth(&[(ETH_P_8021Q, 7), (ETH_P_8021Q, 8)], ETH_P_IP, &l3));
        assert_eq!(p.vlan, 7);
        // Priority tag (VID 0) = untagged.
        assert_eq!(ip_of(&eth(&[(ETH_P_8021Q, 0x2000)], ETH_P_IP, &l3)).vlan, 0);
        // A third tag is more than the data path walks.
        let f = eth(
            &[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)],
            ETH_P_IP,
            &l3,
        );
        assert_eq!(err(&f), DropReason::HeaderLimit);
        // Truncated tag.
        let mut f = eth(&[], ETH_P_8021Q, &[]);
        f.extend_from_slice(&[0, 100, 0x08]);
        assert_eq!(err(&f), DropReason::Malformed);
    }

    #[test]
    fn arp_and_non_ip() {
        assert_eq!(
            parse(&eth(&[], ETH_P_ARP, &[0; 28]), "eth1"),
            Ok(Parsed::Neighbor)
        );
        assert_eq!(
            parse(&eth(&[(ETH_P_8021Q, 10)], ETH_P_ARP, &[0; 28]), "eth1"),
            Ok(Parsed::Neighbor)
        );
        // ARP is not parsed further: even an empty one passes.
        assert_eq!(
            parse(&eth(&[], ETH_P_ARP, &[]), "eth1"),
            Ok(Parsed::Neighbor)
        );
        assert_eq!(err(&eth(&[], 0x88cc, &[0; 46])), DropReason::NonIp); // LLDP
        assert_eq!(
            err(&eth(&[(ETH_P_8021Q, 10)], 0x8863, &[0; 46])),
            DropReason::NonIp
        ); // PPPoE
        for n in 0..14 {
            assert_eq!(
                err(&v4_tcp_frame()[..n]),
                DropReason::Malformed,
                "{n} bytes"
            );
        }
    }

    // ---- IPv4 -------------------------------------------------------------------------

    #[test]
    fn ipv4_header_checks() {
        let good = v4_tcp_frame();
        let mut f = good.clone();
        f[14] = 0x65; // version 6 in an IPv4 ethertype
        assert_eq!(err(&f), DropReason::Malformed);
        let mut f = good.clone();
        f[14] = 0x44; // ihl 16 bytes
        assert_eq!(err(&f), DropReason::Malformed);
        let mut f = good.clone();
        f[16..18].copy_from_slice(&19u16.to_be_bytes()); // total length < header
        assert_eq!(err(&f), DropReason::Malformed);
        let mut f = good.clone();
        f[16..18].copy_from_slice(&41u16.to_be_bytes()); // longer than the frame
        assert_eq!(err(&f), DropReason::Malformed);
        // Ethernet padding after the datagram is fine.
        let mut f = good.clone();
        f.extend_from_slice(&[0; 20]);
        assert_eq!(ip_of(&f).dport, 443);
        // IP options move the L4 header.
        let f = eth(
            &[],
            ETH_P_IP,
            &ipv4_opts(
                "10.0.0.1",
                "10.0.0.2",
                PROTO_UDP,
                1,
                0,
                &[1, 1, 1, 0],
                &udp(7, 9, b"x"),
            ),
        );
        let p = ip_of(&f);
        assert_eq!((p.sport, p.dport), (7, 9));
    }

    #[test]
    fn source_routes_are_dropped() {
        let opts = |o: &[u8]| {
            eth(
                &[],
                ETH_P_IP,
                &ipv4_opts(
                    "10.20.0.5",
                    "10.20.0.1",
                    PROTO_TCP,
                    1,
                    0,
                    o,
                    &tcp(1, 443, TCP_SYN),
                ),
            )
        };
        // Loose and strict source route (after a no-op), with one address.
        assert_eq!(
            err(&opts(&[1, 131, 7, 4, 10, 10, 0, 10])),
            DropReason::SourceRoute
        );
        assert_eq!(
            err(&opts(&[137, 7, 4, 10, 10, 0, 10, 0])),
            DropReason::SourceRoute
        );
        // Behind record route (7) it is still found, in a later fragment too (it is copied).
        let rr_lsrr = [7, 7, 4, 0, 0, 0, 0, 131, 7, 4, 10, 10, 0, 10, 0, 0];
        assert_eq!(err(&opts(&rr_lsrr)), DropReason::SourceRoute);
        let later = ipv4_opts(
            "10.20.0.5",
            "10.20.0.1",
            PROTO_TCP,
            1,
            0x0004,
            &rr_lsrr,
            &[0; 8],
        );
        assert_eq!(err(&eth(&[], ETH_P_IP, &later)), DropReason::SourceRoute);
        // Not a source route: record route alone, an end of list before the kind, a broken
        // length (the kernel drops those options itself).
        assert_eq!(ip_of(&opts(&[7, 7, 4, 0, 0, 0, 0, 0])).dport, 443);
        assert_eq!(ip_of(&opts(&[1, 0, 131, 0])).dport, 443);
        assert_eq!(ip_of(&opts(&[68, 1, 131, 0])).dport, 443);
        // IPv6: a routing header with segments left; with none left it is only walked.
        let mut rh = ext(NH_ROUTING, PROTO_TCP, 24);
        rh[3] = 1;
        rh.extend_from_slice(&tcp(1, 443, TCP_SYN));
        assert_eq!(
            err(&eth(
                &[],
                ETH_P_IPV6,
                &ipv6("fd20::5", "fd20::1", NH_ROUTING, &rh)
            )),
            DropReason::SourceRoute
        );
        rh[3] = 0;
        assert_eq!(
            ip_of(&eth(
                &[],
                ETH_P_IPV6,
                &ipv6("fd20::5", "fd20::1", NH_ROUTING, &rh)
            ))
            .dport,
            443
        );
    }

    #[test]
    fn ipv4_l4_must_be_inside_the_datagram() {
        // TCP header whose second half lies in the Ethernet padding.
        let seg = tcp(40000, 443, TCP_SYN);
        let mut l3 = ipv4("10.0.0.1", "10.0.0.2", PROTO_TCP, &seg[..10]);
        l3.extend_from_slice(&seg[10..]);
        assert_eq!(err(&eth(&[], ETH_P_IP, &l3)), DropReason::Malformed);
        // TCP data offset < 5, or options beyond the datagram.
        let mut seg = tcp(1, 2, 0);
        seg[12] = 4 << 4;
        assert_eq!(
            err(&eth(
                &[],
                ETH_P_IP,
                &ipv4("10.0.0.1", "10.0.0.2", PROTO_TCP, &seg)
            )),
            DropReason::Malformed
        );
        let mut seg = tcp(1, 2, 0);
        seg[12] = 6 << 4;
        assert_eq!(
            err(&eth(
                &[],
                ETH_P_IP,
                &ipv4("10.0.0.1", "10.0.0.2", PROTO_TCP, &seg)
            )),
            DropReason::Malformed
        );
        let p = ip_of(&eth(
            &[],
            ETH_P_IP,
            &ipv4("10.0.0.1", "10.0.0.2", PROTO_TCP, &tcp_opts(1, 2, 0, 12)),
        ));
        assert_eq!(p.dport, 2);
        // UDP and ICMP need 8 bytes.
        let mut l3 = ipv4("10.0.0.1", "10.0.0.2", PROTO_UDP, &[0, 1, 0, 2]);
        l3.extend_from_slice(&[0; 4]);
        assert_eq!(err(&eth(&[], ETH_P_IP, &l3)), DropReason::Malformed);
        assert_eq!(
            err(&eth(
                &[],
                ETH_P_IP,
                &ipv4("10.0.0.1", "10.0.0.2", PROTO_ICMP, &[8, 0, 0, 0])
            )),
            DropReason::Malformed
        );
        // Unknown protocols need nothing.
        let p = ip_of(&eth(&[], ETH_P_IP, &ipv4("10.0.0.1", "10.0.0.2", 47, &[])));
        assert_eq!((p.proto, p.l4, p.sport, p.dport), (47, false, 0, 0));
    }

    #[test]
    fn ipv4_fragments() {
        let seg = tcp(40000, 443, TCP_ACK);
        // First fragment: MF, offset 0 — L4 parsed.
        let p = ip_of(&eth(
            &[],
            ETH_P_IP,
            &ipv4_opts("10.0.0.1", "10.0.0.2", PROTO_TCP, 77, 0x2000, &[], &seg),
        ));
        assert_eq!(
            (p.frag, p.frag_id, p.l4, p.dport),
            (Frag::First, 77, true, 443)
        );
        // A first fragment that cuts the TCP header (RFC 1858 tiny fragment).
        let f = eth(
            &[],
            ETH_P_IP,
            &ipv4_opts(
                "10.0.0.1",
                "10.0.0.2",
                PROTO_TCP,
                77,
                0x2000,
                &[],
                &seg[..8],
            ),
        );
        assert_eq!(err(&f), DropReason::Malformed);
        // Offset 1 (8 bytes): overlapping the TCP header.
        let f = eth(
            &[],
            ETH_P_IP,
            &ipv4_opts("10.0.0.1", "10.0.0.2", PROTO_TCP, 77, 0x2001, &[], &[0; 16]),
        );
        assert_eq!(err(&f), DropReason::Malformed);
        let f = eth(
            &[],
            ETH_P_IP,
            &ipv4_opts("10.0.0.1", "10.0.0.2", PROTO_TCP, 77, 0x0001, &[], &[0; 16]),
        );
        assert_eq!(err(&f), DropReason::Malformed);
        // Later fragment: no L4, whatever its payload looks like.
        let f = eth(
            &[],
            ETH_P_IP,
            &ipv4_opts("10.0.0.1", "10.0.0.2", PROTO_TCP, 77, 0x0002, &[], &[]),
        );
        let p = ip_of(&f);
        assert_eq!(
            (p.frag, p.frag_id, p.proto, p.l4, p.sport, p.dport),
            (Frag::Later, 77, PROTO_TCP, false, 0, 0)
        );
        let p = ip_of(&eth(
            &[],
            ETH_P_IP,
            &ipv4_opts(
                "10.0.0.1",
                "10.0.0.2",
                PROTO_UDP,
                78,
                0x2000 | 185,
                &[],
                &[1; 8],
            ),
        ));
        assert_eq!(p.frag, Frag::Later);
        // DF alone is not a fragment.
        let p = ip_of(&eth(
            &[],
            ETH_P_IP,
            &ipv4_opts("10.0.0.1", "10.0.0.2", PROTO_TCP, 79, 0x4000, &[], &seg),
        ));
        assert_eq!(p.frag, Frag::None);
    }

    #[test]
    fn icmp_v4_ports_and_family() {
        let f = |ty, id| {
            eth(
                &[],
                ETH_P_IP,
                &ipv4("10.0.0.1", "10.0.0.2", PROTO_ICMP, &icmp(ty, 0, id, b"")),
            )
        };
        let p = ip_of(&f(8, 0x1234));
        assert_eq!((p.l4, p.sport, p.dport), (true, 0x1234, 0));
        let p = ip_of(&f(0, 0x1234));
        assert_eq!((p.sport, p.dport), (0, 0x1234));
        let p = ip_of(&f(13, 0x1234)); // timestamp
        assert_eq!((p.l4, p.sport, p.dport), (true, 0, 0));
        // ICMPv6's number in IPv4 is an unknown protocol: no L4, no length requirement.
        let p = ip_of(&eth(
            &[],
            ETH_P_IP,
            &ipv4("10.0.0.1", "10.0.0.2", PROTO_ICMPV6, &[128]),
        ));
        assert_eq!((p.proto, p.l4), (PROTO_ICMPV6, false));
        // ...and ICMPv4's in IPv6.
        let p = ip_of(&eth(
            &[],
            ETH_P_IPV6,
            &ipv6("fd00::1", "fd00::2", PROTO_ICMP, &[8]),
        ));
        assert_eq!((p.proto, p.l4), (PROTO_ICMP, false));
    }

    #[test]
    fn icmp_v4_error_quotes() {
        let quoted_tcp = ipv4(
            "10.20.5.10",
            "10.10.9.20",
            PROTO_TCP,
            &tcp(40000, 443, TCP_SYN),
        );
        let err_frame = |ty, quote: &[u8]| {
            eth(
                &[],
                ETH_P_IP,
                &ipv4(
                    "10.10.0.1",
                    "10.20.5.10",
                    PROTO_ICMP,
                    &icmp(ty, 0, 0, quote),
                ),
            )
        };
        let want = Tuple {
            proto: PROTO_TCP,
            src: ip("10.20.5.10"),
            dst: ip("10.10.9.20"),
            sport: 40000,
            dport: 443,
        };
        for ty in [3, 11, 12] {
            let p = ip_of(&err_frame(ty, &quoted_tcp));
            assert_eq!(p.inner, Some(want), "type {ty}");
            assert_eq!((p.l4, p.sport, p.dport), (true, 0, 0));
        }
        // Only IP header + 8 bytes of L4 are needed.
        assert_eq!(ip_of(&err_frame(3, &quoted_tcp[..28])).inner, Some(want));
        // Shorter: no inner (judged as plain ICMP).
        assert_eq!(ip_of(&err_frame(3, &quoted_tcp[..27])).inner, None);
        assert_eq!(ip_of(&err_frame(3, &[])).inner, None);
        // Not an error type: no inner.
        assert_eq!(ip_of(&err_frame(5, &quoted_tcp)).inner, None);
        // Quoted header with options (ihl 6).
        let q = ipv4_opts(
            "10.20.5.10",
            "10.10.9.20",
            PROTO_UDP,
            1,
            0,
            &[1, 1, 1, 0],
            &udp(5000, 53, b""),
        );
        let p = ip_of(&err_frame(3, &q));
        assert_eq!(
            p.inner.map(|t| (t.proto, t.sport, t.dport)),
            Some((PROTO_UDP, 5000, 53))
        );
        // Bad quoted version / ihl, or a protocol without ports.
        let mut q = quoted_tcp.clone();
        q[0] = 0x45 | 0x20; // version 6
        assert_eq!(ip_of(&err_frame(3, &q)).inner, None);
        let mut q = quoted_tcp.clone();
        q[0] = 0x44;
        assert_eq!(ip_of(&err_frame(3, &q)).inner, None);
        let q = ipv4("10.20.5.10", "10.10.9.20", 47, &[0; 8]);
        assert_eq!(ip_of(&err_frame(3, &q)).inner, None);
        // Quoted echo request: its id is its source "port".
        let q = ipv4(
            "10.20.5.10",
            "10.10.9.20",
            PROTO_ICMP,
            &icmp(8, 0, 0xbeef, b""),
        );
        let t = ip_of(&err_frame(11, &q)).inner.unwrap();
        assert_eq!((t.proto, t.sport, t.dport), (PROTO_ICMP, 0xbeef, 0));
        // The quote must be inside the outer datagram, not in padding.
        let mut l3 = ipv4(
            "10.10.0.1",
            "10.20.5.10",
            PROTO_ICMP,
            &icmp(3, 0, 0, &quoted_tcp[..20]),
        );
        l3.extend_from_slice(&quoted_tcp[20..28]);
        assert_eq!(ip_of(&eth(&[], ETH_P_IP, &l3)).inner, None);
    }

    // ---- IPv6 -------------------------------------------------------------------------

    #[test]
    fn ipv6_basic() {
        let f = v6_tcp_frame();
        let p = ip_of(&f);
        assert_eq!((p.src, p.dst), (ip("fd20::5"), ip("fd10::9")));
        assert_eq!(
            (p.proto, p.l4, p.sport, p.dport, p.frag),
            (PROTO_TCP, true, 40000, 22, Frag::None)
        );
        let mut f2 = f.clone();
        f2[14] = 0x40;
        assert_eq!(err(&f2), DropReason::Malformed);
        let mut f2 = f.clone();
        f2[18..20].copy_from_slice(&21u16.to_be_bytes()); // payload longer than the frame
        assert_eq!(err(&f2), DropReason::Malformed);
        // TCP header reaching into padding.
        let mut f2 = f.clone();
        f2[18..20].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(err(&f2), DropReason::Malformed);
        let p = ip_of(&eth(
            &[],
            ETH_P_IPV6,
            &ipv6("fd20::5", "fd10::9", PROTO_UDP, &udp(1, 53, b"q")),
        ));
        assert_eq!((p.proto, p.dport), (PROTO_UDP, 53));
        let p = ip_of(&eth(&[], ETH_P_IPV6, &ipv6("fd20::5", "fd10::9", 59, &[])));
        assert_eq!((p.proto, p.l4), (59, false));
    }

    #[test]
    fn ipv6_extension_headers() {
        let chain = |hdrs: &[(u8, usize)], last: u8, l4: &[u8]| {
            // hdrs: (kind, len); each header's next header is the following kind.
            let mut payload = Vec::new();
            for (i, &(kind, len)) in hdrs.iter().enumerate() {
                let nh = hdrs.get(i + 1).map(|h| h.0).unwrap_or(last);
                payload.extend(ext(kind, nh, len));
            }
            payload.extend_from_slice(l4);
            let first = hdrs.first().map(|h| h.0).unwrap_or(last);
            eth(
                &[],
                ETH_P_IPV6,
                &ipv6("fd20::5", "fd10::9", first, &payload),
            )
        };
        let seg = tcp(40000, 22, TCP_SYN);
        let p = ip_of(&chain(
            &[(NH_HOP, 8), (NH_DSTOPTS, 16), (NH_ROUTING, 24), (NH_AH, 12)],
            PROTO_TCP,
            &seg,
        ));
        assert_eq!((p.proto, p.dport), (PROTO_TCP, 22));
        // Six is the limit...
        let six = [
            (NH_HOP, 8),
            (NH_DSTOPTS, 8),
            (NH_ROUTING, 8),
            (NH_DSTOPTS, 8),
            (NH_AH, 16),
            (NH_DSTOPTS, 8),
        ];
        assert_eq!(ip_of(&chain(&six, PROTO_TCP, &seg)).dport, 22);
        // ...a seventh is a header limit.
        let mut seven = six.to_vec();
        seven.push((NH_DSTOPTS, 8));
        assert_eq!(
            err(&chain(&seven, PROTO_TCP, &seg)),
            DropReason::HeaderLimit
        );
        // A chain past 512 bytes from the frame start.
        assert_eq!(
            err(&chain(&[(NH_DSTOPTS, 464)], PROTO_UDP, &udp(1, 2, b""))).clone(),
            DropReason::HeaderLimit
        );
        assert_eq!(
            ip_of(&chain(&[(NH_DSTOPTS, 456)], PROTO_UDP, &udp(1, 2, b""))).dport,
            2
        );
        // Truncated: the header's first 8 bytes are missing from the frame → malformed.
        let f = eth(&[], ETH_P_IPV6, &ipv6("fd20::5", "fd10::9", NH_HOP, &[]));
        assert_eq!(err(&f), DropReason::Malformed);
        let f = eth(
            &[],
            ETH_P_IPV6,
            &ipv6("fd20::5", "fd10::9", NH_HOP, &[6, 0, 0, 0]),
        );
        assert_eq!(err(&f), DropReason::Malformed);
        // Header longer than the datagram (its length byte says 16, datagram has 8) →
        // header limit, as the data path does.
        let mut e = ext(NH_HOP, PROTO_TCP, 8);
        e[1] = 1;
        let f = eth(&[], ETH_P_IPV6, &ipv6("fd20::5", "fd10::9", NH_HOP, &e));
        assert_eq!(err(&f), DropReason::HeaderLimit);
        // Header chain ends exactly at the datagram end and is followed by TCP in padding.
        let mut f = chain(&[(NH_HOP, 8)], PROTO_TCP, &[]);
        f.extend_from_slice(&seg);
        assert_eq!(err(&f), DropReason::Malformed);
    }

    #[test]
    fn ipv6_fragment_header() {
        let seg = tcp(40000, 22, TCP_SYN);
        let with_frag = |offset, more, payload: &[u8]| {
            let mut p = frag6(PROTO_TCP, offset, more, 0xdead_beef);
            p.extend_from_slice(payload);
            eth(
                &[],
                ETH_P_IPV6,
                &ipv6("fd20::5", "fd10::9", NH_FRAGMENT, &p),
            )
        };
        let p = ip_of(&with_frag(0, true, &seg));
        assert_eq!(
            (p.frag, p.frag_id, p.l4, p.dport, p.proto),
            (Frag::First, 0xdead_beef, true, 22, PROTO_TCP)
        );
        // A first fragment that cuts the TCP header.
        assert_eq!(err(&with_frag(0, true, &seg[..12])), DropReason::Malformed);
        let p = ip_of(&with_frag(100, true, &[0; 16]));
        assert_eq!(
            (p.frag, p.frag_id, p.l4, p.proto, p.dport),
            (Frag::Later, 0xdead_beef, false, PROTO_TCP, 0)
        );
        let p = ip_of(&with_frag(100, false, &[]));
        assert_eq!(p.frag, Frag::Later);
        assert_eq!(err(&with_frag(1, true, &[0; 16])), DropReason::Malformed);
        // Atomic fragment: a whole packet.
        let p = ip_of(&with_frag(0, false, &seg));
        assert_eq!((p.frag, p.frag_id, p.dport), (Frag::None, 0xdead_beef, 22));
        // Later fragment: the walk stops at the fragment header, the protocol is its next
        // header even if that is another extension header.
        let mut pl = frag6(NH_DSTOPTS, 50, false, 9);
        pl.extend(ext(NH_DSTOPTS, PROTO_TCP, 8));
        let p = ip_of(&eth(
            &[],
            ETH_P_IPV6,
            &ipv6("fd20::5", "fd10::9", NH_FRAGMENT, &pl),
        ));
        assert_eq!((p.frag, p.proto), (Frag::Later, NH_DSTOPTS));
        // Fragment header after a hop-by-hop header.
        let mut pl = ext(NH_HOP, NH_FRAGMENT, 8);
        pl.extend(frag6(PROTO_UDP, 0, true, 5));
        pl.extend(udp(1, 53, b""));
        let p = ip_of(&eth(
            &[],
            ETH_P_IPV6,
            &ipv6("fd20::5", "fd10::9", NH_HOP, &pl),
        ));
        assert_eq!((p.frag, p.frag_id, p.dport), (Frag::First, 5, 53));
    }

    #[test]
    fn icmpv6_ports_errors_and_nd() {
        let f = |ty, id| {
            eth(
                &[],
                ETH_P_IPV6,
                &ipv6("fd20::5", "fd10::9", PROTO_ICMPV6, &icmp(ty, 0, id, b"")),
            )
        };
        let p = ip_of(&f(128, 9));
        assert_eq!((p.l4, p.sport, p.dport), (true, 9, 0));
        let p = ip_of(&f(129, 9));
        assert_eq!((p.sport, p.dport), (0, 9));
        // ND to a global address is ordinary ICMPv6.
        let p = ip_of(&f(135, 0));
        assert_eq!((p.l4, p.sport, p.dport), (true, 0, 0));
        // Link-scoped ND with hop limit 255 is neighbour traffic.
        let nd = |ty, dst, hl| {
            eth(
                &[],
                ETH_P_IPV6,
                &ipv6_hl("fe80::1", dst, PROTO_ICMPV6, hl, &icmp(ty, 0, 0, &[0; 16])),
            )
        };
        for ty in 133..=136 {
            assert_eq!(
                parse(&nd(ty, "ff02::1:ff00:9", 255), "eth1"),
                Ok(Parsed::Neighbor),
                "type {ty}"
            );
            assert_eq!(
                parse(&nd(ty, "fe80::9", 255), "eth1"),
                Ok(Parsed::Neighbor),
                "type {ty}"
            );
        }
        // Link-scope multicast with flags (ff12::) is link scope too.
        assert_eq!(
            parse(&nd(135, "ff12::1", 255), "eth1"),
            Ok(Parsed::Neighbor)
        );
        assert!(matches!(
            parse(&nd(135, "ff05::1", 255), "eth1"),
            Ok(Parsed::Ip(_))
        ));
        assert!(matches!(
            parse(&nd(135, "fe80::9", 64), "eth1"),
            Ok(Parsed::Ip(_))
        ));
        assert!(matches!(
            parse(&nd(137, "fe80::9", 255), "eth1"),
            Ok(Parsed::Ip(_))
        )); // redirect
        assert!(matches!(
            parse(&nd(135, "fec0::9", 255), "eth1"),
            Ok(Parsed::Ip(_))
        ));
        // ND must still have a complete ICMPv6 header.
        let short = eth(
            &[],
            ETH_P_IPV6,
            &ipv6_hl("fe80::1", "ff02::1", PROTO_ICMPV6, 255, &[135, 0, 0, 0]),
        );
        assert_eq!(err(&short), DropReason::Malformed);
        // Errors 1–4 quote a 40-byte header + 8 bytes.
        let quoted = ipv6("fd20::5", "fd10::9", PROTO_UDP, &udp(5000, 53, b"query"));
        let want = Tuple {
            proto: PROTO_UDP,
            src: ip("fd20::5"),
            dst: ip("fd10::9"),
            sport: 5000,
            dport: 53,
        };
        for ty in 1..=4 {
            let e = eth(
                &[],
                ETH_P_IPV6,
                &ipv6("fd10::1", "fd20::5", PROTO_ICMPV6, &icmp(ty, 0, 0, &quoted)),
            );
            assert_eq!(ip_of(&e).inner, Some(want), "type {ty}");
        }
        let e = eth(
            &[],
            ETH_P_IPV6,
            &ipv6(
                "fd10::1",
                "fd20::5",
                PROTO_ICMPV6,
                &icmp(1, 0, 0, &quoted[..47]),
            ),
        );
        assert_eq!(ip_of(&e).inner, None);
        let e = eth(
            &[],
            ETH_P_IPV6,
            &ipv6(
                "fd10::1",
                "fd20::5",
                PROTO_ICMPV6,
                &icmp(128, 0, 0, &quoted),
            ),
        );
        assert_eq!(ip_of(&e).inner, None);
        // The quote's extension headers are walked like a packet's (the nftables oracle in
        // the namespace lab found conntrack relating such errors where this did not): up to
        // IPV6_EXT_MAX of them; a first fragment quotes its ports, a later one none.
        let error_quoting = |chain: &[(u8, Vec<u8>)], l4: (u8, Vec<u8>)| {
            let mut body: Vec<u8> = Vec::new();
            let first = chain.first().map_or(l4.0, |(kind, _)| *kind);
            for (_, e) in chain {
                body.extend(e);
            }
            body.extend(&l4.1);
            let q = ipv6("fd20::5", "fd10::9", first, &body);
            ip_of(&eth(
                &[],
                ETH_P_IPV6,
                &ipv6("fd10::1", "fd20::5", PROTO_ICMPV6, &icmp(1, 0, 0, &q)),
            ))
            .inner
        };
        let want = Tuple {
            proto: PROTO_UDP,
            src: ip("fd20::5"),
            dst: ip("fd10::9"),
            sport: 1,
            dport: 2,
        };
        let l4 = (PROTO_UDP, udp(1, 2, b""));
        assert_eq!(
            error_quoting(&[(NH_HOP, ext(NH_HOP, PROTO_UDP, 8))], l4.clone()),
            Some(want)
        );
        let chain = [
            (NH_HOP, ext(NH_HOP, NH_DSTOPTS, 8)),
            (NH_DSTOPTS, ext(NH_DSTOPTS, NH_ROUTING, 16)),
            (NH_ROUTING, ext(NH_ROUTING, NH_AH, 8)),
            (NH_AH, ext(NH_AH, NH_FRAGMENT, 12)),
            (NH_FRAGMENT, frag6(PROTO_UDP, 0, true, 7)),
        ];
        assert_eq!(error_quoting(&chain, l4.clone()), Some(want));
        let later = [(NH_FRAGMENT, frag6(PROTO_UDP, 3, true, 7))];
        assert_eq!(error_quoting(&later, l4.clone()), None);
        let six: Vec<(u8, Vec<u8>)> = (0..6)
            .map(|i| {
                (
                    NH_DSTOPTS,
                    ext(NH_DSTOPTS, if i < 5 { NH_DSTOPTS } else { PROTO_UDP }, 8),
                )
            })
            .collect();
        assert_eq!(error_quoting(&six, l4.clone()), Some(want));
        let seven: Vec<(u8, Vec<u8>)> = (0..7)
            .map(|i| {
                (
                    NH_DSTOPTS,
                    ext(NH_DSTOPTS, if i < 6 { NH_DSTOPTS } else { PROTO_UDP }, 8),
                )
            })
            .collect();
        assert_eq!(error_quoting(&seven, l4.clone()), None);
        // Cut inside the walked chain, or before the 8 bytes of the upper layer.
        let mut q = ipv6("fd20::5", "fd10::9", NH_HOP, &ext(NH_HOP, PROTO_UDP, 16));
        q.extend(udp(1, 2, b""));
        for cut in [44, 55, 63] {
            let e = eth(
                &[],
                ETH_P_IPV6,
                &ipv6(
                    "fd10::1",
                    "fd20::5",
                    PROTO_ICMPV6,
                    &icmp(1, 0, 0, &q[..cut]),
                ),
            );
            assert_eq!(ip_of(&e).inner, None, "quote cut at {cut}");
        }
    }

    // ---- truncation -------------------------------------------------------------------

    #[test]
    fn every_truncation_of_a_valid_frame_is_malformed() {
        let frames = [
            v4_tcp_frame(),
            v6_tcp_frame(),
            eth(
                &[(ETH_P_8021AD, 200), (ETH_P_8021Q, 5)],
                ETH_P_IP,
                &ipv4(
                    "10.0.0.1",
                    "10.0.0.2",
                    PROTO_TCP,
                    &tcp_opts(1, 2, TCP_SYN, 12),
                ),
            ),
            eth(
                &[(ETH_P_8021Q, 100)],
                ETH_P_IP,
                &ipv4("10.0.0.1", "10.0.0.2", PROTO_UDP, &udp(1, 53, b"abc")),
            ),
            eth(&[], ETH_P_IPV6, &{
                let mut pl = ext(NH_HOP, NH_FRAGMENT, 8);
                pl.extend(frag6(PROTO_TCP, 0, true, 1));
                pl.extend(tcp(1, 2, 0));
                ipv6("fd00::1", "fd00::2", NH_HOP, &pl)
            }),
        ];
        for full in &frames {
            assert!(matches!(parse(full, "eth2"), Ok(Parsed::Ip(_))));
            for n in 0..full.len() {
                assert_eq!(
                    parse(&full[..n], "eth2"),
                    Err(DropReason::Malformed),
                    "{n} of {} bytes",
                    full.len()
                );
            }
        }
    }

    // ---- frame → model ----------------------------------------------------------------

    #[test]
    fn frames_through_the_model() {
        use crate::policy::types::*;
        let zone = |name: &str, ifname: &str, net: &str| Zone {
            name: name.into(),
            label: None,
            interfaces: vec![ZoneIface {
                name: ifname.into(),
                vlan: None,
                loc: Loc::default(),
            }],
            networks: vec![net.parse().unwrap()],
            criticality: Criticality::Low,
            segment: None,
            loc: Loc::default(),
        };
        let policy = Policy {
            path: "t.toml".into(),
            version: 1,
            mode: Mode::Audit,
            defaults: Defaults::default(),
            zones: vec![
                zone("mynumber", "eth1", "10.10.0.0/16"),
                zone("lgwan", "eth2", "10.20.0.0/16"),
            ],
            rules: vec![Rule {
                name: "r".into(),
                description: None,
                from: 1,
                to: 0,
                protocol: Protocol::Tcp,
                ports: vec![PortRange { lo: 443, hi: 443 }],
                sources: vec![],
                source_macs: vec![SRC_MAC],
                destinations: vec![],
                mode: Mode::Enforce,
                acknowledge: None,
                loc: Loc::default(),
            }],
        };
        let mut m = Model::new(policy);
        let syn = v4_tcp_frame();
        let d = decide(&mut m, &syn, "eth2", 0);
        assert_eq!(
            (d.outcome, d.rule),
            (Outcome::Pass(PassReason::Rule), Some(0))
        );
        let reply = eth(
            &[],
            ETH_P_IP,
            &ipv4(
                "10.10.9.20",
                "10.20.5.10",
                PROTO_TCP,
                &tcp(443, 40000, TCP_SYN | TCP_ACK),
            ),
        );
        assert_eq!(
            decide(&mut m, &reply, "eth1", 1).outcome,
            Outcome::Pass(PassReason::Reply)
        );
        let d = decide(&mut m, &eth(&[], ETH_P_ARP, &[0; 28]), "eth9", 2);
        assert_eq!(
            (d.outcome, d.from, d.to),
            (Outcome::Pass(PassReason::Neighbor), 0, 0)
        );
        // Audit mode never passes what cannot be parsed.
        let d = decide(&mut m, &syn[..40], "eth2", 3);
        assert_eq!(d.outcome, Outcome::Drop(DropReason::Malformed));
        assert!(!d.xdp_pass(true));
        let c = m.counters();
        assert_eq!(c.rule(0).bytes, (syn.len() + reply.len()) as u64);
        assert_eq!(c.drop(DropReason::Malformed, false).bytes, 40);
        assert_eq!(c.pass(PassReason::Neighbor).bytes, 42);
    }
}

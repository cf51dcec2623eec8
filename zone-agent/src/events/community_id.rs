//! Community ID v1 (<https://github.com/corelight/community-id-spec>): one string per flow,
//! the same whichever direction a packet of it went and whichever tool (Zeek, Suricata, a
//! SIEM) computed it, so that the flow log can be joined with other sensors' records.
//!
//! `"1:" + base64(sha1(seed ‖ addr_lo ‖ addr_hi ‖ proto ‖ 0 ‖ port_lo ‖ port_hi))`, the two
//! endpoints ordered (address, then port) so that both directions give the same input. ICMP
//! has no ports: its type and code stand in for them (a request and its reply map to each
//! other; a message with no counterpart is "one way" and never reordered).

use std::net::IpAddr;

use base64::Engine as _;
use sha1::Digest as _;
use zone_agent_common::{PROTO_ICMP, PROTO_ICMPV6};

/// The seed the flow log uses (the spec's default; other tools use it unless configured).
pub const SEED: u16 = 0;

/// What stands in for the ports of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ports {
    /// TCP, UDP, SCTP: source and destination port.
    Transport(u16, u16),
    /// ICMP / ICMPv6 (by the protocol number): the message type and code.
    Icmp { kind: u8, code: u8 },
    /// Any other protocol: addresses and protocol only.
    None,
}

/// The request/reply counterpart of an ICMP type, if it has one (the spec's table).
fn icmp_counterpart(proto: u8, kind: u8) -> Option<u8> {
    let pairs: &[(u8, u8)] = if proto == PROTO_ICMPV6 {
        // echo, router solicit/advert, neighbor solicit/advert, MLD query/report,
        // who-are-you, home agent address discovery
        &[
            (128, 129),
            (129, 128),
            (133, 134),
            (134, 133),
            (135, 136),
            (136, 135),
            (130, 131),
            (131, 130),
            (139, 140),
            (140, 139),
            (144, 145),
            (145, 144),
        ]
    } else {
        // echo, timestamp, info, router solicit (one direction only), address mask
        &[
            (8, 0),
            (0, 8),
            (13, 14),
            (14, 13),
            (15, 16),
            (16, 15),
            (10, 9),
            (17, 18),
            (18, 17),
        ]
    };
    pairs.iter().find(|p| p.0 == kind).map(|p| p.1)
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// The Community ID of a packet (or flow) from `src` to `dst` with protocol `proto`.
pub fn of(seed: u16, proto: u8, src: IpAddr, dst: IpAddr, ports: Ports) -> String {
    let (s, d) = (octets(src), octets(dst));
    let (ports, one_way) = match ports {
        Ports::Transport(sp, dp) => (Some((sp, dp)), false),
        Ports::Icmp { kind, code } if proto == PROTO_ICMP || proto == PROTO_ICMPV6 => {
            match icmp_counterpart(proto, kind) {
                Some(other) => (Some((u16::from(kind), u16::from(other))), false),
                None => (Some((u16::from(kind), u16::from(code))), true),
            }
        }
        Ports::Icmp { .. } | Ports::None => (None, false),
    };
    let (sp, dp) = ports.unwrap_or((0, 0));
    let ordered = one_way || (s.as_slice(), sp) < (d.as_slice(), dp);
    let (lo, hi, plo, phi) = if ordered {
        (s, d, sp, dp)
    } else {
        (d, s, dp, sp)
    };
    let mut h = sha1::Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(&lo);
    h.update(&hi);
    h.update([proto, 0]);
    if ports.is_some() {
        h.update(plo.to_be_bytes());
        h.update(phi.to_be_bytes());
    }
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The spec's published baseline (`baseline/baseline_deflt.json`, seed 0). Its ICMP
    /// rows give the port equivalents; the type (and code 0, or the code for a one-way
    /// message) they come from is what a packet carries.
    #[test]
    fn spec_baseline_vectors() {
        let transport = [
            (
                6,
                "2001:470:e5bf:dead:4957:2174:e82c:4887",
                "2607:f8b0:400c:c03::1a",
                63943,
                25,
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            ),
            (
                6,
                "128.232.110.120",
                "66.35.250.204",
                34855,
                80,
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                17,
                "192.168.1.52",
                "8.8.8.8",
                54585,
                53,
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
            (
                132,
                "192.168.170.8",
                "192.168.170.56",
                7,
                7,
                "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=",
            ),
        ];
        for (proto, a, b, pa, pb, want) in transport {
            assert_eq!(of(0, proto, ip(a), ip(b), Ports::Transport(pa, pb)), want);
            // Either direction: the same ID.
            assert_eq!(of(0, proto, ip(b), ip(a), Ports::Transport(pb, pa)), want);
        }
        // (proto, src, dst, type, code, id)
        let icmp = [
            (
                1,
                "192.168.0.89",
                "192.168.0.1",
                8,
                0,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            ),
            (
                1,
                "192.168.0.1",
                "192.168.0.89",
                0,
                0,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            ),
            (
                1,
                "10.0.0.1",
                "10.0.0.2",
                11,
                0,
                "1:YHxtAirCG//0OzkcVAukqKQN9xM=",
            ),
            (
                58,
                "fe80::200:86ff:fe05:80da",
                "fe80::260:97ff:fe07:69ea",
                135,
                0,
                "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
            ),
            (
                58,
                "fe80::260:97ff:fe07:69ea",
                "fe80::200:86ff:fe05:80da",
                136,
                0,
                "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
            ),
            (
                58,
                "fe80::260:97ff:fe07:69ea",
                "fe80::200:86ff:fe05:80da",
                135,
                0,
                "1:zavyT/cezQr1fmImYCwYnMXbgck=",
            ),
            (
                58,
                "3ffe:501:1800:2345::2",
                "3ffe:507:0:1:200:86ff:fe05:80da",
                3,
                0,
                "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=",
            ),
            (
                58,
                "3ffe:501:410:0:2c0:dfff:fe47:33e",
                "3ffe:507:0:1:200:86ff:fe05:80da",
                1,
                4,
                "1:hLZd0XGWojozrvxqE0dWB1iM6R0=",
            ),
            (
                58,
                "3ffe:507:0:1:200:86ff:fe05:80da",
                "3ffe:501:0:1001::2",
                128,
                0,
                "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
            ),
            (
                58,
                "3ffe:501:0:1001::2",
                "3ffe:507:0:1:200:86ff:fe05:80da",
                129,
                0,
                "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
            ),
            (
                58,
                "fe80::200:86ff:fe05:80da",
                "ff02::2",
                133,
                0,
                "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=",
            ),
            (
                58,
                "fe80::260:97ff:fe07:69ea",
                "ff02::1",
                134,
                0,
                "1:pkvHqCL88/tg1k4cPigmZXUtL00=",
            ),
        ];
        for (proto, a, b, kind, code, want) in icmp {
            assert_eq!(
                of(0, proto, ip(a), ip(b), Ports::Icmp { kind, code }),
                want,
                "{a} -> {b} type {kind}"
            );
        }
        // No ports (RSVP).
        for (a, b) in [("10.1.12.1", "10.1.12.2"), ("10.1.12.2", "10.1.12.1")] {
            assert_eq!(
                of(0, 46, ip(a), ip(b), Ports::None),
                "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="
            );
        }
    }

    /// Zeek's own test of its implementation (seed 0) agrees.
    #[test]
    fn zeek_vectors() {
        let (a, b) = (ip("1.2.3.4"), ip("5.6.7.8"));
        assert_eq!(
            of(SEED, 6, a, b, Ports::Transport(1122, 3344)),
            "1:wCb3OG7yAFWelaUydu0D+125CLM="
        );
        assert_eq!(
            of(SEED, 17, a, b, Ports::Transport(1122, 3344)),
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="
        );
    }
}

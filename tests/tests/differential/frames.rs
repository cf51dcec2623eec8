//! Generated frames and steps: raw choices, resolved against the policy in force and the
//! frames sent so far (`Resolver`).

use super::*;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Ingress {
    /// Interface entry `iface` of zone `zone` (indices wrap).
    Zone { zone: u8, iface: u8 },
    /// Any interface of the pool with any VLAN (often no zone's).
    Pool { iface: u8, vlan: u8 },
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum AddrGen {
    /// In a network of the ingress zone.
    Own(u8, HostGen),
    Zone(u8, u8, HostGen),
    RuleSrc(u8, u8, HostGen),
    RuleDst(u8, u8, HostGen),
    /// Unspecified, broadcast, multicast, link-local, loopback…
    Special(u8),
    Random(u128),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum PortPick {
    Rule(u8, u8, u16),
    Common(u8),
    Random(u16),
    /// Chosen by `Resolver::aim`.
    Exact(u16),
}

/// Aim a packet at a rule (see `Resolver::aim`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub(crate) rule: u8,
    pub(crate) pick: u8,
    pub(crate) host: HostGen,
    pub(crate) perturb: u8,
}

/// Where a packet goes and what it carries, before its shape is applied.
pub(crate) struct Aim {
    pub(crate) iface: String,
    pub(crate) vlan: u16,
    pub(crate) v6: bool,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) mac: [u8; 6],
    pub(crate) l4: L4Gen,
}

pub(crate) fn mac_of(pick: u8) -> [u8; 6] {
    match pick {
        m @ 0..=2 => MACS[m as usize],
        3..=5 => HOST_MAC,
        m => [0x02, 0, 0, 0, 0x77, m],
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum L4Gen {
    Tcp {
        sport: u16,
        dport: PortPick,
        flags: u8,
        opt_words: u8,
    },
    Udp {
        sport: u16,
        dport: PortPick,
    },
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
    },
    Other {
        proto: u8,
        len: u8,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum FragGen {
    None,
    First(u32),
    Later {
        offset: u16,
        more: bool,
        id: u32,
    },
    /// IPv6 fragment header with offset 0 and no M flag (RFC 6946); for IPv4 a plain packet.
    Atomic(u32),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct ExtGen {
    pub(crate) kind: u8,
    pub(crate) len: u8,
    /// Routing header: routing type and segments left (0: the route is used up).
    pub(crate) routing: (u8, u8),
}

/// IPv4 options: none, NOP words, or a list that may hold a (loose, strict) source route,
/// record route or timestamp, with right or broken lengths.
#[derive(Clone, Debug)]
pub(crate) enum V4Opts {
    Nops(u8),
    List(Vec<(u8, u8, u8)>),
}

/// `(kind, length, pointer)` items as option bytes: EOL and NOP are one byte, the others
/// carry `length` bytes in all (a broken length stays as written), then EOL padding to a
/// multiple of 4, 40 bytes at most.
pub(crate) fn v4_option_bytes(items: &[(u8, u8, u8)]) -> Vec<u8> {
    let mut b = vec![];
    for &(kind, len, ptr) in items {
        match kind {
            0 | 1 => b.push(kind),
            _ => {
                b.extend([kind, len, ptr]);
                b.extend(std::iter::repeat_n(0x0a, (len as usize).saturating_sub(3)));
            }
        }
    }
    b.truncate(40);
    b.resize(b.len().div_ceil(4) * 4, 0);
    b
}

#[derive(Clone, Debug)]
pub(crate) struct Shape {
    /// Inner VLAN tags (raw TCI) after the ingress's own.
    pub(crate) inner_tags: Vec<u16>,
    /// Outer TPID 802.1ad instead of 802.1Q.
    pub(crate) qinq: bool,
    /// Untagged ingress sent as priority-tagged (VID 0).
    pub(crate) prio_tag: bool,
    pub(crate) pcp: u8,
    pub(crate) v4_opts: V4Opts,
    pub(crate) exts: Vec<ExtGen>,
    pub(crate) frag: FragGen,
    pub(crate) frag_pos: u8,
    /// Ethernet padding after the IP datagram.
    pub(crate) pad: u8,
    pub(crate) corrupt: Option<(u16, u8)>,
    pub(crate) hop255: bool,
    pub(crate) payload: u8,
}

#[derive(Clone, Debug)]
pub(crate) struct PktGen {
    pub(crate) target: Option<Target>,
    pub(crate) ingress: Ingress,
    pub(crate) v6: bool,
    pub(crate) src: AddrGen,
    pub(crate) dst: AddrGen,
    pub(crate) mac: u8,
    pub(crate) l4: L4Gen,
    pub(crate) shape: Shape,
}

#[derive(Clone, Debug)]
pub(crate) enum StepGen {
    Send(PktGen),
    /// SYN, SYN-ACK, ACK, then a close: none, FIN both ways, RST either way, one FIN.
    Handshake {
        pkt: PktGen,
        close: u8,
    },
    /// The reverse tuple of an earlier frame, entering through its destination's zone.
    Reply {
        back: u8,
        flags: u8,
        via: u8,
    },
    /// An earlier frame again in its own direction (TCP with new flags).
    Again {
        back: u8,
        flags: u8,
    },
    /// An ICMP error quoting an earlier frame (or its reply), sent back towards its source.
    IcmpError {
        back: u8,
        reply_dir: bool,
        ty: u8,
        code: u8,
        router: u8,
        cut: u8,
    },
    /// A first fragment, then `n % 4` later fragments of the same datagram.
    Fragmented {
        pkt: PktGen,
        id: u32,
        n: u8,
    },
    /// A later fragment of an earlier frame's datagram.
    LaterFrag {
        back: u8,
        offset: u16,
        more: bool,
        variant: u8,
    },
    /// ARP, another ethertype, or neighbour discovery (link-scoped or not) on a zone's way in.
    Neighbor {
        kind: u8,
        zone: u8,
        iface: u8,
        host: u8,
    },
    Advance(u8),
    Reload,
    /// Every truncation (≥ 14 bytes) of an earlier frame.
    Truncate {
        back: u8,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub(crate) policy: PolicyGen,
    pub(crate) mutation: MutGen,
    pub(crate) steps: Vec<StepGen>,
}

/// What a case comes down to, and what the regression files hold.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Send {
        iface: String,
        bytes: Vec<u8>,
    },
    /// Every truncation of the frame, from 14 bytes up.
    Cuts {
        iface: String,
        bytes: Vec<u8>,
    },
    Advance(u64),
    Reload(usize),
}

#[derive(Clone)]
pub(crate) struct Sent {
    pub(crate) iface: String,
    /// Ingress zone id (under the policy it was sent under).
    pub(crate) zone: u8,
    pub(crate) tags: Vec<u16>,
    pub(crate) qinq: bool,
    pub(crate) frame: Frame,
    /// Fragment identification, when the frame is a fragment.
    pub(crate) frag_id: Option<u32>,
    /// A first fragment (offset 0, more fragments).
    pub(crate) first: bool,
    pub(crate) bytes: Vec<u8>,
}

pub(crate) struct Resolver<'p> {
    pub(crate) policies: &'p [Policy],
    pub(crate) cur: usize,
    pub(crate) history: Vec<Sent>,
    pub(crate) ops: Vec<Op>,
    pub(crate) advances: usize,
    pub(crate) reloads: usize,
}

impl Case {
    /// The two policies' text and the concrete operations.
    pub(crate) fn resolve(&self) -> Result<(Vec<String>, Vec<Op>), String> {
        let texts = [
            toml(&render(&self.policy)),
            toml(&render(&mutate(&self.policy, &self.mutation))),
        ];
        let mut policies = vec![];
        for t in &texts {
            policies.push(
                check_policy(t)
                    .map_err(|e| format!("generator made an invalid policy:\n{t}\n{e}"))?,
            );
        }
        let mut r = Resolver {
            policies: &policies,
            cur: 0,
            history: vec![],
            ops: vec![],
            advances: 0,
            reloads: 0,
        };
        for s in &self.steps {
            r.step(s);
        }
        Ok((texts.to_vec(), r.ops))
    }
}

pub(crate) fn port_of(l4: &[u8], at: usize) -> u16 {
    l4.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

/// The reverse of `s` (ports swapped; an echo request answered, an echo reply asked).
pub(crate) fn reverse(s: &Frame, flags: u8) -> Frame {
    let r = Frame::new(s.dst, s.src);
    let icmp = if s.src.is_ipv4() { ICMP } else { ICMPV6 };
    match s.proto {
        TCP => r.tcp(port_of(&s.l4, 2), port_of(&s.l4, 0), flags),
        UDP => r.udp(port_of(&s.l4, 2), port_of(&s.l4, 0)),
        p if p == icmp && !s.l4.is_empty() => {
            let (req, rep) = if s.src.is_ipv4() { (8, 0) } else { (128, 129) };
            let ty = match s.l4[0] {
                t if t == req => rep,
                t if t == rep => req,
                t => t,
            };
            r.icmp(ty, s.l4.get(1).copied().unwrap_or(0), port_of(&s.l4, 4))
        }
        p => r.proto(p, s.l4.len()),
    }
}

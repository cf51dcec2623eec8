//! Differential property test: the loaded XDP program, run with BPF_PROG_TEST_RUN, against
//! the reference model (`policy::frame` + `policy::model::Model`) on random policies and
//! random packet sequences.
//!
//! A case is a policy (2–5 zones with nested IPv4/IPv6 prefixes, sometimes a default-route
//! internet zone, tagged and untagged interfaces, 0–14 rules, every `mode` and `defaults`
//! setting), a mutation of it to reload to, and a sequence of steps: frames biased toward the
//! policy (addresses from the zones and rule CIDRs, ports and MACs from the rules), TCP
//! handshakes and teardowns, replies, ICMP errors quoting earlier packets, later fragments of
//! earlier datagrams, every truncation of an earlier frame, idle time past the flow
//! lifetimes, and reloads. Policies are TOML text that goes through the real
//! parse → validate → compile → `Datapath::apply` path. After every frame and every other
//! step, both sides must agree on the XDP action, on ALL counters (drop and pass reasons,
//! zone pairs per verdict, rules; packets and bytes), on the flow table and on the number of
//! fragment entries.
//!
//! Run control: `ZA_DIFF_SEED` (u64, decimal or 0x-hex), `ZA_DIFF_CASES` and
//! `ZA_DIFF_SHRINK_SECS` (default 180). A failure is shrunk by proptest, then cut down to
//! the operations it needs; the shrunk case is printed (policy TOML, every frame in hex, both
//! sides' decisions) and written to `tests/regressions/differential/`, in the text format of
//! `case_text`. Every file there is replayed before the random cases, on every run; a file's
//! `#` lines say what it found.
//!
//! Runs in a private network namespace (a dedicated thread unshares its own), with veth
//! interfaces standing in for the zone interfaces, like `prog_test_run.rs`.

mod common;

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Instant,
};

use common::{
    frames::{ACK, FIN, Frame, ICMP, ICMPV6, RST, SYN, TCP, UDP},
    xdp,
};
use ipnet::IpNet;
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner},
};
use zone_agent::{
    datapath::{
        Datapath,
        stats::{GlobalCounters, monotonic_coarse_ns},
    },
    policy::{
        Policy, Protocol, compile, frame as mframe,
        model::{self, Decision, FlowInfo, Model, ModelCounters},
        validate::{self, OfflineEnvironment},
    },
};
use zone_agent_common::{
    Counter, DropReason, FAMILY_V4, FLOW_AUDIT, FLOW_REPLIED, FlowEvent, FlowKey, FlowState,
    FragKey, FragState, NS, PassReason, Verdict,
};

/// Interfaces the test creates; zones take (interface, VLAN) slots from them, and frames
/// also arrive on slots no zone has.
const IFACES: [&str; 5] = ["zd0", "zd1", "zd2", "zd3", "zd4"];
const ZONE_VLANS: [u16; 3] = [0, 10, 20];
const ANY_VLANS: [u16; 6] = [0, 10, 20, 30, 1, 4094];
const MACS: [[u8; 6]; 3] = [
    [0x02, 0, 0, 0, 0, 0xa1],
    [0x02, 0, 0, 0, 0, 0xa2],
    [0x02, 0, 0, 0, 0, 0xa3],
];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const PORTS: [u16; 10] = [22, 25, 53, 80, 123, 443, 1024, 8000, 8080, 65535];
const SPANS: [u16; 6] = [0, 0, 1, 10, 1000, 65535];
const LENS4: [u8; 8] = [8, 15, 16, 23, 24, 26, 28, 32];
const LENS6: [u8; 8] = [16, 32, 47, 48, 63, 64, 120, 128];
const EXTRA_LEN: [u8; 7] = [0, 1, 4, 8, 16, 32, 128];
const ICMP4_TYPES: [u8; 10] = [8, 0, 3, 11, 12, 13, 5, 4, 14, 9];
const ICMP6_TYPES: [u8; 10] = [128, 129, 1, 2, 3, 4, 133, 135, 136, 143];
/// GRE, IPIP, IPv6-in-IPv4, ESP, SCTP, reserved, hop-by-hop number, ICMP and ICMPv6 numbers in
/// either family, TCP/UDP with whatever bytes follow.
const OTHER_PROTOS: [u8; 11] = [47, 4, 41, 50, 132, 255, 0, 1, 58, 6, 17];
/// Idle time steps, in ms: one just below and one just above each lifetime (10 s closing,
/// 30 s other flows and fragments, 60 s TCP opening, 120 s UDP, 7200 s TCP established).
/// Both sides read the same clock (CLOCK_MONOTONIC_COARSE, which `bpf_ktime_get_coarse_ns`
/// reads), the model right after the kernel's run, so they see the same instant unless a
/// clock tick falls in between (a few µs of a tick of milliseconds). The steps are whole
/// seconds plus 250 ms and a case takes at most `MAX_ADVANCES` of them, so an entry's idle
/// time is never a whole number of seconds, which every lifetime is, unless the real time
/// the case itself takes (mostly `apply`) makes up the rest: only that together with such a
/// tick could make the two sides judge one entry differently.
const ADVANCES_MS: [u64; 11] = [
    1_250, 9_250, 10_250, 29_250, 30_250, 59_250, 60_250, 119_250, 120_250, 7_199_250, 7_200_250,
];
const MAX_ADVANCES: usize = 3;
/// Each reload is a `Datapath::apply`, which costs a few hundred ms of map updates here.
const MAX_RELOADS: usize = 2;
/// Largest frame sent (BPF_PROG_TEST_RUN refuses frames beyond a page).
const MAX_FRAME: usize = 1514;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const DEFAULT_SEED: u64 = 0x5a0e_d1ff_2024_0001;
const DEFAULT_CASES: u32 = 200;

// =======================================================================================
// Generated policies: raw choices, made valid by construction in `render`, so that every
// shrunk value is still a policy an operator could write.

#[derive(Clone, Copy, Debug)]
struct HostGen {
    /// Near an anchor (where the nested prefixes are), or anywhere.
    anchor: Option<u8>,
    low: u128,
}

#[derive(Clone, Copy, Debug)]
struct NetGen {
    v6: bool,
    anchor: u8,
    len: u8,
}

#[derive(Clone, Debug)]
struct ZoneGen {
    /// (interface, VLAN) slots, `IFACES.len() * ZONE_VLANS.len()` of them.
    slots: Vec<u8>,
    nets: Vec<NetGen>,
    default4: bool,
    default6: bool,
    critical: bool,
    /// Write a shared VLAN as the zone's `vlan = N` rather than as ".N" suffixes.
    vlan_field: bool,
}

#[derive(Clone, Copy, Debug)]
struct PortGen {
    pick: u8,
    span: u8,
    raw: u16,
}

#[derive(Clone, Copy, Debug)]
struct CidrGen {
    net: u8,
    extra: u8,
    host: HostGen,
}

#[derive(Clone, Debug)]
struct RuleGen {
    from: u8,
    to: u8,
    proto: u8,
    ports: Vec<PortGen>,
    sources: Vec<CidrGen>,
    dests: Vec<CidrGen>,
    macs: Vec<u8>,
    /// 0: no `mode` key, 1: enforce, 2: audit.
    mode: u8,
}

#[derive(Clone, Debug)]
struct PolicyGen {
    zones: Vec<ZoneGen>,
    rules: Vec<RuleGen>,
    audit: bool,
    /// intra_zone, unknown, fragments: allow?
    defaults: (bool, bool, bool),
}

/// The policy to reload to: the first one's rules kept by `keep`, modes flipped by `flip`,
/// some of `alt`'s rules added, rotated; `alt`'s modes and defaults; sometimes `alt`'s zones.
#[derive(Clone, Debug)]
struct MutGen {
    keep: u16,
    flip: u16,
    rotate: u8,
    add: u8,
    new_zones: bool,
    alt: PolicyGen,
}

fn mutate(p: &PolicyGen, m: &MutGen) -> PolicyGen {
    let mut rules: Vec<RuleGen> = p
        .rules
        .iter()
        .enumerate()
        .filter(|(i, _)| m.keep >> (i % 16) & 1 == 1)
        .map(|(i, r)| {
            let mut r = r.clone();
            if m.flip >> (i % 16) & 1 == 1 {
                r.mode = (r.mode + 1) % 3;
            }
            r
        })
        .collect();
    rules.extend(m.alt.rules.iter().take(m.add as usize).cloned());
    if !rules.is_empty() {
        let k = m.rotate as usize % rules.len();
        rules.rotate_left(k);
    }
    PolicyGen {
        zones: if m.new_zones {
            m.alt.zones.clone()
        } else {
            p.zones.clone()
        },
        rules,
        audit: m.alt.audit,
        defaults: m.alt.defaults,
    }
}

/// Addresses cluster around 32 anchors (10.{0,1}.{0..3}.{0,16,32,48} and the same shape
/// under fd00::/16) so that the generated prefixes nest and overlap.
fn anchor(v6: bool, a: u8) -> IpAddr {
    let (x, y, z) = (
        (a % 2) as u128,
        ((a / 2) % 4) as u128,
        ((a / 8) % 4) as u128 * 16,
    );
    if v6 {
        IpAddr::V6(Ipv6Addr::from(0xfd00u128 << 112 | x << 80 | y << 64 | z))
    } else {
        IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000u32 | (x as u32) << 16 | (y as u32) << 8 | z as u32,
        ))
    }
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn host_bits(h: HostGen, v6: bool) -> u128 {
    match h.anchor {
        Some(a) => bits(anchor(v6, a)) | (h.low & 0xf),
        None => h.low,
    }
}

fn trunc(a: IpAddr, len: u8) -> IpNet {
    IpNet::new(a, len).expect("prefix length in range").trunc()
}

/// An address inside `n`: its network bits, `host`'s bits below the prefix.
fn inside(n: &IpNet, host: u128) -> IpAddr {
    match n {
        IpNet::V4(n) => {
            let m = u32::from(n.hostmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | (host as u32 & m)))
        }
        IpNet::V6(n) => {
            let m = u128::from(n.hostmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (host & m)))
        }
    }
}

struct ZoneSpec {
    ifaces: Vec<(usize, u16)>,
    nets: Vec<IpNet>,
    critical: bool,
    vlan_field: bool,
}

struct RuleSpec {
    from: usize,
    to: usize,
    proto: &'static str,
    ports: Vec<(u16, u16)>,
    sources: Vec<IpNet>,
    dests: Vec<IpNet>,
    macs: Vec<usize>,
    mode: u8,
}

struct Spec {
    audit: bool,
    defaults: (bool, bool, bool),
    zones: Vec<ZoneSpec>,
    rules: Vec<RuleSpec>,
}

/// The zone validation puts a CIDR in: the longest zone network that contains all of it.
fn zone_of(zones: &[ZoneSpec], net: &IpNet) -> Option<usize> {
    let mut best: Option<(u8, usize)> = None;
    for (i, z) in zones.iter().enumerate() {
        for n in &z.nets {
            if n.contains(net) && best.is_none_or(|(len, _)| n.prefix_len() > len) {
                best = Some((n.prefix_len(), i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// Valid by construction: interface slots and networks are unique across zones, rule CIDRs
/// lie in their zones, lists fit the protocol's family, `acknowledge` accepts whatever the
/// guideline lint finds (critical zones next to a default-route internet zone are normal).
fn render(g: &PolicyGen) -> Spec {
    let nslots = IFACES.len() * ZONE_VLANS.len();
    let mut used_slots = vec![false; nslots];
    let mut used_nets: Vec<IpNet> = vec![];
    let mut zones: Vec<ZoneSpec> = vec![];
    for (zi, z) in g.zones.iter().enumerate() {
        let mut ifaces = vec![];
        for &s in &z.slots {
            let s = s as usize % nslots;
            if !used_slots[s] {
                used_slots[s] = true;
                ifaces.push((s / ZONE_VLANS.len(), ZONE_VLANS[s % ZONE_VLANS.len()]));
            }
        }
        if ifaces.is_empty() {
            let s = used_slots
                .iter()
                .position(|u| !u)
                .expect("more slots than zones");
            used_slots[s] = true;
            ifaces.push((s / ZONE_VLANS.len(), ZONE_VLANS[s % ZONE_VLANS.len()]));
        }
        let mut nets = vec![];
        let defaults = [(z.default4, "0.0.0.0/0"), (z.default6, "::/0")];
        let candidates = z
            .nets
            .iter()
            .map(|n| {
                let lens = if n.v6 { &LENS6 } else { &LENS4 };
                trunc(anchor(n.v6, n.anchor), lens[n.len as usize % lens.len()])
            })
            .chain(
                defaults
                    .iter()
                    .filter(|d| d.0)
                    .map(|d| d.1.parse().unwrap()),
            );
        for n in candidates {
            if !used_nets.contains(&n) {
                used_nets.push(n);
                nets.push(n);
            }
        }
        if nets.is_empty() {
            // Outside the anchors' 10.0.0.0/8, and one per zone index: always free.
            let n: IpNet = format!("192.168.{zi}.0/24").parse().unwrap();
            used_nets.push(n);
            nets.push(n);
        }
        zones.push(ZoneSpec {
            ifaces,
            nets,
            critical: z.critical,
            vlan_field: z.vlan_field,
        });
    }
    let nz = zones.len();
    let mut rules = vec![];
    for r in &g.rules {
        let from = r.from as usize % nz;
        let mut to = r.to as usize % nz;
        if to == from {
            to = (from + 1) % nz;
        }
        let proto = ["tcp", "udp", "icmp", "icmpv6", "any"][r.proto as usize % 5];
        let family_ok = |n: &IpNet| match proto {
            "icmp" => matches!(n, IpNet::V4(_)),
            "icmpv6" => matches!(n, IpNet::V6(_)),
            _ => true,
        };
        let cidrs = |list: &[CidrGen], zone: usize| {
            let mut out: Vec<IpNet> = vec![];
            for c in list {
                let nets = &zones[zone].nets;
                let n = nets[c.net as usize % nets.len()];
                let max = if n.addr().is_ipv4() { 32 } else { 128 };
                let len = (n.prefix_len() as u16
                    + EXTRA_LEN[c.extra as usize % EXTRA_LEN.len()] as u16)
                    .min(max) as u8;
                let s = trunc(inside(&n, host_bits(c.host, n.addr().is_ipv6())), len);
                if zone_of(&zones, &s) == Some(zone) && family_ok(&s) && !out.contains(&s) {
                    out.push(s);
                }
            }
            out
        };
        let sources = cidrs(&r.sources, from);
        let mut dests = cidrs(&r.dests, to);
        let only =
            |l: &[IpNet], v4: bool| !l.is_empty() && l.iter().all(|n| n.addr().is_ipv4() == v4);
        if (only(&sources, true) && only(&dests, false))
            || (only(&sources, false) && only(&dests, true))
        {
            dests.clear(); // a packet has one family: such a rule could never match
        }
        let ports = if matches!(proto, "tcp" | "udp") {
            r.ports
                .iter()
                .map(|p| {
                    let lo = PORTS.get(p.pick as usize).copied().unwrap_or(p.raw.max(1));
                    (lo, lo.saturating_add(SPANS[p.span as usize % SPANS.len()]))
                })
                .collect()
        } else {
            vec![]
        };
        let mut macs: Vec<usize> = r.macs.iter().map(|m| *m as usize % MACS.len()).collect();
        macs.sort_unstable();
        macs.dedup();
        rules.push(RuleSpec {
            from,
            to,
            proto,
            ports,
            sources,
            dests,
            macs,
            mode: r.mode % 3,
        });
    }
    Spec {
        audit: g.audit,
        defaults: g.defaults,
        zones,
        rules,
    }
}

fn toml(s: &Spec) -> String {
    let allow = |b: bool| if b { "allow" } else { "deny" };
    let list = |items: Vec<String>| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut t = String::new();
    let mode = if s.audit { "audit" } else { "enforce" };
    writeln!(t, "version = 1\nmode = \"{mode}\"\n").unwrap();
    let (intra, unknown, frags) = s.defaults;
    writeln!(
        t,
        "[defaults]\nintra_zone = \"{}\"\nunknown = \"{}\"\nfragments = \"{}\"\n",
        allow(intra),
        allow(unknown),
        allow(frags)
    )
    .unwrap();
    for (i, z) in s.zones.iter().enumerate() {
        let shared = z.ifaces[0].1;
        let field = z.vlan_field && shared != 0 && z.ifaces.iter().all(|i| i.1 == shared);
        let names = z
            .ifaces
            .iter()
            .map(|&(n, v)| {
                if v == 0 || field {
                    IFACES[n].to_string()
                } else {
                    format!("{}.{v}", IFACES[n])
                }
            })
            .collect();
        writeln!(
            t,
            "[[zones]]\nname = \"z{i}\"\ninterfaces = [{}]",
            list(names)
        )
        .unwrap();
        if field {
            writeln!(t, "vlan = {shared}").unwrap();
        }
        let crit = if z.critical { "critical" } else { "high" };
        writeln!(
            t,
            "networks = [{}]\ncriticality = \"{crit}\"\n",
            list(z.nets.iter().map(|n| n.to_string()).collect())
        )
        .unwrap();
    }
    for (i, r) in s.rules.iter().enumerate() {
        writeln!(
            t,
            "[[rules]]\nname = \"r{i}\"\nfrom = \"z{}\"\nto = \"z{}\"\nprotocol = \"{}\"",
            r.from, r.to, r.proto
        )
        .unwrap();
        let ports = r
            .ports
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        let fields: [(&str, Vec<String>); 4] = [
            ("ports", ports),
            ("sources", r.sources.iter().map(|n| n.to_string()).collect()),
            (
                "destinations",
                r.dests.iter().map(|n| n.to_string()).collect(),
            ),
            (
                "source_macs",
                r.macs.iter().map(|&m| mac_text(MACS[m])).collect(),
            ),
        ];
        for (key, items) in fields {
            if !items.is_empty() {
                writeln!(t, "{key} = [{}]", list(items)).unwrap();
            }
        }
        match r.mode {
            1 => writeln!(t, "mode = \"enforce\"").unwrap(),
            2 => writeln!(t, "mode = \"audit\"").unwrap(),
            _ => {}
        }
        writeln!(t, "acknowledge = \"differential test\"\n").unwrap();
    }
    t
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn check_policy(text: &str) -> Result<Policy, String> {
    validate::check_str("differential.toml".as_ref(), text, &OfflineEnvironment)
        .map(|(p, _)| p)
        .map_err(|d| format!("{d:?}"))
}

// =======================================================================================
// Generated frames and steps: raw choices, resolved against the policy in force and the
// frames sent so far (`Resolver`).

#[derive(Clone, Copy, Debug)]
enum Ingress {
    /// Interface entry `iface` of zone `zone` (indices wrap).
    Zone { zone: u8, iface: u8 },
    /// Any interface of the pool with any VLAN (often no zone's).
    Pool { iface: u8, vlan: u8 },
}

#[derive(Clone, Copy, Debug)]
enum AddrGen {
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
enum PortPick {
    Rule(u8, u8, u16),
    Common(u8),
    Random(u16),
    /// Chosen by `Resolver::aim`.
    Exact(u16),
}

/// Aim a packet at a rule (see `Resolver::aim`).
#[derive(Clone, Copy, Debug)]
struct Target {
    rule: u8,
    pick: u8,
    host: HostGen,
    perturb: u8,
}

/// Where a packet goes and what it carries, before its shape is applied.
struct Aim {
    iface: String,
    vlan: u16,
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    mac: [u8; 6],
    l4: L4Gen,
}

fn mac_of(pick: u8) -> [u8; 6] {
    match pick {
        m @ 0..=2 => MACS[m as usize],
        3..=5 => HOST_MAC,
        m => [0x02, 0, 0, 0, 0x77, m],
    }
}

#[derive(Clone, Copy, Debug)]
enum L4Gen {
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
enum FragGen {
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
struct ExtGen {
    kind: u8,
    len: u8,
    /// Routing header: routing type and segments left (0: the route is used up).
    routing: (u8, u8),
}

/// IPv4 options: none, NOP words, or a list that may hold a (loose, strict) source route,
/// record route or timestamp, with right or broken lengths.
#[derive(Clone, Debug)]
enum V4Opts {
    Nops(u8),
    List(Vec<(u8, u8, u8)>),
}

/// `(kind, length, pointer)` items as option bytes: EOL and NOP are one byte, the others
/// carry `length` bytes in all (a broken length stays as written), then EOL padding to a
/// multiple of 4, 40 bytes at most.
fn v4_option_bytes(items: &[(u8, u8, u8)]) -> Vec<u8> {
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
struct Shape {
    /// Inner VLAN tags (raw TCI) after the ingress's own.
    inner_tags: Vec<u16>,
    /// Outer TPID 802.1ad instead of 802.1Q.
    qinq: bool,
    /// Untagged ingress sent as priority-tagged (VID 0).
    prio_tag: bool,
    pcp: u8,
    v4_opts: V4Opts,
    exts: Vec<ExtGen>,
    frag: FragGen,
    frag_pos: u8,
    /// Ethernet padding after the IP datagram.
    pad: u8,
    corrupt: Option<(u16, u8)>,
    hop255: bool,
    payload: u8,
}

#[derive(Clone, Debug)]
struct PktGen {
    target: Option<Target>,
    ingress: Ingress,
    v6: bool,
    src: AddrGen,
    dst: AddrGen,
    mac: u8,
    l4: L4Gen,
    shape: Shape,
}

#[derive(Clone, Debug)]
enum StepGen {
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
struct Case {
    policy: PolicyGen,
    mutation: MutGen,
    steps: Vec<StepGen>,
}

/// What a case comes down to, and what the regression files hold.
#[derive(Clone, Debug, PartialEq)]
enum Op {
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
struct Sent {
    iface: String,
    /// Ingress zone id (under the policy it was sent under).
    zone: u8,
    tags: Vec<u16>,
    qinq: bool,
    frame: Frame,
    /// Fragment identification, when the frame is a fragment.
    frag_id: Option<u32>,
    /// A first fragment (offset 0, more fragments).
    first: bool,
    bytes: Vec<u8>,
}

struct Resolver<'p> {
    policies: &'p [Policy],
    cur: usize,
    history: Vec<Sent>,
    ops: Vec<Op>,
    advances: usize,
    reloads: usize,
}

impl Case {
    /// The two policies' text and the concrete operations.
    fn resolve(&self) -> Result<(Vec<String>, Vec<Op>), String> {
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

fn port_of(l4: &[u8], at: usize) -> u16 {
    l4.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

/// The reverse of `s` (ports swapped; an echo request answered, an echo reply asked).
fn reverse(s: &Frame, flags: u8) -> Frame {
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

impl Resolver<'_> {
    fn policy(&self) -> &Policy {
        &self.policies[self.cur]
    }

    fn nth_back(&self, back: u8) -> Option<Sent> {
        let n = self.history.len();
        (n > 0).then(|| self.history[n - 1 - back as usize % n].clone())
    }

    /// (interface, VLAN) of entry `pick` of zone id `zone`.
    fn zone_iface(&self, zone: u8, pick: u8) -> (String, u16) {
        let ifs = &self.policy().zones[zone as usize - 1].interfaces;
        let i = &ifs[pick as usize % ifs.len()];
        (i.name.clone(), i.vlan.unwrap_or(0))
    }

    /// Zone id an address leads to (a link-scoped one stays on `link_zone`).
    fn addr_zone(&self, a: IpAddr, link_zone: u8) -> u8 {
        if model::link_scoped(a, false) {
            link_zone
        } else {
            model::addr_zone(self.policy(), a)
        }
    }

    fn nets_of(&self, zone: usize, v6: bool) -> Vec<IpNet> {
        self.policy().zones.get(zone).map_or(vec![], |z| {
            z.networks
                .iter()
                .filter(|n| n.addr().is_ipv6() == v6)
                .copied()
                .collect()
        })
    }

    fn pick_in(&self, nets: &[IpNet], pick: u8, h: HostGen, v6: bool) -> IpAddr {
        match nets.get(pick as usize % nets.len().max(1)) {
            Some(n) => inside(n, host_bits(h, v6)),
            None => anchor(v6, h.anchor.unwrap_or(h.low as u8)),
        }
    }

    /// An address from `nets` whose longest-prefix zone is `zone` (nested prefixes of other
    /// zones take most of a wide network): a few tries, else the first.
    fn addr_in_zone(&self, zone: u8, nets: &[IpNet], pick: u8, h: HostGen, v6: bool) -> IpAddr {
        let mut first = None;
        for k in 0..8u8 {
            let hk = HostGen {
                anchor: h.anchor.map(|a| a.wrapping_add(k * 5)),
                low: h.low.wrapping_add(
                    (k as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                ),
            };
            let a = self.pick_in(nets, pick.wrapping_add(k), hk, v6);
            if self.addr_zone(a, zone) == zone {
                return a;
            }
            first.get_or_insert(a);
        }
        first.expect("eight tries")
    }

    /// A packet aimed at rule `t.rule` (its zones, addresses, protocol, port and MAC), with
    /// one field sometimes pushed off it; `None` without rules.
    fn aim(&self, g: &PktGen, t: Target) -> Option<Aim> {
        let p = self.policy();
        let rule = p.rules.get(t.rule as usize % p.rules.len().max(1))?;
        let (fz, tz) = (rule.from as u8 + 1, rule.to as u8 + 1);
        let fits =
            |l: &[IpNet], v6: bool| l.is_empty() || l.iter().any(|n| n.addr().is_ipv6() == v6);
        let v6 = match rule.protocol {
            Protocol::Icmp => false,
            Protocol::Icmpv6 => true,
            _ if fits(&rule.sources, g.v6) && fits(&rule.destinations, g.v6) => g.v6,
            _ => !g.v6,
        };
        let (iface, vlan) = self.zone_iface(fz, t.pick);
        let list = |l: &[IpNet], zone: u8| {
            let l: Vec<IpNet> = l
                .iter()
                .filter(|n| n.addr().is_ipv6() == v6)
                .copied()
                .collect();
            if l.is_empty() {
                self.nets_of(zone as usize - 1, v6)
            } else {
                l
            }
        };
        let mut src = self.addr_in_zone(fz, &list(&rule.sources, fz), t.pick, t.host, v6);
        let dhost = HostGen {
            anchor: t.host.anchor.map(|a| a.wrapping_add(13)),
            low: t.host.low.rotate_left(29),
        };
        let dst = self.addr_in_zone(tz, &list(&rule.destinations, tz), t.pick / 3, dhost, v6);
        let mut dport = match rule.ports.get(t.pick as usize % rule.ports.len().max(1)) {
            Some(r) => r.lo + ((t.host.low as u32) % (r.hi - r.lo + 1) as u32) as u16,
            None => PORTS[t.pick as usize % PORTS.len()],
        };
        let mut mac = match rule
            .source_macs
            .get(t.pick as usize % rule.source_macs.len().max(1))
        {
            Some(m) => *m,
            None => mac_of(g.mac),
        };
        let (sport, flags) = match g.l4 {
            L4Gen::Tcp { sport, flags, .. } => (sport, flags),
            L4Gen::Udp { sport, .. } => (sport, SYN),
            _ => (40_000 + t.pick as u16, SYN),
        };
        match t.perturb % 10 {
            7 => mac = [0x02, 0, 0, 0, 0x66, 0x01],
            8 => {
                dport = rule
                    .ports
                    .last()
                    .map_or(dport ^ 1, |r| r.hi.wrapping_add(1))
            }
            9 => {
                let other = fz as usize % p.zones.len();
                src = self.addr_in_zone(
                    other as u8 + 1,
                    &self.nets_of(other, v6),
                    t.pick,
                    t.host,
                    v6,
                );
            }
            _ => {}
        }
        let l4 = match (rule.protocol, g.l4) {
            (Protocol::Tcp, _) => L4Gen::Tcp {
                sport,
                dport: PortPick::Exact(dport),
                flags,
                opt_words: 0,
            },
            (Protocol::Udp, _) => L4Gen::Udp {
                sport,
                dport: PortPick::Exact(dport),
            },
            (Protocol::Icmp | Protocol::Icmpv6, l4 @ L4Gen::Icmp { .. }) => l4,
            (Protocol::Icmp | Protocol::Icmpv6, _) => L4Gen::Icmp {
                ty: 0,
                code: 0,
                id: t.pick as u16,
            },
            (Protocol::Any, l4) => l4,
        };
        Some(Aim {
            iface,
            vlan,
            v6,
            src,
            dst,
            mac,
            l4,
        })
    }

    /// A packet from the generator's raw choices alone.
    fn wander(&self, g: &PktGen) -> Aim {
        let (iface, vlan) = self.ingress(g.ingress);
        let zone = model::ingress_zone(self.policy(), &iface, vlan);
        let src = self.addr(g.src, g.v6, zone);
        let dst = self.addr(g.dst, g.v6, zone);
        Aim {
            iface,
            vlan,
            v6: g.v6,
            src,
            dst,
            mac: mac_of(g.mac),
            l4: g.l4,
        }
    }

    fn addr(&self, g: AddrGen, v6: bool, ingress_zone: u8) -> IpAddr {
        let p = self.policy();
        let nz = p.zones.len();
        match g {
            AddrGen::Own(n, h) => {
                let z = if ingress_zone == 0 {
                    0
                } else {
                    ingress_zone as usize - 1
                };
                self.addr_in_zone(z as u8 + 1, &self.nets_of(z, v6), n, h, v6)
            }
            AddrGen::Zone(z, n, h) => {
                let z = z as usize % nz;
                self.addr_in_zone(z as u8 + 1, &self.nets_of(z, v6), n, h, v6)
            }
            AddrGen::RuleSrc(r, i, h) | AddrGen::RuleDst(r, i, h) => {
                let Some(rule) = p.rules.get(r as usize % p.rules.len().max(1)) else {
                    return self.pick_in(&self.nets_of(r as usize % nz, v6), i, h, v6);
                };
                let (list, zone) = match g {
                    AddrGen::RuleSrc(..) => (&rule.sources, rule.from),
                    _ => (&rule.destinations, rule.to),
                };
                let cidrs: Vec<IpNet> = list
                    .iter()
                    .filter(|n| n.addr().is_ipv6() == v6)
                    .copied()
                    .collect();
                let cidrs = if cidrs.is_empty() {
                    self.nets_of(zone, v6)
                } else {
                    cidrs
                };
                self.addr_in_zone(zone as u8 + 1, &cidrs, i, h, v6)
            }
            AddrGen::Special(k) => {
                let v4 = [
                    "0.0.0.0",
                    "255.255.255.255",
                    "224.0.0.251",
                    "169.254.1.1",
                    "127.0.0.1",
                    "224.1.2.3",
                    "10.255.255.255",
                    "224.0.1.1",
                ];
                let v6s = [
                    "::",
                    "::1",
                    "fe80::1",
                    "ff02::1",
                    "ff05::2",
                    "fe80::ff:fe00:1",
                    "::ffff:10.0.0.1",
                    "ff01::1",
                ];
                let list = if v6 { &v6s } else { &v4 };
                list[k as usize % list.len()].parse().unwrap()
            }
            AddrGen::Random(x) => {
                if v6 {
                    IpAddr::V6(Ipv6Addr::from(x))
                } else {
                    IpAddr::V4(Ipv4Addr::from(x as u32))
                }
            }
        }
    }

    fn port(&self, pick: PortPick) -> u16 {
        let p = self.policy();
        match pick {
            PortPick::Rule(r, i, off) => {
                let ranges = p
                    .rules
                    .get(r as usize % p.rules.len().max(1))
                    .map(|r| &r.ports[..])
                    .unwrap_or(&[]);
                match ranges.get(i as usize % ranges.len().max(1)) {
                    Some(pr) => pr.lo + (off as u32 % (pr.hi - pr.lo + 1) as u32) as u16,
                    None => PORTS[(r as usize + i as usize) % PORTS.len()],
                }
            }
            PortPick::Common(k) => PORTS[k as usize % PORTS.len()],
            PortPick::Random(x) | PortPick::Exact(x) => x,
        }
    }

    fn ingress(&self, g: Ingress) -> (String, u16) {
        match g {
            Ingress::Zone { zone, iface } => {
                self.zone_iface(zone % self.policy().zones.len() as u8 + 1, iface)
            }
            Ingress::Pool { iface, vlan } => (
                IFACES[iface as usize % IFACES.len()].to_string(),
                ANY_VLANS[vlan as usize % ANY_VLANS.len()],
            ),
        }
    }

    fn build(&self, g: &PktGen) -> Sent {
        let Aim {
            iface,
            vlan,
            v6,
            src,
            dst,
            mac,
            l4,
        } = g
            .target
            .and_then(|t| self.aim(g, t))
            .unwrap_or_else(|| self.wander(g));
        let zone = model::ingress_zone(self.policy(), &iface, vlan);
        let s = &g.shape;
        let mut f = Frame::new(src, dst)
            .mac(mac)
            .hop_limit(if s.hop255 { 255 } else { 64 });
        f = match l4 {
            L4Gen::Tcp {
                sport,
                dport,
                flags,
                opt_words,
            } => {
                let mut f = f.tcp(sport, self.port(dport), flags);
                let w = opt_words.min(10);
                if w > 0 {
                    f.l4[12] = (5 + w) << 4;
                    f.l4.extend(std::iter::repeat_n(1u8, w as usize * 4));
                }
                f
            }
            L4Gen::Udp { sport, dport } => f.udp(sport, self.port(dport)),
            L4Gen::Icmp { ty, code, id } => {
                let types = if v6 { &ICMP6_TYPES } else { &ICMP4_TYPES };
                let ty = if ty % 8 == 7 {
                    ty
                } else {
                    types[ty as usize % types.len()]
                };
                f.icmp(ty, code, id)
            }
            L4Gen::Other { proto, len } => {
                let p = OTHER_PROTOS.get(proto as usize).copied().unwrap_or(proto);
                f.proto(p, len as usize)
            }
        };
        f = f.payload(s.payload as usize % 48);
        let mut frag_id = None;
        if v6 {
            let frag = match s.frag {
                FragGen::None => None,
                FragGen::First(id) => Some((0, true, id)),
                FragGen::Later { offset, more, id } => Some((offset & 0x1fff, more, id)),
                FragGen::Atomic(id) => Some((0, false, id)),
            };
            // The extension headers with the fragment header (`None`) at its place.
            let mut chain: Vec<Option<ExtGen>> = s.exts.iter().copied().map(Some).collect();
            if frag.is_some() {
                chain.insert(s.frag_pos as usize % (s.exts.len() + 1), None);
            }
            for e in chain {
                f = match (e, frag) {
                    (None, Some((o, m, id))) => f.v6_frag(o, m, id),
                    (Some(e), _) if e.kind == 51 => {
                        // AH counts its length in 4-byte units, minus 2.
                        let mut b = vec![0u8; (e.len as usize + 2) * 4];
                        b[1] = e.len;
                        f.v6_ext.push((51, b));
                        f
                    }
                    (Some(e), _) if e.kind == 43 => {
                        let mut b = vec![0u8; 8 + e.len as usize * 8];
                        b[1] = e.len;
                        (b[2], b[3]) = e.routing;
                        f.v6_ext.push((43, b));
                        f
                    }
                    (Some(e), _) => f.v6_ext(e.kind, e.len),
                    (None, None) => f,
                };
            }
            frag_id = frag.map(|f| f.2);
        } else {
            match &s.v4_opts {
                V4Opts::Nops(0) => {}
                V4Opts::Nops(n) => f = f.options(*n as usize % 11),
                V4Opts::List(items) => f.v4_options = v4_option_bytes(items),
            }
            let frag = match s.frag {
                FragGen::None => None,
                FragGen::First(id) => Some((0, true, id)),
                FragGen::Later { offset, more, id } => Some((offset & 0x1fff, more, id)),
                FragGen::Atomic(id) => Some((0, false, id)),
            };
            if let Some((o, m, id)) = frag {
                f = f.v4_frag(o, m, id as u16);
                frag_id = Some(id as u16 as u32);
            }
        }
        let mut tags = vec![];
        if vlan != 0 {
            tags.push(vlan | (s.pcp as u16 & 7) << 13);
        } else if s.prio_tag {
            tags.push((s.pcp as u16 & 7).max(1) << 13);
        }
        tags.extend(&s.inner_tags);
        let first = matches!(s.frag, FragGen::First(_));
        let mut sent = Sent {
            iface,
            zone,
            tags,
            qinq: s.qinq,
            frame: f,
            frag_id,
            first,
            bytes: vec![],
        };
        sent.bytes = self.bytes(&sent, s.pad, s.corrupt);
        sent
    }

    fn bytes(&self, s: &Sent, pad: u8, corrupt: Option<(u16, u8)>) -> Vec<u8> {
        let mut f = s.frame.clone();
        f.vlans = s.tags.clone();
        let mut b = f.bytes();
        if s.qinq && !s.tags.is_empty() {
            b[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        }
        // Padding: up to the Ethernet minimum of 60, or some bytes beyond.
        match pad {
            0 => {}
            1..=127 => b.resize(b.len().max(60), 0),
            p => b.resize(b.len() + (p as usize - 127) % 24, 0),
        }
        if let Some((at, x)) = corrupt {
            let n = b.len();
            b[at as usize % n] ^= x;
        }
        b.truncate(MAX_FRAME);
        b
    }

    fn send(&mut self, s: Sent) {
        self.ops.push(Op::Send {
            iface: s.iface.clone(),
            bytes: s.bytes.clone(),
        });
        self.history.push(s);
    }

    /// `frame` sent like `like` (same interface and tags).
    fn send_like(&mut self, like: &Sent, frame: Frame) {
        let mut s = Sent {
            frame,
            frag_id: None,
            first: false,
            bytes: vec![],
            ..like.clone()
        };
        s.bytes = self.bytes(&s, 0, None);
        self.send(s);
    }

    /// `frame` sent into the zone of address `towards` (entry `via`), or back out of
    /// `fallback`'s interface when that address is in no zone.
    fn send_towards(&mut self, towards: IpAddr, fallback: &Sent, via: u8, frame: Frame) {
        let zone = self.addr_zone(towards, fallback.zone);
        let mut s = Sent {
            frame,
            frag_id: None,
            first: false,
            bytes: vec![],
            ..fallback.clone()
        };
        if zone != 0 {
            let (iface, vlan) = self.zone_iface(zone, via);
            s.iface = iface;
            s.tags = if vlan == 0 { vec![] } else { vec![vlan] };
            s.zone = zone;
        }
        s.frame.src_mac = match via % 4 {
            3 => HOST_MAC,
            m => MACS[m as usize],
        };
        s.bytes = self.bytes(&s, 0, None);
        self.send(s);
    }

    fn step(&mut self, g: &StepGen) {
        match g {
            StepGen::Send(p) => {
                let s = self.build(p);
                self.send(s);
            }
            StepGen::Handshake { pkt, close } => {
                let mut pkt = pkt.clone();
                let (sport, dport) = match pkt.l4 {
                    L4Gen::Tcp { sport, dport, .. } | L4Gen::Udp { sport, dport } => (sport, dport),
                    _ => (40000, PortPick::Rule(0, 0, 0)),
                };
                pkt.l4 = L4Gen::Tcp {
                    sport,
                    dport,
                    flags: SYN,
                    opt_words: 0,
                };
                pkt.shape.frag = FragGen::None;
                pkt.shape.corrupt = None;
                let syn = self.build(&pkt);
                self.send(syn.clone());
                let reply = |f| reverse(&syn.frame, f);
                // A rule of another protocol makes this a UDP or ICMP conversation.
                let orig = |f| {
                    let mut o = syn.frame.clone();
                    if o.proto == TCP && o.l4.len() >= 20 {
                        o.l4[13] = f;
                    }
                    o
                };
                self.send_towards(syn.frame.dst, &syn, 0, reply(SYN | ACK));
                self.send_like(&syn, orig(ACK));
                match close % 5 {
                    1 => {
                        self.send_like(&syn, orig(FIN | ACK));
                        self.send_towards(syn.frame.dst, &syn, 0, reply(FIN | ACK));
                        self.send_like(&syn, orig(ACK));
                    }
                    2 => self.send_like(&syn, orig(RST)),
                    3 => self.send_towards(syn.frame.dst, &syn, 0, reply(RST | ACK)),
                    4 => self.send_like(&syn, orig(FIN | ACK)),
                    _ => {}
                }
            }
            StepGen::Reply { back, flags, via } => {
                if let Some(s) = self.nth_back(*back) {
                    let f = reverse(&s.frame, *flags);
                    self.send_towards(s.frame.dst, &s, *via, f);
                }
            }
            StepGen::Again { back, flags } => {
                if let Some(s) = self.nth_back(*back) {
                    let mut f = s.frame.clone();
                    if f.proto == TCP && f.l4.len() >= 20 {
                        f.l4[13] = *flags;
                    }
                    self.send_like(&s, f);
                }
            }
            StepGen::IcmpError {
                back,
                reply_dir,
                ty,
                code,
                router,
                cut,
            } => {
                let Some(s) = self.nth_back(*back) else {
                    return;
                };
                let quoted = if *reply_dir {
                    reverse(&s.frame, ACK)
                } else {
                    s.frame.clone()
                };
                let v6 = quoted.src.is_ipv6();
                let from = match router % 3 {
                    0 => quoted.dst,
                    1 => {
                        let z = self.addr_zone(quoted.dst, s.zone);
                        let nets = if z == 0 {
                            vec![]
                        } else {
                            self.nets_of(z as usize - 1, v6)
                        };
                        self.pick_in(
                            &nets,
                            *ty,
                            HostGen {
                                anchor: None,
                                low: 1,
                            },
                            v6,
                        )
                    }
                    _ => anchor(v6, *ty),
                };
                let types: &[u8] = if v6 {
                    &[1, 3, 2, 4, 1, 129]
                } else {
                    &[3, 11, 12, 3, 5, 0]
                };
                let mut f = Frame::new(from, quoted.src).icmp_error(
                    types[*ty as usize % types.len()],
                    *code,
                    &quoted,
                );
                let keep = f.l4.len().saturating_sub(*cut as usize % 24);
                f.l4.truncate(keep);
                let towards = if self.addr_zone(from, s.zone) != 0 {
                    from
                } else {
                    quoted.dst
                };
                self.send_towards(towards, &s, *ty, f);
            }
            StepGen::Fragmented { pkt, id, n } => {
                let mut pkt = pkt.clone();
                pkt.shape.frag = FragGen::First(*id);
                pkt.shape.corrupt = None;
                let first = self.build(&pkt);
                self.send(first);
                let n = *n % 4;
                for i in 0..n {
                    let later = StepGen::LaterFrag {
                        back: 0,
                        offset: 2 + 3 * i as u16,
                        more: i + 1 < n,
                        variant: 0,
                    };
                    self.step(&later);
                }
            }
            StepGen::LaterFrag {
                back,
                offset,
                more,
                variant,
            } => {
                // Mostly a datagram whose first fragment was sent.
                let firsts: Vec<&Sent> = self.history.iter().rev().filter(|s| s.first).collect();
                let s = match firsts.get(*back as usize % firsts.len().max(1)) {
                    Some(s) if *variant < 200 => (*s).clone(),
                    _ => match self.nth_back(*back) {
                        Some(s) => s,
                        None => return,
                    },
                };
                let id = s.frag_id.unwrap_or(*back as u32);
                let offset = (*offset & 0x1fff).max(1);
                let mut f = Frame::new(s.frame.src, s.frame.dst).mac(s.frame.src_mac);
                // 0–4: the same host and way in; 5: another MAC; 6: another protocol (IPv4) or
                // a destination-options header after the fragment header (IPv6); 7: another way in.
                let variant = *variant % 8;
                if variant == 5 {
                    f.src_mac = [0x02, 0, 0, 0, 0x77, 0x01];
                }
                let proto = if variant == 6 {
                    UDP ^ TCP ^ s.frame.proto
                } else {
                    s.frame.proto
                };
                if s.frame.src.is_ipv4() {
                    f = f
                        .proto(proto, 8 + offset as usize % 24)
                        .v4_frag(offset, *more, id as u16);
                } else {
                    let nh = if variant == 6 { 60 } else { proto };
                    f = f.v6_frag(offset, *more, id).proto(nh, 16);
                }
                if variant == 7 {
                    self.send_towards(s.frame.dst, &s, 0, f);
                } else {
                    self.send_like(&s, f);
                }
            }
            StepGen::Neighbor {
                kind,
                zone,
                iface,
                host,
            } => {
                let zone = zone % self.policy().zones.len() as u8 + 1;
                let (ifname, vlan) = self.zone_iface(zone, *iface);
                let tags = if vlan == 0 { vec![] } else { vec![vlan] };
                let own: Ipv6Addr = format!("fe80::ff:fe00:{host:x}").parse().unwrap();
                let global = self.addr(
                    AddrGen::Own(
                        *host,
                        HostGen {
                            anchor: Some(*host),
                            low: 1,
                        },
                    ),
                    true,
                    zone,
                );
                let nd = |dst: IpAddr, ty: u8, hop: u8| {
                    Frame::new(IpAddr::V6(own), dst)
                        .icmp(ty, 0, 0)
                        .hop_limit(hop)
                };
                let frame = match kind % 7 {
                    0 => None,
                    1 => Some(nd("ff02::1:ff00:1".parse().unwrap(), 135, 255)),
                    2 => Some(nd("fe80::1".parse().unwrap(), 136, 255)),
                    3 => Some(nd("ff02::2".parse().unwrap(), 133, 255)),
                    4 => Some(nd(global, 135, 255)),
                    5 => Some(nd("ff02::1:ff00:1".parse().unwrap(), 135, 64)),
                    _ => Some(nd("ff02::1".parse().unwrap(), 134, 255)),
                };
                let bytes = match frame {
                    Some(f) => {
                        let mut f = f;
                        f.vlans = tags;
                        f.bytes()
                    }
                    None => {
                        let mut b = if kind % 2 == 0 {
                            common::frames::arp()
                        } else {
                            common::frames::non_ip()
                        };
                        if vlan != 0 {
                            let mut tag = 0x8100u16.to_be_bytes().to_vec();
                            tag.extend_from_slice(&vlan.to_be_bytes());
                            b.splice(12..12, tag);
                        }
                        b
                    }
                };
                self.ops.push(Op::Send {
                    iface: ifname,
                    bytes,
                });
            }
            StepGen::Advance(k) => {
                if self.advances < MAX_ADVANCES {
                    self.advances += 1;
                    self.ops.push(Op::Advance(
                        ADVANCES_MS[*k as usize % ADVANCES_MS.len()] * 1_000_000,
                    ));
                }
            }
            StepGen::Reload => {
                if self.reloads < MAX_RELOADS {
                    self.reloads += 1;
                    self.cur = 1 - self.cur;
                    self.ops.push(Op::Reload(self.cur));
                }
            }
            StepGen::Truncate { back } => {
                if let Some(s) = self.nth_back(*back) {
                    self.ops.push(Op::Cuts {
                        iface: s.iface,
                        bytes: s.bytes,
                    });
                }
            }
        }
    }
}

// =======================================================================================
// Strategies.

fn host() -> BoxedStrategy<HostGen> {
    prop_oneof![
        3 => (any::<u8>(), 0u128..4).prop_map(|(a, low)| HostGen { anchor: Some(a), low }),
        1 => any::<u128>().prop_map(|low| HostGen { anchor: None, low }),
    ]
    .boxed()
}

fn zone_gen() -> BoxedStrategy<ZoneGen> {
    let net = (any::<bool>(), any::<u8>(), any::<u8>()).prop_map(|(v6, anchor, len)| NetGen {
        v6,
        anchor,
        len,
    });
    (
        vec(any::<u8>(), 1..=2),
        vec(net, 1..=3),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(slots, nets, default4, default6, critical, vlan_field)| ZoneGen {
                slots,
                nets,
                default4,
                default6,
                critical,
                vlan_field,
            },
        )
        .boxed()
}

fn rule_gen() -> BoxedStrategy<RuleGen> {
    let port = (0u8..14, any::<u8>(), any::<u16>()).prop_map(|(pick, span, raw)| PortGen {
        pick,
        span,
        raw,
    });
    let cidr = (any::<u8>(), any::<u8>(), host()).prop_map(|(net, extra, host)| CidrGen {
        net,
        extra,
        host,
    });
    (
        any::<u8>(),
        any::<u8>(),
        0u8..5,
        vec(port, 0..=3),
        vec(cidr.clone(), 0..=2),
        vec(cidr, 0..=2),
        prop_oneof![3 => Just(vec![]), 1 => vec(0u8..3, 1..=2)],
        0u8..3,
    )
        .prop_map(
            |(from, to, proto, ports, sources, dests, macs, mode)| RuleGen {
                from,
                to,
                proto,
                ports,
                sources,
                dests,
                macs,
                mode,
            },
        )
        .boxed()
}

/// Mostly up to 5 zones and 8 rules; sometimes 2–3 zones under 4–14 rules, where rules
/// overlap (candidate lists, MAC-bound and audit rules in front of enforcing ones).
fn policy_gen() -> BoxedStrategy<PolicyGen> {
    let shape = |zones: std::ops::RangeInclusive<usize>, rules: std::ops::RangeInclusive<usize>| {
        (
            vec(zone_gen(), zones),
            vec(rule_gen(), rules),
            prop::bool::weighted(0.25),
            any::<(bool, bool, bool)>(),
        )
            .prop_map(|(zones, rules, audit, defaults)| PolicyGen {
                zones,
                rules,
                audit,
                defaults,
            })
    };
    prop_oneof![3 => shape(2..=5, 0..=8), 1 => shape(2..=3, 4..=14)].boxed()
}

fn mut_gen() -> BoxedStrategy<MutGen> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        0u8..3,
        prop::bool::weighted(0.25),
        policy_gen(),
    )
        .prop_map(|(keep, flip, rotate, add, new_zones, alt)| MutGen {
            keep,
            flip,
            rotate,
            add,
            new_zones,
            alt,
        })
        .boxed()
}

fn addr_gen(src: bool) -> BoxedStrategy<AddrGen> {
    let (own, rsrc, rdst) = if src { (10, 4, 1) } else { (1, 1, 4) };
    prop_oneof![
        own => (any::<u8>(), host()).prop_map(|(n, h)| AddrGen::Own(n, h)),
        3 => (any::<u8>(), any::<u8>(), host()).prop_map(|(z, n, h)| AddrGen::Zone(z, n, h)),
        rsrc => (any::<u8>(), any::<u8>(), host()).prop_map(|(r, i, h)| AddrGen::RuleSrc(r, i, h)),
        rdst => (any::<u8>(), any::<u8>(), host()).prop_map(|(r, i, h)| AddrGen::RuleDst(r, i, h)),
        1 => any::<u8>().prop_map(AddrGen::Special),
        1 => any::<u128>().prop_map(AddrGen::Random),
    ]
    .boxed()
}

fn flags() -> BoxedStrategy<u8> {
    prop_oneof![
        Just(ACK),
        Just(SYN),
        Just(SYN | ACK),
        Just(FIN | ACK),
        Just(RST),
        Just(RST | ACK),
        any::<u8>()
    ]
    .boxed()
}

fn back() -> BoxedStrategy<u8> {
    prop_oneof![3 => 0u8..3, 1 => any::<u8>()].boxed()
}

fn frag_id() -> BoxedStrategy<u32> {
    prop_oneof![3 => 0u32..4, 1 => any::<u32>()].boxed()
}

fn frag_offset() -> BoxedStrategy<u16> {
    prop_oneof![
        Just(2u16),
        Just(1),
        Just(5),
        Just(185),
        Just(0x1fff),
        any::<u16>()
    ]
    .boxed()
}

fn pkt_gen() -> BoxedStrategy<PktGen> {
    let ingress = prop_oneof![
        9 => (any::<u8>(), any::<u8>()).prop_map(|(zone, iface)| Ingress::Zone { zone, iface }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(iface, vlan)| Ingress::Pool { iface, vlan }),
    ];
    let port = prop_oneof![
        4 => (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(r, i, o)| PortPick::Rule(r, i, o)),
        2 => any::<u8>().prop_map(PortPick::Common),
        1 => any::<u16>().prop_map(PortPick::Random),
    ]
    .boxed();
    let l4 = prop_oneof![
        5 => (any::<u16>(), port.clone(), flags(), prop_oneof![8 => Just(0u8), 1 => 1u8..=10])
            .prop_map(|(sport, dport, flags, opt_words)| L4Gen::Tcp { sport, dport, flags, opt_words }),
        4 => (any::<u16>(), port).prop_map(|(sport, dport)| L4Gen::Udp { sport, dport }),
        3 => (any::<u8>(), prop_oneof![4 => Just(0u8), 1 => any::<u8>()], any::<u16>())
            .prop_map(|(ty, code, id)| L4Gen::Icmp { ty, code, id }),
        1 => (any::<u8>(), 0u8..40).prop_map(|(proto, len)| L4Gen::Other { proto, len }),
    ];
    let routing = prop_oneof![3 => Just((0u8, 0u8)), 1 => (0u8..5, 0u8..4), 1 => any::<(u8, u8)>()];
    let ext = (
        prop_oneof![Just(0u8), Just(43), Just(60), Just(51)],
        prop_oneof![6 => Just(0u8), 2 => 1u8..4, 1 => 4u8..40],
        routing,
    )
        .prop_map(|(kind, len, routing)| ExtGen { kind, len, routing });
    let option = (
        prop_oneof![
            Just(1u8),
            Just(0),
            Just(131),
            Just(137),
            Just(7),
            Just(68),
            any::<u8>()
        ],
        prop_oneof![4 => Just(7u8), 1 => Just(3), 1 => Just(11), 1 => 0u8..3, 1 => any::<u8>()],
        prop_oneof![3 => Just(4u8), 1 => any::<u8>()],
    );
    let v4_opts = prop_oneof![
        6 => Just(V4Opts::Nops(0)),
        1 => (1u8..=10).prop_map(V4Opts::Nops),
        2 => vec(option, 1..=4).prop_map(V4Opts::List),
    ];
    let frag = prop_oneof![
        8 => Just(FragGen::None),
        2 => frag_id().prop_map(FragGen::First),
        1 => (frag_offset(), any::<bool>(), frag_id()).prop_map(|(offset, more, id)| FragGen::Later { offset, more, id }),
        1 => frag_id().prop_map(FragGen::Atomic),
    ];
    let shape = (
        prop_oneof![8 => Just(vec![]), 2 => vec(any::<u16>(), 1..=2)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        any::<u8>(),
        v4_opts,
        prop_oneof![6 => Just(vec![]), 3 => vec(ext.clone(), 1..=3), 1 => vec(ext, 4..=8)],
        frag,
        any::<u8>(),
        prop_oneof![6 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![9 => Just(None), 1 => (any::<u16>(), 1u8..).prop_map(Some)],
        prop::bool::weighted(0.1),
        prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
    )
        .prop_map(
            |(
                inner_tags,
                qinq,
                prio_tag,
                pcp,
                v4_opts,
                exts,
                frag,
                frag_pos,
                pad,
                corrupt,
                hop255,
                payload,
            )| Shape {
                inner_tags,
                qinq,
                prio_tag,
                pcp,
                v4_opts,
                exts,
                frag,
                frag_pos,
                pad,
                corrupt,
                hop255,
                payload,
            },
        );
    let target =
        (any::<u8>(), any::<u8>(), host(), any::<u8>()).prop_map(|(rule, pick, host, perturb)| {
            Target {
                rule,
                pick,
                host,
                perturb,
            }
        });
    (
        prop_oneof![2 => Just(None), 3 => target.prop_map(Some)],
        ingress,
        prop::bool::weighted(0.4),
        addr_gen(true),
        addr_gen(false),
        prop_oneof![3 => 0u8..3, 2 => 3u8..6, 1 => any::<u8>()],
        l4,
        shape,
    )
        .prop_map(|(target, ingress, v6, src, dst, mac, l4, shape)| PktGen {
            target,
            ingress,
            v6,
            src,
            dst,
            mac,
            l4,
            shape,
        })
        .boxed()
}

fn step_gen() -> BoxedStrategy<StepGen> {
    prop_oneof![
        36 => pkt_gen().prop_map(StepGen::Send),
        12 => (pkt_gen(), 0u8..5).prop_map(|(pkt, close)| StepGen::Handshake { pkt, close }),
        14 => (back(), flags(), any::<u8>()).prop_map(|(back, flags, via)| StepGen::Reply { back, flags, via }),
        8 => (back(), flags()).prop_map(|(back, flags)| StepGen::Again { back, flags }),
        10 => (back(), any::<bool>(), any::<u8>(), prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0u8..3, prop_oneof![6 => Just(0u8), 1 => any::<u8>()])
            .prop_map(|(back, reply_dir, ty, code, router, cut)| StepGen::IcmpError { back, reply_dir, ty, code, router, cut }),
        6 => (pkt_gen(), frag_id(), any::<u8>()).prop_map(|(pkt, id, n)| StepGen::Fragmented { pkt, id, n }),
        6 => (back(), frag_offset(), any::<bool>(), any::<u8>())
            .prop_map(|(back, offset, more, variant)| StepGen::LaterFrag { back, offset, more, variant }),
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(kind, zone, iface, host)| StepGen::Neighbor { kind, zone, iface, host }),
        3 => any::<u8>().prop_map(StepGen::Advance),
        2 => Just(StepGen::Reload),
        2 => back().prop_map(|back| StepGen::Truncate { back }),
    ]
    .boxed()
}

fn case_gen() -> impl Strategy<Value = Case> {
    (policy_gen(), mut_gen(), vec(step_gen(), 1..=96)).prop_map(|(policy, mutation, steps)| Case {
        policy,
        mutation,
        steps,
    })
}

// =======================================================================================
// The comparison: one loaded program for the whole run, a fresh model per case.

#[derive(Default, Debug)]
struct Totals {
    cases: u64,
    frames: u64,
    cuts: u64,
    reloads: u64,
    advances: u64,
    advances_skipped: u64,
    corpus: u64,
    /// Generated policies that `compile` refused (capacity), so no case.
    rejected: u64,
    /// Model decisions by reason, to see what the generators reach.
    reasons: BTreeMap<String, u64>,
    apply_time: std::time::Duration,
}

enum RunError {
    /// The policy does not fit the data path (compile's capacity checks): not a case.
    Reject(String),
    Mismatch(String),
}

struct Engine {
    dp: Datapath,
    totals: Totals,
    /// Text of the policy in the active set: a case that starts with it needs no `apply`
    /// (shrinking reruns the same policy many times).
    active: Option<String>,
}

/// One case in progress.
struct Run {
    model: Model,
    /// Kernel generation = model generation + `gen_base`.
    gen_base: u32,
    /// Kernel global counters when the case started (they are never reset).
    base: GlobalCounters,
    /// Model counters at the last reload (zone-pair and rule counters are per policy set
    /// in the kernel and start at zero with each `apply`).
    at_reload: ModelCounters,
    /// The active set's zone-pair and rule counters when the case started without an
    /// `apply` (empty after one).
    set_base: ModelCounters,
    /// How far the model's clock is ahead of the kernel's (see `Engine::age`).
    offset: u64,
    /// Kernel counters after the last step.
    last: ModelCounters,
}

fn sub(a: Counter, b: Counter) -> Counter {
    Counter {
        packets: a.packets - b.packets,
        bytes: a.bytes - b.bytes,
    }
}

fn minus<K: Ord + Copy>(
    a: &BTreeMap<K, Counter>,
    b: &BTreeMap<K, Counter>,
) -> BTreeMap<K, Counter> {
    a.iter()
        .map(|(k, c)| (*k, sub(*c, b.get(k).copied().unwrap_or_default())))
        .filter(|(_, c)| c.packets > 0)
        .collect()
}

fn drop_label(i: u32) -> String {
    let (prefix, r) = if i >= DropReason::AUDIT_OFFSET {
        ("audit", i - DropReason::AUDIT_OFFSET)
    } else {
        ("drop", i)
    };
    let name = DropReason::ALL
        .iter()
        .find(|d| **d as u32 == r)
        .map_or("?", |d| d.label());
    format!("{prefix}:{name}")
}

fn pass_label(i: u32) -> String {
    format!(
        "pass:{}",
        PassReason::ALL
            .iter()
            .find(|p| **p as u32 == i)
            .map_or("?", |p| p.label())
    )
}

/// What moved between two counter snapshots, as labels.
fn moved(before: &ModelCounters, after: &ModelCounters) -> String {
    let mut out = vec![];
    for (k, c) in &after.drops {
        if before.drops.get(k) != Some(c) {
            out.push(drop_label(*k));
        }
    }
    for (k, c) in &after.passes {
        if before.passes.get(k) != Some(c) {
            out.push(pass_label(*k));
        }
    }
    for (k, c) in &after.flow_events {
        if before.flow_events.get(k) != Some(c) {
            out.push(format!("flow event {}", flow_event_label(*k)));
        }
    }
    for (k, c) in &after.rules {
        if before.rules.get(k) != Some(c) {
            out.push(format!("rule {k}"));
        }
    }
    for ((f, t, v), c) in &after.zone_pairs {
        if before.zone_pairs.get(&(*f, *t, *v)) != Some(c) {
            out.push(format!("zones {f}->{t} {}", v.label()));
        }
    }
    out.join(", ")
}

fn flow_event_label(e: u32) -> &'static str {
    FlowEvent::ALL
        .iter()
        .find(|x| **x as u32 == e)
        .map_or("?", |x| x.label())
}

fn counters_diff(kernel: &ModelCounters, model: &ModelCounters) -> String {
    fn side<K: Ord + Copy>(
        out: &mut String,
        name: impl Fn(K) -> String,
        k: &BTreeMap<K, Counter>,
        m: &BTreeMap<K, Counter>,
    ) {
        for key in k
            .keys()
            .chain(m.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let (a, b) = (
                k.get(key).copied().unwrap_or_default(),
                m.get(key).copied().unwrap_or_default(),
            );
            if a != b {
                writeln!(
                    out,
                    "    {}: kernel {}/{}B, model {}/{}B",
                    name(*key),
                    a.packets,
                    a.bytes,
                    b.packets,
                    b.bytes
                )
                .unwrap();
            }
        }
    }
    let mut out = String::new();
    side(&mut out, drop_label, &kernel.drops, &model.drops);
    side(&mut out, pass_label, &kernel.passes, &model.passes);
    side(
        &mut out,
        |e| format!("flow event {}", flow_event_label(e)),
        &kernel.flow_events,
        &model.flow_events,
    );
    side(
        &mut out,
        |r| format!("rule {r}"),
        &kernel.rules,
        &model.rules,
    );
    side(
        &mut out,
        |(f, t, v): (u8, u8, Verdict)| format!("zones {f}->{t} {}", v.label()),
        &kernel.zone_pairs,
        &model.zone_pairs,
    );
    out
}

fn describe(d: &Decision, audit: bool) -> String {
    let action = if d.xdp_pass(audit) {
        "XDP_PASS"
    } else {
        "XDP_DROP"
    };
    let kind = match d.outcome {
        model::Outcome::Pass(_) => "pass",
        model::Outcome::Drop(_) if d.audited_drop(audit) => "audit",
        model::Outcome::Drop(_) => "drop",
    };
    format!(
        "{action} {kind}:{} rule={:?} zones {}->{} {}",
        d.reason_label(),
        d.rule,
        d.from,
        d.to,
        d.verdict(audit).label()
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn addr_of(family: u8, a: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

impl Engine {
    fn new() -> Self {
        Engine {
            dp: Datapath::load().expect("load XDP program"),
            totals: Totals::default(),
            active: None,
        }
    }

    fn load(&mut self, text: &str) -> Result<Policy, RunError> {
        let policy =
            check_policy(text).map_err(|e| RunError::Mismatch(format!("invalid policy: {e}")))?;
        let compiled = compile::compile(&policy).map_err(|d| RunError::Reject(format!("{d:?}")))?;
        let t = Instant::now();
        self.active = None;
        self.dp
            .apply(&compiled, zone_agent::agent::ifindex)
            .expect("apply");
        self.active = Some(text.to_string());
        self.totals.apply_time += t.elapsed();
        Ok(policy)
    }

    /// Runs one case from a clean flow and fragment table.
    fn run(&mut self, policies: &[String], ops: &[Op]) -> Result<(), RunError> {
        let m = &mut self.dp.maps;
        for table in [&mut m.flows, &mut m.embryos] {
            let flows: Vec<FlowKey> = table.keys().filter_map(Result::ok).collect();
            for k in flows {
                table.remove(&k).expect("remove flow");
            }
        }
        let frags: Vec<FragKey> = self.dp.maps.frags.keys().filter_map(Result::ok).collect();
        for k in frags {
            self.dp
                .maps
                .frags
                .remove(&k)
                .expect("remove fragment entry");
        }
        let (policy, set_base) = if self.active.as_deref() == Some(policies[0].as_str()) {
            // Already enforcing: its set's counters run on from where the last case left them.
            let policy = check_policy(&policies[0]).map_err(RunError::Mismatch)?;
            let mut c = ModelCounters::default();
            self.set_counters(&policy, &mut c);
            (policy, c)
        } else {
            (self.load(&policies[0])?, ModelCounters::default())
        };
        let mut run = Run {
            model: Model::new(policy),
            gen_base: self.dp.generation - 1,
            base: self.dp.global_counters().expect("global counters"),
            set_base,
            at_reload: ModelCounters::default(),
            offset: 0,
            last: ModelCounters::default(),
        };
        self.totals.cases += 1;
        for (i, op) in ops.iter().enumerate() {
            let r = match op {
                Op::Send { iface, bytes } => {
                    self.totals.frames += 1;
                    self.frame(&mut run, iface, bytes)
                }
                Op::Cuts { iface, bytes } => (14..bytes.len()).try_for_each(|len| {
                    self.totals.cuts += 1;
                    self.frame(&mut run, iface, &bytes[..len])
                        .map_err(|e| format!("cut at {len} bytes: {e}"))
                }),
                Op::Advance(ns) => {
                    if self.age(*ns) {
                        run.offset += ns;
                        self.totals.advances += 1;
                    } else {
                        self.totals.advances_skipped += 1;
                    }
                    self.state(&mut run)
                }
                Op::Reload(k) => {
                    let policy = self.load(&policies[*k])?;
                    run.model.reload(policy);
                    run.at_reload = run.model.counters().clone();
                    run.set_base = ModelCounters::default();
                    self.totals.reloads += 1;
                    self.state(&mut run)
                }
            };
            r.map_err(|e| RunError::Mismatch(format!("step {i} ({}): {e}", op_line(op))))?;
        }
        Ok(())
    }

    fn frame(&mut self, run: &mut Run, iface: &str, bytes: &[u8]) -> Result<(), String> {
        let action = xdp::test_run(self.dp.program(), iface, bytes);
        let now = monotonic_coarse_ns() + run.offset;
        let d = mframe::decide(&mut run.model, bytes, iface, now);
        let audit = run.model.audit_mode();
        let want = if d.xdp_pass(audit) {
            XDP_PASS
        } else {
            XDP_DROP
        };
        let kind = describe(&d, audit)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        *self.totals.reasons.entry(kind).or_default() += 1;
        let before = run.last.clone();
        let r = self.state(run);
        if action != want || r.is_err() {
            let kname = if action == XDP_PASS {
                "XDP_PASS"
            } else {
                "XDP_DROP"
            };
            return Err(format!(
                "{} bytes on {iface}\n  frame:  {}\n  model:  {}\n  kernel: {kname} (moved: {})\n{}",
                bytes.len(),
                hex(bytes),
                describe(&d, audit),
                moved(&before, &run.last),
                r.err().unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// Compares counters, flows and the fragment table; keeps the kernel's counters.
    fn state(&mut self, run: &mut Run) -> Result<(), String> {
        let kernel = self.kernel_counters(run);
        let m = run.model.counters();
        let mut model = m.clone();
        model.zone_pairs = minus(&m.zone_pairs, &run.at_reload.zone_pairs);
        model.rules = minus(&m.rules, &run.at_reload.rules);
        let mut out = String::new();
        if kernel != model {
            write!(
                out,
                "  counters differ:\n{}",
                counters_diff(&kernel, &model)
            )
            .unwrap();
        }
        run.last = kernel;
        let kf = self.kernel_flows(run.gen_base);
        let mf = run.model.flow_list();
        if kf != mf {
            writeln!(out, "  flows differ:\n    kernel {kf:?}\n    model  {mf:?}").unwrap();
        }
        let kfrags = self.dp.maps.frags.keys().count();
        if kfrags != run.model.fragments() {
            writeln!(
                out,
                "  fragment entries: kernel {kfrags}, model {}",
                run.model.fragments()
            )
            .unwrap();
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }

    /// The kernel's counters in the model's shape: global ones since the case started, zone
    /// pairs and rules of the active set (since the last reload).
    fn kernel_counters(&self, run: &Run) -> ModelCounters {
        let g = self.dp.global_counters().expect("global counters");
        let mut c = ModelCounters::default();
        let put = |map: &mut BTreeMap<u32, Counter>, key: u32, now: Counter, then: Counter| {
            let d = sub(now, then);
            if d.packets > 0 {
                map.insert(key, d);
            }
        };
        for (i, (r, k)) in g.drops.iter().enumerate() {
            put(&mut c.drops, *r as u32, *k, run.base.drops[i].1);
        }
        for (i, (r, k)) in g.audit_drops.iter().enumerate() {
            put(
                &mut c.drops,
                DropReason::AUDIT_OFFSET + *r as u32,
                *k,
                run.base.audit_drops[i].1,
            );
        }
        for (i, (r, k)) in g.passes.iter().enumerate() {
            put(&mut c.passes, *r as u32, *k, run.base.passes[i].1);
        }
        for (i, (e, n)) in g.flow_events.iter().enumerate() {
            let count = |packets| Counter { packets, bytes: 0 };
            put(
                &mut c.flow_events,
                *e as u32,
                count(*n),
                count(run.base.flow_events[i].1),
            );
        }
        self.set_counters(run.model.policy(), &mut c);
        c.zone_pairs = minus(&c.zone_pairs, &run.set_base.zone_pairs);
        c.rules = minus(&c.rules, &run.set_base.rules);
        c
    }

    /// The active set's zone-pair and rule counters for `p`, into `c`.
    fn set_counters(&self, p: &Policy, c: &mut ModelCounters) {
        let s = self
            .dp
            .set_counters(self.dp.active_set, p.zones.len() + 1, p.rules.len())
            .expect("set counters");
        for (f, t, v, k) in s.zones {
            c.zone_pairs.insert((f, t, v), k);
        }
        for (i, k) in s.rules.iter().enumerate() {
            if k.packets > 0 {
                c.rules.insert(i, *k);
            }
        }
    }

    /// Both flow tables: each entry says which table holds it, and a key held in both
    /// appears twice (the model has each key once), so a flow in the wrong table or in two
    /// tables is a mismatch.
    fn kernel_flows(&self, gen_base: u32) -> Vec<FlowInfo> {
        let m = &self.dp.maps;
        let replied = m.flows.iter().filter_map(Result::ok).map(|e| (e, false));
        let embryonic = m.embryos.iter().filter_map(Result::ok).map(|e| (e, true));
        let mut v: Vec<FlowInfo> = replied
            .chain(embryonic)
            .map(|((k, st), embryonic): ((FlowKey, FlowState), bool)| {
                let a = (addr_of(k.family, k.a), k.a_port);
                let b = (addr_of(k.family, k.b), k.b_port);
                let (orig_src, orig_dst) = if st.orig_is_a != 0 { (a, b) } else { (b, a) };
                FlowInfo {
                    proto: k.proto,
                    orig_src,
                    orig_dst,
                    from: st.from_zone,
                    to: st.to_zone,
                    rule: st.rule as usize,
                    audit: st.flags & FLOW_AUDIT != 0,
                    generation: st.generation.wrapping_sub(gen_base),
                    replied: st.flags & FLOW_REPLIED != 0,
                    embryonic,
                }
            })
            .collect();
        v.sort_by_key(|f| (f.proto, f.orig_src, f.orig_dst, f.embryonic));
        v
    }

    /// Idle time passes: the kernel's clock cannot be moved, so every flow and fragment
    /// entry's timestamp is moved back by `ns` instead (what the entry would hold had it been
    /// touched `ns` earlier), and the model's clock runs `ns` ahead from now on. Both sides
    /// then see the same idle times. The timestamps count from boot: an entry younger than
    /// `ns` plus a second of boot time cannot be moved back that far, and then time does not
    /// pass at all (counted as skipped; only possible on a machine up for less than
    /// `ns`).
    fn age(&mut self, ns: u64) -> bool {
        let m = &mut self.dp.maps;
        let flows: Vec<(FlowKey, FlowState)> = m.flows.iter().filter_map(Result::ok).collect();
        let embryos: Vec<(FlowKey, FlowState)> = m.embryos.iter().filter_map(Result::ok).collect();
        let frags: Vec<(FragKey, FragState)> = m.frags.iter().filter_map(Result::ok).collect();
        let floor = ns + NS;
        if flows
            .iter()
            .chain(&embryos)
            .any(|(_, s)| s.last_seen_ns < floor)
            || frags.iter().any(|(_, s)| s.last_seen_ns < floor)
        {
            return false;
        }
        for (table, entries) in [(&mut m.flows, flows), (&mut m.embryos, embryos)] {
            for (k, mut s) in entries {
                s.last_seen_ns -= ns;
                table.insert(k, s, 0).expect("age flow");
            }
        }
        for (k, mut s) in frags {
            s.last_seen_ns -= ns;
            m.frags.insert(k, s, 0).expect("age fragment entry");
        }
        true
    }
}

// =======================================================================================
// Regression files: the shrunk failures, replayed first on every run.

fn op_line(op: &Op) -> String {
    match op {
        Op::Send { iface, bytes } => format!("send {iface} {}", hex(bytes)),
        Op::Cuts { iface, bytes } => format!("cuts {iface} {}", hex(bytes)),
        Op::Advance(ns) => format!("advance {ns}"),
        Op::Reload(k) => format!("reload {k}"),
    }
}

fn case_text(policies: &[String], ops: &[Op]) -> String {
    let mut t = String::new();
    for (i, p) in policies.iter().enumerate() {
        writeln!(t, "policy {i}\n{}\nend", p.trim_end()).unwrap();
    }
    for op in ops {
        writeln!(t, "{}", op_line(op)).unwrap();
    }
    t
}

fn parse_case(text: &str) -> (Vec<String>, Vec<Op>) {
    let mut policies = vec![];
    let mut ops = vec![];
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None, ..) => {}
            (Some(w), ..) if w.starts_with('#') => {}
            (Some("policy"), Some(_), None) => {
                let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "end").collect();
                policies.push(body.join("\n"));
            }
            (Some("send"), Some(i), Some(h)) => ops.push(Op::Send {
                iface: i.into(),
                bytes: unhex(h),
            }),
            (Some("cuts"), Some(i), Some(h)) => ops.push(Op::Cuts {
                iface: i.into(),
                bytes: unhex(h),
            }),
            (Some("advance"), Some(n), None) => {
                ops.push(Op::Advance(n.parse().expect("advance ns")))
            }
            (Some("reload"), Some(k), None) => {
                ops.push(Op::Reload(k.parse().expect("reload index")))
            }
            _ => panic!("bad regression line: {line}"),
        }
    }
    (policies, ops)
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions/differential")
}

fn replay_corpus(engine: &mut Engine) {
    let Ok(dir) = std::fs::read_dir(corpus_dir()) else {
        return;
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read regression file");
        let (policies, ops) = parse_case(&text);
        match engine.run(&policies, &ops) {
            Ok(()) => engine.totals.corpus += 1,
            Err(RunError::Reject(e)) | Err(RunError::Mismatch(e)) => {
                panic!(
                    "regression case {} fails again:\n{e}\n\n{text}",
                    f.display()
                )
            }
        }
    }
}

fn save_regression(seed: u64, text: &str, why: &str) -> PathBuf {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("create the regression directory");
    // FNV-1a of the case: the same failure found twice is one file.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{hash:016x}.txt"));
    let first = why.lines().next().unwrap_or_default();
    let body =
        format!("# found with ZA_DIFF_SEED={seed:#x}, shrunk by proptest\n# {first}\n{text}");
    std::fs::write(&path, body).expect("write the regression file");
    path
}

/// Proptest shrinks the generated choices; this then drops the concrete operations the
/// failure does not need, one at a time (from the end, so that what a later step depends
/// on is tried last).
fn minimize(
    engine: &mut Engine,
    policies: &[String],
    mut ops: Vec<Op>,
    why: &mut String,
) -> Vec<Op> {
    let mut i = ops.len();
    while i > 0 {
        i -= 1;
        let mut fewer = ops.clone();
        fewer.remove(i);
        if let Err(RunError::Mismatch(w)) = engine.run(policies, &fewer) {
            ops = fewer;
            *why = w;
            i = i.min(ops.len());
        }
    }
    ops
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a u64")))
}

#[test]
fn xdp_agrees_with_model_on_random_cases() {
    let seed = env_u64("ZA_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("ZA_DIFF_CASES").map_or(DEFAULT_CASES, |c| c as u32);
    let started = Instant::now();
    let totals = xdp::in_private_netns(&IFACES, move || {
        let mut engine = Engine::new();
        replay_corpus(&mut engine);
        let engine = RefCell::new(engine);
        let config = Config {
            cases,
            failure_persistence: None,
            max_global_rejects: cases.saturating_mul(2).max(100),
            max_shrink_iters: 20_000,
            max_shrink_time: env_u64("ZA_DIFF_SHRINK_SECS").map_or(180_000, |s| s as u32 * 1000),
            ..Config::default()
        };
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            config,
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        );
        let result = runner.run(&case_gen(), |case| {
            let (policies, ops) = case.resolve().map_err(TestCaseError::fail)?;
            let result = engine.borrow_mut().run(&policies, &ops);
            match result {
                Ok(()) => Ok(()),
                Err(RunError::Reject(why)) => {
                    engine.borrow_mut().totals.rejected += 1;
                    Err(TestCaseError::reject(why))
                }
                Err(RunError::Mismatch(why)) => Err(TestCaseError::fail(why)),
            }
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, case)) => {
                let mut why = why.to_string();
                let text = match case.resolve() {
                    Ok((policies, ops)) => {
                        let ops = minimize(&mut engine.borrow_mut(), &policies, ops, &mut why);
                        case_text(&policies, &ops)
                    }
                    Err(e) => e,
                };
                let path = save_regression(seed, &text, &why);
                panic!(
                    "XDP program and model disagree (seed {seed:#x}); shrunk case saved to {}:\n{why}\n\n{text}",
                    path.display()
                );
            }
            Err(TestError::Abort(why)) => panic!("proptest aborted (seed {seed:#x}): {why}"),
        }
        engine.into_inner().totals
    });
    eprintln!(
        "differential: seed {seed:#x}: {} sequences ({} from the regression corpus), {} frames and {} truncations compared, \
         {} reloads, {} idle-time steps ({} skipped), {} generated policies rejected by compile, in {:.1?}",
        totals.cases,
        totals.corpus,
        totals.frames,
        totals.cuts,
        totals.reloads,
        totals.advances,
        totals.advances_skipped,
        totals.rejected,
        started.elapsed()
    );
    eprintln!(
        "differential: model decisions: {:?}; apply {:?}",
        totals.reasons, totals.apply_time
    );
}

//! Generated policies: raw choices, made valid by construction in `render`, so that every
//! shrunk value is still a policy an operator could write.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(crate) struct HostGen {
    /// Near an anchor (where the nested prefixes are), or anywhere.
    pub(crate) anchor: Option<u8>,
    pub(crate) low: u128,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct NetGen {
    pub(crate) v6: bool,
    pub(crate) anchor: u8,
    pub(crate) len: u8,
}

#[derive(Clone, Debug)]
pub(crate) struct ZoneGen {
    /// (interface, VLAN) slots, `IFACES.len() * ZONE_VLANS.len()` of them.
    pub(crate) slots: Vec<u8>,
    pub(crate) nets: Vec<NetGen>,
    pub(crate) default4: bool,
    pub(crate) default6: bool,
    pub(crate) critical: bool,
    /// Write a shared VLAN as the zone's `vlan = N` rather than as ".N" suffixes.
    pub(crate) vlan_field: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PortGen {
    pub(crate) pick: u8,
    pub(crate) span: u8,
    pub(crate) raw: u16,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct CidrGen {
    pub(crate) net: u8,
    pub(crate) extra: u8,
    pub(crate) host: HostGen,
}

#[derive(Clone, Debug)]
pub(crate) struct RuleGen {
    pub(crate) from: u8,
    pub(crate) to: u8,
    pub(crate) proto: u8,
    pub(crate) ports: Vec<PortGen>,
    pub(crate) sources: Vec<CidrGen>,
    pub(crate) dests: Vec<CidrGen>,
    pub(crate) macs: Vec<u8>,
    /// 0: no `mode` key, 1: enforce, 2: audit.
    pub(crate) mode: u8,
}

#[derive(Clone, Debug)]
pub(crate) struct PolicyGen {
    pub(crate) zones: Vec<ZoneGen>,
    pub(crate) rules: Vec<RuleGen>,
    pub(crate) audit: bool,
    /// intra_zone, unknown, fragments: allow?
    pub(crate) defaults: (bool, bool, bool),
}

/// The policy to reload to: the first one's rules kept by `keep`, modes flipped by `flip`,
/// some of `alt`'s rules added, rotated; `alt`'s modes and defaults; sometimes `alt`'s zones.
#[derive(Clone, Debug)]
pub(crate) struct MutGen {
    pub(crate) keep: u16,
    pub(crate) flip: u16,
    pub(crate) rotate: u8,
    pub(crate) add: u8,
    pub(crate) new_zones: bool,
    pub(crate) alt: PolicyGen,
}

pub(crate) fn mutate(p: &PolicyGen, m: &MutGen) -> PolicyGen {
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
pub(crate) fn anchor(v6: bool, a: u8) -> IpAddr {
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

pub(crate) fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn host_bits(h: HostGen, v6: bool) -> u128 {
    match h.anchor {
        Some(a) => bits(anchor(v6, a)) | (h.low & 0xf),
        None => h.low,
    }
}

pub(crate) fn trunc(a: IpAddr, len: u8) -> IpNet {
    IpNet::new(a, len).expect("prefix length in range").trunc()
}

/// An address inside `n`: its network bits, `host`'s bits below the prefix.
pub(crate) fn inside(n: &IpNet, host: u128) -> IpAddr {
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

pub(crate) struct ZoneSpec {
    pub(crate) ifaces: Vec<(usize, u16)>,
    pub(crate) nets: Vec<IpNet>,
    pub(crate) critical: bool,
    pub(crate) vlan_field: bool,
}

pub(crate) struct RuleSpec {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) proto: &'static str,
    pub(crate) ports: Vec<(u16, u16)>,
    pub(crate) sources: Vec<IpNet>,
    pub(crate) dests: Vec<IpNet>,
    pub(crate) macs: Vec<usize>,
    pub(crate) mode: u8,
}

pub(crate) struct Spec {
    pub(crate) audit: bool,
    pub(crate) defaults: (bool, bool, bool),
    pub(crate) zones: Vec<ZoneSpec>,
    pub(crate) rules: Vec<RuleSpec>,
}

/// The zone validation puts a CIDR in: the longest zone network that contains all of it.
pub(crate) fn zone_of(zones: &[ZoneSpec], net: &IpNet) -> Option<usize> {
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
pub(crate) fn render(g: &PolicyGen) -> Spec {
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

pub(crate) fn toml(s: &Spec) -> String {
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

pub(crate) fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn check_policy(text: &str) -> Result<Policy, String> {
    validate::check_str("differential.toml".as_ref(), text, &OfflineEnvironment)
        .map(|(p, _)| p)
        .map_err(|d| format!("{d:?}"))
}

//! Compile a validated policy into the data-path maps' contents.
//!
//! The match is decomposed per field so that the kernel does one hash lookup whatever the
//! number of rules:
//! - ports: per protocol, the boundaries of all rules' ranges cut 0..=65535 into intervals;
//!   each interval is a port class (`ZA_PORTS`, one array load). Class 0 means "no port".
//! - addresses: per role (source/destination), every distinct prefix among the zones'
//!   networks and the rules' CIDRs is a class; an address's class is its longest matching
//!   prefix (`ZA_ADDR4/6`, which also gives the zone). Since every address inside a rule's
//!   CIDR has a class whose prefix lies inside that CIDR, a rule covers exactly the classes
//!   whose prefix is inside one of its CIDRs (and whose zone is the rule's zone).
//! - rules: (source class, destination class, protocol, port class) → the matching rules in
//!   file order (`ZA_RULES`), cut after the first one that always decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use zone_agent_common::*;

use super::{Diagnostic, Diagnostics, Loc, Policy, Protocol, Rule};

/// Everything the data path needs for one policy set, independent of interface indices.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// `SET_*` flags (SET_VALID included).
    pub flags: u32,
    /// (interface name, VLAN id or 0, zone id).
    pub ifaces: Vec<(String, u16, u8)>,
    /// (role, prefix) → class.
    pub addrs: Vec<(u8, IpNet, AddrClass)>,
    /// Port class of every port, `[tcp, udp]`.
    pub ports: [Vec<u16>; 2],
    pub rules: HashMap<RuleKey, RuleCands>,
    pub rule_info: Vec<RuleInfo>,
    pub rule_macs: Vec<(u32, [u8; 6])>,
}

impl Compiled {
    pub fn entries(&self) -> usize {
        self.addrs.len() + self.rules.len() + self.rule_macs.len() + self.ifaces.len()
    }
}

/// Rule keys one policy set may use: the other half of `ZA_RULES` holds the set it replaces.
const RULE_KEYS_MAX: usize = (CAP_RULES / 2) as usize;

pub fn compile(policy: &Policy) -> Result<Compiled, Diagnostics> {
    let err = |loc: Loc, message: String, help: &str| {
        Diagnostics(vec![Diagnostic::error(
            &policy.path,
            loc,
            message,
            Some(help.to_string()),
        )])
    };
    if policy.zones.len() >= MAX_ZONES as usize {
        return Err(err(
            Loc { line: 1, col: 1 },
            format!(
                "map capacity exceeded: {} zones, the data path holds {}",
                policy.zones.len(),
                MAX_ZONES - 1
            ),
            "merge zones",
        ));
    }
    if policy.rules.len() > MAX_RULES as usize {
        return Err(err(
            Loc { line: 1, col: 1 },
            format!(
                "map capacity exceeded: {} rules, the data path holds {}",
                policy.rules.len(),
                MAX_RULES
            ),
            "merge rules with the same zones and protocol",
        ));
    }
    let mut c = Compiled {
        flags: set_flags(policy),
        ..Default::default()
    };

    for (zi, zone) in policy.zones.iter().enumerate() {
        for iface in &zone.interfaces {
            c.ifaces.push((
                iface.name.clone(),
                iface.vlan.unwrap_or(0),
                Policy::zone_id(zi),
            ));
        }
    }

    let ports = PortClasses::new(&policy.rules).map_err(|ri| {
        let rule = &policy.rules[ri];
        err(
            rule.loc,
            format!(
                "map capacity exceeded at rule \"{}\": the {} port ranges cut the ports into more than {} classes",
                rule.name,
                rule.protocol.label(),
                MAX_PORT_CLASS
            ),
            "merge neighbouring ports into ranges",
        )
    })?;
    c.ports = [ports.table(Protocol::Tcp), ports.table(Protocol::Udp)];

    let src = AddrClasses::new(policy, ROLE_SRC);
    let dst = AddrClasses::new(policy, ROLE_DST);
    for classes in [&src, &dst] {
        for (i, net) in classes.prefixes.iter().enumerate() {
            let class = AddrClass {
                class: i as u32 + 1,
                zone: classes.zones[i],
                _pad: [0; 3],
            };
            c.addrs.push((classes.role, *net, class));
        }
    }
    if c.addrs
        .iter()
        .filter(|(_, n, _)| matches!(n, IpNet::V4(_)))
        .count()
        > (CAP_ADDR4 / 2) as usize
        || c.addrs
            .iter()
            .filter(|(_, n, _)| matches!(n, IpNet::V6(_)))
            .count()
            > (CAP_ADDR6 / 2) as usize
    {
        return Err(err(
            Loc { line: 1, col: 1 },
            "map capacity exceeded: too many distinct networks and rule CIDRs".into(),
            "aggregate CIDRs",
        ));
    }

    for (ri, rule) in policy.rules.iter().enumerate() {
        let id = ri as u32;
        let mut flags = 0;
        if rule.audit() {
            flags |= RULE_AUDIT;
        }
        if !rule.source_macs.is_empty() {
            flags |= RULE_HAS_MACS;
            for mac in &rule.source_macs {
                c.rule_macs.push((id, *mac));
            }
        }
        c.rule_info.push(RuleInfo { flags });
        let decides = flags == 0;
        let srcs = src.covered(Policy::zone_id(rule.from), &rule.sources);
        let dsts = dst.covered(Policy::zone_id(rule.to), &rule.destinations);
        for (proto, pclasses) in ports.covered(rule) {
            for &s in &srcs {
                for &d in &dsts {
                    if !families_fit(proto, src.is_v4(s), dst.is_v4(d)) {
                        continue;
                    }
                    for &pc in &pclasses {
                        let key = RuleKey {
                            src_class: s,
                            dst_class: d,
                            port_class: pc,
                            proto,
                            set: 0,
                        };
                        // Per key, not per rule: one rule's classes multiply (sources ×
                        // destinations × ports), and building every key before looking took
                        // 20 s and 740 MB for a 9 KB policy before it was refused.
                        if c.rules.len() == RULE_KEYS_MAX && !c.rules.contains_key(&key) {
                            return Err(err(
                                rule.loc,
                                format!(
                                    "map capacity exceeded at rule \"{}\": more than {RULE_KEYS_MAX} (source, destination, protocol, port) classes",
                                    rule.name
                                ),
                                "use fewer overlapping CIDRs or port ranges",
                            ));
                        }
                        let cands = c.rules.entry(key).or_insert(RuleCands {
                            rules: [NO_RULE; MAX_CANDS],
                        });
                        if !push_candidate(cands, id, decides, &c.rule_info) {
                            return Err(err(
                                rule.loc,
                                format!(
                                    "map capacity exceeded: rule \"{}\" overlaps more than {} earlier MAC-bound or audit rules",
                                    rule.name, MAX_CANDS
                                ),
                                "merge the overlapping MAC-bound or audit rules",
                            ));
                        }
                    }
                }
            }
        }
    }
    if c.rule_macs.len() > (CAP_RULEMACS / 2) as usize {
        return Err(err(
            Loc { line: 1, col: 1 },
            "map capacity exceeded: too many source MACs".into(),
            "use fewer MACs",
        ));
    }
    Ok(c)
}

fn set_flags(p: &Policy) -> u32 {
    use super::{Action, Mode};
    let mut f = SET_VALID;
    if p.mode == Mode::Audit {
        f |= SET_AUDIT;
    }
    if p.defaults.intra_zone == Action::Allow {
        f |= SET_INTRA_ALLOW;
    }
    if p.defaults.unknown == Action::Allow {
        f |= SET_UNKNOWN_ALLOW;
    }
    if p.defaults.fragments == Action::Allow {
        f |= SET_FRAG_ALLOW;
    }
    f
}

fn families_fit(proto: u8, src_v4: bool, dst_v4: bool) -> bool {
    src_v4 == dst_v4
        && match proto {
            PROTO_ICMP => src_v4,
            PROTO_ICMPV6 => !src_v4,
            _ => true,
        }
}

/// Adds `rule` to a candidate list unless an earlier rule already always decides.
/// Returns false when the list is full.
fn push_candidate(c: &mut RuleCands, rule: u32, decides: bool, info: &[RuleInfo]) -> bool {
    for slot in 0..MAX_CANDS {
        let r = c.rules[slot];
        if r == NO_RULE {
            c.rules[slot] = rule;
            return true;
        }
        if r == rule || info[r as usize].flags == 0 {
            return true; // already there, or an earlier rule decides every packet here
        }
    }
    let _ = decides;
    false
}

/// The highest port class: a class is a `u16` in `ZA_PORTS` and in the rule key, and 0 is
/// "no port".
const MAX_PORT_CLASS: usize = u16::MAX as usize;

struct PortClasses {
    /// Sorted interval starts per protocol ([tcp, udp]); class of interval i is i + 1.
    starts: [Vec<u32>; 2],
}

impl PortClasses {
    /// The classes of all rules' port ranges, or the index of the rule whose ranges make more
    /// classes than fit (every port its own class, 32,768 disjoint ranges, reaches that; the
    /// class numbers wrapped to 0 before, and ports got the "no port" class).
    fn new(rules: &[Rule]) -> Result<Self, usize> {
        let mut starts = [BTreeSet::from([0u32]), BTreeSet::from([0u32])];
        for (ri, r) in rules.iter().enumerate() {
            let Some(i) = proto_slot(r.protocol) else {
                continue;
            };
            for pr in &r.ports {
                starts[i].insert(pr.lo as u32);
                if pr.hi < u16::MAX {
                    starts[i].insert(pr.hi as u32 + 1);
                }
            }
            if starts[i].len() > MAX_PORT_CLASS {
                return Err(ri);
            }
        }
        Ok(PortClasses {
            starts: starts.map(|s| s.into_iter().collect()),
        })
    }

    fn class_of(&self, slot: usize, port: u32) -> u16 {
        let s = &self.starts[slot];
        (s.partition_point(|&x| x <= port)) as u16
    }

    fn table(&self, proto: Protocol) -> Vec<u16> {
        let starts = &self.starts[proto_slot(proto).expect("tcp or udp")];
        // Interval by interval, not a search per port: every load and reload builds this.
        let mut table = Vec::with_capacity(PORTS as usize);
        for (i, _) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(PORTS);
            table.resize(end as usize, i as u16 + 1);
        }
        table
    }

    fn all(&self, slot: usize) -> Vec<u16> {
        (1..=self.starts[slot].len() as u16).collect()
    }

    /// (protocol class, port classes) a rule covers. Port-less rules also cover class 0,
    /// which is how fragments without a port are judged.
    fn covered(&self, r: &Rule) -> Vec<(u8, Vec<u16>)> {
        let all_and_none = |slot: usize| {
            let mut v = vec![PORT_CLASS_NONE];
            v.extend(self.all(slot));
            v
        };
        match r.protocol {
            Protocol::Tcp | Protocol::Udp => {
                let slot = proto_slot(r.protocol).unwrap();
                let proto = if slot == 0 { PROTO_TCP } else { PROTO_UDP };
                if r.ports.is_empty() {
                    return vec![(proto, all_and_none(slot))];
                }
                let mut v: Vec<u16> = Vec::new();
                for pr in &r.ports {
                    let lo = self.class_of(slot, pr.lo as u32);
                    let hi = self.class_of(slot, pr.hi as u32);
                    v.extend(lo..=hi);
                }
                v.sort_unstable();
                v.dedup();
                vec![(proto, v)]
            }
            Protocol::Icmp => vec![(PROTO_ICMP, vec![PORT_CLASS_NONE])],
            Protocol::Icmpv6 => vec![(PROTO_ICMPV6, vec![PORT_CLASS_NONE])],
            Protocol::Any => vec![
                (PROTO_TCP, all_and_none(0)),
                (PROTO_UDP, all_and_none(1)),
                (PROTO_ICMP, vec![PORT_CLASS_NONE]),
                (PROTO_ICMPV6, vec![PORT_CLASS_NONE]),
                (PROTO_OTHER, vec![PORT_CLASS_NONE]),
            ],
        }
    }
}

fn proto_slot(p: Protocol) -> Option<usize> {
    match p {
        Protocol::Tcp => Some(0),
        Protocol::Udp => Some(1),
        _ => None,
    }
}

struct AddrClasses {
    role: u8,
    /// Class i + 1 is prefixes[i]; sorted by (family, network address, prefix length).
    prefixes: Vec<IpNet>,
    zones: Vec<u8>,
    by_zone: BTreeMap<u8, Vec<u32>>,
}

impl AddrClasses {
    fn new(p: &Policy, role: u8) -> Self {
        let mut prefixes: Vec<IpNet> = p
            .zones
            .iter()
            .flat_map(|z| z.networks.iter().copied())
            .collect();
        for r in &p.rules {
            let list = if role == ROLE_SRC {
                &r.sources
            } else {
                &r.destinations
            };
            prefixes.extend(list.iter().map(|n| n.trunc()));
        }
        prefixes.sort_by_key(sort_key);
        prefixes.dedup();
        let zones: Vec<u8> = prefixes.iter().map(|n| zone_of(p, n)).collect();
        let mut by_zone: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        for (i, z) in zones.iter().enumerate() {
            by_zone.entry(*z).or_default().push(i as u32 + 1);
        }
        AddrClasses {
            role,
            prefixes,
            zones,
            by_zone,
        }
    }

    fn is_v4(&self, class: u32) -> bool {
        matches!(self.prefixes[class as usize - 1], IpNet::V4(_))
    }

    /// Classes of zone `zone` inside one of `cidrs` (all of the zone's classes if empty).
    fn covered(&self, zone: u8, cidrs: &[IpNet]) -> Vec<u32> {
        if cidrs.is_empty() {
            return self.by_zone.get(&zone).cloned().unwrap_or_default();
        }
        let mut out = Vec::new();
        for cidr in cidrs {
            let cidr = cidr.trunc();
            let lo = self
                .prefixes
                .partition_point(|n| sort_key(n) < sort_key(&cidr));
            for (i, n) in self.prefixes[lo..].iter().enumerate() {
                if !same_family(n, &cidr) || !cidr.contains(&n.network()) {
                    break;
                }
                let class = (lo + i) as u32 + 1;
                if n.prefix_len() >= cidr.prefix_len() && self.zones[class as usize - 1] == zone {
                    out.push(class);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

fn sort_key(n: &IpNet) -> (u8, u128, u8) {
    match n {
        IpNet::V4(v) => (4, u32::from(v.network()) as u128, v.prefix_len()),
        IpNet::V6(v) => (6, u128::from(v.network()), v.prefix_len()),
    }
}

/// Zone id of a prefix: the zone owning the longest network that contains all of it.
pub fn zone_of(p: &Policy, n: &IpNet) -> u8 {
    let mut best: Option<(u8, u8)> = None;
    for (zi, z) in p.zones.iter().enumerate() {
        for net in &z.networks {
            if net.contains(n) && best.is_none_or(|(len, _)| net.prefix_len() > len) {
                best = Some((net.prefix_len(), Policy::zone_id(zi)));
            }
        }
    }
    best.map(|(_, z)| z).unwrap_or(NO_ZONE)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::policy::validate;

    /// Two zones and one rule `r` (its `[[rules]]` header on line 10) from b to a.
    fn policy(protocol: &str, ports: &str, sources: &str, destinations: &str) -> Policy {
        let text = format!(
            "version = 1\n\
             [[zones]]\nname = \"a\"\ninterfaces = [\"e1\"]\nnetworks = [\"10.10.0.0/16\"]\n\
             [[zones]]\nname = \"b\"\ninterfaces = [\"e2\"]\nnetworks = [\"10.20.0.0/16\"]\n\
             [[rules]]\nname = \"r\"\nfrom = \"b\"\nto = \"a\"\nprotocol = \"{protocol}\"\n\
             ports = [{ports}]\nsources = [{sources}]\ndestinations = [{destinations}]\n"
        );
        match validate::parse_str(Path::new("t.toml"), &text) {
            Ok((p, _)) => p,
            Err(diags) => panic!("{diags}"),
        }
    }

    fn list(n: usize, item: impl Fn(usize) -> String) -> String {
        (0..n).map(item).collect::<Vec<_>>().join(", ")
    }

    /// Found by the policy_loader fuzz target (fuzz/regressions/policy_loader/): 230 sources,
    /// destinations and ports in one rule make 12 million keys, all built before the capacity
    /// check. Now the check stops at the first key past the capacity.
    #[test]
    fn a_rule_multiplying_past_the_key_capacity_is_refused_promptly() {
        let p = policy(
            "tcp",
            &list(300, |i| (2 * i + 1).to_string()),
            &list(300, |i| format!("\"10.20.{}.{}/30\"", i / 64, i % 64 * 4)),
            &list(300, |i| format!("\"10.10.{}.{}/30\"", i / 64, i % 64 * 4)),
        );
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(compile(&p).map(|_| ())));
        let result = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("compile returns within a minute");
        let diags = result.expect_err("27 million keys do not fit");
        assert_eq!(diags.len(), 1, "{diags}");
        let d = &diags.0[0];
        assert!(
            d.message.starts_with("map capacity exceeded at rule \"r\""),
            "{d}"
        );
        assert_eq!(d.loc(), Loc { line: 10, col: 1 }, "{d}");
    }

    #[test]
    fn the_port_table_gives_each_port_its_interval_class() {
        let p = policy("tcp", "22, \"80-90\", 443, \"1000-65535\"", "", "");
        let classes = PortClasses::new(&p.rules).expect("fits");
        let table = classes.table(Protocol::Tcp);
        assert_eq!(table.len(), PORTS as usize);
        assert!((0..PORTS).all(|port| table[port as usize] == classes.class_of(0, port)));
        assert_eq!(
            (
                table[0],
                table[22],
                table[23],
                table[85],
                table[443],
                table[65535]
            ),
            (1, 2, 3, 4, 6, 8)
        );
    }

    #[test]
    fn port_classes_fit_their_u16() {
        // Every other port: boundaries at 0..=65534, the most that fit. No port falls into
        // the "no port" class 0.
        let p = policy("tcp", &list(32767, |i| (2 * i + 1).to_string()), "", "");
        let c = compile(&p).expect("compiles");
        assert!(c.ports[0].iter().all(|&class| class != PORT_CLASS_NONE));
        assert_eq!(c.ports[0][65535], u16::MAX);
        // One more range makes every port a boundary: 65,536 classes, refused at the rule
        // (the class of port 65535 used to wrap to 0, "no port").
        let p = policy("tcp", &list(32768, |i| (2 * i + 1).to_string()), "", "");
        let Err(diags) = compile(&p) else {
            panic!("compiled, with more port classes than a u16 holds");
        };
        assert!(
            diags.0[0]
                .message
                .contains("the tcp port ranges cut the ports into more than 65535 classes"),
            "{diags}"
        );
        assert_eq!(diags.0[0].loc(), Loc { line: 10, col: 1 });
    }
}

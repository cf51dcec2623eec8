//! `zone-agent policy explain`: the model's decision for one packet, in words an operator can
//! act on — verdict, reason, zones, the rule that matched, and for a deny which rule came
//! closest and what in the packet kept it from matching.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use zone_agent_common::{DropReason, PassReason, Verdict};

use super::model::{
    self, Decision, Frag, Outcome, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet,
    RuleCheck, RuleInput,
};
use super::text::{Escaped, escape_lines};
use super::types::{Action, Mac, Mode, Policy, Protocol, Rule};

pub fn render(policy: &Policy, p: &Packet, d: &Decision) -> String {
    let global_audit = policy.mode == Mode::Audit;
    let verdict = d.verdict(global_audit);
    let mut s = String::new();

    // Verdict line.
    let _ = write!(s, "verdict: {}", verdict.label());
    match (d.outcome, verdict) {
        (Outcome::Drop(r), Verdict::Audit) => {
            let _ = write!(
                s,
                " (would deny: {}; passed because the policy's mode is \"audit\")",
                r.label()
            );
        }
        (Outcome::Drop(r), _) => {
            let _ = write!(s, " ({})", r.label());
            if global_audit && !r.auditable() {
                s.push_str(" — dropped even in audit mode: the data path fails closed on this");
            }
        }
        (Outcome::Pass(r), Verdict::Audit) => {
            let _ = write!(s, " ({}; only audit-mode rules allow it)", r.label());
        }
        (Outcome::Pass(r), _) => {
            let _ = write!(s, " ({})", r.label());
        }
    }
    s.push('\n');

    // The packet.
    let _ = writeln!(s, "packet:  {}", describe_packet(p));

    // Zones.
    match d.outcome {
        // The data path records these as zone pair (none, none); say what it saw anyway.
        Outcome::Drop(DropReason::SpoofedSource | DropReason::UnknownInterface) => {
            let ingress = model::ingress_zone(policy, &p.ifname, p.vlan);
            let _ = writeln!(
                s,
                "zones:   entered through {}; source address in {}; destination in {} (counted as none -> none)",
                if ingress == 0 {
                    "no zone".into()
                } else {
                    zone_desc(policy, ingress)
                },
                zone_desc(policy, model::addr_zone(policy, p.src)),
                zone_desc(policy, model::addr_zone(policy, p.dst)),
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "zones:   {} -> {}",
                zone_desc(policy, d.from),
                zone_desc(policy, d.to)
            );
        }
    }

    // Rule.
    match d.rule.and_then(|i| policy.rules.get(i)) {
        Some(r) => {
            let _ = write!(s, "rule:    {}", r.name);
            if r.mode == Mode::Audit {
                s.push_str(" [audit mode]");
            }
            if let Some(desc) = &r.description {
                let _ = write!(s, " — {}", Escaped(desc));
            }
            let _ = writeln!(s, "\n         allows {}", rule_summary(policy, r));
        }
        None => s.push_str("rule:    none\n"),
    }

    // Why, and what would change it.
    for line in why(policy, p, d) {
        let _ = writeln!(s, "why:     {line}");
    }
    if let Some(h) = hint(policy, p, d) {
        for (i, line) in h.lines().enumerate() {
            let _ = writeln!(
                s,
                "{}{line}",
                if i == 0 { "hint:    " } else { "         " }
            );
        }
    }
    // Lines end with '\n' except the last: callers print it with println!.
    s.truncate(s.trim_end().len());
    // Descriptions and labels are escaped where they are written; this catches the rest.
    escape_lines(&s).into_owned()
}

fn proto_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMP => "icmp".into(),
        PROTO_ICMPV6 => "icmpv6".into(),
        n => format!("ip protocol {n}"),
    }
}

fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn endpoint(a: IpAddr, port: Option<u16>) -> String {
    match (a, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

fn ports_known(p: &Packet) -> bool {
    p.has_l4() && matches!(p.proto, PROTO_TCP | PROTO_UDP)
}

fn describe_packet(p: &Packet) -> String {
    let ports = ports_known(p);
    let mut s = format!(
        "{} {} -> {}",
        proto_name(p.proto),
        endpoint(p.src, ports.then_some(p.sport)),
        endpoint(p.dst, ports.then_some(p.dport)),
    );
    let _ = write!(s, " in {}", p.ifname);
    if p.vlan != 0 {
        let _ = write!(s, " vlan {}", p.vlan);
    }
    let _ = write!(s, " from MAC {}", mac_str(&p.src_mac));
    match p.frag {
        Frag::None => {}
        Frag::First => s.push_str(" (first fragment)"),
        Frag::Later => s.push_str(" (non-first fragment: ports unknown)"),
    }
    s
}

fn zone_desc(policy: &Policy, id: u8) -> String {
    if id == 0 {
        return "(none)".into();
    }
    let name = policy.zone_name(id);
    match policy
        .zones
        .get(id as usize - 1)
        .and_then(|z| z.label.as_deref())
    {
        Some(label) => format!("{name} ({})", Escaped(label)),
        None => name.to_string(),
    }
}

fn nets(v: &[IpNet]) -> String {
    v.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn ports_str(r: &Rule) -> String {
    r.ports
        .iter()
        .map(|p| {
            if p.lo == p.hi {
                p.lo.to_string()
            } else {
                format!("{}-{}", p.lo, p.hi)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "tcp 443, 8000-8010 from lgwan 10.20.5.10/32 (MAC 52:54:00:12:34:56) to mynumber 10.10.9.20/32"
fn rule_summary(policy: &Policy, r: &Rule) -> String {
    let mut s = r.protocol.label().to_string();
    if r.protocol == Protocol::Any {
        s = "any protocol".into();
    }
    if !r.ports.is_empty() {
        let _ = write!(s, " port {}", ports_str(r));
    }
    let _ = write!(s, " from {}", policy.zone_name(Policy::zone_id(r.from)));
    if !r.sources.is_empty() {
        let _ = write!(s, " {}", nets(&r.sources));
    }
    if !r.source_macs.is_empty() {
        let macs = r
            .source_macs
            .iter()
            .map(mac_str)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(s, " (MAC {macs})");
    }
    let _ = write!(s, " to {}", policy.zone_name(Policy::zone_id(r.to)));
    if !r.destinations.is_empty() {
        let _ = write!(s, " {}", nets(&r.destinations));
    }
    s
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

fn iface_list(policy: &Policy) -> String {
    let mut v = Vec::new();
    for z in &policy.zones {
        for i in &z.interfaces {
            v.push(format!("{i} ({})", z.name));
        }
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn why(policy: &Policy, p: &Packet, d: &Decision) -> Vec<String> {
    let iface = if p.vlan != 0 {
        format!("{} vlan {}", p.ifname, p.vlan)
    } else {
        p.ifname.clone()
    };
    let src_zone = model::addr_zone(policy, p.src);
    let dst_zone = model::addr_zone(policy, p.dst);
    let rule_name = |d: &Decision| {
        d.rule
            .and_then(|i| policy.rules.get(i))
            .map(|r| r.name.clone())
            .unwrap_or_else(|| "?".into())
    };
    let mut v = Vec::new();
    match d.outcome {
        Outcome::Pass(PassReason::Rule) => {
            let mut line = format!("rule {} is the first rule in the file that matches", rule_name(d));
            if d.audit {
                line.push_str("; every matching rule is in audit mode, so it passes as audit");
            }
            v.push(line);
        }
        Outcome::Pass(PassReason::Established) => {
            v.push(format!("a later packet of a flow opened by rule {}", rule_name(d)))
        }
        Outcome::Pass(PassReason::Reply) => v.push(format!("a reply in a flow opened by rule {}", rule_name(d))),
        Outcome::Pass(PassReason::Related) => {
            v.push(format!("an ICMP error about a flow opened by rule {}", rule_name(d)))
        }
        Outcome::Pass(PassReason::Fragment) => {
            v.push(format!("a later fragment of a datagram allowed by rule {}", rule_name(d)))
        }
        Outcome::Pass(PassReason::IntraZone) => v.push(format!(
            "both ends are in zone {} and defaults.intra_zone = \"allow\"",
            policy.zone_name(d.from)
        )),
        Outcome::Pass(PassReason::UnknownZone) => v.push(format!(
            "{} and defaults.unknown = \"allow\"",
            unknown_ends(p, src_zone, dst_zone)
        )),
        Outcome::Pass(PassReason::Neighbor) => {
            v.push("ARP / IPv6 neighbour discovery passes without policy".into())
        }
        Outcome::Pass(PassReason::Failsafe) => {
            v.push("a failsafe management flow to the gateway itself (agent configuration)".into())
        }
        Outcome::Drop(DropReason::UnknownInterface) => v.push(format!(
            "interface {iface} belongs to no zone (zone interfaces: {})",
            iface_list(policy)
        )),
        Outcome::Drop(DropReason::SpoofedSource) => {
            let ingress = model::ingress_zone(policy, &p.ifname, p.vlan);
            v.push(format!(
                "source {} belongs to zone {} (longest prefix {}), but the packet entered through {iface}, \
                 which is zone {}: a spoofed source",
                p.src,
                policy.zone_name(src_zone),
                longest_net(policy, p.src).map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                policy.zone_name(ingress),
            ));
        }
        Outcome::Drop(DropReason::UnknownZone) => v.push(format!(
            "{} and defaults.unknown = \"{}\"",
            unknown_ends(p, src_zone, dst_zone),
            action(policy.defaults.unknown)
        )),
        Outcome::Drop(DropReason::IntraZone) => v.push(format!(
            "both ends are in zone {} and defaults.intra_zone = \"{}\"",
            policy.zone_name(d.from),
            action(policy.defaults.intra_zone)
        )),
        Outcome::Drop(DropReason::Fragment) => v.push(
            "a non-first fragment that is not tied to an allowed first fragment, and defaults.fragments = \"deny\""
                .into(),
        ),
        Outcome::Drop(DropReason::MacMismatch) => v.push(format!(
            "a rule matches everything but its source-MAC list; {} is not in it",
            mac_str(&p.src_mac)
        )),
        Outcome::Drop(DropReason::NoRule) => v.push(format!(
            "no rule allows this from {} to {} (cross-zone traffic is denied unless a rule allows it)",
            policy.zone_name(d.from),
            policy.zone_name(d.to)
        )),
        Outcome::Drop(r) => v.push(format!("the data path cannot decide this packet ({})", r.label())),
    }
    v
}

fn unknown_ends(p: &Packet, src_zone: u8, dst_zone: u8) -> String {
    match (src_zone == 0, dst_zone == 0) {
        (true, true) => format!(
            "neither source {} nor destination {} is in any zone",
            p.src, p.dst
        ),
        (true, false) => format!("source {} is in no zone", p.src),
        _ => format!("destination {} is in no zone", p.dst),
    }
}

fn longest_net(policy: &Policy, a: IpAddr) -> Option<IpNet> {
    policy
        .zones
        .iter()
        .flat_map(|z| z.networks.iter())
        .filter(|n| n.contains(&a))
        .max_by_key(|n| n.prefix_len())
        .copied()
}

/// For a deny (or an audit pass of a would-be deny): what would make it pass.
fn hint(policy: &Policy, p: &Packet, d: &Decision) -> Option<String> {
    match d.outcome {
        Outcome::Drop(DropReason::NoRule | DropReason::MacMismatch) => Some(closest(policy, p, d)),
        Outcome::Drop(DropReason::Fragment) => Some(
            "fragments are judged by their first fragment; set defaults.fragments = \"allow\" to judge \
             untied fragments by rules without a port list"
                .into(),
        ),
        Outcome::Drop(DropReason::UnknownZone) => {
            Some("add the address's network to a zone, or set defaults.unknown = \"allow\"".into())
        }
        Outcome::Drop(DropReason::IntraZone) => Some("set defaults.intra_zone = \"allow\"".into()),
        Outcome::Drop(DropReason::UnknownInterface) => Some(format!(
            "add \"{}{}\" to the interfaces of the zone this traffic comes from",
            p.ifname,
            if p.vlan != 0 { format!(".{}", p.vlan) } else { String::new() }
        )),
        _ => None,
    }
}

/// The rule that came closest to matching, and what in the packet it rejects.
fn closest(policy: &Policy, p: &Packet, d: &Decision) -> String {
    let x = RuleInput::of(p, d.from, d.to);
    let pair = |r: &Rule| Policy::zone_id(r.from) == d.from && Policy::zone_id(r.to) == d.to;
    let best = policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| pair(r))
        .map(|(i, r)| {
            // Same protocol first (a tcp rule explains a tcp packet better than an icmp rule
            // that only fails on protocol), then fewest failed criteria, then file order.
            let c = model::check_rule(r, &x);
            (!c.protocol, c.failures(), i)
        })
        .min();
    let Some((_, _, i)) = best else {
        return format!(
            "no rule exists from {} to {}; add a [[rules]] entry with from = \"{}\" and to = \"{}\" if this \
             traffic is a 特定通信",
            policy.zone_name(d.from),
            policy.zone_name(d.to),
            policy.zone_name(d.from),
            policy.zone_name(d.to)
        );
    };
    let r = &policy.rules[i];
    let c = model::check_rule(r, &x);
    format!(
        "closest rule: {} allows {}\nbut {}",
        r.name,
        rule_summary(policy, r),
        mismatches(r, p, &c).join("; ")
    )
}

fn mismatches(r: &Rule, p: &Packet, c: &RuleCheck) -> Vec<String> {
    let mut v = Vec::new();
    if !c.protocol {
        let fam = if p.src.is_ipv4() { "IPv4" } else { "IPv6" };
        v.push(match r.protocol {
            Protocol::Icmp if p.proto == PROTO_ICMPV6 || !p.src.is_ipv4() => {
                format!(
                    "this packet is {} over {fam}; the rule's icmp covers IPv4 only",
                    proto_name(p.proto)
                )
            }
            Protocol::Icmpv6 if p.src.is_ipv4() => {
                format!(
                    "this packet is {} over {fam}; the rule's icmpv6 covers IPv6 only",
                    proto_name(p.proto)
                )
            }
            _ => format!(
                "this packet's protocol {} is not {}",
                proto_name(p.proto),
                r.protocol.label()
            ),
        });
    }
    if !c.port {
        if !p.has_l4() && p.frag == Frag::Later {
            v.push("this packet is a non-first fragment, so its port is unknown and only rules without ports apply".into());
        } else if !ports_known(p) {
            v.push(format!(
                "this packet ({}) has no port, and the rule lists ports",
                proto_name(p.proto)
            ));
        } else {
            v.push(format!("this packet's port {} is not in it", p.dport));
        }
    }
    if !c.source {
        v.push(format!("source {} is not in {}", p.src, nets(&r.sources)));
    }
    if !c.destination {
        v.push(format!(
            "destination {} is not in {}",
            p.dst,
            nets(&r.destinations)
        ));
    }
    if !c.mac {
        v.push(format!(
            "source MAC {} is not in its MAC list",
            mac_str(&p.src_mac)
        ));
    }
    if v.is_empty() {
        v.push("it matches".into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Model, Packet};
    use crate::policy::types::*;
    use std::path::PathBuf;

    fn policy() -> Policy {
        let zone =
            |name: &str, label: Option<&str>, ifs: &[(&str, Option<u16>)], nets: &[&str]| Zone {
                name: name.into(),
                label: label.map(Into::into),
                interfaces: ifs
                    .iter()
                    .map(|(n, v)| ZoneIface {
                        name: (*n).into(),
                        vlan: *v,
                        loc: Loc::default(),
                    })
                    .collect(),
                networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
                criticality: Criticality::High,
                segment: None,
                loc: Loc::default(),
            };
        Policy {
            path: PathBuf::from("policy.toml"),
            version: 1,
            mode: Mode::Enforce,
            defaults: Defaults::default(),
            zones: vec![
                zone(
                    "mynumber",
                    Some("マイナンバー利用事務系"),
                    &[("eth1", None)],
                    &["10.10.0.0/16"],
                ),
                zone(
                    "lgwan",
                    Some("LGWAN接続系"),
                    &[("eth2", None)],
                    &["10.20.0.0/16"],
                ),
            ],
            rules: vec![
                Rule {
                    name: "eltax-relay".into(),
                    description: Some("LGWAN relay -> 中間サーバー import".into()),
                    from: 1,
                    to: 0,
                    protocol: Protocol::Tcp,
                    ports: vec![
                        PortRange { lo: 443, hi: 443 },
                        PortRange { lo: 8000, hi: 8010 },
                    ],
                    sources: vec!["10.20.5.10/32".parse().unwrap()],
                    source_macs: vec![[0x52, 0x54, 0, 0x12, 0x34, 0x56]],
                    destinations: vec!["10.10.9.20/32".parse().unwrap()],
                    mode: Mode::Enforce,
                    acknowledge: None,
                    loc: Loc::default(),
                },
                Rule {
                    name: "ping".into(),
                    description: None,
                    from: 1,
                    to: 0,
                    protocol: Protocol::Icmp,
                    ports: vec![],
                    sources: vec![],
                    source_macs: vec![],
                    destinations: vec![],
                    mode: Mode::Audit,
                    acknowledge: None,
                    loc: Loc::default(),
                },
            ],
        }
    }

    fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
        let mut p = Packet::new(
            "eth2",
            src.parse().unwrap(),
            dst.parse().unwrap(),
            6,
            40000,
            dport,
        );
        p.src_mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        p
    }

    fn explain(pol: &Policy, p: &Packet) -> String {
        let d = Model::new(pol.clone()).explain(p);
        render(pol, p, &d)
    }

    #[test]
    fn allow_names_rule_and_description() {
        let pol = policy();
        let s = explain(&pol, &tcp("10.20.5.10", "10.10.9.20", 443));
        assert!(s.starts_with("verdict: allow (rule)"), "{s}");
        assert!(
            s.contains("lgwan (LGWAN接続系) -> mynumber (マイナンバー利用事務系)"),
            "{s}"
        );
        assert!(
            s.contains("rule:    eltax-relay — LGWAN relay -> 中間サーバー import"),
            "{s}"
        );
        assert!(!s.contains("hint:"), "{s}");
    }

    #[test]
    fn deny_port_hint() {
        let pol = policy();
        let s = explain(&pol, &tcp("10.20.5.10", "10.10.9.20", 22));
        assert!(s.starts_with("verdict: deny (no_rule)"), "{s}");
        assert!(
            s.contains("closest rule: eltax-relay allows tcp port 443, 8000-8010"),
            "{s}"
        );
        assert!(s.contains("this packet's port 22 is not in it"), "{s}");
    }

    #[test]
    fn deny_source_and_mac_hints() {
        let pol = policy();
        let mut p = tcp("10.20.5.11", "10.10.9.20", 443);
        p.src_mac = [2, 0, 0, 0, 0, 9];
        let s = explain(&pol, &p);
        assert!(
            s.contains("source 10.20.5.11 is not in 10.20.5.10/32"),
            "{s}"
        );
        assert!(
            s.contains("source MAC 02:00:00:00:00:09 is not in its MAC list"),
            "{s}"
        );
        let mut p = tcp("10.20.5.10", "10.10.9.20", 443);
        p.src_mac = [2, 0, 0, 0, 0, 9];
        let s = explain(&pol, &p);
        assert!(s.starts_with("verdict: deny (mac_mismatch)"), "{s}");
    }

    #[test]
    fn audit_rule_and_audit_mode() {
        let mut pol = policy();
        let p = Packet::new(
            "eth2",
            "10.20.1.1".parse().unwrap(),
            "10.10.1.1".parse().unwrap(),
            1,
            7,
            0,
        );
        let s = explain(&pol, &p);
        assert!(
            s.starts_with("verdict: audit (rule; only audit-mode rules allow it)"),
            "{s}"
        );
        assert!(s.contains("[audit mode]"), "{s}");
        pol.mode = Mode::Audit;
        let s = explain(&pol, &tcp("10.20.5.10", "10.10.9.20", 22));
        assert!(s.starts_with("verdict: audit (would deny: no_rule;"), "{s}");
    }

    #[test]
    fn spoofed_unknown_and_interface() {
        let pol = policy();
        let s = explain(&pol, &tcp("10.10.1.1", "10.10.9.20", 443));
        assert!(s.contains("spoofed_source"), "{s}");
        assert!(
            s.contains("source 10.10.1.1 belongs to zone mynumber (longest prefix 10.10.0.0/16)"),
            "{s}"
        );
        assert!(
            s.contains("entered through lgwan (LGWAN接続系); source address in mynumber"),
            "{s}"
        );
        let s = explain(&pol, &tcp("10.20.1.1", "192.0.2.1", 443));
        assert!(s.contains("destination 192.0.2.1 is in no zone"), "{s}");
        let mut p = tcp("10.20.1.1", "10.10.9.20", 443);
        p.ifname = "eth9".into();
        p.vlan = 5;
        let s = explain(&pol, &p);
        assert!(
            s.contains("interface eth9 vlan 5 belongs to no zone"),
            "{s}"
        );
        assert!(s.contains("add \"eth9.5\""), "{s}");
    }

    #[test]
    fn no_rule_for_zone_pair() {
        let pol = policy();
        let mut p = tcp("10.10.1.1", "10.20.1.1", 443);
        p.ifname = "eth1".into();
        let s = explain(&pol, &p);
        assert!(s.contains("no rule exists from mynumber to lgwan"), "{s}");
    }

    #[test]
    fn protocol_family_hint() {
        let mut pol = policy();
        pol.zones[0].networks.push("fd10::/48".parse().unwrap());
        pol.zones[1].networks.push("fd20::/48".parse().unwrap());
        pol.rules.remove(0);
        let p = Packet::new(
            "eth2",
            "fd20::1".parse().unwrap(),
            "fd10::1".parse().unwrap(),
            58,
            7,
            0,
        );
        let s = explain(&pol, &p);
        assert!(s.contains("the rule's icmp covers IPv4 only"), "{s}");
    }
}

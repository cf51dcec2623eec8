//! Validate: a parsed [`Document`] → the [`Policy`] the rest of the agent trusts. These are the
//! checks that relate values to each other: unique names, interfaces and networks; the zones a
//! rule names; whether a rule's addresses lie in its zones; limits of the data path; the
//! host's interfaces; the warnings (identical rules, zones no rule uses); and the guideline
//! lint (`lint`) on every rule that passed them.
//!
//! The public entry points of the policy front end live here: [`load`], [`check_bytes`],
//! [`check_str`] and [`parse_str`]. They return the policy with its warnings, or every
//! diagnostic of the file.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::diagnostic::{Diagnostic, Diagnostics, LineIndex, Sink};
use super::lint;
use super::parse::{self, At, Document, List, RuleDoc, ZoneDoc};
use super::types::{Loc, Mac, Policy, PortRange, Protocol, Rule, Zone};

/// Zones a policy may define: the data path numbers zones in one byte with 0 meaning "no
/// zone", and its per-zone tables have `zone_agent_common::MAX_ZONES` slots (so one fewer
/// zone than slots). `parse` checks it before reading any zone.
pub const MAX_POLICY_ZONES: usize = zone_agent_common::MAX_ZONES as usize - 1;

/// Rules a policy may define (the size the data path's rule tables are dimensioned and
/// benchmarked for; below the tables' slot count, `zone_agent_common::MAX_RULES`). `parse`
/// checks it before reading any rule.
pub const MAX_POLICY_RULES: usize = 100_000;
const _: () = assert!(MAX_POLICY_RULES <= zone_agent_common::MAX_RULES as usize);

/// Where interfaces are looked up on the host.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// What `check` needs to know about the host the policy is meant for.
pub trait Environment {
    fn interface_exists(&self, name: &str) -> bool;
}

/// This host: an interface exists if `/sys/class/net/<name>` does. That directory shows the
/// network namespace sysfs was mounted in, which is the current one for the agent and for
/// `ip netns exec` (it remounts `/sys`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostEnvironment;

impl Environment for HostEnvironment {
    fn interface_exists(&self, name: &str) -> bool {
        // `name` passed `parse::interface`: no '/', not "." or "..", so it is one path element.
        Path::new(SYS_CLASS_NET).join(name).exists()
    }
}

/// No host at hand (`policy check --offline`, tests): every interface exists.
#[derive(Clone, Copy, Debug, Default)]
pub struct OfflineEnvironment;

impl Environment for OfflineEnvironment {
    fn interface_exists(&self, _name: &str) -> bool {
        true
    }
}

/// Checks `text` as the policy file `path` without looking at the host's interfaces.
pub fn parse_str(path: &Path, text: &str) -> Result<(Policy, Vec<Diagnostic>), Diagnostics> {
    check_str(path, text, &OfflineEnvironment)
}

/// Checks `text` as the policy file `path` (used in messages): the policy and its warnings, or
/// every error (and warning) in the file, in file order.
pub fn check_str(
    path: &Path,
    text: &str,
    env: &dyn Environment,
) -> Result<(Policy, Vec<Diagnostic>), Diagnostics> {
    let mut sink = Sink::new(path, text);
    let Some(doc) = parse::document(text, &mut sink) else {
        return Err(sink.reject());
    };
    let policy = validate(doc, env, &mut sink);
    sink.finish(policy)
}

/// Reads (through the bounded [`read`](super::read::read)) and checks the policy file at `path`.
pub fn load(path: &Path, env: &dyn Environment) -> Result<(Policy, Vec<Diagnostic>), Diagnostics> {
    let bytes = super::read::read(path)?;
    check_bytes(path, &bytes, env)
}

/// Checks the contents of the policy file `path` as [`load`] read them: bytes that are not
/// UTF-8 are one error at the first bad byte.
pub fn check_bytes(
    path: &Path,
    bytes: &[u8],
    env: &dyn Environment,
) -> Result<(Policy, Vec<Diagnostic>), Diagnostics> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        // The valid prefix is UTF-8 by definition, so the location is exact.
        let prefix = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
        Diagnostic::error(
            path,
            LineIndex::new(prefix).loc(prefix.len()),
            "the policy file is not valid UTF-8",
            Some("save the file as UTF-8 (TOML files are UTF-8)".into()),
        )
    })?;
    check_str(path, text, env)
}

fn validate(doc: Document, env: &dyn Environment, sink: &mut Sink<'_>) -> Policy {
    check_zones(&doc.zones, env, sink);
    let index = ZoneIndex::new(&doc.zones);
    let rules = rules(&doc.rules, &index, sink);
    let zones = doc.zones.into_iter().map(zone).collect();
    Policy {
        path: PathBuf::from(sink.path()),
        version: doc.version,
        mode: doc.mode,
        defaults: doc.defaults,
        zones,
        rules,
    }
}

fn zone(z: ZoneDoc) -> Zone {
    Zone {
        // A zone without a usable name has been reported; the policy is rejected anyway.
        name: z.name.map(|n| n.value).unwrap_or_default(),
        label: z.label,
        interfaces: z.interfaces.items.into_iter().map(|i| i.value).collect(),
        networks: z.networks.items.into_iter().map(|n| n.value).collect(),
        criticality: z.criticality,
        segment: z.segment.map(|s| s.value),
        loc: z.loc,
    }
}

// === Zones ===

fn check_zones(zones: &[ZoneDoc], env: &dyn Environment, sink: &mut Sink<'_>) {
    let mut names: HashMap<&str, Loc> = HashMap::new();
    let mut ifaces: HashMap<(&str, Option<u16>), (usize, Loc)> = HashMap::new();
    let mut networks: HashMap<IpNet, (usize, Loc)> = HashMap::new();
    for (zi, z) in zones.iter().enumerate() {
        if let Some(name) = z.name.as_ref().filter(|n| !n.value.is_empty()) {
            match names.entry(&name.value) {
                MapEntry::Occupied(first) => sink.error(
                    name.loc,
                    format!("duplicate zone name \"{}\"", name.value),
                    format!(
                        "zone \"{}\" is already defined at line {}; zone names must be unique",
                        name.value,
                        first.get().line
                    ),
                ),
                MapEntry::Vacant(slot) => {
                    slot.insert(name.loc);
                }
            }
        }

        for iface in &z.interfaces.items {
            let i = &iface.value;
            match ifaces.entry((&i.name, i.vlan)) {
                MapEntry::Occupied(first) => {
                    let (first_zone, first_loc) = *first.get();
                    if first_zone == zi {
                        sink.warning(
                            iface.loc,
                            format!("interface {i} is listed twice in {}", z.what),
                            format!(
                                "remove the repeated entry (the first is at line {})",
                                first_loc.line
                            ),
                        );
                    } else {
                        sink.error(
                            iface.loc,
                            format!("interface {i} is already used by {}", zones[first_zone].what),
                            format!(
                                "an interface (or interface.VLAN) belongs to one zone only (first use at line {}); \
                                 to share a link between zones give each zone its own VLAN: \"{}.<vlan id>\"",
                                first_loc.line, i.name
                            ),
                        );
                    }
                }
                MapEntry::Vacant(slot) => {
                    slot.insert((zi, iface.loc));
                }
            }
            if !env.interface_exists(&i.name) {
                sink.error(
                    iface.loc,
                    format!(
                        "interface not found: \"{}\" in {} field `interfaces`",
                        i.name, z.what
                    ),
                    "check the name with `ip link` on the gateway, or use `policy check --offline` \
                     to check a policy written for another host",
                );
            }
        }

        for net in &z.networks.items {
            match networks.entry(net.value) {
                MapEntry::Occupied(first) => {
                    let (first_zone, first_loc) = *first.get();
                    if first_zone == zi {
                        sink.warning(
                            net.loc,
                            format!("network {} is listed twice in {}", net.value, z.what),
                            format!(
                                "remove the repeated entry (the first is at line {})",
                                first_loc.line
                            ),
                        );
                    } else {
                        sink.error(
                            net.loc,
                            format!(
                                "the same network {} is in {} and in {}",
                                net.value, zones[first_zone].what, z.what
                            ),
                            format!(
                                "each network belongs to one zone (first at line {}); nested networks are fine, \
                                 e.g. 0.0.0.0/0 for internet beside 10.10.0.0/16 for mynumber",
                                first_loc.line
                            ),
                        );
                    }
                }
                MapEntry::Vacant(slot) => {
                    slot.insert((zi, net.loc));
                }
            }
        }
        lint::zone(z, sink);
    }
}

/// Zone names and networks, for resolving the zones and addresses rules name.
struct ZoneIndex<'d> {
    zones: &'d [ZoneDoc],
    by_name: HashMap<&'d str, usize>,
    /// The usable names, in file order, for help text.
    defined: Vec<&'d str>,
    /// Every zone network with its zone, for longest-prefix matching.
    networks: Vec<(IpNet, usize)>,
    /// Every zone's networks were usable: which zone an address is in is known exactly.
    exact: bool,
}

impl<'d> ZoneIndex<'d> {
    fn new(zones: &'d [ZoneDoc]) -> Self {
        let mut by_name = HashMap::new();
        let mut defined = Vec::new();
        for (i, z) in zones.iter().enumerate() {
            if let Some(n) = z.name.as_ref().filter(|n| !n.value.is_empty()) {
                // The first of duplicate names wins (the second is an error already).
                if let MapEntry::Vacant(slot) = by_name.entry(n.value.as_str()) {
                    slot.insert(i);
                    defined.push(n.value.as_str());
                }
            }
        }
        let networks = zones
            .iter()
            .enumerate()
            .flat_map(|(i, z)| z.networks.values().map(move |n| (*n, i)))
            .collect();
        let exact = zones.iter().all(|z| z.networks_complete);
        ZoneIndex {
            zones,
            by_name,
            defined,
            networks,
            exact,
        }
    }

    /// The zone a rule names in `from`/`to`, or an error listing the zones there are.
    fn resolve(
        &self,
        name: &At<String>,
        field: &str,
        what: &str,
        sink: &mut Sink<'_>,
    ) -> Option<usize> {
        if let Some(&i) = self.by_name.get(name.value.as_str()) {
            return Some(i);
        }
        let help = if self.defined.is_empty() {
            "no zones are defined; add [[zones]] tables".to_owned()
        } else {
            format!("defined zones are: {}", self.defined.join(", "))
        };
        sink.error(
            name.loc,
            format!("unknown zone \"{}\" in {what} field `{field}`", name.value),
            help,
        );
        None
    }

    /// The zone of a whole CIDR: the zone whose network is the longest prefix containing all
    /// of it, as the data path's longest-prefix match would find for any address in it.
    fn zone_of(&self, net: &IpNet) -> Option<usize> {
        self.networks
            .iter()
            .filter(|(n, _)| n.contains(net))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|&(_, zone)| zone)
    }

    /// The name of zone `i` (empty if it has none; that zone was reported).
    fn name(&self, i: usize) -> &'d str {
        self.zones
            .get(i)
            .and_then(|z| z.name.as_ref())
            .map_or("", |n| n.value.as_str())
    }

    fn networks_of(&self, zone: usize) -> impl Iterator<Item = &IpNet> {
        self.networks
            .iter()
            .filter(move |(_, z)| *z == zone)
            .map(|(n, _)| n)
    }
}

// === Rules ===

/// What makes two rules match the same packets the same way: everything but name and
/// description, with lists as sets.
#[derive(Hash, PartialEq, Eq)]
struct RuleShape {
    from: usize,
    to: usize,
    protocol: Protocol,
    ports: Vec<PortRange>,
    sources: Vec<IpNet>,
    source_macs: Vec<Mac>,
    destinations: Vec<IpNet>,
    audit: bool,
}

fn as_set<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

impl RuleShape {
    fn of(r: &Rule) -> Self {
        RuleShape {
            from: r.from,
            to: r.to,
            protocol: r.protocol,
            ports: as_set(&r.ports),
            sources: as_set(&r.sources),
            source_macs: as_set(&r.source_macs),
            destinations: as_set(&r.destinations),
            audit: r.audit(),
        }
    }
}

fn rules(docs: &[RuleDoc], zones: &ZoneIndex<'_>, sink: &mut Sink<'_>) -> Vec<Rule> {
    let mut names: HashMap<&str, Loc> = HashMap::new();
    let mut shapes: HashMap<RuleShape, usize> = HashMap::new();
    let mut used = vec![false; zones.zones.len()];
    let mut all_resolved = true;
    let mut out = Vec::with_capacity(docs.len());
    for r in docs {
        let errors_before = sink.error_count();
        if let Some(name) = r.name.as_ref().filter(|n| !n.value.is_empty()) {
            match names.entry(&name.value) {
                MapEntry::Occupied(first) => sink.error(
                    name.loc,
                    format!("duplicate rule name \"{}\"", name.value),
                    format!(
                        "a rule named \"{}\" is already defined at line {}; rule names must be unique \
                         (they name the rule's counters)",
                        name.value,
                        first.get().line
                    ),
                ),
                MapEntry::Vacant(slot) => {
                    slot.insert(name.loc);
                }
            }
        }

        let from = r
            .from
            .as_ref()
            .and_then(|f| zones.resolve(f, "from", &r.what, sink));
        let to =
            r.to.as_ref()
                .and_then(|t| zones.resolve(t, "to", &r.what, sink));
        all_resolved &= from.is_some() && to.is_some();
        for zone in [from, to].into_iter().flatten() {
            if let Some(u) = used.get_mut(zone) {
                *u = true;
            }
        }
        check_rule(r, from, to, zones, sink);

        let (Some(from), Some(to), Some(protocol)) = (from, to, &r.protocol) else {
            continue;
        };
        let rule = Rule {
            name: r.name.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
            description: r.description.clone(),
            from,
            to,
            protocol: protocol.value,
            ports: r.ports.values().copied().collect(),
            sources: r.sources.values().copied().collect(),
            source_macs: r.source_macs.values().copied().collect(),
            destinations: r.destinations.values().copied().collect(),
            mode: r.mode,
            acknowledge: r.acknowledge.as_ref().map(|a| a.value.clone()),
            loc: r.loc,
        };
        // A rule with errors is incomplete: comparing or linting it would give false findings
        // (a source list with a bad entry left out looks like no source limitation).
        if r.clean && sink.error_count() == errors_before {
            lint::rule(r, &rule, &zones.zones[from], &zones.zones[to], sink);
            match shapes.entry(RuleShape::of(&rule)) {
                MapEntry::Occupied(first) => {
                    let first = &out[*first.get()];
                    warn_identical(r, first, sink);
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(out.len());
                }
            }
        }
        out.push(rule);
    }

    if docs.is_empty() {
        // One warning, not one per zone.
        if let Some(first) = zones.zones.first() {
            sink.warning(
                first.loc,
                "the policy has no rules: all traffic between zones is denied",
                "add a [[rules]] table for each 特定通信 that must pass between zones",
            );
        }
    } else if all_resolved {
        // A rule naming an unknown zone may have meant an "unused" one: don't guess.
        warn_unused(zones, &used, sink);
    }
    out
}

/// What a rule says, given the zones it names (`None`: unknown, reported already).
fn check_rule(
    r: &RuleDoc,
    from: Option<usize>,
    to: Option<usize>,
    zones: &ZoneIndex<'_>,
    sink: &mut Sink<'_>,
) {
    if let (Some(f), Some(t), Some(to_name)) = (from, to, &r.to)
        && f == t
    {
        sink.error(
            to_name.loc,
            format!(
                "{} has the same zone \"{}\" in `from` and `to`",
                r.what, to_name.value
            ),
            "traffic inside a zone is governed by [defaults] intra_zone; rules allow traffic \
             between two different zones",
        );
    }

    if let Some(p) = &r.protocol {
        if !p.value.has_ports() && !r.ports.items.is_empty() {
            sink.error(
                r.ports.loc,
                format!("`ports` only apply to tcp and udp, but {} has protocol \"{}\"", r.what, p.value.label()),
                "remove `ports`, or set protocol = \"tcp\" or \"udp\" (write one rule per protocol)",
            );
        }
        check_families(r, p, sink);
    }

    // With a zone network left out, an address's zone could be misjudged: report only
    // the network problem until it is fixed.
    if zones.exact {
        if let Some(f) = from {
            for net in &r.sources.items {
                check_inside(zones, net, f, "source", "from", &r.what, sink);
            }
        }
        if let Some(t) = to {
            for net in &r.destinations.items {
                check_inside(zones, net, t, "destination", "to", &r.what, sink);
            }
        }
    }
}

fn warn_identical(r: &RuleDoc, first: &Rule, sink: &mut Sink<'_>) {
    let loc = r.name.as_ref().map_or(r.loc, |n| n.loc);
    sink.warning(
        loc,
        format!(
            "{} is identical to rule \"{}\" (line {}) except for its name",
            r.what, first.name, first.loc.line
        ),
        format!(
            "remove one of them: a packet counts toward the first matching rule only, so {} would never count anything",
            r.what
        ),
    );
}

fn warn_unused(zones: &ZoneIndex<'_>, used: &[bool], sink: &mut Sink<'_>) {
    for (i, (z, _)) in zones
        .zones
        .iter()
        .zip(used)
        .enumerate()
        .filter(|(_, (_, used))| !**used)
    {
        // Only zones rules can name: not a second zone of the same name, not a nameless one.
        let Some(name) = z
            .name
            .as_ref()
            .filter(|n| zones.by_name.get(n.value.as_str()) == Some(&i))
        else {
            continue;
        };
        sink.warning(
            name.loc,
            format!("{} is not used by any rule: all traffic between it and other zones is denied", z.what),
            format!(
                "fine for a fully isolated segment; otherwise add a [[rules]] entry with from = \"{0}\" or to = \"{0}\"",
                name.value
            ),
        );
    }
}

/// A rule's source (or destination) must lie in its from (or to) zone, judged the way the data
/// path judges addresses: by the longest zone prefix.
fn check_inside(
    zones: &ZoneIndex<'_>,
    net: &At<IpNet>,
    zone: usize,
    role: &str,
    side: &str,
    what: &str,
    sink: &mut Sink<'_>,
) {
    let actual = zones.zone_of(&net.value);
    if actual == Some(zone) {
        return;
    }
    let name = zones.name(zone);
    let own: Vec<String> = zones.networks_of(zone).map(ToString::to_string).collect();
    let covered: Vec<String> = zones
        .networks_of(zone)
        .filter(|n| net.value.contains(*n))
        .map(ToString::to_string)
        .collect();
    let message = if !covered.is_empty() {
        format!(
            "{role} {} is wider than {side}-zone {name}: it reaches beyond {} ({what})",
            net.value,
            covered.join(", ")
        )
    } else {
        match actual.map(|z| zones.name(z)) {
            Some(other) => format!(
                "{role} {} is in zone {other}, not in {side}-zone {name} ({what})",
                net.value
            ),
            None => format!(
                "{role} {} is in no zone, not in {side}-zone {name} ({what})",
                net.value
            ),
        }
    };
    sink.error(
        net.loc,
        message,
        format!(
            "{side}-zone {name} has the networks {}; list addresses inside them, or correct the rule's `{side}`",
            own.join(", ")
        ),
    );
}

/// Protocols and address families that can never meet: icmp is IPv4's, icmpv6 is IPv6's, and a
/// packet has one family for both addresses.
fn check_families(r: &RuleDoc, protocol: &At<Protocol>, sink: &mut Sink<'_>) {
    let only = |list: &List<IpNet>, v4: bool| {
        !list.items.is_empty() && list.values().all(|n| matches!(n, IpNet::V4(_)) == v4)
    };
    let (family, other, fix) = match protocol.value {
        Protocol::Icmp => ("IPv4", "IPv6", "icmpv6"),
        Protocol::Icmpv6 => ("IPv6", "IPv4", "icmp"),
        _ => ("", "", ""),
    };
    if !family.is_empty() {
        let wrong_is_v4 = protocol.value == Protocol::Icmpv6;
        for (role, list) in [("sources", &r.sources), ("destinations", &r.destinations)] {
            if only(list, wrong_is_v4) {
                sink.error(
                    protocol.loc,
                    format!(
                        "{} can never match: protocol {} is {family} only, but all its {role} are {other}",
                        r.what,
                        protocol.value.label()
                    ),
                    format!("use protocol = \"{fix}\" for {other} (one rule per family), or list {family} {role}"),
                );
            }
        }
    }
    let mixed = (only(&r.sources, true) && only(&r.destinations, false))
        || (only(&r.sources, false) && only(&r.destinations, true));
    if mixed {
        sink.error(
            r.destinations.loc,
            format!(
                "{} can never match: its sources and destinations are of different IP versions",
                r.what
            ),
            "a packet is IPv4 or IPv6 end to end; write one rule per address family",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONES: &str = "version = 1\n\
        [[zones]]\nname = \"mynumber\"\ninterfaces = [\"eth1\"]\nnetworks = [\"10.10.0.0/16\", \"fd10::/48\"]\n\
        [[zones]]\nname = \"lgwan\"\ninterfaces = [\"eth2\"]\nnetworks = [\"10.20.0.0/16\"]\n\
        [[zones]]\nname = \"internet\"\ninterfaces = [\"eth3\"]\nnetworks = [\"0.0.0.0/0\", \"::/0\"]\n";

    /// Every diagnostic of `ZONES` + `rules` as "line:col severity: message".
    fn check(rules: &str) -> Vec<String> {
        let text = format!("{ZONES}{rules}");
        let diags = match parse_str(Path::new("t.toml"), &text) {
            Ok((_, warnings)) => warnings,
            Err(diags) => diags.0,
        };
        diags
            .iter()
            .map(|d| format!("{}:{} {}: {}", d.line, d.col, d.severity, d.message))
            .collect()
    }

    fn rule(name: &str, from: &str, to: &str, extra: &str) -> String {
        format!(
            "[[rules]]\nname = \"{name}\"\nfrom = \"{from}\"\nto = \"{to}\"\nprotocol = \"tcp\"\n{extra}\n"
        )
    }

    /// Rules that use every zone, so that no "unused zone" warning muddles a test.
    fn baseline() -> String {
        rule("base-1", "lgwan", "mynumber", "") + &rule("base-2", "lgwan", "internet", "")
    }

    #[test]
    fn zone_of_a_cidr_is_the_longest_prefix_containing_all_of_it() {
        let text = format!("{ZONES}{}", baseline());
        let mut sink = Sink::new(Path::new("t.toml"), &text);
        let Some(doc) = parse::document(&text, &mut sink) else {
            panic!("parses")
        };
        let index = ZoneIndex::new(&doc.zones);
        let zone = |s: &str| s.parse::<IpNet>().ok().and_then(|n| index.zone_of(&n));
        assert_eq!(zone("10.10.9.20/32"), Some(0));
        assert_eq!(zone("10.10.0.0/16"), Some(0));
        assert_eq!(zone("fd10:0:0:1::/64"), Some(0));
        assert_eq!(zone("10.20.5.0/24"), Some(1));
        // Nested: the internet zone's 0.0.0.0/0 holds what the other zones don't.
        assert_eq!(zone("192.0.2.1/32"), Some(2));
        // Wider than mynumber's /16: only 0.0.0.0/0 contains all of it.
        assert_eq!(zone("10.0.0.0/8"), Some(2));
        assert_eq!(zone("fd20::/48"), Some(2));
    }

    #[test]
    fn address_with_no_zone_at_all() {
        let text = "version = 1\n\
            [[zones]]\nname = \"a\"\ninterfaces = [\"eth1\"]\nnetworks = [\"10.1.0.0/16\"]\n\
            [[zones]]\nname = \"b\"\ninterfaces = [\"eth2\"]\nnetworks = [\"10.2.0.0/16\"]\n\
            [[rules]]\nname = \"r\"\nfrom = \"a\"\nto = \"b\"\nprotocol = \"any\"\ndestinations = [\"192.0.2.0/24\"]\n";
        let diags = parse_str(Path::new("t.toml"), text).expect_err("rejected");
        assert_eq!(diags.len(), 1, "{diags}");
        assert!(
            diags.0[0]
                .message
                .contains("destination 192.0.2.0/24 is in no zone, not in to-zone b"),
            "{diags}"
        );
        assert_eq!(diags.0[0].loc(), Loc { line: 15, col: 17 });
    }

    #[test]
    fn a_valid_policy_has_no_diagnostics() {
        assert_eq!(check(&baseline()), Vec::<String>::new());
    }

    #[test]
    fn identical_rules_ignore_name_description_and_list_order() {
        let a = rule(
            "a",
            "lgwan",
            "mynumber",
            "ports = [\"443\", \"80\"]\nsources = [\"10.20.0.0/24\"]",
        );
        let b = rule(
            "b",
            "lgwan",
            "mynumber",
            "description = \"copy\"\nports = [80, \"443\", \"443\"]\nsources = [\"10.20.0.0/24\"]",
        );
        let got = check(&(baseline() + &a + &b));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("warning: rule \"b\" is identical to rule \"a\" (line"),
            "{got:?}"
        );
        // A different mode makes a different rule (an audit trial beside the enforced one).
        let c = rule(
            "c",
            "lgwan",
            "mynumber",
            "ports = [\"443\", \"80\"]\nsources = [\"10.20.0.0/24\"]\nmode = \"audit\"",
        );
        assert_eq!(check(&(baseline() + &a + &c)), Vec::<String>::new());
    }

    #[test]
    fn a_zone_no_rule_uses_is_a_warning() {
        let got = check(&rule("r", "lgwan", "mynumber", ""));
        assert_eq!(
            got,
            [
                "11:8 warning: zone \"internet\" is not used by any rule: all traffic between it and other zones is denied"
            ]
        );
        let got = check("");
        assert_eq!(
            got,
            ["2:1 warning: the policy has no rules: all traffic between zones is denied"]
        );
    }

    #[test]
    fn an_unknown_zone_is_not_also_reported_as_an_unused_one() {
        let got = check(&(rule("r", "lgwan", "mynumber", "") + &rule("s", "lgwan", "internt", "")));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("error: unknown zone \"internt\" in rule \"s\" field `to`"),
            "{got:?}"
        );
    }

    #[test]
    fn an_unusable_zone_network_does_not_cascade_into_address_errors() {
        // With lgwan's network unreadable, 10.20.5.0/24 would look like an internet address.
        let text = ZONES.replace("\"10.20.0.0/16\"", "\"10.20.0.0/16x\"")
            + &baseline()
            + &rule("r", "lgwan", "mynumber", "sources = [\"10.20.5.0/24\"]");
        let diags = parse_str(Path::new("t.toml"), &text).expect_err("rejected");
        assert_eq!(diags.len(), 1, "{diags}");
        assert!(
            diags.0[0]
                .message
                .starts_with("invalid CIDR \"10.20.0.0/16x\""),
            "{diags}"
        );
    }

    #[test]
    fn host_bits_in_a_zone_network_still_place_addresses() {
        // The canonical network stands in, so the source is judged and found in lgwan.
        let text = ZONES.replace("\"10.20.0.0/16\"", "\"10.20.0.1/16\"")
            + &baseline()
            + &rule("r", "lgwan", "mynumber", "sources = [\"10.20.5.0/24\"]");
        let diags = parse_str(Path::new("t.toml"), &text).expect_err("rejected");
        assert_eq!(diags.len(), 1, "{diags}");
        assert!(diags.0[0].message.contains("has host bits set"), "{diags}");
    }

    #[test]
    fn a_rule_missing_its_protocol_still_has_its_zones_checked() {
        let text = "[[rules]]\nname = \"r\"\nfrom = \"lgwan\"\nto = \"lgwn\"\n";
        let got = check(&(baseline() + text));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("missing key `protocol`"), "{got:?}");
        assert!(got[1].contains("unknown zone \"lgwn\""), "{got:?}");
    }

    #[test]
    fn icmp_with_some_ipv4_sources_can_match() {
        let r = "[[rules]]\nname = \"p\"\nfrom = \"mynumber\"\nto = \"lgwan\"\nprotocol = \"icmp\"\n\
                 sources = [\"10.10.1.0/24\", \"fd10::/64\"]\n";
        assert_eq!(check(&(baseline() + r)), Vec::<String>::new());
    }

    #[test]
    fn environments() {
        assert!(OfflineEnvironment.interface_exists("anything0"));
        assert!(!HostEnvironment.interface_exists("za-none-9999"));
        let text = format!("{ZONES}{}", baseline());
        struct NoInterfaces;
        impl Environment for NoInterfaces {
            fn interface_exists(&self, _: &str) -> bool {
                false
            }
        }
        let diags = check_str(Path::new("t.toml"), &text, &NoInterfaces).expect_err("rejected");
        let locs: Vec<Loc> = diags.iter().map(Diagnostic::loc).collect();
        assert_eq!(
            locs,
            [
                Loc { line: 4, col: 15 },
                Loc { line: 8, col: 15 },
                Loc { line: 12, col: 15 }
            ]
        );
        assert!(parse_str(Path::new("t.toml"), &text).is_ok());
    }
}

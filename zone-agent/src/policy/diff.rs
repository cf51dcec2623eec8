//! `policy diff OLD NEW`: what reloading NEW over OLD would change, in the operator's terms.
//!
//! Zones and rules are matched by name (a renamed rule is one removed and one added). For a
//! rule in both files every dimension is compared by what it lets through, not by how it is
//! written: a list is "wider" when it covers addresses (ports, MACs) the other does not, and
//! two lists that cover the same addresses are the same reach even when written differently.
//! An absent `sources` (`destinations`) means the whole from (to) zone, an absent
//! `source_macs` any MAC, absent `ports` every port: each the widest value of its dimension.
//! What only changes how something is written (comments, list order, duplicates, "80", "81"
//! for "80-81", two /25 for their /24) is no difference.
//!
//! Each difference is classified as [`Change::Wider`], [`Change::Narrower`], [`Change::Both`]
//! (wider in one place, narrower in another) or [`Change::Neutral`] (no effect on what passes:
//! descriptions, labels, a rule's audit mode, criticality, order).

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};

use ipnet::IpNet;

use super::text::escape;
use super::types::{Action, Criticality, Mac, Mode, Policy, PortRange, Protocol, Rule, Zone};

/// How one difference changes what the policy lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Wider,
    Narrower,
    Both,
    Neutral,
}

impl Change {
    fn of(wider: bool, narrower: bool) -> Option<Change> {
        match (wider, narrower) {
            (false, false) => None,
            (true, false) => Some(Change::Wider),
            (false, true) => Some(Change::Narrower),
            (true, true) => Some(Change::Both),
        }
    }

    /// The change of several differences together.
    fn overall(changes: impl IntoIterator<Item = Change>) -> Change {
        let (mut wider, mut narrower) = (false, false);
        for c in changes {
            wider |= matches!(c, Change::Wider | Change::Both);
            narrower |= matches!(c, Change::Narrower | Change::Both);
        }
        Change::of(wider, narrower).unwrap_or(Change::Neutral)
    }

    fn verb(self) -> &'static str {
        match self {
            Change::Wider => "widened",
            Change::Narrower => "narrowed",
            Change::Both => "changed (wider and narrower)",
            Change::Neutral => "changed",
        }
    }
}

/// One difference: which dimension, how it changes the reach, and the concrete difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// "ports", "sources", "mode", "defaults.unknown", ...
    pub what: String,
    pub change: Change,
    /// "widened", "narrowed", ..., or a word of the dimension's own ("raised").
    pub verb: &'static str,
    /// "+8000-8010", "-10.20.0.0/16 +10.20.5.10/32", "enforce -> audit", ...
    pub detail: String,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.what, self.verb, self.detail)
    }
}

fn item(what: &str, change: Change, detail: impl Into<String>) -> Item {
    Item {
        what: what.to_owned(),
        change,
        verb: change.verb(),
        detail: detail.into(),
    }
}

/// A zone or rule present in both files that differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub name: String,
    pub items: Vec<Item>,
}

impl Changed {
    pub fn change(&self) -> Change {
        Change::overall(self.items.iter().map(|i| i.change))
    }
}

/// Everything that differs between two validated policies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// `mode` and `[defaults]`.
    pub global: Vec<Item>,
    /// Zone name and a one-line description, in NEW's order.
    pub zones_added: Vec<(String, String)>,
    /// In OLD's order.
    pub zones_removed: Vec<(String, String)>,
    pub zones_changed: Vec<Changed>,
    /// Rule name and a one-line description, in NEW's order.
    pub rules_added: Vec<(String, String)>,
    /// In OLD's order.
    pub rules_removed: Vec<(String, String)>,
    pub rules_changed: Vec<Changed>,
    /// The rules of both files, in OLD's and NEW's order, when that order changed (counters
    /// go to the first matching rule).
    pub order: Option<(Vec<String>, Vec<String>)>,
}

impl PolicyDiff {
    pub fn is_empty(&self) -> bool {
        *self == PolicyDiff::default()
    }

    /// The text `policy diff` prints. Every value is [`escape`]d on its own: a description or
    /// label cannot move the cursor, overprint a line or start a line of its own.
    pub fn render(&self) -> String {
        let e = |x: &dyn fmt::Display| escape(&x.to_string()).into_owned();
        let mut s = String::new();
        for i in &self.global {
            let _ = writeln!(s, "{}", e(i));
        }
        for (name, desc) in &self.zones_added {
            let _ = writeln!(s, "+ zone \"{}\": {}", e(name), e(desc));
        }
        for (name, desc) in &self.zones_removed {
            let _ = writeln!(s, "- zone \"{}\": {}", e(name), e(desc));
        }
        for z in &self.zones_changed {
            let _ = writeln!(s, "~ zone \"{}\" {}:", e(&z.name), z.change().verb());
            for i in &z.items {
                let _ = writeln!(s, "    {}", e(i));
            }
        }
        for (name, desc) in &self.rules_added {
            let _ = writeln!(s, "+ rule \"{}\": {}", e(name), e(desc));
        }
        for (name, desc) in &self.rules_removed {
            let _ = writeln!(s, "- rule \"{}\": {}", e(name), e(desc));
        }
        for r in &self.rules_changed {
            let _ = writeln!(s, "~ rule \"{}\" {}:", e(&r.name), r.change().verb());
            for i in &r.items {
                let _ = writeln!(s, "    {}", e(i));
            }
        }
        if let Some((old, new)) = &self.order {
            let _ = writeln!(
                s,
                "rule order changed (counters go to the first matching rule): {} -> {}",
                e(&old.join(", ")),
                e(&new.join(", "))
            );
        }
        let _ = writeln!(s, "{}", self.summary());
        s
    }

    /// One line: how many of what.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no difference: reloading NEW over OLD changes nothing".to_owned();
        }
        let count = |c: Change| {
            self.rules_changed
                .iter()
                .filter(|r| r.change() == c)
                .count()
        };
        let mut parts = Vec::new();
        let mut push = |n: usize, what: &str| {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        };
        push(self.rules_added.len(), "rule(s) added");
        push(self.rules_removed.len(), "rule(s) removed");
        push(count(Change::Wider), "rule(s) widened");
        push(count(Change::Narrower), "rule(s) narrowed");
        push(count(Change::Both), "rule(s) wider and narrower");
        push(
            count(Change::Neutral),
            "rule(s) changed without effect on traffic",
        );
        push(self.zones_added.len(), "zone(s) added");
        push(self.zones_removed.len(), "zone(s) removed");
        push(self.zones_changed.len(), "zone(s) changed");
        push(self.global.len(), "global setting(s) changed");
        if self.order.is_some() {
            parts.push("rule order changed".to_owned());
        }
        parts.join(", ")
    }
}

/// What reloading `new` over `old` changes.
pub fn diff(old: &Policy, new: &Policy) -> PolicyDiff {
    let mut d = PolicyDiff {
        global: global(old, new),
        ..PolicyDiff::default()
    };

    let old_zones: HashMap<&str, &Zone> = old.zones.iter().map(|z| (z.name.as_str(), z)).collect();
    let new_zones: HashMap<&str, &Zone> = new.zones.iter().map(|z| (z.name.as_str(), z)).collect();
    for z in &new.zones {
        match old_zones.get(z.name.as_str()) {
            None => d.zones_added.push((z.name.clone(), describe_zone(z))),
            Some(o) => {
                let items = zone(o, z);
                if !items.is_empty() {
                    d.zones_changed.push(Changed {
                        name: z.name.clone(),
                        items,
                    });
                }
            }
        }
    }
    for z in old
        .zones
        .iter()
        .filter(|z| !new_zones.contains_key(z.name.as_str()))
    {
        d.zones_removed.push((z.name.clone(), describe_zone(z)));
    }

    let old_rules: HashMap<&str, &Rule> = old.rules.iter().map(|r| (r.name.as_str(), r)).collect();
    let new_rules: HashMap<&str, &Rule> = new.rules.iter().map(|r| (r.name.as_str(), r)).collect();
    for r in &new.rules {
        match old_rules.get(r.name.as_str()) {
            None => d.rules_added.push((r.name.clone(), describe_rule(new, r))),
            Some(o) => {
                let items = rule(old, o, new, r);
                if !items.is_empty() {
                    d.rules_changed.push(Changed {
                        name: r.name.clone(),
                        items,
                    });
                }
            }
        }
    }
    for r in old
        .rules
        .iter()
        .filter(|r| !new_rules.contains_key(r.name.as_str()))
    {
        d.rules_removed
            .push((r.name.clone(), describe_rule(old, r)));
    }

    let kept = |p: &Policy, other: &HashMap<&str, &Rule>| -> Vec<String> {
        p.rules
            .iter()
            .filter(|r| other.contains_key(r.name.as_str()))
            .map(|r| r.name.clone())
            .collect()
    };
    let (old_order, new_order) = (kept(old, &new_rules), kept(new, &old_rules));
    if old_order != new_order {
        d.order = Some((old_order, new_order));
    }
    d
}

// === global settings ===

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

fn global(old: &Policy, new: &Policy) -> Vec<Item> {
    let mut out = Vec::new();
    if old.mode != new.mode {
        let (change, why) = match new.mode {
            Mode::Audit => (
                Change::Wider,
                "what would be denied is only counted and passes",
            ),
            Mode::Enforce => (Change::Narrower, "denials take effect"),
        };
        out.push(item(
            "mode",
            change,
            format!("{} -> {} ({why})", old.mode.label(), new.mode.label()),
        ));
    }
    let defaults = [
        (
            "defaults.intra_zone",
            old.defaults.intra_zone,
            new.defaults.intra_zone,
        ),
        (
            "defaults.unknown",
            old.defaults.unknown,
            new.defaults.unknown,
        ),
        (
            "defaults.fragments",
            old.defaults.fragments,
            new.defaults.fragments,
        ),
    ];
    for (what, o, n) in defaults {
        if o != n {
            let change = if n == Action::Allow {
                Change::Wider
            } else {
                Change::Narrower
            };
            out.push(item(
                what,
                change,
                format!("{} -> {}", action_word(o), action_word(n)),
            ));
        }
    }
    out
}

// === zones ===

fn describe_zone(z: &Zone) -> String {
    let mut s = String::new();
    if let Some(l) = &z.label {
        let _ = write!(s, "{l}; ");
    }
    let _ = write!(
        s,
        "interfaces {}; networks {}; criticality {}",
        join(&z.interfaces),
        join(&z.networks),
        z.criticality.label()
    );
    if let Some(seg) = z.segment {
        let _ = write!(s, "; segment {}", seg.label());
    }
    s
}

fn zone(old: &Zone, new: &Zone) -> Vec<Item> {
    let mut out = Vec::new();
    if let Some(i) = nets_as_sets("networks", &old.networks, &new.networks) {
        out.push(i);
    }
    // A packet's source zone is its ingress interface: another interface brings more traffic
    // into the zone.
    // By name and VLAN: where they are written in the file does not matter.
    let names =
        |z: &Zone| -> BTreeSet<String> { z.interfaces.iter().map(ToString::to_string).collect() };
    let (o, n) = (names(old), names(new));
    if o != n {
        let change = Change::of(!n.is_subset(&o), !o.is_subset(&n)).unwrap_or(Change::Neutral);
        out.push(item("interfaces", change, plus_minus(&o, &n)));
    }
    if old.criticality != new.criticality {
        let critical = |z: &Zone| z.criticality == Criticality::Critical;
        let lint = match (critical(old), critical(new)) {
            (false, true) => {
                "; the guideline lint now checks rules as for the マイナンバー利用事務系"
            }
            (true, false) => "; the guideline lint no longer checks its rules as critical",
            _ => "",
        };
        let mut i = item(
            "criticality",
            Change::Neutral,
            format!(
                "{} -> {} (alert severity follows it{lint})",
                old.criticality.label(),
                new.criticality.label()
            ),
        );
        i.verb = if new.criticality > old.criticality {
            "raised"
        } else {
            "lowered"
        };
        out.push(i);
    }
    if old.is_internet() != new.is_internet() || old.segment != new.segment {
        let seg = |z: &Zone| match (z.segment, z.is_internet()) {
            (Some(s), _) => s.label().to_owned(),
            (None, true) => "internet (default route)".to_owned(),
            (None, false) => "none".to_owned(),
        };
        out.push(item(
            "segment",
            Change::Neutral,
            format!("{} -> {}", seg(old), seg(new)),
        ));
    }
    if old.label != new.label {
        out.push(item(
            "label",
            Change::Neutral,
            format!("{} -> {}", quoted(&old.label), quoted(&new.label)),
        ));
    }
    out
}

// === rules ===

fn describe_rule(p: &Policy, r: &Rule) -> String {
    let mut s = format!(
        "{} -> {}, {}",
        p.zones[r.from].name,
        p.zones[r.to].name,
        r.protocol.label()
    );
    if !r.ports.is_empty() {
        let _ = write!(s, " ports {}", ports_text(&r.ports));
    }
    if !r.sources.is_empty() {
        let _ = write!(s, ", sources {}", join(&r.sources));
    }
    if !r.source_macs.is_empty() {
        let _ = write!(s, ", source_macs {}", macs_text(r.source_macs.iter()));
    }
    if !r.destinations.is_empty() {
        let _ = write!(s, ", destinations {}", join(&r.destinations));
    }
    if r.mode == Mode::Audit {
        s.push_str(", mode audit");
    }
    if r.acknowledge.is_some() {
        s.push_str(", guideline findings acknowledged");
    }
    s
}

fn rule(op: &Policy, old: &Rule, np: &Policy, new: &Rule) -> Vec<Item> {
    let mut out = Vec::new();
    let (of, nf) = (&op.zones[old.from], &np.zones[new.from]);
    let (ot, nt) = (&op.zones[old.to], &np.zones[new.to]);
    // Another zone on a side: some hosts gain the path, others lose it.
    if of.name != nf.name {
        out.push(item(
            "from",
            Change::Both,
            format!("{} -> {}", of.name, nf.name),
        ));
    }
    if ot.name != nt.name {
        out.push(item(
            "to",
            Change::Both,
            format!("{} -> {}", ot.name, nt.name),
        ));
    }
    // In the order the file format lists them.
    out.extend(protocol(old.protocol, new.protocol));
    out.extend(ports(old, new));
    out.extend(addresses("sources", &old.sources, of, &new.sources, nf));
    out.extend(macs(&old.source_macs, &new.source_macs));
    out.extend(addresses(
        "destinations",
        &old.destinations,
        ot,
        &new.destinations,
        nt,
    ));
    if old.mode != new.mode {
        let why = match new.mode {
            Mode::Audit => "its traffic still passes, counted as audit: a trial",
            Mode::Enforce => "its traffic passes as before, counted as allowed",
        };
        out.push(item(
            "mode",
            Change::Neutral,
            format!("{} -> {} ({why})", old.mode.label(), new.mode.label()),
        ));
    }
    if old.acknowledge != new.acknowledge {
        let detail = match (&old.acknowledge, &new.acknowledge) {
            (None, Some(n)) => format!("now accepts the guideline findings: \"{n}\""),
            (Some(o), None) => format!("no longer accepts the guideline findings (was \"{o}\")"),
            (o, n) => format!("{} -> {}", quoted(o), quoted(n)),
        };
        out.push(item("acknowledge", Change::Neutral, detail));
    }
    if old.description != new.description {
        out.push(item(
            "description",
            Change::Neutral,
            format!(
                "{} -> {}",
                quoted(&old.description),
                quoted(&new.description)
            ),
        ));
    }
    out
}

/// `sources` or `destinations`: the listed networks, or the whole zone when none are listed.
fn addresses(
    what: &str,
    old: &[IpNet],
    old_zone: &Zone,
    new: &[IpNet],
    new_zone: &Zone,
) -> Option<Item> {
    let whole = |z: &Zone| format!("the whole zone {}", z.name);
    match (old.is_empty(), new.is_empty()) {
        // Another zone: the `from`/`to` item says it all.
        (true, true) if old_zone.name != new_zone.name => None,
        // The same zone, whose networks may have changed.
        (true, true) => nets_as_sets(what, &old_zone.networks, &new_zone.networks).map(|mut i| {
            i.detail = format!(
                "{} ({}'s networks changed): {}",
                whole(new_zone),
                new_zone.name,
                i.detail
            );
            i
        }),
        // Listing all of the zone's networks is the whole zone still: `None`.
        (true, false) => nets_change(&old_zone.networks, new).map(|c| {
            item(
                what,
                c,
                format!("was {}, now {}", whole(old_zone), join(new)),
            )
        }),
        (false, true) => nets_change(old, &new_zone.networks).map(|c| {
            item(
                what,
                c,
                format!("was {}, now {}", join(old), whole(new_zone)),
            )
        }),
        (false, false) => nets_as_sets(what, old, new),
    }
}

fn macs(old: &[Mac], new: &[Mac]) -> Option<Item> {
    let (o, n) = (as_set(old), as_set(new));
    let what = "source_macs";
    match (o.is_empty(), n.is_empty()) {
        (true, true) => None,
        (true, false) => Some(item(
            what,
            Change::Narrower,
            format!("was any MAC, now {}", macs_text(n.iter())),
        )),
        (false, true) => Some(item(
            what,
            Change::Wider,
            format!(
                "the MAC limitation is gone (was {}), now any MAC",
                macs_text(o.iter())
            ),
        )),
        (false, false) if o == n => None,
        (false, false) => {
            let change = Change::of(!n.is_subset(&o), !o.is_subset(&n)).unwrap_or(Change::Neutral);
            let removed = o.difference(&n).map(|m| format!("-{}", mac_text(m)));
            let added = n.difference(&o).map(|m| format!("+{}", mac_text(m)));
            Some(item(
                what,
                change,
                removed.chain(added).collect::<Vec<_>>().join(" "),
            ))
        }
    }
}

fn protocol(old: Protocol, new: Protocol) -> Option<Item> {
    if old == new {
        return None;
    }
    let change = match (old, new) {
        (_, Protocol::Any) => Change::Wider,
        (Protocol::Any, _) => Change::Narrower,
        _ => Change::Both,
    };
    Some(item(
        "protocol",
        change,
        format!("{} -> {}", old.label(), new.label()),
    ))
}

const ALL_PORTS: PortRange = PortRange {
    lo: 1,
    hi: u16::MAX,
};

/// The destination ports a rule lets through: `None` for icmp/icmpv6, which have none.
fn port_reach(r: &Rule) -> Option<Vec<PortRange>> {
    match r.protocol {
        Protocol::Icmp | Protocol::Icmpv6 => None,
        // Every protocol, so every port of tcp and udp.
        Protocol::Any => Some(vec![ALL_PORTS]),
        Protocol::Tcp | Protocol::Udp if r.ports.is_empty() => Some(vec![ALL_PORTS]),
        Protocol::Tcp | Protocol::Udp => Some(merge_ports(&r.ports)),
    }
}

fn ports(old: &Rule, new: &Rule) -> Option<Item> {
    // tcp -> icmp: the `protocol` item says it; there are no ports to compare.
    let (o, n) = (port_reach(old)?, port_reach(new)?);
    let added = subtract_ports(&n, &o);
    let removed = subtract_ports(&o, &n);
    if added.is_empty() && removed.is_empty() {
        // Same reach; a rewrite (80,81 -> 80-81) is not worth a line.
        return None;
    }
    let change = Change::of(!added.is_empty(), !removed.is_empty()).unwrap_or(Change::Neutral);
    // No `ports` (or protocol "any") is every port: "+1-442 +444-65535" would hide that.
    let detail = match (o == [ALL_PORTS], n == [ALL_PORTS]) {
        (false, true) => format!("was {}, now every port", ports_text(&o)),
        (true, false) => format!("was every port, now {}", ports_text(&n)),
        _ => {
            let removed = removed.iter().map(|r| format!("-{}", port_text(r)));
            let added = added.iter().map(|r| format!("+{}", port_text(r)));
            removed.chain(added).collect::<Vec<_>>().join(" ")
        }
    };
    Some(item("ports", change, detail))
}

/// Sorted, overlapping and adjacent ranges merged.
fn merge_ports(ranges: &[PortRange]) -> Vec<PortRange> {
    let mut v = ranges.to_vec();
    v.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

/// The ports in `a` that are not in `b` (both merged).
fn subtract_ports(a: &[PortRange], b: &[PortRange]) -> Vec<PortRange> {
    let mut out = Vec::new();
    for r in a {
        let mut lo = u32::from(r.lo);
        let hi = u32::from(r.hi);
        for cut in b {
            let (clo, chi) = (u32::from(cut.lo), u32::from(cut.hi));
            if chi < lo || clo > hi {
                continue;
            }
            if clo > lo {
                out.push(range(lo, clo - 1));
            }
            lo = chi + 1;
            if lo > hi {
                break;
            }
        }
        if lo <= hi {
            out.push(range(lo, hi));
        }
    }
    out
}

fn range(lo: u32, hi: u32) -> PortRange {
    // Both came from u16 ports: the bounds stay in range.
    PortRange {
        lo: u16::try_from(lo).unwrap_or(u16::MAX),
        hi: u16::try_from(hi).unwrap_or(u16::MAX),
    }
}

// === address sets ===

/// Whether `new` covers addresses `old` does not (wider), and the other way round (narrower);
/// `None` when both cover exactly the same addresses.
fn nets_change(old: &[IpNet], new: &[IpNet]) -> Option<Change> {
    let (o, n) = (
        IpNet::aggregate(&old.to_vec()),
        IpNet::aggregate(&new.to_vec()),
    );
    Change::of(!covers(&o, &n), !covers(&n, &o))
}

/// Whether the union of `outer` (aggregated) covers every network of `inner`. Exact: a prefix
/// inside a union of prefixes lies inside one of the union's maximal aligned blocks, which is
/// what `aggregate` returns.
fn covers(outer: &[IpNet], inner: &[IpNet]) -> bool {
    inner.iter().all(|n| outer.iter().any(|o| o.contains(n)))
}

/// Two address lists compared as sets, with the written entries removed and added.
fn nets_as_sets(what: &str, old: &[IpNet], new: &[IpNet]) -> Option<Item> {
    let (o, n) = (as_set(old), as_set(new));
    if o == n {
        return None;
    }
    // `None`: rewritten, the same addresses.
    nets_change(old, new).map(|change| item(what, change, plus_minus(&o, &n)))
}

// === text ===

fn as_set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

/// `-a -b +c`: entries only in `old`, then entries only in `new`.
fn plus_minus<T: Ord + fmt::Display>(old: &BTreeSet<T>, new: &BTreeSet<T>) -> String {
    let removed = old.difference(new).map(|x| format!("-{x}"));
    let added = new.difference(old).map(|x| format!("+{x}"));
    removed.chain(added).collect::<Vec<_>>().join(" ")
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn quoted(s: &Option<String>) -> String {
    s.as_ref()
        .map_or_else(|| "(none)".to_owned(), |s| format!("\"{s}\""))
}

fn port_text(r: &PortRange) -> String {
    if r.lo == r.hi {
        r.lo.to_string()
    } else {
        format!("{}-{}", r.lo, r.hi)
    }
}

fn ports_text(ranges: &[PortRange]) -> String {
    ranges.iter().map(port_text).collect::<Vec<_>>().join(", ")
}

fn mac_text(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn macs_text<'a>(macs: impl Iterator<Item = &'a Mac>) -> String {
    macs.map(mac_text).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::validate::parse_str;

    const BASE: &str = r#"version = 1
[[zones]]
name = "mynumber"
interfaces = ["eth1"]
networks = ["10.10.0.0/16"]
criticality = "critical"
[[zones]]
name = "lgwan"
interfaces = ["eth2"]
networks = ["10.20.0.0/16"]
[[zones]]
name = "internet"
interfaces = ["eth3"]
networks = ["0.0.0.0/0"]
[[rules]]
name = "relay"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.5.10/32"]
source_macs = ["52:54:00:12:34:56"]
destinations = ["10.10.9.20/32"]
[[rules]]
name = "web"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80", "443"]
"#;

    fn policy(text: &str) -> Policy {
        match parse_str(Path::new("t.toml"), text) {
            Ok((p, _)) => p,
            Err(d) => panic!("invalid test policy:\n{d}\n{text}"),
        }
    }

    /// BASE with `from` replaced by `to` (which must occur).
    fn edit(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from:?} not in BASE");
        BASE.replacen(from, to, 1)
    }

    fn diff_to(new: &str) -> PolicyDiff {
        diff(&policy(BASE), &policy(new))
    }

    /// The one changed rule's name, verdict and items as text.
    #[track_caller]
    fn changed_rule(d: &PolicyDiff) -> (String, Change, Vec<String>) {
        assert_eq!(d.rules_changed.len(), 1, "{}", d.render());
        let r = &d.rules_changed[0];
        (
            r.name.clone(),
            r.change(),
            r.items.iter().map(ToString::to_string).collect(),
        )
    }

    #[track_caller]
    fn assert_rule(new: &str, change: Change, items: &[&str]) {
        let d = diff_to(new);
        let (name, got, lines) = changed_rule(&d);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(
            (got, lines.as_slice()),
            (change, items),
            "{name}:\n{}",
            d.render()
        );
        assert!(
            d.zones_changed.is_empty() && d.global.is_empty(),
            "{}",
            d.render()
        );
    }

    #[test]
    fn identical_and_rewritten_policies_have_no_difference() {
        assert!(diff_to(BASE).is_empty());
        let rewritten = edit(
            "ports = [\"80\", \"443\"]",
            "ports = [443, \"80\", \"80\"]  # same",
        )
        .replacen(
            "sources = [\"10.20.5.10/32\"]",
            "sources = [\"10.20.5.10/32\", \"10.20.5.10/32\"]",
            1,
        )
        .replacen(
            "networks = [\"10.20.0.0/16\"]",
            "networks = [\"10.20.0.0/17\", \"10.20.128.0/17\"]",
            1,
        );
        let d = diff_to(&rewritten);
        assert!(d.is_empty(), "{}", d.render());
        assert_eq!(
            d.summary(),
            "no difference: reloading NEW over OLD changes nothing"
        );
    }

    #[test]
    fn rules_added_and_removed_by_name() {
        let renamed = edit("name = \"web\"", "name = \"web-out\"");
        let added = "[[rules]]\nname = \"dns\"\nfrom = \"lgwan\"\nto = \"internet\"\nprotocol = \"udp\"\nports = [\"53\"]\n";
        let d = diff_to(&(renamed + added));
        let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&d.rules_added), ["web-out", "dns"]);
        assert_eq!(names(&d.rules_removed), ["web"]);
        assert_eq!(d.rules_added[1].1, "lgwan -> internet, udp ports 53");
        let text = d.render();
        assert!(
            text.contains("+ rule \"dns\": lgwan -> internet, udp ports 53\n"),
            "{text}"
        );
        assert!(
            text.contains("- rule \"web\": lgwan -> internet, tcp ports 80, 443\n"),
            "{text}"
        );
        assert!(
            text.ends_with("2 rule(s) added, 1 rule(s) removed\n"),
            "{text}"
        );
    }

    #[test]
    fn ports_widened_narrowed_and_both() {
        assert_rule(
            &edit("ports = [\"443\"]", "ports = [\"443\", \"8000-8010\"]"),
            Change::Wider,
            &["ports widened: +8000-8010"],
        );
        assert_rule(
            &edit("ports = [\"80\", \"443\"]", "ports = [\"443\"]"),
            Change::Narrower,
            &["ports narrowed: -80"],
        );
        assert_rule(
            &edit("ports = [\"80\", \"443\"]", "ports = [\"443-450\"]"),
            Change::Both,
            &["ports changed (wider and narrower): -80 +444-450"],
        );
        // A range cut in the middle.
        assert_rule(
            &edit("ports = [\"80\", \"443\"]", "ports = [\"1-1024\"]").replacen(
                "ports = [\"1-1024\"]",
                "ports = [\"1-442\", \"444-1024\"]",
                1,
            ),
            Change::Both,
            &["ports changed (wider and narrower): -443 +1-79 +81-442 +444-1024"],
        );
        assert_rule(
            &edit("ports = [\"80\", \"443\"]\n", ""),
            Change::Wider,
            &["ports widened: was 80, 443, now every port"],
        );
    }

    #[test]
    fn sources_and_destinations_compare_the_addresses_they_cover() {
        // The brief's example: a zone-wide source narrowed to one host.
        let wide = edit(
            "sources = [\"10.20.5.10/32\"]",
            "sources = [\"10.20.0.0/16\"]",
        );
        let d = diff(&policy(&wide), &policy(BASE));
        let (_, change, lines) = changed_rule(&d);
        assert_eq!(change, Change::Narrower);
        assert_eq!(lines, ["sources narrowed: -10.20.0.0/16 +10.20.5.10/32"]);

        assert_rule(
            &edit("sources = [\"10.20.5.10/32\"]\n", ""),
            Change::Wider,
            &["sources widened: was 10.20.5.10/32, now the whole zone lgwan"],
        );
        assert_rule(
            &edit(
                "sources = [\"10.20.5.10/32\"]",
                "sources = [\"10.20.5.11/32\"]",
            ),
            Change::Both,
            &["sources changed (wider and narrower): -10.20.5.10/32 +10.20.5.11/32"],
        );
        assert_rule(
            &edit(
                "destinations = [\"10.10.9.20/32\"]",
                "destinations = [\"10.10.9.0/24\"]",
            ),
            Change::Wider,
            &["destinations widened: -10.10.9.20/32 +10.10.9.0/24"],
        );
        // Zone-wide on one side, a list on the other.
        let d = diff_to(&edit(
            "ports = [\"80\", \"443\"]",
            "ports = [\"80\", \"443\"]\ndestinations = [\"192.0.2.0/24\"]",
        ));
        let (name, change, lines) = changed_rule(&d);
        assert_eq!((name.as_str(), change), ("web", Change::Narrower));
        assert_eq!(
            lines,
            ["destinations narrowed: was the whole zone internet, now 192.0.2.0/24"]
        );
    }

    #[test]
    fn a_zone_wide_side_follows_its_zones_networks() {
        // "web" has no `sources`: lgwan's new network reaches the internet too.
        let d = diff_to(&edit(
            "networks = [\"10.20.0.0/16\"]",
            "networks = [\"10.20.0.0/16\", \"10.21.0.0/16\"]",
        ));
        assert_eq!(d.zones_changed.len(), 1, "{}", d.render());
        assert_eq!(
            d.zones_changed[0].items[0].to_string(),
            "networks widened: +10.21.0.0/16"
        );
        let (name, change, lines) = changed_rule(&d);
        assert_eq!((name.as_str(), change), ("web", Change::Wider));
        assert_eq!(
            lines,
            ["sources widened: the whole zone lgwan (lgwan's networks changed): +10.21.0.0/16"]
        );
    }

    #[test]
    fn containment_of_address_lists_is_exact() {
        let nets = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse::<IpNet>().unwrap())
                .collect::<Vec<_>>()
        };
        let change = |a: &[&str], b: &[&str]| nets_change(&nets(a), &nets(b));
        // The union matters, not single entries: two halves cover their /23.
        assert_eq!(
            change(&["10.0.0.0/24", "10.0.1.0/24"], &["10.0.0.0/23"]),
            None
        );
        assert_eq!(
            change(
                &["10.0.0.0/23"],
                &["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]
            ),
            Some(Change::Wider)
        );
        assert_eq!(
            change(&["10.0.0.0/23"], &["10.0.0.0/24"]),
            Some(Change::Narrower)
        );
        // Adjacent but not one aligned block: 10.0.1.0/24 + 10.0.2.0/24 do not cover 10.0.0.0/22.
        assert_eq!(
            change(&["10.0.0.0/22"], &["10.0.1.0/24", "10.0.2.0/24"]),
            Some(Change::Narrower)
        );
        assert_eq!(
            change(
                &["10.0.1.0/24", "10.0.2.0/24"],
                &["10.0.1.128/25", "10.0.1.0/25", "10.0.2.0/24"]
            ),
            None
        );
        // Families do not cover each other.
        assert_eq!(
            change(&["0.0.0.0/0"], &["0.0.0.0/0", "::/0"]),
            Some(Change::Wider)
        );
        assert_eq!(change(&["10.0.0.0/8"], &["fd00::/8"]), Some(Change::Both));
        assert_eq!(change(&["0.0.0.0/1", "128.0.0.0/1"], &["0.0.0.0/0"]), None);
    }

    #[test]
    fn source_macs_absence_is_the_widest() {
        assert_rule(
            &edit("source_macs = [\"52:54:00:12:34:56\"]\n", ""),
            Change::Wider,
            &[
                "source_macs widened: the MAC limitation is gone (was 52:54:00:12:34:56), now any MAC",
            ],
        );
        let d = diff(
            &policy(&edit("source_macs = [\"52:54:00:12:34:56\"]\n", "")),
            &policy(BASE),
        );
        assert_eq!(
            changed_rule(&d).2,
            ["source_macs narrowed: was any MAC, now 52:54:00:12:34:56"]
        );
        assert_rule(
            &edit(
                "source_macs = [\"52:54:00:12:34:56\"]",
                "source_macs = [\"52:54:00:12:34:56\", \"52-54-00-AB-CD-EF\"]",
            ),
            Change::Wider,
            &["source_macs widened: +52:54:00:ab:cd:ef"],
        );
        assert_rule(
            &edit(
                "source_macs = [\"52:54:00:12:34:56\"]",
                "source_macs = [\"52:54:00:ab:cd:ef\"]",
            ),
            Change::Both,
            &["source_macs changed (wider and narrower): -52:54:00:12:34:56 +52:54:00:ab:cd:ef"],
        );
    }

    #[test]
    fn protocol_any_is_wider_than_each_protocol() {
        let any = edit(
            "protocol = \"tcp\"\nports = [\"80\", \"443\"]",
            "protocol = \"any\"",
        );
        assert_rule(
            &any,
            Change::Wider,
            &[
                "protocol widened: tcp -> any",
                "ports widened: was 80, 443, now every port",
            ],
        );
        let d = diff(&policy(&any), &policy(BASE));
        assert_eq!(changed_rule(&d).1, Change::Narrower);
        assert_rule(
            &edit(
                "protocol = \"tcp\"\nports = [\"80\", \"443\"]",
                "protocol = \"udp\"\nports = [\"80\", \"443\"]",
            ),
            Change::Both,
            &["protocol changed (wider and narrower): tcp -> udp"],
        );
        // No ports to compare with icmp.
        assert_rule(
            &edit(
                "protocol = \"tcp\"\nports = [\"80\", \"443\"]",
                "protocol = \"icmp\"",
            ),
            Change::Both,
            &["protocol changed (wider and narrower): tcp -> icmp"],
        );
    }

    #[test]
    fn another_zone_on_a_side_is_wider_and_narrower() {
        let text = BASE.to_owned()
            + "[[zones]]\nname = \"gcloud\"\ninterfaces = [\"eth4\"]\nnetworks = [\"10.40.0.0/16\"]\n";
        let moved = text.replacen("to = \"internet\"", "to = \"gcloud\"", 1);
        let d = diff(&policy(&text), &policy(&moved));
        let (name, change, lines) = changed_rule(&d);
        assert_eq!((name.as_str(), change), ("web", Change::Both));
        // The whole internet zone vs the whole gcloud zone: the `to` line says it.
        assert_eq!(
            lines,
            ["to changed (wider and narrower): internet -> gcloud"]
        );
    }

    #[test]
    fn rule_mode_description_and_acknowledge_change_no_traffic() {
        let d = diff_to(&edit(
            "name = \"web\"",
            "name = \"web\"\ndescription = \"proxy\"\nmode = \"audit\"",
        ));
        let (_, change, lines) = changed_rule(&d);
        assert_eq!(change, Change::Neutral);
        assert_eq!(
            lines,
            [
                "mode changed: enforce -> audit (its traffic still passes, counted as audit: a trial)",
                "description changed: (none) -> \"proxy\"",
            ]
        );
        assert!(
            d.summary()
                .contains("1 rule(s) changed without effect on traffic")
        );
        let acked = edit("name = \"web\"", "name = \"web\"\nacknowledge = \"why\"");
        let d = diff_to(&acked);
        assert_eq!(
            changed_rule(&d).2,
            ["acknowledge changed: now accepts the guideline findings: \"why\""]
        );
    }

    #[test]
    fn zones_added_removed_and_changed() {
        let more = BASE.to_owned()
            + "[[zones]]\nname = \"gcloud\"\nlabel = \"ガバメントクラウド接続\"\ninterfaces = [\"eth4.40\"]\nnetworks = [\"10.40.0.0/16\"]\n";
        let d = diff(&policy(BASE), &policy(&more));
        assert_eq!(
            d.zones_added,
            [(
                "gcloud".to_owned(),
                "ガバメントクラウド接続; interfaces eth4.40; networks 10.40.0.0/16; criticality medium".to_owned()
            )]
        );
        assert!(d.rules_changed.is_empty() && d.rules_added.is_empty());
        let d = diff(&policy(&more), &policy(BASE));
        assert_eq!(d.zones_removed.len(), 1);
        assert!(d.render().contains("- zone \"gcloud\": "), "{}", d.render());

        let changed = edit(
            "interfaces = [\"eth2\"]\nnetworks = [\"10.20.0.0/16\"]",
            "interfaces = [\"eth2\", \"eth5\"]\nnetworks = [\"10.20.0.0/17\"]\ncriticality = \"low\"",
        );
        let d = diff_to(&changed);
        assert_eq!(d.zones_changed.len(), 1, "{}", d.render());
        let z = &d.zones_changed[0];
        let lines: Vec<String> = z.items.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "networks narrowed: -10.20.0.0/16 +10.20.0.0/17",
                "interfaces widened: +eth5",
                "criticality lowered: medium -> low (alert severity follows it)",
            ]
        );
        assert_eq!(z.change(), Change::Both);
        assert!(
            d.render()
                .contains("~ zone \"lgwan\" changed (wider and narrower):\n    networks narrowed"),
            "{}",
            d.render()
        );
        // Criticality across "critical" changes what the guideline lint checks.
        let d = diff_to(&edit(
            "criticality = \"critical\"",
            "criticality = \"high\"",
        ));
        assert_eq!(
            d.zones_changed[0].items[0].to_string(),
            "criticality lowered: critical -> high (alert severity follows it; the guideline lint no longer checks its rules as critical)"
        );
    }

    #[test]
    fn global_mode_and_defaults() {
        let d = diff_to(&edit(
            "version = 1\n",
            "version = 1\nmode = \"audit\"\n[defaults]\nunknown = \"allow\"\nintra_zone = \"deny\"\n",
        ));
        let lines: Vec<String> = d.global.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "mode widened: enforce -> audit (what would be denied is only counted and passes)",
                "defaults.intra_zone narrowed: allow -> deny",
                "defaults.unknown widened: deny -> allow",
            ]
        );
        assert!(d.rules_changed.is_empty());
    }

    #[test]
    fn rule_order_is_reported() {
        let relay_start = BASE.find("[[rules]]\nname = \"relay\"").unwrap_or_default();
        let web_start = BASE.find("[[rules]]\nname = \"web\"").unwrap_or_default();
        let swapped = format!(
            "{}{}{}",
            &BASE[..relay_start],
            &BASE[web_start..],
            &BASE[relay_start..web_start]
        );
        let d = diff_to(&swapped);
        assert_eq!(
            d.order,
            Some((
                vec!["relay".into(), "web".into()],
                vec!["web".into(), "relay".into()]
            ))
        );
        assert!(d.rules_changed.is_empty());
        assert!(d.render().contains(
            "rule order changed (counters go to the first matching rule): relay, web -> web, relay"
        ));
    }
}

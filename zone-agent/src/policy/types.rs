//! The validated policy: what `parse` + `validate` produce and what `compile` and `model`
//! consume. Zone and rule references are indices (zone index `i` has data-path id `i + 1`).

use std::path::PathBuf;

use ipnet::IpNet;

/// 1-based line and column of an item in the policy file, kept so that errors found after
/// parsing (missing interface, map capacity) still point at the right place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Loc {
    pub line: u32,
    pub col: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

impl Mode {
    /// The word the policy file uses.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Criticality {
    Low,
    Medium,
    High,
    Critical,
}

impl Criticality {
    /// The word the policy file uses.
    pub fn label(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }
}

/// Which segment of 三層の対策 a zone is, for the guideline lint. Optional in the file: a zone
/// without it counts as the internet segment when its networks hold a default route
/// (`0.0.0.0/0` or `::/0`), as an internet-facing zone's do, and as no particular segment
/// otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// マイナンバー利用事務系 (個人番号利用事務系).
    Mynumber,
    /// LGWAN接続系.
    Lgwan,
    /// インターネット接続系.
    Internet,
    /// Anything else: ガバメントクラウド over a closed line, a site-specific segment.
    Other,
}

impl Segment {
    pub fn label(self) -> &'static str {
        match self {
            Segment::Mynumber => "mynumber",
            Segment::Lgwan => "lgwan",
            Segment::Internet => "internet",
            Segment::Other => "other",
        }
    }
}

/// Whether a zone is the internet segment: said by `segment`, or, when that is absent, by a
/// default route among its networks (shared by the lint and anything that explains it).
pub fn is_internet_zone<'a>(
    segment: Option<Segment>,
    mut networks: impl Iterator<Item = &'a IpNet>,
) -> bool {
    match segment {
        Some(s) => s == Segment::Internet,
        None => networks.any(|n| n.prefix_len() == 0),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Any,
}

impl Protocol {
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::Any => "any",
        }
    }
}

/// Inclusive destination port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

pub type Mac = [u8; 6];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub intra_zone: Action,
    pub unknown: Action,
    pub fragments: Action,
}

impl Default for Defaults {
    fn default() -> Self {
        // Fail closed everywhere except inside a zone, as SPEC §3's example shows.
        Defaults {
            intra_zone: Action::Allow,
            unknown: Action::Deny,
            fragments: Action::Deny,
        }
    }
}

/// Where a zone's packets enter the gateway: an interface, optionally one VLAN on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ZoneIface {
    pub name: String,
    /// Outer 802.1Q/802.1ad VLAN id; `None` = untagged frames.
    pub vlan: Option<u16>,
    pub loc: Loc,
}

impl std::fmt::Display for ZoneIface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.vlan {
            Some(v) => write!(f, "{}.{}", self.name, v),
            None => write!(f, "{}", self.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    pub label: Option<String>,
    pub interfaces: Vec<ZoneIface>,
    pub networks: Vec<IpNet>,
    pub criticality: Criticality,
    /// As written; see [`Zone::is_internet`] for the effective answer.
    pub segment: Option<Segment>,
    pub loc: Loc,
}

impl Zone {
    /// The internet segment, as the guideline lint judges it.
    pub fn is_internet(&self) -> bool {
        is_internet_zone(self.segment, self.networks.iter())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    /// Index into `Policy::zones`.
    pub from: usize,
    /// Index into `Policy::zones`.
    pub to: usize,
    pub protocol: Protocol,
    /// Empty = every port (or no port concept for icmp/any).
    pub ports: Vec<PortRange>,
    /// Empty = the whole `from` zone.
    pub sources: Vec<IpNet>,
    /// Empty = any MAC.
    pub source_macs: Vec<Mac>,
    /// Empty = the whole `to` zone.
    pub destinations: Vec<IpNet>,
    pub mode: Mode,
    /// Why the operator accepts what the guideline lint reports about this rule (non-empty);
    /// `None`: the lint's findings stand.
    pub acknowledge: Option<String>,
    pub loc: Loc,
}

impl Rule {
    pub fn audit(&self) -> bool {
        self.mode == Mode::Audit
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub version: u32,
    pub mode: Mode,
    pub defaults: Defaults,
    pub zones: Vec<Zone>,
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Data-path zone id of zone index `i` (0 is "no zone").
    pub fn zone_id(i: usize) -> u8 {
        (i + 1) as u8
    }

    pub fn zone_name(&self, id: u8) -> &str {
        use zone_agent_common::NO_ZONE_LABEL;
        if id == 0 {
            NO_ZONE_LABEL
        } else {
            self.zones
                .get(id as usize - 1)
                .map(|z| z.name.as_str())
                .unwrap_or(NO_ZONE_LABEL)
        }
    }
}

//! Verdicts, drop reasons and pass reasons. The numbers are the indices of the counter arrays
//! and must never be renumbered; `label()` is the Prometheus label value.

/// What happened to a packet, as counted per zone pair.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Allow = 0,
    Deny = 1,
    /// Would have been denied (or matched an audit rule) and was passed because of audit mode.
    Audit = 2,
}

impl Verdict {
    /// Number of verdicts: the innermost dimension of the zone-pair counters.
    pub const COUNT: usize = 3;
    pub const ALL: [Verdict; Verdict::COUNT] = [Verdict::Allow, Verdict::Deny, Verdict::Audit];

    pub const fn label(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Audit => "audit",
        }
    }
}

/// Why a packet was (or, in audit mode, would have been) dropped.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Cross-zone traffic that no rule allows (including reply-shaped packets with no flow).
    NoRule = 1,
    /// Source address belongs to a zone other than the ingress interface's zone.
    SpoofedSource = 2,
    /// A rule matched everything but its source-MAC list.
    MacMismatch = 3,
    /// Truncated or inconsistent headers.
    Malformed = 4,
    /// A non-first IP fragment that cannot be tied to an allowed first fragment.
    Fragment = 5,
    /// Source is quarantined.
    Quarantined = 6,
    /// Source or destination is in no zone and `defaults.unknown = "deny"`.
    UnknownZone = 7,
    /// Both ends in the same zone and `defaults.intra_zone = "deny"`.
    IntraZone = 8,
    /// Ingress interface (or VLAN tag on it) belongs to no zone.
    UnknownInterface = 9,
    /// More VLAN tags or IPv6 extension headers than the program walks.
    HeaderLimit = 10,
    /// Neither IPv4, IPv6 nor ARP.
    NonIp = 11,
    /// A flow or fragment table insert failed.
    TableFull = 12,
    /// No policy has been installed (never expected after start-up).
    NoPolicy = 13,
    /// The packet names its own route (IPv4 loose/strict source-route option, IPv6 routing
    /// header with segments left): its destination field is only the next hop it chose, so
    /// where it ends up is not what a rule would judge.
    SourceRoute = 14,
}

impl DropReason {
    /// Size of the drop counter array (index 0 unused). Audit-mode "would drop" counters live
    /// at `AUDIT_OFFSET + reason`.
    pub const SLOTS: u32 = 16;
    pub const AUDIT_OFFSET: u32 = 16;

    pub const ALL: [DropReason; 14] = [
        DropReason::NoRule,
        DropReason::SpoofedSource,
        DropReason::MacMismatch,
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::Quarantined,
        DropReason::UnknownZone,
        DropReason::IntraZone,
        DropReason::UnknownInterface,
        DropReason::HeaderLimit,
        DropReason::NonIp,
        DropReason::TableFull,
        DropReason::NoPolicy,
        DropReason::SourceRoute,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            DropReason::NoRule => "no_rule",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::MacMismatch => "mac_mismatch",
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::Quarantined => "quarantined",
            DropReason::UnknownZone => "unknown_zone",
            DropReason::IntraZone => "intra_zone",
            DropReason::UnknownInterface => "unknown_interface",
            DropReason::HeaderLimit => "header_limit",
            DropReason::NonIp => "non_ip",
            DropReason::TableFull => "table_full",
            DropReason::NoPolicy => "no_policy",
            DropReason::SourceRoute => "source_route",
        }
    }

    /// Audit mode never passes what the data path could not decide: fail closed.
    pub const fn auditable(self) -> bool {
        !matches!(
            self,
            DropReason::Malformed
                | DropReason::HeaderLimit
                | DropReason::TableFull
                | DropReason::NoPolicy
                | DropReason::SourceRoute
        )
    }

    pub const fn from_u8(v: u8) -> Option<DropReason> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u8 == v {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }
}

/// Why a packet was passed.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PassReason {
    /// A rule (特定通信) matched; a flow was opened.
    Rule = 0,
    /// Later packet of an allowed flow, same direction.
    Established = 1,
    /// Reply of an allowed flow.
    Reply = 2,
    /// ICMP error quoting an allowed flow.
    Related = 3,
    /// Same zone on both sides and `defaults.intra_zone = "allow"`.
    IntraZone = 4,
    /// ARP or IPv6 neighbour discovery.
    Neighbor = 5,
    /// Non-first fragment tied to an allowed first fragment.
    Fragment = 6,
    /// `defaults.unknown = "allow"`.
    UnknownZone = 7,
    /// A failsafe management flow to the gateway itself (agent configuration, not policy).
    Failsafe = 8,
}

impl PassReason {
    /// Counter slots (room for reasons added later without changing the map's size).
    pub const SLOTS: u32 = 16;
    pub const ALL: [PassReason; 9] = [
        PassReason::Rule,
        PassReason::Established,
        PassReason::Reply,
        PassReason::Related,
        PassReason::IntraZone,
        PassReason::Neighbor,
        PassReason::Fragment,
        PassReason::UnknownZone,
        PassReason::Failsafe,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            PassReason::Rule => "rule",
            PassReason::Established => "established",
            PassReason::Reply => "reply",
            PassReason::Related => "related",
            PassReason::IntraZone => "intra_zone",
            PassReason::Neighbor => "neighbor",
            PassReason::Fragment => "fragment",
            PassReason::UnknownZone => "unknown_zone",
            PassReason::Failsafe => "failsafe",
        }
    }
}

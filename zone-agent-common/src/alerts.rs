//! Alert kinds and severities (SPEC §6): the `kind` and `severity` labels of alerts and of
//! `zone_agent_alerts_total`, defined once.

/// What a detection found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    /// One source denied on many (destination, port) pairs of one destination.
    PortScan,
    /// One source denied on one port of many destinations.
    HostSweep,
    /// Many sources denied on one destination (a scan spread over sources).
    DistributedScan,
    /// A source address that belongs to another zone than its ingress interface's.
    SpoofedSource,
    /// A 特定通信's source seen with a MAC outside the rule's binding.
    MacBindingViolation,
    /// A denied attempt from a critical zone toward the internet.
    ExfiltrationAttempt,
    /// A 特定通信 carried far more than its baseline, or more than its cap.
    VolumeAnomaly,
    /// After learning, a source never seen on a 特定通信 used it.
    NewTalker,
    /// The data path was changed behind the agent's back.
    Tamper,
}

impl AlertKind {
    pub const ALL: [AlertKind; 9] = [
        AlertKind::PortScan,
        AlertKind::HostSweep,
        AlertKind::DistributedScan,
        AlertKind::SpoofedSource,
        AlertKind::MacBindingViolation,
        AlertKind::ExfiltrationAttempt,
        AlertKind::VolumeAnomaly,
        AlertKind::NewTalker,
        AlertKind::Tamper,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            AlertKind::PortScan => "port_scan",
            AlertKind::HostSweep => "host_sweep",
            AlertKind::DistributedScan => "distributed_scan",
            AlertKind::SpoofedSource => "spoofed_source",
            AlertKind::MacBindingViolation => "mac_binding_violation",
            AlertKind::ExfiltrationAttempt => "exfiltration_attempt",
            AlertKind::VolumeAnomaly => "volume_anomaly",
            AlertKind::NewTalker => "new_talker",
            AlertKind::Tamper => "tamper",
        }
    }
}

/// Alert severity; ordered, so `max` picks the graver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

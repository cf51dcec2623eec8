//! Limits and reserved words of the policy file that other parts of zone-agent depend on
//! (metrics labels, the agent's reader), defined once.

/// The label the agent's metrics, `flows` and `explain` use for "in no zone" (data-path zone
/// id 0).
pub const NO_ZONE_LABEL: &str = "none";

/// Zone names a policy may not use: they would merge with the labels above in metrics and
/// reports.
pub const RESERVED_ZONE_NAMES: &[&str] = &[NO_ZONE_LABEL];

/// Largest policy file the agent and `zone-agent policy` read: 32 MiB. The benchmark's
/// 100 000-rule policy (the rule limit) is 16.5 MB; this leaves room for descriptions
/// (about 335 bytes a rule at the rule limit) while a larger file is refused before it is
/// read, parsed or held in memory.
pub const MAX_POLICY_BYTES: u64 = 32 << 20;

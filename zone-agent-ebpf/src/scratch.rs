//! The per-CPU working memory of one invocation (`Scratch`, in the `ZA_SCRATCH` map) and
//! the types the steps hand each other through it. Only types live here (no map access, no
//! logic), so every step can use them without importing another step.

use zone_agent_common::*;

use crate::parse::{Packet, Tuple};

/// Working memory of one invocation: the parsed packet and the results the BPF
/// sub-functions hand back.
///
/// Why a map and not the stack: the verifier tracks constants stored on the stack, so every
/// exit path of a sub-function (each writing different constants into its out-parameter)
/// would continue through the rest of the program as a separate state, and the path count
/// multiplies stage by stage past the 1M-instruction limit. Map-value contents are not
/// tracked, so the paths merge again at each return. A per-CPU array lookup with a
/// constant index is inlined by the kernel and costs about a nanosecond.
pub struct Scratch {
    /// The packet as parsed (`parse::packet`).
    pub packet: Packet,
    /// Its zones: the ingress zone first, the address zones once looked up.
    pub zones: Zones,
    /// How the packet passes, when it does (rule, flow, default...).
    pub pass: Hit,
    /// The rule that matched (`rule::find`).
    pub matched: Match,
    /// Flow-table key of the packet.
    pub flow_key: FlowKey,
    /// Table where `lookup` found an entry for `flow_key` that it did not take (`FOUND_*`),
    /// so that `state::open` replaces it instead of leaving a second entry for the key.
    pub found: u32,
    /// Working memory of `state::revalidate`.
    pub revalidation: Revalidation,
    /// What `events::decision` reports besides the packet (written only when one is due).
    pub note: Note,
}

/// The decision an event reports (`events::decision`), beside `Scratch::packet`.
pub struct Note {
    pub ifindex: u32,
    pub generation: u32,
    pub rule: u32,
    /// `EventKind` as a byte (map memory holds no Rust enums).
    pub kind: u8,
    /// `DropReason`, or 0.
    pub reason: u8,
    pub from: u8,
    pub to: u8,
}

/// A flow's opening packet re-decided after a reload (`state::revalidate`).
pub struct Revalidation {
    pub tuple: Tuple,
    pub zones: Zones,
    pub matched: Match,
}

#[derive(Clone, Copy)]
pub struct Zones {
    /// Zone of the ingress interface: where the packet comes from.
    pub from: u8,
    /// Longest-prefix zone of the source address (0: none).
    pub src_zone: u8,
    /// Longest-prefix zone of the destination address (0: none).
    pub to: u8,
    pub src_class: u32,
    pub dst_class: u32,
}

impl Zones {
    /// Only the ingress zone known yet (addresses not looked up).
    pub fn ingress_only(from: u8) -> Self {
        Zones {
            from,
            src_zone: NO_ZONE,
            to: NO_ZONE,
            src_class: 0,
            dst_class: 0,
        }
    }

    pub fn unknown(&self) -> bool {
        self.src_zone == NO_ZONE || self.to == NO_ZONE
    }
}

/// The outcome of `rule::find`.
#[derive(Clone, Copy)]
pub struct Match {
    /// First matching rule in file order (gets the counters).
    pub rule: u32,
    /// No enforcing rule matched, only audit ones.
    pub audit: bool,
}

/// How a packet passes: the reason, and the rule and audit flag it is counted under.
pub struct Hit {
    pub reason: PassReason,
    pub rule: u32,
    pub audit: bool,
}

impl Hit {
    /// A pass that no rule is behind (defaults, neighbour discovery).
    pub fn plain(reason: PassReason) -> Self {
        Hit {
            reason,
            rule: NO_RULE,
            audit: false,
        }
    }
}

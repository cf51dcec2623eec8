//! Events from the data path, decoded for people and tools: the ring reader, the fan-out to
//! `observe` clients, the flow log and the page's recent denials (and, later, detection).
//!
//! A kernel `zone_agent_common::Event` becomes a [`Record`]: addresses, names of zones,
//! rule and interface resolved against the policy generation it was decided under.
//!
//! The pipeline (each stage bounded, none ever blocks the one before it):
//!
//! ```text
//! ring ZA_EVENTS ─► reader thread (decode) ─┐
//!                                           ├─► queue (AGENT_QUEUE records) ─► fan-out thread ─► sinks
//! expiry sweep (flows it removes: flow_end) ┘      full: lost{stage="agent_queue"}
//! ```
//!
//! The sinks ([`fanout::Sink`]): the page's [`Recent`] denials, the `observe` clients
//! ([`observe::Hub`], each with its own bounded queue; a full one is disconnected) and the
//! [`flowlog::FlowLog`]. The detection engine joins as one more sink.

pub mod community_id;
pub mod decode;
pub mod ecs;
pub mod fanout;
pub mod flowlog;
pub mod observe;
pub mod reader;

use std::{collections::VecDeque, sync::Mutex};

use serde::{Deserialize, Serialize};

/// One decoded event. `kind` is an `EventKind` label (`deny`, `audit`, `flow_open`,
/// `flow_end`); `reason` a drop reason's label (deny/audit) or a `FlowEnd` label
/// (flow_end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub kind: String,
    pub reason: Option<String>,
    pub from_zone: String,
    pub to_zone: String,
    pub rule: Option<String>,
    pub interface: String,
    pub vlan: Option<u16>,
    pub protocol: u8,
    pub src_ip: std::net::IpAddr,
    pub src_port: Option<u16>,
    pub dst_ip: std::net::IpAddr,
    /// TCP/UDP: the port. ICMP/ICMPv6: `type << 8 | code` (as the kernel reports it).
    pub dst_port: Option<u16>,
    pub src_mac: String,
    pub tcp_flags: Option<u8>,
    /// flow_end only: counters per direction and the flow's duration.
    pub flow: Option<FlowTotals>,
    /// Events the kernel could not deliver on this CPU just before this one.
    pub lost_before: u64,
}

impl Record {
    /// The `observe --verdict` this record answers to: `allow` (flow_open, flow_end), `deny`
    /// or `audit`.
    pub fn verdict(&self) -> &'static str {
        match self.kind.as_str() {
            "deny" => "deny",
            "audit" => "audit",
            _ => "allow",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTotals {
    pub orig_packets: u64,
    pub orig_bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// `end - start` on the kernel's coarse clock (a few ms of resolution, hence ms).
    pub duration_ms: u64,
}

/// The last denied (and audited) attempts, newest last, for the page.
pub struct Recent {
    cap: usize,
    records: Mutex<VecDeque<Record>>,
}

impl Recent {
    pub fn new(cap: usize) -> Recent {
        Recent {
            cap,
            records: Mutex::new(VecDeque::with_capacity(cap)),
        }
    }

    pub fn push(&self, r: Record) {
        let mut q = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == self.cap {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// Up to `n` records, newest first.
    pub fn latest(&self, n: usize) -> Vec<Record> {
        let q = self.records.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().rev().take(n).cloned().collect()
    }
}

/// A record for unit tests: a denied TCP SYN from the internet host to the mynumber host's
/// port 22; tests change the fields they care about.
#[cfg(test)]
pub(crate) fn sample_record() -> Record {
    Record {
        time_ms: 0,
        kind: "deny".into(),
        reason: Some("no_rule".into()),
        from_zone: "internet".into(),
        to_zone: "mynumber".into(),
        rule: None,
        interface: "zinet".into(),
        vlan: None,
        protocol: zone_agent_common::PROTO_TCP,
        src_ip: std::net::IpAddr::from([198, 51, 100, 10]),
        src_port: Some(40000),
        dst_ip: std::net::IpAddr::from([10, 10, 0, 10]),
        dst_port: Some(22),
        src_mac: "02:00:00:00:30:10".into(),
        tcp_flags: Some(2),
        flow: None,
        lost_before: 0,
    }
}

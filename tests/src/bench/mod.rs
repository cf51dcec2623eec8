//! What the benchmarks of `cargo xtask bench` share: the generated policies ([`policy`]) and
//! the results each benchmark binary writes as JSON for xtask to turn into BENCHMARKS.md.
//!
//! Results carry raw samples, not only medians, so the report can show the spread.

pub mod policy;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ContinuousSummary;

pub use policy::Variant;

/// Median of `v` (the upper one of the two middle values); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// An object file xdp-tools installs (`xdpfilt_dny_all.o`…), where Debian or a source build
/// puts them.
pub fn xdp_tools_object(file: &str) -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/bpf",
        "/usr/lib/aarch64-linux-gnu/bpf",
        "/usr/lib/bpf",
        "/usr/local/lib/bpf",
    ]
    .iter()
    .map(|d| Path::new(d).join(file))
    .find(|p| p.is_file())
}

/// The value after `name` in a benchmark binary's arguments.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `tests/benches/per_packet.rs`: BPF_PROG_TEST_RUN over a frame corpus.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PerPacket {
    pub repeat: u32,
    pub samples: usize,
    /// The corpus, in table order.
    pub frames: Vec<FrameCase>,
    /// ns/packet of the floor program (`return XDP_DROP`), one per sample.
    pub floor_ns: Vec<f64>,
    /// One per (variant, size), smallest first.
    pub configs: Vec<Config>,
    /// Where the xdp-filter object came from.
    pub xdp_filter_object: String,
    /// Every config above runs with events on, as the agent does (`[events]` defaults);
    /// this is the first config again with events off, to show what events cost.
    #[serde(default)]
    pub events_off: Option<EventsOff>,
}

/// The first config of a run measured again with events off (`ZA_EVCONF` flags 0).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventsOff {
    pub variant: Variant,
    pub size: usize,
    /// ns/packet per frame (corpus order), one per sample.
    pub ns: Vec<Vec<f64>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FrameCase {
    pub what: String,
    /// The XDP action zone-agent must return (checked before measuring): 1 drop, 2 pass.
    pub action: u32,
}

/// One policy size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub variant: Variant,
    /// Rules ([`Variant::Rules`]) or destination prefixes ([`Variant::Cidr`]).
    pub size: usize,
    /// Rules in the policy file.
    pub rules: usize,
    /// Bytes of the policy file.
    pub policy_bytes: usize,
    /// Set when the policy could not be loaded; the numbers below are then missing.
    pub error: Option<String>,
    pub load: Option<LoadTimes>,
    /// Entries the compiled policy writes into the maps.
    pub entries: usize,
    /// Memory of the program's maps after the first apply (and after the reloads).
    pub maps: Vec<MapMem>,
    /// ns/packet per frame (outer: frame, inner: samples).
    pub za_ns: Vec<Vec<f64>>,
    pub xdp_filter: Option<XdpFilter>,
}

/// Wall-clock times of loading a policy with the library, as the agent does.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadTimes {
    /// Parse + validate + guideline lint (`policy check`).
    pub check_ms: f64,
    pub compile_ms: f64,
    /// Loading the XDP program and creating its maps.
    pub load_ms: f64,
    /// The first apply (empty maps).
    pub apply_ms: f64,
    /// Reloads of the same policy: check + compile + apply into the inactive set (which then
    /// holds an older policy to clear) + flip.
    pub reload_ms: Vec<f64>,
}

impl LoadTimes {
    /// What a first start costs before the program can be attached.
    pub fn total_ms(&self) -> f64 {
        self.check_ms + self.compile_ms + self.load_ms + self.apply_ms
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MapMem {
    pub name: String,
    pub kind: String,
    pub max_entries: u64,
    /// The kernel's `memlock` figure (`bpftool map show`): what the map takes.
    pub bytes: u64,
}

/// xdp-filter loaded with the same policy's addresses, ports and MACs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct XdpFilter {
    pub error: Option<String>,
    pub v4: usize,
    pub v6: usize,
    pub macs: usize,
    pub ports: usize,
    /// Its XDP action on each frame (it judges fields one by one, so it may differ).
    pub actions: Vec<u32>,
    pub ns: Vec<Vec<f64>>,
    pub maps: Vec<MapMem>,
}

/// `tests/benches/end_to_end.rs`: real traffic through a lab gateway.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EndToEnd {
    /// Rules in the policy of the goodput, connection-rate and flood runs.
    pub policy_rules: usize,
    /// How zone-agent attached (from `zone-agent status`), e.g. "native".
    pub xdp_mode: String,
    pub goodput: Vec<Throughput>,
    /// No filter with the hosts' TCP segmentation offload on (64 KB frames through the
    /// gateway), bits/s, one per round: the veth lab's ceiling, not comparable to the gates.
    pub goodput_tso_bps: Vec<f64>,
    pub flood: Vec<Flood>,
    pub reload: Option<ReloadUnderLoad>,
    pub agent_idle: Option<ProcCost>,
    pub agent_storm: Option<ProcCost>,
    /// Parts that did not run, and why.
    pub skipped: Vec<String>,
    /// Time the agent took from start to serving metrics with the reload policy.
    pub agent_start_ms: Option<f64>,
}

/// One filter configuration of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    NoFilter,
    /// A reference, not a filter: an XDP program that passes everything (xdp-filter's
    /// `xdpfilt_alw_eth` with nothing listed) on the same interfaces, in native mode. What
    /// running any XDP program on these veths costs, before the program's own work.
    XdpPass,
    ZoneAgent,
    Nftables,
}

impl Gate {
    pub fn name(self) -> &'static str {
        match self {
            Gate::NoFilter => "no filter",
            Gate::XdpPass => "XDP pass-through",
            Gate::ZoneAgent => "zone-agent",
            Gate::Nftables => "nftables",
        }
    }

    /// Whether the gate must block the policy's denied traffic.
    pub fn filters(self) -> bool {
        matches!(self, Gate::ZoneAgent | Gate::Nftables)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Throughput {
    pub gate: Gate,
    /// iperf3 goodput (received), bits/s, one per round.
    pub goodput_bps: Vec<f64>,
    /// TCP connections per second (connect, request, response, close), one per round.
    pub conn_per_s: Vec<f64>,
    /// Connections that failed, summed over rounds.
    pub conn_errors: u64,
    /// TCP retransmissions iperf3 reported, summed over rounds.
    pub retransmits: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flood {
    pub gate: Gate,
    pub seconds: f64,
    /// Frames the flooding host sent.
    pub sent: u64,
    /// Packets that reached the target host's interface (0 when the gate drops them).
    pub delivered: u64,
    /// softirq time over all CPUs during the flood, and all CPU time (both ns).
    pub softirq_ns: u64,
    pub cpu_ns: u64,
    pub cpus: usize,
    /// softirq time over an idle window of the same gate just before (ns, and its length):
    /// the machine's own background, subtracted in [`Flood::net_softirq_ns_per_packet`].
    pub idle_seconds: f64,
    pub idle_softirq_ns: u64,
}

impl Flood {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.seconds
    }
    /// softirq as a share of all CPUs' time.
    pub fn softirq_pct(&self) -> f64 {
        100.0 * self.softirq_ns as f64 / self.cpu_ns.max(1) as f64
    }
    /// softirq ns per packet sent, less the idle background.
    pub fn net_softirq_ns_per_packet(&self) -> f64 {
        let background = if self.idle_seconds > 0.0 {
            self.idle_softirq_ns as f64 * self.seconds / self.idle_seconds
        } else {
            0.0
        };
        (self.softirq_ns as f64 - background).max(0.0) / self.sent.max(1) as f64
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReloadUnderLoad {
    pub rules: usize,
    pub seconds: u32,
    /// Wall time of each `zone-agent reload` (CLI → admin socket → check, compile, apply).
    pub latency_ms: Vec<f64>,
    pub failed: u32,
    /// Reloads the agent's file watcher made on its own in between (they also count).
    pub watcher_reloads: u32,
    /// What the allowed traffic saw ([`crate::continuous`]).
    pub traffic: ContinuousSummary,
    /// Failed reloads' answers.
    pub errors: Vec<String>,
}

impl ReloadUnderLoad {
    /// Lines, connections and datagrams of allowed flows that did not make it.
    pub fn lost(&self) -> u64 {
        let t = &self.traffic;
        t.stream_sent.saturating_sub(t.stream_ok)
            + t.stream_errors
            + t.conn_failed
            + t.udp_sent.saturating_sub(t.udp_echoed)
    }
}

/// CPU and memory of a process over a window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcCost {
    pub seconds: f64,
    /// utime + stime over the window, in % of one CPU.
    pub cpu_pct: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_nan_and_takes_the_upper_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(3.0));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn reload_losses_add_up() {
        let traffic = ContinuousSummary {
            stream_sent: 10,
            stream_ok: 9,
            conn_failed: 2,
            udp_sent: 100,
            udp_echoed: 97,
            ..Default::default()
        };
        let r = ReloadUnderLoad {
            traffic,
            ..Default::default()
        };
        assert_eq!(r.lost(), 1 + 2 + 3);
    }
}

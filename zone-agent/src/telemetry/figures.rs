//! One reading of everything the agent counts: the kernel's counters folded by name across
//! policy generations, the tables' fill, and the live state of each zone interface. Both
//! `/metrics` ([`super::metrics::render`]) and the operator's page render from one
//! [`Figures`], so they never disagree on a number.

use zone_agent_common::{FlowEvent, LABEL_EMBRYOS, LABEL_FLOWS};

use super::{Telemetry, Totals};
use crate::datapath::{
    DatapathError,
    events::EventStats,
    ifindex, netlink,
    stats::{GlobalCounters, View},
};

/// A zone interface as the kernel reports it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceState {
    pub interface: String,
    /// The mode the kernel reports the agent's program in (`native`, `generic`, `offload`);
    /// when it does not run there, the mode the agent attached it in.
    pub mode: &'static str,
    /// The agent's program runs at the interface's XDP hook.
    pub attached: bool,
}

/// Everything counted, as of one reading.
pub struct Figures {
    /// Live sets plus the totals of retired ones.
    pub totals: Totals,
    pub global: GlobalCounters,
    /// (map label, entries, capacity).
    pub usage: Vec<(&'static str, u64, u64)>,
    /// Replied plus embryonic flows.
    pub flows_active: u64,
    pub flow_events: Vec<(FlowEvent, u64)>,
    pub embryo_evictions: u64,
    pub interfaces: Vec<InterfaceState>,
    /// The data path's event counters (`EventStat` slots, summed over CPUs).
    pub kernel_events: EventStats,
}

/// Reads the counters of both sets, the global counters, the tables and the interfaces.
pub fn gather(dp: &View<'_>, t: &Telemetry) -> Result<Figures, DatapathError> {
    let mut live = Totals::default();
    for set in 0..2u32 {
        if let Some(names) = &t.sets[set as usize] {
            live.add_set(
                names,
                &dp.set_counters(set, names.zones.len(), names.rules.len())?,
            );
        }
    }
    let usage = dp.map_usage();
    let fill = |label: &str| usage.iter().find(|u| u.0 == label).map_or(0, |u| u.1);
    let flow_events = dp.flow_events()?;
    Ok(Figures {
        totals: t.retired.merged(&live),
        global: dp.global_counters()?,
        flows_active: fill(LABEL_FLOWS) + fill(LABEL_EMBRYOS),
        embryo_evictions: dp.embryo_evictions(&flow_events, fill(LABEL_EMBRYOS)),
        flow_events,
        usage,
        interfaces: interfaces(t),
        kernel_events: dp.event_stats()?,
    })
}

/// Asks the kernel what runs at each interface the agent attached. An interface counts as
/// attached when the agent's own program runs there (not another program, not nothing).
fn interfaces(t: &Telemetry) -> Vec<InterfaceState> {
    t.attachments
        .iter()
        .map(|a| {
            let running = ifindex(&a.interface)
                .and_then(|idx| netlink::xdp_programs(idx).ok())
                .unwrap_or_default()
                .into_iter()
                .find(|(_, id)| Some(*id) == t.program_id);
            InterfaceState {
                interface: a.interface.clone(),
                mode: running.map_or(a.mode, |(mode, _)| mode),
                attached: running.is_some(),
            }
        })
        .collect()
}

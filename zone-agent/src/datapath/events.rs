//! The data path's events (see `zone_agent_common::events`): the settings the program reads,
//! its counters of emitted and lost events, and the ring the agent's reader consumes.

use aya::maps::{MapData, RingBuf};
use zone_agent_common::*;

use super::{DatapathError, Maps, map_err};

/// `ZA_EVSTATS` summed over CPUs, indexed by `EventStat as usize`.
pub type EventStats = [u64; EventStat::SLOTS as usize];

impl Maps {
    /// Writes the event settings the program reads from its next packet on
    /// (`flags` 0: no events at all, no ring call).
    pub fn set_event_config(&mut self, cfg: EventConfig) -> Result<(), DatapathError> {
        self.event_config
            .set(0, cfg, 0)
            .map_err(map_err(MAP_EVENT_CONFIG))
    }

    /// The settings the program reads now.
    pub fn event_config(&self) -> Result<EventConfig, DatapathError> {
        self.event_config
            .get(&0, 0)
            .map_err(map_err(MAP_EVENT_CONFIG))
    }

    /// Events emitted (per kind) and lost in the kernel (rate limited, ring full), summed
    /// over CPUs, indexed by `EventStat as usize`. Pinned: they survive agent restarts.
    pub fn event_stats(&self) -> Result<EventStats, DatapathError> {
        let mut out = [0u64; EventStat::SLOTS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let v = self
                .event_stats
                .get(&(i as u32), 0)
                .map_err(map_err(MAP_EVENT_STATS))?;
            *slot = v.iter().sum();
        }
        Ok(out)
    }

    /// The event ring, for the one reader (the handles the program was loaded with hold it;
    /// `None` once taken, and in handles opened from the pins).
    pub fn take_events_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.events_ring.take()
    }
}

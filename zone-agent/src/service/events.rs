//! The event pipeline of a running agent (see `events`): the queue, the fan-out thread
//! with its sinks (the page's recent denials, `observe` clients, the flow log), the ring
//! reader, and the producer the expiry sweep feeds its removed flows to.

use std::sync::Arc;

use anyhow::Context as _;

use super::Shared;
use crate::{
    config::FlowLog as FlowLogSettings,
    events::{
        decode::{Decoder, NamesOf},
        fanout::{self, Sink},
        flowlog::FlowLog,
        reader::{self, Ring, SweptFlows},
    },
};

/// Names of a generation from the published snapshot (the two installed sets).
fn names_of(shared: &Arc<Shared>) -> NamesOf {
    let shared = shared.clone();
    Box::new(move |generation| {
        let snap = shared.snapshot();
        snap.telemetry
            .sets
            .iter()
            .flatten()
            .find(|n| n.generation == generation)
            .cloned()
    })
}

/// Starts the fan-out (and the ring reader, given the ring) and returns what the expiry
/// sweep hands its removed flows to (`flows`: `events.flows`, else the sweep reports none).
/// Fails only if the flow log cannot be opened.
pub fn start(
    shared: &Arc<Shared>,
    flow_log: Option<FlowLogSettings>,
    ring: Option<Box<dyn Ring>>,
    flows: bool,
) -> anyhow::Result<SweptFlows> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(shared.recent.clone()),
        Box::new(shared.observers.clone()),
    ];
    if let Some(settings) = flow_log {
        let path = settings.path.clone();
        let log = FlowLog::open(settings)
            .with_context(|| format!("opening the flow log {}", path.display()))?;
        sinks.push(Box::new(log));
    }
    // The detection engine (next issue) joins here as one more sink.
    let (queue, rx) = fanout::queue();
    fanout::spawn(rx, sinks).context("starting the event fan-out")?;
    if let Some(ring) = ring {
        reader::spawn(ring, Decoder::new(names_of(shared)), queue.clone())
            .context("starting the event reader")?;
    }
    Ok(SweptFlows {
        decoder: Decoder::new(names_of(shared)),
        queue,
        enabled: flows,
    })
}

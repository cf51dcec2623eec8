//! The one consumer of the event queue: hands each record to every [`Sink`] in turn. A sink
//! must not block (each bounds its own work: the page's ring, the `observe` clients' own
//! queues, a buffered file); the detection engine becomes one more sink.

use std::{
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::Duration,
};

use super::{Recent, Record, flowlog::FlowLog, observe::Hub};
use crate::telemetry::{EVENTS, EventCounters};

/// Records queued between the producers (ring reader, expiry sweep) and the fan-out.
pub const AGENT_QUEUE: usize = 65_536;
/// The fan-out's sinks get a [`Sink::tick`] at least this often (the flow log's flush).
const TICK: Duration = Duration::from_millis(250);

/// Where records go.
pub trait Sink: Send {
    fn accept(&mut self, r: &Record);
    /// Called at least every [`TICK`], with or without records.
    fn tick(&mut self) {}
}

/// The page's last denied and audited attempts.
impl Sink for Arc<Recent> {
    fn accept(&mut self, r: &Record) {
        if matches!(r.kind.as_str(), "deny" | "audit") {
            self.push(r.clone());
        }
    }
}

impl Sink for Arc<Hub> {
    fn accept(&mut self, r: &Record) {
        self.publish(r);
    }
}

impl Sink for FlowLog {
    fn accept(&mut self, r: &Record) {
        self.write(r);
    }
    fn tick(&mut self) {
        FlowLog::tick(self);
    }
}

/// The producers' end of the queue: never blocks; a full queue loses the record, counted
/// in `events_lost_total{stage="agent_queue"}`.
#[derive(Clone)]
pub struct Queue(SyncSender<Record>);

impl Queue {
    /// `false`: lost (full, or the fan-out is gone).
    pub fn push(&self, r: Record) -> bool {
        match self.0.try_send(r) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                EventCounters::inc(&EVENTS.lost_agent_queue);
                false
            }
        }
    }
}

/// A queue and its consumer end.
pub fn queue() -> (Queue, Receiver<Record>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(AGENT_QUEUE);
    (Queue(tx), rx)
}

/// Runs until every producer is gone: each record to every sink, ticks in between.
pub fn run(rx: Receiver<Record>, mut sinks: Vec<Box<dyn Sink>>) {
    let mut last_tick = std::time::Instant::now();
    loop {
        match rx.recv_timeout(TICK) {
            Ok(r) => {
                for s in sinks.iter_mut() {
                    s.accept(&r);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= TICK {
            last_tick = std::time::Instant::now();
            for s in sinks.iter_mut() {
                s.tick();
            }
        }
    }
    // Dropping the sinks flushes the flow log.
}

/// Starts [`run`] on a thread of its own (`za-events`).
pub fn spawn(
    rx: Receiver<Record>,
    sinks: Vec<Box<dyn Sink>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("za-events".into())
        .spawn(move || run(rx, sinks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::observe::Filter;

    fn record(kind: &str) -> Record {
        Record {
            kind: kind.into(),
            ..crate::events::sample_record()
        }
    }

    #[test]
    fn every_sink_sees_every_record() {
        let recent = Arc::new(Recent::new(10));
        let hub = Arc::new(Hub::default());
        let mut sub = hub.subscribe(Filter::default());
        let (q, rx) = queue();
        let t = spawn(rx, vec![Box::new(recent.clone()), Box::new(hub.clone())]).unwrap();
        assert!(q.push(record("deny")));
        assert!(q.push(record("flow_open")));
        drop(q);
        t.join().unwrap();
        assert_eq!(recent.latest(10).len(), 1, "only denials go to the page");
        assert_eq!(sub.rx.try_recv().unwrap().kind, "deny");
        assert_eq!(sub.rx.try_recv().unwrap().kind, "flow_open");
    }
}

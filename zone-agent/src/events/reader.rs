//! The producers of the event queue: the ring reader (a thread of its own) and the expiry
//! sweep's flow ends.
//!
//! The kernel wakes the reader only once `EVENT_WAKEUP_BYTES` are pending (no wakeup per
//! packet in a flood), so the reader also looks every `EVENT_POLL_MS` without one: a lone
//! denial reaches `observe` within that interval.

use std::{
    os::fd::{AsRawFd, BorrowedFd},
    time::Duration,
};

use tracing::{info, warn};
use zone_agent_common::{EVENT_POLL_MS, FlowKey, FlowState};

use super::{
    decode::{Decoder, event_of, swept_flow_end},
    fanout::Queue,
};
use crate::telemetry::{EVENTS, EventCounters};

/// A ring of kernel records (the `ZA_EVENTS` ring buffer; a test's fake).
pub trait Ring: Send {
    /// Calls `f` with every record available now, oldest first; returns how many.
    fn drain(&mut self, f: &mut dyn FnMut(&[u8])) -> usize;
    /// Waits until records may be available or `timeout` passes.
    fn wait(&mut self, timeout: Duration);
}

/// The data path's ring (`ZA_EVENTS`).
impl Ring for aya::maps::RingBuf<aya::maps::MapData> {
    fn drain(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Some(item) = self.next() {
            f(&item);
            n += 1;
        }
        n
    }
    fn wait(&mut self, timeout: Duration) {
        use std::os::fd::AsFd as _;
        poll_readable(self.as_fd(), timeout);
    }
}

/// Waits for `fd` to become readable (a ring buffer's fd polls readable when the kernel
/// woke it), at most `timeout`.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; EINTR or an error just ends this wait early.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
}

/// Reads `ring` for ever: decodes each record and queues it; a record that does not decode
/// is counted (`events_lost_total{stage="undecodable"}`).
pub fn run(mut ring: Box<dyn Ring>, mut decoder: Decoder, queue: Queue) {
    let mut warned = false;
    loop {
        ring.wait(Duration::from_millis(EVENT_POLL_MS));
        decoder.sync_clock();
        ring.drain(&mut |bytes| {
            match event_of(bytes).and_then(|e| decoder.decode(&e)) {
                Some(r) => {
                    queue.push(r);
                }
                None => {
                    EventCounters::inc(&EVENTS.lost_undecodable);
                    if !warned {
                        warned = true;
                        warn!(
                            len = bytes.len(),
                            "an event from the data path could not be decoded (a kernel/agent mismatch?); counted in zone_agent_events_lost_total{{stage=\"undecodable\"}}"
                        );
                    }
                }
            }
        });
    }
}

/// Starts [`run`] on a thread of its own (`za-evread`).
pub fn spawn(
    ring: Box<dyn Ring>,
    decoder: Decoder,
    queue: Queue,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    info!("reading events from the data path");
    std::thread::Builder::new()
        .name("za-evread".into())
        .spawn(move || run(ring, decoder, queue))
}

/// Turns the flows the expiry sweep removed into `flow_end` records (counted in
/// `events_total{kind="flow_end"}`).
pub struct SweptFlows {
    pub decoder: Decoder,
    pub queue: Queue,
    /// `events.flows`: flow events wanted at all.
    pub enabled: bool,
}

impl SweptFlows {
    pub fn ended(&mut self, flows: &[(FlowKey, FlowState)]) {
        if flows.is_empty() || !self.enabled {
            return;
        }
        self.decoder.sync_clock();
        for (k, st) in flows {
            EventCounters::inc(&EVENTS.flow_end_swept);
            match self.decoder.decode(&swept_flow_end(k, st)) {
                Some(r) => {
                    self.queue.push(r);
                }
                None => EventCounters::inc(&EVENTS.lost_undecodable),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::SetNames;
    use zone_agent_common::{Event, EventKind, NO_RULE};

    struct Fake(Vec<Vec<u8>>);

    impl Ring for Fake {
        fn drain(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
            let n = self.0.len();
            for r in self.0.drain(..) {
                f(&r);
            }
            n
        }
        fn wait(&mut self, _: Duration) {
            if self.0.is_empty() {
                // Nothing more will come: end the test's reader.
                panic!("drained");
            }
        }
    }

    fn bytes(e: &Event) -> Vec<u8> {
        // SAFETY: Event is plain data of its size.
        unsafe { std::slice::from_raw_parts((e as *const Event).cast::<u8>(), size_of::<Event>()) }
            .to_vec()
    }

    #[test]
    fn records_are_decoded_and_garbage_counted() {
        let e = Event {
            kind: EventKind::FlowOpen as u8,
            proto: 17,
            rule: NO_RULE,
            generation: 1,
            ..Event::default()
        };
        let ring = Fake(vec![bytes(&e), vec![1, 2, 3]]);
        let decoder = Decoder::new(Box::new(|_| None::<SetNames>));
        let (q, rx) = super::super::fanout::queue();
        let bad = EVENTS
            .lost_undecodable
            .load(std::sync::atomic::Ordering::Relaxed);
        let t = std::thread::spawn(move || run(Box::new(ring), decoder, q));
        assert!(t.join().is_err(), "the fake ends the reader");
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, "flow_open");
        assert!(
            EVENTS
                .lost_undecodable
                .load(std::sync::atomic::Ordering::Relaxed)
                > bad
        );
    }
}

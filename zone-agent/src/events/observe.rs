//! `zone-agent observe`: live records for the clients of the admin socket, each with its
//! own filter and its own bounded queue. The fan-out never waits for a client: a client
//! whose queue is full (it stopped reading, or reads slower than events arrive) is
//! disconnected and counted (`zone_agent_observe_clients_dropped_total`).

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::Record;
use crate::telemetry::{EVENTS, EventCounters};

/// Records queued per client before it counts as not keeping up (a few seconds of the
/// default kernel budget).
pub const CLIENT_QUEUE: usize = 4096;

/// `--verdict` values.
pub const VERDICTS: [&str; 3] = ["allow", "deny", "audit"];

/// What one client wants to see; every given field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// `allow` (flow_open, flow_end), `deny` or `audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Source or destination zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Source or destination address within this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<IpNet>,
    /// The rule's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Filter {
    /// Why the filter cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        match &self.verdict {
            Some(v) if !VERDICTS.contains(&v.as_str()) => Err(format!(
                "verdict {v:?} is not one of {}",
                VERDICTS.join(", ")
            )),
            _ => Ok(()),
        }
    }

    pub fn matches(&self, r: &Record) -> bool {
        let host = |ip: IpAddr| self.host.is_some_and(|n| n.contains(&ip));
        self.verdict.as_deref().is_none_or(|v| v == r.verdict())
            && self
                .zone
                .as_deref()
                .is_none_or(|z| z == r.from_zone || z == r.to_zone)
            && (self.host.is_none() || host(r.src_ip) || host(r.dst_ip))
            && self
                .rule
                .as_deref()
                .is_none_or(|x| r.rule.as_deref() == Some(x))
    }
}

struct Client {
    id: u64,
    filter: Filter,
    tx: mpsc::Sender<Arc<Record>>,
    dropped: Arc<AtomicBool>,
}

/// The connected clients.
#[derive(Default)]
pub struct Hub {
    clients: Mutex<Vec<Client>>,
    next_id: AtomicU64,
}

/// One client's end: its records, until it is dropped (or drops itself).
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<Record>>,
    id: u64,
    dropped: Arc<AtomicBool>,
    hub: Arc<Hub>,
}

/// Counts a client dropped for not keeping up, once.
fn mark_dropped(flag: &AtomicBool) {
    if !flag.swap(true, Ordering::Relaxed) {
        EventCounters::inc(&EVENTS.observe_dropped);
    }
}

impl Subscription {
    /// The client could not be written to in time: it is dropped (counted once).
    pub fn drop_slow(&self) {
        mark_dropped(&self.dropped);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.id);
        EVENTS.observe_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// A new client with `filter` (checked by the caller).
    pub fn subscribe(self: &Arc<Self>, filter: Filter) -> Subscription {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicBool::new(false));
        self.lock().push(Client {
            id,
            filter,
            tx,
            dropped: dropped.clone(),
        });
        EVENTS.observe_clients.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx,
            id,
            dropped,
            hub: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|c| c.id != id);
    }

    /// Clients connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `r` for every client whose filter matches; a client whose queue is full is
    /// disconnected (its sender dropped: its stream ends) and counted.
    pub fn publish(&self, r: &Record) {
        let mut clients = self.lock();
        if clients.is_empty() {
            return;
        }
        let mut shared: Option<Arc<Record>> = None;
        clients.retain(|c| {
            if !c.filter.matches(r) {
                return true;
            }
            let rec = shared.get_or_insert_with(|| Arc::new(r.clone())).clone();
            match c.tx.try_send(rec) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    mark_dropped(&c.dropped);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, src: &str) -> Record {
        Record {
            kind: kind.into(),
            rule: Some("web".into()),
            src_ip: src.parse().unwrap(),
            ..crate::events::sample_record()
        }
    }

    fn filter(json: &str) -> Filter {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn filters() {
        let deny = record("deny", "198.51.100.10");
        let open = record("flow_open", "198.51.100.10");
        assert!(Filter::default().matches(&deny));
        assert!(filter(r#"{"verdict":"deny"}"#).matches(&deny));
        assert!(!filter(r#"{"verdict":"deny"}"#).matches(&open));
        assert!(filter(r#"{"verdict":"allow"}"#).matches(&open));
        assert!(filter(r#"{"zone":"mynumber"}"#).matches(&deny));
        assert!(!filter(r#"{"zone":"lgwan"}"#).matches(&deny));
        assert!(filter(r#"{"host":"198.51.100.0/24"}"#).matches(&deny));
        assert!(filter(r#"{"host":"10.10.0.10/32"}"#).matches(&deny));
        assert!(!filter(r#"{"host":"10.20.0.0/16"}"#).matches(&deny));
        assert!(filter(r#"{"rule":"web"}"#).matches(&deny));
        assert!(!filter(r#"{"rule":"ssh"}"#).matches(&deny));
        assert!(filter(r#"{"verdict":"maybe"}"#).check().is_err());
        assert!(serde_json::from_str::<Filter>(r#"{"colour":"red"}"#).is_err());
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_and_counted() {
        let hub = Arc::new(Hub::default());
        let mut reader = hub.subscribe(Filter::default());
        let stalled = hub.subscribe(Filter::default());
        assert_eq!(hub.len(), 2);
        let dropped = EVENTS.observe_dropped.load(Ordering::Relaxed);
        let r = record("deny", "198.51.100.10");
        for _ in 0..=CLIENT_QUEUE {
            hub.publish(&r);
            // The reader keeps up.
            assert!(reader.rx.try_recv().is_ok());
        }
        assert_eq!(hub.len(), 1, "the stalled client is gone");
        assert!(EVENTS.observe_dropped.load(Ordering::Relaxed) > dropped);
        hub.publish(&r);
        assert!(reader.rx.try_recv().is_ok());
        drop(stalled);
        drop(reader);
        assert!(hub.is_empty());
    }
}

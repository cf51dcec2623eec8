//! Kernel records → [`Record`]s: addresses, zone/rule/interface names, wall-clock time.
//!
//! Names come from the policy generation the event carries (a reload may have renumbered
//! zones and rules since), looked up through a function the service gives (the published
//! snapshot has the names of the sets installed) and cached by generation (a generation's
//! names never change), so an event of a just-replaced generation still gets its names. An
//! event of a generation the agent no longer knows decodes with ids (`#3`).

use std::{collections::HashMap, net::IpAddr};

use zone_agent_common::{
    DropReason, EVENT_V6, EVENT_VLAN, Event, EventKind, FlowEnd, FlowKey, FlowState, NO_RULE,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use super::{FlowTotals, Record};
use crate::{datapath::stats::monotonic_coarse_ns, telemetry::SetNames};

/// Names of the generation asked for, if the agent still knows it.
pub type NamesOf = Box<dyn Fn(u32) -> Option<SetNames> + Send>;

/// Generations whose names are kept (a reload adds one; events of older ones are rare).
/// A generation not known is asked for again at its next event (cheap: the lookup clones
/// an `Arc` and finds nothing), so a reload's names are used as soon as they are published.
const NAMES_KEPT: usize = 8;

/// Turns kernel events (and flows the expiry sweep removed) into [`Record`]s.
pub struct Decoder {
    names_of: NamesOf,
    names: HashMap<u32, SetNames>,
    ifnames: HashMap<u32, String>,
    /// Wall-clock minus coarse-monotonic time, in ns (see [`Decoder::sync_clock`]).
    offset_ns: i128,
}

/// CLOCK_REALTIME in ns.
fn realtime_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The name of interface `ifindex` (`#<index>` if it is gone).
fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("#{ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn addr(b: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from(*b)
    } else {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    }
}

/// Ports as a [`Record`] shows them (TCP/UDP/SCTP ports; ICMP `type << 8 | code` as the
/// destination).
fn ports(proto: u8, src: u16, dst: u16) -> (Option<u16>, Option<u16>) {
    match proto {
        PROTO_TCP | PROTO_UDP => (Some(src), Some(dst)),
        PROTO_ICMP | PROTO_ICMPV6 => (None, Some(dst)),
        _ => (None, None),
    }
}

/// A kernel record as bytes → the `Event` (None: not one, a kernel/agent mismatch).
pub fn event_of(bytes: &[u8]) -> Option<Event> {
    if bytes.len() != std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: the length matches and `Event` is plain data with no invalid bit patterns
    // (repr(C), integers only); the ring gives no alignment guarantee, hence unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// The `flow_end` event of a flow the agent's expiry sweep removed: the data path's own
/// record (`Event::flow_end`), why it ended from its flags, and its last packet as the
/// time, so that its duration is first to last packet (not the idle time after it).
pub fn swept_flow_end(k: &FlowKey, st: &FlowState) -> Event {
    Event::flow_end(k, st, FlowEnd::of_expired(st.flags), st.last_seen_ns, 0)
}

impl Decoder {
    pub fn new(names_of: NamesOf) -> Decoder {
        let mut d = Decoder {
            names_of,
            names: HashMap::new(),
            ifnames: HashMap::new(),
            offset_ns: 0,
        };
        d.sync_clock();
        d
    }

    /// Takes the current offset between wall-clock and kernel time (once per batch: the
    /// wall clock may be stepped by NTP, and records are converted with the offset of when
    /// they were read, within the reader's poll interval of when they were made).
    pub fn sync_clock(&mut self) {
        self.offset_ns = realtime_ns() - i128::from(monotonic_coarse_ns());
    }

    fn wall_ms(&self, kernel_ns: u64) -> u64 {
        let ns = i128::from(kernel_ns) + self.offset_ns;
        (ns.max(0) / 1_000_000) as u64
    }

    fn names(&mut self, generation: u32) -> Option<&SetNames> {
        if !self.names.contains_key(&generation) {
            let n = (self.names_of)(generation)?;
            if self.names.len() >= NAMES_KEPT {
                let oldest = *self.names.keys().min().expect("not empty");
                self.names.remove(&oldest);
            }
            self.names.insert(generation, n);
        }
        self.names.get(&generation)
    }

    fn zone(&mut self, generation: u32, id: u8) -> String {
        self.names(generation)
            .and_then(|n| n.zones.get(id as usize).cloned())
            .unwrap_or_else(|| format!("#{id}"))
    }

    fn rule(&mut self, generation: u32, id: u32) -> Option<String> {
        if id == NO_RULE {
            return None;
        }
        Some(
            self.names(generation)
                .and_then(|n| n.rules.get(id as usize).cloned())
                .unwrap_or_else(|| format!("#{id}")),
        )
    }

    fn interface(&mut self, ifindex: u32) -> String {
        self.ifnames
            .entry(ifindex)
            .or_insert_with(|| ifname(ifindex))
            .clone()
    }

    /// One kernel event; `None` if its kind or reason is not one this agent knows.
    pub fn decode(&mut self, e: &Event) -> Option<Record> {
        let kind = EventKind::from_u8(e.kind)?;
        let reason = match kind {
            EventKind::Deny => Some(DropReason::from_u8(e.reason)?.label().to_string()),
            // 0: an audit rule's pass (no drop reason).
            EventKind::Audit if e.reason == 0 => None,
            EventKind::Audit => Some(DropReason::from_u8(e.reason)?.label().to_string()),
            EventKind::FlowOpen => None,
            EventKind::FlowEnd => Some(FlowEnd::from_u8(e.reason)?.label().to_string()),
        };
        let v6 = e.flags & EVENT_V6 != 0;
        let (src_port, dst_port) = ports(e.proto, e.src_port, e.dst_port);
        let flow = (kind == EventKind::FlowEnd).then(|| FlowTotals {
            orig_packets: e.orig_packets,
            orig_bytes: e.orig_bytes,
            reply_packets: e.reply_packets,
            reply_bytes: e.reply_bytes,
            duration_ms: e.time_ns.saturating_sub(e.start_ns) / 1_000_000,
        });
        Some(Record {
            time_ms: self.wall_ms(e.time_ns),
            kind: kind.label().to_string(),
            reason,
            from_zone: self.zone(e.generation, e.from_zone),
            to_zone: self.zone(e.generation, e.to_zone),
            rule: self.rule(e.generation, e.rule),
            interface: self.interface(e.ifindex),
            vlan: (e.flags & EVENT_VLAN != 0).then_some(e.vlan),
            protocol: e.proto,
            src_ip: addr(&e.src, v6),
            src_port,
            dst_ip: addr(&e.dst, v6),
            dst_port,
            src_mac: mac(&e.src_mac),
            tcp_flags: (e.proto == PROTO_TCP && kind != EventKind::FlowEnd).then_some(e.tcp_flags),
            flow,
            lost_before: e.lost_before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zone_agent_common::{FAMILY_V4, FLOW_FIN_ORIG, FLOW_FIN_REPLY};

    fn names() -> SetNames {
        SetNames {
            generation: 7,
            zones: vec!["none".into(), "mynumber".into(), "internet".into()],
            rules: vec!["web".into()],
        }
    }

    fn decoder() -> Decoder {
        Decoder::new(Box::new(|g| (g == 7).then(names)))
    }

    fn deny() -> Event {
        let mut e = Event {
            time_ns: monotonic_coarse_ns(),
            kind: EventKind::Deny as u8,
            reason: DropReason::NoRule as u8,
            from_zone: 2,
            to_zone: 1,
            proto: PROTO_TCP,
            tcp_flags: 0x02,
            src_port: 40000,
            dst_port: 22,
            generation: 7,
            rule: NO_RULE,
            ifindex: 1,
            src_mac: [2, 0, 0, 0, 0x30, 0x10],
            lost_before: 3,
            ..Event::default()
        };
        e.src[..4].copy_from_slice(&[198, 51, 100, 10]);
        e.dst[..4].copy_from_slice(&[10, 10, 0, 10]);
        e
    }

    #[test]
    fn a_deny_decodes_with_names_and_wall_time() {
        let mut d = decoder();
        let r = d.decode(&deny()).unwrap();
        assert_eq!(r.kind, "deny");
        assert_eq!(r.reason.as_deref(), Some("no_rule"));
        assert_eq!(
            (r.from_zone.as_str(), r.to_zone.as_str()),
            ("internet", "mynumber")
        );
        assert_eq!(r.rule, None);
        assert_eq!(r.src_ip, "198.51.100.10".parse::<IpAddr>().unwrap());
        assert_eq!((r.src_port, r.dst_port), (Some(40000), Some(22)));
        assert_eq!(r.src_mac, "02:00:00:00:30:10");
        assert_eq!(r.interface, "lo");
        assert_eq!(r.tcp_flags, Some(2));
        assert_eq!(r.lost_before, 3);
        assert_eq!(r.verdict(), "deny");
        let now_ms = (realtime_ns() / 1_000_000) as u64;
        assert!(
            now_ms.abs_diff(r.time_ms) < 1_000,
            "{now_ms} vs {}",
            r.time_ms
        );
    }

    #[test]
    fn unknown_generation_and_garbage() {
        let mut d = decoder();
        let mut e = deny();
        e.generation = 99;
        e.rule = 4;
        let r = d.decode(&e).unwrap();
        assert_eq!(
            (r.from_zone.as_str(), r.rule.as_deref()),
            ("#2", Some("#4"))
        );
        e.kind = 200;
        assert!(d.decode(&e).is_none());
        assert!(event_of(&[0u8; 10]).is_none());
        let bytes = [0u8; std::mem::size_of::<Event>()];
        assert_eq!(event_of(&bytes), Some(Event::default()));
    }

    /// A reload's names are used as soon as they are published, even if an event of the
    /// new generation came first.
    #[test]
    fn names_published_after_the_first_event_are_picked_up() {
        let published = std::sync::Arc::new(std::sync::Mutex::new(None::<SetNames>));
        let p = published.clone();
        let mut d = Decoder::new(Box::new(move |_| p.lock().unwrap().clone()));
        assert_eq!(d.decode(&deny()).unwrap().from_zone, "#2");
        *published.lock().unwrap() = Some(names());
        assert_eq!(d.decode(&deny()).unwrap().from_zone, "internet");
    }

    #[test]
    fn flow_end_of_a_swept_flow() {
        let mut d = decoder();
        let mut k = FlowKey {
            proto: PROTO_UDP,
            family: FAMILY_V4,
            a_port: 53,
            b_port: 5000,
            ..FlowKey::default()
        };
        k.a[..4].copy_from_slice(&[198, 51, 100, 10]);
        k.b[..4].copy_from_slice(&[10, 10, 0, 10]);
        let st = FlowState {
            generation: 7,
            rule: 0,
            from_zone: 1,
            to_zone: 2,
            orig_is_a: 0,
            start_ns: 1_000_000_000,
            last_seen_ns: 3_500_000_000,
            orig_packets: 2,
            orig_bytes: 200,
            reply_packets: 1,
            reply_bytes: 90,
            flags: FLOW_FIN_ORIG | FLOW_FIN_REPLY,
            ..FlowState::default()
        };
        let r = d.decode(&swept_flow_end(&k, &st)).unwrap();
        assert_eq!(r.src_ip, "10.10.0.10".parse::<IpAddr>().unwrap());
        assert_eq!((r.src_port, r.dst_port), (Some(5000), Some(53)));
        assert_eq!(r.rule.as_deref(), Some("web"));
        assert_eq!(r.reason.as_deref(), Some("closed"));
        let f = r.flow.unwrap();
        assert_eq!(
            (f.orig_bytes, f.reply_bytes, f.duration_ms),
            (200, 90, 2500)
        );
    }
}

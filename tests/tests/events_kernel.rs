//! The data path's events, read back from the real `ZA_EVENTS` ring after BPF_PROG_TEST_RUN
//! of crafted frames: what a denied, audited or flow-opening packet reports, the per-CPU
//! budget and what it counts as lost, the per-flow counters and the end of a flow in the data
//! path, and silence when events are off.
//!
//! Runs in a private network namespace (stand-in zone interfaces), on one pinned CPU: the
//! budget is per CPU, so every frame must meet the same bucket.

mod common;

use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use common::frames::{self, ACK, FIN, Frame, SYN};
use zone_agent::{
    datapath::{Datapath, events::EventStats, stats::monotonic_coarse_ns},
    policy::{
        Policy, compile,
        validate::{self, OfflineEnvironment},
    },
};
use zone_agent_common::*;

const IFACES: [&str; 2] = ["evmyn", "evlg"];

const POLICY: &str = r#"
version = 1
mode = "enforce"

[defaults]
intra_zone = "allow"
unknown = "deny"
fragments = "deny"

[[zones]]
name = "mynumber"
interfaces = ["evmyn"]
networks = ["10.10.0.0/16", "fd10::/48"]

[[zones]]
name = "lgwan"
interfaces = ["evlg"]
networks = ["10.20.0.0/16", "fd20::/48"]

[[rules]]
name = "relay"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]

[[rules]]
name = "trial"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["25"]
mode = "audit"
"#;

/// Zone ids and rule ids of `POLICY` (file order).
fn mynumber() -> u8 {
    Policy::zone_id(0)
}
fn lgwan() -> u8 {
    Policy::zone_id(1)
}
const RELAY: u32 = 0;
const TRIAL: u32 = 1;

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr16(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v) => out[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => out = v.octets(),
    }
    out
}

/// The program loaded with `text` installed, and its event ring.
struct Probe {
    dp: Datapath,
    ring: RingBuf<MapData>,
}

impl Probe {
    fn new(text: &str, events: Option<EventConfig>) -> Probe {
        let mut dp = Datapath::load().expect("load XDP program");
        let ring = dp.maps.take_events_ring().expect("the ring, once");
        let mut p = Probe { dp, ring };
        p.install(text);
        if let Some(cfg) = events {
            p.dp.maps.set_event_config(cfg).unwrap();
        }
        p
    }

    fn install(&mut self, text: &str) {
        let (policy, _) = validate::check_str("test.toml".as_ref(), text, &OfflineEnvironment)
            .expect("valid policy");
        let compiled = compile::compile(&policy).expect("compiles");
        self.dp
            .apply(&compiled, zone_agent::agent::ifindex)
            .expect("apply");
    }

    fn run(&self, iface: &str, f: &[u8]) -> u32 {
        common::xdp::test_run(self.dp.program(), iface, f)
    }

    /// Every record in the ring now.
    fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            assert_eq!(item.len(), size_of::<Event>(), "one Event per record");
            // SAFETY: the length is checked; Event is plain data.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
        out
    }

    fn stats(&self) -> EventStats {
        self.dp.maps.event_stats().unwrap()
    }

    /// The flow between `src`:`sport` and `dst`:`dport` (either way round): its key, its
    /// entry, and whether it is in the replied table (else the embryonic one).
    fn flow(&self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> (FlowKey, FlowState, bool) {
        let ends = |k: &FlowKey| {
            let (a, b) = ((k.a, k.a_port), (k.b, k.b_port));
            let (s, d) = ((addr16(src), sport), (addr16(dst), dport));
            (a, b) == (s, d) || (a, b) == (d, s)
        };
        let m = &self.dp.maps;
        let replied = m
            .flows
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v, true));
        let embryos = m
            .embryos
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v, false));
        replied
            .chain(embryos)
            .find(|(k, _, _)| ends(k))
            .expect("the flow's entry")
    }
}

fn on(rate: u32, burst: u32) -> EventConfig {
    EventConfig {
        rate,
        burst,
        flags: EVENTS_DENY | EVENTS_FLOW,
        _pad: 0,
    }
}

fn stat(s: &EventStats, e: EventStat) -> u64 {
    s[e as usize]
}

/// Runs `f` in a private network namespace with `IFACES`, on CPU 0 only.
fn probe<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    common::xdp::in_private_netns(&IFACES, || {
        // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                0,
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            );
        }
        f()
    })
}

#[test]
fn denied_and_audited_packets_report_what_they_were() {
    probe(|| {
        let mut p = Probe::new(POLICY, Some(on(1000, 100)));
        let generation = p.dp.generation;
        let t0 = monotonic_coarse_ns();

        // IPv4 TCP SYN to a port no rule allows.
        let (src, dst) = (ip("10.20.7.7"), ip("10.10.9.20"));
        let f = Frame::new(src, dst).tcp(40000, 22, SYN).mac(MAC);
        assert_eq!(p.run("evlg", &f.bytes()), XDP_DROP);
        let ev = p.drain();
        assert_eq!(ev.len(), 1, "{ev:?}");
        let e = ev[0];
        assert_eq!(EventKind::from_u8(e.kind), Some(EventKind::Deny));
        assert_eq!(e.reason, DropReason::NoRule as u8);
        assert_eq!((e.from_zone, e.to_zone), (lgwan(), mynumber()));
        assert_eq!((e.src, e.dst), (addr16(src), addr16(dst)));
        assert_eq!((e.src_port, e.dst_port, e.proto), (40000, 22, PROTO_TCP));
        assert_eq!(e.tcp_flags, SYN);
        assert_eq!(e.src_mac, MAC);
        assert_eq!(e.ifindex, common::xdp::ifindex("evlg"));
        assert_eq!((e.rule, e.generation), (NO_RULE, generation));
        assert_eq!((e.flags, e.vlan, e.lost_before), (0, 0, 0));
        assert!(
            e.time_ns >= t0 && e.time_ns <= monotonic_coarse_ns(),
            "time {} not in [{t0}, now]",
            e.time_ns
        );
        assert_eq!(
            (e.orig_packets, e.orig_bytes, e.reply_packets, e.start_ns),
            (0, 0, 0, 0)
        );

        // IPv6 UDP, and a spoofed source (its own reason).
        let (src6, dst6) = (ip("fd20::99"), ip("fd10::1"));
        let f = Frame::new(src6, dst6).udp(5353, 53).mac(MAC);
        assert_eq!(p.run("evlg", &f.bytes()), XDP_DROP);
        let spoof = Frame::new(ip("10.10.1.1"), dst).tcp(40001, 443, SYN);
        assert_eq!(p.run("evlg", &spoof.bytes()), XDP_DROP);
        let ev = p.drain();
        assert_eq!(ev.len(), 2, "{ev:?}");
        let e = ev[0];
        assert_eq!(e.flags, EVENT_V6);
        assert_eq!((e.src, e.dst), (addr16(src6), addr16(dst6)));
        assert_eq!((e.src_port, e.dst_port, e.proto), (5353, 53, PROTO_UDP));
        assert_eq!(
            (e.reason, e.from_zone, e.to_zone),
            (DropReason::NoRule as u8, lgwan(), mynumber())
        );
        assert_eq!(ev[1].reason, DropReason::SpoofedSource as u8);
        assert_eq!(ev[1].src, addr16(ip("10.10.1.1")));

        // Not IP: dropped before any tuple exists; the MAC is known.
        assert_eq!(p.run("evlg", &frames::non_ip()), XDP_DROP);
        let ev = p.drain();
        assert_eq!(ev.len(), 1, "{ev:?}");
        let e = ev[0];
        assert_eq!(
            (e.kind, e.reason),
            (EventKind::Deny as u8, DropReason::NonIp as u8)
        );
        assert_eq!(
            (e.src, e.dst, e.src_port, e.dst_port, e.proto),
            ([0; 16], [0; 16], 0, 0, 0)
        );
        assert_eq!(e.src_mac, [0x02, 0, 0, 0, 0, 0x10]);
        assert_eq!(e.ifindex, common::xdp::ifindex("evlg"));

        // An audit rule's pass: the flow it opens (flagged audit), and one Audit event
        // (reason 0, the rule) for the decision.
        let f = Frame::new(src, dst).tcp(40002, 25, SYN).mac(MAC);
        assert_eq!(p.run("evlg", &f.bytes()), XDP_PASS);
        let ev = p.drain();
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!((ev[0].kind, ev[0].rule), (EventKind::FlowOpen as u8, TRIAL));
        assert_eq!(ev[0].flags & EVENT_FLOW_AUDIT, EVENT_FLOW_AUDIT);
        assert_eq!(
            (ev[1].kind, ev[1].reason, ev[1].rule),
            (EventKind::Audit as u8, 0, TRIAL)
        );

        let s = p.stats();
        assert_eq!(stat(&s, EventStat::EmittedDeny), 4);
        assert_eq!(stat(&s, EventStat::EmittedAudit), 1);
        assert_eq!(stat(&s, EventStat::EmittedFlowOpen), 1);
        assert_eq!(
            stat(&s, EventStat::RateLimited) + stat(&s, EventStat::RingFull),
            0
        );
    });
}

#[test]
fn budget_limits_events_and_counts_what_it_refuses() {
    const BURST: u32 = 5;
    const SENT: u64 = 12;
    probe(|| {
        // No refill: exactly the burst gets through.
        let mut p = Probe::new(POLICY, Some(on(0, BURST)));
        let (src, dst) = (ip("10.20.7.7"), ip("10.10.9.20"));
        for i in 0..SENT {
            let f = Frame::new(src, dst).tcp(41000 + i as u16, 22, SYN);
            assert_eq!(p.run("evlg", &f.bytes()), XDP_DROP);
        }
        let ev = p.drain();
        assert_eq!(ev.len(), BURST as usize, "{ev:?}");
        assert!(ev.iter().all(|e| e.lost_before == 0));
        let ports: Vec<u16> = ev.iter().map(|e| e.src_port).collect();
        assert_eq!(
            ports,
            (41000..41000 + BURST as u16).collect::<Vec<_>>(),
            "the first ones"
        );
        let s = p.stats();
        assert_eq!(stat(&s, EventStat::EmittedDeny), u64::from(BURST));
        assert_eq!(stat(&s, EventStat::RateLimited), SENT - u64::from(BURST));

        // A refill (one token per nanosecond): the next event says how many went before it.
        // The bucket's clock is the coarse one (a tick of a few ms): wait for its next tick.
        p.dp.maps
            .set_event_config(on(1_000_000_000, BURST))
            .unwrap();
        let last = monotonic_coarse_ns();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while monotonic_coarse_ns() == last {
            assert!(
                std::time::Instant::now() < deadline,
                "the coarse clock stands still"
            );
            std::thread::yield_now();
        }
        let f = Frame::new(src, dst).tcp(42000, 22, SYN);
        assert_eq!(p.run("evlg", &f.bytes()), XDP_DROP);
        let ev = p.drain();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].src_port, 42000);
        assert_eq!(ev[0].lost_before, SENT - u64::from(BURST));
        // ... and only that once.
        assert_eq!(p.run("evlg", &f.bytes()), XDP_DROP);
        assert_eq!(p.drain()[0].lost_before, 0);
        assert_eq!(
            stat(&p.stats(), EventStat::RateLimited),
            SENT - u64::from(BURST)
        );
    });
}

/// A flow: opened once (one event), then its packets in both directions move only its
/// counters, exactly; when the data path finds it expired, or revoked by a reload, it reports
/// its end with those counters.
#[test]
fn flows_count_their_packets_and_report_open_and_end() {
    probe(|| {
        let mut p = Probe::new(POLICY, Some(on(1000, 100)));
        let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
        let out = |flags, n| Frame::new(a, b).tcp(40000, 443, flags).mac(MAC).payload(n);
        let back = |flags, n| Frame::new(b, a).tcp(443, 40000, flags).payload(n);
        let t0 = monotonic_coarse_ns();
        let orig = [out(SYN, 0), out(ACK, 0), out(ACK, 300)];
        let reply = [back(SYN | ACK, 0), back(ACK, 1200)];
        assert_eq!(p.run("evlg", &orig[0].bytes()), XDP_PASS);
        assert_eq!(p.run("evmyn", &reply[0].bytes()), XDP_PASS);
        assert_eq!(p.run("evlg", &orig[1].bytes()), XDP_PASS);
        assert_eq!(p.run("evlg", &orig[2].bytes()), XDP_PASS);
        assert_eq!(p.run("evmyn", &reply[1].bytes()), XDP_PASS);

        let ev = p.drain();
        assert_eq!(ev.len(), 1, "only the opening: {ev:?}");
        let e = ev[0];
        assert_eq!((e.kind, e.rule), (EventKind::FlowOpen as u8, RELAY));
        assert_eq!((e.src, e.dst), (addr16(a), addr16(b)));
        assert_eq!((e.src_port, e.dst_port, e.tcp_flags), (40000, 443, SYN));
        assert_eq!(
            (e.from_zone, e.to_zone, e.src_mac),
            (lgwan(), mynumber(), MAC)
        );
        let s = p.stats();
        assert_eq!(s.iter().sum::<u64>(), 1, "one event counted in all: {s:?}");

        let len = |fs: &[Frame]| fs.iter().map(|f| f.bytes().len() as u64).sum::<u64>();
        let (_, st, _) = p.flow(a, 40000, b, 443);
        assert_eq!((st.orig_packets, st.orig_bytes), (3, len(&orig)));
        assert_eq!((st.reply_packets, st.reply_bytes), (2, len(&reply)));
        assert!(
            st.start_ns >= t0 && st.start_ns <= st.last_seen_ns,
            "{st:?}"
        );

        // FIN both ways, then idle past its lifetime: the next packet finds it expired, and
        // the data path ends it (Closed) with the counters, before deciding that packet.
        let fins = [out(FIN | ACK, 0), back(FIN | ACK, 0)];
        assert_eq!(p.run("evlg", &fins[0].bytes()), XDP_PASS);
        assert_eq!(p.run("evmyn", &fins[1].bytes()), XDP_PASS);
        let (key, mut st, replied) = p.flow(a, 40000, b, 443);
        assert!(replied, "promoted by its first reply");
        st.last_seen_ns -= flow_lifetime(PROTO_TCP, st.flags) + NS;
        p.dp.maps.flows.insert(key, st, 0).unwrap();
        assert_eq!(p.run("evmyn", &back(ACK, 0).bytes()), XDP_DROP);
        let ev = p.drain();
        assert_eq!(ev.len(), 2, "flow end, then the reply's denial: {ev:?}");
        let e = ev[0];
        assert_eq!(EventKind::from_u8(e.kind), Some(EventKind::FlowEnd));
        assert_eq!(FlowEnd::from_u8(e.reason), Some(FlowEnd::Closed));
        assert_eq!(
            (e.src, e.dst, e.src_port, e.dst_port),
            (addr16(a), addr16(b), 40000, 443)
        );
        assert_eq!(
            (e.orig_packets, e.orig_bytes),
            (4, len(&orig) + len(&fins[..1]))
        );
        assert_eq!(
            (e.reply_packets, e.reply_bytes),
            (3, len(&reply) + len(&fins[1..]))
        );
        assert_eq!((e.start_ns, e.rule, e.src_mac), (st.start_ns, RELAY, MAC));
        assert_eq!(e.flags & EVENT_FLOW_REPLIED, EVENT_FLOW_REPLIED);
        assert_eq!(ev[1].kind, EventKind::Deny as u8);

        // A reload that removes the rule: the flow's next packet ends it as revoked.
        let (c, d) = (ip("10.20.5.11"), ip("10.10.9.21"));
        let syn = Frame::new(c, d).tcp(40100, 443, SYN).mac(MAC);
        assert_eq!(p.run("evlg", &syn.bytes()), XDP_PASS);
        let without_relay = POLICY.replace("ports = [\"443\"]", "ports = [\"444\"]");
        p.install(&without_relay);
        let reply = Frame::new(d, c).tcp(443, 40100, SYN | ACK);
        assert_eq!(p.run("evmyn", &reply.bytes()), XDP_DROP);
        let ev = p.drain();
        let kinds: Vec<(u8, u8)> = ev.iter().map(|e| (e.kind, e.reason)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::FlowOpen as u8, 0),
                (EventKind::FlowEnd as u8, FlowEnd::Revoked as u8),
                (EventKind::Deny as u8, DropReason::NoRule as u8),
            ]
        );
        assert_eq!(
            (ev[1].orig_packets, ev[1].orig_bytes),
            (1, syn.bytes().len() as u64)
        );
        assert_eq!((ev[1].reply_packets, ev[1].src_port), (0, 40100));
    });
}

#[test]
fn events_off_means_nothing_in_the_ring_and_no_counts() {
    probe(|| {
        let mut p = Probe::new(POLICY, None);
        assert_eq!(p.dp.maps.event_config().unwrap(), EventConfig::default());
        let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
        let frames = [
            ("evlg", Frame::new(a, b).tcp(40000, 22, SYN).bytes()),
            ("evlg", Frame::new(a, b).tcp(40001, 443, SYN).bytes()),
            ("evmyn", Frame::new(b, a).tcp(443, 40001, SYN | ACK).bytes()),
            ("evlg", Frame::new(a, b).tcp(40002, 25, SYN).bytes()),
            ("evlg", frames::non_ip()),
        ];
        for (iface, f) in &frames {
            p.run(iface, f);
        }
        assert_eq!(p.drain(), vec![]);
        assert_eq!(p.stats(), [0; EventStat::SLOTS as usize]);
        // The flow still counts its packets (reported when the agent's sweep ends it).
        let (_, st, _) = p.flow(a, 40001, b, 443);
        assert_eq!((st.orig_packets, st.reply_packets), (1, 1));
    });
}

/// The agent's sweep (`expire`) returns the flows it removes, counters and all, so that
/// their end is reported the same way as the data path's (`Event::flow_end`).
#[test]
fn swept_flows_come_back_with_their_counters() {
    probe(|| {
        let mut p = Probe::new(POLICY, Some(on(1000, 100)));
        let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
        let syn = Frame::new(a, b).tcp(40000, 443, SYN).mac(MAC);
        let reply = Frame::new(b, a).tcp(443, 40000, SYN | ACK).payload(10);
        assert_eq!(p.run("evlg", &syn.bytes()), XDP_PASS);
        assert_eq!(p.run("evmyn", &reply.bytes()), XDP_PASS);
        let (key, mut st, _) = p.flow(a, 40000, b, 443);
        st.last_seen_ns -= flow_lifetime(PROTO_TCP, st.flags) + NS;
        p.dp.maps.flows.insert(key, st, 0).unwrap();

        let swept = p.dp.expire();
        assert_eq!(swept, vec![(key, st)]);
        assert_eq!(p.dp.maps.flow_entries(), (0, 0));
        let e = Event::flow_end(&key, &st, FlowEnd::of_expired(st.flags), 7, 0);
        assert_eq!(FlowEnd::from_u8(e.reason), Some(FlowEnd::Idle));
        assert_eq!((e.src, e.dst), (addr16(a), addr16(b)));
        assert_eq!((e.src_port, e.dst_port, e.proto), (40000, 443, PROTO_TCP));
        assert_eq!(
            (e.orig_packets, e.orig_bytes),
            (1, syn.bytes().len() as u64)
        );
        assert_eq!(
            (e.reply_packets, e.reply_bytes),
            (1, reply.bytes().len() as u64)
        );
        assert_eq!(
            (e.src_mac, e.from_zone, e.to_zone),
            (MAC, lgwan(), mynumber())
        );
        assert_eq!(e.flags, EVENT_FLOW_REPLIED);
        // The sweep is the agent's: the data path reported nothing but the opening.
        let kinds: Vec<u8> = p.drain().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventKind::FlowOpen as u8]);
    });
}

/// Global audit mode: what the policy would deny passes, and is reported as an Audit event
/// with the reason it would have been dropped for.
#[test]
fn audit_mode_reports_would_be_drops() {
    probe(|| {
        let audit = POLICY.replace("mode = \"enforce\"", "mode = \"audit\"");
        let mut p = Probe::new(&audit, Some(on(1000, 100)));
        let (src, dst) = (ip("10.20.7.7"), ip("10.10.9.20"));
        let f = Frame::new(src, dst).tcp(40000, 22, SYN).mac(MAC);
        assert_eq!(p.run("evlg", &f.bytes()), XDP_PASS);
        let ev = p.drain();
        assert_eq!(ev.len(), 1, "{ev:?}");
        let e = ev[0];
        assert_eq!(EventKind::from_u8(e.kind), Some(EventKind::Audit));
        assert_eq!(e.reason, DropReason::NoRule as u8);
        assert_eq!((e.src, e.dst, e.dst_port), (addr16(src), addr16(dst), 22));
        assert_eq!((e.from_zone, e.to_zone), (lgwan(), mynumber()));
        let s = p.stats();
        assert_eq!(
            (
                stat(&s, EventStat::EmittedAudit),
                stat(&s, EventStat::EmittedDeny)
            ),
            (1, 0)
        );
    });
}

//! The known evasion classes of packet filters, sent as crafted frames with real packet tools
//! (scapy, hping3) from a zone host through the gateway where zone-agent enforces in XDP.
//!
//! Every check is observed at the receiving host: a raw capture in its namespace
//! (`zone_agent_lab::craft::capture`) proves that nothing of the attempt crossed, and a control
//! that the policy allows, sent last in the same step from the same host, proves that the
//! capture and the path work (so the test could fail). The drop-reason counter on /metrics
//! must move by exactly the number of frames that were dropped, and no other drop reason may
//! move; where the sender has no allowed path at all, that count is what shows the frames
//! were decided.
//!
//! Each test builds its own lab and agent, so tests run in parallel. `docs/threat-model.md`
//! lists what each test proves. Needs root; `cargo xtask test` runs it under `unshare`.

use std::net::IpAddr;
use std::time::Duration;

use zone_agent_lab::agent::{self, Metrics};
use zone_agent_lab::craft::{self, Capture, ether, ether_from, hping3, scapy};
use zone_agent_lab::fixture::{LG_MAC, OTHER_MAC};
use zone_agent_lab::{ChildGuard, Host, Lab, ThreeZones, poll_until, tcp_echo, udp_echo};

/// Bound for a frame that must cross to arrive, and for counters to move.
const T: Duration = Duration::from_secs(5);

/// lgwan → mynumber allows TCP 443 from one host's address and NIC to one server, and ICMP
/// between the same two (a rule without ports: with `fragments = "allow"` such rules are the
/// only ones that can match a later fragment nothing ties to a first one); lgwan → internet
/// allows DNS. Nothing else crosses a zone boundary.
const RULES: &str = r#"[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.0.10/32", "fd20::10/128"]
source_macs = ["02:00:00:00:20:10"]
destinations = ["10.10.0.10/32", "fd10::10/128"]

[[rules]]
name = "relay-ping"
from = "lgwan"
to = "mynumber"
protocol = "icmp"
sources = ["10.20.0.10/32"]
source_macs = ["02:00:00:00:20:10"]
destinations = ["10.10.0.10/32"]

[[rules]]
name = "relay-ping6"
from = "lgwan"
to = "mynumber"
protocol = "icmpv6"
sources = ["fd20::10/128"]
source_macs = ["02:00:00:00:20:10"]
destinations = ["fd10::10/128"]

[[rules]]
name = "dns-out"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["53"]
"#;

/// The lab's three zones and [`RULES`]; `fragments` is `defaults.fragments`.
fn policy(fragments: &str) -> String {
    ThreeZones::policy()
        .fragments(fragments)
        .rules(RULES)
        .build()
}

const DROPS: &str = "zone_agent_drops_total";
const PASSES: &str = "zone_agent_passes_total";
const RULE_PACKETS: &str = "zone_agent_rule_packets_total";

// === the lab ===

/// A lab with one host per zone and the agent enforcing [`policy`] in the gateway.
/// Field order is drop order: the agent stops before the lab goes.
struct Env {
    agent: ChildGuard,
    lab: Lab,
    /// 10.10.0.10, fd10::10 behind `zmyn`.
    my: Host,
    /// 10.20.0.10, fd20::10, MAC [`LG_MAC`] behind `zlgw`.
    lg: Host,
    /// 198.51.100.10, 2001:db8::10 behind `zinet`.
    inet: Host,
}

impl Env {
    /// `fragments` is the policy's `defaults.fragments` ("deny" or "allow").
    fn new(test: &str, fragments: &str) -> Env {
        let mut lab = Lab::new(test);
        let ThreeZones { my, lg, inet } = ThreeZones::add(&mut lab);
        let agent = agent::start(&lab, &policy(fragments));
        Env {
            agent,
            lab,
            my,
            lg,
            inet,
        }
    }

    fn metrics(&self) -> Metrics {
        agent::metrics(&self.lab)
    }

    /// Starts a step observed at `at`: a capture on its `eth0` and the counters before.
    fn watch(&self, at: &Host) -> Step<'_> {
        let cap = craft::capture(&self.lab, &at.ns, "eth0");
        Step {
            env: self,
            cap,
            before: self.metrics(),
        }
    }

    /// Frames (scapy expressions) sent from `from` in one `sendp`.
    fn scapy(&self, from: &Host, frames: &[String]) {
        scapy(&self.lab, from, frames);
    }

    fn hping3(&self, from: &Host, args: &[&str]) {
        hping3(&self.lab, from, args);
    }
}

/// One step: frames sent, then what arrived and what the counters say.
struct Step<'a> {
    env: &'a Env,
    cap: Capture,
    before: Metrics,
}

/// What a step saw.
struct Seen {
    cap: Capture,
    before: Metrics,
    after: Metrics,
}

impl Step<'_> {
    /// Waits (bounded) until every marker in `crossed` arrived and every drop reason in
    /// `drops` moved by its count; then asserts that the drop counters moved by exactly
    /// `drops` (no other reason moved) and that no frame carrying a marker in `blocked`
    /// arrived.
    ///
    /// A control that crosses is sent last from the same host where one exists: `sendp` and
    /// the veth keep order, so once it arrived everything before it has been decided.
    #[track_caller]
    fn expect(self, crossed: &[&str], blocked: &[&str], drops: &[(&str, f64)]) -> Seen {
        let Step { env, cap, before } = self;
        let explain = |after: &Metrics| {
            format!(
                "{}counters that moved:\n{}agent log:\n{}",
                cap.describe(),
                after.changes(&before),
                env.agent.log_text()
            )
        };
        for m in crossed {
            if !poll_until(T, || cap.seen(m)) {
                panic!(
                    "{m:?} (allowed) did not arrive at the receiver;\n{}",
                    explain(&env.metrics())
                );
            }
        }
        let mut after = env.metrics();
        let reached = poll_until(T, || {
            after = env.metrics();
            drops
                .iter()
                .all(|(r, n)| after.delta(&before, DROPS, &[("reason", r)]) >= *n)
        });
        for m in blocked {
            assert!(
                !cap.seen(m),
                "BYPASS: {m:?} crossed the gateway;\n{}",
                explain(&after)
            );
        }
        assert!(
            reached,
            "drop counters did not reach {drops:?};\n{}",
            explain(&after)
        );
        for (r, n) in drops {
            let got = after.delta(&before, DROPS, &[("reason", r)]);
            assert_eq!(
                got,
                *n,
                "drops{{reason={r:?}}} moved by {got}, expected {n};\n{}",
                explain(&after)
            );
        }
        let total: f64 = drops.iter().map(|(_, n)| n).sum();
        let got = after.delta(&before, DROPS, &[]);
        assert_eq!(
            got,
            total,
            "drops of other reasons moved;\n{}",
            explain(&after)
        );
        Seen { cap, before, after }
    }
}

impl Seen {
    #[track_caller]
    fn assert_no_ipv4_id(&self, src: IpAddr, id: u16, what: &str) {
        assert!(
            !self.cap.seen_ipv4_id(src, id),
            "BYPASS: {what} (IPv4 id {id}) crossed;\n{}",
            self.cap.describe()
        );
    }

    #[track_caller]
    fn assert_ipv4_id(&self, src: IpAddr, id: u16, what: &str) {
        assert!(
            self.cap.seen_ipv4_id(src, id),
            "{what} (IPv4 id {id}) did not arrive;\n{}",
            self.cap.describe()
        );
    }

    fn delta(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.after.delta(&self.before, name, labels)
    }
}

// === frame text ===

/// A scapy bytes literal: `marker` padded with dots to `len` bytes (fragment payloads are
/// multiples of 8, and a marker must lie whole in one fragment).
fn pad(marker: &str, len: usize) -> String {
    assert!(
        marker.len() <= len && marker.is_ascii(),
        "marker {marker:?} longer than {len}"
    );
    format!("b'{marker:.<len$}'")
}

/// `Raw(...)` of [`pad`].
fn data(marker: &str, len: usize) -> String {
    format!("Raw({})", pad(marker, len))
}

fn ip4(src: impl std::fmt::Display, dst: impl std::fmt::Display, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!("IP(src='{src}', dst='{dst}'{sep}{extra})")
}

fn ip6(src: impl std::fmt::Display, dst: impl std::fmt::Display) -> String {
    format!("IPv6(src='{src}', dst='{dst}')")
}

/// `e` prepended to each fragment of `pkt` (scapy's own `fragment`, `size` bytes each).
fn frags4(e: &str, pkt: &str, size: usize) -> String {
    format!("[{e}/f for f in fragment({pkt}, fragsize={size})]")
}

/// The `i`-th of those fragments.
fn frag4(e: &str, pkt: &str, size: usize, i: usize) -> String {
    format!("{e}/fragment({pkt}, fragsize={size})[{i}]")
}

/// `e` prepended to each fragment of IPv6 `pkt` (`frag6` of craft.rs's sender).
fn frags6(e: &str, pkt: &str, size: usize, id: u32) -> String {
    format!("[{e}/f for f in frag6({pkt}, {size}, {id})]")
}

/// The scapy text of `ip/TCP(sport, dport, flags)/marker` from `e`.
fn tcp(e: &str, ip: &str, sport: u16, dport: u16, flags: &str, marker: &str) -> String {
    format!(
        "{e}/{ip}/TCP(sport={sport}, dport={dport}, flags='{flags}')/{}",
        data(marker, 16)
    )
}

/// An ICMP(v6) error from `src` to `dst` quoting `quoted` (scapy text of an IP packet), with
/// `marker` after the quote.
fn icmp_error(e: &str, src: IpAddr, dst: IpAddr, quoted: &str, marker: &str) -> String {
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            format!(
                "{e}/{}/ICMP(type=3, code=3)/{quoted}/{}",
                ip4(src, dst, ""),
                data(marker, 16)
            )
        }
        _ => format!(
            "{e}/{}/ICMPv6DestUnreach(code=4)/{quoted}/{}",
            ip6(src, dst),
            data(marker, 16)
        ),
    }
}

// === IPv4 fragments ===

/// RFC 1858 tiny fragments. A first fragment that does not hold the whole TCP header is
/// malformed — hping3 `-f -m 8` cutting a SYN to the allowed port into 8-byte fragments, a
/// first fragment with only the ports of a SYN to a forbidden port, one with no transport
/// byte at all — and so is a fragment at offset 8, which could only complete or overwrite
/// that header. What follows ties to no allowed first fragment. The allowed SYN fragmented
/// with its whole header in the first fragment crosses, both fragments.
#[test]
fn ipv4_tiny_first_fragments_are_dropped() {
    let env = Env::new("tiny_fragments", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let step = env.watch(my);
    // 20 bytes of TCP and 24 of data, 8 bytes a fragment: offsets 0..=5. The first two are
    // malformed, the other four tie to nothing.
    let dst = my.v4.to_string();
    env.hping3(
        lg,
        &[
            "-c", "1", "-S", "-s", "40100", "-k", "-p", "443", "-f", "-m", "8", "-N", "4100", "-d",
            "24", &dst,
        ],
    );
    let ports_only = format!(
        "{}/TCP(sport=40101, dport=8443, flags='S')/{}",
        ip4(lg.v4, my.v4, "id=4101"),
        data("ZAEV-t-ports", 16)
    );
    let allowed = format!(
        "{}/TCP(sport=40103, dport=443, flags='S')/Raw({} + {})",
        ip4(lg.v4, my.v4, "id=4103"),
        pad("ZAEV-t-ok-1", 12),
        pad("ZAEV-t-ok-2", 16)
    );
    env.scapy(
        lg,
        &[
            // Ports and sequence number, then the rest of the header at offset 8.
            frag4(&e, &ports_only, 8, 0),
            format!(
                "{e}/{}/Raw(raw({ports_only})[28:])",
                ip4(lg.v4, my.v4, "id=4101, frag=1, proto=6")
            ),
            // The IP header alone, more fragments to come: no port at all.
            format!("{e}/{}", ip4(lg.v4, my.v4, "id=4102, flags='MF', proto=6")),
            frags4(&e, &allowed, 32),
        ],
    );
    let seen = step.expect(
        &["ZAEV-t-ok-1", "ZAEV-t-ok-2"],
        &["ZAEV-t-ports"],
        &[("malformed", 5.0), ("fragment", 4.0)],
    );
    seen.assert_no_ipv4_id(lg.v4, 4100, "hping3's 8-byte fragments");
    seen.assert_no_ipv4_id(lg.v4, 4101, "the ports-only first fragment");
    seen.assert_no_ipv4_id(lg.v4, 4102, "the empty first fragment");
    seen.assert_ipv4_id(lg.v4, 4103, "the allowed SYN's first fragment");
}

/// Later fragments that no allowed first fragment ties: one with no first at all (TCP, and
/// ICMP, which `relay-ping` allows whole), and fragments sent before their first fragment. An
/// early later fragment is dropped even when its first fragment then passes; sent again after
/// it, it crosses. The fragments of a first fragment no rule allows never cross.
#[test]
fn ipv4_untied_and_early_fragments_are_dropped() {
    let env = Env::new("untied_fragments", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let datagram = |id: u16, sport: u16, dport: u16, m1: &str, m2: &str| {
        format!(
            "{}/TCP(sport={sport}, dport={dport}, flags='S')/Raw({} + {})",
            ip4(lg.v4, my.v4, &format!("id={id}")),
            pad(m1, 12),
            pad(m2, 16)
        )
    };
    let allowed = datagram(4201, 40201, 443, "ZAEV-u-ok-1", "ZAEV-u-ok-2");
    let forbidden = datagram(4202, 40202, 8443, "ZAEV-u-no-1", "ZAEV-u-no-2");
    // Offset 32 bytes, last fragment: where the second fragment of those datagrams goes.
    let later = |id: u16, proto: u8, marker: &str| {
        format!(
            "{e}/{}/{}",
            ip4(lg.v4, my.v4, &format!("id={id}, frag=4, proto={proto}")),
            data(marker, 16)
        )
    };
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            later(4203, 6, "ZAEV-u-lone-tcp"),
            later(4204, 1, "ZAEV-u-lone-icmp"),
            later(4201, 6, "ZAEV-u-ok-early"),
            frag4(&e, &allowed, 32, 0),
            frag4(&e, &allowed, 32, 1),
            later(4202, 6, "ZAEV-u-no-early"),
            frag4(&e, &forbidden, 32, 0),
            frag4(&e, &forbidden, 32, 1),
            format!(
                "{e}/{}/ICMP(id=4205)/{}",
                ip4(lg.v4, my.v4, ""),
                data("ZAEV-u-ping", 16)
            ),
        ],
    );
    let seen = step.expect(
        &["ZAEV-u-ok-1", "ZAEV-u-ok-2", "ZAEV-u-ping"],
        &[
            "ZAEV-u-lone-tcp",
            "ZAEV-u-lone-icmp",
            "ZAEV-u-ok-early",
            "ZAEV-u-no-early",
            "ZAEV-u-no-1",
            "ZAEV-u-no-2",
        ],
        &[("fragment", 5.0), ("no_rule", 1.0)],
    );
    assert_eq!(
        seen.delta(PASSES, &[("reason", "fragment")]),
        1.0,
        "only the in-order later fragment is tied"
    );
}

/// Overlapping fragments that would rewrite what the first fragment showed the filter: a
/// fragment at offset 8 carrying other TCP flags and data offset (RFC 1858) is malformed; a
/// second offset-0 fragment with the same identification and another destination port (more
/// fragments set, or not) is a first fragment, or a whole packet, of its own, so its port
/// meets the rules. The genuine later fragment still crosses.
#[test]
fn ipv4_overlapping_fragments_cannot_rewrite_port_or_flags() {
    let env = Env::new("overlap_fragments", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let allowed = format!(
        "{}/TCP(sport=40301, dport=443, flags='S')/Raw({} + {})",
        ip4(lg.v4, my.v4, "id=4301"),
        pad("ZAEV-o-ok-1", 12),
        pad("ZAEV-o-ok-2", 16)
    );
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            frag4(&e, &allowed, 32, 0),
            format!(
                "{e}/{}/Raw(raw(TCP(sport=40301, dport=443, flags='PA'))[8:] + {})",
                ip4(lg.v4, my.v4, "id=4301, flags='MF', frag=1, proto=6"),
                pad("ZAEV-o-flags", 12)
            ),
            format!(
                "{e}/{}/TCP(sport=40301, dport=8443, flags='S')/{}",
                ip4(lg.v4, my.v4, "id=4301, flags='MF'"),
                data("ZAEV-o-mf", 12)
            ),
            format!(
                "{e}/{}/TCP(sport=40301, dport=8443, flags='S')/{}",
                ip4(lg.v4, my.v4, "id=4301"),
                data("ZAEV-o-port", 12)
            ),
            frag4(&e, &allowed, 32, 1),
        ],
    );
    step.expect(
        &["ZAEV-o-ok-1", "ZAEV-o-ok-2"],
        &["ZAEV-o-flags", "ZAEV-o-mf", "ZAEV-o-port"],
        &[("malformed", 1.0), ("no_rule", 2.0)],
    );
}

/// With `defaults.fragments = "allow"` a later fragment that nothing ties is judged by the
/// rules without ports (it has none to show): an ICMP one crosses under `relay-ping`, an
/// ICMPv6 one under `relay-ping6`; a TCP one matches no port-less rule and is dropped, over
/// IPv4 and IPv6. A first fragment still has to show its whole header.
#[test]
fn untied_fragments_under_allow_meet_only_portless_rules() {
    let env = Env::new("fragments_allow", "allow");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let later4 = |id: u16, proto: u8, marker: &str| {
        format!(
            "{e}/{}/{}",
            ip4(lg.v4, my.v4, &format!("id={id}, frag=4, proto={proto}")),
            data(marker, 16)
        )
    };
    let later6 = |id: u32, nh: u8, marker: &str| {
        format!(
            "{e}/{}/IPv6ExtHdrFragment(nh={nh}, offset=4, id={id})/{}",
            ip6(lg.v6, my.v6),
            data(marker, 16)
        )
    };
    let ports_only = format!(
        "{}/TCP(sport=40403, dport=443, flags='S')/{}",
        ip4(lg.v4, my.v4, "id=4403"),
        data("ZAEV-a-tiny", 16)
    );
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            later4(4401, 1, "ZAEV-a-icmp"),
            later4(4402, 6, "ZAEV-a-tcp"),
            frag4(&e, &ports_only, 8, 0),
            later6(4404, 58, "ZAEV-a-icmp6"),
            later6(4405, 6, "ZAEV-a-tcp6"),
            format!(
                "{e}/{}/ICMP(id=4406)/{}",
                ip4(lg.v4, my.v4, ""),
                data("ZAEV-a-ping", 16)
            ),
        ],
    );
    let seen = step.expect(
        &["ZAEV-a-icmp", "ZAEV-a-icmp6", "ZAEV-a-ping"],
        &["ZAEV-a-tcp", "ZAEV-a-tcp6"],
        &[("no_rule", 2.0), ("malformed", 1.0)],
    );
    seen.assert_no_ipv4_id(lg.v4, 4403, "the tiny first fragment");
    assert_eq!(
        seen.delta(RULE_PACKETS, &[("rule", "relay-ping6")]),
        1.0,
        "the ICMPv6 fragment is counted to relay-ping6"
    );
}

// === IPv6 fragments and extension headers ===

/// IPv6 fragments. An atomic fragment (offset 0, no more fragments) is a whole packet (RFC
/// 6946), judged by its TCP header like any other. A first fragment must hold the whole
/// header chain (RFC 7112): one whose destination-options header runs past its end is a
/// header-limit drop, one whose chain ends but whose TCP header is in the next fragment is
/// malformed; their second fragments tie to nothing. The allowed SYN atomic, or fragmented
/// with its header first, crosses.
#[test]
fn ipv6_atomic_and_headerless_first_fragments() {
    let env = Env::new("ipv6_fragments", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let ip = ip6(lg.v6, my.v6);
    let frag = |fields: &str| format!("{e}/{ip}/IPv6ExtHdrFragment({fields})");
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            format!(
                "{}/TCP(sport=40501, dport=8443, flags='S')/{}",
                frag("id=4501"),
                data("ZAEV-6-atomic-no", 16)
            ),
            // Destination options of 24 bytes (next: TCP), 16 of them in the first fragment.
            format!(
                "{}/Raw(bytes([6, 2, 1, 20]) + bytes(12))",
                frag("nh=60, m=1, id=4502")
            ),
            format!(
                "{}/Raw(bytes(8) + raw(TCP(sport=40502, dport=443, flags='S')) + {})",
                frag("nh=60, offset=2, id=4502"),
                pad("ZAEV-6-cut", 16)
            ),
            // Destination options of 16 bytes, complete; the TCP header follows in the next.
            format!(
                "{}/Raw(bytes([6, 1, 1, 12]) + bytes(12))",
                frag("nh=60, m=1, id=4503")
            ),
            format!(
                "{}/Raw(raw(TCP(sport=40503, dport=443, flags='S')) + {})",
                frag("nh=60, offset=2, id=4503"),
                pad("ZAEV-6-headless", 16)
            ),
            format!(
                "{}/TCP(sport=40504, dport=443, flags='S')/{}",
                frag("id=4504"),
                data("ZAEV-6-atomic-ok", 16)
            ),
            frags6(
                &e,
                &format!(
                    "{ip}/TCP(sport=40505, dport=443, flags='S')/Raw({} + {})",
                    pad("ZAEV-6-ok-1", 12),
                    pad("ZAEV-6-ok-2", 16)
                ),
                32,
                4505,
            ),
        ],
    );
    step.expect(
        &["ZAEV-6-atomic-ok", "ZAEV-6-ok-1", "ZAEV-6-ok-2"],
        &["ZAEV-6-atomic-no", "ZAEV-6-cut", "ZAEV-6-headless"],
        &[
            ("no_rule", 1.0),
            ("header_limit", 1.0),
            ("malformed", 1.0),
            ("fragment", 2.0),
        ],
    );
}

/// The parser walks at most 6 IPv6 extension headers and never looks for the upper-layer
/// header past byte 512 of the frame. Seven destination-options headers, hop-by-hop plus six,
/// or one 488-byte destination-options header in front of a SYN to the allowed port are
/// header-limit drops; five small ones are walked and the SYN crosses.
#[test]
fn ipv6_extension_chains_beyond_the_walk_are_dropped() {
    let env = Env::new("ipv6_ext_chains", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let ip = ip6(lg.v6, my.v6);
    let dstopts = |n: usize| vec!["IPv6ExtHdrDestOpt()"; n].join("/");
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            tcp(&e, &format!("{ip}/{}", dstopts(7)), 40601, 443, "S", "ZAEV-x-seven"),
            tcp(&e, &format!("{ip}/IPv6ExtHdrHopByHop()/{}", dstopts(6)), 40602, 443, "S", "ZAEV-x-hop"),
            // 2 + 242 + 244 = 488 bytes: the TCP header would start at byte 542.
            tcp(
                &e,
                &format!("{ip}/IPv6ExtHdrDestOpt(options=[PadN(optdata=bytes(240)), PadN(optdata=bytes(242))])"),
                40603,
                443,
                "S",
                "ZAEV-x-long",
            ),
            tcp(&e, &format!("{ip}/{}", dstopts(5)), 40604, 443, "S", "ZAEV-x-five"),
        ],
    );
    step.expect(
        &["ZAEV-x-five"],
        &["ZAEV-x-seven", "ZAEV-x-hop", "ZAEV-x-long"],
        &[("header_limit", 3.0)],
    );
}

// === IPv4 options ===

/// IPv4 options move the TCP header: 40 bytes of NOPs (the most an IHL allows) or a
/// record-route option in front of a SYN to the allowed port cross and are counted to
/// `relay-https`; the same options in front of a forbidden port are no cover.
#[test]
fn ipv4_options_do_not_hide_the_transport_header() {
    let env = Env::new("ipv4_options", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let nops = ip4(lg.v4, my.v4, "options=[IPOption_NOP()] * 40");
    let rr = ip4(
        lg.v4,
        my.v4,
        "options=[IPOption_RR(routers=['0.0.0.0'] * 9)]",
    );
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            tcp(&e, &nops, 40701, 8443, "S", "ZAEV-p-8443"),
            tcp(&e, &rr, 40702, 8443, "S", "ZAEV-p-rr-8443"),
            tcp(&e, &rr, 40703, 443, "S", "ZAEV-p-rr"),
            tcp(&e, &nops, 40704, 443, "S", "ZAEV-p-443"),
        ],
    );
    let seen = step.expect(
        &["ZAEV-p-rr", "ZAEV-p-443"],
        &["ZAEV-p-8443", "ZAEV-p-rr-8443"],
        &[("no_rule", 2.0)],
    );
    assert!(
        seen.delta(RULE_PACKETS, &[("rule", "relay-https")]) >= 2.0,
        "{}",
        seen.after.changes(&seen.before)
    );
}

/// Source routing through the gateway. A SYN to a forbidden mynumber port, addressed to the
/// gateway's own LGWAN address (intra-zone, allowed) with a loose or strict source-route
/// option, or an IPv6 segment-routing header, naming the mynumber server as the next hop:
/// a gateway that honours source routes forwards it there, after XDP judged the header's
/// destination (this crossed, counted as intra_zone, before `source_route` existed). The lab
/// gateway honours them here (`accept_source_route`, `seg6_enabled`: off by default, on in
/// some router setups), and still nothing crosses: the data path drops every packet that
/// names its own route. A plain SYN to the allowed port crosses.
#[test]
fn source_routes_through_the_gateway_are_dropped() {
    let env = Env::new("source_routes", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let gw = env.lab.gateway();
    env.lab.sysctls(
        gw,
        &[
            ("net.ipv4.conf.all.accept_source_route", "1"),
            ("net.ipv4.conf.zlgw.accept_source_route", "1"),
            ("net.ipv6.conf.all.seg6_enabled", "1"),
            ("net.ipv6.conf.zlgw.seg6_enabled", "1"),
        ],
    );
    let e = ether(lg);
    let via = |kind: &str| {
        ip4(
            lg.v4,
            lg.gw_v4,
            &format!("options=[IPOption_{kind}(routers=['{}'])]", my.v4),
        )
    };
    let srh = format!(
        "{}/IPv6ExtHdrSegmentRouting(addresses=['{}', '{}'], segleft=1)",
        ip6(lg.v6, lg.gw_v6),
        my.v6,
        lg.gw_v6
    );
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            tcp(&e, &via("LSRR"), 40711, 8443, "S", "ZAEV-sr-lsrr"),
            tcp(&e, &via("SSRR"), 40712, 8443, "S", "ZAEV-sr-ssrr"),
            tcp(&e, &srh, 40713, 8443, "S", "ZAEV-sr-srh"),
            tcp(&e, &ip4(lg.v4, my.v4, ""), 40714, 443, "S", "ZAEV-sr-ok"),
        ],
    );
    step.expect(
        &["ZAEV-sr-ok"],
        &["ZAEV-sr-lsrr", "ZAEV-sr-ssrr", "ZAEV-sr-srh"],
        &[("source_route", 3.0)],
    );
}

// === tunnels and other protocols ===

/// A rule names a protocol: a tunnel carrying the allowed TCP 443 from the allowed host is
/// not TCP. GRE, IP-in-IP, IPv6-in-IPv4, IPv6-in-IPv6 and GRE over IPv6, SCTP, and protocol
/// 253 (hping3's raw IP mode, and scapy over IPv6) match no rule. The inner packets sent as
/// themselves cross.
#[test]
fn tunnels_and_unknown_protocols_match_no_rule() {
    let env = Env::new("tunnels", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let (outer4, outer6) = (ip4(lg.v4, my.v4, ""), ip6(lg.v6, my.v6));
    let inner4 = format!("{outer4}/TCP(sport=40801, dport=443, flags='S')");
    let inner6 = format!("{outer6}/TCP(sport=40802, dport=443, flags='S')");
    let step = env.watch(my);
    let dst = my.v4.to_string();
    env.hping3(
        lg,
        &["-c", "1", "-0", "-H", "253", "-N", "4801", "-d", "16", &dst],
    );
    env.scapy(
        lg,
        &[
            format!("{e}/{outer4}/GRE()/{inner4}/{}", data("ZAEV-n-gre", 16)),
            format!("{e}/{outer4}/{inner4}/{}", data("ZAEV-n-ipip", 16)),
            format!("{e}/{outer4}/{inner6}/{}", data("ZAEV-n-6in4", 16)),
            format!("{e}/{outer6}/{inner6}/{}", data("ZAEV-n-6in6", 16)),
            format!("{e}/{outer6}/GRE()/{inner6}/{}", data("ZAEV-n-gre6", 16)),
            format!(
                "{e}/{outer4}/SCTP(sport=40803, dport=443)/{}",
                data("ZAEV-n-sctp", 16)
            ),
            format!(
                "{e}/IPv6(src='{}', dst='{}', nh=253)/{}",
                lg.v6,
                my.v6,
                data("ZAEV-n-253", 16)
            ),
            format!("{e}/{inner4}/{}", data("ZAEV-n-bare4", 16)),
            format!("{e}/{inner6}/{}", data("ZAEV-n-bare6", 16)),
        ],
    );
    let seen = step.expect(
        &["ZAEV-n-bare4", "ZAEV-n-bare6"],
        &[
            "ZAEV-n-gre",
            "ZAEV-n-ipip",
            "ZAEV-n-6in4",
            "ZAEV-n-6in6",
            "ZAEV-n-gre6",
            "ZAEV-n-sctp",
            "ZAEV-n-253",
        ],
        &[("no_rule", 8.0)],
    );
    seen.assert_no_ipv4_id(lg.v4, 4801, "hping3's protocol 253");
}

// === reply-shaped traffic ===

/// Packets shaped like replies with no flow behind them. From the mynumber server's side,
/// hping3 sends every TCP shape a reply can have (ACK, SYN-ACK, RST, FIN-ACK) and UDP from the
/// allowed service port 443 to the relay host, and scapy ICMP errors that quote a flow that
/// never existed, a bare IP header, or nothing. From the internet, hping3 sends UDP and TCP
/// from port 53 (the DNS reply trick) to a port with no DNS flow, and an ICMP error quotes a
/// query that was never sent. All are no_rule. The controls are real replies: the held TCP
/// connection's server side, a DNS answer and an ICMP error quoting the live DNS flow.
#[test]
fn reply_shaped_packets_without_a_flow_are_dropped() {
    let env = Env::new("reply_shaped", "deny");
    let (lg, my, inet) = (&env.lg, &env.my, &env.inet);
    let _server = tcp_echo(&env.lab, my, 443, false);
    let _dns = udp_echo(&env.lab, inet, 53, false);
    let held = craft::hold_tcp(&env.lab, lg, my.v4, 443);
    let relay = lg.v4.to_string();

    let step = env.watch(lg);
    let shapes: [&[&str]; 5] = [&["-A"], &["-S", "-A"], &["-R"], &["-F", "-A"], &["-2"]];
    for (i, shape) in shapes.iter().enumerate() {
        let id = (4901 + i).to_string();
        let mut args = vec![
            "-c", "1", "-s", "443", "-k", "-p", "40900", "-N", &id, "-d", "16",
        ];
        args.extend_from_slice(shape);
        args.push(&relay);
        env.hping3(my, &args);
    }
    let em = ether(my);
    let q4 = |proto: &str, sport: u16| {
        format!(
            "{}/{proto}(sport={sport}, dport=443)",
            ip4(lg.v4, my.v4, "")
        )
    };
    env.scapy(
        my,
        &[
            icmp_error(&em, my.v4, lg.v4, &q4("UDP", 40910), "ZAEV-r-q-udp"),
            icmp_error(&em, my.v4, lg.v4, &q4("TCP", 40911), "ZAEV-r-q-tcp"),
            format!(
                "{em}/{}/ICMP(type=11)/{}/{}",
                ip4(my.v4, lg.v4, ""),
                ip4(lg.v4, my.v4, "proto=6"),
                data("ZAEV-r-q-bare", 16)
            ),
            format!(
                "{em}/{}/ICMP(type=3, code=1)/{}",
                ip4(my.v4, lg.v4, ""),
                data("ZAEV-r-q-none", 16)
            ),
            icmp_error(
                &em,
                my.v6,
                lg.v6,
                &format!("{}/TCP(sport=40912, dport=443)", ip6(lg.v6, my.v6)),
                "ZAEV-r-q6",
            ),
            tcp(
                &em,
                &ip4(my.v4, lg.v4, ""),
                443,
                held.port,
                "PA",
                "ZAEV-r-live",
            ),
        ],
    );
    let seen = step.expect(
        &["ZAEV-r-live"],
        &[
            "ZAEV-r-q-udp",
            "ZAEV-r-q-tcp",
            "ZAEV-r-q-bare",
            "ZAEV-r-q-none",
            "ZAEV-r-q6",
        ],
        &[("no_rule", 10.0)],
    );
    for id in 4901..4906 {
        seen.assert_no_ipv4_id(my.v4, id, "hping3's reply-shaped packet");
    }

    let step = env.watch(lg);
    // A real DNS flow (the echo server answers it) ...
    let query = format!("{}/UDP(sport=40953, dport=53)", ip4(lg.v4, inet.v4, ""));
    env.scapy(
        lg,
        &[format!(
            "{}/{query}/{}",
            ether(lg),
            data("ZAEV-r-dns-q", 16)
        )],
    );
    // ... and replies from port 53 that belong to no flow.
    env.hping3(
        inet,
        &[
            "-c", "1", "-2", "-s", "53", "-k", "-p", "40999", "-N", "4906", "-d", "16", &relay,
        ],
    );
    env.hping3(
        inet,
        &[
            "-c", "1", "-A", "-s", "53", "-k", "-p", "40999", "-N", "4907", "-d", "16", &relay,
        ],
    );
    let ei = ether(inet);
    env.scapy(
        inet,
        &[
            icmp_error(
                &ei,
                inet.v4,
                lg.v4,
                &format!("{}/UDP(sport=40998, dport=53)", ip4(lg.v4, inet.v4, "")),
                "ZAEV-r-q-dns",
            ),
            format!(
                "{ei}/{}/UDP(sport=53, dport=40953)/{}",
                ip4(inet.v4, lg.v4, ""),
                data("ZAEV-r-dns-a", 16)
            ),
            icmp_error(&ei, inet.v4, lg.v4, &query, "ZAEV-r-related"),
        ],
    );
    let seen = step.expect(
        &["ZAEV-r-dns-q", "ZAEV-r-dns-a", "ZAEV-r-related"],
        &["ZAEV-r-q-dns"],
        &[("no_rule", 3.0)],
    );
    seen.assert_no_ipv4_id(inet.v4, 4906, "UDP from port 53");
    seen.assert_no_ipv4_id(inet.v4, 4907, "TCP ACK from port 53");
    assert!(
        seen.delta(PASSES, &[("reason", "related")]) >= 1.0,
        "{}",
        seen.after.changes(&seen.before)
    );
}

/// The reply of a live flow, injected where it does not belong. With the flow's exact tuple
/// (server address and port, client address and port) it is a spoofed source when it enters
/// through the internet interface or the client's own segment; an ICMP error quoting the flow
/// from the internet is not related (its own address: no_rule; the server's: spoofed).
/// From the server's segment, another server address or another client port has no flow.
/// Controls: the exact reply from the server's segment crosses (IPv4 and IPv6), and a DNS
/// answer from the internet.
#[test]
fn flow_replies_from_the_wrong_zone_or_source_are_dropped() {
    let env = Env::new("reply_injection", "deny");
    let (lg, my, inet) = (&env.lg, &env.my, &env.inet);
    let _servers = [
        tcp_echo(&env.lab, my, 443, false),
        tcp_echo(&env.lab, my, 443, true),
    ];
    let _dns = udp_echo(&env.lab, inet, 53, false);
    let (h4, h6) = (
        craft::hold_tcp(&env.lab, lg, my.v4, 443),
        craft::hold_tcp(&env.lab, lg, my.v6, 443),
    );
    let reply4 =
        |e: &str, src: &str, dport: u16, m: &str| tcp(e, &ip4(src, lg.v4, ""), 443, dport, "PA", m);
    let reply6 =
        |e: &str, src: &str, dport: u16, m: &str| tcp(e, &ip6(src, lg.v6), 443, dport, "PA", m);
    let (s4, s6) = (my.v4.to_string(), my.v6.to_string());
    let quoted = format!(
        "{}/TCP(sport={}, dport=443)",
        ip4(lg.v4, my.v4, ""),
        h4.port
    );

    let step = env.watch(lg);
    let query = format!("{}/UDP(sport=41053, dport=53)", ip4(lg.v4, inet.v4, ""));
    env.scapy(
        lg,
        &[format!(
            "{}/{query}/{}",
            ether(lg),
            data("ZAEV-i-dns-q", 16)
        )],
    );
    let ei = ether(inet);
    env.scapy(
        inet,
        &[
            reply4(&ei, &s4, h4.port, "ZAEV-i-inet4"),
            reply6(&ei, &s6, h6.port, "ZAEV-i-inet6"),
            icmp_error(&ei, inet.v4, lg.v4, &quoted, "ZAEV-i-icmp-own"),
            icmp_error(&ei, my.v4, lg.v4, &quoted, "ZAEV-i-icmp-spf"),
            format!(
                "{ei}/{}/UDP(sport=53, dport=41053)/{}",
                ip4(inet.v4, lg.v4, ""),
                data("ZAEV-i-dns-a", 16)
            ),
        ],
    );
    step.expect(
        &["ZAEV-i-dns-q", "ZAEV-i-dns-a"],
        &[
            "ZAEV-i-inet4",
            "ZAEV-i-inet6",
            "ZAEV-i-icmp-own",
            "ZAEV-i-icmp-spf",
        ],
        &[("spoofed_source", 3.0), ("no_rule", 1.0)],
    );

    // Sent on the client's own segment, the gateway would route it straight back.
    let step = env.watch(lg);
    let el = ether(lg);
    env.scapy(
        lg,
        &[
            reply4(&el, &s4, h4.port, "ZAEV-i-hairpin4"),
            reply6(&el, &s6, h6.port, "ZAEV-i-hairpin6"),
        ],
    );
    step.expect(
        &[],
        &["ZAEV-i-hairpin4", "ZAEV-i-hairpin6"],
        &[("spoofed_source", 2.0)],
    );

    let step = env.watch(lg);
    let em = ether(my);
    env.scapy(
        my,
        &[
            reply4(&em, "10.10.0.11", h4.port, "ZAEV-i-other4"),
            reply6(&em, "fd10::11", h6.port, "ZAEV-i-other6"),
            reply4(&em, &s4, h4.port + 1, "ZAEV-i-port"),
            reply4(&em, &s4, h4.port, "ZAEV-i-real4"),
            reply6(&em, &s6, h6.port, "ZAEV-i-real6"),
        ],
    );
    step.expect(
        &["ZAEV-i-real4", "ZAEV-i-real6"],
        &["ZAEV-i-other4", "ZAEV-i-other6", "ZAEV-i-port"],
        &[("no_rule", 3.0)],
    );
}

// === path limitation: MAC and source address ===

/// `relay-https` names the relay host's NIC. The relay's own addresses behind another NIC
/// (scapy sets the Ethernet source) are a MAC mismatch for a new connection, and also inside
/// a flow the bound NIC opened: the flow keeps its opening MAC. From the bound NIC the same
/// frames cross.
#[test]
fn mac_bound_rule_admits_only_its_nic() {
    let env = Env::new("mac_binding", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let _servers = [
        tcp_echo(&env.lab, my, 443, false),
        tcp_echo(&env.lab, my, 443, true),
    ];
    let held = craft::hold_tcp(&env.lab, lg, my.v4, 443);
    let (e, other) = (ether(lg), ether_from(lg, OTHER_MAC));
    let (i4, i6) = (ip4(lg.v4, my.v4, ""), ip6(lg.v6, my.v6));
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            tcp(&other, &i4, 41101, 443, "S", "ZAEV-m-syn4"),
            tcp(&other, &i6, 41102, 443, "S", "ZAEV-m-syn6"),
            tcp(&other, &i4, held.port, 443, "PA", "ZAEV-m-inject"),
            tcp(&e, &i4, held.port, 443, "PA", "ZAEV-m-flow"),
            tcp(&e, &i4, 41103, 443, "S", "ZAEV-m-ok4"),
            tcp(&e, &i6, 41104, 443, "S", "ZAEV-m-ok6"),
        ],
    );
    let seen = step.expect(
        &["ZAEV-m-flow", "ZAEV-m-ok4", "ZAEV-m-ok6"],
        &["ZAEV-m-syn4", "ZAEV-m-syn6", "ZAEV-m-inject"],
        &[("mac_mismatch", 3.0)],
    );
    assert!(
        seen.delta(PASSES, &[("reason", "established")]) >= 1.0,
        "{}",
        seen.after.changes(&seen.before)
    );
}

/// A source address of another zone is spoofed, whatever else the frame claims. From the
/// LGWAN segment: a mynumber address (to a mynumber host that would be intra-zone), an
/// internet address, an IPv6 mynumber address. From the internet interface: everything
/// `relay-https` names, the relay's address and its NIC's MAC. The relay's own SYN crosses.
#[test]
fn sources_of_another_zone_are_spoofed_whatever_they_claim() {
    let env = Env::new("spoofed_sources", "deny");
    let (lg, my, inet) = (&env.lg, &env.my, &env.inet);
    let e = ether(lg);
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            format!(
                "{e}/{}/UDP(sport=41201, dport=9999)/{}",
                ip4("10.10.0.99", my.v4, ""),
                data("ZAEV-s-my", 16)
            ),
            tcp(
                &e,
                &ip4("198.51.100.7", my.v4, ""),
                41202,
                443,
                "S",
                "ZAEV-s-inet",
            ),
            tcp(&e, &ip6("fd10::99", my.v6), 41203, 443, "S", "ZAEV-s-my6"),
            tcp(&e, &ip4(lg.v4, my.v4, ""), 41204, 443, "S", "ZAEV-s-ok"),
        ],
    );
    step.expect(
        &["ZAEV-s-ok"],
        &["ZAEV-s-my", "ZAEV-s-inet", "ZAEV-s-my6"],
        &[("spoofed_source", 3.0)],
    );

    let step = env.watch(my);
    let forged = ether_from(inet, LG_MAC);
    env.scapy(
        inet,
        &[
            tcp(
                &forged,
                &ip4(lg.v4, my.v4, ""),
                41205,
                443,
                "S",
                "ZAEV-s-relay4",
            ),
            tcp(
                &forged,
                &ip6(lg.v6, my.v6),
                41206,
                443,
                "S",
                "ZAEV-s-relay6",
            ),
        ],
    );
    step.expect(
        &[],
        &["ZAEV-s-relay4", "ZAEV-s-relay6"],
        &[("spoofed_source", 2.0)],
    );
}

// === VLAN tags ===

/// `zlgw` carries its zone untagged. A SYN the policy allows, tagged with VLAN 100, or
/// 802.1ad 100 + 802.1Q 200, belongs to no zone (unknown_interface); three tags are more than
/// the parser walks (header_limit). This kernel has no 802.1Q module, but the veth carries the
/// tags and the XDP program sees them. A priority tag (VID 0) is the untagged interface's
/// traffic (802.1Q) and crosses like the untagged SYN.
#[test]
fn vlan_tags_of_no_zone_are_dropped() {
    let env = Env::new("vlan_tags", "deny");
    let (lg, my) = (&env.lg, &env.my);
    let e = ether(lg);
    let i4 = ip4(lg.v4, my.v4, "");
    let step = env.watch(my);
    env.scapy(
        lg,
        &[
            tcp(
                &format!("{e}/Dot1Q(vlan=100)"),
                &i4,
                41301,
                443,
                "S",
                "ZAEV-v-100",
            ),
            tcp(
                &format!("{e}/Dot1AD(vlan=100)/Dot1Q(vlan=200)"),
                &i4,
                41302,
                443,
                "S",
                "ZAEV-v-qinq",
            ),
            tcp(
                &format!("{e}/Dot1Q(vlan=100)/Dot1Q(vlan=200)/Dot1Q(vlan=300)"),
                &i4,
                41303,
                443,
                "S",
                "ZAEV-v-three",
            ),
            tcp(
                &format!("{e}/Dot1Q(vlan=0)"),
                &i4,
                41304,
                443,
                "S",
                "ZAEV-v-prio",
            ),
            tcp(&e, &i4, 41305, 443, "S", "ZAEV-v-none"),
        ],
    );
    step.expect(
        &["ZAEV-v-prio", "ZAEV-v-none"],
        &["ZAEV-v-100", "ZAEV-v-qinq", "ZAEV-v-three"],
        &[("unknown_interface", 2.0), ("header_limit", 1.0)],
    );
}

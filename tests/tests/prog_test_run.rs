//! The loaded XDP program, run with BPF_PROG_TEST_RUN over a corpus of crafted frames,
//! must agree with the Rust model (`policy::model`) on every frame: the XDP action, the
//! drop or pass reason (read back from the kernel's counters) and the rule counted. The
//! corpus is run in order with state on both sides, so flows, replies, fragments and a
//! reload are compared too.
//!
//! Runs in a private network namespace (a dedicated thread unshares its own), with dummy
//! interfaces standing in for the zone interfaces.

mod common;

use std::net::IpAddr;

use common::frames::{self, ACK, FIN, Frame, RST, SYN};
use zone_agent::{
    datapath::{Datapath, stats::monotonic_coarse_ns},
    policy::{
        compile, frame as mframe,
        model::{Model, Outcome},
        validate::{self, OfflineEnvironment},
    },
};
use zone_agent_common::{DropReason, PassReason};

const IFACES: [&str; 4] = ["zmyn", "zlg", "zinet", "ztrunk"];

const POLICY: &str = r#"
version = 1
mode = "MODE"

[defaults]
intra_zone = "allow"
unknown = "deny"
fragments = "FRAGS"

[[zones]]
name = "mynumber"
label = "マイナンバー利用事務系"
interfaces = ["zmyn"]
networks = ["10.10.0.0/16", "fd10::/48"]
criticality = "critical"

[[zones]]
name = "lgwan"
label = "LGWAN接続系"
interfaces = ["zlg", "ztrunk.100"]
networks = ["10.20.0.0/16", "fd20::/48"]

[[zones]]
name = "internet"
label = "インターネット接続系"
interfaces = ["zinet"]
networks = ["0.0.0.0/0", "::/0"]

[[zones]]
name = "core"
interfaces = ["ztrunk.200"]
networks = ["10.30.0.0/16"]

[[rules]]
name = "relay"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443", "8000-8010"]
sources = ["10.20.5.10/32", "fd20::10/128"]
destinations = ["10.10.9.20/32", "fd10::20/128"]

[[rules]]
name = "mac-bound"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["22"]
source_macs = ["02:00:00:00:00:aa"]

[[rules]]
name = "dns"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["53"]

[[rules]]
name = "web"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80", "443"]

[[rules]]
name = "ping"
from = "lgwan"
to = "mynumber"
protocol = "icmp"

[[rules]]
name = "ping6"
from = "lgwan"
to = "mynumber"
protocol = "icmpv6"

[[rules]]
name = "trial"
from = "internet"
to = "lgwan"
protocol = "tcp"
ports = ["25"]
mode = "audit"

[[rules]]
name = "core-any"
from = "core"
to = "lgwan"
protocol = "any"
"#;

fn policy_text(mode: &str, frags: &str, without: Option<&str>) -> String {
    let mut text = POLICY.replace("MODE", mode).replace("FRAGS", frags);
    if let Some(rule) = without {
        let start = text
            .find(&format!("[[rules]]\nname = \"{rule}\""))
            .expect("rule in policy");
        let end = text[start + 9..]
            .find("[[rules]]")
            .map(|e| start + 9 + e)
            .unwrap_or(text.len());
        text.replace_range(start..end, "");
    }
    text
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    common::xdp::in_private_netns(&IFACES, f)
}

struct Harness {
    dp: Datapath,
    model: Model,
    audit: bool,
    compared: usize,
    mismatches: Vec<String>,
}

impl Harness {
    fn new(text: &str) -> Self {
        let (policy, _) = validate::check_str("test.toml".as_ref(), text, &OfflineEnvironment)
            .expect("valid policy");
        let compiled = compile::compile(&policy).expect("compiles");
        let mut dp = Datapath::load().expect("load XDP program");
        dp.apply(&compiled, zone_agent::agent::ifindex)
            .expect("apply");
        let audit = policy.mode == zone_agent::policy::Mode::Audit;
        Harness {
            dp,
            model: Model::new(policy),
            audit,
            compared: 0,
            mismatches: vec![],
        }
    }

    fn reload(&mut self, text: &str) {
        let (policy, _) = validate::check_str("test.toml".as_ref(), text, &OfflineEnvironment)
            .expect("valid policy");
        let compiled = compile::compile(&policy).expect("compiles");
        self.dp
            .apply(&compiled, zone_agent::agent::ifindex)
            .expect("apply");
        self.audit = policy.mode == zone_agent::policy::Mode::Audit;
        self.model.reload(policy);
    }

    /// (XDP action, counter label that moved, rule counted)
    fn kernel(&mut self, iface: &str, frame: &[u8]) -> (u32, String, Option<usize>) {
        let before = self.dp.global_counters().unwrap();
        let set = self.dp.active_set;
        let nrules = 16;
        let rules_before = self.dp.set_counters(set, 0, nrules).unwrap().rules;
        let action = common::xdp::test_run(self.dp.program(), iface, frame);
        let after = self.dp.global_counters().unwrap();
        let rules_after = self.dp.set_counters(set, 0, nrules).unwrap().rules;
        let mut moved = Vec::new();
        for (i, (r, c)) in after.drops.iter().enumerate() {
            if c.packets != before.drops[i].1.packets {
                moved.push(format!("drop:{}", r.label()));
            }
        }
        for (i, (r, c)) in after.audit_drops.iter().enumerate() {
            if c.packets != before.audit_drops[i].1.packets {
                moved.push(format!("audit:{}", r.label()));
            }
        }
        for (i, (r, c)) in after.passes.iter().enumerate() {
            if c.packets != before.passes[i].1.packets {
                moved.push(format!("pass:{}", r.label()));
            }
        }
        let rule = (0..nrules.min(rules_after.len()))
            .find(|&i| rules_after[i].packets != rules_before[i].packets);
        (action, moved.join(","), rule)
    }

    fn model(&mut self, iface: &str, frame: &[u8]) -> (u32, String, Option<usize>) {
        let d = match mframe::parse(frame, iface) {
            Ok(mframe::Parsed::Neighbor) => return (2, "pass:neighbor".into(), None),
            Ok(mframe::Parsed::Ip(p)) => self.model.decide(&p, monotonic_coarse_ns()),
            Err(r) => return self.drop_result(r, None),
        };
        match d.outcome {
            Outcome::Pass(r) => (2, format!("pass:{}", PassReason::label(r)), d.rule),
            Outcome::Drop(r) => self.drop_result(r, d.rule),
        }
    }

    fn drop_result(&self, r: DropReason, rule: Option<usize>) -> (u32, String, Option<usize>) {
        if self.audit && r.auditable() {
            (2, format!("audit:{}", r.label()), rule)
        } else {
            (1, format!("drop:{}", r.label()), rule)
        }
    }

    fn check(&mut self, what: &str, iface: &str, frame: &[u8]) -> (u32, String) {
        let k = self.kernel(iface, frame);
        let m = self.model(iface, frame);
        self.compared += 1;
        if k != m {
            self.mismatches.push(format!(
                "{what} on {iface} ({} bytes): kernel {k:?} != model {m:?}",
                frame.len()
            ));
        }
        (k.0, k.1)
    }

    fn expect(&mut self, what: &str, iface: &str, frame: &[u8], label: &str) {
        let (_, got) = self.check(what, iface, frame);
        if got != label {
            self.mismatches.push(format!(
                "{what} on {iface}: expected {label}, kernel counted {got}"
            ));
        }
    }

    fn finish(self) -> usize {
        assert!(
            self.mismatches.is_empty(),
            "{} of {} frames disagree:\n{}",
            self.mismatches.len(),
            self.compared,
            self.mismatches.join("\n")
        );
        self.compared
    }
}

const MAC_AA: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

/// Sources per ingress interface (one legitimate, others spoofed or unknown).
fn sources() -> Vec<(&'static str, &'static [u16], IpAddr)> {
    vec![
        ("zlg", &[], ip("10.20.5.10")),
        ("zlg", &[], ip("10.20.7.7")),
        ("zlg", &[], ip("10.10.9.20")), // spoofed mynumber address
        ("zlg", &[], ip("fd20::10")),
        ("zlg", &[], ip("fd20::99")),
        ("zmyn", &[], ip("10.10.9.20")),
        ("zmyn", &[], ip("fd10::20")),
        ("zmyn", &[], ip("10.20.5.10")), // spoofed lgwan address
        ("zinet", &[], ip("198.51.100.7")),
        ("zinet", &[], ip("2001:db8::7")),
        ("zinet", &[], ip("10.20.5.10")), // spoofed
        ("ztrunk", &[100], ip("10.20.5.10")),
        ("ztrunk", &[200], ip("10.30.1.1")),
        ("ztrunk", &[300], ip("10.30.1.1")), // VLAN of no zone
        ("ztrunk", &[], ip("10.30.1.1")),    // untagged on a tagged-only interface
    ]
}

fn destinations() -> Vec<IpAddr> {
    [
        "10.10.9.20",
        "10.10.1.1",
        "10.20.5.10",
        "10.20.8.8",
        "198.51.100.7",
        "10.30.1.1",
        "fd10::20",
        "fd10::1",
        "fd20::10",
        "2001:db8::7",
    ]
    .iter()
    .map(|s| ip(s))
    .collect()
}

fn run_cross_product(h: &mut Harness) {
    for (iface, vlans, src) in sources() {
        for dst in destinations() {
            if src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            let base = |f: Frame| vlans.iter().fold(f, |f, v| f.vlan(*v));
            for (i, dport) in [443u16, 8005, 8011, 22, 53, 80, 25, 9999]
                .into_iter()
                .enumerate()
            {
                for mac in [[0x02, 0, 0, 0, 0, 0x10], MAC_AA] {
                    let sport = 30000 + i as u16;
                    let f = base(Frame::new(src, dst).tcp(sport, dport, SYN).mac(mac));
                    h.check(&format!("tcp {src}->{dst}:{dport}"), iface, &f.bytes());
                }
                let f = base(Frame::new(src, dst).udp(31000 + i as u16, dport));
                h.check(&format!("udp {src}->{dst}:{dport}"), iface, &f.bytes());
            }
            let ty = if src.is_ipv4() { 8 } else { 128 };
            let f = base(Frame::new(src, dst).icmp(ty, 0, 77));
            h.check(&format!("echo {src}->{dst}"), iface, &f.bytes());
            let f = base(Frame::new(src, dst).proto(47, 24)); // GRE
            h.check(&format!("gre {src}->{dst}"), iface, &f.bytes());
        }
    }
}

fn run_stateful(h: &mut Harness) {
    let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
    // A flow opens, its reply passes, the reply on the wrong interface does not.
    h.expect(
        "syn",
        "zlg",
        &Frame::new(a, b).tcp(40000, 443, SYN).bytes(),
        "pass:rule",
    );
    h.expect(
        "syn-ack",
        "zmyn",
        &Frame::new(b, a).tcp(443, 40000, SYN | ACK).bytes(),
        "pass:reply",
    );
    h.expect(
        "ack",
        "zlg",
        &Frame::new(a, b).tcp(40000, 443, ACK).bytes(),
        "pass:established",
    );
    h.expect(
        "fin",
        "zlg",
        &Frame::new(a, b).tcp(40000, 443, FIN | ACK).bytes(),
        "pass:established",
    );
    h.expect(
        "reply via internet",
        "zinet",
        &Frame::new(b, a).tcp(443, 40000, ACK).bytes(),
        "drop:spoofed_source",
    );
    // The same tuple from another MAC is not the flow (and no rule allows it by MAC).
    let f = Frame::new(a, b)
        .tcp(40000, 443, ACK)
        .mac([0x02, 0, 0, 0, 0, 0x55]);
    h.expect(
        "established from another MAC",
        "zlg",
        &f.bytes(),
        "pass:rule",
    );
    // Reply-shaped packets with no flow behind them.
    h.expect(
        "lone syn-ack",
        "zmyn",
        &Frame::new(b, a).tcp(443, 41000, SYN | ACK).bytes(),
        "drop:no_rule",
    );
    h.expect(
        "lone udp reply",
        "zinet",
        &Frame::new(ip("198.51.100.7"), ip("10.20.5.10"))
            .udp(53, 41000)
            .bytes(),
        "drop:no_rule",
    );
    // UDP flow and its reply.
    h.expect(
        "dns query",
        "zlg",
        &Frame::new(a, ip("198.51.100.7")).udp(41001, 53).bytes(),
        "pass:rule",
    );
    h.expect(
        "dns answer",
        "zinet",
        &Frame::new(ip("198.51.100.7"), a).udp(53, 41001).bytes(),
        "pass:reply",
    );
    // ICMP echo and reply; ICMP errors quoting a live flow or nothing.
    h.expect(
        "echo",
        "zlg",
        &Frame::new(a, b).icmp(8, 0, 9).bytes(),
        "pass:rule",
    );
    h.expect(
        "echo reply",
        "zmyn",
        &Frame::new(b, a).icmp(0, 0, 9).bytes(),
        "pass:reply",
    );
    h.expect(
        "lone echo reply",
        "zmyn",
        &Frame::new(b, a).icmp(0, 0, 10).bytes(),
        "drop:no_rule",
    );
    let quoted = Frame::new(a, b).tcp(40000, 443, ACK);
    h.expect(
        "icmp unreachable (related)",
        "zmyn",
        &Frame::new(ip("10.10.0.1"), a)
            .icmp_error(3, 1, &quoted)
            .bytes(),
        "pass:related",
    );
    let quoted = Frame::new(a, b).tcp(40999, 443, ACK);
    h.expect(
        "icmp unreachable quoting nothing",
        "zmyn",
        &Frame::new(ip("10.10.0.1"), a)
            .icmp_error(3, 1, &quoted)
            .bytes(),
        "drop:no_rule",
    );
    // IPv6 flow.
    let (a6, b6) = (ip("fd20::10"), ip("fd10::20"));
    h.expect(
        "syn v6",
        "zlg",
        &Frame::new(a6, b6).tcp(40000, 8001, SYN).bytes(),
        "pass:rule",
    );
    h.expect(
        "syn-ack v6",
        "zmyn",
        &Frame::new(b6, a6).tcp(8001, 40000, SYN | ACK).bytes(),
        "pass:reply",
    );
    // Fragments: a first fragment opens, its later fragments follow; others do not.
    let first = Frame::new(a, b)
        .tcp(40002, 443, SYN)
        .payload(16)
        .v4_frag(0, true, 4242);
    h.expect("first fragment", "zlg", &first.bytes(), "pass:rule");
    h.expect(
        "later fragment",
        "zlg",
        &Frame::new(a, b)
            .proto(6, 32)
            .v4_frag(5, false, 4242)
            .bytes(),
        "pass:fragment",
    );
    h.expect(
        "untied fragment",
        "zlg",
        &Frame::new(a, b)
            .proto(6, 32)
            .v4_frag(5, false, 4343)
            .bytes(),
        "drop:fragment",
    );
    h.expect(
        "overlapping fragment at 8",
        "zlg",
        &Frame::new(a, b).proto(6, 32).v4_frag(1, true, 4242).bytes(),
        "drop:malformed",
    );
    h.expect(
        "forbidden first fragment",
        "zlg",
        &Frame::new(a, b)
            .tcp(40003, 23, SYN)
            .payload(16)
            .v4_frag(0, true, 4444)
            .bytes(),
        "drop:no_rule",
    );
    h.expect(
        "its later fragment",
        "zlg",
        &Frame::new(a, b)
            .proto(6, 32)
            .v4_frag(5, false, 4444)
            .bytes(),
        "drop:fragment",
    );
    let first6 = Frame::new(a6, b6)
        .v6_frag(0, true, 99)
        .tcp(40004, 443, SYN)
        .payload(16);
    h.expect("v6 first fragment", "zlg", &first6.bytes(), "pass:rule");
    h.expect(
        "v6 later fragment",
        "zlg",
        &Frame::new(a6, b6)
            .v6_frag(3, false, 99)
            .proto(6, 16)
            .bytes(),
        "pass:fragment",
    );
    h.expect(
        "v6 untied fragment",
        "zlg",
        &Frame::new(a6, b6)
            .v6_frag(3, false, 98)
            .proto(6, 16)
            .bytes(),
        "drop:fragment",
    );
    h.expect(
        "v6 atomic fragment",
        "zlg",
        &Frame::new(a6, b6)
            .v6_frag(0, false, 97)
            .tcp(40005, 443, SYN)
            .bytes(),
        "pass:rule",
    );
    // A first fragment that passes as a flow's reply also ties its later fragments.
    h.expect(
        "dns query 2",
        "zlg",
        &Frame::new(a, ip("198.51.100.7")).udp(41002, 53).bytes(),
        "pass:rule",
    );
    let big_answer = Frame::new(ip("198.51.100.7"), a)
        .udp(53, 41002)
        .payload(16)
        .v4_frag(0, true, 777);
    h.expect(
        "fragmented answer, first",
        "zinet",
        &big_answer.bytes(),
        "pass:reply",
    );
    h.expect(
        "fragmented answer, later",
        "zinet",
        &Frame::new(ip("198.51.100.7"), a)
            .proto(17, 32)
            .v4_frag(5, false, 777)
            .bytes(),
        "pass:fragment",
    );
    // IPv6: destination options after the fragment header; later fragments only show 60.
    let first6 = Frame::new(a6, b6)
        .v6_frag(0, true, 555)
        .v6_ext(60, 0)
        .tcp(40006, 443, SYN)
        .payload(16);
    h.expect(
        "v6 first fragment, dst-opts after frag",
        "zlg",
        &first6.bytes(),
        "pass:rule",
    );
    h.expect(
        "v6 later fragment, dst-opts after frag",
        "zlg",
        &Frame::new(a6, b6)
            .v6_frag(3, false, 555)
            .proto(60, 16)
            .bytes(),
        "pass:fragment",
    );
    // Only echo request/reply are ICMP flows: an allowed timestamp request opens nothing,
    // so the same shape in the other direction is not a "reply".
    h.expect(
        "icmp timestamp",
        "zlg",
        &Frame::new(a, b).icmp(13, 0, 0).bytes(),
        "pass:rule",
    );
    h.expect(
        "icmp timestamp again",
        "zlg",
        &Frame::new(a, b).icmp(13, 0, 0).bytes(),
        "pass:rule",
    );
    h.expect(
        "icmp timestamp back",
        "zmyn",
        &Frame::new(b, a).icmp(14, 0, 0).bytes(),
        "drop:no_rule",
    );
    h.expect(
        "icmpv6 type 200",
        "zlg",
        &Frame::new(a6, b6).icmp(200, 0, 0).bytes(),
        "pass:rule",
    );
    h.expect(
        "icmpv6 type 201 back",
        "zmyn",
        &Frame::new(b6, a6).icmp(201, 0, 0).bytes(),
        "drop:no_rule",
    );
    // Header shapes.
    h.expect(
        "ipv4 options",
        "zlg",
        &Frame::new(a, b).options(10).tcp(40006, 443, SYN).bytes(),
        "pass:rule",
    );
    h.expect(
        "ipv4 options, forbidden port",
        "zlg",
        &Frame::new(a, b).options(10).tcp(40007, 23, SYN).bytes(),
        "drop:no_rule",
    );
    let chain = (0..5)
        .fold(Frame::new(a6, b6), |f, _| f.v6_ext(60, 0))
        .tcp(40008, 443, SYN);
    h.expect("5 extension headers", "zlg", &chain.bytes(), "pass:rule");
    let chain = (0..7)
        .fold(Frame::new(a6, b6), |f, _| f.v6_ext(60, 0))
        .tcp(40009, 443, SYN);
    h.expect(
        "7 extension headers",
        "zlg",
        &chain.bytes(),
        "drop:header_limit",
    );
    // Source routes: the destination field is only the next hop the sender chose.
    let gw = ip("10.20.0.1");
    for (what, kind) in [("loose source route", 131u8), ("strict source route", 137)] {
        let mut f = Frame::new(a, gw).tcp(40016, 8443, SYN);
        f.v4_options = vec![1, kind, 7, 4, 10, 10, 9, 20];
        h.expect(what, "zlg", &f.bytes(), "drop:source_route");
    }
    let mut f = Frame::new(a, b).tcp(40017, 443, SYN);
    f.v4_options = vec![7, 7, 4, 0, 0, 0, 0, 0]; // record route
    h.expect("record route", "zlg", &f.bytes(), "pass:rule");
    let mut f = Frame::new(a6, ip("fd20::1"))
        .v6_ext(43, 2)
        .tcp(40018, 8443, SYN);
    f.v6_ext[0].1[3] = 1; // segments left
    h.expect(
        "routing header, segments left",
        "zlg",
        &f.bytes(),
        "drop:source_route",
    );
    let f = Frame::new(a6, b6).v6_ext(43, 2).tcp(40019, 443, SYN);
    h.expect("routing header, none left", "zlg", &f.bytes(), "pass:rule");
    h.expect(
        "double vlan",
        "ztrunk",
        &Frame::new(a, b)
            .vlan(100)
            .vlan(5)
            .tcp(40010, 443, SYN)
            .bytes(),
        "pass:rule",
    );
    h.expect(
        "triple vlan",
        "ztrunk",
        &Frame::new(a, b)
            .vlan(100)
            .vlan(5)
            .vlan(6)
            .tcp(40011, 443, SYN)
            .bytes(),
        "drop:header_limit",
    );
    h.expect("arp", "zlg", &frames::arp(), "pass:neighbor");
    h.expect("lldp", "zlg", &frames::non_ip(), "drop:non_ip");
    let ns = Frame::new(ip("fe80::1"), ip("ff02::1:ff00:20"))
        .icmp(135, 0, 0)
        .hop_limit(255);
    h.expect(
        "neighbour solicitation",
        "zlg",
        &ns.bytes(),
        "pass:neighbor",
    );
    let ns = Frame::new(a6, b6).icmp(135, 0, 0).hop_limit(255);
    h.expect(
        "unicast NS to another zone",
        "zlg",
        &ns.bytes(),
        "pass:rule",
    );
    let ns = Frame::new(a6, ip("fd10::99"))
        .icmp(135, 0, 0)
        .hop_limit(255)
        .mac([2, 0, 0, 0, 0, 0x77]);
    h.expect(
        "unicast NS, no rule",
        "zmyn",
        &ns.bytes(),
        "drop:spoofed_source",
    );
    // Intra-zone and unknown.
    h.expect(
        "intra zone",
        "zlg",
        &Frame::new(a, ip("10.20.0.1")).tcp(40012, 22, SYN).bytes(),
        "pass:intra_zone",
    );
    h.expect(
        "link-local src is internet's ::/0",
        "zinet",
        &Frame::new(ip("fe80::5"), b6).tcp(40013, 443, SYN).bytes(),
        "drop:no_rule",
    );
    // Link-scoped addresses belong to the ingress link: intra-zone, never a rule's.
    h.expect(
        "link-local dst",
        "zlg",
        &Frame::new(a6, ip("fe80::1")).tcp(40014, 22, SYN).bytes(),
        "pass:intra_zone",
    );
    let mld = Frame::new(ip("fe80::ff:fe00:2010"), ip("ff02::16"))
        .icmp(143, 0, 0)
        .hop_limit(1);
    h.expect(
        "MLDv2 report from link-local",
        "zlg",
        &mld.bytes(),
        "pass:intra_zone",
    );
    h.expect(
        "MLDv2 report on the internet link",
        "zinet",
        &mld.bytes(),
        "pass:intra_zone",
    );
    h.expect(
        "DHCP discover",
        "zlg",
        &Frame::new(ip("0.0.0.0"), ip("255.255.255.255"))
            .udp(68, 67)
            .bytes(),
        "pass:intra_zone",
    );
    h.expect(
        "link-local multicast v4",
        "zmyn",
        &Frame::new(b, ip("224.0.0.251")).udp(5353, 5353).bytes(),
        "pass:intra_zone",
    );
    h.expect(
        "link-local source to another zone",
        "zlg",
        &Frame::new(ip("fe80::5"), b6).icmp(128, 0, 5).bytes(),
        "drop:no_rule",
    );
    // TCP RST: the flow is not deleted (a forged RST would cut a live connection), it only
    // lives `FLOW_TCP_RESET_NS` more unless another packet of it follows; a RST reply does
    // not promote the flow, a later real reply does. (The lifetimes are compared with the
    // model over idle time in differential.rs.)
    h.expect(
        "syn 2",
        "zlg",
        &Frame::new(a, b).tcp(40020, 8000, SYN).bytes(),
        "pass:rule",
    );
    h.expect(
        "rst",
        "zmyn",
        &Frame::new(b, a).tcp(8000, 40020, RST).bytes(),
        "pass:reply",
    );
    h.expect(
        "after rst",
        "zmyn",
        &Frame::new(b, a).tcp(8000, 40020, ACK).bytes(),
        "pass:reply",
    );
    h.expect(
        "rst again",
        "zlg",
        &Frame::new(a, b).tcp(40020, 8000, RST | ACK).bytes(),
        "pass:established",
    );
    h.expect(
        "after the second rst",
        "zlg",
        &Frame::new(a, b).tcp(40020, 8000, ACK).bytes(),
        "pass:established",
    );
}

fn truncations(h: &mut Harness) {
    let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
    let frames = vec![
        ("tcp", "zlg", Frame::new(a, b).tcp(40100, 443, SYN).bytes()),
        (
            "tcp+opts",
            "zlg",
            Frame::new(a, b).options(3).tcp(40101, 443, SYN).bytes(),
        ),
        (
            "vlan tcp",
            "ztrunk",
            Frame::new(a, b).vlan(100).tcp(40102, 443, SYN).bytes(),
        ),
        (
            "v6 ext tcp",
            "zlg",
            Frame::new(ip("fd20::10"), ip("fd10::20"))
                .v6_ext(0, 1)
                .v6_ext(60, 0)
                .tcp(40103, 443, SYN)
                .bytes(),
        ),
        (
            "icmp err",
            "zmyn",
            Frame::new(b, a)
                .icmp_error(3, 1, &Frame::new(a, b).tcp(40000, 443, ACK))
                .bytes(),
        ),
        (
            "udp",
            "zlg",
            Frame::new(a, ip("198.51.100.7")).udp(40104, 53).bytes(),
        ),
    ];
    for (what, iface, f) in frames {
        truncations_of(h, what, iface, &f);
    }
}

/// `f` cut at every length. The kernel refuses to test-run a frame shorter than an Ethernet
/// header (and no driver delivers one), so cuts start there.
fn truncations_of(h: &mut Harness, what: &str, iface: &str, f: &[u8]) {
    for len in 14..f.len() {
        h.check(&format!("{what} cut at {len}"), iface, &f[..len]);
    }
}

#[test]
fn xdp_agrees_with_model() {
    let n = in_private_netns(|| {
        let mut total = 0;
        for (mode, frags) in [("enforce", "deny"), ("audit", "deny"), ("enforce", "allow")] {
            let mut h = Harness::new(&policy_text(mode, frags, None));
            run_cross_product(&mut h);
            if mode == "enforce" && frags == "deny" {
                run_stateful(&mut h);
            }
            truncations(&mut h);
            total += h.finish();
        }
        total
    });
    eprintln!("{n} frames compared");
    assert!(n > 3000, "corpus unexpectedly small: {n}");
}

/// Failsafe management flows (step 0) against the model: they pass before every policy
/// step (here: from a spoofed-looking or no-rule position), and only the exact tuple passes —
/// another port, protocol, source, interface, a non-local destination or a fragment does not.
#[test]
fn failsafe_agrees_with_model() {
    in_private_netns(|| {
        let mut h = Harness::new(&policy_text("enforce", "deny", None));
        let entries = vec![zone_agent::config::Failsafe {
            name: "ssh-admin".into(),
            proto: 6,
            ports: vec![(2222, 2222), (9000, 9001)],
            sources: vec![
                "10.20.5.0/24".parse().unwrap(),
                "10.10.9.20/32".parse().unwrap(),
                "fd20::/64".parse().unwrap(),
            ],
            interfaces: vec!["zlg".into()],
            destinations: vec![],
        }];
        // Stand-ins for the gateway's own addresses.
        let local = [ip("10.20.0.1"), ip("10.10.0.1"), ip("fd20::1")]
            .into_iter()
            .collect();
        let zone_ifaces = IFACES.iter().map(|s| s.to_string()).collect();
        let resolved = zone_agent::failsafe::resolve(
            &entries,
            &zone_ifaces,
            zone_agent::agent::ifindex,
            &local,
        )
        .expect("resolve");
        h.dp.install_failsafe(&zone_agent::failsafe::tables(&resolved))
            .expect("install failsafe");
        h.model.set_failsafe(resolved);
        let (adm, gw, gw2, far) = (
            ip("10.20.5.10"),
            ip("10.20.0.1"),
            ip("10.10.0.1"),
            ip("10.10.9.20"),
        );
        h.expect(
            "to the gateway",
            "zlg",
            &Frame::new(adm, gw).tcp(40000, 2222, SYN).bytes(),
            "pass:failsafe",
        );
        h.expect(
            "to its other address",
            "zlg",
            &Frame::new(adm, gw2).tcp(40001, 2222, SYN).bytes(),
            "pass:failsafe",
        );
        h.expect(
            "range end",
            "zlg",
            &Frame::new(adm, gw).tcp(40002, 9001, SYN).bytes(),
            "pass:failsafe",
        );
        h.expect(
            "vlan-tagged on the same interface",
            "zlg",
            &Frame::new(adm, gw).tcp(40002, 2222, ACK).vlan(7).bytes(),
            "pass:failsafe",
        );
        // A source of another zone listed as admin: failsafe beats the spoof check.
        h.expect(
            "listed source of another zone",
            "zlg",
            &Frame::new(far, gw).tcp(40003, 2222, SYN).bytes(),
            "pass:failsafe",
        );
        h.expect(
            "v6",
            "zlg",
            &Frame::new(ip("fd20::10"), ip("fd20::1"))
                .tcp(40004, 2222, SYN)
                .bytes(),
            "pass:failsafe",
        );
        h.check(
            "other port",
            "zlg",
            &Frame::new(adm, gw).tcp(40005, 2223, SYN).bytes(),
        );
        h.check("udp", "zlg", &Frame::new(adm, gw).udp(40006, 2222).bytes());
        h.check(
            "other source",
            "zlg",
            &Frame::new(ip("10.20.7.7"), gw)
                .tcp(40007, 2222, SYN)
                .bytes(),
        );
        h.check(
            "other interface",
            "zmyn",
            &Frame::new(far, gw2).tcp(40008, 2222, SYN).bytes(),
        );
        h.expect(
            "not the gateway",
            "zlg",
            &Frame::new(adm, far).tcp(40009, 2222, SYN).bytes(),
            "drop:no_rule",
        );
        h.check(
            "first fragment",
            "zlg",
            &Frame::new(adm, gw)
                .tcp(40010, 2222, SYN)
                .payload(16)
                .v4_frag(0, true, 4242)
                .bytes(),
        );
        h.check(
            "later fragment",
            "zlg",
            &Frame::new(adm, gw)
                .proto(6, 32)
                .v4_frag(5, false, 4242)
                .bytes(),
        );
        h.check(
            "v6 other address",
            "zlg",
            &Frame::new(ip("fd20::10"), ip("fd20::2"))
                .tcp(40011, 2222, SYN)
                .bytes(),
        );
        truncations_of(
            &mut h,
            "failsafe syn",
            "zlg",
            &Frame::new(adm, gw).tcp(40012, 2222, SYN).bytes(),
        );
        let n = h.finish();
        assert!(n > 20, "{n}");
    });
}

#[test]
fn reload_revalidates_flows() {
    in_private_netns(|| {
        let mut h = Harness::new(&policy_text("enforce", "deny", None));
        let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
        let (c, d) = (ip("10.20.5.10"), ip("198.51.100.7"));
        h.expect(
            "relay syn",
            "zlg",
            &Frame::new(a, b).tcp(40000, 443, SYN).bytes(),
            "pass:rule",
        );
        h.expect(
            "web syn",
            "zlg",
            &Frame::new(c, d).tcp(40001, 80, SYN).bytes(),
            "pass:rule",
        );
        // Remove "relay": its flow must die, the web flow must survive.
        h.reload(&policy_text("enforce", "deny", Some("relay")));
        h.expect(
            "relay reply after removal",
            "zmyn",
            &Frame::new(b, a).tcp(443, 40000, SYN | ACK).bytes(),
            "drop:no_rule",
        );
        h.expect(
            "web reply after reload",
            "zinet",
            &Frame::new(d, c).tcp(80, 40001, SYN | ACK).bytes(),
            "pass:reply",
        );
        h.expect(
            "relay new syn after removal",
            "zlg",
            &Frame::new(a, b).tcp(40002, 443, SYN).bytes(),
            "drop:no_rule",
        );
        h.finish();
    });
}

/// Issue 20, finding 1: replied flows live in a table that no insert evicts. When it is full,
/// a new flow's promotion is refused (counted once) and the flow keeps working from the
/// embryonic table, while every replied flow stays.
#[test]
fn full_replied_table_refuses_promotion_and_evicts_nothing() {
    use zone_agent_common::{CAP_FLOWS, FLOW_REPLIED, FlowEvent, FlowKey, FlowState};
    const PASS: u32 = 2;
    in_private_netns(|| {
        let text = policy_text("enforce", "deny", None);
        let (policy, _) = validate::check_str("test.toml".as_ref(), &text, &OfflineEnvironment)
            .expect("valid policy");
        let compiled = compile::compile(&policy).expect("compiles");
        let mut dp = Datapath::load().expect("load XDP program");
        dp.apply(&compiled, zone_agent::agent::ifindex)
            .expect("apply");
        let run = |dp: &Datapath, iface: &str, f: Frame| {
            common::xdp::test_run(dp.program(), iface, &f.bytes())
        };
        let event = |dp: &Datapath, e: FlowEvent| {
            dp.maps
                .flow_events()
                .unwrap()
                .iter()
                .find(|x| x.0 == e)
                .unwrap()
                .1
        };
        let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));

        assert_eq!(run(&dp, "zlg", Frame::new(a, b).tcp(40000, 443, SYN)), PASS);
        assert_eq!(dp.maps.flow_entries(), (0, 1), "a new flow is embryonic");
        assert_eq!(
            run(&dp, "zmyn", Frame::new(b, a).tcp(443, 40000, SYN | ACK)),
            PASS
        );
        assert_eq!(
            dp.maps.flow_entries(),
            (1, 0),
            "the first reply promotes it"
        );
        assert_eq!(event(&dp, FlowEvent::Promoted), 1);

        // Fill the replied table with other flows.
        let st = FlowState {
            last_seen_ns: monotonic_coarse_ns(),
            flags: FLOW_REPLIED,
            ..Default::default()
        };
        for i in 0..CAP_FLOWS - 1 {
            let mut k = FlowKey {
                proto: 6,
                family: 4,
                a_port: 1,
                b_port: 2,
                ..Default::default()
            };
            k.a[..4].copy_from_slice(&[10, 99, 0, 1]);
            k.b[..4].copy_from_slice(&i.to_be_bytes());
            dp.maps
                .flows
                .insert(k, st, 0)
                .expect("fill the replied table");
        }
        assert_eq!(dp.maps.flow_entries(), (u64::from(CAP_FLOWS), 0));

        assert_eq!(run(&dp, "zlg", Frame::new(a, b).tcp(40001, 443, SYN)), PASS);
        assert_eq!(
            run(&dp, "zmyn", Frame::new(b, a).tcp(443, 40001, SYN | ACK)),
            PASS
        );
        assert_eq!(event(&dp, FlowEvent::PromotionRefused), 1);
        assert_eq!(event(&dp, FlowEvent::Promoted), 1);
        // The refused flow keeps working (a replied flow in the embryonic table), counted once.
        assert_eq!(
            run(&dp, "zmyn", Frame::new(b, a).tcp(443, 40001, ACK)),
            PASS
        );
        assert_eq!(run(&dp, "zlg", Frame::new(a, b).tcp(40001, 443, ACK)), PASS);
        assert_eq!(event(&dp, FlowEvent::PromotionRefused), 1);
        // Nothing was evicted: the first flow's replies still pass, and every entry is there.
        assert_eq!(
            run(&dp, "zmyn", Frame::new(b, a).tcp(443, 40000, ACK)),
            PASS
        );
        assert_eq!(dp.maps.flow_entries(), (u64::from(CAP_FLOWS), 1));
        assert_eq!(event(&dp, FlowEvent::OpenRefused), 0);
    });
}

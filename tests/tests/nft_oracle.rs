//! nftables as a second, independent oracle: `zone-agent policy export --format nft` run by
//! the kernel's own firewall must let through exactly the packets the agent's XDP program lets
//! through, packet by packet, over a seeded random sequence of crafted traffic.
//!
//! Each sequence is sent twice, each time into a fresh lab (three zone hosts behind a
//! gateway): once with only the exported ruleset loaded in the gateway (nftables and
//! conntrack), once with only `zone-agent run`. The sequence has four phases: policy A, a
//! pause (a timeout runs out), a reload to policy B, a reload back to A. The test compares,
//! per packet, whether it reached the far side.
//!
//! The sequence mixes whole exchanges (TCP handshake, data, FIN or RST; UDP request and
//! response; ICMP echo) interleaved with one another, reply-shaped packets with no flow behind
//! them, ICMP errors quoting earlier packets (from the right side, the wrong side, or to the
//! wrong address), other protocols, spoofed and unknown sources, RSTs forged from another
//! zone for a live flow, the wrong MAC for a MAC-bound
//! rule, and destinations in every zone, in the nested prefixes and in no zone. The reference
//! model (`policy::model`) tracks the state while generating, to steer clear of the intended
//! differences listed at [`Gen::emit`]; its verdicts are reported beside the two runs, and
//! both runs must agree with them too.
//!
//! `ZA_NFT_SEED` picks the first seed, `ZA_NFT_SEQUENCES` how many sequences (default 2),
//! `ZA_NFT_PACKETS` how many packets per phase (default 400); `ZA_NFT_DUMP=FILE` writes
//! every packet with its verdicts there, for reading a failure.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use zone_agent::policy::model::{
    self, Decision, Model, Outcome, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet,
    TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Tuple,
};
use zone_agent::policy::types::{Policy, Protocol};
use zone_agent::policy::validate;
use zone_agent_common::{DropReason, FLOW_TCP_CLOSING_NS, PassReason};
use zone_agent_lab::oracle::{self, Body, Crafted};
// OTHER_MAC: a MAC the lgwan host sometimes sends with: the MAC-bound rule must not match it.
use zone_agent_lab::fixture::{self, OTHER_MAC, Zone};
use zone_agent_lab::{Host, Lab};

const TCP_PSH: u8 = 0x08;
const TCP_URG: u8 = 0x20;

// === the lab ===

/// The lab's three hosts (`zone_agent_lab::fixture::ZONES`), in zone order (host index =
/// zone index).
const HOSTS: [Zone; 3] = fixture::ZONES;
const MY: usize = 0;
const LG: usize = 1;
const INET: usize = 2;

/// Every address the sequence uses, with the host the gateway sends it to. Besides the hosts'
/// own: a second address in each zone, the マイナンバー island nested in LGWAN's prefixes, an
/// internet address outside the internet host's subnet, and addresses in no zone.
const PLACES: [(&str, usize); 20] = [
    ("10.10.0.10", MY),
    ("10.10.0.20", MY),
    ("10.20.99.5", MY),
    ("fd10::10", MY),
    ("fd10::20", MY),
    ("fd20:0:0:99::5", MY),
    ("10.20.0.10", LG),
    ("10.20.0.20", LG),
    ("fd20::10", LG),
    ("fd20::20", LG),
    ("198.51.100.10", INET),
    ("198.51.100.20", INET),
    ("10.30.0.5", INET),
    ("2001:db8::10", INET),
    ("2001:db8::20", INET),
    ("2001:db9::5", INET),
    ("192.0.2.5", INET),
    ("192.0.2.6", INET),
    ("fd99::5", INET),
    ("fd99::6", INET),
];

/// Routes the gateway needs for the places that are not on a host's own subnet.
const ROUTES: [(&str, usize); 6] = [
    ("10.20.99.0/24", MY),
    ("fd20:0:0:99::/64", MY),
    ("10.30.0.0/16", INET),
    ("2001:db9::/64", INET),
    ("192.0.2.0/24", INET),
    ("fd99::/64", INET),
];

// === the policies ===

const ZONES: &str = r#"
[[zones]]
name = "mynumber"
interfaces = ["zmyn"]
# An island of the マイナンバー系 inside LGWAN's prefixes: the longest prefix decides.
networks = ["10.10.0.0/16", "fd10::/48", "10.20.99.0/24", "fd20:0:0:99::/64"]
criticality = "critical"

[[zones]]
name = "lgwan"
interfaces = ["zlgw"]
networks = ["10.20.0.0/16", "fd20::/48"]
criticality = "high"

[[zones]]
name = "internet"
interfaces = ["zinet"]
# 0.0.0.0/1 holds the other zones' prefixes; 192.0.2.0/24 and fd99::/16 are in no zone.
networks = ["0.0.0.0/1", "198.51.100.0/24", "2000::/3"]
segment = "internet"
criticality = "medium"
"#;

/// Rules both policies have, the same.
const SHARED: &str = r#"
[[rules]]
name = "ping6-lgwan"
from = "mynumber"
to = "lgwan"
protocol = "icmpv6"

[[rules]]
name = "dns-out"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["53"]

[[rules]]
name = "proxy-any"
from = "lgwan"
to = "internet"
protocol = "any"
destinations = ["198.51.100.20/32", "2001:db8::20/128"]
"#;

/// Before the reload.
const POLICY_A: &str = r#"version = 1
mode = "enforce"

[defaults]
intra_zone = "allow"
unknown = "deny"
fragments = "deny"
{ZONES}{SHARED}
[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.0.10/32", "fd20::10/128"]
destinations = ["10.10.0.10/32", "fd10::10/128"]

[[rules]]
name = "admin-ssh"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["22"]
source_macs = ["02:00:00:00:20:10"]

[[rules]]
name = "island-files"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["8000-8010"]
destinations = ["10.20.99.0/24", "fd20:0:0:99::/64"]

[[rules]]
name = "island-db"
from = "mynumber"
to = "lgwan"
protocol = "tcp"
ports = ["3306", "5432"]
sources = ["10.20.99.0/24", "fd20:0:0:99::/64"]

[[rules]]
name = "syslog"
from = "mynumber"
to = "lgwan"
protocol = "udp"
ports = ["514", "5140-5149"]

[[rules]]
name = "ping-lgwan"
from = "mynumber"
to = "lgwan"
protocol = "icmp"

[[rules]]
name = "web-out"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80", "443"]

[[rules]]
name = "ntp-trial"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["123"]
mode = "audit"

[[rules]]
name = "inbound-web"
from = "internet"
to = "lgwan"
protocol = "tcp"
ports = ["8080"]
destinations = ["10.20.0.20/32", "fd20::20/128"]

[[rules]]
name = "inbound-ping"
from = "internet"
to = "lgwan"
protocol = "icmp"
mode = "audit"
"#;

/// After the reload: the defaults turned round, rules widened, narrowed, removed and added.
const POLICY_B: &str = r#"version = 1
mode = "enforce"

[defaults]
intra_zone = "deny"
unknown = "allow"
fragments = "deny"
{ZONES}{SHARED}
[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
destinations = ["10.10.0.10/32", "fd10::10/128"]

[[rules]]
name = "island-files"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["8000-8005"]
destinations = ["10.20.99.0/24", "fd20:0:0:99::/64"]

[[rules]]
name = "island-db"
from = "mynumber"
to = "lgwan"
protocol = "tcp"
ports = ["3306", "5000-5005"]
sources = ["10.20.99.0/24", "fd20:0:0:99::/64"]

[[rules]]
name = "syslog"
from = "mynumber"
to = "lgwan"
protocol = "udp"
ports = ["514"]

[[rules]]
name = "ping-mynumber"
from = "lgwan"
to = "mynumber"
protocol = "icmp"
sources = ["10.20.0.10/32"]

[[rules]]
name = "web-out"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["443"]

[[rules]]
name = "ntp"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["123"]

[[rules]]
name = "inbound-udp"
from = "internet"
to = "lgwan"
protocol = "udp"
ports = ["9000-9009"]
mode = "audit"
"#;

fn policy_text(template: &str) -> String {
    template
        .replace("{ZONES}", ZONES)
        .replace("{SHARED}", SHARED)
}

fn parse_policy(text: &str) -> Policy {
    validate::parse_str(Path::new("policy.toml"), text)
        .map(|(p, _)| p)
        .unwrap_or_else(|d| panic!("{d}"))
}

/// Destination ports tried besides the rules' own: edges of the ranges, neighbours, others.
const PORTS: [u16; 24] = [
    22, 23, 25, 53, 80, 123, 443, 514, 3306, 3389, 5000, 5005, 5006, 5139, 5140, 5149, 5150, 5432,
    7999, 8000, 8006, 8010, 8011, 8080,
];

// === a deterministic generator ===

/// splitmix64: small, seedable, the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// The host the gateway sends `a` to.
fn host_of(a: IpAddr) -> usize {
    PLACES
        .iter()
        .find(|(p, _)| ip(p) == a)
        .map(|(_, h)| *h)
        .expect("a lab place")
}

fn places(v6: bool) -> Vec<IpAddr> {
    PLACES
        .iter()
        .map(|(p, _)| ip(p))
        .filter(|a| a.is_ipv6() == v6)
        .collect()
}

fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(mac.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("MAC literal");
    }
    out
}

/// Undirected flow identity (both directions of an exchange give the same key).
type Key = (u8, (IpAddr, u16), (IpAddr, u16));

fn key(proto: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> Key {
    if a <= b { (proto, a, b) } else { (proto, b, a) }
}

/// One planned packet with what the model decided for it.
struct Planned {
    c: Crafted,
    phase: u8,
    what: String,
    model: Decision,
}

/// A packet of an exchange, from its initiator or its responder.
struct Step {
    initiator: bool,
    c: Crafted,
    what: &'static str,
}

/// An exchange in progress: what is left to send.
struct Exchange {
    steps: VecDeque<Step>,
    label: String,
}

struct Gen {
    rng: Rng,
    model: Model,
    policy: Policy,
    phase: u8,
    now: u64,
    out: Vec<Planned>,
    active: Vec<Exchange>,
    next_port: u16,
    next_id: u16,
    /// Flows where conntrack and the XDP flow table no longer hold the same state (see
    /// [`Gen::emit`]): nothing more is sent on them, nor quoted.
    tainted: HashSet<Key>,
    /// Packets an ICMP error may quote: TCP, UDP, ICMP echo.
    quotable: Vec<usize>,
    /// The policy text of each load (index 0: the first), the last one in force.
    loads: Vec<&'static str>,
    /// The load under which a packet of a flow last passed: both sides' state of that flow
    /// belongs to it.
    validated: HashMap<Key, usize>,
}

impl Gen {
    fn new(seed: u64, text: &'static str) -> Gen {
        let policy = parse_policy(&policy_text(text));
        Gen {
            rng: Rng(seed),
            model: Model::new(policy.clone()),
            policy,
            phase: 1,
            now: 1_000_000_000,
            out: Vec::new(),
            active: Vec::new(),
            next_port: 33000,
            next_id: 1,
            tainted: HashSet::new(),
            loads: vec![text],
            validated: HashMap::new(),
            quotable: Vec::new(),
        }
    }

    fn ephemeral(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    fn icmp_id(&mut self) -> u16 {
        self.next_id += 1;
        self.next_id
    }

    /// The addresses host `h` may send from without spoofing (the places the gateway
    /// routes to it that are in its own zone), of one family.
    fn own_addrs(&self, h: usize, v6: bool) -> Vec<IpAddr> {
        places(v6)
            .into_iter()
            .filter(|a| {
                host_of(*a) == h && model::addr_zone(&self.policy, *a) == Policy::zone_id(h)
            })
            .collect()
    }

    fn host_mac(h: usize) -> String {
        HOSTS[h].mac.to_string()
    }

    /// A pause of [`WAIT`] between two phases, nothing reloaded. Most TCP exchanges still
    /// open get a forged RST just before it, and go on after it.
    fn wait(&mut self) {
        for i in self.forgeable() {
            if self.rng.chance(70) {
                self.forge_reset(i);
            }
        }
        self.now += u64::try_from(WAIT.as_nanos()).expect("ns");
        self.phase += 1;
    }

    /// Plans `n` more packets.
    fn run(&mut self, n: usize) {
        let target = self.out.len() + n;
        while self.out.len() < target {
            let roll = self.rng.below(100);
            if roll < 22 || self.active.is_empty() {
                if self.active.len() < 12 {
                    self.start_exchange();
                }
                self.advance();
            } else if roll < 32 {
                self.orphan();
            } else if roll < 40 {
                self.icmp_error();
            } else if roll < 43 {
                self.other_protocol();
            } else if roll < 46 {
                self.forged_reset();
            } else {
                self.advance();
            }
        }
    }

    /// The reload: the model takes policy B; an exchange goes on only if its next packet is
    /// from the initiator (see [`Gen::emit`], reload).
    fn reload(&mut self, text: &'static str) {
        let policy = parse_policy(&policy_text(text));
        self.loads.push(text);
        self.model.reload(policy.clone());
        self.policy = policy;
        self.phase += 1;
        self.active
            .retain(|x| x.steps.front().is_some_and(|s| s.initiator));
    }

    // --- what to send ---

    /// A new exchange: shaped after a rule of the current policy (then perhaps one field
    /// changed), or drawn at random.
    fn start_exchange(&mut self) {
        let v6 = self.rng.chance(40);
        let (sender, mut src, mut dst, mut proto, mut dport, mut mac);
        if self.rng.chance(60) {
            let rule = self.policy.rules[self.rng.below(self.policy.rules.len())].clone();
            let v6 = match rule.protocol {
                Protocol::Icmp => false,
                Protocol::Icmpv6 => true,
                _ => v6,
            };
            sender = rule.from;
            let srcs: Vec<IpAddr> = self
                .own_addrs(sender, v6)
                .into_iter()
                .filter(|a| rule.sources.is_empty() || rule.sources.iter().any(|n| n.contains(a)))
                .collect();
            let dsts: Vec<IpAddr> = places(v6)
                .into_iter()
                .filter(|a| model::addr_zone(&self.policy, *a) == Policy::zone_id(rule.to))
                .filter(|a| {
                    rule.destinations.is_empty() || rule.destinations.iter().any(|n| n.contains(a))
                })
                .collect();
            if srcs.is_empty() || dsts.is_empty() {
                return;
            }
            src = self.rng.pick(&srcs);
            dst = self.rng.pick(&dsts);
            proto = match rule.protocol {
                Protocol::Tcp => PROTO_TCP,
                Protocol::Udp => PROTO_UDP,
                Protocol::Icmp => PROTO_ICMP,
                Protocol::Icmpv6 => PROTO_ICMPV6,
                Protocol::Any => self.rng.pick(&[
                    PROTO_TCP,
                    PROTO_UDP,
                    if v6 { PROTO_ICMPV6 } else { PROTO_ICMP },
                ]),
            };
            dport = match rule.ports.as_slice() {
                [] => self.rng.pick(&PORTS),
                ports => {
                    let r = ports[self.rng.below(ports.len())];
                    r.lo + (self.rng.next() % (u64::from(r.hi - r.lo) + 1)) as u16
                }
            };
            mac = if rule.source_macs.is_empty() || self.rng.chance(70) {
                Self::host_mac(sender)
            } else {
                OTHER_MAC.to_string()
            };
            // One field changed: the packet is then often just outside the rule.
            match self.rng.below(8) {
                0 => dport = dport.wrapping_add(1),
                1 => dport = dport.wrapping_sub(1),
                2 => src = self.rng.pick(&places(v6)),
                3 => dst = self.rng.pick(&places(v6)),
                4 if sender == LG => mac = OTHER_MAC.to_string(),
                5 => proto = self.rng.pick(&[PROTO_TCP, PROTO_UDP]),
                _ => {}
            }
        } else {
            sender = self.rng.below(HOSTS.len());
            src = if self.rng.chance(75) {
                self.rng.pick(&self.own_addrs(sender, v6))
            } else {
                self.rng.pick(&places(v6))
            };
            dst = self.rng.pick(&places(v6));
            proto = self.rng.pick(&[
                PROTO_TCP,
                PROTO_TCP,
                PROTO_UDP,
                if v6 { PROTO_ICMPV6 } else { PROTO_ICMP },
            ]);
            dport = self.rng.pick(&PORTS);
            mac = if sender == LG && self.rng.chance(20) {
                OTHER_MAC.to_string()
            } else {
                Self::host_mac(sender)
            };
        }
        if src == dst {
            return;
        }
        let responder = host_of(dst);
        let rmac = Self::host_mac(responder);
        let sport = self.ephemeral();
        // IPv4 options or an IPv6 extension header on every packet of some exchanges.
        let opts = self.rng.chance(8);
        let c = |sender: usize, mac: &str, src: IpAddr, dst: IpAddr, body: Body| Crafted {
            marker: 0,
            sender,
            src_mac: mac.to_string(),
            src,
            dst,
            opts,
            body,
        };
        let mut steps = VecDeque::new();
        let mut push = |initiator: bool, what: &'static str, body: Body| {
            let step = if initiator {
                c(sender, &mac, src, dst, body)
            } else {
                c(responder, &rmac, dst, src, body)
            };
            steps.push_back(Step {
                initiator,
                c: step,
                what,
            });
        };
        let label;
        match proto {
            PROTO_TCP => {
                label = format!("tcp {src}:{sport} -> {dst}:{dport}");
                let (ci, si) = (self.rng.next() as u32, self.rng.next() as u32);
                let tcp = |sport, dport, flags, seq, ack, len| Body::Tcp {
                    sport,
                    dport,
                    flags,
                    seq,
                    ack,
                    len,
                };
                let (l, m) = (
                    1 + self.rng.below(200) as u16,
                    1 + self.rng.below(200) as u16,
                );
                let (c1, s1) = (ci.wrapping_add(1), si.wrapping_add(1));
                let (c2, s2) = (c1.wrapping_add(u32::from(l)), s1.wrapping_add(u32::from(m)));
                push(true, "SYN", tcp(sport, dport, TCP_SYN, ci, 0, 0));
                if self.rng.chance(10) {
                    // A closed port: the responder resets the handshake.
                    push(
                        false,
                        "RST-ACK (closed)",
                        tcp(dport, sport, TCP_RST | TCP_ACK, 0, c1, 0),
                    );
                } else {
                    push(
                        false,
                        "SYN-ACK",
                        tcp(dport, sport, TCP_SYN | TCP_ACK, si, c1, 0),
                    );
                    push(true, "ACK", tcp(sport, dport, TCP_ACK, c1, s1, 0));
                    push(
                        true,
                        "data",
                        tcp(sport, dport, TCP_PSH | TCP_ACK, c1, s1, l),
                    );
                    push(
                        false,
                        "data reply",
                        tcp(dport, sport, TCP_PSH | TCP_ACK, s1, c2, m),
                    );
                    push(true, "ACK", tcp(sport, dport, TCP_ACK, c2, s2, 0));
                    match self.rng.below(4) {
                        0 => {
                            push(true, "FIN", tcp(sport, dport, TCP_FIN | TCP_ACK, c2, s2, 0));
                            push(
                                false,
                                "FIN",
                                tcp(dport, sport, TCP_FIN | TCP_ACK, s2, c2.wrapping_add(1), 0),
                            );
                            push(
                                true,
                                "last ACK",
                                tcp(
                                    sport,
                                    dport,
                                    TCP_ACK,
                                    c2.wrapping_add(1),
                                    s2.wrapping_add(1),
                                    0,
                                ),
                            );
                        }
                        1 => push(true, "RST", tcp(sport, dport, TCP_RST | TCP_ACK, c2, s2, 0)),
                        2 => push(
                            false,
                            "RST",
                            tcp(dport, sport, TCP_RST | TCP_ACK, s2, c2, 0),
                        ),
                        _ => {} // left open
                    }
                }
            }
            PROTO_UDP => {
                label = format!("udp {src}:{sport} -> {dst}:{dport}");
                for _ in 0..1 + self.rng.below(3) {
                    let (l, m) = (
                        1 + self.rng.below(100) as u16,
                        1 + self.rng.below(100) as u16,
                    );
                    push(
                        true,
                        "request",
                        Body::Udp {
                            sport,
                            dport,
                            len: l,
                        },
                    );
                    push(
                        false,
                        "response",
                        Body::Udp {
                            sport: dport,
                            dport: sport,
                            len: m,
                        },
                    );
                }
            }
            _ => {
                let id = self.icmp_id();
                // Sometimes the other family's ICMP: an unknown protocol to the data path.
                let foreign = self.rng.chance(15);
                label = format!(
                    "{}echo {src} -> {dst} id {id}",
                    if foreign { "foreign " } else { "" }
                );
                for seq in 0..1 + self.rng.below(3) as u16 {
                    let echo = |reply| {
                        if foreign {
                            Body::ForeignEcho { reply, id, seq }
                        } else {
                            Body::Echo { reply, id, seq }
                        }
                    };
                    push(true, "echo request", echo(false));
                    push(false, "echo reply", echo(true));
                }
            }
        }
        self.active.push(Exchange { steps, label });
    }

    /// The next packet of a random exchange in progress.
    fn advance(&mut self) {
        if self.active.is_empty() {
            return;
        }
        let i = self.rng.below(self.active.len());
        let Some(step) = self.active[i].steps.pop_front() else {
            self.active.swap_remove(i);
            return;
        };
        let what = format!(
            "{} {} {}",
            self.active[i].label,
            if step.initiator { ">" } else { "<" },
            step.what
        );
        let passed = self.emit(step.c, what);
        // A packet that did not cross ends its exchange, now or (reply-shaped, with no flow
        // behind it) after one more packet.
        match passed {
            Some(true) if !self.active[i].steps.is_empty() => {}
            Some(false) if self.rng.chance(30) && self.active[i].steps.len() > 1 => {
                self.active[i].steps.truncate(1);
            }
            _ => {
                self.active.swap_remove(i);
            }
        }
    }

    /// A reply-shaped packet with no flow: from a service port to a fresh ephemeral one.
    fn orphan(&mut self) {
        let v6 = self.rng.chance(40);
        let sender = self.rng.below(HOSTS.len());
        let src = self.rng.pick(&self.own_addrs(sender, v6));
        let dst = self.rng.pick(&places(v6));
        if src == dst {
            return;
        }
        let (sport, dport) = (self.rng.pick(&PORTS), self.ephemeral());
        let (body, what) = match self.rng.below(8) {
            0 => (
                Body::Udp {
                    sport,
                    dport,
                    len: 20,
                },
                "udp response",
            ),
            1 => (
                Body::Echo {
                    reply: true,
                    id: self.icmp_id(),
                    seq: 0,
                },
                "echo reply",
            ),
            n => {
                let (flags, what) = [
                    (TCP_SYN | TCP_ACK, "SYN-ACK"),
                    (TCP_ACK, "ACK"),
                    (TCP_FIN | TCP_ACK, "FIN-ACK"),
                    (TCP_RST | TCP_ACK, "RST-ACK"),
                    (TCP_PSH | TCP_ACK, "data"),
                    (TCP_FIN | TCP_PSH | TCP_URG, "xmas"),
                ][n - 2];
                let len = if flags & TCP_PSH != 0 { 10 } else { 0 };
                let body = Body::Tcp {
                    sport,
                    dport,
                    flags,
                    seq: self.rng.next() as u32,
                    ack: self.rng.next() as u32,
                    len,
                };
                (body, what)
            }
        };
        let opts = self.rng.chance(8);
        let c = Crafted {
            marker: 0,
            sender,
            src_mac: Self::host_mac(sender),
            src,
            dst,
            opts,
            body,
        };
        self.emit(c, format!("orphan {what} {src}:{sport} -> {dst}:{dport}"));
    }

    /// An ICMP error quoting an earlier TCP, UDP or echo packet: from the side it went to, from
    /// another host, or to an address other than the quoted packet's source.
    fn icmp_error(&mut self) {
        let candidates: Vec<usize> = self
            .quotable
            .iter()
            .copied()
            .filter(|&i| {
                flow_key(&self.out[i].c)
                    .is_none_or(|k| !self.tainted.contains(&k) && self.relatable(&k))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let q = self.out[self.rng.pick(&candidates)].c.clone();
        let v6 = q.src.is_ipv6();
        let (sender, src, dst, how) = match self.rng.below(10) {
            0..=5 => {
                let h = host_of(q.dst);
                // The destination itself, or a router in its zone.
                let zone = model::addr_zone(&self.policy, q.dst);
                let routers: Vec<IpAddr> = places(v6)
                    .into_iter()
                    .filter(|a| host_of(*a) == h && model::addr_zone(&self.policy, *a) == zone)
                    .collect();
                let src = if self.rng.chance(60) || routers.is_empty() {
                    q.dst
                } else {
                    self.rng.pick(&routers)
                };
                (h, src, q.src, "back")
            }
            6..=7 => {
                let h = self.rng.below(HOSTS.len());
                (
                    h,
                    self.rng.pick(&self.own_addrs(h, v6)),
                    q.src,
                    "from elsewhere",
                )
            }
            _ => (
                host_of(q.dst),
                q.dst,
                self.rng.pick(&places(v6)),
                "misdirected",
            ),
        };
        if src == dst {
            return;
        }
        let (ty, code) = if v6 {
            self.rng.pick(&[(1, 4), (1, 1), (2, 0), (3, 0), (4, 0)])
        } else {
            self.rng
                .pick(&[(3, 3), (3, 1), (3, 13), (11, 0), (12, 0), (4, 0), (5, 1)])
        };
        let c = Crafted {
            marker: 0,
            sender,
            src_mac: Self::host_mac(sender),
            src,
            dst,
            opts: self.rng.chance(8),
            body: Body::Quote {
                ty,
                code,
                quoted: q.marker,
            },
        };
        self.emit(
            c,
            format!(
                "icmp {ty}/{code} {how} {src} -> {dst} quoting #{}",
                q.marker
            ),
        );
    }

    /// A RST that a host of another zone forges for an exchange past its handshake: the
    /// next sequence number of one side, that side's address, sent from elsewhere. Spoofed,
    /// so dropped; it must change no state either (conntrack runs before the ruleset: the
    /// export has to drop it first).
    fn forged_reset(&mut self) {
        let candidates = self.forgeable();
        if !candidates.is_empty() {
            let i = self.rng.pick(&candidates);
            self.forge_reset(i);
        }
    }

    /// The exchanges a RST can be forged for: TCP past the handshake, next sender in a zone.
    fn forgeable(&self) -> Vec<usize> {
        (0..self.active.len())
            .filter(|&i| {
                self.active[i].steps.front().is_some_and(|s| {
                    matches!(s.c.body, Body::Tcp { flags, .. } if flags & TCP_SYN == 0)
                        && model::addr_zone(&self.policy, s.c.src) != 0
                })
            })
            .collect()
    }

    fn forge_reset(&mut self, i: usize) {
        let next = &self.active[i].steps[0].c;
        let Body::Tcp {
            sport,
            dport,
            seq,
            ack,
            ..
        } = next.body
        else {
            unreachable!("a TCP step")
        };
        let zone = model::addr_zone(&self.policy, next.src);
        let others: Vec<usize> = (0..HOSTS.len())
            .filter(|&h| Policy::zone_id(h) != zone)
            .collect();
        let sender = self.rng.pick(&others);
        let flags = TCP_RST | TCP_ACK;
        let c = Crafted {
            marker: 0,
            sender,
            src_mac: Self::host_mac(sender),
            body: Body::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                len: 0,
            },
            ..next.clone()
        };
        let what = format!("forged RST {}:{sport} -> {}:{dport}", c.src, c.dst);
        self.emit(c, what);
    }

    /// Another IP protocol, or an ICMP message that is neither echo nor error.
    fn other_protocol(&mut self) {
        let v6 = self.rng.chance(40);
        let sender = self.rng.below(HOSTS.len());
        let src = self.rng.pick(&self.own_addrs(sender, v6));
        let dst = self.rng.pick(&places(v6));
        if src == dst {
            return;
        }
        let body = match self.rng.below(3) {
            0 => Body::Proto { proto: 47, len: 8 },
            1 => Body::Proto {
                proto: 132,
                len: 12,
            },
            _ if v6 => Body::Icmp { ty: 200, code: 0 },
            _ => Body::Icmp { ty: 13, code: 0 },
        };
        let opts = self.rng.chance(8);
        let c = Crafted {
            marker: 0,
            sender,
            src_mac: Self::host_mac(sender),
            src,
            dst,
            opts,
            body,
        };
        self.emit(c, format!("other {src} -> {dst}"));
    }

    // --- the model, and the intended differences ---

    /// Whether an ICMP error quoting flow `k` is related on one side exactly when on the other
    /// (see [`Gen::emit`], reload): not when a packet of the flow last passed under an earlier
    /// load of the current policy's text.
    fn relatable(&self, k: &Key) -> bool {
        let now = self.loads.len() - 1;
        self.validated
            .get(k)
            .is_none_or(|&load| load == now || self.loads[load] != self.loads[now])
    }

    /// Plans `c` and lets the model decide it. `None`: not sent (its flow is tainted).
    ///
    /// Intended differences between nftables and the XDP data path (policy/nft.rs), which the
    /// sequence must not contain, because the two answers would differ by design:
    ///
    /// - fragments: conntrack reassembles them before the ruleset sees anything; no packet
    ///   here is fragmented;
    /// - the MAC of an established flow: zone-agent ties a flow's original direction to the
    ///   MAC of its first packet, conntrack does not; an exchange keeps its MACs throughout;
    /// - what conntrack tracks that the flow table does not, and the other way round:
    ///   * conntrack tracks other protocols (GRE, SCTP, ICMP timestamps) too, so an ICMP error
    ///     quoting one is related there and not in zone-agent: errors quote only TCP, UDP and
    ///     echo packets;
    ///   * a packet a rule allows opens a flow in zone-agent whatever its shape, while
    ///     conntrack opens nothing for a TCP segment other than SYN or a bare ACK (SYN-ACK,
    ///     FIN, RST, odd flag sets are invalid without a connection) nor for an echo reply;
    ///     after such a packet its flow is tainted: nothing more is sent on it or quotes it;
    ///   * a RST ends a zone-agent flow at once, conntrack keeps it CLOSEd for
    ///     `nf_conntrack_tcp_timeout_close` (10 s): after a RST nothing more is sent on its
    ///     flow or quotes it;
    /// - timeouts: a sequence takes a few seconds, far below every idle timeout on either side;
    /// - reload: conntrack re-admits a flow of the old policy by its next original-direction
    ///   packet, zone-agent re-decides it on any packet; at the reload, exchanges whose next
    ///   packet is a reply are dropped ([`Gen::reload`]), so every old flow is continued by its
    ///   initiator first. And zone-agent relates an ICMP error only to a flow that a packet
    ///   has re-decided since the reload, while conntrack's mark names the policy by its
    ///   content: after going back to a policy loaded before (phase 3 is policy A again), a
    ///   flow marked under it is related at once. Errors quote no such flow
    ///   ([`Gen::relatable`]).
    fn emit(&mut self, mut c: Crafted, what: String) -> Option<bool> {
        let fk = flow_key(&c);
        if fk.is_some_and(|k| self.tainted.contains(&k)) {
            return None;
        }
        c.marker = u32::try_from(self.out.len() + 1).expect("marker fits");
        let what = if c.opts {
            format!("{what} +opts")
        } else {
            what
        };
        let p = self.model_packet(&c);
        self.now += 1_000_000;
        let d = self.model.decide(&p, self.now);
        if let Some(k) = fk {
            // A spoofed packet changes no state (the data path drops it first).
            let rst = p.tcp_rst() && d.outcome != Outcome::Drop(DropReason::SpoofedSource);
            let opened_here = d.outcome == Outcome::Pass(PassReason::Rule) && !conntrack_opens(&c);
            if rst || opened_here {
                self.tainted.insert(k);
            }
            if d.xdp_pass(false) {
                self.validated.insert(k, self.loads.len() - 1);
            }
            self.quotable.push(self.out.len());
        }
        let passed = d.xdp_pass(false);
        self.out.push(Planned {
            c,
            phase: self.phase,
            what,
            model: d,
        });
        Some(passed)
    }

    /// The model's view of a crafted packet (what `policy::frame` makes of its frame).
    fn model_packet(&self, c: &Crafted) -> Packet {
        let v6 = c.src.is_ipv6();
        let icmp = if v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
        let ifname = HOSTS[c.sender].iface;
        let mut p = match &c.body {
            Body::Tcp {
                sport,
                dport,
                flags,
                ..
            } => {
                let mut p = Packet::new(ifname, c.src, c.dst, PROTO_TCP, *sport, *dport);
                p.tcp_flags = *flags;
                p
            }
            Body::Udp { sport, dport, .. } => {
                Packet::new(ifname, c.src, c.dst, PROTO_UDP, *sport, *dport)
            }
            Body::Echo { reply, id, .. } => {
                let (sport, dport) = if *reply { (0, *id) } else { (*id, 0) };
                let mut p = Packet::new(ifname, c.src, c.dst, icmp, sport, dport);
                p.icmp_type = match (v6, reply) {
                    (false, false) => 8,
                    (false, true) => 0,
                    (true, false) => 128,
                    (true, true) => 129,
                };
                p
            }
            Body::Icmp { ty, .. } => {
                let mut p = Packet::new(ifname, c.src, c.dst, icmp, 0, 0);
                p.icmp_type = *ty;
                p
            }
            Body::Quote { ty, quoted, .. } => {
                let mut p = Packet::new(ifname, c.src, c.dst, icmp, 0, 0);
                p.icmp_type = *ty;
                let error = if v6 {
                    (1..=4).contains(ty)
                } else {
                    matches!(ty, 3 | 11 | 12)
                };
                if error {
                    let q = &self.out[*quoted as usize - 1].c;
                    let (sport, dport) = ports(q);
                    p.inner = Some(Tuple {
                        proto: proto_of(q),
                        src: q.src,
                        dst: q.dst,
                        sport,
                        dport,
                    });
                }
                p
            }
            Body::Proto { .. } | Body::ForeignEcho { .. } => {
                Packet::new(ifname, c.src, c.dst, proto_of(c), 0, 0)
            }
        };
        p.src_mac = mac_bytes(&c.src_mac);
        p
    }
}

fn proto_of(c: &Crafted) -> u8 {
    match &c.body {
        Body::Tcp { .. } => PROTO_TCP,
        Body::Udp { .. } => PROTO_UDP,
        Body::Echo { .. } | Body::Icmp { .. } | Body::Quote { .. } if c.src.is_ipv6() => {
            PROTO_ICMPV6
        }
        Body::Echo { .. } | Body::Icmp { .. } | Body::Quote { .. } => PROTO_ICMP,
        Body::Proto { proto, .. } => *proto,
        Body::ForeignEcho { .. } if c.src.is_ipv6() => PROTO_ICMP,
        Body::ForeignEcho { .. } => PROTO_ICMPV6,
    }
}

/// Ports as the data path keys flows: TCP/UDP ports, echo request (id, 0), reply (0, id).
fn ports(c: &Crafted) -> (u16, u16) {
    match &c.body {
        Body::Tcp { sport, dport, .. } | Body::Udp { sport, dport, .. } => (*sport, *dport),
        Body::Echo {
            reply: false, id, ..
        } => (*id, 0),
        Body::Echo {
            reply: true, id, ..
        } => (0, *id),
        _ => (0, 0),
    }
}

/// The flow a TCP, UDP or echo packet belongs to (as both sides key it); `None` for others.
fn flow_key(c: &Crafted) -> Option<Key> {
    match c.body {
        Body::Tcp { .. } | Body::Udp { .. } | Body::Echo { .. } => {
            let (sport, dport) = ports(c);
            Some(key(proto_of(c), (c.src, sport), (c.dst, dport)))
        }
        _ => None,
    }
}

/// Whether conntrack makes a connection for this packet when it has none: a TCP SYN or a
/// bare ACK (mid-stream pickup, `nf_conntrack_tcp_loose`), any UDP datagram, an echo request.
fn conntrack_opens(c: &Crafted) -> bool {
    match c.body {
        Body::Tcp { flags, .. } => matches!(
            flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST),
            TCP_SYN | TCP_ACK
        ),
        Body::Udp { .. } => true,
        Body::Echo { reply, .. } => !reply,
        _ => false,
    }
}

/// A sequence: phase 1 under policy A, the reload, phase 2 under policy B.
struct Sequence {
    seed: u64,
    packets: Vec<Planned>,
}

/// What happens between two phases.
#[derive(Clone, Copy)]
enum Boundary {
    /// A pause of [`WAIT`]: conntrack's close timeout (shortened to 1 s in the nftables run)
    /// runs out, so a connection that a forged RST closed is gone by the next phase.
    Wait,
    /// Both enforcers load this policy.
    Reload(&'static str),
}

/// Phase 1 runs policy A; then these boundaries, each followed by a phase.
const PLAN: [Boundary; 3] = [
    Boundary::Wait,
    Boundary::Reload(POLICY_B),
    Boundary::Reload(POLICY_A),
];

const WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

fn generate(seed: u64, per_phase: usize) -> Sequence {
    let mut g = Gen::new(seed, POLICY_A);
    g.run(per_phase);
    for b in PLAN {
        match b {
            Boundary::Wait => g.wait(),
            Boundary::Reload(text) => g.reload(text),
        }
        g.run(per_phase);
    }
    Sequence {
        seed,
        packets: g.out,
    }
}

// === the two runs ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enforcer {
    Nft,
    Agent,
}

/// A fresh lab: the hosts silent receivers, the gateway routing every place to its host.
fn lab(name: &str) -> (Lab, Vec<Host>) {
    let mut lab = Lab::new(name);
    let hosts: Vec<Host> = HOSTS.iter().map(|zone| lab.add_host(zone.host())).collect();
    for h in &hosts {
        oracle::sink(&lab, h);
    }
    for (cidr, h) in ROUTES {
        oracle::route_to(&lab, &hosts[h], cidr);
    }
    for (a, h) in PLACES {
        oracle::pin_neighbour(&lab, &hosts[h], ip(a));
    }
    (lab, hosts)
}

/// Sends `seq` through a fresh lab under `enforcer`, reloading between the phases.
fn run(seq: &Sequence, enforcer: Enforcer) -> oracle::Run {
    let name = format!("nft_oracle_{enforcer:?}_{}", seq.seed).to_lowercase();
    let (lab, hosts) = lab(&name);
    let policy = lab.dir().join("policy.toml");
    std::fs::write(&policy, policy_text(POLICY_A)).expect("write policy");
    let gw = lab.gateway().to_string();
    let mut _agent = None;
    match enforcer {
        Enforcer::Nft => {
            let ruleset = oracle::export_nft(&lab, &policy);
            oracle::nft_file(&lab, &gw, "policy", &ruleset, true);
            oracle::nft_file(&lab, &gw, "policy", &ruleset, false);
            // Conntrack is loaded now. A closed connection lingers 10 s by default; 1 s lets
            // the test see, after a short wait, whether a forged RST closed one.
            lab.sysctls(
                &gw,
                &[("net.netfilter.nf_conntrack_tcp_timeout_close", "1")],
            );
        }
        Enforcer::Agent => _agent = Some(zone_agent_lab::agent::start_file(&lab, &policy)),
    }
    let phases: Vec<Vec<Crafted>> = (1..=PLAN.len() + 1)
        .map(|k| {
            seq.packets
                .iter()
                .filter(|p| usize::from(p.phase) == k)
                .map(|p| p.c.clone())
                .collect()
        })
        .collect();
    let run = oracle::send_and_capture(&lab, &hosts, &phases, |k| match PLAN[k - 1] {
        // The wait is the point here: a timeout has to run out.
        Boundary::Wait => std::thread::sleep(WAIT),
        Boundary::Reload(text) => {
            // Renamed into place: the agent's file watcher never reads half a file.
            let tmp = policy.with_extension("tmp");
            std::fs::write(&tmp, policy_text(text)).expect("write the next policy");
            std::fs::rename(&tmp, &policy).expect("next policy in place");
            match enforcer {
                Enforcer::Nft => {
                    let ruleset = oracle::export_nft(&lab, &policy);
                    oracle::nft_file(&lab, &gw, "policy", &ruleset, true);
                    oracle::nft_file(&lab, &gw, "policy", &ruleset, false);
                }
                Enforcer::Agent => oracle::reload_agent(&lab),
            }
        }
    });
    // Each packet can only have arrived where the gateway routes its destination.
    for p in phases.iter().flatten() {
        for h in &run.seen[&p.marker] {
            assert_eq!(
                *h,
                host_of(p.dst),
                "#{} arrived at host {h}, not where it is routed",
                p.marker
            );
        }
    }
    // The shortest idle timeout on either side is a closed TCP flow's (zone-agent): a
    // sequence that took longer could see flows expire in one run and not in the other.
    eprintln!(
        "nft_oracle: {enforcer:?} run of seed {}: sent in {:.1?}",
        seq.seed, run.span
    );
    assert!(
        run.span.as_nanos() < u128::from(FLOW_TCP_CLOSING_NS),
        "{enforcer:?} run of seed {} took {:?}: flows may have expired",
        seq.seed,
        run.span
    );
    if enforcer == Enforcer::Nft {
        // The counters show the ruleset itself decided (a broken ruleset would drop all).
        let counters = lab.run_ok(&gw, &["nft", "list", "table", "inet", "zone_agent"]);
        assert!(
            counters.contains("counter packets"),
            "nft ruleset has no counters:\n{counters}"
        );
    }
    run
}

fn outcome_label(d: &Decision) -> String {
    match d.outcome {
        Outcome::Pass(r) => format!("pass {}", r.label()),
        Outcome::Drop(r) => format!("drop {}", r.label()),
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The two enforcers agree on every packet of every sequence.
#[test]
fn nftables_export_and_xdp_pass_the_same_packets() {
    zone_agent_lab::require_root();
    let started = Instant::now();
    let first_seed = env_num("ZA_NFT_SEED", 0x7a6f_6e65);
    let sequences = env_num("ZA_NFT_SEQUENCES", 2);
    let per_phase = usize::try_from(env_num("ZA_NFT_PACKETS", 400)).expect("count");
    let (mut total, mut crossed, mut model_off) = (0usize, 0usize, Vec::new());
    let mut mismatches = Vec::new();
    // (model verdict, kind of packet) -> (crossed, blocked) under nftables.
    let mut tally: std::collections::BTreeMap<(String, String), (usize, usize)> =
        Default::default();
    // ZA_NFT_DUMP=FILE: every packet with both outcomes, for reading a failure.
    let mut dump =
        std::env::var_os("ZA_NFT_DUMP").map(|p| std::fs::File::create(p).expect("dump file"));
    for seed in first_seed..first_seed + sequences {
        let seq = generate(seed, per_phase);
        let nft = run(&seq, Enforcer::Nft);
        let agent = run(&seq, Enforcer::Agent);
        let (mut n_crossed, mut n_blocked) = (0, 0);
        for p in &seq.packets {
            let (by_nft, by_agent) = (nft.crossed(p.c.marker), agent.crossed(p.c.marker));
            let by_model = p.model.xdp_pass(false);
            if by_nft {
                n_crossed += 1
            } else {
                n_blocked += 1
            }
            let kind = p.what.split_whitespace().next().unwrap_or("").to_string();
            let t = tally.entry((outcome_label(&p.model), kind)).or_default();
            if by_nft {
                t.0 += 1
            } else {
                t.1 += 1
            }
            let line = format!(
                "seed {seed} #{} phase {} from {}: {} [model: {}] nft {} agent {}",
                p.c.marker,
                p.phase,
                HOSTS[p.c.sender].name,
                p.what,
                outcome_label(&p.model),
                if by_nft { "crossed" } else { "blocked" },
                if by_agent { "crossed" } else { "blocked" },
            );
            if let Some(f) = dump.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(f, "{line}");
            }
            if by_nft != by_agent {
                mismatches.push(line);
            } else if by_nft != by_model {
                model_off.push(line);
            }
        }
        eprintln!(
            "nft_oracle: seed {seed}: {} packets, {n_crossed} crossed, {n_blocked} blocked under nftables; \
             hosts' own frames captured: nft {}, agent {}",
            seq.packets.len(),
            nft.other,
            agent.other,
        );
        // A lab where nothing (or everything) crosses would agree trivially.
        let min = seq.packets.len() / 5;
        assert!(
            n_crossed >= min && n_blocked >= min,
            "seed {seed}: {n_crossed} crossed, {n_blocked} blocked"
        );
        total += seq.packets.len();
        crossed += n_crossed;
    }
    eprintln!(
        "nft_oracle: {sequences} sequence(s), {total} packets compared, {crossed} crossed, {} blocked, \
         {} mismatches, {} where both differ from the model, {:.1} s",
        total - crossed,
        mismatches.len(),
        model_off.len(),
        started.elapsed().as_secs_f64()
    );
    for ((verdict, kind), (c, b)) in &tally {
        eprintln!("  {verdict:<24} {kind:<8} crossed {c:>4} blocked {b:>4}");
    }
    for l in &model_off {
        eprintln!("  both differ from the model: {l}");
    }
    assert!(
        mismatches.is_empty(),
        "nftables and zone-agent disagree on {} packet(s):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(
        model_off.is_empty(),
        "{} packet(s) crossed differently from the model's verdict",
        model_off.len()
    );
}

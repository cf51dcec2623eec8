//! A deterministic generator: the seeded sequence of crafted packets both runs send, in
//! phases separated by a reload or a pause.

use super::*;

/// splitmix64: small, seedable, the same on every platform.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// The host the gateway sends `a` to.
pub(crate) fn host_of(a: IpAddr) -> usize {
    PLACES
        .iter()
        .find(|(p, _)| ip(p) == a)
        .map(|(_, h)| *h)
        .expect("a lab place")
}

pub(crate) fn places(v6: bool) -> Vec<IpAddr> {
    PLACES
        .iter()
        .map(|(p, _)| ip(p))
        .filter(|a| a.is_ipv6() == v6)
        .collect()
}

pub(crate) fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(mac.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("MAC literal");
    }
    out
}

/// Undirected flow identity (both directions of an exchange give the same key).
pub(crate) type Key = (u8, (IpAddr, u16), (IpAddr, u16));

pub(crate) fn key(proto: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> Key {
    if a <= b { (proto, a, b) } else { (proto, b, a) }
}

/// One planned packet with what the model decided for it.
pub(crate) struct Planned {
    pub(crate) c: Crafted,
    pub(crate) phase: u8,
    pub(crate) what: String,
    pub(crate) model: Decision,
}

/// A packet of an exchange, from its initiator or its responder.
pub(crate) struct Step {
    pub(crate) initiator: bool,
    pub(crate) c: Crafted,
    pub(crate) what: &'static str,
}

/// An exchange in progress: what is left to send.
pub(crate) struct Exchange {
    pub(crate) steps: VecDeque<Step>,
    pub(crate) label: String,
}

pub(crate) struct Gen {
    pub(crate) rng: Rng,
    pub(crate) model: Model,
    pub(crate) policy: Policy,
    pub(crate) phase: u8,
    pub(crate) now: u64,
    pub(crate) out: Vec<Planned>,
    pub(crate) active: Vec<Exchange>,
    pub(crate) next_port: u16,
    pub(crate) next_id: u16,
    /// Flows where conntrack and the XDP flow table no longer hold the same state (see
    /// [`Gen::emit`]): nothing more is sent on them, nor quoted.
    pub(crate) tainted: HashSet<Key>,
    /// Packets an ICMP error may quote: TCP, UDP, ICMP echo.
    pub(crate) quotable: Vec<usize>,
    /// The policy text of each load (index 0: the first), the last one in force.
    pub(crate) loads: Vec<&'static str>,
    /// The load under which a packet of a flow last passed: both sides' state of that flow
    /// belongs to it.
    pub(crate) validated: HashMap<Key, usize>,
}

impl Gen {
    pub(crate) fn new(seed: u64, text: &'static str) -> Gen {
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

    pub(crate) fn ephemeral(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    pub(crate) fn icmp_id(&mut self) -> u16 {
        self.next_id += 1;
        self.next_id
    }

    /// The addresses host `h` may send from without spoofing (the places the gateway
    /// routes to it that are in its own zone), of one family.
    pub(crate) fn own_addrs(&self, h: usize, v6: bool) -> Vec<IpAddr> {
        places(v6)
            .into_iter()
            .filter(|a| {
                host_of(*a) == h && model::addr_zone(&self.policy, *a) == Policy::zone_id(h)
            })
            .collect()
    }

    pub(crate) fn host_mac(h: usize) -> String {
        HOSTS[h].mac.to_string()
    }

    /// A pause of [`WAIT`] between two phases, nothing reloaded. Most TCP exchanges still
    /// open get a forged RST just before it, and go on after it.
    pub(crate) fn wait(&mut self) {
        for i in self.forgeable() {
            if self.rng.chance(70) {
                self.forge_reset(i);
            }
        }
        self.now += u64::try_from(WAIT.as_nanos()).expect("ns");
        self.phase += 1;
    }

    /// Plans `n` more packets.
    pub(crate) fn run(&mut self, n: usize) {
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
    pub(crate) fn reload(&mut self, text: &'static str) {
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
    pub(crate) fn start_exchange(&mut self) {
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
    pub(crate) fn advance(&mut self) {
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
    pub(crate) fn orphan(&mut self) {
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
    pub(crate) fn icmp_error(&mut self) {
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
    pub(crate) fn forged_reset(&mut self) {
        let candidates = self.forgeable();
        if !candidates.is_empty() {
            let i = self.rng.pick(&candidates);
            self.forge_reset(i);
        }
    }

    /// The exchanges a RST can be forged for: TCP past the handshake, next sender in a zone.
    pub(crate) fn forgeable(&self) -> Vec<usize> {
        (0..self.active.len())
            .filter(|&i| {
                self.active[i].steps.front().is_some_and(|s| {
                    matches!(s.c.body, Body::Tcp { flags, .. } if flags & TCP_SYN == 0)
                        && model::addr_zone(&self.policy, s.c.src) != 0
                })
            })
            .collect()
    }

    pub(crate) fn forge_reset(&mut self, i: usize) {
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
    pub(crate) fn other_protocol(&mut self) {
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
    pub(crate) fn relatable(&self, k: &Key) -> bool {
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
    pub(crate) fn emit(&mut self, mut c: Crafted, what: String) -> Option<bool> {
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
    pub(crate) fn model_packet(&self, c: &Crafted) -> Packet {
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

pub(crate) fn proto_of(c: &Crafted) -> u8 {
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
pub(crate) fn ports(c: &Crafted) -> (u16, u16) {
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
pub(crate) fn flow_key(c: &Crafted) -> Option<Key> {
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
pub(crate) fn conntrack_opens(c: &Crafted) -> bool {
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
pub(crate) struct Sequence {
    pub(crate) seed: u64,
    pub(crate) packets: Vec<Planned>,
}

/// What happens between two phases.
#[derive(Clone, Copy)]
pub(crate) enum Boundary {
    /// A pause of [`WAIT`]: conntrack's close timeout (shortened to 1 s in the nftables run)
    /// runs out, so a connection that a forged RST closed is gone by the next phase.
    Wait,
    /// Both enforcers load this policy.
    Reload(&'static str),
}

/// Phase 1 runs policy A; then these boundaries, each followed by a phase.
pub(crate) const PLAN: [Boundary; 3] = [
    Boundary::Wait,
    Boundary::Reload(POLICY_B),
    Boundary::Reload(POLICY_A),
];

pub(crate) const WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

pub(crate) fn generate(seed: u64, per_phase: usize) -> Sequence {
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

//! The resolver: each raw step made concrete against the policy in force and the frames
//! sent so far (addresses in or out of a zone, ports, flags, replies to earlier frames).

use super::*;

impl Resolver<'_> {
    pub(crate) fn policy(&self) -> &Policy {
        &self.policies[self.cur]
    }

    pub(crate) fn nth_back(&self, back: u8) -> Option<Sent> {
        let n = self.history.len();
        (n > 0).then(|| self.history[n - 1 - back as usize % n].clone())
    }

    /// (interface, VLAN) of entry `pick` of zone id `zone`.
    pub(crate) fn zone_iface(&self, zone: u8, pick: u8) -> (String, u16) {
        let ifs = &self.policy().zones[zone as usize - 1].interfaces;
        let i = &ifs[pick as usize % ifs.len()];
        (i.name.clone(), i.vlan.unwrap_or(0))
    }

    /// Zone id an address leads to (a link-scoped one stays on `link_zone`).
    pub(crate) fn addr_zone(&self, a: IpAddr, link_zone: u8) -> u8 {
        if model::link_scoped(a, false) {
            link_zone
        } else {
            model::addr_zone(self.policy(), a)
        }
    }

    pub(crate) fn nets_of(&self, zone: usize, v6: bool) -> Vec<IpNet> {
        self.policy().zones.get(zone).map_or(vec![], |z| {
            z.networks
                .iter()
                .filter(|n| n.addr().is_ipv6() == v6)
                .copied()
                .collect()
        })
    }

    pub(crate) fn pick_in(&self, nets: &[IpNet], pick: u8, h: HostGen, v6: bool) -> IpAddr {
        match nets.get(pick as usize % nets.len().max(1)) {
            Some(n) => inside(n, host_bits(h, v6)),
            None => anchor(v6, h.anchor.unwrap_or(h.low as u8)),
        }
    }

    /// An address from `nets` whose longest-prefix zone is `zone` (nested prefixes of other
    /// zones take most of a wide network): a few tries, else the first.
    pub(crate) fn addr_in_zone(
        &self,
        zone: u8,
        nets: &[IpNet],
        pick: u8,
        h: HostGen,
        v6: bool,
    ) -> IpAddr {
        let mut first = None;
        for k in 0..8u8 {
            let hk = HostGen {
                anchor: h.anchor.map(|a| a.wrapping_add(k * 5)),
                low: h.low.wrapping_add(
                    (k as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                ),
            };
            let a = self.pick_in(nets, pick.wrapping_add(k), hk, v6);
            if self.addr_zone(a, zone) == zone {
                return a;
            }
            first.get_or_insert(a);
        }
        first.expect("eight tries")
    }

    /// A packet aimed at rule `t.rule` (its zones, addresses, protocol, port and MAC), with
    /// one field sometimes pushed off it; `None` without rules.
    pub(crate) fn aim(&self, g: &PktGen, t: Target) -> Option<Aim> {
        let p = self.policy();
        let rule = p.rules.get(t.rule as usize % p.rules.len().max(1))?;
        let (fz, tz) = (rule.from as u8 + 1, rule.to as u8 + 1);
        let fits =
            |l: &[IpNet], v6: bool| l.is_empty() || l.iter().any(|n| n.addr().is_ipv6() == v6);
        let v6 = match rule.protocol {
            Protocol::Icmp => false,
            Protocol::Icmpv6 => true,
            _ if fits(&rule.sources, g.v6) && fits(&rule.destinations, g.v6) => g.v6,
            _ => !g.v6,
        };
        let (iface, vlan) = self.zone_iface(fz, t.pick);
        let list = |l: &[IpNet], zone: u8| {
            let l: Vec<IpNet> = l
                .iter()
                .filter(|n| n.addr().is_ipv6() == v6)
                .copied()
                .collect();
            if l.is_empty() {
                self.nets_of(zone as usize - 1, v6)
            } else {
                l
            }
        };
        let mut src = self.addr_in_zone(fz, &list(&rule.sources, fz), t.pick, t.host, v6);
        let dhost = HostGen {
            anchor: t.host.anchor.map(|a| a.wrapping_add(13)),
            low: t.host.low.rotate_left(29),
        };
        let dst = self.addr_in_zone(tz, &list(&rule.destinations, tz), t.pick / 3, dhost, v6);
        let mut dport = match rule.ports.get(t.pick as usize % rule.ports.len().max(1)) {
            Some(r) => r.lo + ((t.host.low as u32) % (r.hi - r.lo + 1) as u32) as u16,
            None => PORTS[t.pick as usize % PORTS.len()],
        };
        let mut mac = match rule
            .source_macs
            .get(t.pick as usize % rule.source_macs.len().max(1))
        {
            Some(m) => *m,
            None => mac_of(g.mac),
        };
        let (sport, flags) = match g.l4 {
            L4Gen::Tcp { sport, flags, .. } => (sport, flags),
            L4Gen::Udp { sport, .. } => (sport, SYN),
            _ => (40_000 + t.pick as u16, SYN),
        };
        match t.perturb % 10 {
            7 => mac = [0x02, 0, 0, 0, 0x66, 0x01],
            8 => {
                dport = rule
                    .ports
                    .last()
                    .map_or(dport ^ 1, |r| r.hi.wrapping_add(1))
            }
            9 => {
                let other = fz as usize % p.zones.len();
                src = self.addr_in_zone(
                    other as u8 + 1,
                    &self.nets_of(other, v6),
                    t.pick,
                    t.host,
                    v6,
                );
            }
            _ => {}
        }
        let l4 = match (rule.protocol, g.l4) {
            (Protocol::Tcp, _) => L4Gen::Tcp {
                sport,
                dport: PortPick::Exact(dport),
                flags,
                opt_words: 0,
            },
            (Protocol::Udp, _) => L4Gen::Udp {
                sport,
                dport: PortPick::Exact(dport),
            },
            (Protocol::Icmp | Protocol::Icmpv6, l4 @ L4Gen::Icmp { .. }) => l4,
            (Protocol::Icmp | Protocol::Icmpv6, _) => L4Gen::Icmp {
                ty: 0,
                code: 0,
                id: t.pick as u16,
            },
            (Protocol::Any, l4) => l4,
        };
        Some(Aim {
            iface,
            vlan,
            v6,
            src,
            dst,
            mac,
            l4,
        })
    }

    /// A packet from the generator's raw choices alone.
    pub(crate) fn wander(&self, g: &PktGen) -> Aim {
        let (iface, vlan) = self.ingress(g.ingress);
        let zone = model::ingress_zone(self.policy(), &iface, vlan);
        let src = self.addr(g.src, g.v6, zone);
        let dst = self.addr(g.dst, g.v6, zone);
        Aim {
            iface,
            vlan,
            v6: g.v6,
            src,
            dst,
            mac: mac_of(g.mac),
            l4: g.l4,
        }
    }

    pub(crate) fn addr(&self, g: AddrGen, v6: bool, ingress_zone: u8) -> IpAddr {
        let p = self.policy();
        let nz = p.zones.len();
        match g {
            AddrGen::Own(n, h) => {
                let z = if ingress_zone == 0 {
                    0
                } else {
                    ingress_zone as usize - 1
                };
                self.addr_in_zone(z as u8 + 1, &self.nets_of(z, v6), n, h, v6)
            }
            AddrGen::Zone(z, n, h) => {
                let z = z as usize % nz;
                self.addr_in_zone(z as u8 + 1, &self.nets_of(z, v6), n, h, v6)
            }
            AddrGen::RuleSrc(r, i, h) | AddrGen::RuleDst(r, i, h) => {
                let Some(rule) = p.rules.get(r as usize % p.rules.len().max(1)) else {
                    return self.pick_in(&self.nets_of(r as usize % nz, v6), i, h, v6);
                };
                let (list, zone) = match g {
                    AddrGen::RuleSrc(..) => (&rule.sources, rule.from),
                    _ => (&rule.destinations, rule.to),
                };
                let cidrs: Vec<IpNet> = list
                    .iter()
                    .filter(|n| n.addr().is_ipv6() == v6)
                    .copied()
                    .collect();
                let cidrs = if cidrs.is_empty() {
                    self.nets_of(zone, v6)
                } else {
                    cidrs
                };
                self.addr_in_zone(zone as u8 + 1, &cidrs, i, h, v6)
            }
            AddrGen::Special(k) => {
                let v4 = [
                    "0.0.0.0",
                    "255.255.255.255",
                    "224.0.0.251",
                    "169.254.1.1",
                    "127.0.0.1",
                    "224.1.2.3",
                    "10.255.255.255",
                    "224.0.1.1",
                ];
                let v6s = [
                    "::",
                    "::1",
                    "fe80::1",
                    "ff02::1",
                    "ff05::2",
                    "fe80::ff:fe00:1",
                    "::ffff:10.0.0.1",
                    "ff01::1",
                ];
                let list = if v6 { &v6s } else { &v4 };
                list[k as usize % list.len()].parse().unwrap()
            }
            AddrGen::Random(x) => {
                if v6 {
                    IpAddr::V6(Ipv6Addr::from(x))
                } else {
                    IpAddr::V4(Ipv4Addr::from(x as u32))
                }
            }
        }
    }

    pub(crate) fn port(&self, pick: PortPick) -> u16 {
        let p = self.policy();
        match pick {
            PortPick::Rule(r, i, off) => {
                let ranges = p
                    .rules
                    .get(r as usize % p.rules.len().max(1))
                    .map(|r| &r.ports[..])
                    .unwrap_or(&[]);
                match ranges.get(i as usize % ranges.len().max(1)) {
                    Some(pr) => pr.lo + (off as u32 % (pr.hi - pr.lo + 1) as u32) as u16,
                    None => PORTS[(r as usize + i as usize) % PORTS.len()],
                }
            }
            PortPick::Common(k) => PORTS[k as usize % PORTS.len()],
            PortPick::Random(x) | PortPick::Exact(x) => x,
        }
    }

    pub(crate) fn ingress(&self, g: Ingress) -> (String, u16) {
        match g {
            Ingress::Zone { zone, iface } => {
                self.zone_iface(zone % self.policy().zones.len() as u8 + 1, iface)
            }
            Ingress::Pool { iface, vlan } => (
                IFACES[iface as usize % IFACES.len()].to_string(),
                ANY_VLANS[vlan as usize % ANY_VLANS.len()],
            ),
        }
    }

    pub(crate) fn build(&self, g: &PktGen) -> Sent {
        let Aim {
            iface,
            vlan,
            v6,
            src,
            dst,
            mac,
            l4,
        } = g
            .target
            .and_then(|t| self.aim(g, t))
            .unwrap_or_else(|| self.wander(g));
        let zone = model::ingress_zone(self.policy(), &iface, vlan);
        let s = &g.shape;
        let mut f = Frame::new(src, dst)
            .mac(mac)
            .hop_limit(if s.hop255 { 255 } else { 64 });
        f = match l4 {
            L4Gen::Tcp {
                sport,
                dport,
                flags,
                opt_words,
            } => {
                let mut f = f.tcp(sport, self.port(dport), flags);
                let w = opt_words.min(10);
                if w > 0 {
                    f.l4[12] = (5 + w) << 4;
                    f.l4.extend(std::iter::repeat_n(1u8, w as usize * 4));
                }
                f
            }
            L4Gen::Udp { sport, dport } => f.udp(sport, self.port(dport)),
            L4Gen::Icmp { ty, code, id } => {
                let types = if v6 { &ICMP6_TYPES } else { &ICMP4_TYPES };
                let ty = if ty % 8 == 7 {
                    ty
                } else {
                    types[ty as usize % types.len()]
                };
                f.icmp(ty, code, id)
            }
            L4Gen::Other { proto, len } => {
                let p = OTHER_PROTOS.get(proto as usize).copied().unwrap_or(proto);
                f.proto(p, len as usize)
            }
        };
        f = f.payload(s.payload as usize % 48);
        let mut frag_id = None;
        if v6 {
            let frag = match s.frag {
                FragGen::None => None,
                FragGen::First(id) => Some((0, true, id)),
                FragGen::Later { offset, more, id } => Some((offset & 0x1fff, more, id)),
                FragGen::Atomic(id) => Some((0, false, id)),
            };
            // The extension headers with the fragment header (`None`) at its place.
            let mut chain: Vec<Option<ExtGen>> = s.exts.iter().copied().map(Some).collect();
            if frag.is_some() {
                chain.insert(s.frag_pos as usize % (s.exts.len() + 1), None);
            }
            for e in chain {
                f = match (e, frag) {
                    (None, Some((o, m, id))) => f.v6_frag(o, m, id),
                    (Some(e), _) if e.kind == 51 => {
                        // AH counts its length in 4-byte units, minus 2.
                        let mut b = vec![0u8; (e.len as usize + 2) * 4];
                        b[1] = e.len;
                        f.v6_ext.push((51, b));
                        f
                    }
                    (Some(e), _) if e.kind == 43 => {
                        let mut b = vec![0u8; 8 + e.len as usize * 8];
                        b[1] = e.len;
                        (b[2], b[3]) = e.routing;
                        f.v6_ext.push((43, b));
                        f
                    }
                    (Some(e), _) => f.v6_ext(e.kind, e.len),
                    (None, None) => f,
                };
            }
            frag_id = frag.map(|f| f.2);
        } else {
            match &s.v4_opts {
                V4Opts::Nops(0) => {}
                V4Opts::Nops(n) => f = f.options(*n as usize % 11),
                V4Opts::List(items) => f.v4_options = v4_option_bytes(items),
            }
            let frag = match s.frag {
                FragGen::None => None,
                FragGen::First(id) => Some((0, true, id)),
                FragGen::Later { offset, more, id } => Some((offset & 0x1fff, more, id)),
                FragGen::Atomic(id) => Some((0, false, id)),
            };
            if let Some((o, m, id)) = frag {
                f = f.v4_frag(o, m, id as u16);
                frag_id = Some(id as u16 as u32);
            }
        }
        let mut tags = vec![];
        if vlan != 0 {
            tags.push(vlan | (s.pcp as u16 & 7) << 13);
        } else if s.prio_tag {
            tags.push((s.pcp as u16 & 7).max(1) << 13);
        }
        tags.extend(&s.inner_tags);
        let first = matches!(s.frag, FragGen::First(_));
        let mut sent = Sent {
            iface,
            zone,
            tags,
            qinq: s.qinq,
            frame: f,
            frag_id,
            first,
            bytes: vec![],
        };
        sent.bytes = self.bytes(&sent, s.pad, s.corrupt);
        sent
    }

    pub(crate) fn bytes(&self, s: &Sent, pad: u8, corrupt: Option<(u16, u8)>) -> Vec<u8> {
        let mut f = s.frame.clone();
        f.vlans = s.tags.clone();
        let mut b = f.bytes();
        if s.qinq && !s.tags.is_empty() {
            b[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        }
        // Padding: up to the Ethernet minimum of 60, or some bytes beyond.
        match pad {
            0 => {}
            1..=127 => b.resize(b.len().max(60), 0),
            p => b.resize(b.len() + (p as usize - 127) % 24, 0),
        }
        if let Some((at, x)) = corrupt {
            let n = b.len();
            b[at as usize % n] ^= x;
        }
        b.truncate(MAX_FRAME);
        b
    }

    pub(crate) fn send(&mut self, s: Sent) {
        self.ops.push(Op::Send {
            iface: s.iface.clone(),
            bytes: s.bytes.clone(),
        });
        self.history.push(s);
    }

    /// `frame` sent like `like` (same interface and tags).
    pub(crate) fn send_like(&mut self, like: &Sent, frame: Frame) {
        let mut s = Sent {
            frame,
            frag_id: None,
            first: false,
            bytes: vec![],
            ..like.clone()
        };
        s.bytes = self.bytes(&s, 0, None);
        self.send(s);
    }

    /// `frame` sent into the zone of address `towards` (entry `via`), or back out of
    /// `fallback`'s interface when that address is in no zone.
    pub(crate) fn send_towards(&mut self, towards: IpAddr, fallback: &Sent, via: u8, frame: Frame) {
        let zone = self.addr_zone(towards, fallback.zone);
        let mut s = Sent {
            frame,
            frag_id: None,
            first: false,
            bytes: vec![],
            ..fallback.clone()
        };
        if zone != 0 {
            let (iface, vlan) = self.zone_iface(zone, via);
            s.iface = iface;
            s.tags = if vlan == 0 { vec![] } else { vec![vlan] };
            s.zone = zone;
        }
        s.frame.src_mac = match via % 4 {
            3 => HOST_MAC,
            m => MACS[m as usize],
        };
        s.bytes = self.bytes(&s, 0, None);
        self.send(s);
    }

    pub(crate) fn step(&mut self, g: &StepGen) {
        match g {
            StepGen::Send(p) => {
                let s = self.build(p);
                self.send(s);
            }
            StepGen::Handshake { pkt, close } => {
                let mut pkt = pkt.clone();
                let (sport, dport) = match pkt.l4 {
                    L4Gen::Tcp { sport, dport, .. } | L4Gen::Udp { sport, dport } => (sport, dport),
                    _ => (40000, PortPick::Rule(0, 0, 0)),
                };
                pkt.l4 = L4Gen::Tcp {
                    sport,
                    dport,
                    flags: SYN,
                    opt_words: 0,
                };
                pkt.shape.frag = FragGen::None;
                pkt.shape.corrupt = None;
                let syn = self.build(&pkt);
                self.send(syn.clone());
                let reply = |f| reverse(&syn.frame, f);
                // A rule of another protocol makes this a UDP or ICMP conversation.
                let orig = |f| {
                    let mut o = syn.frame.clone();
                    if o.proto == TCP && o.l4.len() >= 20 {
                        o.l4[13] = f;
                    }
                    o
                };
                self.send_towards(syn.frame.dst, &syn, 0, reply(SYN | ACK));
                self.send_like(&syn, orig(ACK));
                match close % 5 {
                    1 => {
                        self.send_like(&syn, orig(FIN | ACK));
                        self.send_towards(syn.frame.dst, &syn, 0, reply(FIN | ACK));
                        self.send_like(&syn, orig(ACK));
                    }
                    2 => self.send_like(&syn, orig(RST)),
                    3 => self.send_towards(syn.frame.dst, &syn, 0, reply(RST | ACK)),
                    4 => self.send_like(&syn, orig(FIN | ACK)),
                    _ => {}
                }
            }
            StepGen::Reply { back, flags, via } => {
                if let Some(s) = self.nth_back(*back) {
                    let f = reverse(&s.frame, *flags);
                    self.send_towards(s.frame.dst, &s, *via, f);
                }
            }
            StepGen::Again { back, flags } => {
                if let Some(s) = self.nth_back(*back) {
                    let mut f = s.frame.clone();
                    if f.proto == TCP && f.l4.len() >= 20 {
                        f.l4[13] = *flags;
                    }
                    self.send_like(&s, f);
                }
            }
            StepGen::IcmpError {
                back,
                reply_dir,
                ty,
                code,
                router,
                cut,
            } => {
                let Some(s) = self.nth_back(*back) else {
                    return;
                };
                let quoted = if *reply_dir {
                    reverse(&s.frame, ACK)
                } else {
                    s.frame.clone()
                };
                let v6 = quoted.src.is_ipv6();
                let from = match router % 3 {
                    0 => quoted.dst,
                    1 => {
                        let z = self.addr_zone(quoted.dst, s.zone);
                        let nets = if z == 0 {
                            vec![]
                        } else {
                            self.nets_of(z as usize - 1, v6)
                        };
                        self.pick_in(
                            &nets,
                            *ty,
                            HostGen {
                                anchor: None,
                                low: 1,
                            },
                            v6,
                        )
                    }
                    _ => anchor(v6, *ty),
                };
                let types: &[u8] = if v6 {
                    &[1, 3, 2, 4, 1, 129]
                } else {
                    &[3, 11, 12, 3, 5, 0]
                };
                let mut f = Frame::new(from, quoted.src).icmp_error(
                    types[*ty as usize % types.len()],
                    *code,
                    &quoted,
                );
                let keep = f.l4.len().saturating_sub(*cut as usize % 24);
                f.l4.truncate(keep);
                let towards = if self.addr_zone(from, s.zone) != 0 {
                    from
                } else {
                    quoted.dst
                };
                self.send_towards(towards, &s, *ty, f);
            }
            StepGen::Fragmented { pkt, id, n } => {
                let mut pkt = pkt.clone();
                pkt.shape.frag = FragGen::First(*id);
                pkt.shape.corrupt = None;
                let first = self.build(&pkt);
                self.send(first);
                let n = *n % 4;
                for i in 0..n {
                    let later = StepGen::LaterFrag {
                        back: 0,
                        offset: 2 + 3 * i as u16,
                        more: i + 1 < n,
                        variant: 0,
                    };
                    self.step(&later);
                }
            }
            StepGen::LaterFrag {
                back,
                offset,
                more,
                variant,
            } => {
                // Mostly a datagram whose first fragment was sent.
                let firsts: Vec<&Sent> = self.history.iter().rev().filter(|s| s.first).collect();
                let s = match firsts.get(*back as usize % firsts.len().max(1)) {
                    Some(s) if *variant < 200 => (*s).clone(),
                    _ => match self.nth_back(*back) {
                        Some(s) => s,
                        None => return,
                    },
                };
                let id = s.frag_id.unwrap_or(*back as u32);
                let offset = (*offset & 0x1fff).max(1);
                let mut f = Frame::new(s.frame.src, s.frame.dst).mac(s.frame.src_mac);
                // 0–4: the same host and way in; 5: another MAC; 6: another protocol (IPv4) or
                // a destination-options header after the fragment header (IPv6); 7: another way in.
                let variant = *variant % 8;
                if variant == 5 {
                    f.src_mac = [0x02, 0, 0, 0, 0x77, 0x01];
                }
                let proto = if variant == 6 {
                    UDP ^ TCP ^ s.frame.proto
                } else {
                    s.frame.proto
                };
                if s.frame.src.is_ipv4() {
                    f = f
                        .proto(proto, 8 + offset as usize % 24)
                        .v4_frag(offset, *more, id as u16);
                } else {
                    let nh = if variant == 6 { 60 } else { proto };
                    f = f.v6_frag(offset, *more, id).proto(nh, 16);
                }
                if variant == 7 {
                    self.send_towards(s.frame.dst, &s, 0, f);
                } else {
                    self.send_like(&s, f);
                }
            }
            StepGen::Neighbor {
                kind,
                zone,
                iface,
                host,
            } => {
                let zone = zone % self.policy().zones.len() as u8 + 1;
                let (ifname, vlan) = self.zone_iface(zone, *iface);
                let tags = if vlan == 0 { vec![] } else { vec![vlan] };
                let own: Ipv6Addr = format!("fe80::ff:fe00:{host:x}").parse().unwrap();
                let global = self.addr(
                    AddrGen::Own(
                        *host,
                        HostGen {
                            anchor: Some(*host),
                            low: 1,
                        },
                    ),
                    true,
                    zone,
                );
                let nd = |dst: IpAddr, ty: u8, hop: u8| {
                    Frame::new(IpAddr::V6(own), dst)
                        .icmp(ty, 0, 0)
                        .hop_limit(hop)
                };
                let frame = match kind % 7 {
                    0 => None,
                    1 => Some(nd("ff02::1:ff00:1".parse().unwrap(), 135, 255)),
                    2 => Some(nd("fe80::1".parse().unwrap(), 136, 255)),
                    3 => Some(nd("ff02::2".parse().unwrap(), 133, 255)),
                    4 => Some(nd(global, 135, 255)),
                    5 => Some(nd("ff02::1:ff00:1".parse().unwrap(), 135, 64)),
                    _ => Some(nd("ff02::1".parse().unwrap(), 134, 255)),
                };
                let bytes = match frame {
                    Some(f) => {
                        let mut f = f;
                        f.vlans = tags;
                        f.bytes()
                    }
                    None => {
                        let mut b = if kind % 2 == 0 {
                            common::frames::arp()
                        } else {
                            common::frames::non_ip()
                        };
                        if vlan != 0 {
                            let mut tag = 0x8100u16.to_be_bytes().to_vec();
                            tag.extend_from_slice(&vlan.to_be_bytes());
                            b.splice(12..12, tag);
                        }
                        b
                    }
                };
                self.ops.push(Op::Send {
                    iface: ifname,
                    bytes,
                });
            }
            StepGen::Advance(k) => {
                if self.advances < MAX_ADVANCES {
                    self.advances += 1;
                    self.ops.push(Op::Advance(
                        ADVANCES_MS[*k as usize % ADVANCES_MS.len()] * 1_000_000,
                    ));
                }
            }
            StepGen::Reload => {
                if self.reloads < MAX_RELOADS {
                    self.reloads += 1;
                    self.cur = 1 - self.cur;
                    self.ops.push(Op::Reload(self.cur));
                }
            }
            StepGen::Truncate { back } => {
                if let Some(s) = self.nth_back(*back) {
                    self.ops.push(Op::Cuts {
                        iface: s.iface,
                        bytes: s.bytes,
                    });
                }
            }
        }
    }
}

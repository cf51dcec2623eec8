//! Strategies.

use super::*;

pub(crate) fn host() -> BoxedStrategy<HostGen> {
    prop_oneof![
        3 => (any::<u8>(), 0u128..4).prop_map(|(a, low)| HostGen { anchor: Some(a), low }),
        1 => any::<u128>().prop_map(|low| HostGen { anchor: None, low }),
    ]
    .boxed()
}

pub(crate) fn zone_gen() -> BoxedStrategy<ZoneGen> {
    let net = (any::<bool>(), any::<u8>(), any::<u8>()).prop_map(|(v6, anchor, len)| NetGen {
        v6,
        anchor,
        len,
    });
    (
        vec(any::<u8>(), 1..=2),
        vec(net, 1..=3),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(slots, nets, default4, default6, critical, vlan_field)| ZoneGen {
                slots,
                nets,
                default4,
                default6,
                critical,
                vlan_field,
            },
        )
        .boxed()
}

pub(crate) fn rule_gen() -> BoxedStrategy<RuleGen> {
    let port = (0u8..14, any::<u8>(), any::<u16>()).prop_map(|(pick, span, raw)| PortGen {
        pick,
        span,
        raw,
    });
    let cidr = (any::<u8>(), any::<u8>(), host()).prop_map(|(net, extra, host)| CidrGen {
        net,
        extra,
        host,
    });
    (
        any::<u8>(),
        any::<u8>(),
        0u8..5,
        vec(port, 0..=3),
        vec(cidr.clone(), 0..=2),
        vec(cidr, 0..=2),
        prop_oneof![3 => Just(vec![]), 1 => vec(0u8..3, 1..=2)],
        0u8..3,
    )
        .prop_map(
            |(from, to, proto, ports, sources, dests, macs, mode)| RuleGen {
                from,
                to,
                proto,
                ports,
                sources,
                dests,
                macs,
                mode,
            },
        )
        .boxed()
}

/// Mostly up to 5 zones and 8 rules; sometimes 2–3 zones under 4–14 rules, where rules
/// overlap (candidate lists, MAC-bound and audit rules in front of enforcing ones).
pub(crate) fn policy_gen() -> BoxedStrategy<PolicyGen> {
    let shape = |zones: std::ops::RangeInclusive<usize>, rules: std::ops::RangeInclusive<usize>| {
        (
            vec(zone_gen(), zones),
            vec(rule_gen(), rules),
            prop::bool::weighted(0.25),
            any::<(bool, bool, bool)>(),
        )
            .prop_map(|(zones, rules, audit, defaults)| PolicyGen {
                zones,
                rules,
                audit,
                defaults,
            })
    };
    prop_oneof![3 => shape(2..=5, 0..=8), 1 => shape(2..=3, 4..=14)].boxed()
}

pub(crate) fn mut_gen() -> BoxedStrategy<MutGen> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        0u8..3,
        prop::bool::weighted(0.25),
        policy_gen(),
    )
        .prop_map(|(keep, flip, rotate, add, new_zones, alt)| MutGen {
            keep,
            flip,
            rotate,
            add,
            new_zones,
            alt,
        })
        .boxed()
}

pub(crate) fn addr_gen(src: bool) -> BoxedStrategy<AddrGen> {
    let (own, rsrc, rdst) = if src { (10, 4, 1) } else { (1, 1, 4) };
    prop_oneof![
        own => (any::<u8>(), host()).prop_map(|(n, h)| AddrGen::Own(n, h)),
        3 => (any::<u8>(), any::<u8>(), host()).prop_map(|(z, n, h)| AddrGen::Zone(z, n, h)),
        rsrc => (any::<u8>(), any::<u8>(), host()).prop_map(|(r, i, h)| AddrGen::RuleSrc(r, i, h)),
        rdst => (any::<u8>(), any::<u8>(), host()).prop_map(|(r, i, h)| AddrGen::RuleDst(r, i, h)),
        1 => any::<u8>().prop_map(AddrGen::Special),
        1 => any::<u128>().prop_map(AddrGen::Random),
    ]
    .boxed()
}

pub(crate) fn flags() -> BoxedStrategy<u8> {
    prop_oneof![
        Just(ACK),
        Just(SYN),
        Just(SYN | ACK),
        Just(FIN | ACK),
        Just(RST),
        Just(RST | ACK),
        any::<u8>()
    ]
    .boxed()
}

pub(crate) fn back() -> BoxedStrategy<u8> {
    prop_oneof![3 => 0u8..3, 1 => any::<u8>()].boxed()
}

pub(crate) fn frag_id() -> BoxedStrategy<u32> {
    prop_oneof![3 => 0u32..4, 1 => any::<u32>()].boxed()
}

pub(crate) fn frag_offset() -> BoxedStrategy<u16> {
    prop_oneof![
        Just(2u16),
        Just(1),
        Just(5),
        Just(185),
        Just(0x1fff),
        any::<u16>()
    ]
    .boxed()
}

pub(crate) fn pkt_gen() -> BoxedStrategy<PktGen> {
    let ingress = prop_oneof![
        9 => (any::<u8>(), any::<u8>()).prop_map(|(zone, iface)| Ingress::Zone { zone, iface }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(iface, vlan)| Ingress::Pool { iface, vlan }),
    ];
    let port = prop_oneof![
        4 => (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(r, i, o)| PortPick::Rule(r, i, o)),
        2 => any::<u8>().prop_map(PortPick::Common),
        1 => any::<u16>().prop_map(PortPick::Random),
    ]
    .boxed();
    let l4 = prop_oneof![
        5 => (any::<u16>(), port.clone(), flags(), prop_oneof![8 => Just(0u8), 1 => 1u8..=10])
            .prop_map(|(sport, dport, flags, opt_words)| L4Gen::Tcp { sport, dport, flags, opt_words }),
        4 => (any::<u16>(), port).prop_map(|(sport, dport)| L4Gen::Udp { sport, dport }),
        3 => (any::<u8>(), prop_oneof![4 => Just(0u8), 1 => any::<u8>()], any::<u16>())
            .prop_map(|(ty, code, id)| L4Gen::Icmp { ty, code, id }),
        1 => (any::<u8>(), 0u8..40).prop_map(|(proto, len)| L4Gen::Other { proto, len }),
    ];
    let routing = prop_oneof![3 => Just((0u8, 0u8)), 1 => (0u8..5, 0u8..4), 1 => any::<(u8, u8)>()];
    let ext = (
        prop_oneof![Just(0u8), Just(43), Just(60), Just(51)],
        prop_oneof![6 => Just(0u8), 2 => 1u8..4, 1 => 4u8..40],
        routing,
    )
        .prop_map(|(kind, len, routing)| ExtGen { kind, len, routing });
    let option = (
        prop_oneof![
            Just(1u8),
            Just(0),
            Just(131),
            Just(137),
            Just(7),
            Just(68),
            any::<u8>()
        ],
        prop_oneof![4 => Just(7u8), 1 => Just(3), 1 => Just(11), 1 => 0u8..3, 1 => any::<u8>()],
        prop_oneof![3 => Just(4u8), 1 => any::<u8>()],
    );
    let v4_opts = prop_oneof![
        6 => Just(V4Opts::Nops(0)),
        1 => (1u8..=10).prop_map(V4Opts::Nops),
        2 => vec(option, 1..=4).prop_map(V4Opts::List),
    ];
    let frag = prop_oneof![
        8 => Just(FragGen::None),
        2 => frag_id().prop_map(FragGen::First),
        1 => (frag_offset(), any::<bool>(), frag_id()).prop_map(|(offset, more, id)| FragGen::Later { offset, more, id }),
        1 => frag_id().prop_map(FragGen::Atomic),
    ];
    let shape = (
        prop_oneof![8 => Just(vec![]), 2 => vec(any::<u16>(), 1..=2)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        any::<u8>(),
        v4_opts,
        prop_oneof![6 => Just(vec![]), 3 => vec(ext.clone(), 1..=3), 1 => vec(ext, 4..=8)],
        frag,
        any::<u8>(),
        prop_oneof![6 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![9 => Just(None), 1 => (any::<u16>(), 1u8..).prop_map(Some)],
        prop::bool::weighted(0.1),
        prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
    )
        .prop_map(
            |(
                inner_tags,
                qinq,
                prio_tag,
                pcp,
                v4_opts,
                exts,
                frag,
                frag_pos,
                pad,
                corrupt,
                hop255,
                payload,
            )| Shape {
                inner_tags,
                qinq,
                prio_tag,
                pcp,
                v4_opts,
                exts,
                frag,
                frag_pos,
                pad,
                corrupt,
                hop255,
                payload,
            },
        );
    let target =
        (any::<u8>(), any::<u8>(), host(), any::<u8>()).prop_map(|(rule, pick, host, perturb)| {
            Target {
                rule,
                pick,
                host,
                perturb,
            }
        });
    (
        prop_oneof![2 => Just(None), 3 => target.prop_map(Some)],
        ingress,
        prop::bool::weighted(0.4),
        addr_gen(true),
        addr_gen(false),
        prop_oneof![3 => 0u8..3, 2 => 3u8..6, 1 => any::<u8>()],
        l4,
        shape,
    )
        .prop_map(|(target, ingress, v6, src, dst, mac, l4, shape)| PktGen {
            target,
            ingress,
            v6,
            src,
            dst,
            mac,
            l4,
            shape,
        })
        .boxed()
}

pub(crate) fn step_gen() -> BoxedStrategy<StepGen> {
    prop_oneof![
        36 => pkt_gen().prop_map(StepGen::Send),
        12 => (pkt_gen(), 0u8..5).prop_map(|(pkt, close)| StepGen::Handshake { pkt, close }),
        14 => (back(), flags(), any::<u8>()).prop_map(|(back, flags, via)| StepGen::Reply { back, flags, via }),
        8 => (back(), flags()).prop_map(|(back, flags)| StepGen::Again { back, flags }),
        10 => (back(), any::<bool>(), any::<u8>(), prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 0u8..3, prop_oneof![6 => Just(0u8), 1 => any::<u8>()])
            .prop_map(|(back, reply_dir, ty, code, router, cut)| StepGen::IcmpError { back, reply_dir, ty, code, router, cut }),
        6 => (pkt_gen(), frag_id(), any::<u8>()).prop_map(|(pkt, id, n)| StepGen::Fragmented { pkt, id, n }),
        6 => (back(), frag_offset(), any::<bool>(), any::<u8>())
            .prop_map(|(back, offset, more, variant)| StepGen::LaterFrag { back, offset, more, variant }),
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(kind, zone, iface, host)| StepGen::Neighbor { kind, zone, iface, host }),
        3 => any::<u8>().prop_map(StepGen::Advance),
        2 => Just(StepGen::Reload),
        2 => back().prop_map(|back| StepGen::Truncate { back }),
    ]
    .boxed()
}

pub(crate) fn case_gen() -> impl Strategy<Value = Case> {
    (policy_gen(), mut_gen(), vec(step_gen(), 1..=96)).prop_map(|(policy, mutation, steps)| Case {
        policy,
        mutation,
        steps,
    })
}

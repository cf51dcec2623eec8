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

mod generator;
mod policies;
mod runs;

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

use generator::*;
use policies::*;
use runs::*;

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

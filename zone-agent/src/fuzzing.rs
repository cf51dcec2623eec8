//! Fuzz and regression entry points: the bodies of the cargo-fuzz targets in `fuzz/`, shared
//! with `tests/fuzz_corpus.rs`, which replays every committed corpus and regression input
//! through them in the ordinary test run. Each takes arbitrary bytes and panics when a
//! property the parsers promise does not hold, so a regression input checks exactly what the
//! fuzzer checked.
//!
//! - [`policy_loader`]: bytes → policy loader (parse, validate, lint) → `compile`. Never a
//!   panic; a rejection carries at least one error; every diagnostic points at a real line and
//!   column of the text and says what is wrong and how to fix it.
//! - [`frame_parser`]: bytes → a few Ethernet frames → the model's frame parser and the model
//!   itself, under a fixed policy. Never a panic; a parse reads only bytes inside the frame;
//!   every decision is counted and names rules and zones that exist.

use std::path::Path;
use std::sync::OnceLock;

use ipnet::IpNet;
use zone_agent_common::{
    DropReason, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
    PassReason,
};

use crate::policy::frame::{self, Parsed};
use crate::policy::model::FailsafeEntry as Resolved;
use crate::policy::model::{
    Decision, Frag, Model, Outcome, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, Packet, TCP_ACK,
};
use crate::policy::validate::{self, OfflineEnvironment};
use crate::policy::{Diagnostic, Diagnostics, Policy, compile};

// === policy_loader ===

/// The file name diagnostics carry.
const POLICY_FILE: &str = "fuzz.toml";

/// The policy loader on `data` as a file's contents, and again on its lossy UTF-8 decoding
/// when it is not UTF-8 (so that the rest of such an input still reaches the parser).
pub fn policy_loader(data: &[u8]) {
    let path = Path::new(POLICY_FILE);
    let loaded = validate::check_bytes(path, data, &OfflineEnvironment);
    match std::str::from_utf8(data) {
        Ok(text) => check_load(text, loaded),
        Err(e) => {
            let diags = loaded.expect_err("a file that is not UTF-8 was accepted");
            let prefix = std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or_default();
            assert_eq!(diags.len(), 1, "{diags}");
            let lines = Lines::new(prefix);
            lines.assert_located(&diags.0[0]);
            let text = String::from_utf8_lossy(data);
            check_load(&text, validate::check_str(path, &text, &OfflineEnvironment));
        }
    }
}

fn check_load(text: &str, loaded: Result<(Policy, Vec<Diagnostic>), Diagnostics>) {
    let lines = Lines::new(text);
    match loaded {
        Ok((policy, warnings)) => {
            for w in &warnings {
                assert!(!w.is_error(), "an accepted policy came with an error: {w}");
                lines.assert_located(w);
            }
            // Compiling may still refuse (map capacity), but only with a located error.
            if let Err(diags) = compile::compile(&policy) {
                assert!(
                    diags.has_errors(),
                    "compile refused without an error: {diags}"
                );
                for d in &diags {
                    lines.assert_located(d);
                }
            }
        }
        Err(diags) => {
            assert!(
                diags.has_errors(),
                "a policy was rejected without an error: {diags}"
            );
            for d in &diags {
                lines.assert_located(d);
            }
        }
    }
}

/// The lines of a text, to check that a diagnostic points inside it.
struct Lines<'a>(Vec<&'a str>);

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        // `split`, not `lines`: a final newline opens a last (empty) line a location may name.
        Lines(text.split('\n').collect())
    }

    /// 1-based line and column inside the text (a column may stand just past a line's last
    /// character: "unexpected end of line"), plus a message and, for an error, a help text.
    #[track_caller]
    fn assert_located(&self, d: &Diagnostic) {
        assert!(
            d.line >= 1 && d.col >= 1,
            "diagnostic without a location: {d}"
        );
        let line = self.0.get(d.line as usize - 1);
        let width = line.map(|l| l.chars().count());
        assert!(
            width.is_some_and(|w| d.col as usize <= w + 1),
            "diagnostic at {}:{} is outside the text ({} lines, that line has {width:?} characters): {d}",
            d.line,
            d.col,
            self.0.len(),
        );
        assert!(
            !d.message.trim().is_empty(),
            "diagnostic without a message: {d}"
        );
        if d.is_error() {
            assert!(
                d.help.as_deref().is_some_and(|h| !h.trim().is_empty()),
                "error without help: {d}"
            );
        }
    }
}

// === frame_parser ===

/// The policy the frames are decided under: four zones (one on two VLANs of a trunk), rules
/// with ports, address lists, a source MAC, audit mode, every protocol. `MODE` and `FRAGS`
/// are filled in so that a reload (see [`frame_parser`]) changes what is decided.
const FRAME_POLICY: &str = include_str!("fuzzing/frame_policy.toml");

/// Ingress interfaces a frame can be given: the policy's, a trunk whose untagged traffic
/// belongs to no zone, and one the policy does not know.
pub const FRAME_IFACES: [&str; 5] = ["fz-myn", "fz-lg", "fz-inet", "fz-trunk", "fz-other"];

/// Frames one input holds at most (bounds the work of one run).
pub const MAX_FRAMES: usize = 8;

/// Time steps a record can advance the clock by: within a flow, and past every lifetime.
const STEPS_NS: [u64; 4] = [1_000_000, 1_000_000_000, 120_000_000_000, 3_600_000_000_000];

/// The two policies a run alternates between: enforce + fragments denied, audit + allowed.
fn frame_policies() -> &'static [Policy; 2] {
    static POLICIES: OnceLock<[Policy; 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        [("enforce", "deny"), ("audit", "allow")].map(|(mode, frags)| {
            let text = FRAME_POLICY.replace("MODE", mode).replace("FRAGS", frags);
            match validate::parse_str(Path::new("frame-policy.toml"), &text) {
                Ok((policy, _)) => policy,
                Err(diags) => panic!("the fuzzing policy is invalid:\n{diags}"),
            }
        })
    })
}

/// A failsafe SSH flow to the gateway from a management subnet, as the agent installs from
/// its configuration: the model checks it before the policy.
fn failsafe() -> Vec<Resolved> {
    let net = |s: &str| s.parse::<IpNet>().expect("valid network");
    vec![Resolved {
        name: "mgmt-ssh".into(),
        interfaces: vec![("fz-lg".into(), 2)],
        proto: PROTO_TCP,
        ports: vec![(22, 22)],
        sources: vec![net("10.20.99.0/24"), net("fd20:99::/64")],
        destinations: vec![
            "10.20.0.1".parse().expect("address"),
            "fd20::1".parse().expect("address"),
        ],
    }]
}

/// One frame of an input and how it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ifname: &'static str,
    pub frame: Vec<u8>,
    /// Nanoseconds since the previous frame.
    pub step_ns: u64,
    /// Switch to the other policy before deciding this frame.
    pub reload: bool,
}

/// Splits an input into records: a control byte, a big-endian u16 length and that many frame
/// bytes (fewer at the end of the input), at most [`MAX_FRAMES`]. The control byte picks, by
/// bits: 0–2 the ingress interface, 3–4 VLAN tags inserted after the MAC addresses (none,
/// 802.1Q 100, 802.1Q 200, 802.1ad 100 + 802.1Q 200), 5–6 the clock step, 7 a reload. Tags
/// are inserted so that the trunk's zones are a byte away for the fuzzer, not a 4-byte guess.
pub fn records(mut data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some((&ctl, rest)) = data.split_first() {
        if out.len() == MAX_FRAMES {
            break;
        }
        let (body, tail) = match rest {
            [hi, lo, body @ ..] => {
                body.split_at(usize::from(u16::from_be_bytes([*hi, *lo])).min(body.len()))
            }
            _ => (rest, &[][..]),
        };
        data = tail;
        let tags: &[(u16, u16)] = match (ctl >> 3) & 3 {
            0 => &[],
            1 => &[(0x8100, 100)],
            2 => &[(0x8100, 200)],
            _ => &[(0x88a8, 100), (0x8100, 200)],
        };
        let mut frame = body.to_vec();
        if frame.len() >= 12 {
            let inserted: Vec<u8> = tags
                .iter()
                .flat_map(|(tpid, tci)| [tpid.to_be_bytes(), tci.to_be_bytes()])
                .flatten()
                .collect();
            frame.splice(12..12, inserted);
        }
        out.push(Record {
            ifname: FRAME_IFACES[usize::from(ctl & 7) % FRAME_IFACES.len()],
            frame,
            step_ns: STEPS_NS[usize::from((ctl >> 5) & 3)],
            reload: ctl & 0x80 != 0,
        });
    }
    out
}

/// The records of `data`, each parsed (with the checks of [`check_parse`]) and decided by one
/// model in turn, so that flows, replies, related errors and fragments meet their followers.
/// Returns the decisions (the corpus test checks which outcomes the corpus reaches).
pub fn frame_parser(data: &[u8]) -> Vec<Decision> {
    let policies = frame_policies();
    let mut which = 0;
    let mut model = Model::new(policies[which].clone());
    model.set_failsafe(failsafe());
    let mut now = 0u64;
    let records = records(data);
    let mut decisions = Vec::with_capacity(records.len());
    for r in &records {
        if r.reload {
            which = 1 - which;
            model.reload(policies[which].clone());
        }
        now += r.step_ns;
        let parsed = check_parse(&r.frame, r.ifname, &model);
        let stateless = match &parsed {
            Ok(Parsed::Ip(p)) => {
                check_flow_opens_both_ways(model.policy(), p);
                Some(model.explain(p))
            }
            _ => None,
        };
        let d = frame::decide(&mut model, &r.frame, r.ifname, now);
        check_decision(&d, model.policy());
        match parsed {
            Err(reason) => assert_eq!(d.outcome, Outcome::Drop(reason), "{r:?}"),
            Ok(Parsed::Neighbor) => {
                assert_eq!(d.outcome, Outcome::Pass(PassReason::Neighbor), "{r:?}")
            }
            Ok(Parsed::Ip(_)) => {}
        }
        // State only ever lets more through: a drop is the drop the policy alone gives, and
        // what the policy alone passes still passes.
        if let Some(e) = stateless {
            match d.outcome {
                Outcome::Drop(_) => assert_eq!(
                    (d.outcome, d.from, d.to),
                    (e.outcome, e.from, e.to),
                    "{r:?}"
                ),
                Outcome::Pass(_) => {}
            }
            if matches!(e.outcome, Outcome::Pass(_)) {
                assert!(
                    matches!(d.outcome, Outcome::Pass(_)),
                    "explain passes, decide drops: {e:?} {d:?} {r:?}"
                );
            }
        }
        decisions.push(d);
    }
    // Every decision is counted, once.
    assert_eq!(model.counters().packets(), records.len() as u64);
    decisions
}

/// `parse(frame)` with what must hold of any frame: a parsed packet is self-consistent; a
/// prefix of the frame parses the same or as malformed, and bytes appended to a frame that was
/// not malformed change nothing but the length (so no read left the frame, and none of the
/// header checks depends on the frame's length beyond that). Every packet a prefix parses to
/// is explained by the model as well.
pub fn check_parse(frame: &[u8], ifname: &str, model: &Model) -> Result<Parsed, DropReason> {
    let full = frame::parse(frame, ifname);
    if let Ok(Parsed::Ip(p)) = &full {
        assert_eq!(p.len, frame.len() as u64);
        assert_eq!(p.ifname, ifname);
        assert!(p.vlan <= 0x0fff, "VLAN id {} has more than 12 bits", p.vlan);
        assert_eq!(
            p.src.is_ipv4(),
            p.dst.is_ipv4(),
            "addresses of two families: {p:?}"
        );
        let family_icmp = if p.src.is_ipv4() {
            PROTO_ICMP
        } else {
            PROTO_ICMPV6
        };
        if p.frag == Frag::Later || !p.l4 {
            assert!(
                !p.l4 || p.frag != Frag::Later,
                "a later fragment with an L4 header: {p:?}"
            );
            assert_eq!(
                (p.sport, p.dport, p.tcp_flags, p.icmp_type),
                (0, 0, 0, 0),
                "L4 fields without L4: {p:?}"
            );
            assert_eq!(p.inner, None, "a quote without an ICMP header: {p:?}");
        }
        if p.tcp_flags != 0 {
            assert_eq!(p.proto, PROTO_TCP, "{p:?}");
        }
        if p.icmp_type != 0 {
            assert_eq!(p.proto, family_icmp, "{p:?}");
        }
        if let Some(inner) = &p.inner {
            assert_eq!(p.proto, family_icmp, "a quote outside an ICMP error: {p:?}");
            assert_eq!(
                inner.src.is_ipv4(),
                p.src.is_ipv4(),
                "a quote of the other family: {p:?}"
            );
            assert_eq!(inner.src.is_ipv4(), inner.dst.is_ipv4(), "{p:?}");
        }
    }

    let same_but_len = |r: &Result<Parsed, DropReason>, len: usize| match (r, &full) {
        (Ok(Parsed::Ip(a)), Ok(Parsed::Ip(b))) => {
            let mut a = a.clone();
            let ok = a.len == len as u64;
            a.len = b.len;
            ok && a == *b
        }
        (a, b) => a == b,
    };
    for n in 0..frame.len() {
        let r = frame::parse(&frame[..n], ifname);
        assert!(
            r == Err(DropReason::Malformed) || same_but_len(&r, n),
            "the first {n} of {} bytes parse as {r:?}, the whole frame as {full:?}",
            frame.len()
        );
        if let Ok(Parsed::Ip(p)) = &r {
            check_decision(&model.explain(p), model.policy());
        }
    }
    if full != Err(DropReason::Malformed) {
        let mut padded = frame.to_vec();
        padded.extend_from_slice(&[0xa5; 16]);
        let r = frame::parse(&padded, ifname);
        assert!(
            same_but_len(&r, padded.len()),
            "16 bytes of padding turn {full:?} into {r:?}"
        );
    }
    full
}

/// SPEC §3: a packet a rule allows opens a flow; its reply, arriving on the destination
/// zone's interface, passes, and so does an ICMP error about it sent back by the destination.
/// Checked on a fresh model, so that nothing but `p` made the flow.
pub fn check_flow_opens_both_ways(policy: &Policy, p: &Packet) {
    let mut m = Model::new(policy.clone());
    let d = m.decide(p, 0);
    if d.outcome != Outcome::Pass(PassReason::Rule) || !p.flowable() || p.tcp_rst() {
        return;
    }
    let zone = &policy.zones[usize::from(d.to) - 1];
    let Some(iface) = zone.interfaces.first() else {
        return;
    };
    let (ifname, vlan) = (iface.name.clone(), iface.vlan.unwrap_or(0));
    let icmp = if p.src.is_ipv4() {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };

    let mut error = Packet::new(&ifname, p.dst, p.src, icmp, 0, 0);
    error.vlan = vlan;
    error.icmp_type = if p.src.is_ipv4() { 3 } else { 1 };
    error.inner = Some(p.tuple());
    let e = m.decide(&error, 1);
    assert_eq!(
        e.outcome,
        Outcome::Pass(PassReason::Related),
        "an ICMP error about {p:?} gives {e:?}"
    );

    let mut reply = p.clone();
    (reply.ifname, reply.vlan) = (ifname, vlan);
    (reply.src, reply.dst, reply.sport, reply.dport) = (p.dst, p.src, p.dport, p.sport);
    reply.tcp_flags = if p.proto == PROTO_TCP { TCP_ACK } else { 0 };
    reply.icmp_type = match p.icmp_type {
        ICMP_ECHO_REQUEST if p.proto == PROTO_ICMP => ICMP_ECHO_REPLY,
        ICMP_ECHO_REPLY if p.proto == PROTO_ICMP => ICMP_ECHO_REQUEST,
        ICMPV6_ECHO_REQUEST => ICMPV6_ECHO_REPLY,
        ICMPV6_ECHO_REPLY => ICMPV6_ECHO_REQUEST,
        other => other,
    };
    (reply.frag, reply.inner) = (Frag::None, None);
    let r = m.decide(&reply, 2);
    assert_eq!(
        r.outcome,
        Outcome::Pass(PassReason::Reply),
        "the reply {reply:?} to {p:?} gives {r:?}"
    );
}

/// What a decision may say: rules and zones that exist, a rule exactly when state or a rule
/// passed the packet, and for a rule or its flow, that rule's zones.
pub fn check_decision(d: &Decision, policy: &Policy) {
    let zones = policy.zones.len();
    assert!(
        usize::from(d.from) <= zones && usize::from(d.to) <= zones,
        "zone ids out of range: {d:?}"
    );
    let by_rule = matches!(
        d.outcome,
        Outcome::Pass(
            PassReason::Rule
                | PassReason::Established
                | PassReason::Reply
                | PassReason::Related
                | PassReason::Fragment
        )
    );
    assert_eq!(
        d.rule.is_some(),
        by_rule,
        "rule and outcome disagree: {d:?}"
    );
    if let Some(r) = d.rule {
        let rule = policy
            .rules
            .get(r)
            .unwrap_or_else(|| panic!("rule {r} does not exist: {d:?}"));
        let (from, to) = (Policy::zone_id(rule.from), Policy::zone_id(rule.to));
        match d.outcome {
            Outcome::Pass(PassReason::Rule | PassReason::Established) => {
                assert_eq!(
                    (d.from, d.to),
                    (from, to),
                    "rule {r} between other zones: {d:?}"
                );
            }
            Outcome::Pass(PassReason::Reply) => {
                assert_eq!(
                    (d.from, d.to),
                    (to, from),
                    "reply of rule {r} between other zones: {d:?}"
                );
            }
            _ => {}
        }
    }
    if d.audit {
        assert!(by_rule, "an audit pass without a rule: {d:?}");
    }
    if matches!(
        d.outcome,
        Outcome::Drop(
            DropReason::Malformed
                | DropReason::HeaderLimit
                | DropReason::NonIp
                | DropReason::UnknownInterface
        ) | Outcome::Pass(PassReason::Neighbor | PassReason::Failsafe)
    ) {
        assert_eq!(
            (d.from, d.to),
            (0, 0),
            "an early decision with zones: {d:?}"
        );
    }
}

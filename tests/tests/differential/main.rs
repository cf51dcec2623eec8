//! Differential property test: the loaded XDP program, run with BPF_PROG_TEST_RUN, against
//! the reference model (`policy::frame` + `policy::model::Model`) on random policies and
//! random packet sequences.
//!
//! A case is a policy (2–5 zones with nested IPv4/IPv6 prefixes, sometimes a default-route
//! internet zone, tagged and untagged interfaces, 0–14 rules, every `mode` and `defaults`
//! setting), a mutation of it to reload to, and a sequence of steps: frames biased toward the
//! policy (addresses from the zones and rule CIDRs, ports and MACs from the rules), TCP
//! handshakes and teardowns, replies, ICMP errors quoting earlier packets, later fragments of
//! earlier datagrams, every truncation of an earlier frame, idle time past the flow
//! lifetimes, and reloads. Policies are TOML text that goes through the real
//! parse → validate → compile → `Datapath::apply` path. After every frame and every other
//! step, both sides must agree on the XDP action, on ALL counters (drop and pass reasons,
//! zone pairs per verdict, rules; packets and bytes), on the flow table and on the number of
//! fragment entries.
//!
//! Run control: `ZA_DIFF_SEED` (u64, decimal or 0x-hex), `ZA_DIFF_CASES` and
//! `ZA_DIFF_SHRINK_SECS` (default 180). A failure is shrunk by proptest, then cut down to
//! the operations it needs; the shrunk case is printed (policy TOML, every frame in hex, both
//! sides' decisions) and written to `tests/regressions/differential/`, in the text format of
//! `case_text`. Every file there is replayed before the random cases, on every run; a file's
//! `#` lines say what it found.
//!
//! Runs in a private network namespace (a dedicated thread unshares its own), with veth
//! interfaces standing in for the zone interfaces, like `prog_test_run.rs`.

#[path = "../common/mod.rs"]
mod common;
mod engine;
mod frames;
mod policies;
mod regressions;
mod resolver;
mod strategies;

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Instant,
};

use common::{
    frames::{ACK, FIN, Frame, ICMP, ICMPV6, RST, SYN, TCP, UDP},
    xdp,
};
use ipnet::IpNet;
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner},
};
use zone_agent::{
    datapath::{
        Datapath,
        stats::{GlobalCounters, monotonic_coarse_ns},
    },
    policy::{
        Policy, Protocol, compile, frame as mframe,
        model::{self, Decision, FlowCounts, FlowInfo, Model, ModelCounters},
        validate::{self, OfflineEnvironment},
    },
};
use zone_agent_common::{
    Counter, DropReason, FAMILY_V4, FLOW_AUDIT, FLOW_REPLIED, FlowEvent, FlowKey, FlowState,
    FragKey, FragState, NS, PassReason, Verdict,
};

use engine::*;
use frames::*;
use policies::*;
use regressions::*;
use strategies::*;

/// Interfaces the test creates; zones take (interface, VLAN) slots from them, and frames
/// also arrive on slots no zone has.
const IFACES: [&str; 5] = ["zd0", "zd1", "zd2", "zd3", "zd4"];
const ZONE_VLANS: [u16; 3] = [0, 10, 20];
const ANY_VLANS: [u16; 6] = [0, 10, 20, 30, 1, 4094];
const MACS: [[u8; 6]; 3] = [
    [0x02, 0, 0, 0, 0, 0xa1],
    [0x02, 0, 0, 0, 0, 0xa2],
    [0x02, 0, 0, 0, 0, 0xa3],
];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const PORTS: [u16; 10] = [22, 25, 53, 80, 123, 443, 1024, 8000, 8080, 65535];
const SPANS: [u16; 6] = [0, 0, 1, 10, 1000, 65535];
const LENS4: [u8; 8] = [8, 15, 16, 23, 24, 26, 28, 32];
const LENS6: [u8; 8] = [16, 32, 47, 48, 63, 64, 120, 128];
const EXTRA_LEN: [u8; 7] = [0, 1, 4, 8, 16, 32, 128];
const ICMP4_TYPES: [u8; 10] = [8, 0, 3, 11, 12, 13, 5, 4, 14, 9];
const ICMP6_TYPES: [u8; 10] = [128, 129, 1, 2, 3, 4, 133, 135, 136, 143];
/// GRE, IPIP, IPv6-in-IPv4, ESP, SCTP, reserved, hop-by-hop number, ICMP and ICMPv6 numbers in
/// either family, TCP/UDP with whatever bytes follow.
const OTHER_PROTOS: [u8; 11] = [47, 4, 41, 50, 132, 255, 0, 1, 58, 6, 17];
/// Idle time steps, in ms: one just below and one just above each lifetime (10 s closing,
/// 30 s other flows and fragments, 60 s TCP opening, 120 s UDP, 7200 s TCP established).
/// Both sides read the same clock (CLOCK_MONOTONIC_COARSE, which `bpf_ktime_get_coarse_ns`
/// reads), the model right after the kernel's run, so they see the same instant unless a
/// clock tick falls in between (a few µs of a tick of milliseconds). The steps are whole
/// seconds plus 250 ms and a case takes at most `MAX_ADVANCES` of them, so an entry's idle
/// time is never a whole number of seconds, which every lifetime is, unless the real time
/// the case itself takes (mostly `apply`) makes up the rest: only that together with such a
/// tick could make the two sides judge one entry differently.
const ADVANCES_MS: [u64; 11] = [
    1_250, 9_250, 10_250, 29_250, 30_250, 59_250, 60_250, 119_250, 120_250, 7_199_250, 7_200_250,
];
const MAX_ADVANCES: usize = 3;
/// Each reload is a `Datapath::apply`, which costs a few hundred ms of map updates here.
const MAX_RELOADS: usize = 2;
/// Largest frame sent (BPF_PROG_TEST_RUN refuses frames beyond a page).
const MAX_FRAME: usize = 1514;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const DEFAULT_SEED: u64 = 0x5a0e_d1ff_2024_0001;
const DEFAULT_CASES: u32 = 200;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a u64")))
}

#[test]
fn xdp_agrees_with_model_on_random_cases() {
    let seed = env_u64("ZA_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("ZA_DIFF_CASES").map_or(DEFAULT_CASES, |c| c as u32);
    let started = Instant::now();
    let totals = xdp::in_private_netns(&IFACES, move || {
        let mut engine = Engine::new();
        replay_corpus(&mut engine);
        let engine = RefCell::new(engine);
        let config = Config {
            cases,
            failure_persistence: None,
            max_global_rejects: cases.saturating_mul(2).max(100),
            max_shrink_iters: 20_000,
            max_shrink_time: env_u64("ZA_DIFF_SHRINK_SECS").map_or(180_000, |s| s as u32 * 1000),
            ..Config::default()
        };
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            config,
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        );
        let result = runner.run(&case_gen(), |case| {
            let (policies, ops) = case.resolve().map_err(TestCaseError::fail)?;
            let result = engine.borrow_mut().run(&policies, &ops);
            match result {
                Ok(()) => Ok(()),
                Err(RunError::Reject(why)) => {
                    engine.borrow_mut().totals.rejected += 1;
                    Err(TestCaseError::reject(why))
                }
                Err(RunError::Mismatch(why)) => Err(TestCaseError::fail(why)),
            }
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, case)) => {
                let mut why = why.to_string();
                let text = match case.resolve() {
                    Ok((policies, ops)) => {
                        let ops = minimize(&mut engine.borrow_mut(), &policies, ops, &mut why);
                        case_text(&policies, &ops)
                    }
                    Err(e) => e,
                };
                let path = save_regression(seed, &text, &why);
                panic!(
                    "XDP program and model disagree (seed {seed:#x}); shrunk case saved to {}:\n{why}\n\n{text}",
                    path.display()
                );
            }
            Err(TestError::Abort(why)) => panic!("proptest aborted (seed {seed:#x}): {why}"),
        }
        engine.into_inner().totals
    });
    eprintln!(
        "differential: seed {seed:#x}: {} sequences ({} from the regression corpus), {} frames and {} truncations compared, \
         {} reloads, {} idle-time steps ({} skipped), {} generated policies rejected by compile, in {:.1?}",
        totals.cases,
        totals.corpus,
        totals.frames,
        totals.cuts,
        totals.reloads,
        totals.advances,
        totals.advances_skipped,
        totals.rejected,
        started.elapsed()
    );
    eprintln!(
        "differential: model decisions: {:?}; apply {:?}",
        totals.reasons, totals.apply_time
    );
}

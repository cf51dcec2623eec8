//! Per-packet cost of the loaded XDP program, measured with BPF_PROG_TEST_RUN against the
//! floor (a program of the same object that only returns XDP_DROP), in one run.
//!
//! Run by `cargo xtask bench` (root). Each frame is run `--repeat` times per sample; samples
//! of all frames are interleaved so that drift hits them alike; the median is reported.
//! Arguments: `[--repeat N] [--samples N] [--markdown FILE]`.

#[path = "../tests/common/frames.rs"]
mod frames;

use std::{net::IpAddr, process::Command};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use frames::{ACK, Frame, SYN};
use zone_agent::{
    datapath::Datapath,
    policy::{compile, validate},
};

const IFACES: [&str; 4] = ["zmyn", "zlg", "zinet", "ztrunk"];

const POLICY: &str = r#"
version = 1
[defaults]
intra_zone = "allow"
[[zones]]
name = "mynumber"
interfaces = ["zmyn"]
networks = ["10.10.0.0/16", "fd10::/48"]
criticality = "critical"
[[zones]]
name = "lgwan"
interfaces = ["zlg", "ztrunk.100"]
networks = ["10.20.0.0/16", "fd20::/48"]
[[zones]]
name = "internet"
interfaces = ["zinet"]
networks = ["0.0.0.0/0", "::/0"]
[[rules]]
name = "relay"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.5.10/32", "fd20::10/128"]
[[rules]]
name = "ping"
from = "lgwan"
to = "mynumber"
protocol = "icmp"
[[rules]]
name = "web"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80", "443"]
"#;

struct Case {
    what: &'static str,
    iface: &'static str,
    frame: Vec<u8>,
    /// XDP action the case must produce (a benchmark of the wrong path is worthless).
    action: u32,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn cases() -> Vec<Case> {
    let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
    let (a6, b6) = (ip("fd20::10"), ip("fd10::20"));
    const PASS: u32 = 2;
    const DROP: u32 = 1;
    let c = |what, iface, frame: Frame, action| Case { what, iface, frame: frame.bytes(), action };
    vec![
        c("allowed, established flow (TCP)", "zlg", Frame::new(a, b).tcp(40000, 443, ACK), PASS),
        c("allowed, reply (TCP)", "zmyn", Frame::new(b, a).tcp(443, 40000, ACK), PASS),
        c("allowed by rule, no flow (ICMP timestamp)", "zlg", Frame::new(a, b).icmp(13, 0, 0), PASS),
        c("denied, no rule (TCP SYN)", "zlg", Frame::new(a, b).tcp(40001, 23, SYN), DROP),
        c("denied, spoofed source", "zmyn", Frame::new(a, b).tcp(40002, 443, SYN), DROP),
        c("allowed, established flow (IPv6 TCP)", "zlg", Frame::new(a6, b6).tcp(40003, 443, ACK), PASS),
        c("allowed, established flow (VLAN 100)", "ztrunk", Frame::new(a, b).vlan(100).tcp(40004, 443, ACK), PASS),
    ]
}

fn ctx_for(iface: &str, len: usize) -> [u8; 24] {
    let ifindex = zone_agent::agent::ifindex(iface).unwrap_or_else(|| panic!("no interface {iface}"));
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

fn run(prog: &Xdp, iface: &str, frame: &[u8], repeat: u32) -> (u32, u128) {
    let ctx = ctx_for(iface, frame.len());
    let r = prog
        .test_run(TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), repeat, ..Default::default() })
        .expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.duration.as_nanos())
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repeat: u32 = arg(&args, "--repeat").map_or(200_000, |v| v.parse().expect("--repeat N"));
    let samples: usize = arg(&args, "--samples").map_or(7, |v| v.parse().expect("--samples N"));
    let markdown = arg(&args, "--markdown");

    // SAFETY: this process is single-threaded here; the namespace is ours alone.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {} (run as root)", std::io::Error::last_os_error());
    for name in IFACES {
        let peer = format!("{name}p");
        let ok = Command::new("ip").args(["link", "add", name, "type", "veth", "peer", "name", &peer]).status();
        assert!(ok.is_ok_and(|s| s.success()), "ip link add {name}");
        let _ = Command::new("ip").args(["link", "set", name, "up"]).status();
    }

    let (policy, _) = validate::check_str("bench.toml".as_ref(), POLICY, &validate::OfflineEnvironment).expect("valid policy");
    let compiled = compile::compile(&policy).expect("compiles");
    let mut dp = Datapath::load().expect("load the XDP program");
    dp.apply(&compiled, zone_agent::agent::ifindex).expect("apply the policy");

    let cases = cases();
    // Open the flows the "established" and "reply" cases belong to, with their SYNs.
    let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
    for (iface, f) in [
        ("zlg", Frame::new(a, b).tcp(40000, 443, SYN)),
        ("zlg", Frame::new(ip("fd20::10"), ip("fd10::20")).tcp(40003, 443, SYN)),
        ("ztrunk", Frame::new(a, b).vlan(100).tcp(40004, 443, SYN)),
    ] {
        assert_eq!(run(dp.program(), iface, &f.bytes(), 1).0, 2, "opening SYN must pass");
    }
    for c in &cases {
        let (action, _) = run(dp.program(), c.iface, &c.frame, 1);
        assert_eq!(action, c.action, "{}: wrong XDP action, the benchmark would measure another path", c.what);
    }

    let mut floor = Vec::new();
    let mut times: Vec<Vec<u128>> = vec![Vec::new(); cases.len()];
    for _ in 0..samples {
        let f = &cases[0];
        floor.push(run(dp.floor_program().expect("floor program"), f.iface, &f.frame, repeat).1);
        for (i, c) in cases.iter().enumerate() {
            times[i].push(run(dp.program(), c.iface, &c.frame, repeat).1);
        }
    }
    let floor = median(floor);
    let mut table = String::from("| frame | ns/packet (median) | × floor |\n|---|---:|---:|\n");
    table += &format!("| floor: `return XDP_DROP` | {floor} | 1.00 |\n");
    for (c, t) in cases.iter().zip(times) {
        let m = median(t);
        table += &format!("| {} | {m} | {:.2} |\n", c.what, m as f64 / floor.max(1) as f64);
    }
    println!("BPF_PROG_TEST_RUN, repeat {repeat}, median of {samples} interleaved samples\n\n{table}");
    if let Some(path) = markdown {
        std::fs::write(&path, table).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
}

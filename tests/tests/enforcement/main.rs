//! The real agent (`zone-agent run`) enforcing a three-zone policy on a lab gateway, checked
//! with real traffic the way an operator would check it: what passes, what is blocked, what
//! the counters say, what a reload (good or bad) changes, audit mode, and a clean stop.
//!
//! Every test builds its own lab (gateway + one host per zone) and starts its own agent in
//! the gateway namespace, so tests run in parallel. Needs root; `cargo xtask test` runs it
//! under `unshare --mount --net`.
//!
//! Blocked attempts are only meaningful against something that would answer: every blocked
//! attempt here goes to a listening server, and where it matters the server's log proves the
//! packet never reached it.

mod audit;
mod failsafe;
mod ipv6;
mod paths;
mod reloads;
mod restarts;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zone_agent_lab::agent::{self, METRICS_ADDR, Metrics, pin_dir, state_dir, write_policy};
use zone_agent_lab::fixture::OTHER_MAC;
use zone_agent_lab::{
    ChildGuard, Host, Lab, Signal, ThreeZones, add_addr, agent_bin, continuous, continuous_summary,
    scrape, set_mac, tcp_connect, tcp_echo, tcp_listen, udp_echo, udp_exchange, wait_until,
};

use restarts::*;

/// Bound for a reload to be counted.
const RELOAD_WAIT: Duration = Duration::from_secs(10);
/// Bound for the agent to exit after SIGTERM ("within a few seconds").
const AGENT_STOP: Duration = Duration::from_secs(5);
/// Per attempt that should succeed.
const T: Duration = Duration::from_secs(3);
/// Per attempt that should fail: no SYN retransmit (1 s) falls inside it.
const T_FAIL: Duration = Duration::from_millis(700);

/// The label value the agent gives a successful reload in
/// `zone_agent_policy_reloads_total{result}` (telemetry/metrics.rs).
const RELOAD_OK: &str = "success";
const RELOAD_ERROR: &str = "error";

// === the policy ===

/// The rules under test. Rule names are what `zone_agent_rule_packets_total{rule}` reports.
const RULES: &str = r#"[[rules]]
name = "relay-https"
description = "the LGWAN relay host only -> the マイナンバー系 server, HTTPS"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.0.10/32", "fd20::10/128"]
destinations = ["10.10.0.10/32", "fd10::10/128"]

[[rules]]
name = "admin-ssh"
description = "SSH to the マイナンバー系 from the admin terminal's NIC only"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["22"]
source_macs = ["02:00:00:00:20:10"]

[[rules]]
name = "dns-out"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["53"]

[[rules]]
name = "web-out"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80"]

[[rules]]
name = "ntp-trial"
description = "being trialled: counted as audit, passes"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["123"]
mode = "audit"
"#;

/// The policy under test: the lab's three zones (with labels) and [`RULES`]; `mode` is the
/// global mode.
fn policy(mode: &str) -> String {
    ThreeZones::policy()
        .comment("zone-agent enforcement tests: three zones behind one gateway.")
        .mode(mode)
        .labels()
        .rules(RULES)
        .build()
}

/// `text` with `from` replaced by `to`; panics if `from` does not occur (an edit that silently
/// changed nothing would make a reload test vacuous).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "policy edit: {from:?} not found");
    text.replacen(from, to, 1)
}

// === the lab and the agent ===

/// A lab with the three zone hosts and the agent enforcing `policy` in the gateway.
///
/// Field order is drop order: the agent stops before the lab goes.
struct Env {
    agent: ChildGuard,
    lab: Lab,
    /// マイナンバー利用事務系 host: 10.10.0.10, fd10::10, behind `zmyn`.
    my: Host,
    /// LGWAN接続系 host: 10.20.0.10, fd20::10, MAC 02:00:00:00:20:10, behind `zlgw`.
    lg: Host,
    /// インターネット接続系 host: 198.51.100.10, 2001:db8::10, behind `zinet`.
    inet: Host,
    policy: PathBuf,
}

impl Env {
    fn new(test: &str, policy_text: &str) -> Env {
        let mut lab = Lab::new(test);
        let ThreeZones { my, lg, inet } = ThreeZones::add(&mut lab);
        let policy = lab.dir().join("policy.toml");
        write_policy(&policy, policy_text);
        let agent = start_agent(&lab, &policy);
        Env {
            agent,
            lab,
            my,
            lg,
            inet,
            policy,
        }
    }

    fn gw(&self) -> &str {
        self.lab.gateway()
    }

    /// The metrics text; panics (with the agent's log) if /metrics does not answer.
    fn metrics(&self) -> Metrics {
        match scrape::metrics(&self.lab, self.gw(), METRICS_ADDR) {
            Some(text) => Metrics(text),
            None => panic!(
                "GET http://{METRICS_ADDR}/metrics in {} failed; agent log:\n{}",
                self.gw(),
                self.agent.log_text()
            ),
        }
    }

    /// Rewrites the policy file, sends SIGHUP and waits until `result` has been counted once
    /// more. The agent also reloads by itself when it sees the file change (1 s poll), so a
    /// change may be counted twice; the wait is for the first.
    fn reload(&self, text: &str, result: &str) -> (Metrics, Metrics) {
        let before = self.metrics();
        write_policy(&self.policy, text);
        self.agent.signal(Signal::SIGHUP);
        let after = self.wait_reloads(&before, result);
        (before, after)
    }

    /// Waits until `zone_agent_policy_reloads_total{result}` is above its value in `before`.
    fn wait_reloads(&self, before: &Metrics, result: &str) -> Metrics {
        let was = before.get(RELOADS, &[("result", result)]);
        let mut now = None;
        wait_until(
            RELOAD_WAIT,
            &format!("reloads{{result={result:?}}} > {was}"),
            || {
                let m = self.metrics();
                let done = m.get(RELOADS, &[("result", result)]) > was;
                now = Some(m);
                done
            },
        );
        now.expect("set by the wait")
    }
}

/// Starts `zone-agent run` in the gateway namespace (as `cargo xtask demo` does) and waits
/// until it answers /metrics, which it only does once the policy is applied and attached.
fn start_agent(lab: &Lab, policy: &Path) -> ChildGuard {
    start_agent_with(lab, policy, None)
}

/// [`start_agent`] with a `--config` file.
fn start_agent_with(lab: &Lab, policy: &Path, config: Option<&Path>) -> ChildGuard {
    agent::Start::new(lab, policy).config(config).run()
}

// === metrics ===

const PACKETS: &str = "zone_agent_packets_total";
const RULE_PACKETS: &str = "zone_agent_rule_packets_total";
const DROPS: &str = "zone_agent_drops_total";
const PASSES: &str = "zone_agent_passes_total";
const AUDIT_PASSES: &str = "zone_agent_audit_passes_total";
const RELOADS: &str = "zone_agent_policy_reloads_total";
const GENERATION: &str = "zone_agent_policy_generation";

fn drop_reason(r: &str) -> [(&str, &str); 1] {
    [("reason", r)]
}

fn zones<'a>(from: &'a str, to: &'a str, verdict: &'a str) -> [(&'a str, &'a str); 3] {
    [("from_zone", from), ("to_zone", to), ("verdict", verdict)]
}

fn fam(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// Waits until no packet has been decided for [`QUIET`]: the sum of every
/// `zone_agent_packets_total` sample stands still. Totals over all reasons or zone pairs are
/// compared exactly only after this: the hosts send MLDv2 reports of their own after their
/// links come up and whenever they get an address (see
/// `ipv6_mld_reports_are_not_spoofed_sources`).
fn wait_quiet(env: &Env) {
    let mut last = env.metrics().get(PACKETS, &[]);
    let mut since = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "no packet is decided for 1.5 s",
        || {
            let now = env.metrics().get(PACKETS, &[]);
            if now != last {
                last = now;
                since = Instant::now();
            }
            since.elapsed() >= QUIET
        },
    );
}

/// MLDv2 retransmits an unsolicited report at most 1 s after the first.
const QUIET: Duration = Duration::from_millis(1500);

/// Panics unless counter `name{labels}` moved by exactly `want` from `before` to `after`,
/// listing every counter that moved.
#[track_caller]
fn assert_delta(
    before: &Metrics,
    after: &Metrics,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    what: &str,
) {
    let got = after.delta(before, name, labels);
    assert!(
        got == want,
        "{what}: {name}{labels:?} moved by {got}, expected exactly {want}; every counter that moved:\n{}",
        after.changes(before)
    );
}

// === servers and attempts ===

/// How many lines of a server's log show a connection or datagram from `src`.
fn seen_from(server: &ChildGuard, src: IpAddr) -> usize {
    let log = server.log_text();
    log.lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            matches!(w.next(), Some("accept" | "recv")) && w.next() == Some(&src.to_string())
        })
        .count()
}

/// One TCP connection attempt: `from` -> `to`:`port` over IPv4 or IPv6.
#[derive(Clone, Copy)]
struct Tcp<'a> {
    from: &'a Host,
    to: &'a Host,
    port: u16,
    v6: bool,
    src: Option<IpAddr>,
}

fn tcp<'a>(from: &'a Host, to: &'a Host, port: u16, v6: bool) -> Tcp<'a> {
    Tcp {
        from,
        to,
        port,
        v6,
        src: None,
    }
}

impl Tcp<'_> {
    /// From this source address instead of `from`'s own.
    fn src(self, src: IpAddr) -> Self {
        Tcp {
            src: Some(src),
            ..self
        }
    }

    /// The source address, always bound explicitly: with a second address on the host, the
    /// kernel may otherwise pick that one.
    fn src_addr(&self) -> IpAddr {
        self.src.unwrap_or(self.from.addr(self.v6))
    }

    /// Connects with `timeout`: true iff the handshake completed and the server's line came.
    fn connect(&self, env: &Env, timeout: Duration) -> bool {
        let dst = self.to.addr(self.v6);
        tcp_connect(
            &env.lab,
            self.from,
            dst,
            self.port,
            Some(self.src_addr()),
            timeout,
        )
    }
}

impl std::fmt::Display for Tcp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} {}:{}/tcp ({})",
            self.from.zone,
            self.src_addr(),
            self.to.zone,
            self.to.addr(self.v6),
            self.port,
            fam(self.v6)
        )
    }
}

/// A TCP connection expected to pass: the handshake completes, the server's line comes back
/// and the server logged the connection from the expected source.
#[track_caller]
fn assert_tcp_passes(env: &Env, t: Tcp<'_>, server: &ChildGuard) {
    let seen = seen_from(server, t.src_addr());
    assert!(
        t.connect(env, T),
        "{t} should pass; agent log:\n{}",
        env.agent.log_text()
    );
    assert_eq!(
        seen_from(server, t.src_addr()),
        seen + 1,
        "{t}: the server logged the connection"
    );
}

/// A TCP connection expected to be blocked at the gateway and counted as drop `reason`: no
/// handshake, nothing reached the (listening) server, and exactly one drop counted — one SYN,
/// since the first retransmission (1 s) falls outside T_FAIL.
#[track_caller]
fn assert_tcp_blocked(env: &Env, t: Tcp<'_>, server: &ChildGuard, reason: &str) {
    let seen = seen_from(server, t.src_addr());
    let before = env.metrics();
    assert!(!t.connect(env, T_FAIL), "{t} should be blocked");
    let after = env.metrics();
    assert_eq!(
        seen_from(server, t.src_addr()),
        seen,
        "{t}: the server saw the blocked SYN"
    );
    let what = t.to_string();
    assert_delta(&before, &after, DROPS, &drop_reason(reason), 1.0, &what);
}

/// Starts a TCP listener per port on `host` for both families; index `[v6 as usize][i]`.
fn tcp_servers(env: &Env, host: &Host, ports: &[u16]) -> [Vec<ChildGuard>; 2] {
    [false, true].map(|v6| {
        ports
            .iter()
            .map(|&p| tcp_listen(&env.lab, host, p, v6))
            .collect()
    })
}

/// Starts a UDP echo server on `host:port` for both families; index `[v6 as usize]`.
fn udp_servers(env: &Env, host: &Host, port: u16) -> [ChildGuard; 2] {
    [false, true].map(|v6| udp_echo(&env.lab, host, port, v6))
}

/// The `ip -d link show dev <iface>` line of a gateway interface mentions an XDP program.
fn xdp_attached(env: &Env, iface: &str) -> bool {
    env.lab
        .ip(env.gw(), &["-d", "link", "show", "dev", iface])
        .split_whitespace()
        .any(|w| w.starts_with("xdp") || w.starts_with("prog/xdp"))
}

const ZONE_IFACES: [&str; 3] = ["zmyn", "zlgw", "zinet"];

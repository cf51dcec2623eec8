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

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zone_agent_lab::agent::{self, METRICS_ADDR, pin_dir, state_dir, write_policy};
use zone_agent_lab::fixture::OTHER_MAC;
use zone_agent_lab::{
    ChildGuard, Host, Lab, Signal, ThreeZones, add_addr, agent_bin, continuous, continuous_summary,
    scrape, set_mac, tcp_connect, tcp_echo, tcp_listen, udp_echo, udp_exchange, wait_until,
};

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

/// One scrape of /metrics.
struct Metrics(String);

impl Metrics {
    /// Sum of the matching samples; 0 when none (a counter that never moved may be absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        scrape::metric_value(&self.0, name, labels).unwrap_or(0.0)
    }

    /// How much a counter moved from `before` to `self`.
    fn delta(&self, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels) - before.get(name, labels)
    }

    /// Every `zone_agent_*` sample that differs from `before` (for failure messages).
    fn changes(&self, before: &Metrics) -> String {
        let old: std::collections::HashMap<String, f64> = before
            .0
            .lines()
            .filter_map(scrape::parse_sample)
            .map(|s| (format!("{}{:?}", s.name, s.labels), s.value))
            .collect();
        let mut out = String::new();
        for s in self.0.lines().filter_map(scrape::parse_sample) {
            let key = format!("{}{:?}", s.name, s.labels);
            let was = old.get(&key).copied().unwrap_or(0.0);
            if s.name.starts_with("zone_agent_") && s.value != was {
                out.push_str(&format!("  {key}: {was} -> {}\n", s.value));
            }
        }
        out
    }
}

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

// === tests ===

/// 特定通信 that the policy allows work in both directions (the replies come back) over IPv4
/// and IPv6, and nothing of them is dropped.
#[test]
fn allowed_tcp_and_udp_pass_with_their_replies() {
    let env = Env::new("allowed_pass", &policy("enforce"));
    let my_tcp = tcp_servers(&env, &env.my, &[443, 22]);
    let inet_tcp = tcp_servers(&env, &env.inet, &[80]);
    let dns = udp_servers(&env, &env.inet, 53);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let before = env.metrics();
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 443, v6), &my_tcp[i][0]);
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 22, v6), &my_tcp[i][1]);
        assert_tcp_passes(&env, tcp(&env.lg, &env.inet, 80, v6), &inet_tcp[i][0]);
        assert_eq!(
            udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 53, 5, None, T),
            5,
            "every DNS query ({}) is answered",
            fam(v6)
        );
        assert_eq!(seen_from(&dns[i], env.lg.addr(v6)), 5);
        let after = env.metrics();
        for rule in ["relay-https", "admin-ssh", "web-out"] {
            // At least the SYN and the SYN-ACK (the reply is counted to the flow's rule).
            assert!(
                after.delta(&before, RULE_PACKETS, &[("rule", rule)]) >= 2.0,
                "rule {rule} counted the connection ({}):\n{}",
                fam(v6),
                after.changes(&before)
            );
        }
        assert_delta(
            &before,
            &after,
            RULE_PACKETS,
            &[("rule", "dns-out")],
            10.0,
            "5 queries + 5 answers",
        );
        assert!(after.delta(&before, PASSES, &[("reason", "reply")]) >= 5.0 + 3.0);
        for reason in ["no_rule", "mac_mismatch", "fragment", "malformed"] {
            assert_delta(
                &before,
                &after,
                DROPS,
                &drop_reason(reason),
                0.0,
                "allowed traffic",
            );
        }
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "mynumber", "deny"),
            0.0,
            "allowed traffic",
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "deny"),
            0.0,
            "allowed traffic",
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("internet", "lgwan", "deny"),
            0.0,
            "replies",
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("mynumber", "lgwan", "deny"),
            0.0,
            "replies",
        );
    }
}

/// Everything the 特定通信 do not name is blocked, each for its own counted reason: another
/// port, another source address of the same host, another destination host, the reverse
/// direction, a source address of another zone, and (path limitation by MAC) the right
/// address behind the wrong NIC.
#[test]
fn forbidden_paths_are_blocked_and_counted_by_reason() {
    let env = Env::new("forbidden", &policy("enforce"));
    // A second address of the lgwan host, not in relay-https's `sources`.
    let second = [
        add_addr(&env.lab, &env.lg, "10.20.0.11/16"),
        add_addr(&env.lab, &env.lg, "fd20::11/64"),
    ];
    let spoofed = [ip("10.10.0.99"), ip("fd10::99")];
    let my_tcp = tcp_servers(&env, &env.my, &[443, 8443, 22]);
    let my_udp = udp_servers(&env, &env.my, 5353);
    let lg_tcp = tcp_servers(&env, &env.lg, &[443]);
    // A second mynumber address, not in relay-https's `destinations`, with its own listener.
    let mut my2 = env.my.clone();
    my2.v4 = add_addr(&env.lab, &env.my, "10.10.0.11/16");
    my2.v6 = add_addr(&env.lab, &env.my, "fd10::11/64");
    let my2_tcp = tcp_servers(&env, &my2, &[443]);

    // The added addresses made the hosts send MLD reports; the totals below need quiet.
    wait_quiet(&env);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let (lg, my) = (&env.lg, &env.my);
        // The allowed path itself works (so the listeners and routes are fine) ...
        assert_tcp_passes(&env, tcp(lg, my, 443, v6), &my_tcp[i][0]);
        // ... another port to the same host does not,
        assert_tcp_blocked(&env, tcp(lg, my, 8443, v6), &my_tcp[i][1], "no_rule");
        // nor another address of the same host (relay-https lists sources),
        assert_tcp_blocked(
            &env,
            tcp(lg, my, 443, v6).src(second[i]),
            &my_tcp[i][0],
            "no_rule",
        );
        // nor another host of the destination zone (relay-https lists destinations),
        assert_tcp_blocked(&env, tcp(lg, &my2, 443, v6), &my2_tcp[i][0], "no_rule");
        // nor the same port the other way round.
        assert_tcp_blocked(&env, tcp(my, lg, 443, v6), &lg_tcp[i][0], "no_rule");

        // A mynumber source sent from the lgwan side: mynumber -> mynumber would be intra-zone
        // (allowed) if the source were believed.
        let before = env.metrics();
        assert_eq!(
            udp_exchange(&env.lab, lg, my.addr(v6), 5353, 2, Some(spoofed[i]), T_FAIL),
            0
        );
        let after = env.metrics();
        assert_eq!(
            seen_from(&my_udp[i], spoofed[i]),
            0,
            "the spoofed datagrams reached the server"
        );
        let what = format!("2 datagrams from {} sent by the lgwan host", spoofed[i]);
        assert_delta(
            &before,
            &after,
            DROPS,
            &drop_reason("spoofed_source"),
            2.0,
            &what,
        );
        assert_delta(&before, &after, DROPS, &[], 2.0, &what);
        assert_delta(
            &before,
            &after,
            PASSES,
            &[("reason", "intra_zone")],
            0.0,
            &what,
        );
    }

    // Path limitation by MAC: admin-ssh accepts the lgwan host's NIC only.
    for v6 in [false, true] {
        assert_tcp_passes(
            &env,
            tcp(&env.lg, &env.my, 22, v6),
            &my_tcp[usize::from(v6)][2],
        );
    }
    set_mac(&env.lab, &env.lg.ns, "eth0", OTHER_MAC);
    for v6 in [false, true] {
        let i = usize::from(v6);
        assert_tcp_blocked(
            &env,
            tcp(&env.lg, &env.my, 22, v6),
            &my_tcp[i][2],
            "mac_mismatch",
        );
        // The same host behind the new NIC still reaches what is not MAC-bound.
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 443, v6), &my_tcp[i][0]);
    }
}

/// Counters move by exactly what was sent: forbidden datagrams to their drop reason and zone
/// pair, an allowed exchange to its rule (both directions), pass reasons and zone pairs.
#[test]
fn counters_move_by_exactly_what_was_sent() {
    let env = Env::new("counters", &policy("enforce"));
    let my_udp = udp_servers(&env, &env.my, 5353);
    let dns = udp_servers(&env, &env.inet, 53);
    let spoofed = [ip("10.10.0.99"), ip("fd10::99")];
    wait_quiet(&env);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let f = fam(v6);

        let before = env.metrics();
        let echoes = udp_exchange(&env.lab, &env.lg, env.my.addr(v6), 5353, 5, None, T_FAIL);
        let after = env.metrics();
        assert_eq!(echoes, 0, "forbidden datagrams ({f}) were answered");
        assert_eq!(seen_from(&my_udp[i], env.lg.addr(v6)), 0);
        let what = format!("5 forbidden datagrams lgwan -> mynumber:5353/udp ({f})");
        assert_delta(&before, &after, DROPS, &drop_reason("no_rule"), 5.0, &what);
        assert_delta(&before, &after, DROPS, &[], 5.0, &what);
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "mynumber", "deny"),
            5.0,
            &what,
        );
        assert_delta(&before, &after, PACKETS, &[], 5.0, &what);
        assert_delta(&before, &after, PASSES, &[], 0.0, &what);

        let before = env.metrics();
        let echoes = udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 53, 5, None, T);
        let after = env.metrics();
        assert_eq!(echoes, 5, "allowed DNS ({f}) answered");
        let what = format!("5 DNS queries lgwan -> internet:53/udp and their answers ({f})");
        assert_delta(
            &before,
            &after,
            RULE_PACKETS,
            &[("rule", "dns-out")],
            10.0,
            &what,
        );
        assert_delta(&before, &after, RULE_PACKETS, &[], 10.0, &what);
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "allow"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("internet", "lgwan", "allow"),
            5.0,
            &what,
        );
        assert_delta(&before, &after, PACKETS, &[], 10.0, &what);
        // The first query opens the flow; the others follow it, the answers are its replies.
        assert_delta(&before, &after, PASSES, &[("reason", "rule")], 1.0, &what);
        assert_delta(
            &before,
            &after,
            PASSES,
            &[("reason", "established")],
            4.0,
            &what,
        );
        assert_delta(&before, &after, PASSES, &[("reason", "reply")], 5.0, &what);
        assert_delta(&before, &after, DROPS, &[], 0.0, &what);
        assert_eq!(seen_from(&dns[i], env.lg.addr(v6)), 5);

        let before = env.metrics();
        let echoes = udp_exchange(
            &env.lab,
            &env.lg,
            env.my.addr(v6),
            5353,
            3,
            Some(spoofed[i]),
            T_FAIL,
        );
        let after = env.metrics();
        assert_eq!(echoes, 0);
        assert_eq!(seen_from(&my_udp[i], spoofed[i]), 0);
        let what = format!("3 datagrams from {} sent by the lgwan host", spoofed[i]);
        assert_delta(
            &before,
            &after,
            DROPS,
            &drop_reason("spoofed_source"),
            3.0,
            &what,
        );
        assert_delta(&before, &after, DROPS, &[], 3.0, &what);
        assert_delta(
            &before,
            &after,
            PACKETS,
            &[("from_zone", "lgwan"), ("verdict", "deny")],
            3.0,
            &what,
        );
    }
}

/// SIGHUP re-reads the policy file: a SIGHUP alone reloads (counted, new generation); an
/// edited file that opens a blocked port and removes a rule takes effect for new traffic.
#[test]
fn sighup_reload_applies_the_edited_policy() {
    let text = policy("enforce");
    let env = Env::new("sighup_reload", &text);
    let my_tcp = tcp_servers(&env, &env.my, &[443, 8443]);
    let inet_tcp = tcp_servers(&env, &env.inet, &[80]);
    for v6 in [false, true] {
        let i = usize::from(v6);
        assert_tcp_blocked(
            &env,
            tcp(&env.lg, &env.my, 8443, v6),
            &my_tcp[i][1],
            "no_rule",
        );
        assert_tcp_passes(&env, tcp(&env.lg, &env.inet, 80, v6), &inet_tcp[i][0]);
    }

    // SIGHUP with the file unchanged (so the file watcher has nothing to do): one reload.
    let before = env.metrics();
    env.agent.signal(Signal::SIGHUP);
    let after = env.wait_reloads(&before, RELOAD_OK);
    assert_delta(
        &before,
        &after,
        RELOADS,
        &[("result", RELOAD_OK)],
        1.0,
        "one SIGHUP",
    );
    assert_delta(
        &before,
        &after,
        RELOADS,
        &[("result", RELOAD_ERROR)],
        0.0,
        "one SIGHUP",
    );
    assert_delta(&before, &after, GENERATION, &[], 1.0, "one SIGHUP");

    // Open 8443 on the relay rule, remove web-out.
    let edited = edit(&text, r#"ports = ["443"]"#, r#"ports = ["443", "8443"]"#);
    let web_out = "[[rules]]\nname = \"web-out\"\nfrom = \"lgwan\"\nto = \"internet\"\nprotocol = \"tcp\"\nports = [\"80\"]\n";
    let edited = edit(&edited, web_out, "");
    let (before, after) = env.reload(&edited, RELOAD_OK);
    assert!(after.get(GENERATION, &[]) > before.get(GENERATION, &[]));
    assert_delta(
        &before,
        &after,
        RELOADS,
        &[("result", RELOAD_ERROR)],
        0.0,
        "a valid edit",
    );
    assert!(
        env.agent.log_text().contains("policy reloaded"),
        "the reload is logged"
    );

    for v6 in [false, true] {
        let i = usize::from(v6);
        let before = env.metrics();
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 8443, v6), &my_tcp[i][1]);
        let after = env.metrics();
        assert!(
            after.delta(&before, RULE_PACKETS, &[("rule", "relay-https")]) >= 2.0,
            "8443 is counted to relay-https:\n{}",
            after.changes(&before)
        );
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 443, v6), &my_tcp[i][0]);
        assert_tcp_blocked(
            &env,
            tcp(&env.lg, &env.inet, 80, v6),
            &inet_tcp[i][0],
            "no_rule",
        );
    }
}

/// A policy file that does not parse, or names a zone that does not exist, is rejected on
/// reload: counted as an error, logged with file and line, and the previous policy keeps
/// enforcing (also the valid part of the rejected file does not take effect).
#[test]
fn rejected_reload_keeps_the_old_policy_enforcing() {
    let text = policy("enforce");
    let mut env = Env::new("rejected_reload", &text);
    let my_tcp = tcp_servers(&env, &env.my, &[443, 8443]);
    // Both broken files would open 8443 if they were (partly) applied.
    let opens_8443 = edit(&text, r#"ports = ["443"]"#, r#"ports = ["443", "8443"]"#);
    let syntax = format!("{opens_8443}\n[[rules]\nname = \"broken\"\n");
    let unknown_zone = format!(
        "{opens_8443}\n[[rules]]\nname = \"to-gcloud\"\nfrom = \"lgwan\"\nto = \"gcloud\"\nprotocol = \"tcp\"\nports = [\"443\"]\n"
    );
    let line_of = |text: &str, needle: &str| {
        1 + text
            .lines()
            .position(|l| l == needle)
            .expect("needle is a line of the text")
    };
    let cases = [
        (
            "a syntax error",
            &syntax,
            line_of(&syntax, "[[rules]"),
            "TOML",
        ),
        (
            "a rule naming an unknown zone",
            &unknown_zone,
            line_of(&unknown_zone, "to = \"gcloud\""),
            "gcloud",
        ),
    ];
    for (what, broken, line, clue) in cases {
        let log_len = env.agent.log_text().len();
        let (before, after) = env.reload(broken, RELOAD_ERROR);
        assert_delta(
            &before,
            &after,
            RELOADS,
            &[("result", RELOAD_OK)],
            0.0,
            what,
        );
        assert_delta(&before, &after, GENERATION, &[], 0.0, what);
        assert!(
            env.agent.exited().is_none(),
            "the agent exited after {what}"
        );
        let log = env.agent.log_text()[log_len..].to_owned();
        let location = format!("{}:{line}:", env.policy.display());
        assert!(
            log.contains("reload rejected") && log.contains(&location) && log.contains(clue),
            "{what}: the log should say the reload was rejected, at {location}, about {clue:?}:\n{log}"
        );
        for v6 in [false, true] {
            let i = usize::from(v6);
            assert_tcp_passes(&env, tcp(&env.lg, &env.my, 443, v6), &my_tcp[i][0]);
            assert_tcp_blocked(
                &env,
                tcp(&env.lg, &env.my, 8443, v6),
                &my_tcp[i][1],
                "no_rule",
            );
        }
    }

    // The agent still reloads: the valid part alone is accepted and opens 8443.
    env.reload(&opens_8443, RELOAD_OK);
    for v6 in [false, true] {
        assert_tcp_passes(
            &env,
            tcp(&env.lg, &env.my, 8443, v6),
            &my_tcp[usize::from(v6)][1],
        );
    }
}

/// `mode = "audit"` for the whole policy: what the policy forbids passes, and is counted as
/// audit (would-drop reason and zone pair); what it allows is still counted as allow.
#[test]
fn global_audit_mode_passes_and_counts_what_it_would_drop() {
    let env = Env::new("global_audit", &policy("audit"));
    let my_udp = udp_servers(&env, &env.my, 5353);
    let my_tcp = tcp_servers(&env, &env.my, &[8443]);
    let dns = udp_servers(&env, &env.inet, 53);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let f = fam(v6);
        let before = env.metrics();
        let echoes = udp_exchange(&env.lab, &env.lg, env.my.addr(v6), 5353, 5, None, T);
        let after = env.metrics();
        assert_eq!(
            echoes, 5,
            "forbidden datagrams ({f}) pass in audit mode, both ways"
        );
        assert_eq!(seen_from(&my_udp[i], env.lg.addr(v6)), 5);
        let what =
            format!("5 forbidden datagrams lgwan -> mynumber:5353/udp and echoes, audit ({f})");
        assert_delta(&before, &after, DROPS, &drop_reason("no_rule"), 0.0, &what);
        // No rule opens a flow, so the echoes are would-drops of their own.
        assert_delta(
            &before,
            &after,
            AUDIT_PASSES,
            &drop_reason("no_rule"),
            10.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "mynumber", "audit"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("mynumber", "lgwan", "audit"),
            5.0,
            &what,
        );
        assert_delta(&before, &after, PACKETS, &[("verdict", "deny")], 0.0, &what);

        let before = env.metrics();
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 8443, v6), &my_tcp[i][0]);
        let after = env.metrics();
        assert!(
            after.delta(&before, AUDIT_PASSES, &drop_reason("no_rule")) >= 2.0,
            "a forbidden TCP connection ({f}) is audited:\n{}",
            after.changes(&before)
        );

        let before = env.metrics();
        assert_eq!(
            udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 53, 5, None, T),
            5
        );
        let after = env.metrics();
        let what = format!("allowed DNS in audit mode ({f})");
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "allow"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "audit"),
            0.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            AUDIT_PASSES,
            &drop_reason("no_rule"),
            0.0,
            &what,
        );
        assert_eq!(seen_from(&dns[i], env.lg.addr(v6)), 5);
    }
}

/// A rule with `mode = "audit"` in an enforcing policy: its traffic passes (a trial) and is
/// counted as verdict audit and to the rule; the rest of the policy still enforces.
#[test]
fn audit_rule_passes_its_traffic_as_audit() {
    let env = Env::new("audit_rule", &policy("enforce"));
    let ntp = udp_servers(&env, &env.inet, 123);
    let other = udp_servers(&env, &env.inet, 124);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let f = fam(v6);
        let before = env.metrics();
        assert_eq!(
            udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 123, 5, None, T),
            5,
            "the audit rule's traffic ({f}) passes"
        );
        let after = env.metrics();
        assert_eq!(seen_from(&ntp[i], env.lg.addr(v6)), 5);
        let what = format!("5 NTP exchanges under the audit rule ntp-trial ({f})");
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "audit"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("internet", "lgwan", "audit"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "allow"),
            0.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            RULE_PACKETS,
            &[("rule", "ntp-trial")],
            10.0,
            &what,
        );
        assert_delta(&before, &after, DROPS, &drop_reason("no_rule"), 0.0, &what);

        // The port next to it is not in any rule: still dropped.
        let before = env.metrics();
        assert_eq!(
            udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 124, 2, None, T_FAIL),
            0
        );
        let after = env.metrics();
        assert_eq!(seen_from(&other[i], env.lg.addr(v6)), 0);
        let what = format!("2 datagrams to 124/udp ({f})");
        assert_delta(&before, &after, DROPS, &drop_reason("no_rule"), 2.0, &what);
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "deny"),
            2.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &[("verdict", "audit")],
            0.0,
            &what,
        );
    }
}

/// SIGTERM: the agent exits 0 within a few seconds and the policy keeps enforcing (the
/// gates never open because the daemon stopped). `zone-agent detach` is the one way to
/// remove it: afterwards no XDP program and no pin is left, and the gateway routes
/// unfiltered, which the formerly blocked port shows.
#[test]
fn sigterm_keeps_enforcing_until_detach() {
    let mut env = Env::new("sigterm", &policy("enforce"));
    let my_tcp = tcp_servers(&env, &env.my, &[8443, 22]);
    assert_tcp_blocked(
        &env,
        tcp(&env.lg, &env.my, 8443, false),
        &my_tcp[0][0],
        "no_rule",
    );

    let started = Instant::now();
    env.agent.signal(Signal::SIGTERM);
    let status = env.agent.wait_exit(AGENT_STOP).unwrap_or_else(|| {
        panic!(
            "the agent still runs {AGENT_STOP:?} after SIGTERM:\n{}",
            env.agent.log_text()
        )
    });
    assert!(
        status.success(),
        "the agent exited with {status} after SIGTERM:\n{}",
        env.agent.log_text()
    );
    eprintln!("agent stopped {:?} after SIGTERM", started.elapsed());
    assert_enforcing_without_agent(&env, &my_tcp[0][0], &my_tcp[0][1]);

    let out = env.lab.run(
        env.gw(),
        &[
            agent_bin().to_str().unwrap(),
            "detach",
            "--pin-dir",
            pin_dir(&env.lab).to_str().unwrap(),
            "--state-dir",
            state_dir(&env.lab).to_str().unwrap(),
        ],
    );
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zone-agent detach failed: {said}");
    for iface in ZONE_IFACES {
        assert!(said.contains(iface), "detach does not name {iface}: {said}");
        assert!(
            !xdp_attached(&env, iface),
            "an XDP program is still attached to {iface} after detach:\n{}",
            env.lab.ip(env.gw(), &["-d", "link", "show", "dev", iface])
        );
    }
    let left: Vec<_> = walk(&pin_dir(&env.lab));
    assert!(left.is_empty(), "pins left after detach: {left:?}");
    for v6 in [false, true] {
        assert_tcp_passes(
            &env,
            tcp(&env.lg, &env.my, 8443, v6),
            &my_tcp[usize::from(v6)][0],
        );
    }
}

/// Every file below `dir` (pins are files on the bpffs).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// With no agent running: XDP is still on every zone interface, the forbidden connection
/// (lgwan -> mynumber:8443) is still blocked and never reaches `blocked_server`, and an
/// allowed one (admin-ssh, lgwan -> mynumber:22) still passes.
#[track_caller]
fn assert_enforcing_without_agent(env: &Env, blocked_server: &ChildGuard, ssh_server: &ChildGuard) {
    for iface in ZONE_IFACES {
        assert!(
            xdp_attached(env, iface),
            "XDP left {iface} when the agent stopped:\n{}",
            env.lab.ip(env.gw(), &["-d", "link", "show", "dev", iface])
        );
    }
    let t = tcp(&env.lg, &env.my, 8443, false);
    let seen = seen_from(blocked_server, t.src_addr());
    assert!(
        !t.connect(env, T_FAIL),
        "{t} passed while the agent was down: the gate opened"
    );
    assert_eq!(
        seen_from(blocked_server, t.src_addr()),
        seen,
        "{t}: the server saw the SYN"
    );
    let ok = tcp(&env.lg, &env.my, 22, false);
    let seen = seen_from(ssh_server, ok.src_addr());
    assert!(
        ok.connect(env, T),
        "{ok} (allowed) failed while the agent was down"
    );
    assert_eq!(
        seen_from(ssh_server, ok.src_addr()),
        seen + 1,
        "{ok}: the server logged it"
    );
}

/// The ids of the XDP programs `ip -d link show` reports on a gateway interface.
fn xdp_prog_ids(env: &Env, iface: &str) -> Vec<u32> {
    let out = env.lab.ip(env.gw(), &["-d", "link", "show", "dev", iface]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut ids = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if w.starts_with("prog/xdp")
            && words.get(i + 1) == Some(&"id")
            && let Some(id) = words.get(i + 2).and_then(|x| x.parse().ok())
        {
            ids.push(id);
        }
    }
    ids
}

/// True if the kernel still has a BPF program with this id.
fn program_exists(id: u32) -> bool {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .any(|p| p.id() == id)
}

/// `zone-agent <cmd> --json` against the lab's agent, parsed.
fn admin_json(env: &Env, cmd: &str) -> serde_json::Value {
    let out = env.lab.run(
        env.gw(),
        &[
            agent_bin().to_str().unwrap(),
            cmd,
            "--json",
            "--state-dir",
            state_dir(&env.lab).to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "zone-agent {cmd} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("zone-agent {cmd} --json: {e}"))
}

/// The policy plus a UDP service lgwan -> mynumber (for continuous UDP traffic).
fn policy_with_udp(mode: &str) -> String {
    policy(mode)
        + r#"
[[rules]]
name = "relay-udp"
from = "lgwan"
to = "mynumber"
protocol = "udp"
ports = ["5353"]
sources = ["10.20.0.10/32", "fd20::10/128"]
"#
}

#[track_caller]
fn assert_nothing_lost(s: &zone_agent_lab::ContinuousSummary, what: &str) {
    eprintln!("{what}: {s:?}");
    assert!(
        s.stream_sent > 100 && s.conn_ok > 20 && s.udp_sent > 500,
        "{what}: too little traffic to mean anything: {s:?}"
    );
    assert_eq!(
        s.stream_errors, 0,
        "{what}: the long-lived connection broke: {:?}",
        s.errors
    );
    assert_eq!(
        s.stream_ok, s.stream_sent,
        "{what}: lines lost on the long-lived connection"
    );
    assert_eq!(
        s.conn_failed, 0,
        "{what}: new connections failed: {:?}",
        s.errors
    );
    assert_eq!(s.udp_echoed, s.udp_sent, "{what}: UDP datagrams lost");
}

/// kill -9 of the agent with traffic flowing: the forbidden stays blocked, the allowed keeps
/// passing (a long-lived connection, new connections, a UDP stream), XDP stays attached.
/// The restarted agent adopts the pinned state: one program per interface (the new one,
/// swapped into the same links; the old program is gone from the kernel), the established
/// connection survives (flows kept), the counters continue where they were.
#[test]
fn kill9_keeps_enforcing_and_restart_adopts() {
    let mut env = Env::new("kill9", &policy_with_udp("enforce"));
    let my_tcp = tcp_servers(&env, &env.my, &[8443, 22]);
    let _echo = tcp_echo(&env.lab, &env.my, 443, false);
    let _uecho = udp_echo(&env.lab, &env.my, 5353, false);
    let old: Vec<u32> = ZONE_IFACES
        .iter()
        .flat_map(|i| xdp_prog_ids(&env, i))
        .collect();
    assert_eq!(old.len(), 3, "one XDP program per zone interface: {old:?}");
    assert!(
        old.iter().all(|&id| id == old[0]),
        "one program for all interfaces: {old:?}"
    );

    let run = continuous(&env.lab, &env.lg, env.my.addr(false), 443, 5353, 14);
    wait_until(Duration::from_secs(5), "traffic flows", || {
        env.metrics().get(RULE_PACKETS, &[("rule", "relay-udp")]) > 20.0
    });
    let counted = env.metrics().get(RULE_PACKETS, &[("rule", "relay-https")]);
    env.agent.signal(Signal::SIGKILL);
    env.agent
        .wait_exit(AGENT_STOP)
        .expect("the agent dies on SIGKILL");
    assert_enforcing_without_agent(&env, &my_tcp[0][0], &my_tcp[0][1]);

    env.agent = start_agent(&env.lab, &env.policy);
    let new: Vec<u32> = ZONE_IFACES
        .iter()
        .flat_map(|i| xdp_prog_ids(&env, i))
        .collect();
    assert_eq!(
        new.len(),
        3,
        "exactly one XDP program per interface after restart: {new:?}"
    );
    assert!(
        new.iter().all(|&id| id == new[0] && id != old[0]),
        "the new program runs everywhere: old {old:?}, new {new:?}"
    );
    assert!(
        !program_exists(old[0]),
        "the old program {} is still loaded: a duplicate",
        old[0]
    );
    let st = admin_json(&env, "status");
    assert_eq!(st["adopted"]["generation"], 1, "status: {st}");
    assert_eq!(st["generation"], 2, "status: {st}");
    for i in st["interfaces"].as_array().expect("interfaces") {
        assert_eq!(i["attach"], "adopted", "status: {st}");
        assert_eq!(i["program_id"], new[0], "status: {st}");
    }
    let after = env.metrics().get(RULE_PACKETS, &[("rule", "relay-https")]);
    assert!(
        after >= counted,
        "relay-https counted {counted} before the kill, {after} after the restart"
    );

    let mut run = run;
    run.wait_exit(Duration::from_secs(30))
        .expect("the traffic client finishes");
    assert_nothing_lost(
        &continuous_summary(&run),
        "kill -9 and restart under traffic",
    );
    assert_tcp_blocked(
        &env,
        tcp(&env.lg, &env.my, 8443, false),
        &my_tcp[0][0],
        "no_rule",
    );
}

/// Pinned state left by an incompatible build (here: the maps directory of another ABI
/// fingerprint, made by renaming ours while the agent is down) is replaced atomically: the
/// restarted agent builds fresh maps, swaps its program into the same links, removes the old
/// maps, says so in its log and `status`, and the gate never opens meanwhile.
#[test]
fn incompatible_pinned_state_is_replaced_atomically() {
    let mut env = Env::new("incompatible", &policy("enforce"));
    let my_tcp = tcp_servers(&env, &env.my, &[8443, 22]);
    let old: Vec<u32> = ZONE_IFACES
        .iter()
        .flat_map(|i| xdp_prog_ids(&env, i))
        .collect();
    env.agent.signal(Signal::SIGKILL);
    env.agent
        .wait_exit(AGENT_STOP)
        .expect("the agent dies on SIGKILL");
    let pins = pin_dir(&env.lab);
    let ours: Vec<PathBuf> = fs::read_dir(&pins)
        .expect("pin dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("maps-")
        })
        .collect();
    assert_eq!(ours.len(), 1, "one maps dir: {ours:?}");
    let foreign = pins.join("maps-00000000000000aa");
    fs::rename(&ours[0], &foreign).expect("rename the maps dir");
    assert_enforcing_without_agent(&env, &my_tcp[0][0], &my_tcp[0][1]);

    env.agent = start_agent(&env.lab, &env.policy);
    let log = env.agent.log_text();
    assert!(
        log.contains("incompatible") && log.contains("maps-00000000000000aa"),
        "the agent does not say it replaced the state:\n{log}"
    );
    assert!(!foreign.exists(), "the incompatible maps are still pinned");
    let new: Vec<u32> = ZONE_IFACES
        .iter()
        .flat_map(|i| xdp_prog_ids(&env, i))
        .collect();
    assert_eq!(new.len(), 3, "one program per interface: {new:?}");
    assert!(
        new.iter().all(|&id| id == new[0] && id != old[0]),
        "old {old:?}, new {new:?}"
    );
    assert!(!program_exists(old[0]), "the old program is still loaded");
    let st = admin_json(&env, "status");
    assert_eq!(
        st["adopted"]["generation"], 0,
        "fresh maps hold no policy: {st}"
    );
    assert!(
        st["adopted"]["replaced"][0]
            .as_str()
            .unwrap_or("")
            .contains("maps-00000000000000aa"),
        "status: {st}"
    );
    assert_tcp_blocked(
        &env,
        tcp(&env.lg, &env.my, 8443, false),
        &my_tcp[0][0],
        "no_rule",
    );
    assert_tcp_passes(&env, tcp(&env.lg, &env.my, 22, false), &my_tcp[0][1]);
}

/// Twelve reloads (through `zone-agent reload`) while allowed traffic flows without pause:
/// no datagram, no line and no connection is lost, and every reload is a new generation.
#[test]
fn reloads_under_continuous_traffic_lose_nothing() {
    let base = policy_with_udp("enforce");
    let env = Env::new("reload_load", &base);
    let _echo = tcp_echo(&env.lab, &env.my, 443, false);
    let _uecho = udp_echo(&env.lab, &env.my, 5353, false);
    let run = continuous(&env.lab, &env.lg, env.my.addr(false), 443, 5353, 12);
    wait_until(Duration::from_secs(5), "traffic flows", || {
        env.metrics().get(RULE_PACKETS, &[("rule", "relay-udp")]) > 20.0
    });
    let before = env.metrics();
    const RELOADS: u32 = 12;
    for i in 0..RELOADS {
        // Each reload changes the policy (an extra rule), so each is a real new policy set.
        let text = format!(
            "{base}\n[[rules]]\nname = \"toggle-{i}\"\nfrom = \"lgwan\"\nto = \"internet\"\nprotocol = \"tcp\"\nports = [\"{}\"]\n",
            8000 + i
        );
        write_policy(&env.policy, &text);
        let r = admin_json(&env, "reload");
        assert_eq!(r["result"], "success", "reload {i}: {r}");
        std::thread::sleep(Duration::from_millis(400));
    }
    let after = env.metrics();
    let gens = after.get(GENERATION, &[]) - before.get(GENERATION, &[]);
    assert!(
        gens >= f64::from(RELOADS),
        "{gens} new generations for {RELOADS} reloads"
    );
    let mut run = run;
    run.wait_exit(Duration::from_secs(30))
        .expect("the traffic client finishes");
    assert_nothing_lost(
        &continuous_summary(&run),
        &format!("{RELOADS} reloads under traffic"),
    );
}

/// A failsafe management flow (configured for the agent, not in the policy) reaches the
/// gateway itself from the admin host even when the policy would block it — intra-zone
/// denied, no rule, and after a reload to a policy whose lgwan networks are wrong (the admin
/// host's address is then in no zone). It reaches only the gateway: the same port on a host
/// behind the gateway, another port, or another source stay blocked. `status` shows it.
#[test]
fn failsafe_flow_survives_a_policy_that_blocks_it() {
    let blocking = edit(
        &policy("enforce"),
        r#"intra_zone = "allow""#,
        r#"intra_zone = "deny""#,
    );
    let mut env = Env::new("failsafe", &blocking);
    let config = env.lab.dir().join("zone-agent.toml");
    fs::write(
        &config,
        "[[failsafe]]\nname = \"ssh-admin\"\nprotocol = \"tcp\"\nports = [\"2222\"]\nsources = [\"10.20.0.10/32\"]\ninterfaces = [\"zlgw\"]\n",
    )
    .expect("write config");
    env.agent.stop();
    env.agent = start_agent_with(&env.lab, &env.policy, Some(&config));
    // Servers on the gateway itself, on its lgwan-side and mynumber-side addresses.
    let mut gw_lg = env.lg.clone();
    gw_lg.ns = env.gw().to_string();
    gw_lg.v4 = env.lg.gw_v4;
    let mut gw_my = gw_lg.clone();
    gw_my.v4 = env.my.gw_v4;
    let s_lg = tcp_listen(&env.lab, &gw_lg, 2222, false);
    let s_my = tcp_listen(&env.lab, &gw_my, 2222, false);
    let s_other = tcp_listen(&env.lab, &gw_lg, 2223, false);
    let behind = tcp_servers(&env, &env.my, &[2222]);

    let check = |env: &Env| {
        for server in [&s_lg, &s_my] {
            let dst = if std::ptr::eq(server, &s_lg) {
                gw_lg.v4
            } else {
                gw_my.v4
            };
            let before = env.metrics();
            let seen = seen_from(server, env.lg.v4);
            assert!(
                tcp_connect(&env.lab, &env.lg, dst, 2222, Some(env.lg.v4), T),
                "failsafe lgwan -> gateway {dst}:2222 blocked; agent log:\n{}",
                env.agent.log_text()
            );
            assert_eq!(seen_from(server, env.lg.v4), seen + 1);
            assert!(
                env.metrics()
                    .delta(&before, PASSES, &[("reason", "failsafe")])
                    >= 1.0
            );
        }
        let seen = seen_from(&s_other, env.lg.v4);
        assert!(
            !tcp_connect(&env.lab, &env.lg, gw_lg.v4, 2223, Some(env.lg.v4), T_FAIL),
            "port 2223 is not failsafe"
        );
        assert_eq!(seen_from(&s_other, env.lg.v4), seen);
        let seen = seen_from(&behind[0][0], env.lg.v4);
        assert!(
            !tcp_connect(&env.lab, &env.lg, env.my.v4, 2222, Some(env.lg.v4), T_FAIL),
            "failsafe reached a host behind the gateway"
        );
        assert_eq!(seen_from(&behind[0][0], env.lg.v4), seen);
        let seen = seen_from(&s_lg, env.inet.v4);
        assert!(
            !tcp_connect(
                &env.lab,
                &env.inet,
                gw_lg.v4,
                2222,
                Some(env.inet.v4),
                T_FAIL
            ),
            "failsafe admitted a source outside its list"
        );
        assert_eq!(seen_from(&s_lg, env.inet.v4), seen);
    };
    check(&env);
    let st = admin_json(&env, "status");
    let fs = &st["failsafe"][0];
    assert_eq!(fs["name"], "ssh-admin", "status: {st}");
    assert_eq!(fs["interfaces"][0][0], "zlgw", "status: {st}");
    assert!(
        fs["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == &serde_json::json!(gw_lg.v4.to_string())),
        "status: {st}"
    );

    // A mistaken policy: lgwan's networks no longer hold the admin host, whose address now
    // falls into the internet zone (0.0.0.0/0): to the data path it is a spoofed source.
    let wrong = edit(
        &blocking,
        r#"networks = ["10.20.0.0/16", "fd20::/48"]"#,
        r#"networks = ["10.20.128.0/17", "fd20::/48"]"#,
    );
    let wrong = edit(
        &wrong,
        r#"sources = ["10.20.0.10/32", "fd20::10/128"]"#,
        r#"sources = ["10.20.128.10/32", "fd20::10/128"]"#,
    );
    env.reload(&wrong, RELOAD_OK);
    check(&env);
}

/// A host joining a multicast group (here: because it got another IPv6 address) sends MLDv2
/// reports from its link-local address to ff02::16. That is link-local housekeeping, not a
/// source address of another zone: it must not be counted (or alerted) as spoofed_source.
/// The trap: with `::/0` in the internet zone, fe80::/10 falls into that zone by longest
/// prefix, and every IPv6 host outside the internet zone looked like a spoofer (fixed in
/// ccf01b4; this test failed before it, with spoofed_source +2 per address added).
#[test]
fn ipv6_mld_reports_are_not_spoofed_sources() {
    let env = Env::new("mld_not_spoofed", &policy("enforce"));
    wait_quiet(&env);
    let before = env.metrics();
    add_addr(&env.lab, &env.lg, "fd20::12/64");
    // Proof that the reports were sent and decided (nothing else is sent now) ...
    wait_until(T, "the MLD reports are decided", || {
        env.metrics().delta(&before, PACKETS, &[]) >= 1.0
    });
    // ... and the retransmission (MLDv2: within 1 s).
    wait_quiet(&env);
    let after = env.metrics();
    assert_delta(
        &before,
        &after,
        DROPS,
        &drop_reason("spoofed_source"),
        0.0,
        "MLDv2 reports fe80::ff:fe00:2010 -> ff02::16 from the lgwan host",
    );
}

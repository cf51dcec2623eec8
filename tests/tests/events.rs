//! Events as an operator meets them: the flow log a SOC's shipper tails, `zone-agent
//! observe`, and the event metrics, with real traffic through the XDP gateway (three zones,
//! IPv4). Every count is compared with what the test sent: frames captured on the sender's
//! link, packets `hping3` was told to send.
//!
//! Needs root; `cargo xtask test --only lab -- --test events` runs it under `unshare`.

use std::{
    io::Write as _,
    net::IpAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use zone_agent_lab::{
    ChildGuard, Host, Lab,
    agent::{self, Metrics, Start},
    craft::{capture, hping3},
    fixture::{INTERNET, LGWAN, MYNUMBER, ThreeZones},
    poll_until, scrape, tcp_echo, udp_echo, udp_exchange, wait_until,
};

/// Allowed: lgwan → mynumber, TCP 443 and UDP 5353. Everything from the internet is denied.
const RULES: &str = r#"
[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]

[[rules]]
name = "relay-dns"
from = "lgwan"
to = "mynumber"
protocol = "udp"
ports = ["5353"]
"#;

/// Bound for something the agent does at once (a record flushed, a scrape answered).
const T: Duration = Duration::from_secs(5);
/// A closed TCP flow lingers `FLOW_TCP_CLOSING_NS` (10 s), the sweep runs every 10 s.
const TCP_END_WAIT: Duration = Duration::from_secs(40);
/// A UDP flow ends after `FLOW_UDP_NS` (120 s) idle, plus the sweep's 10 s.
const UDP_END_WAIT: Duration = Duration::from_secs(150);
/// What `/metrics` must answer within, also under a flood.
const SCRAPE_BOUND: Duration = Duration::from_secs(1);
/// What an `observe` client must see a denial within.
const OBSERVE_BOUND: Duration = Duration::from_secs(1);

struct Setup {
    lab: Lab,
    my: Host,
    lg: Host,
    inet: Host,
    agent: ChildGuard,
    flow_log: PathBuf,
    policy: PathBuf,
    config: PathBuf,
}

impl Setup {
    /// Starts the agent (again) with the lab's policy and config.
    fn start(&self) -> ChildGuard {
        Start::new(&self.lab, &self.policy)
            .config(Some(&self.config))
            .run()
    }
}

/// A three-zone IPv4 lab (IPv6 off on the hosts: no link-local chatter takes event tokens)
/// and the agent with [`RULES`] and a config of `flow_log = <lab>/flows.json` plus `config`.
fn setup(name: &str, config: &str) -> Setup {
    let mut lab = Lab::new(name);
    let my = lab.add_host(MYNUMBER.host_v4());
    let lg = lab.add_host(LGWAN.host_v4());
    let inet = lab.add_host(INTERNET.host_v4());
    for h in [&my, &lg, &inet] {
        lab.sysctls(&h.ns, &[("net.ipv6.conf.all.disable_ipv6", "1")]);
    }
    let policy = lab.dir().join("policy.toml");
    std::fs::write(&policy, ThreeZones::policy().v4_only().rules(RULES).build()).unwrap();
    let flow_log = lab.dir().join("flows.json");
    let cfg = lab.dir().join("za.toml");
    std::fs::write(&cfg, format!("flow_log = {flow_log:?}\n{config}")).unwrap();
    let agent = Start::new(&lab, &policy).config(Some(&cfg)).run();
    Setup {
        lab,
        my,
        lg,
        inet,
        agent,
        flow_log,
        policy,
        config: cfg,
    }
}

/// The flow log's records (the current file).
fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits for the first record of the flow log that `f` accepts.
fn wait_record(path: &Path, bound: Duration, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    if !poll_until(bound, || {
        found = records(path).into_iter().find(&f);
        found.is_some()
    }) {
        panic!(
            "no {what} in the flow log within {bound:?}; it has:\n{}",
            std::fs::read_to_string(path).unwrap_or_default()
        );
    }
    found.unwrap()
}

/// (protocol, source, source port, destination, destination port) of an untagged IPv4
/// TCP/UDP frame.
fn tuple(f: &[u8]) -> Option<(u8, IpAddr, u16, IpAddr, u16)> {
    if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let l4 = ip.get(ihl..ihl + 4)?;
    let a = |o: usize| IpAddr::from([ip[o], ip[o + 1], ip[o + 2], ip[o + 3]]);
    Some((
        ip[9],
        a(12),
        u16::from_be_bytes([l4[0], l4[1]]),
        a(16),
        u16::from_be_bytes([l4[2], l4[3]]),
    ))
}

/// Packets and bytes (whole frames, as the data path counts them) captured with `proto`
/// from `src:sport`.
fn sent(
    frames: &[zone_agent_lab::craft::Captured],
    proto: u8,
    src: IpAddr,
    sport: u16,
) -> (u64, u64) {
    frames
        .iter()
        .filter(|f| tuple(&f.bytes).is_some_and(|t| t.0 == proto && t.1 == src && t.2 == sport))
        .fold((0, 0), |(p, b), f| (p + 1, b + f.bytes.len() as u64))
}

/// Connects from `from` to `to:port`, sends `n` bytes, reads the echo, closes; the local
/// port.
fn tcp_echo_once(lab: &Lab, from: &Host, to: IpAddr, port: u16, n: usize) -> u16 {
    // The local port is printed before anything is sent, so a failure still names it.
    const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(s.getsockname()[1], flush=True)
n = int(sys.argv[3])
s.sendall(b"z" * n)
got = 0
while got < n:
    d = s.recv(65536)
    if not d:
        break
    got += len(d)
s.close()
assert got == n, f"echoed {got} of {n}"
"#;
    let py = zone_agent_lab::python();
    let out = lab.run_ok(
        &from.ns,
        &[
            &py,
            "-c",
            CLIENT,
            &to.to_string(),
            &port.to_string(),
            &n.to_string(),
        ],
    );
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no local port: {out}"))
}

/// `zone-agent observe <args>` in the gateway, its output in the lab log `name`; returns
/// once it is subscribed.
fn observe(s: &Setup, filter: &[&str], name: &str) -> ChildGuard {
    let bin = zone_agent_lab::agent_bin();
    let state = agent::state_dir(&s.lab);
    let mut argv = vec![
        bin.to_str().unwrap(),
        "observe",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    argv.extend_from_slice(filter);
    let mut g = s.lab.spawn(s.lab.gateway(), &argv, &s.lab.log_path(name));
    wait_until(T, &format!("{name} is subscribed"), || {
        if let Some(st) = g.exited() {
            panic!("{name} exited ({st}):\n{}", g.log_text());
        }
        g.log_text().contains("observing ")
    });
    g
}

/// The JSON records an observe client printed.
fn observed(g: &ChildGuard) -> Vec<Value> {
    g.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `/metrics`, answered within [`SCRAPE_BOUND`] (panics otherwise), and how long it took.
fn scrape_bounded(lab: &Lab) -> (Metrics, Duration) {
    let t = Instant::now();
    let url = format!("http://{}/metrics", agent::METRICS_ADDR);
    let text = scrape::http_get(lab, lab.gateway(), &url, SCRAPE_BOUND)
        .unwrap_or_else(|| panic!("/metrics did not answer within {SCRAPE_BOUND:?}"));
    (Metrics(text), t.elapsed())
}

/// The counters once the data path and the agent are done with what was sent: two scrapes
/// in a row agree on every drop, event and loss counter.
fn settled(lab: &Lab) -> Metrics {
    let key = |m: &Metrics| {
        [
            "zone_agent_drops_total",
            "zone_agent_events_total",
            "zone_agent_events_lost_total",
            "zone_agent_packets_total",
        ]
        .map(|n| m.get(n, &[]))
    };
    let mut last = agent::metrics(lab);
    wait_until(T, "the counters settle", || {
        let now = agent::metrics(lab);
        let same = key(&now) == key(&last);
        last = now;
        same
    });
    last
}

fn lost(m: &Metrics, before: &Metrics, stage: &str) -> u64 {
    m.delta(before, "zone_agent_events_lost_total", &[("stage", stage)]) as u64
}

fn events(m: &Metrics, before: &Metrics, kind: &str) -> u64 {
    m.delta(before, "zone_agent_events_total", &[("kind", kind)]) as u64
}

/// A TCP connection and a UDP exchange give a flow_open and a flow_end record each, with
/// the packets and bytes of each direction exactly as captured on the client's link.
#[test]
fn flow_log_reports_tcp_and_udp_flows_with_exact_counts() {
    let s = setup("ev_flowlog", "");
    let _tcp_server = tcp_echo(&s.lab, &s.my, 443, false);
    let _udp_server = udp_echo(&s.lab, &s.my, 5353, false);
    let cap = capture(&s.lab, &s.lg.ns, "eth0");
    let (client, server) = (s.lg.v4, s.my.v4);
    // UDP first: its flow ends only after 120 s idle, while the TCP part runs.
    assert_eq!(udp_exchange(&s.lab, &s.lg, server, 5353, 3, None, T), 3);
    let tcp_port = tcp_echo_once(&s.lab, &s.lg, server, 443, 1000);
    let is = |r: &Value, action: &str, transport: &str, dport: u16| {
        r["event"]["action"] == action
            && r["network"]["transport"] == transport
            && r["destination"]["port"] == dport
            && r["source"]["ip"] == client.to_string()
    };
    let udp_open = wait_record(&s.flow_log, T, "UDP flow_open", |r| {
        is(r, "flow_open", "udp", 5353)
    });
    let udp_port = udp_open["source"]["port"].as_u64().unwrap() as u16;
    let tcp_open = wait_record(&s.flow_log, T, "TCP flow_open", |r| {
        is(r, "flow_open", "tcp", 443) && r["source"]["port"] == tcp_port
    });
    for (open, rule) in [(&udp_open, "relay-dns"), (&tcp_open, "relay-https")] {
        assert_eq!(open["rule"]["name"], rule, "{open}");
        assert_eq!(open["observer"]["ingress"]["zone"], "lgwan");
        assert_eq!(open["observer"]["egress"]["zone"], "mynumber");
        assert_eq!(open["observer"]["ingress"]["interface"]["name"], "zlgw");
        assert_eq!(
            open["source"]["mac"],
            s.lg.mac.replace(':', "-").to_uppercase()
        );
        assert_eq!(open["network"]["type"], "ipv4");
    }

    let check_end = |end: &Value, open: &Value, proto: u8, port: u16, reason: &str| {
        let frames = cap.frames();
        let (op, ob) = sent(&frames, proto, client, port);
        // The replies: from the server's port to the client's.
        let (rp, rb) = frames
            .iter()
            .filter(|f| {
                tuple(&f.bytes).is_some_and(|t| t.0 == proto && t.1 == server && t.4 == port)
            })
            .fold((0, 0), |(p, b), f| (p + 1, b + f.bytes.len() as u64));
        let got = (
            end["source"]["packets"].as_u64(),
            end["source"]["bytes"].as_u64(),
            end["destination"]["packets"].as_u64(),
            end["destination"]["bytes"].as_u64(),
        );
        assert_eq!(
            got,
            (Some(op), Some(ob), Some(rp), Some(rb)),
            "flow_end counts (sent packets, bytes, received packets, bytes) vs the capture on {}: {end}",
            s.lg.ns
        );
        assert_eq!(end["event"]["reason"], reason, "{end}");
        assert_eq!(
            end["network"]["community_id"],
            open["network"]["community_id"]
        );
        assert!(end["event"]["duration"].as_u64().is_some(), "{end}");
        eprintln!(
            "flow_end {reason}: sent {op} packets / {ob} bytes, received {rp} / {rb} (capture and flow log agree)"
        );
    };
    let tcp_end = wait_record(&s.flow_log, TCP_END_WAIT, "TCP flow_end", |r| {
        is(r, "flow_end", "tcp", 443) && r["source"]["port"] == tcp_port
    });
    // 1000 bytes each way at least, plus the handshake and the close.
    assert!(tcp_end["source"]["bytes"].as_u64().unwrap() > 1000);
    check_end(&tcp_end, &tcp_open, 6, tcp_port, "closed");
    let udp_end = wait_record(&s.flow_log, UDP_END_WAIT, "UDP flow_end", |r| {
        is(r, "flow_end", "udp", 5353) && r["source"]["port"] == udp_port
    });
    check_end(&udp_end, &udp_open, 17, udp_port, "idle");
    assert_eq!(udp_end["source"]["packets"], 3);
    let m = agent::metrics(&s.lab);
    assert!(m.get("zone_agent_events_total", &[("kind", "flow_end")]) >= 2.0);
    drop(s.agent);
}

/// A small `flow_log_max_bytes` with `flow_log_keep = 2`: FILE, FILE.1 and FILE.2, each
/// within the bound and whole JSON lines, and never a FILE.3. A restarted agent appends to
/// FILE and its event counters continue.
#[test]
fn flow_log_rotates_keeping_the_configured_count() {
    const MAX: u64 = 4096;
    let mut s = setup(
        "ev_rotate",
        &format!("flow_log_max_bytes = {MAX}\nflow_log_keep = 2\n"),
    );
    let before = agent::metrics(&s.lab);
    let dst = s.my.v4.to_string();
    hping3(
        &s.lab,
        &s.inet,
        &["-n", "-S", "-p", "22", "-c", "100", "-i", "u2000", &dst],
    );
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", s.flow_log.display()));
    wait_until(T, "FILE.2 exists and FILE holds the last denial", || {
        rotated(2).exists() && !records(&s.flow_log).is_empty()
    });
    let m = settled(&s.lab);
    let written = events(&m, &before, "deny");
    assert_eq!(written, 100, "{}", m.changes(&before));
    // Enough was written for many rotations past the kept count.
    let line = std::fs::read_to_string(rotated(1)).unwrap();
    let line_len = line.lines().next().unwrap().len() as u64 + 1;
    assert!(
        written * line_len > 5 * MAX,
        "only {written} records of {line_len} bytes"
    );
    assert!(
        !rotated(3).exists(),
        "FILE.3 exists: more than flow_log_keep = 2 kept"
    );
    for p in [s.flow_log.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= MAX, "{} is {size} bytes > {MAX}", p.display());
        let rs = records(&p);
        assert!(!rs.is_empty(), "{} is empty", p.display());
        assert!(
            rs.iter().all(|r| r["event"]["action"] == "deny"),
            "{}",
            p.display()
        );
    }
    // Restart: the counters continue (the kernel's are pinned, the agent's saved), and
    // the next denial is appended to FILE.
    assert!(s.agent.stop().is_some_and(|st| st.success()));
    let kept = records(&s.flow_log).len();
    s.agent = s.start();
    assert_eq!(
        records(&s.flow_log).len(),
        kept,
        "the restart truncated FILE"
    );
    let again = agent::metrics(&s.lab);
    for (name, labels) in [
        ("zone_agent_events_total", [("kind", "deny")]),
        ("zone_agent_events_lost_total", [("stage", "flow_log")]),
    ] {
        assert!(
            again.get(name, &labels) >= m.get(name, &labels),
            "{name}{labels:?} went back after a restart:\n{}",
            again.changes(&m)
        );
    }
    hping3(&s.lab, &s.inet, &["-n", "-S", "-p", "22", "-c", "1", &dst]);
    wait_until(T, "the restarted agent appends to FILE", || {
        // One more line, or (it did not fit) a rotation and a FILE of that one line.
        let n = records(&s.flow_log).len();
        n == kept + 1 || n == 1
    });
    drop(s.agent);
}

/// A filtered `observe` client sees the test's denied connection within a second, not the
/// allowed one; a client that never reads is dropped and counted, and neither /metrics nor
/// another client waits for it.
#[test]
fn observe_shows_a_denial_at_once_and_drops_a_stalled_client() {
    let s = setup("ev_observe", "");
    let attacker = format!("{}/32", s.inet.v4);
    let deny = observe(
        &s,
        &["--json", "--verdict", "deny", "--host", &attacker],
        "observe-deny",
    );
    let human = observe(&s, &["--zone", "mynumber"], "observe-human");
    let flows = observe(
        &s,
        &["--json", "--verdict", "allow", "--rule", "relay-https"],
        "observe-flows",
    );
    let _tcp_server = tcp_echo(&s.lab, &s.my, 443, false);
    tcp_echo_once(&s.lab, &s.lg, s.my.v4, 443, 10);
    // The denied connection, in the background (its SYNs get no answer).
    const CONNECT: &str = "import socket,sys\ntry: socket.create_connection((sys.argv[1], 22), timeout=2)\nexcept OSError: pass\n";
    let py = zone_agent_lab::python();
    let sent_at = Instant::now();
    let _attempt = s.lab.spawn(
        &s.inet.ns,
        &[&py, "-c", CONNECT, &s.my.v4.to_string()],
        &s.lab.log_path("denied-connect"),
    );
    let mut seen = None;
    let found = poll_until(OBSERVE_BOUND, || {
        seen = observed(&deny).into_iter().find(|r| r["dst_port"] == 22);
        seen.is_some()
    });
    let latency = sent_at.elapsed();
    assert!(
        found,
        "observe did not show the denial within {OBSERVE_BOUND:?}:\n{}",
        deny.log_text()
    );
    let r = seen.unwrap();
    eprintln!("observe saw the denied connection {latency:?} after it was started: {r}");
    assert_eq!(r["kind"], "deny");
    assert_eq!(r["reason"], "no_rule");
    assert_eq!(r["from_zone"], "internet");
    assert_eq!(r["to_zone"], "mynumber");
    assert_eq!(r["src_ip"], s.inet.v4.to_string());
    assert!(
        observed(&deny).iter().all(|r| r["kind"] == "deny"),
        "the deny filter let another kind through:\n{}",
        deny.log_text()
    );
    // The human line, and the allowed flow under its rule (not the denial).
    let line = format!(
        "internet -> mynumber tcp {}:{} -> {}:22 reason=no_rule iface=zinet",
        s.inet.v4, r["src_port"], s.my.v4
    );
    wait_until(T, "the human client shows the denial", || {
        human
            .log_text()
            .lines()
            .any(|l| l.contains(" deny ") && l.contains(&line))
    });
    wait_until(T, "the allow/rule client shows the flow", || {
        observed(&flows)
            .iter()
            .any(|r| r["kind"] == "flow_open" && r["dst_port"] == 443)
    });
    assert!(
        observed(&flows)
            .iter()
            .all(|r| r["rule"] == "relay-https" && r["kind"] != "deny"),
        "{}",
        flows.log_text()
    );
    drop((human, flows));

    // A client that asks for everything and never reads.
    let sock = agent::state_dir(&s.lab).join("admin.sock");
    let mut stalled = UnixStream::connect(&sock).unwrap();
    stalled.write_all(b"observe {}\n").unwrap();
    let before = agent::metrics(&s.lab);
    wait_until(T, "the stalled client is counted as connected", || {
        agent::metrics(&s.lab).get("zone_agent_observe_clients", &[]) >= 2.0
    });
    // Far more than its socket buffer holds: 3000 denials in 1.5 s.
    let dst = s.my.v4.to_string();
    let flood = s.lab.spawn(
        &s.inet.ns,
        &[
            "hping3", "-n", "-S", "-p", "23", "-c", "3000", "-i", "u500", &dst,
        ],
        &s.lab.log_path("hping3-observe"),
    );
    let mut worst = Duration::ZERO;
    let dropped = poll_until(Duration::from_secs(15), || {
        let (m, took) = scrape_bounded(&s.lab);
        worst = worst.max(took);
        m.delta(&before, "zone_agent_observe_clients_dropped_total", &[]) >= 1.0
    });
    assert!(
        dropped,
        "the stalled client was not dropped:\n{}",
        agent::metrics(&s.lab).changes(&before)
    );
    eprintln!("slowest /metrics while a client stalled: {worst:?}");
    drop(flood);
    // The other client kept up and still answers; so does the admin socket.
    wait_until(T, "the filtered client saw the later denials", || {
        observed(&deny).iter().any(|r| r["dst_port"] == 23)
    });
    let status = s.lab.run_ok(
        s.lab.gateway(),
        &[
            zone_agent_lab::agent_bin().to_str().unwrap(),
            "status",
            "--json",
            "--state-dir",
            agent::state_dir(&s.lab).to_str().unwrap(),
        ],
    );
    assert!(status.contains("\"generation\""), "{status}");
    wait_until(T, "only the filtered client is left", || {
        agent::metrics(&s.lab).get("zone_agent_observe_clients", &[]) == 1.0
    });
    drop(stalled);
    drop(s.agent);
}

/// `hping3 --flood` of denied SYNs for 3 s: /metrics answers within a second throughout,
/// the budget refuses most events (counted), and every dropped packet is an event or a
/// counted loss: deny events + rate_limited + ring_full == drops.
#[test]
fn a_flood_keeps_the_agent_responsive_and_every_event_is_accounted() {
    let s = setup("ev_flood", "");
    let before = settled(&s.lab);
    let dst = s.my.v4.to_string();
    let mut flood = s.lab.spawn(
        &s.inet.ns,
        &[
            "timeout", "3", "hping3", "-n", "--flood", "-S", "-p", "22", &dst,
        ],
        &s.lab.log_path("hping3-flood"),
    );
    let started = Instant::now();
    let (mut scrapes, mut worst) = (0u32, Duration::ZERO);
    while flood.exited().is_none() {
        let (_, took) = scrape_bounded(&s.lab);
        worst = worst.max(took);
        scrapes += 1;
    }
    let flood_time = started.elapsed();
    let m = settled(&s.lab);
    let drops = m.delta(&before, "zone_agent_drops_total", &[]) as u64;
    let (deny, limited, full) = (
        events(&m, &before, "deny"),
        lost(&m, &before, "rate_limited"),
        lost(&m, &before, "ring_full"),
    );
    let agent_lost = lost(&m, &before, "agent_queue") + lost(&m, &before, "undecodable");
    eprintln!(
        "flood: {drops} packets dropped in {flood_time:?}; {deny} deny events emitted, {limited} rate limited, {full} ring full, {agent_lost} lost in the agent; the agent ingested {:.0} events/s; {scrapes} scrapes, slowest {worst:?}",
        (deny - agent_lost) as f64 / flood_time.as_secs_f64()
    );
    assert!(
        drops > 10_000,
        "the flood was too small to test anything: {drops} drops"
    );
    assert!(limited > 0, "{}", m.changes(&before));
    assert_eq!(
        deny + limited + full,
        drops,
        "every dropped packet is an event or a counted loss:\n{}",
        m.changes(&before)
    );
    assert_eq!(agent_lost, 0, "{}", m.changes(&before));
    assert_eq!(events(&m, &before, "audit"), 0);
    drop(s.agent);
}

/// N allowed and M denied packets of known size move the zone counters by exactly N and M
/// packets and N×frame and M×frame bytes; with `[events] rate = 0, burst = K` the denied
/// packets from one CPU give exactly K deny events (seen by `observe`) and M−K rate-limited.
#[test]
fn counters_and_the_event_budget_are_exact() {
    const N: u64 = 20;
    const M: u64 = 30;
    const K: u64 = 7;
    const PAYLOAD: u64 = 100;
    let s = setup(
        "ev_exact",
        &format!("[events]\nrate = 0\nburst = {K}\nflows = false\n"),
    );
    // Nothing listens on 5353: an echo would make the sender answer each reply with an ICMP
    // error, counted in the same zone pair (the receiver's ICMP errors go the other way).
    let attacker = format!("{}/32", s.inet.v4);
    let watcher = observe(
        &s,
        &["--json", "--verdict", "deny", "--host", &attacker],
        "observe-exact",
    );
    let before = settled(&s.lab);
    assert_eq!(
        before.get("zone_agent_events_total", &[])
            + before.get("zone_agent_events_lost_total", &[]),
        0.0,
        "events before the test took tokens:\n{}",
        before.0
    );
    let dst = s.my.v4.to_string();
    let (n, m, d) = (N.to_string(), M.to_string(), PAYLOAD.to_string());
    hping3(
        &s.lab,
        &s.lg,
        &[
            "-n", "--udp", "-p", "5353", "-d", &d, "-c", &n, "-i", "u10000", &dst,
        ],
    );
    // One CPU sends every denied packet, so one CPU's bucket decides.
    let out = s.lab.run_timeout(
        &s.inet.ns,
        &[
            "taskset", "-c", "0", "hping3", "-n", "-S", "-p", "22", "-d", &d, "-c", &m, "-i",
            "u10000", &dst,
        ],
        Duration::from_secs(30),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("packets transmitted")
            || String::from_utf8_lossy(&out.stdout).contains("packets transmitted"),
        "hping3 did not run: {out:?}"
    );
    let after = settled(&s.lab);
    // Every kind and every stage is exported, also at 0.
    for (name, label, values) in [
        (
            "zone_agent_events_total",
            "kind",
            &["deny", "audit", "flow_open", "flow_end"][..],
        ),
        (
            "zone_agent_events_lost_total",
            "stage",
            &[
                "rate_limited",
                "ring_full",
                "agent_queue",
                "undecodable",
                "flow_log",
            ][..],
        ),
    ] {
        for v in values {
            let sample = format!("{name}{{{label}=\"{v}\"}}");
            assert!(after.0.contains(&sample), "no {sample} in /metrics");
        }
    }
    let zone = |from: &str, verdict: &str, what: &str| {
        after.delta(
            &before,
            what,
            &[
                ("from_zone", from),
                ("to_zone", "mynumber"),
                ("verdict", verdict),
            ],
        ) as u64
    };
    // Ethernet 14 + IPv4 20 + UDP 8 / TCP 20 + payload.
    assert_eq!(zone("lgwan", "allow", "zone_agent_packets_total"), N);
    assert_eq!(
        zone("lgwan", "allow", "zone_agent_bytes_total"),
        N * (14 + 20 + 8 + PAYLOAD)
    );
    assert_eq!(zone("internet", "deny", "zone_agent_packets_total"), M);
    assert_eq!(
        zone("internet", "deny", "zone_agent_bytes_total"),
        M * (14 + 20 + 20 + PAYLOAD)
    );
    assert_eq!(
        events(&after, &before, "deny"),
        K,
        "{}",
        after.changes(&before)
    );
    assert_eq!(
        lost(&after, &before, "rate_limited"),
        M - K,
        "{}",
        after.changes(&before)
    );
    wait_until(T, "observe shows the K events", || {
        observed(&watcher).len() as u64 >= K
    });
    let seen = observed(&watcher);
    assert_eq!(seen.len() as u64, K, "{}", watcher.log_text());
    assert!(
        seen.iter()
            .all(|r| r["dst_port"] == 22 && r["lost_before"] == 0)
    );
    drop(s.agent);
}

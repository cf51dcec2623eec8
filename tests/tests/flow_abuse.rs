//! Abuse of the flow table by hosts that have *some* allowed path (issue 20, findings 1–2),
//! with real traffic through the gateway where zone-agent enforces in XDP.
//!
//! - churn flood: an LGWAN host allowed only web-out floods new SYNs (many distinct tuples,
//!   each sent twice) while a critical-zone connection pushes data both ways; the live
//!   connection must not stall, what the flood did must show in the flow-table counters, and
//!   the table fill must stay within capacity.
//! - forged RST: a RST with a random sequence number, sent from the server's side of a live
//!   connection, must not stop the server's next data.
//!
//! Each test builds its own lab and agent. Needs root; `cargo xtask test` runs it under
//! `unshare`.

use std::path::Path;
use std::time::{Duration, Instant};

use zone_agent_common::{CAP_EMBRYOS, CAP_FLOWS, LABEL_EMBRYOS, LABEL_FLOWS};
use zone_agent_lab::agent::{self, Metrics};
use zone_agent_lab::craft::{ether, scapy};
use zone_agent_lab::fixture::{INTERNET, LG_MAC, LGWAN, MYNUMBER};
use zone_agent_lab::{ChildGuard, Host, HostSpec, Lab, Signal, ThreeZones, wait_until};

const ATTACKER_MAC: &str = "02:00:00:00:20:20";

/// The relay (10.20.0.10, its NIC only) reaches the mynumber server on 443; every LGWAN host
/// may browse the internet (80, 443). Nothing else crosses.
const RULES: &str = r#"[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.0.10/32"]
source_macs = ["02:00:00:00:20:10"]
destinations = ["10.10.0.10/32"]

[[rules]]
name = "web-out"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80", "443"]
"#;

/// The lab's three zones, IPv4 only, LGWAN on two interfaces (the relay's and the
/// attacker's), and [`RULES`].
fn policy() -> String {
    ThreeZones::policy()
        .v4_only()
        .interfaces("lgwan", &["zlgw", "zlgw2"])
        .rules(RULES)
        .build()
}

/// How much later than its interval the server's next line may arrive: anything near this
/// is a stall, not scheduling noise.
const SLACK: Duration = Duration::from_millis(1500);
/// Bound for the lab's helpers to be up and for counters to move.
const T: Duration = Duration::from_secs(10);

/// Accepts one connection, then pushes `tick <n>` every `every` seconds and logs each line
/// the client sends (`from-client <line>`).
const PUSH_SERVER_PY: &str = r#"
import socket, sys, threading, time
addr, port, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(4)
print("listening", flush=True)
conn, peer = srv.accept()
print(f"accept {peer[0]} {peer[1]}", flush=True)
def reader():
    for line in conn.makefile("rb"):
        print(f"from-client {line.decode().strip()}", flush=True)
    print("client closed", flush=True)
threading.Thread(target=reader, daemon=True).start()
n = 0
while True:
    n += 1
    conn.sendall(f"tick {n}\n".encode())
    time.sleep(every)
"#;

/// Connects, prints `local <port>`, sends `hello <n>` every `every` seconds and prints
/// `got <n> <ms since the previous line>` for each line of the server.
const PUSH_CLIENT_PY: &str = r#"
import socket, sys, threading, time
dst, port, src, every = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.create_connection((dst, port), timeout=5, source_address=(src, 0))
s.settimeout(None)
print(f"local {s.getsockname()[1]}", flush=True)
def writer():
    n = 0
    while True:
        time.sleep(every)
        n += 1
        s.sendall(f"hello {n}\n".encode())
threading.Thread(target=writer, daemon=True).start()
last, n = time.monotonic(), 0
for line in s.makefile("rb"):
    now = time.monotonic()
    n += 1
    print(f"got {n} {int((now - last) * 1000)}", flush=True)
    last = now
print("closed", flush=True)
"#;

/// Sends TCP SYNs from `iface` as fast as one Python loop can: every source port from 1024
/// up, to each destination in turn, each frame twice (a second touch makes an LRU entry look
/// used), for `secs` seconds. Prints `sent <frames> <distinct tuples>`.
const SYN_FLOOD_PY: &str = r#"
import socket, struct, sys, time
iface, src_mac, dst_mac, src, dport, secs = sys.argv[1:7]
dsts = sys.argv[7:]
dport, secs = int(dport), float(secs)
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
frames = []
for d in dsts:
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0,
                               socket.inet_aton(src), socket.inet_aton(d)))
    struct.pack_into("!H", ip, 10, csum(bytes(ip)))
    tcp = struct.pack("!HHIIBBHHH", 0, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)
    frames.append(bytearray(eth + bytes(ip) + tcp))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
print("flooding", flush=True)
end = time.monotonic() + secs
sent, tuples, done = 0, set(), False
while not done:
    for sport in range(1024, 65536):
        for i, f in enumerate(frames):
            struct.pack_into("!H", f, 34, sport)
            try:
                s.send(f)
                s.send(f)
                sent += 2
            except OSError:
                pass
            if len(tuples) < 2000000:
                tuples.add((sport, i))
        if sport % 64 == 0 and time.monotonic() >= end:
            done = True
            break
print(f"sent {sent} {len(tuples)}", flush=True)
"#;

/// An LGWAN host `<net4>.<last>/24` behind `gw_iface` (gateway `.1`), IPv4 only.
fn lgwan(gw_iface: &str, net4: &str, last: u8, mac: &str) -> HostSpec {
    HostSpec {
        gw_iface: gw_iface.into(),
        v4: format!("{net4}.{last}/24"),
        gw_v4: format!("{net4}.1/24"),
        mac: mac.into(),
        ..LGWAN.host_v4()
    }
}

/// Field order is drop order: the clients and the agent stop before the lab goes.
struct Env {
    agent: ChildGuard,
    lab: Lab,
    /// 10.10.0.10 behind `zmyn`.
    my: Host,
    /// The relay, 10.20.0.10 behind `zlgw`.
    lg: Host,
    /// Another LGWAN host, 10.20.0.20 behind `zlgw2`: only web-out applies to it.
    attacker: Host,
    /// 198.51.100.10 behind `zinet`.
    inet: Host,
}

impl Env {
    fn new(test: &str) -> Env {
        Env::with_agent(test, None)
    }

    /// `bin`: another agent binary than the one under test.
    fn with_agent(test: &str, bin: Option<&Path>) -> Env {
        let mut lab = Lab::new(test);
        let my = lab.add_host(MYNUMBER.host_v4());
        let lg = lab.add_host(lgwan("zlgw", "10.20.0", 10, LG_MAC));
        let attacker = lab.add_host(lgwan("zlgw2", "10.20.1", 20, ATTACKER_MAC));
        let inet = lab.add_host(INTERNET.host_v4());
        let agent = match bin {
            None => agent::start(&lab, &policy()),
            Some(bin) => {
                let path = lab.dir().join("policy.toml");
                std::fs::write(&path, policy()).expect("write the policy");
                agent::start_bin(&lab, bin, &path)
            }
        };
        Env {
            agent,
            lab,
            my,
            lg,
            attacker,
            inet,
        }
    }

    fn metrics(&self) -> Metrics {
        agent::metrics(&self.lab)
    }

    /// A live connection from `client` to `server:port`: the server pushes a line every
    /// `push` seconds, the client sends one every `every` seconds.
    fn live(&self, client: &Host, server: &Host, port: u16, push: f64, every: f64) -> Live {
        let py = zone_agent_lab::python();
        let (addr, port_s, push_s) = (server.v4.to_string(), port.to_string(), push.to_string());
        let log = self.lab.log_path(&format!("{}-push-server", server.ns));
        let mut srv = self.lab.spawn(
            &server.ns,
            &[&py, "-u", "-c", PUSH_SERVER_PY, &addr, &port_s, &push_s],
            &log,
        );
        wait_until(T, "the push server listens", || {
            assert!(
                srv.exited().is_none(),
                "push server failed:\n{}",
                srv.log_text()
            );
            srv.log_text().contains("listening")
        });
        let log = self.lab.log_path(&format!("{}-push-client", client.ns));
        let (src, every_s) = (client.v4.to_string(), every.to_string());
        let mut cli = self.lab.spawn(
            &client.ns,
            &[
                &py,
                "-u",
                "-c",
                PUSH_CLIENT_PY,
                &addr,
                &port_s,
                &src,
                &every_s,
            ],
            &log,
        );
        let mut local = 0;
        wait_until(T, "the client is connected and receiving", || {
            assert!(
                cli.exited().is_none(),
                "push client failed:\n{}",
                cli.log_text()
            );
            let text = cli.log_text();
            local = text
                .lines()
                .find_map(|l| l.strip_prefix("local ")?.trim().parse().ok())
                .unwrap_or(0);
            local != 0 && text.contains("got 1 ")
        });
        Live {
            client: cli,
            server: srv,
            local_port: local,
            push: Duration::from_secs_f64(push),
        }
    }
}

struct Live {
    client: ChildGuard,
    server: ChildGuard,
    local_port: u16,
    /// The server's interval.
    push: Duration,
}

impl Live {
    /// The longest the client may wait for the server's next line.
    fn max_gap(&self) -> u64 {
        (self.push + SLACK).as_millis() as u64
    }

    /// Gaps (ms) between the server's lines at the client, in order.
    fn gaps(&self) -> Vec<u64> {
        self.client
            .log_text()
            .lines()
            .filter_map(|l| {
                l.strip_prefix("got ")?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Lines of the client that reached the server.
    fn lines_from_client(&self) -> usize {
        self.server
            .log_text()
            .lines()
            .filter(|l| l.starts_with("from-client "))
            .count()
    }

    /// Waits until `n` more server lines arrive than there were `since`.
    #[track_caller]
    fn wait_more(&self, since: usize, n: usize, timeout: Duration, what: &str) {
        wait_until(timeout, what, || self.gaps().len() >= since + n);
    }

    fn describe(&self) -> String {
        let gaps = self.gaps();
        let tail: Vec<_> = gaps.iter().rev().take(20).rev().collect();
        format!(
            "{} lines at the client, max gap {:?} ms, last gaps {tail:?}; {} client lines at the server",
            gaps.len(),
            gaps.iter().max(),
            self.lines_from_client()
        )
    }
}

fn gauge(m: &Metrics, name: &str, map: &str) -> f64 {
    m.get(name, &[("map", map)])
}

#[test]
fn churn_flood_does_not_evict_live_flows() {
    zone_agent_lab::require_root();
    let env = Env::new("flow_churn");
    // A relay connection between transfers: a line from the server every 4 s, from the
    // client every 15 s. Its flow is idle long enough for the flood to push it out of a
    // shared LRU (main 74916ca: the server's data was dropped until the client sent again).
    let live = env.live(&env.lg, &env.my, 443, 4.0, 15.0);
    let before = env.metrics();
    let start_lines = live.gaps().len();

    // The flood: 8 internet destinations x every source port, each SYN twice.
    let a = &env.attacker;
    let dsts: Vec<String> = (100..108).map(|i| format!("198.51.100.{i}")).collect();
    let py = zone_agent_lab::python();
    let secs = "25";
    let (src, gw_mac) = (a.v4.to_string(), a.gw_mac.clone());
    let mut argv = vec![
        py.as_str(),
        "-u",
        "-c",
        SYN_FLOOD_PY,
        "eth0",
        &a.mac,
        &gw_mac,
        &src,
        "80",
        secs,
    ];
    argv.extend(dsts.iter().map(String::as_str));
    let started = Instant::now();
    let mut flood = env.lab.spawn(&a.ns, &argv, &env.lab.log_path("syn-flood"));

    // Scrapes during the flood: bounded time, fill within capacity.
    let mut scrapes = vec![];
    let mut worst_scrape = Duration::ZERO;
    while flood.exited().is_none() && started.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        let m = env.metrics();
        worst_scrape = worst_scrape.max(t.elapsed());
        scrapes.push(m);
        std::thread::sleep(Duration::from_millis(500));
    }
    let flood_secs = started.elapsed();
    flood.wait_exit(T).expect("the flood ends");
    let flood_log = flood.log_text();
    let (sent, tuples): (u64, u64) = flood_log
        .lines()
        .find_map(|l| {
            let mut w = l.strip_prefix("sent ")?.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .unwrap_or_else(|| panic!("the flood printed no count:\n{flood_log}"));
    let during = live.gaps();
    let client_lines_after_flood = live.lines_from_client();

    // After the flood: the live connection still goes both ways.
    let after_lines = during.len();
    live.wait_more(
        after_lines,
        2,
        live.push * 2 + SLACK,
        "the server's data still arrives after the flood",
    );
    wait_until(
        Duration::from_secs(20),
        "the relay's data still reaches the server after the flood",
        || live.lines_from_client() > client_lines_after_flood,
    );
    let after = env.metrics();
    let ev = |e: &str| after.delta(&before, "zone_agent_flow_events_total", &[("event", e)]);
    let evicted = after.delta(
        &before,
        "zone_agent_flow_evictions_total",
        &[("map", LABEL_EMBRYOS)],
    );
    let report = format!(
        "flood: {sent} frames, {tuples} distinct tuples in {flood_secs:?}; opened {} promoted {} evicted {evicted}; \
         worst scrape {worst_scrape:?} over {} scrapes; live: {}\ncounters that moved:\n{}",
        ev("opened"),
        ev("promoted"),
        scrapes.len(),
        live.describe(),
        after.changes(&before)
    );
    println!("{report}");

    let max_gap = during[start_lines..].iter().max().copied().unwrap_or(0);
    assert!(
        max_gap < live.max_gap(),
        "the live connection stalled {max_gap} ms during the flood (bound {} ms);\n{report}\nagent log:\n{}",
        live.max_gap(),
        env.agent.log_text()
    );
    let expected = (flood_secs.as_secs_f64() / live.push.as_secs_f64()) as usize;
    assert!(
        during.len() - start_lines + 1 >= expected,
        "too few lines arrived during the flood;\n{report}"
    );
    for m in scrapes.iter().chain([&after]) {
        assert!(
            gauge(m, "zone_agent_map_entries", LABEL_EMBRYOS) <= f64::from(CAP_EMBRYOS),
            "{report}"
        );
        assert!(
            gauge(m, "zone_agent_map_entries", LABEL_FLOWS) <= f64::from(CAP_FLOWS),
            "{report}"
        );
        assert!(
            m.get("zone_agent_flows_active", &[]) <= f64::from(CAP_EMBRYOS + CAP_FLOWS),
            "{report}"
        );
    }
    assert!(
        worst_scrape < Duration::from_secs(3),
        "a scrape took {worst_scrape:?} during the flood;\n{report}"
    );
    // The flood's SYNs were counted as embryonic flows, and it churned them: more distinct
    // tuples than the embryonic table holds means evictions, counted.
    assert!(ev("opened") > f64::from(CAP_EMBRYOS) / 2.0, "{report}");
    if tuples > u64::from(CAP_EMBRYOS) + 1000 && ev("opened") > f64::from(CAP_EMBRYOS) + 1000.0 {
        assert!(
            evicted > 0.0,
            "the embryonic table churned but no eviction was counted;\n{report}"
        );
    }
    assert_eq!(
        after.delta(
            &before,
            "zone_agent_drops_total",
            &[("reason", "table_full")]
        ),
        0.0,
        "{report}"
    );
    // The live connection's flow is a replied one: it sits in the table the flood cannot touch.
    assert!(
        gauge(&after, "zone_agent_map_entries", LABEL_FLOWS) >= 1.0,
        "{report}"
    );
}

#[test]
fn forged_rst_does_not_stall_a_live_flow() {
    zone_agent_lab::require_root();
    let env = Env::new("flow_rst");
    // The relay browses the internet server; the client sends nothing during the test, so
    // nothing but the flow carries the server's data back.
    let live = env.live(&env.lg, &env.inet, 443, 0.02, 3600.0);
    let before = env.metrics();
    let (lg, inet) = (&env.lg, &env.inet);
    let n = live.gaps().len();
    // From the server's side (its address: the internet zone is 0.0.0.0/0, so not spoofed),
    // a RST with a random sequence number.
    let rst = format!(
        "{}/IP(src='{}', dst='{}')/TCP(sport=443, dport={}, flags='R', seq=RandInt())",
        ether(inet),
        inet.v4,
        lg.v4,
        live.local_port
    );
    let sent_at = Instant::now();
    scapy(&env.lab, inet, &[rst.clone(), rst]);
    // The server's next data arrives at once, and keeps arriving.
    let rst_lines = live.gaps().len();
    let t = Instant::now();
    live.wait_more(
        rst_lines,
        1,
        SLACK,
        "the server's next data after the forged RST arrives",
    );
    let first = t.elapsed();
    live.wait_more(
        rst_lines,
        100,
        T,
        "the server's data keeps arriving after the forged RST",
    );
    wait_until(T, "the RSTs are counted", || {
        env.metrics().delta(
            &before,
            "zone_agent_flow_events_total",
            &[("event", "reset")],
        ) >= 2.0
    });
    let after = env.metrics();
    let gaps = live.gaps();
    let max_gap = gaps[n..].iter().max().copied().unwrap_or(0);
    let report = format!(
        "RST sent {:?} ago; first data after it in {first:?}; max gap since {max_gap} ms; {}\ncounters that moved:\n{}",
        sent_at.elapsed(),
        live.describe(),
        after.changes(&before)
    );
    println!("{report}");
    assert!(
        max_gap < live.max_gap(),
        "the flow stalled after a forged RST;\n{report}"
    );
    assert_eq!(
        after.delta(&before, "zone_agent_drops_total", &[("reason", "no_rule")]),
        0.0,
        "{report}"
    );
}

/// Upgrade from a build with another flow-table ABI (main 74916ca: one LRU of flows) while a
/// connection carries only the server's data: the new agent replaces the incompatible pins,
/// adopts their flows (re-decided on their next packet) and the data keeps arriving. Needs
/// the old build's binary in `ZA_OLD_AGENT_BIN`; without it the test says so and passes.
#[test]
fn upgrade_from_another_flow_abi_keeps_live_flows() {
    let Some(old) = std::env::var_os("ZA_OLD_AGENT_BIN") else {
        eprintln!("skipped: set ZA_OLD_AGENT_BIN to an agent binary of ABI 1 (e.g. main 74916ca)");
        return;
    };
    zone_agent_lab::require_root();
    let mut env = Env::with_agent("flow_upgrade", Some(Path::new(&old)));
    let live = env.live(&env.lg, &env.my, 443, 0.02, 3600.0);
    env.agent.signal(Signal::SIGKILL);
    env.agent
        .wait_exit(T)
        .expect("the old agent dies on SIGKILL");
    let n = live.gaps().len();
    env.agent = agent::start(&env.lab, &policy());
    let log = env.agent.log_text();
    assert!(
        log.contains("incompatible"),
        "the new agent did not replace the old pins:\n{log}"
    );
    live.wait_more(
        live.gaps().len(),
        100,
        T,
        "the server's data keeps arriving after the upgrade",
    );
    let max_gap = live.gaps()[n..].iter().max().copied().unwrap_or(0);
    let report = format!(
        "max gap since the old agent died {max_gap} ms; {}\nagent log:\n{log}",
        live.describe()
    );
    println!("{report}");
    assert!(
        max_gap < live.max_gap(),
        "the live connection stalled across the upgrade;\n{report}"
    );
    assert!(log.contains("adopted"), "{report}");
}

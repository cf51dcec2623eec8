//! End-to-end costs through a lab gateway (three zone hosts behind a gateway namespace), in
//! one run: TCP goodput (iperf3) and a connection rate with no filter, with zone-agent and
//! with nftables enforcing the same policy (`zone-agent policy export --format nft`); a flood
//! of denied datagrams and the softirq CPU it costs; reloads of a large policy under
//! continuous allowed traffic; the agent's CPU and memory at idle and in a deny storm.
//!
//! Run by `cargo xtask bench` (root, sandboxed like the lab tests). Every namespace is the
//! lab's; nothing is attached to the host's network. Traffic goes only between lab hosts.
//!
//! The same binary is also its own traffic helpers, started inside the lab's namespaces:
//! `crr-server ADDR PORT`, `crr-client ADDR PORT SECONDS THREADS`, `probe ADDR PORT MS`,
//! `flood SRC DST PORT SECONDS`, `xdp-pass OBJECT PIN_DIR IFACE...`.
//!
//! Arguments: `[--rounds N] [--seconds N] [--crr-seconds N] [--flood-seconds N]
//! [--idle-seconds N] [--rules N] [--reload-rules N] [--reload-seconds N] [--json FILE]`.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use zone_agent_lab::agent::{self, write_policy};
use zone_agent_lab::bench::policy::{self as generated, Base, Variant};
use zone_agent_lab::bench::{
    EndToEnd, Flood, Gate, ProcCost, ReloadUnderLoad, Throughput, arg, xdp_tools_object,
};
use zone_agent_lab::{
    ChildGuard, Host, Lab, ThreeZones, agent_bin, continuous, continuous_summary, tcp_echo,
    udp_echo,
};

const AGENT_READY: Duration = Duration::from_secs(60);
const IPERF_PORT: u16 = 5201;
const CRR_PORT: u16 = 5300;
/// A port the policy does not open: the sanity probe and the flood aim here.
const DENIED_TCP: u16 = 5999;
const DENIED_UDP: u16 = 9;
const ECHO_TCP: u16 = 443;
const ECHO_UDP: u16 = 5353;

/// The lab's three zones; the rules follow.
static HEADER: LazyLock<String> = LazyLock::new(|| ThreeZones::policy().build());

/// The services the benchmark's traffic uses, from the lgwan host (10.20.0.10) to the
/// mynumber host (10.10.0.10); the generated rules go around them.
const SERVICES: &str = r#"[[rules]]
name = "iperf"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["5201"]
acknowledge = "benchmark traffic"
sources = ["10.20.0.10/32"]

[[rules]]
name = "requests"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["5300"]
acknowledge = "benchmark traffic"
sources = ["10.20.0.10/32"]

[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
acknowledge = "benchmark traffic"
sources = ["10.20.0.10/32", "fd20::10/128"]

[[rules]]
name = "relay-udp"
from = "lgwan"
to = "mynumber"
protocol = "udp"
ports = ["5353"]
acknowledge = "benchmark traffic"
sources = ["10.20.0.10/32", "fd20::10/128"]

[[rules]]
name = "admin-ssh"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["22"]
source_macs = ["02:00:00:00:20:10"]
acknowledge = "benchmark"

[[rules]]
name = "web-out"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80"]
sources = ["10.20.0.10/32"]
"#;

fn base() -> Base<'static> {
    Base {
        header: &HEADER,
        rules: SERVICES,
        rule_count: 6,
    }
}

// === helpers run inside the lab's namespaces ===

const REQUEST: &[u8; 32] = b"zone-agent bench request ......\n";

/// Accepts forever on two threads; answers each connection's request, then closes first (so
/// the TIME_WAIT state, and no port shortage, is on this side).
fn crr_server(args: &[String]) {
    let addr = SocketAddr::new(
        args[0].parse().expect("ADDR"),
        args[1].parse().expect("PORT"),
    );
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let serve = move |l: std::net::TcpListener| {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 64];
            let mut got = 0;
            while got < REQUEST.len() {
                match c.read(&mut buf[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            let _ = c.write_all(REQUEST);
        }
    };
    let other = listener.try_clone().expect("clone listener");
    let t = std::thread::spawn(move || serve(other));
    serve(listener);
    let _ = t.join();
}

/// `THREADS` loops of connect, request, response, close for `SECONDS`; prints the counts.
fn crr_client(args: &[String]) {
    let addr = SocketAddr::new(
        args[0].parse().expect("ADDR"),
        args[1].parse().expect("PORT"),
    );
    let seconds: f64 = args[2].parse().expect("SECONDS");
    let threads: usize = args[3].parse().expect("THREADS");
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut err) = (0u64, 0u64);
                while Instant::now() < end {
                    let once = || -> std::io::Result<bool> {
                        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                        s.set_read_timeout(Some(Duration::from_secs(1)))?;
                        s.write_all(REQUEST)?;
                        let mut buf = [0u8; 64];
                        let mut got = 0;
                        loop {
                            match s.read(&mut buf[got..])? {
                                0 => break,
                                n => got += n,
                            }
                        }
                        Ok(got == REQUEST.len())
                    };
                    match once() {
                        Ok(true) => ok += 1,
                        _ => err += 1,
                    }
                }
                (ok, err)
            })
        })
        .collect();
    let (mut ok, mut err) = (0, 0);
    for w in workers {
        let (o, e) = w.join().expect("worker");
        ok += o;
        err += e;
    }
    println!(
        "crr ok={ok} errors={err} seconds={:.3}",
        start.elapsed().as_secs_f64()
    );
}

/// Exit 0 iff a TCP connection to ADDR:PORT completes within MS milliseconds.
fn probe(args: &[String]) {
    let addr = SocketAddr::new(
        args[0].parse().expect("ADDR"),
        args[1].parse().expect("PORT"),
    );
    let ms: u64 = args[2].parse().expect("MS");
    let ok = TcpStream::connect_timeout(&addr, Duration::from_millis(ms)).is_ok();
    std::process::exit(if ok { 0 } else { 1 });
}

/// Sends small UDP datagrams from SRC to DST:PORT as fast as one socket can for SECONDS.
fn flood(args: &[String]) {
    let src: IpAddr = args[0].parse().expect("SRC");
    let dst = SocketAddr::new(
        args[1].parse().expect("DST"),
        args[2].parse().expect("PORT"),
    );
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind");
    // Connected: no route lookup per datagram, so the sender is as fast as it gets.
    sock.connect(dst).expect("connect");
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let payload = [0x5au8; 18];
    let mut sent = 0u64;
    'outer: loop {
        for _ in 0..256 {
            // ENOBUFS and ICMP errors reported back are part of a flood: keep going.
            if sock.send(&payload).is_ok() {
                sent += 1;
            }
        }
        if Instant::now() >= end {
            break 'outer;
        }
    }
    println!("sent {sent}");
}

/// Loads an XDP program that passes everything and attaches it in native mode to each
/// IFACE; it stays attached until this process ends (the links are its file descriptors).
fn xdp_pass(args: &[String]) {
    let obj = fs::read(&args[0]).unwrap_or_else(|e| panic!("read {}: {e}", args[0]));
    // The object pins its maps by name: into the lab's bpffs, not the host's.
    let mut ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(&args[1])
        .load(&obj)
        .expect("load the object");
    let (_, prog) = ebpf.programs_mut().next().expect("a program");
    let prog: &mut aya::programs::Xdp = prog.try_into().expect("an XDP program");
    prog.load().expect("verifier");
    for iface in &args[2..] {
        prog.attach(iface, aya::programs::XdpMode::Driver)
            .unwrap_or_else(|e| panic!("attach to {iface}: {e}"));
    }
    println!("attached");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// xdp-tools' allow-mode filter of Ethernet addresses only: with nothing listed it passes
/// every frame after two hash lookups.
fn find_xdp_pass() -> Option<PathBuf> {
    xdp_tools_object("xdpfilt_alw_eth.o")
}

// === the benchmark ===

struct Args {
    rounds: usize,
    seconds: u32,
    crr_seconds: f64,
    flood_seconds: f64,
    idle_seconds: f64,
    rules: usize,
    reload_rules: usize,
    reload_seconds: u32,
    json: Option<String>,
}

fn parse_args(args: &[String]) -> Args {
    let num = |name: &str, default: f64| -> f64 {
        arg(args, name).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| panic!("{name} N"))
        })
    };
    Args {
        rounds: num("--rounds", 3.0) as usize,
        seconds: num("--seconds", 5.0) as u32,
        crr_seconds: num("--crr-seconds", 3.0),
        flood_seconds: num("--flood-seconds", 5.0),
        idle_seconds: num("--idle-seconds", 5.0),
        rules: num("--rules", 1000.0) as usize,
        reload_rules: num("--reload-rules", 10_000.0) as usize,
        reload_seconds: num("--reload-seconds", 20.0) as u32,
        json: arg(args, "--json"),
    }
}

/// The lab, its long-running servers and the gate currently enforcing. Field order is drop
/// order: children stop before the lab goes.
struct Bench {
    agent: Option<ChildGuard>,
    xdp_pass: Option<ChildGuard>,
    servers: Vec<ChildGuard>,
    gate: Gate,
    nft_script: Option<PathBuf>,
    my: Host,
    lg: Host,
    lab: Lab,
}

/// `ethtool -K eth0 tso on|off` in a host namespace.
fn set_tso(lab: &Lab, ns: &str, on: bool) {
    lab.run_ok(
        ns,
        &[
            "ethtool",
            "-K",
            "eth0",
            "tso",
            if on { "on" } else { "off" },
        ],
    );
}

impl Bench {
    fn new() -> Bench {
        let mut lab = Lab::new("bench_end_to_end");
        let ThreeZones { my, lg, inet } = ThreeZones::add(&mut lab);
        // XDP on a veth turns TCP segmentation offload off on its peer (a program without
        // multi-buffer support cannot take 64 KB frames), so under zone-agent the hosts send
        // MTU-sized frames. Every gate gets the same: TSO off on the hosts, as a gateway
        // behind physical NICs receives MTU-sized frames whatever filters it.
        for h in [&my, &lg, &inet] {
            set_tso(&lab, &h.ns, false);
        }
        let mut b = Bench {
            agent: None,
            xdp_pass: None,
            servers: vec![],
            gate: Gate::NoFilter,
            nft_script: None,
            my,
            lg,
            lab,
        };
        let my_addr = b.my.v4.to_string();
        let exe = Self::exe();
        for port in [CRR_PORT, DENIED_TCP] {
            let log = b.lab.log_path(&format!("crr-server-{port}"));
            let g = b.lab.spawn(
                &b.my.ns,
                &[&exe, "crr-server", &my_addr, &port.to_string()],
                &log,
            );
            b.servers.push(g);
            b.wait_listening(port);
        }
        let iperf = b.lab.spawn(
            &b.my.ns,
            &[
                "iperf3",
                "-s",
                "-B",
                &my_addr,
                "-p",
                &IPERF_PORT.to_string(),
            ],
            &b.lab.log_path("iperf3-server"),
        );
        b.servers.push(iperf);
        b.wait_listening(IPERF_PORT);
        b.servers.push(tcp_echo(&b.lab, &b.my, ECHO_TCP, false));
        b.servers.push(udp_echo(&b.lab, &b.my, ECHO_UDP, false));
        b
    }

    fn wait_listening(&self, port: u16) {
        let filter = format!("sport = :{port}");
        zone_agent_lab::wait_until(
            Duration::from_secs(10),
            &format!("a server listens on {port}"),
            || {
                String::from_utf8_lossy(
                    &self.lab.run(&self.my.ns, &["ss", "-ltnH", &filter]).stdout,
                )
                .contains(&format!(":{port}"))
            },
        );
    }

    fn exe() -> String {
        std::env::current_exe()
            .expect("own path")
            .to_str()
            .expect("UTF-8 path")
            .to_owned()
    }

    fn gw(&self) -> &str {
        self.lab.gateway()
    }

    fn state_dir(&self) -> PathBuf {
        agent::state_dir(&self.lab)
    }

    fn pin_dir(&self) -> PathBuf {
        agent::pin_dir(&self.lab)
    }

    /// Starts `zone-agent run` with `policy`; returns how long it took to serve metrics.
    fn start_agent(&mut self, policy: &Path) -> Result<f64, String> {
        let mut start = agent::Start::new(&self.lab, policy);
        start.ready_within = AGENT_READY;
        start.poll = Duration::from_millis(20);
        let started = Instant::now();
        let mut agent = start.spawn();
        let ready = start
            .wait_ready(&mut agent, || Ok::<(), std::convert::Infallible>(()))
            .unwrap_or_else(|never| match never {});
        if let Err(why) = ready {
            return Err(format!("{why}: {}", tail(&agent.log_text())));
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.agent = Some(agent);
        Ok(ms)
    }

    /// Stops the agent and removes its pinned enforcement; checks that no XDP is left.
    fn stop_agent(&mut self) -> Result<(), String> {
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        let bin = agent_bin();
        let out = self.lab.run(
            self.gw(),
            &[
                bin.to_str().expect("UTF-8"),
                "detach",
                "--pin-dir",
                self.pin_dir().to_str().expect("UTF-8"),
                "--state-dir",
                self.state_dir().to_str().expect("UTF-8"),
            ],
        );
        if !out.status.success() {
            return Err(format!(
                "zone-agent detach: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.no_xdp_left()
    }

    fn no_xdp_left(&self) -> Result<(), String> {
        let links = self.lab.ip(self.gw(), &["-d", "link", "show"]);
        if links.contains("prog/xdp") {
            return Err(format!("XDP still attached:\n{links}"));
        }
        Ok(())
    }

    /// `zone-agent policy check`: a benchmark policy should load without warnings (they
    /// would be part of what a load costs); says the first one if not.
    fn check_policy(&self, policy: &Path) {
        let bin = agent_bin();
        let out = self.lab.run(
            self.gw(),
            &[
                bin.to_str().expect("UTF-8"),
                "policy",
                "check",
                policy.to_str().expect("UTF-8"),
            ],
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(w) = text.lines().find(|l| l.contains("warning")) {
            eprintln!(
                "end_to_end: {} has warnings, the first: {w}",
                policy.display()
            );
        }
    }

    fn admin(&self, cmd: &str) -> Result<serde_json::Value, String> {
        let bin = agent_bin();
        let out = self.lab.run(
            self.gw(),
            &[
                bin.to_str().expect("UTF-8"),
                cmd,
                "--json",
                "--state-dir",
                self.state_dir().to_str().expect("UTF-8"),
            ],
        );
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "zone-agent {cmd} --json: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `zone-agent policy export --format nft` of `policy`, run in the gateway (the policy's
    /// interfaces exist there). `Err` says why there is no nftables ruleset.
    fn export_nft(&mut self, policy: &Path) -> Result<(), String> {
        let bin = agent_bin();
        let out = self.lab.run(
            self.gw(),
            &[
                bin.to_str().expect("UTF-8"),
                "policy",
                "export",
                policy.to_str().expect("UTF-8"),
                "--format",
                "nft",
            ],
        );
        let script = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || !script.contains("zone_agent") {
            return Err(format!(
                "`zone-agent policy export --format nft` gave no ruleset ({}): {}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr))
            ));
        }
        let path = self.lab.dir().join("policy.nft");
        fs::write(&path, script).map_err(|e| e.to_string())?;
        // Load it once to find a script nft rejects before any measurement.
        let check = self.lab.run(
            self.gw(),
            &["nft", "-c", "-f", path.to_str().expect("UTF-8")],
        );
        if !check.status.success() {
            return Err(format!(
                "nft -c rejects the exported ruleset: {}",
                tail(&String::from_utf8_lossy(&check.stderr))
            ));
        }
        self.nft_script = Some(path);
        Ok(())
    }

    fn set_gate(&mut self, gate: Gate, policy: &Path) -> Result<(), String> {
        if gate == self.gate {
            return Ok(());
        }
        match self.gate {
            Gate::NoFilter => {}
            Gate::XdpPass => {
                if let Some(mut p) = self.xdp_pass.take() {
                    p.stop();
                }
                self.no_xdp_left()?;
            }
            Gate::ZoneAgent => self.stop_agent()?,
            Gate::Nftables => {
                let out = self
                    .lab
                    .run(self.gw(), &["nft", "delete", "table", "inet", "zone_agent"]);
                if !out.status.success() {
                    return Err(format!(
                        "nft delete table: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        self.gate = Gate::NoFilter;
        match gate {
            Gate::NoFilter => {}
            Gate::XdpPass => {
                let obj = find_xdp_pass().ok_or("xdpfilt_alw_eth.o (xdp-tools) not found")?;
                let pins = self.lab.bpffs().join("xdp-pass");
                fs::create_dir_all(&pins).map_err(|e| e.to_string())?;
                let argv = [
                    Self::exe(),
                    "xdp-pass".into(),
                    obj.display().to_string(),
                    pins.display().to_string(),
                    "zmyn".into(),
                    "zlgw".into(),
                    "zinet".into(),
                ];
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let mut g = self
                    .lab
                    .spawn(self.gw(), &argv, &self.lab.log_path("xdp-pass"));
                let t = Instant::now();
                while !g.log_text().contains("attached") {
                    if g.exited().is_some() || t.elapsed() > Duration::from_secs(20) {
                        return Err(format!(
                            "the XDP pass-through program did not attach: {}",
                            tail(&g.log_text())
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                self.xdp_pass = Some(g);
            }
            Gate::ZoneAgent => {
                self.start_agent(policy)?;
            }
            Gate::Nftables => {
                let script = self.nft_script.clone().ok_or("no nftables ruleset")?;
                let out = self
                    .lab
                    .run(self.gw(), &["nft", "-f", script.to_str().expect("UTF-8")]);
                if !out.status.success() {
                    return Err(format!("nft -f: {}", String::from_utf8_lossy(&out.stderr)));
                }
            }
        }
        self.gate = gate;
        Ok(())
    }

    /// A benchmark of an open gate means nothing: the denied port must be closed under a
    /// filter and open without one.
    fn sanity(&self) -> Result<(), String> {
        let open = self
            .lab
            .run_timeout(
                &self.lg.ns,
                &[
                    &Self::exe(),
                    "probe",
                    &self.my.v4.to_string(),
                    &DENIED_TCP.to_string(),
                    "700",
                ],
                Duration::from_secs(5),
            )
            .status
            .success();
        let want = !self.gate.filters();
        if open != want {
            return Err(format!(
                "{}: a connection to the denied port {DENIED_TCP} {}",
                self.gate.name(),
                if open { "passed" } else { "was blocked" }
            ));
        }
        Ok(())
    }

    /// iperf3 goodput (received bits/s) and retransmissions.
    fn iperf(&self, seconds: u32) -> Result<(f64, u64), String> {
        let argv = [
            "iperf3",
            "-c",
            &self.my.v4.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &seconds.to_string(),
            "-O",
            "1",
            "-J",
        ];
        let out = self.lab.run_timeout(
            &self.lg.ns,
            &argv,
            Duration::from_secs(u64::from(seconds) + 20),
        );
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 -J output: {e}"))?;
        if let Some(e) = v["error"].as_str() {
            return Err(format!("iperf3: {e}"));
        }
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .ok_or("iperf3: no sum_received")?;
        Ok((
            bps,
            v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        ))
    }

    /// Connections per second and failed connections.
    fn crr(&self, seconds: f64) -> Result<(f64, u64), String> {
        let argv = [
            Self::exe(),
            "crr-client".into(),
            self.my.v4.to_string(),
            CRR_PORT.to_string(),
            seconds.to_string(),
            "2".into(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self
            .lab
            .run_timeout(&self.lg.ns, &argv, Duration::from_secs_f64(seconds + 15.0));
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| -> Option<f64> {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
        };
        match (field("ok="), field("errors="), field("seconds=")) {
            (Some(ok), Some(err), Some(s)) => Ok((ok / s, err as u64)),
            _ => Err(format!(
                "crr-client printed no counts: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    fn link_packets(&self, ns: &str, dir: &str) -> u64 {
        let out = self
            .lab
            .ip(ns, &["-s", "-j", "link", "show", "dev", "eth0"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v[0]["stats64"][dir]["packets"].as_u64().unwrap_or(0)
    }

    fn flood(&mut self, seconds: f64) -> Flood {
        let before = cpu_times();
        let (sent0, got0) = (
            self.link_packets(&self.lg.ns, "tx"),
            self.link_packets(&self.my.ns, "rx"),
        );
        let t = Instant::now();
        let argv = [
            Self::exe(),
            "flood".into(),
            self.lg.v4.to_string(),
            self.my.v4.to_string(),
            DENIED_UDP.to_string(),
            seconds.to_string(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self
            .lab
            .run_timeout(&self.lg.ns, &argv, Duration::from_secs_f64(seconds + 10.0));
        let elapsed = t.elapsed().as_secs_f64();
        let after = cpu_times();
        let (sent1, got1) = (
            self.link_packets(&self.lg.ns, "tx"),
            self.link_packets(&self.my.ns, "rx"),
        );
        if !out.status.success() {
            eprintln!("flood helper: {}", String::from_utf8_lossy(&out.stderr));
        }
        Flood {
            gate: self.gate,
            seconds: elapsed,
            sent: sent1.saturating_sub(sent0),
            delivered: got1.saturating_sub(got0),
            softirq_ns: after.softirq_ns.saturating_sub(before.softirq_ns),
            cpu_ns: after.total_ns.saturating_sub(before.total_ns),
            cpus: after.cpus,
            idle_seconds: 0.0,
            idle_softirq_ns: 0,
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

struct CpuTimes {
    softirq_ns: u64,
    total_ns: u64,
    cpus: usize,
}

/// `/proc/stat`: the summed `cpu` line, in ns. Host-wide: softirq work of the lab's veths
/// runs on whichever CPU the sender is on, and the lab has no CPU of its own.
fn cpu_times() -> CpuTimes {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let tick_ns = 1_000_000_000 / hz;
    let mut t = CpuTimes {
        softirq_ns: 0,
        total_ns: 0,
        cpus: 0,
    };
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal (guest time is inside user).
                let v: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
                t.total_ns = v.iter().sum::<u64>() * tick_ns;
                t.softirq_ns = v.get(6).copied().unwrap_or(0) * tick_ns;
            }
            Some(c) if c.starts_with("cpu") => t.cpus += 1,
            _ => {}
        }
    }
    t
}

/// utime + stime of a process in ns, and its VmRSS and VmHWM in KiB.
fn proc_sample(pid: u32) -> (u64, u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    let cpu_ns = f.iter().sum::<u64>() * (1_000_000_000 / hz);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu_ns, kib("VmRSS:"), kib("VmHWM:"))
}

fn proc_cost(pid: u32, before: (u64, u64, u64), seconds: f64) -> ProcCost {
    let after = proc_sample(pid);
    ProcCost {
        seconds,
        cpu_pct: 100.0 * after.0.saturating_sub(before.0) as f64 / (seconds * 1e9),
        rss_kib: after.1,
        hwm_kib: after.2,
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("crr-server") => return crr_server(&argv[2..]),
        Some("crr-client") => return crr_client(&argv[2..]),
        Some("probe") => return probe(&argv[2..]),
        Some("flood") => return flood(&argv[2..]),
        Some("xdp-pass") => return xdp_pass(&argv[2..]),
        _ => {}
    }
    let args = parse_args(&argv);
    zone_agent_lab::require_root();
    let mut report = EndToEnd {
        policy_rules: generated::rule_count(&base(), Variant::Rules, args.rules),
        ..Default::default()
    };
    let mut b = Bench::new();
    let policy = b.lab.dir().join("policy.toml");
    write_policy(
        &policy,
        &generated::generate(&base(), Variant::Rules, args.rules),
    );
    b.check_policy(&policy);

    let mut gates = vec![Gate::NoFilter, Gate::ZoneAgent];
    if find_xdp_pass().is_some() {
        gates.insert(1, Gate::XdpPass);
    } else {
        report
            .skipped
            .push("XDP pass-through reference: xdpfilt_alw_eth.o (xdp-tools) not found".into());
    }
    match b.export_nft(&policy) {
        Ok(()) => gates.push(Gate::Nftables),
        Err(e) => {
            eprintln!("end_to_end: nftables skipped: {e}");
            report.skipped.push(format!("nftables: {e}"));
        }
    }

    // Goodput and connection rate, the gates interleaved round by round (each round starts
    // with another gate, so that a drifting machine does not favour one).
    let mut results: Vec<Throughput> = gates
        .iter()
        .map(|&gate| Throughput {
            gate,
            goodput_bps: vec![],
            conn_per_s: vec![],
            conn_errors: 0,
            retransmits: 0,
        })
        .collect();
    let mut broken: Vec<Gate> = vec![];
    for round in 0..args.rounds {
        for k in 0..gates.len() {
            let gate = gates[(round + k) % gates.len()];
            if broken.contains(&gate) {
                continue;
            }
            if let Err(e) = b
                .set_gate(gate, &policy)
                .and_then(|()| if round == 0 { b.sanity() } else { Ok(()) })
            {
                eprintln!("end_to_end: {}: {e}", gate.name());
                report.skipped.push(format!("{}: {e}", gate.name()));
                broken.push(gate);
                continue;
            }
            if gate == Gate::ZoneAgent && report.xdp_mode.is_empty() {
                report.xdp_mode = b
                    .admin("status")
                    .ok()
                    .and_then(|s| s["interfaces"][0]["attach"].as_str().map(str::to_owned))
                    .unwrap_or_default();
            }
            if gate == Gate::NoFilter {
                // The lab's own ceiling, for context: 64 KB frames through the gateway.
                for h in [&b.lg, &b.my] {
                    set_tso(&b.lab, &h.ns, true);
                }
                match b.iperf(args.seconds) {
                    Ok((bps, _)) => report.goodput_tso_bps.push(bps),
                    Err(e) => report
                        .skipped
                        .push(format!("no filter with TSO, iperf3 round {round}: {e}")),
                }
                for h in [&b.lg, &b.my] {
                    set_tso(&b.lab, &h.ns, false);
                }
            }
            let r = results
                .iter_mut()
                .find(|r| r.gate == gate)
                .expect("a result per gate");
            match b.iperf(args.seconds) {
                Ok((bps, retr)) => {
                    r.goodput_bps.push(bps);
                    r.retransmits += retr;
                }
                Err(e) => report
                    .skipped
                    .push(format!("{} iperf3 round {round}: {e}", gate.name())),
            }
            match b.crr(args.crr_seconds) {
                Ok((rate, errors)) => {
                    r.conn_per_s.push(rate);
                    r.conn_errors += errors;
                }
                Err(e) => report
                    .skipped
                    .push(format!("{} connections round {round}: {e}", gate.name())),
            }
            println!(
                "round {round} {:<10} goodput {:>7.2} Gbit/s, {:>6.0} connections/s",
                gate.name(),
                r.goodput_bps.last().copied().unwrap_or(f64::NAN) / 1e9,
                r.conn_per_s.last().copied().unwrap_or(f64::NAN)
            );
        }
    }
    report.goodput = results;

    // Denied flood; the agent's cost at idle first, then during the storm.
    for &gate in gates
        .iter()
        .filter(|g| !broken.contains(g) && **g != Gate::XdpPass)
    {
        if let Err(e) = b.set_gate(gate, &policy) {
            report.skipped.push(format!("flood {}: {e}", gate.name()));
            continue;
        }
        // An idle window first: the machine's own softirq rate (timers, other work) to
        // subtract, and the agent's cost at idle.
        let agent_pid = b.agent.as_ref().map(ChildGuard::pid);
        let idle_before = (cpu_times(), agent_pid.map(proc_sample));
        std::thread::sleep(Duration::from_secs_f64(args.idle_seconds));
        let idle_after = cpu_times();
        if let (Some(pid), Some(before)) = (agent_pid, idle_before.1) {
            report.agent_idle = Some(proc_cost(pid, before, args.idle_seconds));
        }
        let before = agent_pid.map(proc_sample);
        let mut f = b.flood(args.flood_seconds);
        f.idle_seconds = args.idle_seconds;
        f.idle_softirq_ns = idle_after
            .softirq_ns
            .saturating_sub(idle_before.0.softirq_ns);
        if let (Some(pid), Some(before)) = (agent_pid, before) {
            report.agent_storm = Some(proc_cost(pid, before, f.seconds));
        }
        println!(
            "flood {:<10} {:>9.0} packets/s sent, {:>9} delivered, softirq {:>5.1}% of all CPUs, {:>6.0} ns softirq/packet",
            gate.name(),
            f.pps(),
            f.delivered,
            f.softirq_pct(),
            f.net_softirq_ns_per_packet()
        );
        report.flood.push(f);
    }

    // Reloads of a large policy under continuous allowed traffic.
    if let Err(e) = b.set_gate(Gate::NoFilter, &policy) {
        report.skipped.push(format!("reload under load: {e}"));
    } else {
        match reload_under_load(&mut b, &args, &mut report) {
            Ok(r) => {
                println!(
                    "reload under load: {} reloads of {} rules, latency median {:.0} ms, max {:.0} ms; lost {}",
                    r.latency_ms.len(),
                    r.rules,
                    zone_agent_lab::bench::median(&r.latency_ms).unwrap_or(f64::NAN),
                    r.latency_ms.iter().copied().fold(f64::NAN, f64::max),
                    r.lost()
                );
                report.reload = Some(r);
            }
            Err(e) => report.skipped.push(format!("reload under load: {e}")),
        }
    }
    let _ = b.set_gate(Gate::NoFilter, &policy);

    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("serialise");
        fs::write(path, text).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    for s in &report.skipped {
        eprintln!("end_to_end: not measured: {s}");
    }
}

fn reload_under_load(
    b: &mut Bench,
    args: &Args,
    report: &mut EndToEnd,
) -> Result<ReloadUnderLoad, String> {
    let path = b.lab.dir().join("reload.toml");
    let a = generated::generate(&base(), Variant::Rules, args.reload_rules);
    // B differs by one rule, so each reload installs a policy different from the one before.
    let bb = format!(
        "{a}\n[[rules]]\nname = \"toggle\"\nfrom = \"lgwan\"\nto = \"internet\"\nprotocol = \"tcp\"\nports = [\"8080\"]\nsources = [\"10.20.0.10/32\"]\n"
    );
    write_policy(&path, &a);
    b.check_policy(&path);
    report.agent_start_ms = Some(b.start_agent(&path)?);
    b.gate = Gate::ZoneAgent;
    let mut r = ReloadUnderLoad {
        rules: generated::rule_count(&base(), Variant::Rules, args.reload_rules),
        seconds: args.reload_seconds,
        ..Default::default()
    };
    let mut run = continuous(
        &b.lab,
        &b.lg,
        b.my.v4,
        ECHO_TCP,
        ECHO_UDP,
        args.reload_seconds,
    );
    let started = Instant::now();
    // Leave the traffic a second alone at both ends, so that it runs before and after.
    std::thread::sleep(Duration::from_secs(1));
    let mut generation = b.admin("status")?["generation"].as_u64().unwrap_or(0);
    let mut i = 0u32;
    while started.elapsed() + Duration::from_secs(3)
        < Duration::from_secs(u64::from(args.reload_seconds))
    {
        write_policy(&path, if i.is_multiple_of(2) { &bb } else { &a });
        let t = Instant::now();
        let answer = b.admin("reload");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        match answer {
            Ok(v) if v["result"] == "success" => {
                r.latency_ms.push(ms);
                let g = v["generation"].as_u64().unwrap_or(0);
                r.watcher_reloads += g.saturating_sub(generation + 1) as u32;
                generation = g;
            }
            Ok(v) => {
                r.failed += 1;
                r.errors.push(format!("reload {i}: {v}"));
            }
            Err(e) => {
                r.failed += 1;
                r.errors.push(format!("reload {i}: {e}"));
            }
        }
        i += 1;
    }
    if run
        .wait_exit(Duration::from_secs(u64::from(args.reload_seconds) + 30))
        .is_none()
    {
        return Err("the continuous-traffic client did not finish".into());
    }
    r.traffic = continuous_summary(&run);
    Ok(r)
}

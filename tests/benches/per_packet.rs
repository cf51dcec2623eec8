//! Per-packet cost of the XDP program with BPF_PROG_TEST_RUN, against the floor (a program
//! of the same object that only returns XDP_DROP) and against xdp-filter from xdp-tools,
//! over a frame corpus, at several policy sizes, all in one run; plus what loading and
//! reloading each policy takes and how much memory its maps hold.
//!
//! Run by `cargo xtask bench` (root). Every policy size of both variants, and an xdp-filter
//! for each, is loaded before measuring; then each sample runs every frame `--repeat` times on
//! every program in turn, so that drift and a neighbour's load hit them alike. The report
//! takes the median of the samples.
//!
//! Arguments: `[--repeat N] [--samples N] [--sizes 10,1000,...] [--variants rules,cidr]
//! [--reloads N] [--xdp-filter FILE.o] [--json FILE]`.

#[path = "../tests/common/frames.rs"]
mod frames;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use aya::EbpfLoader;
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use frames::{ACK, Frame, SYN};
use zone_agent::datapath::Datapath;
use zone_agent::policy::{Policy, Protocol, compile, validate};
use zone_agent_lab::bench::policy::{self as generated, Base, Variant};
use zone_agent_lab::bench::{
    Config, EventsOff, FrameCase, LoadTimes, MapMem, PerPacket, XdpFilter, arg, xdp_tools_object,
};

const IFACES: [&str; 4] = ["zmyn", "zlg", "zinet", "ztrunk"];

const HEADER: &str = r#"version = 1
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
"#;

/// The rules the corpus needs. `admin-ssh` is bound to a MAC the frames do not carry (a
/// path limitation, and the MAC xdp-filter gets); `saas` is the destination list that the
/// cidr variant grows into thousands of prefixes.
const BASE_RULES: &str = r#"[[rules]]
name = "relay"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.5.10/32", "fd20::10/128"]
acknowledge = "benchmark"

[[rules]]
name = "ping"
from = "lgwan"
to = "mynumber"
protocol = "icmp"
acknowledge = "benchmark"

[[rules]]
name = "admin-ssh"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["22"]
source_macs = ["02:00:00:00:20:99"]
acknowledge = "benchmark"

[[rules]]
name = "web"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80"]
sources = ["10.20.5.10/32"]

[[rules]]
name = "saas"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.4.0/24", "10.20.5.10/32"]
destinations = ["203.0.113.0/24", "2001:db8:4000::/40"]
"#;

const BASE: Base<'static> = Base {
    header: HEADER,
    rules: BASE_RULES,
    rule_count: 5,
};

const PASS: u32 = 2;
const DROP: u32 = 1;

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
    let c = |what, iface, frame: Frame, action| Case {
        what,
        iface,
        frame: frame.bytes(),
        action,
    };
    vec![
        c(
            "allowed, established flow (TCP)",
            "zlg",
            Frame::new(a, b).tcp(40000, 443, ACK),
            PASS,
        ),
        c(
            "allowed, reply (TCP)",
            "zmyn",
            Frame::new(b, a).tcp(443, 40000, ACK),
            PASS,
        ),
        c(
            "allowed by rule, new flow (ICMP timestamp, no flow kept)",
            "zlg",
            Frame::new(a, b).icmp(13, 0, 0),
            PASS,
        ),
        c(
            "denied, no rule (TCP SYN)",
            "zlg",
            Frame::new(a, b).tcp(40001, 23, SYN),
            DROP,
        ),
        c(
            "denied, spoofed source",
            "zmyn",
            Frame::new(a, b).tcp(40002, 443, SYN),
            DROP,
        ),
        c(
            "denied, listed destination, port not allowed (TCP SYN)",
            "zlg",
            Frame::new(a, ip("203.0.113.7")).tcp(40005, 8443, SYN),
            DROP,
        ),
        c(
            "allowed, established flow (IPv6 TCP)",
            "zlg",
            Frame::new(a6, b6).tcp(40003, 443, ACK),
            PASS,
        ),
        c(
            "allowed, established flow (VLAN 100)",
            "ztrunk",
            Frame::new(a, b).vlan(100).tcp(40004, 443, ACK),
            PASS,
        ),
    ]
}

/// The SYNs that open the flows the "established" and "reply" cases belong to, and the
/// servers' SYN-ACKs: a replied flow sits in the table the data path probes first, as the
/// flows of real connections do (an unanswered one is embryonic, one lookup more).
fn openers() -> Vec<(&'static str, Vec<u8>)> {
    let (a, b) = (ip("10.20.5.10"), ip("10.10.9.20"));
    let (a6, b6) = (ip("fd20::10"), ip("fd10::20"));
    vec![
        ("zlg", Frame::new(a, b).tcp(40000, 443, SYN).bytes()),
        ("zlg", Frame::new(a6, b6).tcp(40003, 443, SYN).bytes()),
        (
            "ztrunk",
            Frame::new(a, b).vlan(100).tcp(40004, 443, SYN).bytes(),
        ),
        ("zmyn", Frame::new(b, a).tcp(443, 40000, SYN | ACK).bytes()),
        (
            "zmyn",
            Frame::new(b6, a6).tcp(443, 40003, SYN | ACK).bytes(),
        ),
        ("zmyn", Frame::new(b, a).tcp(443, 40004, SYN | ACK).bytes()),
    ]
}

fn ctx_for(iface: &str, len: usize) -> [u8; 24] {
    let ifindex =
        zone_agent::agent::ifindex(iface).unwrap_or_else(|| panic!("no interface {iface}"));
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// (XDP action, ns per run).
fn run(prog: &Xdp, iface: &str, frame: &[u8], repeat: u32) -> (u32, f64) {
    let ctx = ctx_for(iface, frame.len());
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.duration.as_nanos() as f64)
}

struct Args {
    repeat: u32,
    samples: usize,
    sizes: Vec<usize>,
    variants: Vec<Variant>,
    reloads: usize,
    xdp_filter: Option<PathBuf>,
    json: Option<String>,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let list = |name: &str, default: &str| -> Vec<String> {
        arg(&args, name)
            .unwrap_or_else(|| default.into())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Args {
        repeat: arg(&args, "--repeat").map_or(200_000, |v| v.parse().expect("--repeat N")),
        samples: arg(&args, "--samples").map_or(7, |v| v.parse().expect("--samples N")),
        sizes: list("--sizes", "10,1000,10000,100000")
            .iter()
            .map(|s| s.parse().expect("--sizes N,N,..."))
            .collect(),
        variants: list("--variants", "rules,cidr")
            .iter()
            .map(|v| match v.as_str() {
                "rules" => Variant::Rules,
                "cidr" => Variant::Cidr,
                other => panic!("--variants: unknown variant {other:?} (rules, cidr)"),
            })
            .collect(),
        reloads: arg(&args, "--reloads").map_or(3, |v| v.parse().expect("--reloads N")),
        xdp_filter: arg(&args, "--xdp-filter")
            .map(PathBuf::from)
            .or_else(|| xdp_tools_object("xdpfilt_dny_all.o")),
        json: arg(&args, "--json"),
    }
}

/// A private network and mount namespace: the veths the policy names, and a bpffs for
/// xdp-filter's pinned maps (its object asks for pinning by name). All of it dies with the
/// process.
fn sandbox() -> PathBuf {
    // SAFETY: this process is single-threaded here.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET|CLONE_NEWNS): {} (run as root)",
        std::io::Error::last_os_error()
    );
    use nix::mount::{MsFlags, mount};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private");
    for name in IFACES {
        let peer = format!("{name}p");
        let ok = Command::new("ip")
            .args(["link", "add", name, "type", "veth", "peer", "name", &peer])
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "ip link add {name}");
        let _ = Command::new("ip")
            .args(["link", "set", name, "up"])
            .status();
    }
    let bpffs = std::env::temp_dir().join(format!("za-bench-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&bpffs).expect("bpffs dir");
    mount(
        Some("bpf"),
        &bpffs,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a private bpffs");
    bpffs
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn short(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let line = s
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| s.lines().next().unwrap_or(""));
    line.chars().take(300).collect()
}

/// `policy check` + compile, timed. Warnings are said (a benchmark policy should have none:
/// they would be part of what the check costs).
fn check_compile(
    text: &str,
    say_warnings: bool,
) -> Result<(Policy, compile::Compiled, f64, f64), String> {
    let t = Instant::now();
    let (policy, warnings) =
        validate::check_str("bench.toml".as_ref(), text, &validate::OfflineEnvironment)
            .map_err(short)?;
    let check_ms = ms(t);
    if let (Some(w), true) = (warnings.first(), say_warnings) {
        eprintln!("per_packet: {} warnings, the first: {w}", warnings.len());
    }
    let t = Instant::now();
    let compiled = compile::compile(&policy).map_err(short)?;
    Ok((policy, compiled, check_ms, ms(t)))
}

struct Loaded {
    cfg: Config,
    dp: Option<Datapath>,
    xf: Option<aya::Ebpf>,
}

/// Loads `variant` at `size`; `events`: with the agent's default event settings (else off).
fn load_config(
    variant: Variant,
    size: usize,
    reloads: usize,
    xdp_filter: Option<(&[u8], &Path)>,
    events: bool,
) -> Loaded {
    let text = generated::generate(&BASE, variant, size);
    let mut cfg = Config {
        variant,
        size,
        rules: generated::rule_count(&BASE, variant, size),
        policy_bytes: text.len(),
        error: None,
        load: None,
        entries: 0,
        maps: vec![],
        za_ns: vec![],
        xdp_filter: None,
    };
    let (policy, compiled, check_ms, compile_ms) = match check_compile(&text, true) {
        Ok(x) => x,
        Err(e) => {
            cfg.error = Some(e);
            return Loaded {
                cfg,
                dp: None,
                xf: None,
            };
        }
    };
    cfg.entries = compiled.entries();
    let t = Instant::now();
    let mut dp = Datapath::load().unwrap_or_else(|e| panic!("loading the XDP program: {e:?}"));
    let load_ms = ms(t);
    let t = Instant::now();
    if let Err(e) = dp.apply(&compiled, zone_agent::agent::ifindex) {
        cfg.error = Some(format!("apply: {}", short(e)));
        return Loaded {
            cfg,
            dp: None,
            xf: None,
        };
    }
    let apply_ms = ms(t);
    drop(compiled);
    if events {
        // What `zone-agent run` writes at start (`[events]` defaults). Nobody reads the ring
        // here: denied frames spend the burst, then meet the rate limit (a flood's path).
        dp.maps
            .set_event_config(zone_agent::config::Events::default().kernel())
            .expect("writing the event settings");
    }
    let mut times = LoadTimes {
        check_ms,
        compile_ms,
        load_ms,
        apply_ms,
        reload_ms: vec![],
    };
    for _ in 0..reloads {
        let t = Instant::now();
        let reloaded = check_compile(&text, false).and_then(|(_, c, _, _)| {
            dp.apply(&c, zone_agent::agent::ifindex)
                .map_err(|e| format!("reload: {}", short(e)))
        });
        match reloaded {
            Ok(_) => times.reload_ms.push(ms(t)),
            Err(e) => cfg.error = Some(e),
        }
    }
    cfg.maps = dp.program_id().map(map_mem).unwrap_or_default();
    cfg.load = Some(times);
    let mut xf = None;
    if let Some((obj, pins)) = xdp_filter {
        let dir = pins.join(format!("{}-{size}", variant.name()));
        let (x, ebpf) = load_xdp_filter(obj, &dir, &policy);
        cfg.xdp_filter = Some(x);
        xf = ebpf;
    }
    Loaded {
        cfg,
        dp: Some(dp),
        xf,
    }
}

// xdp-filter (xdp-tools, `xdp-filter/common_kern_user.h`): flag bits of a map value; the
// upper bits count hits.
const XF_SRC: u64 = 1 << 0;
const XF_DST: u64 = 1 << 1;
const XF_TCP: u64 = 1 << 2;
const XF_UDP: u64 = 1 << 3;
/// Entries of its address and MAC maps as compiled in; raised to fit a larger rule set.
const XF_DEFAULT_ENTRIES: u32 = 10_000;

/// xdp-filter's `xdpfilt_dny_all` (default deny: a packet passes when one of its fields is
/// listed) loaded with the same policy's addresses, ports and MACs. It matches each field on
/// its own, statelessly, so every address and port a rule names is listed for both
/// directions (source and destination), as a stateless filter needs for replies to pass;
/// prefixes are listed by their network address (it has exact-match maps only).
fn load_xdp_filter(obj: &[u8], pin_dir: &Path, policy: &Policy) -> (XdpFilter, Option<aya::Ebpf>) {
    let mut v4: BTreeMap<u32, u64> = BTreeMap::new();
    let mut v6: BTreeMap<[u8; 16], u64> = BTreeMap::new();
    let mut macs: BTreeMap<[u8; 6], u64> = BTreeMap::new();
    let mut ports: BTreeMap<u16, u64> = BTreeMap::new();
    for r in &policy.rules {
        for net in r.sources.iter().chain(&r.destinations) {
            match net.network() {
                // The program reads the address straight from the packet: network order.
                IpAddr::V4(a) => {
                    *v4.entry(u32::from_ne_bytes(a.octets())).or_default() |= XF_SRC | XF_DST
                }
                IpAddr::V6(a) => *v6.entry(a.octets()).or_default() |= XF_SRC | XF_DST,
            }
        }
        for m in &r.source_macs {
            *macs.entry(*m).or_default() |= XF_SRC;
        }
        let proto = match r.protocol {
            Protocol::Tcp => XF_TCP,
            Protocol::Udp => XF_UDP,
            _ => 0,
        };
        if proto != 0 {
            for pr in &r.ports {
                for p in pr.lo..=pr.hi {
                    *ports.entry(p).or_default() |= XF_SRC | XF_DST | proto;
                }
            }
        }
    }
    let mut out = XdpFilter {
        v4: v4.len(),
        v6: v6.len(),
        macs: macs.len(),
        ports: ports.len(),
        ..Default::default()
    };
    let result = (|| -> Result<aya::Ebpf, String> {
        std::fs::create_dir_all(pin_dir).map_err(|e| e.to_string())?;
        let cap = |n: usize| XF_DEFAULT_ENTRIES.max(n as u32 + 1);
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .map_max_entries("filter_ipv4", cap(v4.len()))
            .map_max_entries("filter_ipv6", cap(v6.len()))
            .map_max_entries("filter_ethernet", cap(macs.len()))
            .load(obj)
            .map_err(|e| format!("load: {e}"))?;
        // Load the program first: it holds the maps, so the handles below may close.
        {
            let (_, prog) = ebpf
                .programs_mut()
                .next()
                .ok_or("no program in the object")?;
            let xdp: &mut Xdp = prog.try_into().map_err(|e| format!("{e}"))?;
            xdp.load().map_err(|e| format!("verifier: {e}"))?;
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e.to_string())?;
        let per_cpu = |v: u64| PerCpuValues::try_from(vec![v; cpus]).expect("one value per CPU");
        let mut m4: PerCpuHashMap<MapData, u32, u64> = take(&mut ebpf, "filter_ipv4")?;
        for (k, v) in &v4 {
            m4.insert(k, per_cpu(*v), 0)
                .map_err(|e| format!("filter_ipv4: {e}"))?;
        }
        let mut m6: PerCpuHashMap<MapData, [u8; 16], u64> = take(&mut ebpf, "filter_ipv6")?;
        for (k, v) in &v6 {
            m6.insert(k, per_cpu(*v), 0)
                .map_err(|e| format!("filter_ipv6: {e}"))?;
        }
        let mut me: PerCpuHashMap<MapData, [u8; 6], u64> = take(&mut ebpf, "filter_ethernet")?;
        for (k, v) in &macs {
            me.insert(k, per_cpu(*v), 0)
                .map_err(|e| format!("filter_ethernet: {e}"))?;
        }
        let mut mp: PerCpuArray<MapData, u64> = take(&mut ebpf, "filter_ports")?;
        for (p, v) in &ports {
            // Indexed by the port as the packet holds it (network order) widened to u32.
            mp.set(u32::from(p.to_be()), per_cpu(*v), 0)
                .map_err(|e| format!("filter_ports: {e}"))?;
        }
        Ok(ebpf)
    })();
    match result {
        Ok(ebpf) => {
            out.maps = xf_prog(&ebpf)
                .info()
                .map(|i| map_mem(i.id()))
                .unwrap_or_default();
            (out, Some(ebpf))
        }
        Err(e) => {
            out.error = Some(e);
            (out, None)
        }
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut aya::Ebpf,
    name: &str,
) -> Result<T, String> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| format!("no map {name} in the xdp-filter object"))?;
    T::try_from(map).map_err(|e| format!("{name}: {e}"))
}

fn xf_prog(ebpf: &aya::Ebpf) -> &Xdp {
    let (_, prog) = ebpf.programs().next().expect("one program");
    prog.try_into().expect("an XDP program")
}

/// The kernel's view of a program's maps (`bpftool`): name, type, size and memlock.
fn map_mem(prog_id: u32) -> Vec<MapMem> {
    let json = |args: &[&str]| -> Option<serde_json::Value> {
        let out = Command::new("bpftool").arg("-j").args(args).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let Some(prog) = json(&["prog", "show", "id", &prog_id.to_string()]) else {
        return vec![];
    };
    let ids: Vec<u64> = prog["map_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    ids.iter()
        .filter_map(|id| json(&["map", "show", "id", &id.to_string()]))
        .map(|m| MapMem {
            name: m["name"].as_str().unwrap_or("?").to_owned(),
            kind: m["type"].as_str().unwrap_or("?").to_owned(),
            max_entries: m["max_entries"].as_u64().unwrap_or(0),
            bytes: m["bytes_memlock"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// Opens the flows and checks every frame's action; an error names the first wrong one.
fn verify(dp: &Datapath, cases: &[Case]) -> Result<(), String> {
    for (iface, f) in openers() {
        let (action, _) = run(dp.program(), iface, &f, 1);
        if action != PASS {
            return Err(format!(
                "opening SYN / SYN-ACK on {iface}: action {action}, expected pass"
            ));
        }
    }
    for c in cases {
        let (action, _) = run(dp.program(), c.iface, &c.frame, 1);
        if action != c.action {
            return Err(format!(
                "{}: action {action}, expected {}; the benchmark would measure another path",
                c.what, c.action
            ));
        }
    }
    Ok(())
}

fn main() {
    let args = parse_args();
    let bpffs = sandbox();
    let cases = cases();
    let xf_obj = args
        .xdp_filter
        .as_ref()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())));
    if xf_obj.is_none() {
        eprintln!(
            "per_packet: no xdpfilt_dny_all.o found (xdp-tools); measuring without xdp-filter"
        );
    }

    let mut loaded: Vec<Loaded> = Vec::new();
    for &variant in &args.variants {
        for &size in &args.sizes {
            let t = Instant::now();
            let l = load_config(
                variant,
                size,
                args.reloads,
                xf_obj.as_deref().map(|o| (o, bpffs.as_path())),
                true,
            );
            let c = &l.cfg;
            let mem: u64 = c.maps.iter().map(|m| m.bytes).sum();
            match (&c.error, &c.load) {
                (Some(e), _) => println!("{} {size}: ERROR {e}", variant.name()),
                (None, Some(lt)) => println!(
                    "{} {size}: {} rules, {} map entries; check {:.0} ms, compile {:.0} ms, load {:.0} ms, apply {:.0} ms, reloads {:?} ms; maps {:.1} MiB ({:.1} s)",
                    variant.name(),
                    c.rules,
                    c.entries,
                    lt.check_ms,
                    lt.compile_ms,
                    lt.load_ms,
                    lt.apply_ms,
                    lt.reload_ms.iter().map(|r| r.round()).collect::<Vec<_>>(),
                    mem as f64 / 1048576.0,
                    t.elapsed().as_secs_f64()
                ),
                (None, None) => {}
            }
            if let Some(e) = c.xdp_filter.as_ref().and_then(|x| x.error.as_ref()) {
                println!("  xdp-filter: ERROR {e}");
            }
            loaded.push(l);
        }
    }

    // The first config again, events off.
    let mut off = args
        .variants
        .first()
        .zip(args.sizes.first())
        .map(|(&variant, &size)| load_config(variant, size, 0, None, false));

    // Flows are opened and paths checked right before measuring: the loads above can take
    // longer than a half-open flow lives.
    if let Some(l) = &mut off
        && let Some(dp) = &l.dp
        && let Err(e) = verify(dp, &cases)
    {
        eprintln!("per_packet: events-off config: {e}");
        l.dp = None;
    }
    let mut off_ns: Vec<Vec<f64>> = vec![vec![]; cases.len()];
    for l in &mut loaded {
        if let Some(dp) = &l.dp
            && let Err(e) = verify(dp, &cases)
        {
            l.cfg.error = Some(e);
            l.dp = None;
        }
        if let Some(xf) = &l.xf {
            let x = l.cfg.xdp_filter.as_mut().expect("set with xf");
            x.actions = cases
                .iter()
                .map(|c| run(xf_prog(xf), c.iface, &c.frame, 1).0)
                .collect();
        }
        l.cfg.za_ns = vec![vec![]; cases.len()];
        if let Some(x) = l.cfg.xdp_filter.as_mut() {
            x.ns = vec![vec![]; cases.len()];
        }
    }

    let mut floor_dp = Datapath::load().expect("load the XDP object for its floor program");
    let floor = floor_dp.floor_program().expect("floor program");
    let mut floor_ns = Vec::new();
    let t = Instant::now();
    for s in 0..args.samples {
        let f = &cases[0];
        floor_ns.push(run(floor, f.iface, &f.frame, args.repeat).1);
        if let Some(dp) = off.as_ref().and_then(|l| l.dp.as_ref()) {
            for (i, c) in cases.iter().enumerate() {
                off_ns[i].push(run(dp.program(), c.iface, &c.frame, args.repeat).1);
            }
        }
        for l in &mut loaded {
            for (i, c) in cases.iter().enumerate() {
                if let Some(dp) = &l.dp {
                    l.cfg.za_ns[i].push(run(dp.program(), c.iface, &c.frame, args.repeat).1);
                }
                if let (Some(xf), Some(x)) = (&l.xf, l.cfg.xdp_filter.as_mut()) {
                    x.ns[i].push(run(xf_prog(xf), c.iface, &c.frame, args.repeat).1);
                }
            }
        }
        println!(
            "sample {}/{} done ({:.0} s)",
            s + 1,
            args.samples,
            t.elapsed().as_secs_f64()
        );
    }
    // A path that changed during the run (a flow that expired) makes its numbers void.
    for l in &mut loaded {
        if let Some(dp) = &l.dp {
            for (i, c) in cases.iter().enumerate() {
                let (action, _) = run(dp.program(), c.iface, &c.frame, 1);
                if action != c.action {
                    l.cfg.error = Some(format!(
                        "{}: action changed to {action} during the run",
                        c.what
                    ));
                    l.cfg.za_ns[i].clear();
                }
            }
        }
    }

    let report = PerPacket {
        repeat: args.repeat,
        samples: args.samples,
        frames: cases
            .iter()
            .map(|c| FrameCase {
                what: c.what.into(),
                action: c.action,
            })
            .collect(),
        floor_ns,
        configs: loaded.into_iter().map(|l| l.cfg).collect(),
        xdp_filter_object: args
            .xdp_filter
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        events_off: off.filter(|l| l.dp.is_some()).map(|l| EventsOff {
            variant: l.cfg.variant,
            size: l.cfg.size,
            ns: off_ns,
        }),
    };
    print_summary(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("serialise");
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    let _ = nix::mount::umount2(&bpffs, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&bpffs);
}

fn print_summary(r: &PerPacket) {
    use zone_agent_lab::bench::median;
    let floor = median(&r.floor_ns).unwrap_or(f64::NAN);
    println!(
        "\nBPF_PROG_TEST_RUN, repeat {}, median of {} interleaved samples; floor {floor:.0} ns",
        r.repeat, r.samples
    );
    if let Some(off) = &r.events_off
        && let Some(c) = r
            .configs
            .iter()
            .find(|c| c.variant == off.variant && c.size == off.size)
    {
        println!("{} {}, events on vs off:", c.variant.name(), c.size);
        for (i, f) in r.frames.iter().enumerate() {
            let on = c.za_ns.get(i).and_then(|v| median(v));
            let no = off.ns.get(i).and_then(|v| median(v));
            println!(
                "  {:<60} on {:>6}  off {:>6}  on/off {:>5}",
                f.what,
                on.map_or("-".into(), |v| format!("{v:.0}")),
                no.map_or("-".into(), |v| format!("{v:.0}")),
                on.zip(no)
                    .map_or("-".into(), |(a, b)| format!("{:.2}", a / b))
            );
        }
    }
    for c in &r.configs {
        println!("{} {}:", c.variant.name(), c.size);
        for (i, f) in r.frames.iter().enumerate() {
            let za = c.za_ns.get(i).and_then(|v| median(v));
            let xf = c
                .xdp_filter
                .as_ref()
                .and_then(|x| x.ns.get(i))
                .and_then(|v| median(v));
            println!(
                "  {:<60} za {:>6}  xdp-filter {:>6}",
                f.what,
                za.map_or("-".into(), |v| format!("{v:.0}")),
                xf.map_or("-".into(), |v| format!("{v:.0}"))
            );
        }
    }
}

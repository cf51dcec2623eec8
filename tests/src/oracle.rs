//! Differential runs: the same crafted packet sequence through a lab gateway under two
//! enforcers (nftables running `zone-agent policy export --format nft`, and the agent), and
//! which packets crossed.
//!
//! One Python process drives a whole sequence: it enters every host namespace once (setns) to
//! open an `AF_PACKET` socket on the host's `eth0`, then sends the frames in order, each from
//! its host's socket, and records every frame the veths deliver. Frames are built with scapy
//! at L2, so source MAC and source address are whatever the sequence says (spoofed or not).
//!
//! Every packet carries a unique marker in a header field that forwarding keeps and that no
//! L4 state looks at: the IPv4 identification, the IPv6 flow label. A packet crossed when a
//! frame with its marker and its addresses reached any host.
//!
//! The receiving hosts must not answer (a TCP stack resets crafted segments, an IP stack sends
//! ICMP errors): [`sink`] drops everything at their `eth0` ingress hook, after the capture
//! taps have seen it, so both runs see exactly the frames of the sequence and nothing else.

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lab::{Host, Lab};

/// What follows the IP header of a crafted packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// `flags`: the TCP flag byte; `len`: payload bytes.
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        len: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
        len: u16,
    },
    /// ICMP / ICMPv6 echo request or reply (by the packet's family).
    Echo {
        reply: bool,
        id: u16,
        seq: u16,
    },
    /// An ICMP / ICMPv6 message that is neither echo nor quotes a packet.
    Icmp {
        ty: u8,
        code: u8,
    },
    /// An ICMP / ICMPv6 error (or any type given) quoting the packet with marker `quoted`,
    /// which must come earlier in the sequence: its IP packet as it was sent.
    Quote {
        ty: u8,
        code: u8,
        quoted: u32,
    },
    /// Another IP protocol with `len` zero bytes of payload.
    Proto {
        proto: u8,
        len: u16,
    },
    /// An echo of the other family's ICMP: ICMPv6 (58) in IPv4, ICMP (1) in IPv6.
    ForeignEcho {
        reply: bool,
        id: u16,
        seq: u16,
    },
}

/// One crafted packet. `marker` is unique in the sequence, non-zero, below 2^16.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crafted {
    pub marker: u32,
    /// Index of the sending host in the `hosts` given to [`send_and_capture`].
    pub sender: usize,
    pub src_mac: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4: four NOP options; IPv6: an empty destination-options header before the body.
    pub opts: bool,
    pub body: Body,
}

impl Crafted {
    /// The line the driver reads: `marker sender src_mac src dst opts kind args...`.
    fn spec(&self) -> String {
        let opts = u8::from(self.opts);
        let mut s = format!(
            "{} {} {} {} {} {opts} ",
            self.marker, self.sender, self.src_mac, self.src, self.dst
        );
        let _ = match &self.body {
            Body::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                len,
            } => {
                write!(s, "tcp {sport} {dport} {flags} {seq} {ack} {len}")
            }
            Body::Udp { sport, dport, len } => write!(s, "udp {sport} {dport} {len}"),
            Body::Echo { reply, id, seq } => write!(s, "echo {} {id} {seq}", u8::from(*reply)),
            Body::Icmp { ty, code } => write!(s, "icmp {ty} {code}"),
            Body::Quote { ty, code, quoted } => write!(s, "quote {ty} {code} {quoted}"),
            Body::Proto { proto, len } => write!(s, "proto {proto} {len}"),
            Body::ForeignEcho { reply, id, seq } => {
                write!(s, "foreign {} {id} {seq}", u8::from(*reply))
            }
        };
        s
    }
}

const DRIVER_PY: &str = r#"
import ctypes, ipaddress, os, socket, sys, time
from scapy.layers.l2 import Ether
from scapy.layers.inet import IP, TCP, UDP, ICMP, IPOption_NOP
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, ICMPv6EchoRequest, ICMPv6EchoReply, ICMPv6DestUnreach,
    ICMPv6PacketTooBig, ICMPv6TimeExceeded, ICMPv6ParamProblem, ICMPv6Unknown)
from scapy.packet import Raw

spec_path, go_path, gap, settle = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
namespaces = sys.argv[5].split(",")
gw_macs = sys.argv[6].split(",")

# One CPU: the frames enter the gateway in the order they are sent (one softirq backlog).
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
def enter(ns):
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        os.close(fd)

socks = []
for ns in namespaces:
    enter(ns)  # a socket belongs to the namespace it was made in
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("eth0", 0))
    s.setblocking(False)
    socks.append(s)

specs, l3 = {}, {}
def build(f):
    marker, src, dst, opts, kind, a = int(f[0]), f[3], f[4], f[5] == "1", f[6], [int(x) for x in f[7:]]
    v6 = ":" in src
    if v6:
        ip = IPv6(src=src, dst=dst, fl=marker, hlim=64)
        if opts:
            ip = ip / IPv6ExtHdrDestOpt()
    else:
        ip = IP(src=src, dst=dst, id=marker, ttl=64, options=[IPOption_NOP()] * 4 if opts else [])
    if kind == "tcp":
        p = ip / TCP(sport=a[0], dport=a[1], flags=a[2], seq=a[3], ack=a[4], window=64240) / Raw(b"z" * a[5])
    elif kind == "udp":
        p = ip / UDP(sport=a[0], dport=a[1]) / Raw(b"z" * a[2])
    elif kind == "echo":
        if v6:
            p = ip / (ICMPv6EchoReply if a[0] else ICMPv6EchoRequest)(id=a[1], seq=a[2]) / Raw(b"z" * 8)
        else:
            p = ip / ICMP(type=0 if a[0] else 8, id=a[1], seq=a[2]) / Raw(b"z" * 8)
    elif kind == "icmp":
        p = ip / (ICMPv6Unknown(type=a[0], code=a[1], msgbody=b"\0" * 8) if v6 else ICMP(type=a[0], code=a[1]) / Raw(b"\0" * 12))
    elif kind == "quote":
        inner = Raw(bytes(l3[a[2]]))
        if not v6:
            p = ip / ICMP(type=a[0], code=a[1]) / inner
        else:
            cls = {1: ICMPv6DestUnreach, 2: ICMPv6PacketTooBig, 3: ICMPv6TimeExceeded, 4: ICMPv6ParamProblem}.get(a[0])
            p = ip / (cls(code=a[1]) if cls else ICMPv6Unknown(type=a[0], code=a[1])) / inner
    elif kind == "foreign":
        # Type, code, checksum (left 0: nobody checks it here), id, sequence.
        ty = (129 if a[0] else 128) if not v6 else (0 if a[0] else 8)
        if v6:
            ip.lastlayer().nh = 1
        else:
            ip.proto = 58
        p = ip / Raw(bytes([ty, 0, 0, 0]) + a[1].to_bytes(2, "big") + a[2].to_bytes(2, "big") + b"z" * 8)
    elif kind == "proto":
        if v6:
            ip.lastlayer().nh = a[0]
        else:
            ip.proto = a[0]
        p = ip / Raw(b"\0" * a[1])
    else:
        raise ValueError(kind)
    l3[marker] = p
    specs[marker] = (ipaddress.ip_address(src), ipaddress.ip_address(dst))
    sender = int(f[1])
    return sender, bytes(Ether(src=f[2], dst=gw_macs[sender]) / p)

phases = []
with open(spec_path) as fh:
    for line in fh:
        f = line.split()
        if f:
            phase = int(f[0])
            while len(phases) <= phase:
                phases.append([])
            phases[phase].append(build(f[1:]))

seen, other = [], 0
def drain():
    global other
    got = 0
    for h, s in enumerate(socks):
        while True:
            try:
                data, addr = s.recvfrom(65535)
            except BlockingIOError:
                break
            got += 1
            if addr[2] == 4:  # PACKET_OUTGOING: the host's own frame
                continue
            et = int.from_bytes(data[12:14], "big")
            if et == 0x0800 and len(data) >= 34:
                m = int.from_bytes(data[18:20], "big")
                src, dst = ipaddress.ip_address(data[26:30]), ipaddress.ip_address(data[30:34])
            elif et == 0x86DD and len(data) >= 54:
                m = int.from_bytes(data[14:18], "big") & 0xFFFFF
                src, dst = ipaddress.ip_address(data[22:38]), ipaddress.ip_address(data[38:54])
            else:
                other += 1
                continue
            if specs.get(m) == (src, dst):
                seen.append((m, h))
            else:
                other += 1
    return got

def settled(settle):
    quiet_since, deadline = time.monotonic(), time.monotonic() + 10 * settle + 5
    while time.monotonic() - quiet_since < settle and time.monotonic() < deadline:
        if drain():
            quiet_since = time.monotonic()
        time.sleep(0.01)

first = last = None
for k, frames in enumerate(phases):
    if k:
        # Between phases the caller changes the gateway (a reload), then says go.
        print(f"pause {k}", flush=True)
        deadline = time.monotonic() + 120
        while not os.path.exists(f"{go_path}{k}"):
            if time.monotonic() > deadline:
                sys.exit(f"no go for phase {k}")
            time.sleep(0.005)
    first = first or time.monotonic()
    for sender, frame in frames:
        socks[sender].send(frame)
        drain()
        time.sleep(gap)
    last = time.monotonic()
    # Markers are unique, so a phase's frames may still arrive during the next one; a short
    # quiet spell is enough to know the gateway has decided them before the caller changes it.
    settled(settle if k == len(phases) - 1 else settle / 5)
    for m, h in seen:
        print(f"seen {m} {h}")
    seen.clear()
print(f"done other {other} span {last - first:.3f}", flush=True)
"#;

/// Pause after each frame: the gateway has decided it before the next one comes.
const GAP: Duration = Duration::from_millis(1);
/// A phase's capture ends once no frame arrived for this long.
const SETTLE: Duration = Duration::from_millis(500);
/// Bound for the driver's start (importing scapy, building the frames) and each wait.
const DRIVER_SLACK: Duration = Duration::from_secs(60);

/// What [`send_and_capture`] saw.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Where each marker arrived: host indices (empty: it did not cross).
    pub seen: std::collections::BTreeMap<u32, Vec<usize>>,
    /// From the first frame sent to the last, all phases and what ran between them.
    pub span: Duration,
    /// Frames captured that carried no marker of the sequence (the hosts' own chatter).
    pub other: u64,
}

impl Run {
    pub fn crossed(&self, marker: u32) -> bool {
        self.seen.get(&marker).is_some_and(|h| !h.is_empty())
    }
}

/// Sends each phase's packets in order, each from `hosts[p.sender]` (to the gateway's MAC on
/// its link), and returns where each marker arrived. Between phases `between(k)` runs (a
/// reload, say) before phase `k` starts; the driver keeps its sockets and stays ready, so the
/// pause is only what `between` takes. A [`Body::Quote`] may quote any earlier packet. Needs
/// scapy.
pub fn send_and_capture(
    lab: &Lab,
    hosts: &[Host],
    phases: &[Vec<Crafted>],
    mut between: impl FnMut(usize),
) -> Run {
    let mut spec = String::new();
    for (k, packets) in phases.iter().enumerate() {
        for p in packets {
            assert!(
                p.marker != 0 && p.marker < 1 << 16,
                "marker {} does not fit an IPv4 id",
                p.marker
            );
            let _ = writeln!(spec, "{k} {}", p.spec());
        }
    }
    let path = lab.dir().join("sequence.txt");
    fs::write(&path, spec).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let go = lab.dir().join("go-phase-");
    let namespaces: Vec<&str> = hosts.iter().map(|h| h.ns.as_str()).collect();
    let gw_macs: Vec<&str> = hosts.iter().map(|h| h.gw_mac.as_str()).collect();
    let py = crate::python();
    let s = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let argv = [
        py,
        "-c".into(),
        DRIVER_PY.into(),
        s(&path),
        s(&go),
        format!("{:.4}", GAP.as_secs_f64()),
        format!("{:.3}", SETTLE.as_secs_f64()),
        namespaces.join(","),
        gw_macs.join(","),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // Started in the gateway namespace; it enters the hosts' itself.
    let mut driver = lab.spawn(lab.gateway(), &argv, &lab.log_path("packet-driver"));
    let frames: u32 = phases
        .iter()
        .map(|p| u32::try_from(p.len()).unwrap_or(u32::MAX))
        .sum();
    let bound = DRIVER_SLACK + GAP * 4 * frames;
    for k in 1..phases.len() {
        let pause = format!("pause {k}\n");
        crate::wait_until(
            bound,
            &format!("the packet driver pauses before phase {k}"),
            || {
                if let Some(status) = driver.exited() {
                    panic!(
                        "the packet driver exited ({status}):\n{}",
                        driver.log_text()
                    );
                }
                driver.log_text().contains(&pause)
            },
        );
        between(k);
        let go_k = format!("{}{k}", go.display());
        fs::write(&go_k, "").unwrap_or_else(|e| panic!("cannot write {go_k}: {e}"));
    }
    match driver.wait_exit(bound) {
        Some(status) if status.success() => {}
        status => panic!(
            "the packet driver failed ({status:?}):\n{}",
            driver.log_text()
        ),
    }
    let log = driver.log_text();
    let mut run = Run::default();
    for p in phases.iter().flatten() {
        run.seen.insert(p.marker, Vec::new());
    }
    for line in log.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["seen", m, h] => {
                let (m, h): (u32, usize) = (m.parse().expect("marker"), h.parse().expect("host"));
                run.seen.entry(m).or_default().push(h);
            }
            ["done", "other", n, "span", span] => {
                run.other = n.parse().expect("count");
                run.span = Duration::from_secs_f64(span.parse().expect("seconds"));
            }
            _ => {}
        }
    }
    run
}

/// Makes `host` a silent receiver: every frame arriving at its `eth0` is dropped at the
/// netdev ingress hook, after `AF_PACKET` taps have seen it and before its IP stack could
/// answer (TCP resets, ICMP errors). The lab's permanent neighbour entries mean nobody needs
/// it to answer ARP or neighbour solicitations.
pub fn sink(lab: &Lab, host: &Host) {
    let rules = "table netdev za_sink {\n  chain ingress {\n    type filter hook ingress device \"eth0\" priority 0; policy drop;\n  }\n}\n";
    nft_file(lab, &host.ns, "sink", rules, false);
}

/// Routes `cidr` from the gateway to `host`'s link (as on-link: pin its addresses with
/// [`pin_neighbour`]).
pub fn route_to(lab: &Lab, host: &Host, cidr: &str) {
    let family = if cidr.contains(':') { "-6" } else { "-4" };
    lab.ip(
        lab.gateway(),
        &[family, "route", "replace", cidr, "dev", &host.gw_l3_iface()],
    );
}

/// A permanent neighbour entry in the gateway: `addr` is `host`'s MAC on its link, so packets
/// for it leave towards `host` without neighbour resolution (the host would not answer).
pub fn pin_neighbour(lab: &Lab, host: &Host, addr: IpAddr) {
    lab.neigh(lab.gateway(), &host.gw_l3_iface(), addr, &host.mac);
}

/// Writes `text` to `<lab dir>/<name>.nft` and loads it (`check`: only `nft -c -f`) in `ns`;
/// panics with nft's message if it is refused.
pub fn nft_file(lab: &Lab, ns: &str, name: &str, text: &str, check: bool) -> PathBuf {
    let path = lab.dir().join(format!("{name}.nft"));
    fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let p = path.to_str().expect("UTF-8 path");
    let argv: &[&str] = if check {
        &["nft", "-c", "-f", p]
    } else {
        &["nft", "-f", p]
    };
    lab.run_ok(ns, argv);
    path
}

/// `zone-agent policy export <policy> --format nft`: the ruleset text.
pub fn export_nft(lab: &Lab, policy: &Path) -> String {
    let bin = crate::agent_bin();
    let p = policy.to_str().expect("UTF-8 path");
    lab.run_ok(
        lab.gateway(),
        &[
            bin.to_str().expect("UTF-8 path"),
            "policy",
            "export",
            p,
            "--format",
            "nft",
        ],
    )
}

/// `zone-agent reload` against the agent `agent::start_file` started; panics unless it succeeded.
pub fn reload_agent(lab: &Lab) {
    let bin = crate::agent_bin();
    let state = crate::agent::state_dir(lab);
    let out = lab.run_ok(
        lab.gateway(),
        &[
            bin.to_str().expect("UTF-8 path"),
            "reload",
            "--json",
            "--state-dir",
            state.to_str().expect("UTF-8 path"),
        ],
    );
    assert!(out.contains("\"success\""), "zone-agent reload: {out}");
}

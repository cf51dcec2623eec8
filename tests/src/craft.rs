//! Crafted frames sent with real packet tools (scapy, hping3) from a lab host, and raw
//! captures of what reached another host.
//!
//! A capture is an `AF_PACKET` socket in the receiver's namespace, bound before anything is
//! sent: it sees every frame the veth delivers, before the receiver's own stack decides about
//! it (a fragment that is never reassembled, a TCP segment for no socket, a tunnel nobody
//! decapsulates). So "nothing crossed" means nothing left the gateway towards that host, not
//! only that no socket got it. Frames carry a marker (a unique payload string) or a known IP
//! identification, which is what a test looks for.
//!
//! Scapy is imported once per [`scapy`] call (about a second here), so a test sends all the
//! frames of one step in one call; `sendp` sends them in order on one socket, so a frame that
//! must cross, sent last, arrives after everything sent before it was decided.

use std::net::IpAddr;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::child::ChildGuard;
use crate::lab::{Host, Lab};

/// Bound for a capture socket to be bound, a held connection to be up, a tool to finish.
const READY_WAIT: Duration = Duration::from_secs(10);
/// `sll_pkttype` of a frame the capturing host sent itself (linux/if_packet.h).
const PACKET_OUTGOING: u8 = 4;
/// Numbers the captures of a process: each has a log of its own. Two captures of one
/// interface appending to one file interleave their lines and garble frames.
static CAPTURES: AtomicU32 = AtomicU32::new(0);

/// Prints one line per frame: `frame <pkttype> <hex>`.
const CAPTURE_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], 0))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    print(f"frame {addr[2]} {data.hex()}", flush=True)
"#;

/// Each argument after the interface is a scapy expression giving a packet or a list of
/// packets; all are sent in order with one `sendp`. `frag6(pkt, size, id)` is there for the
/// expressions: scapy's own `fragment6` wants the fragment header in the packet already.
const SEND_PY: &str = r#"
import sys
from scapy.all import *
conf.verb = 0
def frag6(pkt, size, ident):
    # The bare IPv6 header is the unfragmentable part; each fragment carries `size` bytes
    # (a multiple of 8) of everything after it, checksums computed on the whole packet.
    whole = raw(pkt[IPv6])
    body, ip = whole[40:], pkt[IPv6]
    return [IPv6(src=ip.src, dst=ip.dst, hlim=ip.hlim) /
            IPv6ExtHdrFragment(nh=whole[6], offset=off // 8, m=int(off + size < len(body)), id=ident) /
            Raw(body[off:off + size])
            for off in range(0, len(body), size)]
frames = []
for expr in sys.argv[2:]:
    p = eval(expr)
    frames.extend(p if isinstance(p, list) else [p])
for p in frames:
    print(f"{len(bytes(p))} bytes: {p.summary()}", flush=True)
sendp(frames, iface=sys.argv[1], verbose=False)
"#;

/// Connects and keeps the connection open (idle) until killed; prints the local port.
const HOLD_TCP_PY: &str = r#"
import socket, sys, time
dst, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((dst, port), timeout=5, source_address=(src, 0))
print(f"local {s.getsockname()[1]}", flush=True)
while True:
    time.sleep(3600)
"#;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Sent by the capturing host itself (its own answers, which may quote what it received).
    pub outgoing: bool,
    pub bytes: Vec<u8>,
}

impl Captured {
    /// The IPv4 header's (source, identification), after up to two VLAN tags.
    pub fn ipv4_id(&self) -> Option<(IpAddr, u16)> {
        let b = &self.bytes;
        let mut off = 12;
        while matches!(be16(b, off)?, 0x8100 | 0x88a8) {
            off += 4;
        }
        if be16(b, off)? != 0x0800 || b.len() < off + 2 + 20 {
            return None;
        }
        let ip = &b[off + 2..];
        let src: [u8; 4] = ip[12..16].try_into().ok()?;
        Some((IpAddr::from(src), u16::from_be_bytes([ip[4], ip[5]])))
    }

    fn contains(&self, marker: &str) -> bool {
        let m = marker.as_bytes();
        !m.is_empty() && self.bytes.windows(m.len()).any(|w| w == m)
    }
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// A running capture; stopped when dropped.
pub struct Capture {
    guard: ChildGuard,
    what: String,
}

/// Starts capturing every frame on `iface` in `ns`; returns once the socket is bound.
pub fn capture(lab: &Lab, ns: &str, iface: &str) -> Capture {
    let py = crate::python();
    let n = CAPTURES.fetch_add(1, Ordering::Relaxed);
    let log = lab.log_path(&format!("{ns}-capture{n}-{iface}"));
    let mut guard = lab.spawn(ns, &[&py, "-u", "-c", CAPTURE_PY, iface], &log);
    let what = format!("capture on {ns}/{iface}");
    crate::wait_until(READY_WAIT, &format!("{what} is bound"), || {
        if let Some(status) = guard.exited() {
            panic!("{what} exited ({status}):\n{}", guard.log_text());
        }
        guard.log_text().lines().any(|l| l == "ready")
    });
    Capture { guard, what }
}

impl Capture {
    /// Every frame captured so far, both directions.
    pub fn frames(&self) -> Vec<Captured> {
        self.guard
            .log_text()
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("frame ")?.split(' ');
                let pkttype: u8 = w.next()?.parse().ok()?;
                Some(Captured {
                    outgoing: pkttype == PACKET_OUTGOING,
                    bytes: unhex(w.next()?)?,
                })
            })
            .collect()
    }

    /// Frames that arrived at (were not sent by) the capturing host.
    pub fn arrived(&self) -> Vec<Captured> {
        self.frames().into_iter().filter(|f| !f.outgoing).collect()
    }

    /// How many arrived frames carry `marker`.
    pub fn count(&self, marker: &str) -> usize {
        self.arrived().iter().filter(|f| f.contains(marker)).count()
    }

    /// Whether an arrived frame carries `marker`.
    pub fn seen(&self, marker: &str) -> bool {
        self.count(marker) > 0
    }

    /// Whether an arrived IPv4 frame has source `src` and identification `id`.
    pub fn seen_ipv4_id(&self, src: IpAddr, id: u16) -> bool {
        self.arrived()
            .iter()
            .any(|f| f.ipv4_id() == Some((src, id)))
    }

    /// Waits (bounded) until a frame with `marker` arrived; panics naming it otherwise.
    pub fn wait_seen(&self, marker: &str, timeout: Duration) {
        crate::wait_until(
            timeout,
            &format!("{marker:?} arrives ({})", self.what),
            || self.seen(marker),
        );
    }

    /// A short listing of the arrived frames (for failure messages).
    pub fn describe(&self) -> String {
        let frames = self.arrived();
        let mut out = format!("{} frames arrived ({}):\n", frames.len(), self.what);
        for f in frames.iter().take(40) {
            let printable: String = f
                .bytes
                .iter()
                .map(|&c| if c.is_ascii_graphic() { c as char } else { '.' })
                .collect();
            out.push_str(&format!(
                "  {} bytes, id {:?}: {printable}\n",
                f.bytes.len(),
                f.ipv4_id()
            ));
        }
        out
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `Ether(src=<host's MAC>, dst=<gateway's MAC on that link>)`: the start of a frame that the
/// gateway routes, as the host's own stack would address it.
pub fn ether(host: &Host) -> String {
    ether_from(host, &host.mac)
}

/// [`ether`] with another source MAC (a NIC that is not the host's).
pub fn ether_from(host: &Host, src_mac: &str) -> String {
    format!("Ether(src='{src_mac}', dst='{}')", host.gw_mac)
}

/// Sends the frames given as scapy expressions (see `SEND_PY`) from `host`'s `eth0`, in
/// order, in one `sendp`. Panics with scapy's output if it fails. Returns what scapy printed
/// (one line per frame: length and summary).
pub fn scapy(lab: &Lab, host: &Host, frames: &[String]) -> String {
    let py = crate::python();
    let mut argv: Vec<&str> = vec![&py, "-c", SEND_PY, "eth0"];
    argv.extend(frames.iter().map(String::as_str));
    tool_ok(lab, host, &argv)
}

/// Runs `hping3 <args>` in `host`'s namespace (it sends through the host's own routing, with
/// the host's MAC). Give `-c N`: hping3 ends about a second after its last packet. Returns
/// its output; panics if it could not run.
pub fn hping3(lab: &Lab, host: &Host, args: &[&str]) -> String {
    let mut argv = vec!["hping3"];
    argv.extend_from_slice(args);
    let out = lab.run_timeout(&host.ns, &argv, READY_WAIT);
    let text = output_text(&out);
    // hping3 exits 1 when no reply came back, which is what most evasion attempts expect;
    // only its own complaints (unknown option, no interface...) mean it did not send.
    assert!(
        text.contains("--- ") && text.contains("packets transmitted"),
        "hping3 {} in {} did not run:\n{text}",
        args.join(" "),
        host.ns
    );
    text
}

fn tool_ok(lab: &Lab, host: &Host, argv: &[&str]) -> String {
    let out = lab.run_timeout(&host.ns, argv, READY_WAIT * 3);
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "{} in {} failed ({}):\n{text}",
        argv[0],
        host.ns,
        out.status
    );
    text
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An idle TCP connection held open (a live flow in the gateway); closed on drop.
pub struct HeldTcp {
    pub guard: ChildGuard,
    /// The client's local port.
    pub port: u16,
}

/// Connects from `from` (its own address of `to`'s family) to `to:port` and keeps the
/// connection open; a server that keeps connections (`tcp_echo`) must listen there.
pub fn hold_tcp(lab: &Lab, from: &Host, to: IpAddr, port: u16) -> HeldTcp {
    let py = crate::python();
    let src = from.addr(to.is_ipv6()).to_string();
    let log = lab.log_path(&format!("{}-hold-{to}-{port}", from.ns));
    let (dst, port_s) = (to.to_string(), port.to_string());
    let mut guard = lab.spawn(
        &from.ns,
        &[&py, "-u", "-c", HOLD_TCP_PY, &dst, &port_s, &src],
        &log,
    );
    let mut local = None;
    crate::wait_until(
        READY_WAIT,
        &format!("{} holds a connection to {to}:{port}", from.ns),
        || {
            if let Some(status) = guard.exited() {
                panic!(
                    "connection {to}:{port} from {} failed ({status}):\n{}",
                    from.ns,
                    guard.log_text()
                );
            }
            local = guard
                .log_text()
                .lines()
                .find_map(|l| l.strip_prefix("local ")?.trim().parse().ok());
            local.is_some()
        },
    );
    HeldTcp {
        guard,
        port: local.expect("set by the wait"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhex_and_ipv4_id() {
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        // Ethernet + one VLAN tag + IPv4 with id 0x1234 from 10.20.0.10.
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[4..6].copy_from_slice(&[0x12, 0x34]);
        ip[12..16].copy_from_slice(&[10, 20, 0, 10]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(b"ZAEV-marker");
        let c = Captured {
            outgoing: false,
            bytes: f,
        };
        assert_eq!(c.ipv4_id(), Some(("10.20.0.10".parse().unwrap(), 0x1234)));
        assert!(c.contains("ZAEV-marker"));
        assert!(!c.contains("ZAEV-other"));
    }
}

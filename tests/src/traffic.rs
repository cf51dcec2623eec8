//! Real traffic between lab hosts: small Python 3 programs (embedded below, run with
//! `python3 -c` inside `ip netns exec`) and `ping`.
//!
//! Servers log one line per connection or datagram (`accept <ip> <port>` /
//! `recv <ip> <port> <len>`) to their log file, so a test can prove that a packet did or did
//! not reach the server, not only that a reply did or did not come back.
//!
//! `bind_src` may be an address the sending host does not own: the clients then use
//! `IP_TRANSPARENT`/`IPV6_TRANSPARENT`, so the packet really leaves with that (spoofed) source.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::child::ChildGuard;
use crate::lab::{Host, Lab, parse_cidr};

/// Bound for a server to start listening.
const LISTEN_WAIT: Duration = Duration::from_secs(10);
/// Slack on top of a helper's own timeout before its process is killed.
const KILL_SLACK: Duration = Duration::from_secs(5);

/// Shared by the clients: lets a socket use a source address the host does not own.
const ANY_SOURCE_PY: &str = r#"
import socket
def allow_any_source(s, fam):
    # IP_TRANSPARENT / IPV6_TRANSPARENT let a socket bind to and send from an address that
    # is not local (a spoofed source); FREEBIND alone does not pass the output route lookup.
    if fam == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, 19, 1)     # IP_TRANSPARENT
        s.setsockopt(socket.IPPROTO_IP, 15, 1)     # IP_FREEBIND
    else:
        s.setsockopt(socket.IPPROTO_IPV6, 75, 1)   # IPV6_TRANSPARENT
        s.setsockopt(socket.IPPROTO_IPV6, 78, 1)   # IPV6_FREEBIND
"#;

const TCP_SERVER_PY: &str = r#"
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
srv = socket.socket(fam, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(512)
print(f"listening {addr} {port}", flush=True)
while True:
    conn, peer = srv.accept()
    print(f"accept {peer[0]} {peer[1]}", flush=True)
    try:
        conn.settimeout(2)
        conn.sendall(b"zone-agent-lab hello\n")
    except OSError as err:
        print(f"send failed: {err}", flush=True)
    finally:
        conn.close()
"#;

const TCP_CLIENT_PY: &str = r#"
import socket, sys, time
dst, port, src, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
deadline = time.monotonic() + timeout
def left():
    return max(0.01, deadline - time.monotonic())
s = socket.socket(fam, socket.SOCK_STREAM)
if src:
    allow_any_source(s, fam)
    s.bind((src, 0))
try:
    s.settimeout(left())
    s.connect((dst, port))
except OSError as err:
    print(f"connect failed: {err}")
    sys.exit(1)
print("connected", flush=True)
buf = b""
try:
    while b"\n" not in buf:
        s.settimeout(left())
        data = s.recv(4096)
        if not data:
            break
        buf += data
except OSError as err:
    print(f"recv failed: {err}")
if b"\n" in buf:
    print("line:", buf.split(b"\n")[0].decode(errors="replace"))
    sys.exit(0)
print("connected but no line came back")
sys.exit(2)
"#;

const UDP_ECHO_PY: &str = r#"
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((addr, port))
print(f"listening {addr} {port}", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    print(f"recv {peer[0]} {peer[1]} {len(data)}", flush=True)
    try:
        s.sendto(data, peer)
    except OSError as err:
        print(f"send failed: {err}", flush=True)
"#;

const UDP_CLIENT_PY: &str = r#"
import os, socket, sys, time
dst, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count, timeout = int(sys.argv[4]), float(sys.argv[5])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
if src:
    allow_any_source(s, fam)
    s.bind((src, 0))
tag = os.urandom(4).hex()
got = 0
for i in range(count):
    msg = f"zone-agent-lab {tag} {i}".encode()
    try:
        s.sendto(msg, (dst, port))
    except OSError as err:
        print(f"send {i} failed: {err}", file=sys.stderr)
        continue
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, _ = s.recvfrom(65535)
        except socket.timeout:
            break
        except OSError as err:
            print(f"recv {i} failed: {err}", file=sys.stderr)
            break
        if data == msg:
            got += 1
            break
print(got)
"#;

const TCP_ECHO_PY: &str = r#"
import socket, sys, threading
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
srv = socket.socket(fam, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(512)
print(f"listening {addr} {port}", flush=True)
def echo(conn):
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()
while True:
    conn, peer = srv.accept()
    print(f"accept {peer[0]} {peer[1]}", flush=True)
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"#;

/// Continuous traffic for `seconds`: one long-lived TCP connection exchanging a numbered line
/// every 20 ms, a new TCP connection every 100 ms, and a numbered UDP datagram every 5 ms,
/// each echoed by the far end. Prints one summary line of counts at the end.
const CONTINUOUS_PY: &str = r#"
import socket, sys, threading, time
dst, tport, uport, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
end = time.monotonic() + seconds
r = {"stream_sent": 0, "stream_ok": 0, "stream_errors": 0, "conn_ok": 0, "conn_failed": 0,
     "udp_sent": 0, "udp_echoed": 0}
errors = []
def stream():
    try:
        s = socket.create_connection((dst, tport), timeout=3)
    except OSError as e:
        r["stream_errors"] += 1; errors.append(f"stream connect: {e}"); return
    f = s.makefile("rwb")
    i = 0
    while time.monotonic() < end:
        line = f"seq {i}\n".encode()
        try:
            s.settimeout(3)
            f.write(line); f.flush(); r["stream_sent"] += 1
            back = f.readline()
        except OSError as e:
            r["stream_errors"] += 1; errors.append(f"stream {i}: {e}"); return
        if back == line:
            r["stream_ok"] += 1
        else:
            r["stream_errors"] += 1; errors.append(f"stream {i}: got {back!r}"); return
        i += 1
        time.sleep(0.02)
    s.close()
def conns():
    i = 0
    while time.monotonic() < end:
        try:
            c = socket.create_connection((dst, tport), timeout=3)
            c.settimeout(3)
            c.sendall(b"hello\n")
            if c.recv(64) == b"hello\n":
                r["conn_ok"] += 1
            else:
                r["conn_failed"] += 1; errors.append(f"conn {i}: no echo")
            c.close()
        except OSError as e:
            r["conn_failed"] += 1; errors.append(f"conn {i}: {e}")
        i += 1
        time.sleep(0.1)
def udp():
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.connect((dst, uport))
    u.settimeout(0.005)
    seen = set()
    i = 0
    while time.monotonic() < end:
        u.send(f"u {i}".encode()); r["udp_sent"] += 1; i += 1
        try:
            while True:
                seen.add(u.recv(64))
        except (socket.timeout, BlockingIOError):
            pass
    drain = time.monotonic() + 1.5
    while time.monotonic() < drain:
        try:
            seen.add(u.recv(64))
        except (socket.timeout, BlockingIOError):
            pass
    r["udp_echoed"] = len(seen)
ts = [threading.Thread(target=t) for t in (stream, conns, udp)]
for t in ts: t.start()
for t in ts: t.join()
for e in errors[:20]:
    print("error:", e, flush=True)
print("summary " + " ".join(f"{k}={v}" for k, v in r.items()), flush=True)
"#;

const PORT_SCAN_PY: &str = r#"
import errno, selectors, socket, sys, time
dst, timeout = sys.argv[1], float(sys.argv[2])
ports = [int(p) for p in sys.argv[3].split(",") if p]
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
found = []
BATCH = 256  # stays well below the default open-file limit
for i in range(0, len(ports), BATCH):
    sel = selectors.DefaultSelector()
    for port in ports[i:i + BATCH]:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((dst, port))
        if rc == 0:
            found.append(port)
            s.close()
        elif rc == errno.EINPROGRESS:
            sel.register(s, selectors.EVENT_WRITE, port)
        else:
            s.close()
    deadline = time.monotonic() + timeout
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(left):
            sel.unregister(key.fileobj)
            if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                found.append(key.data)
            key.fileobj.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()
print(" ".join(str(p) for p in sorted(found)))
"#;

/// Starts a TCP server on `host`'s address (IPv6 if `v6`) and `port` that accepts forever and
/// writes one line to each connection. Returns once the socket listens (bounded poll with
/// `ss -ltn`). The guard stops it; its log has an `accept <ip> <port>` line per connection.
pub fn tcp_listen(lab: &Lab, host: &Host, port: u16, v6: bool) -> ChildGuard {
    serve(lab, host, port, v6, "tcp", TCP_SERVER_PY, "-ltnH")
}

/// Starts a UDP echo server on `host`'s address and `port`; returns once it is bound. Its
/// log has a `recv <ip> <port> <len>` line per datagram.
pub fn udp_echo(lab: &Lab, host: &Host, port: u16, v6: bool) -> ChildGuard {
    serve(lab, host, port, v6, "udp", UDP_ECHO_PY, "-lunH")
}

/// Starts a TCP server on `host:port` that echoes what each connection sends (a thread per
/// connection); returns once it listens. Logs `accept <ip> <port>` per connection.
pub fn tcp_echo(lab: &Lab, host: &Host, port: u16, v6: bool) -> ChildGuard {
    serve(lab, host, port, v6, "tcpecho", TCP_ECHO_PY, "-ltnH")
}

/// Counts of a [`continuous`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContinuousSummary {
    /// Lines sent / echoed intact on the long-lived connection, and errors (reset, timeout).
    pub stream_sent: u64,
    pub stream_ok: u64,
    pub stream_errors: u64,
    /// New connections that completed an echo / that failed.
    pub conn_ok: u64,
    pub conn_failed: u64,
    /// Datagrams sent / distinct datagrams echoed back.
    pub udp_sent: u64,
    pub udp_echoed: u64,
    /// The client's error lines, for failure messages.
    pub errors: Vec<String>,
}

/// Starts continuous allowed traffic from `from` to `to` for `seconds` (see `CONTINUOUS_PY`):
/// a TCP echo server must listen on `tcp_port` ([`tcp_echo`]) and a UDP echo server on
/// `udp_port` ([`udp_echo`]). Wait for the guard to exit, then read [`continuous_summary`].
pub fn continuous(
    lab: &Lab,
    from: &Host,
    to: IpAddr,
    tcp_port: u16,
    udp_port: u16,
    seconds: u32,
) -> ChildGuard {
    let py = crate::python();
    let log = lab.log_path(&format!("{}-continuous-{to}", from.ns));
    let (to_s, tp, up, secs) = (
        to.to_string(),
        tcp_port.to_string(),
        udp_port.to_string(),
        seconds.to_string(),
    );
    lab.spawn(
        &from.ns,
        &[&py, "-u", "-c", CONTINUOUS_PY, &to_s, &tp, &up, &secs],
        &log,
    )
}

/// The summary a finished [`continuous`] run printed; panics (with its log) if there is none.
pub fn continuous_summary(run: &ChildGuard) -> ContinuousSummary {
    let log = run.log_text();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("summary "))
        .unwrap_or_else(|| panic!("the continuous-traffic client printed no summary:\n{log}"));
    let mut s = ContinuousSummary::default();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=').expect("key=value");
        let v: u64 = v.parse().expect("a count");
        match k {
            "stream_sent" => s.stream_sent = v,
            "stream_ok" => s.stream_ok = v,
            "stream_errors" => s.stream_errors = v,
            "conn_ok" => s.conn_ok = v,
            "conn_failed" => s.conn_failed = v,
            "udp_sent" => s.udp_sent = v,
            "udp_echoed" => s.udp_echoed = v,
            _ => {}
        }
    }
    s.errors = log
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .collect();
    s
}

/// Connects from `from` to `to:port`: true iff the handshake completed and the server's line
/// came back within `timeout`. `bind_src` picks the source address (may be spoofed).
pub fn tcp_connect(
    lab: &Lab,
    from: &Host,
    to: IpAddr,
    port: u16,
    bind_src: Option<IpAddr>,
    timeout: Duration,
) -> bool {
    let src = bind_src.map(|a| a.to_string()).unwrap_or_default();
    let script = format!("{ANY_SOURCE_PY}{TCP_CLIENT_PY}");
    let argv = [
        to.to_string(),
        port.to_string(),
        src,
        format!("{:.3}", timeout.as_secs_f64()),
    ];
    let out = python(lab, &from.ns, &script, &argv, timeout + KILL_SLACK);
    out.status.success()
}

/// Sends `count` datagrams from `from` to `to:port`, one at a time, each waiting up to
/// `timeout` for its echo; returns how many echoes came back.
pub fn udp_exchange(
    lab: &Lab,
    from: &Host,
    to: IpAddr,
    port: u16,
    count: u32,
    bind_src: Option<IpAddr>,
    timeout: Duration,
) -> u32 {
    let src = bind_src.map(|a| a.to_string()).unwrap_or_default();
    let script = format!("{ANY_SOURCE_PY}{UDP_CLIENT_PY}");
    let argv = [
        to.to_string(),
        port.to_string(),
        src,
        count.to_string(),
        format!("{:.3}", timeout.as_secs_f64()),
    ];
    let out = python(lab, &from.ns, &script, &argv, timeout * count + KILL_SLACK);
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.trim().parse() {
        Ok(n) if out.status.success() => n,
        _ => panic!(
            "udp_exchange {} -> {to}:{port} failed ({}): {stdout}{}",
            from.ns,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `ping -c count -W 1 -i 0.2` from `from` to `to` (IPv4 or IPv6); the number of replies.
pub fn ping(lab: &Lab, from: &Host, to: IpAddr, count: u32) -> u32 {
    let family = if to.is_ipv6() { "-6" } else { "-4" };
    let count_s = count.to_string();
    let to_s = to.to_string();
    let argv = [
        "ping", family, "-n", "-c", &count_s, "-W", "1", "-i", "0.2", &to_s,
    ];
    let timeout = Duration::from_millis(200 * u64::from(count) + 1000) + KILL_SLACK;
    let out = lab.run_timeout(&from.ns, &argv, timeout);
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_ping_received(&stdout).unwrap_or_else(|| {
        panic!(
            "cannot read the ping summary ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Tries a TCP connect to every port in `ports` from `from` to `to`, in parallel batches of
/// 256, each batch waiting at most `timeout`; returns the ports that accepted, sorted.
pub fn port_scan(
    lab: &Lab,
    from: &Host,
    to: IpAddr,
    ports: impl IntoIterator<Item = u16>,
    timeout: Duration,
) -> Vec<u16> {
    let ports: Vec<String> = ports.into_iter().map(|p| p.to_string()).collect();
    let batches = u32::try_from(ports.len().div_ceil(256))
        .unwrap_or(u32::MAX)
        .max(1);
    let argv = [
        to.to_string(),
        format!("{:.3}", timeout.as_secs_f64()),
        ports.join(","),
    ];
    let out = python(
        lab,
        &from.ns,
        PORT_SCAN_PY,
        &argv,
        timeout * batches + KILL_SLACK,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!(
            "port scan {} -> {to} failed ({}): {stdout}{}",
            from.ns,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Sets `iface`'s MAC in `ns` and re-points the lab's permanent neighbour entries that name
/// it, so traffic keeps flowing with the new address.
pub fn set_mac(lab: &Lab, ns: &str, iface: &str, mac: &str) {
    lab.ip(ns, &["link", "set", "dev", iface, "address", mac]);
    lab.mac_changed(ns, iface, mac);
}

/// Adds a further address (`"10.20.0.11/16"`, `"fd20::11/64"`) to `host`'s interface, with a
/// permanent neighbour entry for it in the gateway. Use it as `bind_src` for a second source.
pub fn add_addr(lab: &Lab, host: &Host, cidr: &str) -> IpAddr {
    let addr = parse_cidr(cidr, "add_addr");
    let mut args = vec!["addr", "add", cidr, "dev", host.iface.as_str()];
    if addr.is_ipv6() {
        args.insert(0, "-6");
        args.push("nodad");
    }
    lab.ip(&host.ns, &args);
    lab.neigh(lab.gateway(), &host.gw_l3_iface(), addr, &host.mac);
    lab.wait_link_ready(&host.ns, &[host.iface.as_str()]);
    addr
}

fn serve(
    lab: &Lab,
    host: &Host,
    port: u16,
    v6: bool,
    proto: &str,
    script: &str,
    ss_flags: &str,
) -> ChildGuard {
    let addr = host.addr(v6);
    assert!(
        !addr.is_unspecified(),
        "host {} has no {} address",
        host.ns,
        if v6 { "IPv6" } else { "IPv4" }
    );
    let family = if v6 { "v6" } else { "v4" };
    let log: PathBuf = lab.log_path(&format!("{}-{proto}{port}-{family}", host.ns));
    let py = crate::python();
    let (addr_s, port_s) = (addr.to_string(), port.to_string());
    let mut guard = lab.spawn(&host.ns, &[&py, "-u", "-c", script, &addr_s, &port_s], &log);
    let filter = format!("sport = :{port}");
    let bound = match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    let deadline = Instant::now() + LISTEN_WAIT;
    loop {
        let out = lab.run(&host.ns, &["ss", ss_flags, &filter]);
        if String::from_utf8_lossy(&out.stdout).contains(&bound) {
            return guard;
        }
        if let Some(status) = guard.exited() {
            panic!(
                "{proto} server on {bound} in {} exited ({status}):\n{}",
                host.ns,
                guard.log_text()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "{proto} server on {bound} in {} not listening after {LISTEN_WAIT:?}:\n{}",
                host.ns,
                guard.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn python(
    lab: &Lab,
    ns: &str,
    script: &str,
    args: &[String],
    timeout: Duration,
) -> std::process::Output {
    let py = crate::python();
    let mut argv: Vec<&str> = vec![&py, "-c", script];
    argv.extend(args.iter().map(String::as_str));
    lab.run_timeout(ns, &argv, timeout)
}

/// The received count from iputils' `N packets transmitted, M received, ...` line.
fn parse_ping_received(stdout: &str) -> Option<u32> {
    stdout.lines().find_map(|line| {
        let (_, rest) = line.split_once("transmitted, ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_ping_received;

    #[test]
    fn ping_summary() {
        let out = "PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.\n\n--- 10.0.0.1 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 405ms\n";
        assert_eq!(parse_ping_received(out), Some(2));
        let none = "4 packets transmitted, 0 received, +4 errors, 100% packet loss, time 600ms\n";
        assert_eq!(parse_ping_received(none), Some(0));
        assert_eq!(parse_ping_received("garbage"), None);
    }
}

//! [`Lab`]: a gateway namespace and zone hosts joined by veth pairs, deleted on drop.

use std::fs::{self, OpenOptions};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::child::ChildGuard;

/// Where `ip netns` keeps its namespace files.
const NETNS_DIR: &str = "/run/netns";
/// Linux IFNAMSIZ minus the terminating NUL.
const IFNAME_MAX: usize = 15;
/// Bound for interfaces to come up and IPv6 addresses to leave the tentative state.
const LINK_WAIT: Duration = Duration::from_secs(10);

/// Per-process lab counter: with the pid it makes the name prefix unique.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
/// `ip netns add` makes `/run/netns` a shared mount on first use; two threads doing that at
/// once can stack mounts, so namespace creation is serialised within the process.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// Sysctls of the gateway namespace: a router between the zones that keeps its links quiet.
const GATEWAY_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.default.forwarding", "1"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    // The agent, not reverse-path filtering, must be what drops spoofed sources in tests.
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
];

/// Sysctls of a host namespace, set before its interfaces exist so they inherit `default`.
const HOST_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.router_solicitations", "0"),
    ("net.ipv6.conf.default.router_solicitations", "0"),
    ("net.ipv6.conf.all.accept_ra", "0"),
    ("net.ipv6.conf.default.accept_ra", "0"),
];

/// One host to add to a [`Lab`]: a namespace with `eth0`, its veth peer in the gateway.
#[derive(Clone, Debug, Default)]
pub struct HostSpec {
    /// The host's zone, used only to name the namespace.
    pub zone: String,
    /// Name of the veth end in the gateway namespace (<= 15 bytes, unique in the lab), e.g.
    /// `"zmyn"`. The XDP program attaches here.
    pub gw_iface: String,
    /// Host address with prefix length, e.g. `"10.10.0.10/16"`.
    pub v4: String,
    /// Gateway address on that link, e.g. `"10.10.0.1/16"`; the host's default route.
    pub gw_v4: String,
    /// Host IPv6 address with prefix length, e.g. `"fd10::10/64"`; empty for none.
    pub v6: String,
    /// Gateway IPv6 address, e.g. `"fd10::1/64"`; empty for none.
    pub gw_v6: String,
    /// MAC of the host's `eth0`; empty for a random one.
    pub mac: String,
    /// MAC of the gateway's end; empty for a random one.
    pub gw_mac: String,
    /// With `Some(v)`, the addresses live on `eth0.v` / `<gw_iface>.v`: tagged frames on the
    /// veth, the XDP program (on the parent `<gw_iface>`) sees the tag.
    pub vlan: Option<u16>,
}

/// A host made by [`Lab::add_host`].
#[derive(Clone, Debug)]
pub struct Host {
    /// The host's namespace.
    pub ns: String,
    /// The interface carrying its addresses: `"eth0"`, or `"eth0.<vlan>"`.
    pub iface: String,
    pub v4: IpAddr,
    /// `::` when the spec had no IPv6 address.
    pub v6: IpAddr,
    /// MAC of the host's `eth0` (as read back from the kernel).
    pub mac: String,
    /// The veth end in the gateway namespace (the parent, where XDP attaches).
    pub gw_iface: String,
    /// The gateway's addresses on this link (`::` when none).
    pub gw_v4: IpAddr,
    pub gw_v6: IpAddr,
    /// The gateway's MAC on this link.
    pub gw_mac: String,
    pub vlan: Option<u16>,
    pub zone: String,
}

impl Host {
    /// The host's address of the given family.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 { self.v6 } else { self.v4 }
    }

    /// The interface that carries the addresses in the gateway: `gw_iface` or `gw_iface.vlan`.
    pub fn gw_l3_iface(&self) -> String {
        match self.vlan {
            Some(v) => format!("{}.{v}", self.gw_iface),
            None => self.gw_iface.clone(),
        }
    }
}

/// A private set of namespaces: one gateway routing between zone hosts.
///
/// Names are `za<pid % 100000>-<n>-<role>` (e.g. `za4242-0-gw`, `za4242-0-mynumber1`), unique
/// per process and checked against existing namespaces, so labs and tests run in parallel.
/// Addresses and ports may repeat between labs: each lab is private.
///
/// Drop kills every process still inside the lab's namespaces, deletes the namespaces (which
/// removes their veths), unmounts the lab's bpffs and removes its temp dir. When the test is
/// panicking it first prints the tail of every `*.log` in the lab dir and keeps the dir.
/// Drop logs problems and never panics. `ZA_KEEP_LAB=1` keeps everything and prints the names.
pub struct Lab {
    test_name: String,
    prefix: String,
    gateway: String,
    /// Every namespace made, gateway first; deleted in reverse order.
    namespaces: Vec<String>,
    hosts: Vec<Host>,
    dir: PathBuf,
    bpffs: OnceLock<PathBuf>,
    keep: bool,
}

impl Lab {
    /// Makes a lab with its gateway namespace (forwarding on for IPv4 and IPv6, DAD off).
    pub fn new(test_name: &str) -> Lab {
        crate::require_root();
        let pid = std::process::id() % 100_000;
        let prefix = loop {
            let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
            let candidate = format!("za{pid}-{n}");
            if !prefix_in_use(&candidate) {
                break candidate;
            }
        };
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", sanitize(test_name, 40)));
        if let Err(err) = fs::create_dir_all(&dir) {
            panic!("cannot create lab dir {}: {err}", dir.display());
        }
        // The value exists before the first namespace does, so a panic below still cleans up.
        let mut lab = Lab {
            test_name: test_name.to_owned(),
            gateway: format!("{prefix}-gw"),
            prefix,
            namespaces: Vec::new(),
            hosts: Vec::new(),
            dir,
            bpffs: OnceLock::new(),
            keep: false,
        };
        let gateway = lab.add_namespace("gw");
        debug_assert_eq!(gateway, lab.gateway);
        lab.sysctls(&gateway, GATEWAY_SYSCTLS);
        lab
    }

    /// The gateway namespace.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// The lab's unique name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every namespace of the lab, gateway first.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The hosts added so far.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The lab's private temp dir (logs, policy files, state dirs). Removed on drop unless the
    /// test panicked or the lab is kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<lab dir>/<name>.log`: where to send a child's output so a failure dumps it.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.log", sanitize(name, 60)))
    }

    /// A bpffs private to this lab (`<lab dir>/bpffs`), mounted on first use and unmounted on
    /// drop. Use it (or a subdirectory) as the agent's `--pin-dir`: `ip netns exec` remounts
    /// `/sys`, so `/sys/fs/bpf` is not a bpffs inside a namespace.
    pub fn bpffs(&self) -> &Path {
        self.bpffs.get_or_init(|| {
            let path = self.dir.join("bpffs");
            if let Err(err) = fs::create_dir_all(&path) {
                panic!("cannot create {}: {err}", path.display());
            }
            if let Err(err) = nix::mount::mount(
                Some("bpf"),
                &path,
                Some("bpf"),
                MsFlags::empty(),
                None::<&str>,
            ) {
                panic!("cannot mount a bpffs at {}: {err}", path.display());
            }
            path
        })
    }

    /// Keeps the lab (namespaces, dir, bpffs) after drop, as `ZA_KEEP_LAB=1` does.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Adds a host namespace joined to the gateway by a veth pair and waits until the link is
    /// up, IPv6 addresses are usable and permanent neighbour entries are in place both ways.
    pub fn add_host(&mut self, spec: HostSpec) -> Host {
        self.check_spec(&spec);
        let v4 = parse_cidr(&spec.v4, "v4");
        let gw_v4 = parse_cidr(&spec.gw_v4, "gw_v4");
        let has_v6 = !spec.v6.is_empty();
        let (v6, gw_v6) = if has_v6 {
            (parse_cidr(&spec.v6, "v6"), parse_cidr(&spec.gw_v6, "gw_v6"))
        } else {
            (IpAddr::from([0u16; 8]), IpAddr::from([0u16; 8]))
        };

        let zone = sanitize(&spec.zone, 10);
        let ns = self.add_namespace(&format!("{zone}{}", self.hosts.len()));
        self.sysctls(&ns, HOST_SYSCTLS);
        let gw = self.gateway.clone();

        // Made from inside the gateway namespace with the peer placed straight into the host
        // namespace: neither end ever exists in the namespace the test runs in.
        let gw_if_name = &spec.gw_iface;
        let gw_addr = opt("address", &spec.gw_mac);
        let addr = opt("address", &spec.mac);
        self.ip_line(
            &gw,
            &format!("link add {gw_if_name} {gw_addr} type veth peer name eth0 {addr} netns {ns}"),
        );
        self.ip_line(&ns, "link set eth0 up");
        self.ip_line(&gw, &format!("link set {gw_if_name} up"));

        let (host_if, gw_if) = match spec.vlan {
            None => ("eth0".to_owned(), spec.gw_iface.clone()),
            Some(v) => {
                let host_if = format!("eth0.{v}");
                let gw_if = format!("{gw_if_name}.{v}");
                for (side, parent, name) in [(&ns, "eth0", &host_if), (&gw, gw_if_name, &gw_if)] {
                    self.ip_line(
                        side,
                        &format!("link add link {parent} name {name} type vlan id {v}"),
                    );
                    self.ip_line(side, &format!("link set {name} up"));
                }
                (host_if, gw_if)
            }
        };

        self.ip_line(&ns, &format!("addr add {} dev {host_if}", spec.v4));
        self.ip_line(&gw, &format!("addr add {} dev {gw_if}", spec.gw_v4));
        self.ip_line(&ns, &format!("route add default via {gw_v4} dev {host_if}"));
        if has_v6 {
            self.ip_line(&ns, &format!("-6 addr add {} dev {host_if} nodad", spec.v6));
            self.ip_line(
                &gw,
                &format!("-6 addr add {} dev {gw_if} nodad", spec.gw_v6),
            );
            self.ip_line(
                &ns,
                &format!("-6 route add default via {gw_v6} dev {host_if}"),
            );
        }

        let mac = self.link_mac(&ns, "eth0");
        let gw_mac = self.link_mac(&gw, &spec.gw_iface);
        // Permanent neighbours: no ARP/ND on the links, no wait for resolution, quiet counters.
        self.neigh(&ns, &host_if, gw_v4, &gw_mac);
        self.neigh(&gw, &gw_if, v4, &mac);
        if has_v6 {
            self.neigh(&ns, &host_if, gw_v6, &gw_mac);
            self.neigh(&gw, &gw_if, v6, &mac);
        }

        self.wait_link_ready(&ns, &["eth0", host_if.as_str()]);
        self.wait_link_ready(&gw, &[spec.gw_iface.as_str(), gw_if.as_str()]);

        let host = Host {
            ns,
            iface: host_if,
            v4,
            v6,
            mac,
            gw_iface: spec.gw_iface,
            gw_v4,
            gw_v6,
            gw_mac,
            vlan: spec.vlan,
            zone: spec.zone,
        };
        self.hosts.push(host.clone());
        host
    }

    /// `ip netns exec <ns> <argv...>`: the output, whatever the exit status.
    pub fn run(&self, ns: &str, argv: &[&str]) -> Output {
        let mut cmd = self.netns_exec(ns, argv);
        match cmd.output() {
            Ok(out) => out,
            Err(err) => panic!(
                "cannot start `ip netns exec {ns} {}`: {err}",
                argv.join(" ")
            ),
        }
    }

    /// Like [`Lab::run`] but kills the command (SIGKILL) if it runs longer than `timeout`;
    /// the output then has whatever it printed and a non-success status.
    pub fn run_timeout(&self, ns: &str, argv: &[&str], timeout: Duration) -> Output {
        let mut cmd = self.netns_exec(ns, argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => panic!(
                "cannot start `ip netns exec {ns} {}`: {err}",
                argv.join(" ")
            ),
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
        let waiter = std::thread::spawn(move || child.wait_with_output());
        let deadline = Instant::now() + timeout;
        while !waiter.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !waiter.is_finished() {
            eprintln!(
                "zone-agent-lab: `{}` in {ns} exceeded {timeout:?}: killed",
                argv.join(" ")
            );
            // The child cannot have been reaped yet (the waiter has not returned), so the pid
            // still names it.
            let _ = kill(pid, Signal::SIGKILL);
        }
        match waiter.join() {
            Ok(Ok(out)) => out,
            Ok(Err(err)) => panic!("waiting for `{}` in {ns}: {err}", argv.join(" ")),
            Err(_) => panic!("waiter thread for `{}` panicked", argv.join(" ")),
        }
    }

    /// Like [`Lab::run`]; panics with the command, status, stdout and stderr unless it
    /// succeeded. Returns stdout.
    pub fn run_ok(&self, ns: &str, argv: &[&str]) -> String {
        let out = self.run(ns, argv);
        if !out.status.success() {
            panic!(
                "`ip netns exec {ns} {}` failed ({})\n--- stdout\n{}--- stderr\n{}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `argv` in `ns` with stdout and stderr appended to `log`. The guard stops it.
    pub fn spawn(&self, ns: &str, argv: &[&str], log: &Path) -> ChildGuard {
        let file = match OpenOptions::new().create(true).append(true).open(log) {
            Ok(file) => file,
            Err(err) => panic!("cannot open log {}: {err}", log.display()),
        };
        let file2 = file.try_clone().expect("duplicate log file descriptor");
        let mut cmd = self.netns_exec(ns, argv);
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        match cmd.spawn() {
            Ok(child) => {
                ChildGuard::new(child, format!("{ns}: {}", argv.join(" ")), log.to_owned())
            }
            Err(err) => panic!(
                "cannot start `ip netns exec {ns} {}`: {err}",
                argv.join(" ")
            ),
        }
    }

    /// Runs `ip -n <ns> <args...>` (iproute2 switches into the namespace itself); panics with
    /// the output on failure.
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut argv = vec!["-n", ns];
        argv.extend_from_slice(args);
        host_cmd_ok("ip", &argv)
    }

    /// [`Lab::ip`] with the arguments given as one whitespace-separated line.
    pub fn ip_line(&self, ns: &str, line: &str) -> String {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.ip(ns, &args)
    }

    /// Writes sysctls inside `ns` (`net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`).
    pub fn sysctls(&self, ns: &str, settings: &[(&str, &str)]) {
        let script: Vec<String> = settings
            .iter()
            .map(|(key, value)| format!("echo {value} > /proc/sys/{}", key.replace('.', "/")))
            .collect();
        self.run_ok(ns, &["sh", "-ec", &script.join("\n")]);
    }

    /// Re-points the permanent neighbour entries that name `ns`/`iface` after its MAC changed
    /// (used by [`crate::set_mac`]).
    pub(crate) fn mac_changed(&self, ns: &str, iface: &str, mac: &str) {
        for host in &self.hosts {
            let gw = self.gateway.as_str();
            if host.ns == ns && (iface == "eth0" || iface == host.iface) {
                self.neigh(gw, &host.gw_l3_iface(), host.v4, mac);
                if !host.v6.is_unspecified() {
                    self.neigh(gw, &host.gw_l3_iface(), host.v6, mac);
                }
            }
            if ns == gw && (iface == host.gw_iface || iface == host.gw_l3_iface()) {
                self.neigh(&host.ns, &host.iface, host.gw_v4, mac);
                if !host.gw_v6.is_unspecified() {
                    self.neigh(&host.ns, &host.iface, host.gw_v6, mac);
                }
            }
        }
    }

    /// Adds a permanent neighbour entry (used by [`crate::add_addr`] and [`Lab::add_host`]).
    pub(crate) fn neigh(&self, ns: &str, dev: &str, addr: IpAddr, mac: &str) {
        self.ip_line(
            ns,
            &format!("neigh replace {addr} lladdr {mac} dev {dev} nud permanent"),
        );
    }

    /// Waits (bounded) until the interfaces have carrier and no address of `ns` is tentative.
    pub(crate) fn wait_link_ready(&self, ns: &str, ifaces: &[&str]) {
        let what = format!("{ifaces:?} in {ns} are up with no tentative IPv6 address");
        crate::wait_until(LINK_WAIT, &what, || {
            let up = ifaces.iter().all(|iface| {
                host_cmd("ip", &["-n", ns, "-o", "link", "show", "dev", iface])
                    .is_some_and(|out| out.contains("LOWER_UP") && !out.contains("state DOWN"))
            });
            up && host_cmd("ip", &["-n", ns, "-6", "addr", "show", "tentative"])
                .is_some_and(|out| out.trim().is_empty())
        });
    }

    fn link_mac(&self, ns: &str, iface: &str) -> String {
        let out = self.ip(ns, &["-o", "link", "show", "dev", iface]);
        let mut words = out.split_whitespace();
        while let Some(word) = words.next() {
            if word == "link/ether"
                && let Some(mac) = words.next()
            {
                return mac.to_owned();
            }
        }
        panic!("no MAC address in `ip -n {ns} link show dev {iface}`: {out}");
    }

    fn add_namespace(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        {
            let _serial = NETNS_ADD
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            host_cmd_ok("ip", &["netns", "add", &name]);
        }
        self.namespaces.push(name.clone());
        self.ip(&name, &["link", "set", "lo", "up"]);
        name
    }

    fn check_spec(&self, spec: &HostSpec) {
        let l3_len = spec.gw_iface.len() + spec.vlan.map_or(0, |v| 1 + v.to_string().len());
        if spec.gw_iface.is_empty() || l3_len > IFNAME_MAX {
            panic!(
                "gw_iface {:?} (with its VLAN suffix) must be 1..={IFNAME_MAX} bytes",
                spec.gw_iface
            );
        }
        if self.hosts.iter().any(|h| h.gw_iface == spec.gw_iface) {
            panic!("gw_iface {:?} is already used in this lab", spec.gw_iface);
        }
        if spec.vlan.is_some_and(|v| v == 0 || v > 4094) {
            panic!("vlan {:?} must be 1..=4094", spec.vlan);
        }
        if spec.vlan.is_some() && !vlan_supported() {
            panic!(
                "HostSpec.vlan needs 802.1Q support in the kernel (CONFIG_VLAN_8021Q), which \
                 this one lacks: check zone_agent_lab::vlan_supported() and skip, or test VLAN \
                 tags with BPF_PROG_TEST_RUN"
            );
        }
    }

    fn netns_exec(&self, ns: &str, argv: &[&str]) -> Command {
        assert!(!argv.is_empty(), "empty command for namespace {ns}");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(argv);
        cmd
    }

    /// Prints the last lines of every log in the lab dir (called when a test panics).
    fn dump_logs(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("----- {} (last {} lines)", log.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }

    /// Stops every process still inside `ns`: SIGTERM, SIGKILL after the grace period.
    fn kill_namespace_pids(ns: &str) {
        let pids = |ns: &str| -> Vec<Pid> {
            host_cmd("ip", &["netns", "pids", ns])
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok().map(Pid::from_raw))
                .collect()
        };
        let first = pids(ns);
        if first.is_empty() {
            return;
        }
        for pid in &first {
            let _ = kill(*pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + crate::child::STOP_GRACE;
        while Instant::now() < deadline && !pids(ns).is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids(ns) {
            eprintln!("zone-agent-lab: pid {pid} in {ns} ignored SIGTERM: SIGKILL");
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "zone-agent-lab: test {:?} failed; logs of lab {}:",
                self.test_name, self.prefix
            );
            self.dump_logs();
        }
        if self.keep || crate::keep_lab() {
            eprintln!(
                "zone-agent-lab: keeping lab {} of {:?}: namespaces {}; dir {}{}",
                self.prefix,
                self.test_name,
                self.namespaces.join(" "),
                self.dir.display(),
                self.bpffs
                    .get()
                    .map(|p| format!("; bpffs {}", p.display()))
                    .unwrap_or_default()
            );
            return;
        }
        for ns in self.namespaces.iter().rev() {
            Lab::kill_namespace_pids(ns);
            if let Err(err) = host_cmd_result("ip", &["netns", "delete", ns]) {
                eprintln!("zone-agent-lab: cannot delete namespace {ns}: {err}");
            }
        }
        if let Some(bpffs) = self.bpffs.get()
            && let Err(err) = nix::mount::umount2(bpffs, MntFlags::MNT_DETACH)
        {
            eprintln!("zone-agent-lab: cannot unmount {}: {err}", bpffs.display());
        }
        if panicking {
            eprintln!(
                "zone-agent-lab: lab dir kept for inspection: {}",
                self.dir.display()
            );
        } else if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "zone-agent-lab: cannot remove {}: {err}",
                self.dir.display()
            );
        }
    }
}

/// Whether the kernel can make 802.1Q VLAN interfaces (`HostSpec.vlan`). Some VM kernels
/// are built without `CONFIG_VLAN_8021Q`; tests that need VLANs check this and say they skip.
pub fn vlan_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let present = || Path::new("/proc/net/vlan").exists();
        present() || (host_cmd("modprobe", &["-q", "8021q"]).is_some() && present())
    })
}

/// `"<key> <value>"`, or nothing when `value` is empty (an optional `ip` argument).
fn opt(key: &str, value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!("{key} {value}")
    }
}

/// True when some namespace already starts with `<prefix>-` (a stale or foreign lab).
fn prefix_in_use(prefix: &str) -> bool {
    let start = format!("{prefix}-");
    fs::read_dir(NETNS_DIR).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(&start))
    })
}

/// Lower-case alphanumerics, `_` and `-` of `s`, at most `max` of them (`"x"` when none).
fn sanitize(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .take(max)
        .collect();
    if out.is_empty() { "x".to_owned() } else { out }
}

/// `"10.10.0.10/16"` → `10.10.0.10`; panics naming the field on bad input.
pub(crate) fn parse_cidr(cidr: &str, field: &str) -> IpAddr {
    let addr = cidr.split_once('/').map_or(cidr, |(addr, _)| addr);
    match addr.parse() {
        Ok(addr) => addr,
        Err(err) => panic!("HostSpec.{field} {cidr:?} is not an address/prefix: {err}"),
    }
}

/// Runs a command in the test's own namespaces; stdout on success, the error text otherwise.
fn host_cmd_result(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot start `{program}`: {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn host_cmd(program: &str, args: &[&str]) -> Option<String> {
    host_cmd_result(program, args).ok()
}

fn host_cmd_ok(program: &str, args: &[&str]) -> String {
    host_cmd_result(program, args).unwrap_or_else(|err| panic!("{err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_short_alphanumerics() {
        assert_eq!(sanitize("MyNumber Zone!", 10), "mynumberzo");
        assert_eq!(sanitize("za1-2-lgwan1", 20), "za1-2-lgwan1");
        assert_eq!(sanitize("!?", 5), "x");
    }

    #[test]
    fn parse_cidr_strips_prefix() {
        assert_eq!(
            parse_cidr("10.10.0.10/16", "v4"),
            "10.10.0.10".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse_cidr("fd10::1", "v6"),
            "fd10::1".parse::<IpAddr>().unwrap()
        );
    }
}

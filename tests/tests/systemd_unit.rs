//! The capability set of `systemd/zone-agent.service` (`CapabilityBoundingSet=`) is exactly
//! what the agent needs: with it, and nothing else, the agent loads, attaches and enforces a
//! policy on a lab gateway; without any one of its capabilities, it cannot start.
//!
//! The agent runs as the unit runs it, root with a reduced bounding set and no new privileges
//! (`setpriv --bounding-set=-all,+... --inh-caps=-all --no-new-privs`), inside the lab's
//! gateway namespace, never on the host's interfaces. What this does not reproduce: the
//! unit's file-system sandbox and system call filter (systemd applies those, and systemd is
//! not running here); `cargo xtask test`'s `systemd-analyze verify` covers the unit's syntax.
//!
//! Needs root; `cargo xtask test` runs it under `unshare --mount --net`.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zone_agent_lab::agent::{self, METRICS_ADDR};
use zone_agent_lab::fixture::{LGWAN, MYNUMBER, Zone};
use zone_agent_lab::{ChildGuard, Host, HostSpec, Lab, agent_bin, scrape, tcp_connect, tcp_listen};

/// Bound for the agent to load, attach and answer /metrics.
const AGENT_READY: Duration = Duration::from_secs(30);
/// Bound for an agent lacking a capability to give up.
const AGENT_FAIL: Duration = Duration::from_secs(30);
const T: Duration = Duration::from_secs(3);
const T_FAIL: Duration = Duration::from_millis(700);

const POLICY: &str = r#"version = 1
mode = "enforce"

[[zones]]
name = "mynumber"
interfaces = ["zmyn"]
networks = ["10.10.0.0/16"]
criticality = "critical"

[[zones]]
name = "lgwan"
interfaces = ["zlgw"]
networks = ["10.20.0.0/16"]
criticality = "high"

[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.0.10/32"]
"#;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/zone-agent.service")
}

/// `CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN` → `["bpf", "net_admin"]` (setpriv's names).
fn unit_capabilities() -> Vec<String> {
    let path = unit_path();
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CapabilityBoundingSet="))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one CapabilityBoundingSet= line in the unit"
    );
    let caps: Vec<String> = lines[0]
        .split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("unexpected capability {c:?} in the unit"))
                .to_ascii_lowercase()
        })
        .collect();
    assert!(!caps.is_empty(), "the unit grants no capability at all?");
    caps
}

/// `setpriv` arguments that give a root process exactly `caps`, as systemd does for the unit.
fn setpriv(caps: &[String]) -> Vec<String> {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all{set}"),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

/// The fixture's host of `zone`: IPv4 only, a random MAC.
fn host(zone: &Zone) -> HostSpec {
    HostSpec {
        mac: String::new(),
        ..zone.host_v4()
    }
}

/// A lab with a mynumber and an lgwan host; the policy written to the lab dir.
fn lab(test: &str) -> (Lab, Host, Host, PathBuf) {
    let mut lab = Lab::new(test);
    let my = lab.add_host(host(&MYNUMBER));
    let lg = lab.add_host(host(&LGWAN));
    let policy = lab.dir().join("policy.toml");
    fs::write(&policy, POLICY).expect("write policy");
    (lab, my, lg, policy)
}

/// `zone-agent run` in the gateway with exactly `caps`.
fn spawn_agent(lab: &Lab, policy: &Path, caps: &[String], log: &str) -> ChildGuard {
    let mut start = agent::Start::new(lab, policy);
    start.state = lab.dir().join(format!("state-{log}"));
    start.pins = lab.bpffs().join(log);
    start.log = log.into();
    start.wrapper = setpriv(caps);
    start.spawn()
}

fn xdp_attached(lab: &Lab, iface: &str) -> bool {
    lab.ip(lab.gateway(), &["-d", "link", "show", "dev", iface])
        .split_whitespace()
        .any(|w| w.starts_with("xdp") || w.starts_with("prog/xdp"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// With the unit's capabilities only, the agent checks the policy, attaches to both zone
/// interfaces and enforces it: the 特定通信 passes, another port of the same host does not.
/// With the same capabilities a restart adopts the pinned state and `detach` removes it.
#[test]
fn the_unit_capabilities_are_enough_to_enforce() {
    let caps = unit_capabilities();
    let (lab, my, lg, policy) = lab("unit_caps_enough");
    let _https = tcp_listen(&lab, &my, 443, false);
    let _ssh = tcp_listen(&lab, &my, 22, false);

    // `policy check` (online: the interfaces must exist) as the unit's ExecStart would see it.
    let mut check = setpriv(&caps);
    check.extend([
        agent_bin().to_str().unwrap().to_owned(),
        "policy".into(),
        "check".into(),
        policy.to_str().unwrap().to_owned(),
    ]);
    let check: Vec<&str> = check.iter().map(String::as_str).collect();
    lab.run_ok(lab.gateway(), &check);

    let mut agent = spawn_agent(&lab, &policy, &caps, "agent");
    let started = Instant::now();
    while scrape::metrics(&lab, lab.gateway(), METRICS_ADDR).is_none() {
        if let Some(status) = agent.exited() {
            panic!(
                "with only {caps:?} the agent exited ({status}) before serving metrics:\n{}",
                agent.log_text()
            );
        }
        assert!(
            started.elapsed() < AGENT_READY,
            "with only {caps:?} the agent did not answer /metrics within {AGENT_READY:?}:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for iface in ["zmyn", "zlgw"] {
        assert!(xdp_attached(&lab, iface), "no XDP program on {iface}");
    }
    assert!(
        tcp_connect(&lab, &lg, ip("10.10.0.10"), 443, None, T),
        "relay-https is allowed:\n{}",
        agent.log_text()
    );
    assert!(
        !tcp_connect(&lab, &lg, ip("10.10.0.10"), 22, None, T_FAIL),
        "port 22 is in no rule and must be blocked"
    );
    let status = agent.stop().expect("the agent is reaped");
    assert!(
        status.success(),
        "the agent exited with {status} on SIGTERM:\n{}",
        agent.log_text()
    );

    // What a `systemctl restart` does, with the same capabilities: the stopped agent left the
    // policy pinned and enforcing; the new one adopts it (BPF_OBJ_GET + BPF_LINK_UPDATE).
    for iface in ["zmyn", "zlgw"] {
        assert!(
            xdp_attached(&lab, iface),
            "the stop removed XDP from {iface}"
        );
    }
    let mut agent = spawn_agent(&lab, &policy, &caps, "agent");
    let started = Instant::now();
    while scrape::metrics(&lab, lab.gateway(), METRICS_ADDR).is_none() {
        if let Some(status) = agent.exited() {
            panic!(
                "with only {caps:?} the restarted agent exited ({status}):\n{}",
                agent.log_text()
            );
        }
        assert!(
            started.elapsed() < AGENT_READY,
            "restart: no /metrics:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        agent.log_text().contains("adopted"),
        "the restarted agent did not adopt the links:\n{}",
        agent.log_text()
    );
    assert!(
        !tcp_connect(&lab, &lg, ip("10.10.0.10"), 22, None, T_FAIL),
        "port 22 after the restart"
    );
    assert!(
        tcp_connect(&lab, &lg, ip("10.10.0.10"), 443, None, T),
        "relay-https after the restart"
    );
    agent.stop().expect("the agent is reaped");

    // `zone-agent detach` with the same capabilities removes everything.
    let mut detach = setpriv(&caps);
    detach.extend([
        agent_bin().to_str().unwrap().to_owned(),
        "detach".into(),
        "--pin-dir".into(),
        lab.bpffs().join("agent").to_str().unwrap().to_owned(),
        "--state-dir".into(),
        lab.dir().join("state-agent").to_str().unwrap().to_owned(),
    ]);
    let detach: Vec<&str> = detach.iter().map(String::as_str).collect();
    lab.run_ok(lab.gateway(), &detach);
    for iface in ["zmyn", "zlgw"] {
        assert!(
            !xdp_attached(&lab, iface),
            "XDP still on {iface} after detach"
        );
    }
    assert!(
        tcp_connect(&lab, &lg, ip("10.10.0.10"), 22, None, T),
        "after detach the gateway routes unfiltered"
    );
}

/// Each capability of the unit is needed: without it the agent fails to start (and says so),
/// instead of running without enforcing.
#[test]
fn each_unit_capability_is_needed() {
    let caps = unit_capabilities();
    let (lab, _my, _lg, policy) = lab("unit_caps_needed");
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let log = format!("without-{missing}");
        let mut agent = spawn_agent(&lab, &policy, &fewer, &log);
        let Some(status) = agent.wait_exit(AGENT_FAIL) else {
            panic!(
                "without CAP_{} the agent still runs after {AGENT_FAIL:?}: is the capability \
                 needed at all? Log:\n{}",
                missing.to_ascii_uppercase(),
                agent.log_text()
            );
        };
        assert!(
            !status.success(),
            "without CAP_{} the agent exited with success:\n{}",
            missing.to_ascii_uppercase(),
            agent.log_text()
        );
        let log_text = agent.log_text();
        eprintln!(
            "without CAP_{}: {status}, last line: {}",
            missing.to_ascii_uppercase(),
            log_text.lines().last().unwrap_or("")
        );
        for iface in ["zmyn", "zlgw"] {
            assert!(
                !xdp_attached(&lab, iface),
                "without CAP_{} an XDP program got attached to {iface}",
                missing.to_ascii_uppercase()
            );
        }
    }
}

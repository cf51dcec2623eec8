//! The lab itself, without the agent: zones route through the gateway over IPv4 and IPv6,
//! the traffic helpers observe what they claim to, and the guards clean up.
//!
//! Needs root; `cargo xtask test` runs it under `unshare --mount --net`.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use zone_agent_lab::{
    Host, HostSpec, Lab, Signal, add_addr, ping, port_scan, set_mac, tcp_connect, tcp_listen,
    udp_echo, udp_exchange, vlan_supported, wait_until,
};

const T: Duration = Duration::from_secs(3);
/// Short wait for attempts that are expected to fail.
const T_FAIL: Duration = Duration::from_millis(700);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mynumber(lab: &mut Lab) -> Host {
    lab.add_host(HostSpec {
        zone: "mynumber".into(),
        gw_iface: "zmyn".into(),
        v4: "10.10.0.10/16".into(),
        gw_v4: "10.10.0.1/16".into(),
        v6: "fd10::10/64".into(),
        gw_v6: "fd10::1/64".into(),
        mac: "02:00:00:00:10:10".into(),
        gw_mac: "02:00:00:00:10:01".into(),
        vlan: None,
    })
}

/// On VLAN 100 where the kernel has 802.1Q support, so the tagged path is covered too.
fn lgwan(lab: &mut Lab) -> Host {
    let vlan = vlan_supported().then_some(100);
    if vlan.is_none() {
        eprintln!("SKIP VLAN: this kernel has no 802.1Q support; lgwan is untagged");
    }
    lab.add_host(HostSpec {
        zone: "lgwan".into(),
        gw_iface: "zlgw".into(),
        v4: "10.20.0.10/16".into(),
        gw_v4: "10.20.0.1/16".into(),
        v6: "fd20::10/64".into(),
        gw_v6: "fd20::1/64".into(),
        mac: "02:00:00:00:20:10".into(),
        gw_mac: "02:00:00:00:20:01".into(),
        vlan,
    })
}

fn links(lab: &Lab, ns: &str) -> String {
    lab.ip(ns, &["-o", "link", "show"])
}

fn root_links() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn routes_between_zones_over_ipv4_and_ipv6() {
    let root_before = root_links();
    let mut lab = Lab::new("routes_between_zones");
    let my = mynumber(&mut lab);
    let lg = lgwan(&mut lab);
    assert_eq!(my.mac, "02:00:00:00:10:10");
    if lg.vlan.is_some() {
        assert_eq!(lg.iface, "eth0.100");
        assert!(links(&lab, lab.gateway()).contains("zlgw.100@zlgw"));
    }

    for v6 in [false, true] {
        assert_eq!(
            ping(&lab, &lg, my.addr(v6), 3),
            3,
            "ping lgwan -> mynumber (v6={v6})"
        );
        assert_eq!(
            ping(&lab, &my, lg.addr(v6), 3),
            3,
            "ping mynumber -> lgwan (v6={v6})"
        );
    }
    // Nothing of the lab appeared in the test's own namespace.
    assert_eq!(
        root_links(),
        root_before,
        "the lab changed the test's own namespace"
    );
}

#[test]
fn tcp_and_udp_exchanges_are_observed() {
    let mut lab = Lab::new("tcp_and_udp");
    let my = mynumber(&mut lab);
    let lg = lgwan(&mut lab);

    for v6 in [false, true] {
        let dst = my.addr(v6);
        let server = tcp_listen(&lab, &my, 443, v6);
        assert!(
            tcp_connect(&lab, &lg, dst, 443, None, T),
            "tcp lgwan -> {dst}:443"
        );
        assert!(
            server
                .log_text()
                .contains(&format!("accept {}", lg.addr(v6)))
        );
        // A closed port: the helper must report failure, not success.
        assert!(
            !tcp_connect(&lab, &lg, dst, 444, None, T_FAIL),
            "tcp to a closed port"
        );

        let echo = udp_echo(&lab, &my, 53, v6);
        assert_eq!(
            udp_exchange(&lab, &lg, dst, 53, 4, None, T),
            4,
            "udp lgwan -> {dst}:53"
        );
        assert_eq!(echo.log_text().matches("recv ").count(), 4);
        assert_eq!(
            udp_exchange(&lab, &lg, dst, 54, 2, None, T_FAIL),
            0,
            "udp to a closed port"
        );
    }
}

#[test]
fn port_scan_finds_exactly_the_listeners() {
    let mut lab = Lab::new("port_scan");
    let my = mynumber(&mut lab);
    let lg = lgwan(&mut lab);
    let _servers: Vec<_> = [22, 80, 443, 1000]
        .iter()
        .map(|&p| tcp_listen(&lab, &my, p, false))
        .collect();
    let started = Instant::now();
    let open = port_scan(&lab, &lg, my.v4, 1..=1024, T);
    assert_eq!(open, vec![22, 80, 443, 1000]);
    // Closed ports answer with RST, so no batch waits for its timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "scan took {:?}",
        started.elapsed()
    );
}

#[test]
fn spoofed_and_secondary_sources_really_leave_the_host() {
    let mut lab = Lab::new("sources");
    let my = mynumber(&mut lab);
    let lg = lgwan(&mut lab);
    let echo = udp_echo(&lab, &my, 53, false);
    let server = tcp_listen(&lab, &my, 443, false);

    // A second address of the lgwan host: replies route back, the exchange works.
    let second = add_addr(&lab, &lg, "10.20.0.11/16");
    assert!(tcp_connect(&lab, &lg, my.v4, 443, Some(second), T));
    assert!(server.log_text().contains("accept 10.20.0.11"));
    assert_eq!(udp_exchange(&lab, &lg, my.v4, 53, 2, Some(second), T), 2);

    // A source the host does not own (a mynumber address sent from lgwan): the datagram
    // reaches the server, whose echo goes to the real owner, so nothing comes back.
    assert_eq!(
        udp_exchange(&lab, &lg, my.v4, 53, 1, Some(ip("10.10.0.99")), T_FAIL),
        0
    );
    wait_until(T, "the spoofed datagram is logged by the server", || {
        echo.log_text().contains("recv 10.10.0.99 ")
    });
    let v6_echo = udp_echo(&lab, &my, 53, true);
    assert_eq!(
        udp_exchange(&lab, &lg, my.v6, 53, 1, Some(ip("fd10::99")), T_FAIL),
        0
    );
    wait_until(T, "the spoofed IPv6 datagram is logged", || {
        v6_echo.log_text().contains("recv fd10::99 ")
    });
}

#[test]
fn set_mac_keeps_traffic_flowing() {
    let mut lab = Lab::new("set_mac");
    let my = mynumber(&mut lab);
    let lg = lgwan(&mut lab);
    let _server = tcp_listen(&lab, &my, 443, true);
    set_mac(&lab, &lg.ns, "eth0", "02:00:00:00:20:99");
    set_mac(&lab, lab.gateway(), &my.gw_iface, "02:00:00:00:10:99");
    assert!(links(&lab, &lg.ns).contains("02:00:00:00:20:99"));
    assert!(
        lab.ip(lab.gateway(), &["neigh", "show", "dev", &lg.gw_l3_iface()])
            .contains("02:00:00:00:20:99")
    );
    assert!(tcp_connect(&lab, &lg, my.v6, 443, None, T));
    assert_eq!(ping(&lab, &lg, my.v4, 2), 2);
}

#[test]
fn drop_removes_namespaces_and_stops_children() {
    let (names, pids, dir) = {
        let mut lab = Lab::new("cleanup");
        let my = mynumber(&mut lab);
        let _lg = lgwan(&mut lab);
        let other = Lab::new("cleanup_other");
        assert_ne!(lab.prefix(), other.prefix(), "two labs share a prefix");
        drop(other);

        // A child whose guard outlives nothing: the lab must stop it itself (`ip netns pids`).
        let log = lab.log_path("leaked");
        let leaked = lab.spawn(&my.ns, &["sleep", "1000"], &log).detach();
        // One that ignores SIGTERM: its guard must fall back to SIGKILL.
        let stubborn = lab.spawn(
            &my.ns,
            &[
                "sh",
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.1; done",
            ],
            &lab.log_path("stubborn"),
        );
        wait_until(T, "the stubborn child is ready", || {
            stubborn.log_text().contains("ready")
        });
        let stubborn_pid = stubborn.pid();
        let started = Instant::now();
        drop(stubborn);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2),
            "SIGKILL came too early ({waited:?})"
        );
        assert!(
            waited < Duration::from_secs(6),
            "SIGKILL came too late ({waited:?})"
        );
        assert!(!Path::new(&format!("/proc/{stubborn_pid}")).exists());

        let names = lab.namespaces().to_vec();
        assert_eq!(names.len(), 3);
        (names, vec![leaked], lab.dir().to_owned())
    };
    for ns in &names {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} still exists"
        );
    }
    let list = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for ns in &names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} still listed"
        );
    }
    for pid in pids {
        // Detached, so nobody reaps it here: it is gone or a zombie, never still running.
        wait_until(T, "the leaked child is dead", || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z'))
            })
        });
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    }
    assert!(!dir.exists(), "lab dir {} still exists", dir.display());
}

#[test]
fn child_guard_signals_and_waits() {
    let mut lab = Lab::new("child_guard");
    let my = mynumber(&mut lab);
    let mut child = lab.spawn(
        &my.ns,
        &[
            "sh",
            "-c",
            "trap 'echo got-hup' HUP; echo ready; while :; do sleep 0.05; done",
        ],
        &lab.log_path("child"),
    );
    wait_until(T, "the child is ready", || {
        child.log_text().contains("ready")
    });
    assert!(child.wait_exit(Duration::from_millis(100)).is_none());
    child.signal(Signal::SIGHUP);
    wait_until(T, "the child handled SIGHUP", || {
        child.log_text().contains("got-hup")
    });
    child.signal(Signal::SIGTERM);
    let status = child.wait_exit(T).expect("exited after SIGTERM");
    assert!(!status.success());
}

//! The detectors with a fake clock: `now` is whatever the test says.

use std::net::IpAddr;

use super::*;
use crate::events::Record;

const S: u64 = 1000;
const MIN: u64 = 60 * S;
const HOUR: u64 = 60 * MIN;

fn zones() -> HashMap<String, ZoneFacts> {
    let z = |c, internet| ZoneFacts {
        criticality: c,
        internet,
    };
    HashMap::from([
        ("mynumber".to_string(), z(Severity::Critical, false)),
        ("lgwan".to_string(), z(Severity::High, false)),
        ("internet".to_string(), z(Severity::Low, true)),
    ])
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A denied TCP packet `src` → `dst:port` with `flags`, between `from` and `to`.
fn deny(from: &str, to: &str, src: &str, dst: &str, port: u16, flags: u8) -> Record {
    Record {
        time_ms: 0,
        kind: "deny".into(),
        reason: Some(DropReason::NoRule.label().into()),
        from_zone: from.into(),
        to_zone: to.into(),
        rule: None,
        interface: "eth0".into(),
        vlan: None,
        protocol: zone_agent_common::PROTO_TCP,
        src_ip: ip(src),
        src_port: Some(40000),
        dst_ip: ip(dst),
        dst_port: Some(port),
        src_mac: "02:00:00:00:00:01".into(),
        tcp_flags: Some(flags),
        flow: None,
        lost_before: 0,
    }
}

fn run(e: &mut Engine, records: impl IntoIterator<Item = (u64, Record)>) -> Vec<Detection> {
    let z = zones();
    records
        .into_iter()
        .flat_map(|(t, r)| e.observe(&r, &z, t))
        .collect()
}

fn kinds(d: &[Detection]) -> Vec<(AlertKind, u32)> {
    d.iter().map(|d| (d.kind, d.update)).collect()
}

#[test]
fn syn_port_scan_alerts_once_at_threshold_with_evidence() {
    let mut e = Engine::new(Settings::default());
    let scan = (1..=9u16).map(|p| {
        (
            p as u64 * 10,
            deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", p, 0x02),
        )
    });
    assert!(
        run(&mut e, scan).is_empty(),
        "9 distinct ports stay below 10"
    );
    let d = run(
        &mut e,
        [(
            100,
            deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", 10, 0x02),
        )],
    );
    assert_eq!(kinds(&d), [(AlertKind::PortScan, 0)]);
    let d = &d[0];
    assert_eq!(d.src_ip, Some(ip("198.51.100.7")));
    assert_eq!(d.dst_ip, Some(ip("10.20.0.10")));
    assert_eq!(
        (d.from_zone.as_str(), d.to_zone.as_str()),
        ("internet", "lgwan")
    );
    assert_eq!(d.count, 10);
    assert_eq!(d.probes, ["syn"]);
    assert_eq!(d.severity, Severity::High, "the graver zone: lgwan");
    assert!(d.sample.contains(&"10.20.0.10:1".to_string()));
    assert_eq!(d.first_seen_ms, 10);
}

#[test]
fn repeats_aggregate_into_updates_never_one_alert_per_packet() {
    let mut e = Engine::new(Settings::default());
    let all = run(
        &mut e,
        (1..=1000u16).map(|p| {
            (
                p as u64,
                deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", p, 0x02),
            )
        }),
    );
    // First report at 10, updates as the count doubles: 20, 40, … 640.
    let counts: Vec<u64> = all
        .iter()
        .filter(|d| d.kind == AlertKind::PortScan)
        .map(|d| d.count)
        .collect();
    assert_eq!(counts, [10, 20, 40, 80, 160, 320, 640]);
    // And after `update_every`, one more attempt reports the total so far.
    let late = run(
        &mut e,
        [(
            10 * MIN,
            deny(
                "internet",
                "lgwan",
                "198.51.100.7",
                "10.20.0.10",
                2000,
                0x02,
            ),
        )],
    );
    let late: Vec<_> = late
        .iter()
        .filter(|d| d.kind == AlertKind::PortScan)
        .collect();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].count, 1001);
    assert_eq!(late[0].update, 7);
}

#[test]
fn each_probe_type_is_recorded() {
    for (flags, label) in [
        (0x02, "syn"),
        (0x10, "ack"),
        (0x01, "fin"),
        (0x00, "null"),
        (0x29, "xmas"),
        (0x11, "maimon"),
    ] {
        let mut e = Engine::new(Settings::default());
        let d = run(
            &mut e,
            (1..=10u16).map(|p| {
                (
                    p as u64,
                    deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", p, flags),
                )
            }),
        );
        assert_eq!(d.len(), 1, "{label}");
        assert_eq!(d[0].probes, [label]);
    }
}

#[test]
fn udp_and_icmp_probes_count() {
    let mut e = Engine::new(Settings::default());
    let udp = (1..=10u16).map(|p| {
        let mut r = deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", p, 0);
        r.protocol = zone_agent_common::PROTO_UDP;
        r.tcp_flags = None;
        (p as u64, r)
    });
    let d = run(&mut e, udp);
    assert_eq!(d[0].probes, ["udp"]);
    // A ping sweep: echo requests (type 8) to ten hosts.
    let sweep = (1..=10u8).map(|h| {
        let mut r = deny(
            "internet",
            "lgwan",
            "198.51.100.9",
            &format!("10.20.0.{h}"),
            8 << 8,
            0,
        );
        r.protocol = zone_agent_common::PROTO_ICMP;
        r.tcp_flags = None;
        (h as u64, r)
    });
    let d = run(&mut e, sweep);
    assert_eq!(kinds(&d), [(AlertKind::HostSweep, 0)]);
    assert_eq!(d[0].probes, ["icmp"]);
}

#[test]
fn slow_scan_over_hours_is_caught() {
    // One new port every 6 minutes: a 5-minute window would never see two.
    let mut e = Engine::new(Settings::default());
    let d = run(
        &mut e,
        (1..=40u16).map(|p| {
            (
                p as u64 * 6 * MIN,
                deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", p, 0x02),
            )
        }),
    );
    let first = d
        .iter()
        .find(|d| d.kind == AlertKind::PortScan)
        .expect("slow scan detected");
    assert!(
        first.last_seen_ms <= 2 * HOUR,
        "within two hours: {}",
        first.last_seen_ms
    );
}

#[test]
fn a_host_denied_now_and_then_never_alerts() {
    // The same forbidden service, every minute for a day: one distinct attempt.
    let mut e = Engine::new(Settings::default());
    let d = run(
        &mut e,
        (0..24 * 60u64).map(|m| {
            (
                m * MIN,
                deny("lgwan", "internet", "10.20.0.10", "203.0.113.5", 8080, 0x02),
            )
        }),
    );
    assert!(d.is_empty(), "{d:?}");
    // A few different services now and then, decaying: still nothing.
    let d = run(
        &mut e,
        (0..9u16).map(|i| {
            (
                i as u64 * 3 * HOUR,
                deny(
                    "lgwan",
                    "internet",
                    "10.20.0.11",
                    "203.0.113.5",
                    9000 + i,
                    0x02,
                ),
            )
        }),
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn host_sweep_on_one_port() {
    let mut e = Engine::new(Settings::default());
    let d = run(
        &mut e,
        (1..=10u8).map(|h| {
            (
                h as u64,
                deny(
                    "internet",
                    "lgwan",
                    "198.51.100.7",
                    &format!("10.20.1.{h}"),
                    445,
                    0x02,
                ),
            )
        }),
    );
    assert_eq!(kinds(&d), [(AlertKind::HostSweep, 0)]);
    assert_eq!(d[0].dst_ip, None);
    assert_eq!(d[0].count, 10);
}

#[test]
fn distributed_scan_many_sources_one_target() {
    let mut e = Engine::new(Settings::default());
    let d = run(
        &mut e,
        (1..=20u8).map(|s| {
            (
                s as u64,
                deny(
                    "internet",
                    "lgwan",
                    &format!("198.51.100.{s}"),
                    "10.20.0.10",
                    22,
                    0x02,
                ),
            )
        }),
    );
    assert_eq!(kinds(&d), [(AlertKind::DistributedScan, 0)]);
    assert_eq!(d[0].src_ip, None);
    assert_eq!(d[0].dst_ip, Some(ip("10.20.0.10")));
    assert_eq!(d[0].sample.len(), 5);
}

#[test]
fn spoofed_sources_never_make_a_scanner() {
    let mut e = Engine::new(Settings::default());
    let spoofed = (1..=50u16).map(|p| {
        let mut r = deny("internet", "lgwan", "10.10.0.5", "10.20.0.10", p, 0x02);
        r.reason = Some(DropReason::SpoofedSource.label().into());
        (p as u64, r)
    });
    let d = run(&mut e, spoofed);
    assert!(
        d.iter().all(|d| d.kind == AlertKind::SpoofedSource),
        "{d:?}"
    );
    assert_eq!(d[0].src_ip, Some(ip("10.10.0.5")));
    assert_eq!(e.tracked(), 0, "spoofed packets are not scan evidence");
}

#[test]
fn mac_binding_violation_and_exfiltration() {
    let mut e = Engine::new(Settings::default());
    let mut wrong_mac = deny("lgwan", "mynumber", "10.20.0.10", "10.10.0.20", 443, 0x02);
    wrong_mac.reason = Some(DropReason::MacMismatch.label().into());
    wrong_mac.rule = Some("lgwan-relay".into());
    let d = run(&mut e, [(0, wrong_mac)]);
    assert_eq!(kinds(&d), [(AlertKind::MacBindingViolation, 0)]);
    assert_eq!(d[0].rule.as_deref(), Some("lgwan-relay"));
    assert_eq!(d[0].severity, Severity::Critical, "mynumber is critical");

    let d = run(
        &mut e,
        [(
            5,
            deny(
                "mynumber",
                "internet",
                "10.10.0.20",
                "203.0.113.9",
                443,
                0x02,
            ),
        )],
    );
    assert_eq!(kinds(&d), [(AlertKind::ExfiltrationAttempt, 0)]);
    assert_eq!(d[0].severity, Severity::Critical);
    assert_eq!(d[0].count, 1);
}

#[test]
fn allowed_and_audit_rule_passes_are_not_evidence() {
    let mut e = Engine::new(Settings::default());
    let mut open = deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", 25, 0x02);
    open.kind = "flow_open".into();
    open.reason = None;
    let mut audit_pass = open.clone();
    audit_pass.kind = "audit".into();
    let d = run(
        &mut e,
        (1..=50u16).flat_map(|p| {
            let mut a = open.clone();
            a.dst_port = Some(p);
            let mut b = audit_pass.clone();
            b.dst_port = Some(p);
            [(p as u64, a), (p as u64, b)]
        }),
    );
    assert!(d.is_empty());
}

#[test]
fn audited_denials_count_like_denials() {
    let mut e = Engine::new(Settings::default());
    let d = run(
        &mut e,
        (1..=10u16).map(|p| {
            let mut r = deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", p, 0x02);
            r.kind = "audit".into();
            (p as u64, r)
        }),
    );
    assert_eq!(kinds(&d), [(AlertKind::PortScan, 0)]);
}

#[test]
fn full_trackers_count_what_they_could_not_track() {
    let mut e = Engine::new(Settings {
        max_keys: 4,
        ..Settings::default()
    });
    run(
        &mut e,
        (1..=10u8).map(|s| {
            (
                s as u64,
                deny(
                    "internet",
                    "lgwan",
                    &format!("198.51.100.{s}"),
                    &format!("10.20.0.{s}"),
                    22,
                    0x02,
                ),
            )
        }),
    );
    assert!(e.untracked > 0);
    assert!(e.tracked() <= 12);
}

#[test]
fn tidy_forgets_what_faded() {
    let mut e = Engine::new(Settings::default());
    run(
        &mut e,
        [(
            0,
            deny("internet", "lgwan", "198.51.100.7", "10.20.0.10", 1, 0x02),
        )],
    );
    assert_eq!(e.tracked(), 3);
    e.tidy(7 * HOUR);
    assert_eq!(e.tracked(), 0);
}

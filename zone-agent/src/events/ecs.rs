//! A [`Record`] in Elastic Common Schema field names, as one JSON object per line of the
//! flow log. Fields are **nested objects** (`{"source":{"ip":…}}`), the form ECS documents
//! and that Filebeat/Elastic Agent, Fluent Bit and Vector pass through unchanged; a dotted
//! name is what a query writes (`source.ip`), not what the document holds.
//!
//! ECS fields: `@timestamp`, `event.{kind,category,type,action,reason,duration}`,
//! `source.{ip,port,mac,packets,bytes}`, `destination.{ip,port,packets,bytes}`,
//! `network.{transport,type,iana_number,community_id,packets,bytes}`,
//! `observer.ingress.{interface.name,vlan.id,zone}`, `observer.egress.zone`, `rule.name`.
//! The agent's own: `zone_agent.{lost_before,tcp_flags,icmp.type,icmp.code}`.

use serde_json::{Map, Value, json};
use zone_agent_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use super::{
    Record,
    community_id::{self, Ports},
};

/// `network.transport`: the IANA keyword, lower case (`tcp`, `udp`, `icmp`, `ipv6-icmp`; the data path reports ports for TCP and UDP only).
pub fn transport(proto: u8) -> Option<&'static str> {
    Some(match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        PROTO_ICMPV6 => "ipv6-icmp",
        _ => return None,
    })
}

/// RFC 3339 UTC with milliseconds (`2026-12-04T18:03:00.123Z`).
pub fn timestamp(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// ICMP type and code from a record's `dst_port` (`type << 8 | code`).
fn icmp(r: &Record) -> Option<(u8, u8)> {
    let p = r.dst_port?;
    matches!(r.protocol, PROTO_ICMP | PROTO_ICMPV6).then(|| ((p >> 8) as u8, p as u8))
}

/// The record's Community ID (opener → responder for flows; as sent for single packets).
pub fn community_id(r: &Record) -> String {
    let ports = match (icmp(r), r.src_port, r.dst_port) {
        (Some((kind, code)), _, _) => Ports::Icmp { kind, code },
        (None, Some(s), Some(d)) => Ports::Transport(s, d),
        _ => Ports::None,
    };
    community_id::of(community_id::SEED, r.protocol, r.src_ip, r.dst_ip, ports)
}

/// Inserts `v` at the dotted `path` of `obj`, creating the objects on the way.
fn put(obj: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        Some((head, rest)) => {
            let inner = obj.entry(head).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = inner {
                put(m, rest, v);
            }
        }
        None => {
            obj.insert(path.to_string(), v);
        }
    }
}

/// `event.type` (ECS allowed values) for a record's kind.
fn event_type(kind: &str) -> &'static str {
    match kind {
        "deny" => "denied",
        "audit" => "allowed",
        "flow_open" => "start",
        "flow_end" => "end",
        _ => "info",
    }
}

/// The ECS document of one record.
pub fn document(r: &Record) -> Value {
    let mut o = Map::new();
    o.insert("@timestamp".into(), json!(timestamp(r.time_ms)));
    let fields: [(&str, Value); 11] = [
        ("event.kind", json!("event")),
        ("event.category", json!(["network"])),
        ("event.type", json!([event_type(&r.kind)])),
        ("event.action", json!(r.kind)),
        ("source.ip", json!(r.src_ip)),
        (
            "source.mac",
            json!(r.src_mac.replace(':', "-").to_uppercase()),
        ),
        ("destination.ip", json!(r.dst_ip)),
        (
            "network.type",
            json!(if r.src_ip.is_ipv4() { "ipv4" } else { "ipv6" }),
        ),
        ("network.iana_number", json!(r.protocol.to_string())),
        ("network.community_id", json!(community_id(r))),
        ("observer.ingress.interface.name", json!(r.interface)),
    ];
    for (k, v) in fields {
        put(&mut o, k, v);
    }
    put(&mut o, "observer.ingress.zone", json!(r.from_zone));
    put(&mut o, "observer.egress.zone", json!(r.to_zone));
    put(&mut o, "zone_agent.lost_before", json!(r.lost_before));
    if let Some(t) = transport(r.protocol) {
        put(&mut o, "network.transport", json!(t));
    }
    if let Some(reason) = &r.reason {
        put(&mut o, "event.reason", json!(reason));
    }
    if let Some(rule) = &r.rule {
        put(&mut o, "rule.name", json!(rule));
    }
    if let Some(v) = r.vlan {
        put(&mut o, "observer.ingress.vlan.id", json!(v.to_string()));
    }
    match icmp(r) {
        Some((kind, code)) => {
            put(&mut o, "zone_agent.icmp.type", json!(kind));
            put(&mut o, "zone_agent.icmp.code", json!(code));
        }
        None => {
            if let Some(p) = r.src_port {
                put(&mut o, "source.port", json!(p));
            }
            if let Some(p) = r.dst_port {
                put(&mut o, "destination.port", json!(p));
            }
        }
    }
    if let Some(f) = r.tcp_flags {
        put(&mut o, "zone_agent.tcp_flags", json!(f));
    }
    if let Some(f) = &r.flow {
        for (k, v) in [
            ("source.packets", f.orig_packets),
            ("source.bytes", f.orig_bytes),
            ("destination.packets", f.reply_packets),
            ("destination.bytes", f.reply_bytes),
            ("network.packets", f.orig_packets + f.reply_packets),
            ("network.bytes", f.orig_bytes + f.reply_bytes),
            ("event.duration", f.duration_ms * 1_000_000),
        ] {
            put(&mut o, k, json!(v));
        }
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::FlowTotals;

    fn record() -> Record {
        Record {
            time_ms: 1_796_407_380_123,
            kind: "flow_end".into(),
            reason: Some("closed".into()),
            from_zone: "lgwan".into(),
            to_zone: "internet".into(),
            rule: Some("relay".into()),
            interface: "zlgw".into(),
            vlan: Some(20),
            src_ip: "10.20.0.10".parse().unwrap(),
            dst_ip: "198.51.100.10".parse().unwrap(),
            dst_port: Some(443),
            src_mac: "02:00:00:00:20:10".into(),
            tcp_flags: None,
            flow: Some(FlowTotals {
                orig_packets: 5,
                orig_bytes: 500,
                reply_packets: 4,
                reply_bytes: 4000,
                duration_ms: 1500,
            }),
            ..crate::events::sample_record()
        }
    }

    #[test]
    fn nested_ecs_fields() {
        let d = document(&record());
        assert_eq!(d["@timestamp"], "2026-12-04T18:03:00.123Z");
        assert_eq!(d["event"]["action"], "flow_end");
        assert_eq!(d["event"]["reason"], "closed");
        assert_eq!(d["event"]["duration"], 1_500_000_000u64);
        assert_eq!(d["source"]["ip"], "10.20.0.10");
        assert_eq!(d["source"]["port"], 40000);
        assert_eq!(d["source"]["mac"], "02-00-00-00-20-10");
        assert_eq!(d["source"]["bytes"], 500);
        assert_eq!(d["destination"]["packets"], 4);
        assert_eq!(d["network"]["transport"], "tcp");
        assert_eq!(d["network"]["type"], "ipv4");
        assert!(
            d["network"]["community_id"]
                .as_str()
                .unwrap()
                .starts_with("1:")
        );
        assert_eq!(d["observer"]["ingress"]["interface"]["name"], "zlgw");
        assert_eq!(d["observer"]["ingress"]["vlan"]["id"], "20");
        assert_eq!(d["observer"]["ingress"]["zone"], "lgwan");
        assert_eq!(d["observer"]["egress"]["zone"], "internet");
        assert_eq!(d["rule"]["name"], "relay");
        assert_eq!(d["zone_agent"]["lost_before"], 0);
    }

    #[test]
    fn icmp_has_type_and_code_not_ports() {
        let mut r = record();
        r.protocol = PROTO_ICMP;
        r.src_port = None;
        r.dst_port = Some(8 << 8);
        r.flow = None;
        let d = document(&r);
        assert!(d["source"].get("port").is_none());
        assert_eq!(d["zone_agent"]["icmp"]["type"], 8);
        assert_eq!(d["network"]["transport"], "icmp");
        assert!(d["event"].get("duration").is_none());
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}

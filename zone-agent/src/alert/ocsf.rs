//! `format = "ocsf"`: an alert as an OCSF 1.1 Detection Finding (class_uid 2004), the form
//! SIEMs and security data lakes ingest without a custom parser. The alert's `id` is
//! `finding_info.uid`; what OCSF has no attribute for goes in `unmapped`.

use serde_json::{Value, json};
use zone_agent_common::Severity;

use super::Alert;

pub const OCSF_VERSION: &str = "1.1.0";
const CLASS_UID: u32 = 2004;
const CATEGORY_UID: u32 = 2;
/// `activity_id`: 1 Create (a first report), 2 Update (an aggregate's later report).
const ACTIVITY_CREATE: u32 = 1;
const ACTIVITY_UPDATE: u32 = 2;
/// `observables[].type_id` of an IP address and a MAC address.
const OBSERVABLE_IP: u32 = 2;
const OBSERVABLE_MAC: u32 = 3;

/// OCSF `severity_id`: 1 Informational … 5 Critical; ours start at Low.
fn severity_id(s: Severity) -> u32 {
    match s {
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// Milliseconds since the epoch of an RFC 3339 time we wrote (0 if unreadable: never for
/// our own alerts).
fn epoch_ms(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn finding(a: &Alert, product_version: &str) -> Value {
    let activity = if a.update == 0 {
        ACTIVITY_CREATE
    } else {
        ACTIVITY_UPDATE
    };
    let severity = a.severity().unwrap_or(Severity::Medium);
    let mut observables = Vec::new();
    if let Some(ip) = a.src_ip {
        observables.push(
            json!({"name": "src_endpoint.ip", "type_id": OBSERVABLE_IP, "value": ip.to_string()}),
        );
    }
    if let Some(mac) = &a.src_mac {
        observables
            .push(json!({"name": "src_endpoint.mac", "type_id": OBSERVABLE_MAC, "value": mac}));
    }
    let mut src = json!({});
    if let Some(ip) = a.src_ip {
        src["ip"] = json!(ip.to_string());
    }
    if let Some(mac) = &a.src_mac {
        src["mac"] = json!(mac);
    }
    let mut dst = json!({});
    if let Some(ip) = a.dst_ip {
        dst["ip"] = json!(ip.to_string());
    }
    json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity,
        "activity_name": if activity == ACTIVITY_CREATE { "Create" } else { "Update" },
        "type_uid": CLASS_UID * 100 + activity,
        "severity_id": severity_id(severity),
        "severity": capitalised(severity.label()),
        "status_id": 1,
        "status": "New",
        "time": epoch_ms(&a.time),
        "message": a.summary,
        "count": a.count,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "zone-agent", "vendor_name": "zone-agent", "version": product_version},
            "uid": a.id,
        },
        "finding_info": {
            "uid": a.id,
            "title": a.summary,
            "desc": a.summary_ja,
            "types": [a.kind],
            "first_seen_time": epoch_ms(&a.first_seen),
            "last_seen_time": epoch_ms(&a.last_seen),
        },
        "src_endpoint": src,
        "dst_endpoint": dst,
        "observables": observables,
        "unmapped": {
            "aggregate": a.aggregate,
            "update": a.update,
            "from_zone": a.from_zone,
            "to_zone": a.to_zone,
            "rule": a.rule,
            "sample": a.sample,
            "probes": a.probes,
            "host": a.host,
            "action": a.action,
        },
    })
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{ACTION_NONE, tests::detection};

    #[test]
    fn finding_has_the_class_and_the_alert_id() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_806_402_000);
        let labels = std::collections::HashMap::new();
        let a = Alert::new(&detection(), "gw1", ACTION_NONE, &labels, t);
        let f = finding(&a, "0.1.0");
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(f["type_uid"], 200401);
        assert_eq!(f["activity_id"], 1);
        assert_eq!(f["severity_id"], 4);
        assert_eq!(f["severity"], "High");
        assert_eq!(f["time"], 1_764_806_402_000u64);
        assert_eq!(f["finding_info"]["uid"], a.id.as_str());
        assert_eq!(f["finding_info"]["first_seen_time"], 1_764_806_400_000u64);
        assert_eq!(f["src_endpoint"]["ip"], "198.51.100.7");
        assert_eq!(f["metadata"]["version"], OCSF_VERSION);

        let update = Alert {
            update: 2,
            ..a.clone()
        };
        let f = finding(&update, "0.1.0");
        assert_eq!(
            (f["activity_id"].clone(), f["type_uid"].clone()),
            (json!(2), json!(200402))
        );
    }
}

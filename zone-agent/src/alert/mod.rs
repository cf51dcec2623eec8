//! Alerts for a SOC (SPEC §6): a detection becomes an [`Alert`] (the JSON a webhook
//! receives, with English and Japanese summaries), optionally an OCSF Detection Finding
//! ([`ocsf`]), signed ([`sign`]) and kept in a durable [`spool`] until every destination
//! took it.
//!
//! An alert's `id` is made once, when the detection is turned into an alert, and is part
//! of the spooled body: every retry, after a restart too, sends the same bytes, so a
//! receiver de-duplicates on `id`. An update of an aggregated alert (a scan that went on)
//! is a new alert with its own `id`, the same `aggregate` and a higher `update`.

pub mod deliver;
pub mod ocsf;
pub mod spool;

use std::{net::IpAddr, time::SystemTime};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zone_agent_common::{AlertKind, Severity};

use crate::detect::Detection;

/// The header carrying the body's signature when a secret is configured.
pub const SIGNATURE_HEADER: &str = "X-Zone-Agent-Signature";

/// What the agent did about the alert's source.
pub const ACTION_NONE: &str = "none";
pub const ACTION_QUARANTINED: &str = "quarantined";

/// One alert as sent (SPEC §6 fields, then ours).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub kind: String,
    pub severity: String,
    pub summary: String,
    pub summary_ja: String,
    pub src_ip: Option<IpAddr>,
    pub src_mac: Option<String>,
    pub from_zone: String,
    pub to_zone: String,
    pub rule: Option<String>,
    pub count: u64,
    pub sample: Vec<String>,
    pub host: String,
    pub action: String,
    /// The target of a port scan or distributed scan.
    pub dst_ip: Option<IpAddr>,
    /// Probe types seen (`syn`, `xmas`, `udp`, …).
    pub probes: Vec<String>,
    pub first_seen: String,
    pub last_seen: String,
    /// Identity of the aggregate this alert reports on (the same for its updates).
    pub aggregate: String,
    /// 0 for the first report of an aggregate, then 1, 2, …
    pub update: u32,
}

/// Zone names as people read them: the Japanese label of each zone, by name.
pub trait Labels {
    fn label<'a>(&'a self, zone: &'a str) -> &'a str;
}

impl Labels for std::collections::HashMap<String, String> {
    fn label<'a>(&'a self, zone: &'a str) -> &'a str {
        self.get(zone).map_or(zone, String::as_str)
    }
}

impl Alert {
    /// The alert for `d`, made at `now` on gateway `host`.
    pub fn new(
        d: &Detection,
        host: &str,
        action: &str,
        labels: &dyn Labels,
        now: SystemTime,
    ) -> Alert {
        let at = |ms: u64| rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms));
        let (summary, summary_ja) = summaries(d, labels);
        Alert {
            id: uuid::Uuid::new_v4().to_string(),
            time: rfc3339(now),
            kind: d.kind.label().into(),
            severity: d.severity.label().into(),
            summary,
            summary_ja,
            src_ip: d.src_ip,
            src_mac: d.src_mac.clone(),
            from_zone: d.from_zone.clone(),
            to_zone: d.to_zone.clone(),
            rule: d.rule.clone(),
            count: d.count,
            sample: d.sample.clone(),
            host: host.into(),
            action: action.into(),
            dst_ip: d.dst_ip,
            probes: d.probes.iter().map(|p| p.to_string()).collect(),
            first_seen: at(d.first_seen_ms),
            last_seen: at(d.last_seen_ms),
            aggregate: aggregate_id(d),
            update: d.update,
        }
    }

    pub fn severity(&self) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|s| s.label() == self.severity)
    }
}

/// A stable name for an aggregate: kind, who, target and zones.
fn aggregate_id(d: &Detection) -> String {
    let who = d.src_ip.map_or("*".into(), |a| a.to_string());
    let target = d.dst_ip.map_or("*".into(), |a| a.to_string());
    format!(
        "{}:{who}:{target}:{}:{}",
        d.kind.label(),
        d.from_zone,
        d.to_zone
    )
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// One English and one Japanese sentence (operators read the Japanese one first).
fn summaries(d: &Detection, labels: &dyn Labels) -> (String, String) {
    let src = d.src_ip.map_or("(many sources)".into(), |a| a.to_string());
    let src_ja = d.src_ip.map_or("複数の送信元".into(), |a| a.to_string());
    let dst = d.dst_ip.map_or(String::new(), |a| a.to_string());
    let (from, to) = (&d.from_zone, &d.to_zone);
    let (from_ja, to_ja) = (labels.label(from), labels.label(to));
    let n = d.count;
    let rule = d.rule.as_deref().unwrap_or("-");
    match d.kind {
        AlertKind::PortScan => (
            format!("{src_ja} probed {n} ports of {dst} ({from} → {to}); all denied"),
            format!(
                "{src} が {dst} の {n} 個のポートを走査しました（{from_ja} → {to_ja}、すべて遮断）"
            ),
        ),
        AlertKind::HostSweep => (
            format!("{src_ja} probed {n} hosts on one port ({from} → {to}); all denied"),
            format!(
                "{src} が同一ポートで {n} 台のホストを探索しました（{from_ja} → {to_ja}、すべて遮断）"
            ),
        ),
        AlertKind::DistributedScan => (
            format!("{n} sources probed {dst} ({from} → {to}); all denied"),
            format!("{n} 個の送信元が {dst} を走査しました（{from_ja} → {to_ja}、すべて遮断）"),
        ),
        AlertKind::SpoofedSource => (
            format!(
                "{src} arrived from {from} with an address of another zone ({n} packets); dropped"
            ),
            format!(
                "{from_ja} から他ゾーンのアドレス {src} を騙る通信を検知しました（{n} パケット、遮断）"
            ),
        ),
        AlertKind::MacBindingViolation => (
            format!(
                "{src} used rule {rule} ({from} → {to}) from a MAC outside its binding ({}); denied",
                d.src_mac.as_deref().unwrap_or("?")
            ),
            format!(
                "特定通信 {rule}（{from_ja} → {to_ja}）に許可外の MAC アドレス {} から {src} の通信がありました（遮断）",
                d.src_mac.as_deref().unwrap_or("?")
            ),
        ),
        AlertKind::ExfiltrationAttempt => (
            format!("{src} in critical zone {from} tried to reach {to} ({n} attempts); denied"),
            format!("{from_ja} の {src_ja} が {to_ja} への通信を試みました（{n} 回、遮断）"),
        ),
        AlertKind::VolumeAnomaly => (
            format!("rule {rule} ({from} → {to}) carried far more than its baseline for {src_ja}"),
            format!(
                "特定通信 {rule}（{from_ja} → {to_ja}）で {src} の通信量が平常値を大きく超えました"
            ),
        ),
        AlertKind::NewTalker => (
            format!("{src_ja} used rule {rule} ({from} → {to}) for the first time"),
            format!("{src_ja} が特定通信 {rule}（{from_ja} → {to_ja}）を初めて使用しました"),
        ),
        AlertKind::Tamper => (
            format!("the data path on {from} was changed behind the agent's back"),
            format!("{from_ja} のデータパスがエージェント以外によって変更されました"),
        ),
    }
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` with `secret`, the value of [`SIGNATURE_HEADER`].
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn detection() -> Detection {
        Detection {
            kind: AlertKind::PortScan,
            severity: Severity::High,
            src_ip: Some("198.51.100.7".parse().unwrap()),
            src_mac: Some("02:00:00:00:00:07".into()),
            dst_ip: Some("10.20.0.10".parse().unwrap()),
            from_zone: "internet".into(),
            to_zone: "lgwan".into(),
            rule: None,
            count: 12,
            sample: vec!["10.20.0.10:22".into()],
            probes: vec!["syn", "xmas"],
            first_seen_ms: 1_764_806_400_000,
            last_seen_ms: 1_764_806_401_500,
            update: 0,
        }
    }

    fn labels() -> HashMap<String, String> {
        HashMap::from([
            ("internet".into(), "インターネット接続系".into()),
            ("lgwan".into(), "LGWAN接続系".into()),
        ])
    }

    #[test]
    fn alert_carries_the_spec_fields() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_806_402_000);
        let a = Alert::new(&detection(), "gw1", ACTION_NONE, &labels(), t);
        let v: serde_json::Value = serde_json::to_value(&a).unwrap();
        for f in [
            "id",
            "time",
            "kind",
            "severity",
            "summary",
            "summary_ja",
            "src_ip",
            "src_mac",
            "from_zone",
            "to_zone",
            "rule",
            "count",
            "sample",
            "host",
            "action",
        ] {
            assert!(v.get(f).is_some(), "field {f} missing: {v}");
        }
        assert_eq!(v["time"], "2025-12-04T00:00:02.000Z");
        assert_eq!(v["first_seen"], "2025-12-04T00:00:00.000Z");
        assert_eq!(v["kind"], "port_scan");
        assert_eq!(v["severity"], "high");
        assert_eq!(v["src_ip"], "198.51.100.7");
        assert_eq!(v["count"], 12);
        assert!(a.summary_ja.contains("LGWAN接続系"), "{}", a.summary_ja);
        assert!(
            a.summary.contains("12 ports of 10.20.0.10"),
            "{}",
            a.summary
        );
        assert_eq!(
            a.aggregate,
            "port_scan:198.51.100.7:10.20.0.10:internet:lgwan"
        );
        assert_eq!(a.severity(), Some(Severity::High));
    }

    #[test]
    fn ids_differ_per_alert() {
        let t = SystemTime::now();
        let a = Alert::new(&detection(), "gw1", ACTION_NONE, &labels(), t);
        let b = Alert::new(&detection(), "gw1", ACTION_NONE, &labels(), t);
        assert_ne!(a.id, b.id);
        assert_eq!(a.aggregate, b.aggregate);
    }

    #[test]
    fn every_kind_has_both_summaries() {
        for kind in AlertKind::ALL {
            let d = Detection {
                kind,
                ..detection()
            };
            let (en, ja) = summaries(&d, &labels());
            assert!(!en.is_empty() && !ja.is_empty(), "{kind:?}");
            assert!(!ja.is_ascii(), "{kind:?}: {ja}");
        }
    }

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! Guideline lint: what the 三層の対策 of the 総務省 guideline forbids or frowns on, checked on
//! every rule that is otherwise valid. It runs inside validation, so `policy check`, the first
//! load and every reload report the same findings, and an error rejects the policy like any
//! other error.
//!
//! | finding | severity |
//! |---|---|
//! | a rule between a critical zone and the internet zone (either direction) | error |
//! | `protocol = "any"` on a rule from or into a critical zone | error |
//! | a rule into a critical zone without `sources` | warning |
//! | a tcp/udp rule into a critical zone without `ports` | warning |
//! | a rule into a critical zone without `source_macs` (no path limitation) | warning |
//! | `segment = "mynumber"` on a zone that is not `criticality = "critical"` | warning |
//! | `acknowledge` on a rule the lint has nothing to say about | warning |
//!
//! A rule's `acknowledge = "reason"` accepts every finding on that rule: the decision is
//! recorded in the file, next to the rule, where a reviewer and `policy diff` see it.
//!
//! "Critical" is `criticality = "critical"`. "The internet zone" is a zone with
//! `segment = "internet"`, or, without `segment`, a zone whose networks hold a default route
//! (`0.0.0.0/0` or `::/0`): a zone that holds every address nobody else claims faces the
//! internet. An explicit `segment` wins, for a closed network routed by default (say, an
//! LGWAN-only segment) write `segment = "lgwan"`.
//!
//! Locations: a finding about a field that is there points at its value (`to`, `from`,
//! `protocol`); a finding about a field that is missing points at the rule's `[[rules]]`
//! header.

use super::diagnostic::Sink;
use super::parse::{RuleDoc, ZoneDoc};
use super::types::{Criticality, Loc, Protocol, Rule, Segment, is_internet_zone};

/// The help text's way to accept a finding.
const ACK_HELP: &str = "or, if this exception has been decided and recorded, add to the rule \
                        acknowledge = \"<why, who approved it, where it is recorded>\"";

/// What the lint needs to know about a zone.
struct Facts<'a> {
    name: &'a str,
    critical: bool,
    internet: bool,
}

impl<'a> Facts<'a> {
    fn of(z: &'a ZoneDoc) -> Self {
        Facts {
            name: z.name.as_ref().map_or("", |n| n.value.as_str()),
            critical: z.criticality == Criticality::Critical,
            internet: is_internet_zone(z.segment.as_ref().map(|s| s.value), z.networks.values()),
        }
    }
}

struct Finding {
    error: bool,
    loc: Loc,
    message: String,
    help: String,
}

/// Lints one zone (called once per zone, after the zone checks).
pub(crate) fn zone(z: &ZoneDoc, sink: &mut Sink<'_>) {
    if let Some(seg) = &z.segment
        && seg.value == Segment::Mynumber
        && z.criticality != Criticality::Critical
    {
        sink.warning(
            seg.loc,
            format!(
                "{} is the マイナンバー利用事務系 (segment = \"mynumber\") but is not criticality = \"critical\"",
                z.what
            ),
            "set criticality = \"critical\": the guideline lint and alert severities protect \
             critical zones, so this segment's rules are not checked as マイナンバー系 rules now",
        );
    }
}

/// Lints one rule that validated without errors; `from` and `to` are its zones.
pub(crate) fn rule(doc: &RuleDoc, rule: &Rule, from: &ZoneDoc, to: &ZoneDoc, sink: &mut Sink<'_>) {
    let (from, to) = (Facts::of(from), Facts::of(to));
    let what = &doc.what;
    let from_loc = doc.from.as_ref().map_or(doc.loc, |f| f.loc);
    let to_loc = doc.to.as_ref().map_or(doc.loc, |t| t.loc);
    let protocol_loc = doc.protocol.as_ref().map_or(doc.loc, |p| p.loc);
    let mut found = Vec::new();
    let mut report = |error, loc, message: String, help: String| {
        found.push(Finding {
            error,
            loc,
            message,
            help,
        });
    };

    // The guideline's first rule: マイナンバー利用事務系 never talks to the internet. A rule in
    // either direction opens flows whose replies carry data both ways.
    if from.critical && to.internet {
        report(
            true,
            to_loc,
            format!(
                "{what} lets critical zone \"{}\" connect to the internet zone \"{}\": 三層の対策 \
                 cuts the マイナンバー利用事務系 off from the internet",
                from.name, to.name
            ),
            format!(
                "remove the rule and bring what the critical zone needs (updates, data) through a \
                 relay in another segment (e.g. a WSUS or antivirus server in LGWAN接続系); {ACK_HELP}"
            ),
        );
    } else if from.internet && to.critical {
        report(
            true,
            from_loc,
            format!(
                "{what} lets the internet zone \"{}\" connect into critical zone \"{}\": 三層の対策 \
                 cuts the マイナンバー利用事務系 off from the internet",
                from.name, to.name
            ),
            format!(
                "remove the rule and pass data through 無害化 and a relay in LGWAN接続系 instead; {ACK_HELP}"
            ),
        );
    }

    if rule.protocol == Protocol::Any && (from.critical || to.critical) {
        let (dir, zone) = if to.critical {
            ("into", to.name)
        } else {
            ("out of", from.name)
        };
        report(
            true,
            protocol_loc,
            format!(
                "{what} allows every protocol (protocol = \"any\") {dir} critical zone \"{zone}\": \
                 特定通信 must be limited to the application protocols they need"
            ),
            format!(
                "write one rule per protocol with its ports, e.g. protocol = \"tcp\" with \
                 ports = [\"443\"]; {ACK_HELP}"
            ),
        );
    }

    if to.critical {
        if rule.sources.is_empty() {
            report(
                false,
                doc.loc,
                format!(
                    "{what} admits the whole zone \"{}\" into critical zone \"{}\": it has no `sources`",
                    from.name, to.name
                ),
                format!(
                    "list only the hosts this 特定通信 is for, e.g. sources = [\"10.20.5.10/32\"] \
                     for a relay server; {ACK_HELP}"
                ),
            );
        }
        if rule.protocol.has_ports() && rule.ports.is_empty() {
            report(
                false,
                protocol_loc,
                format!(
                    "{what} admits every {} port into critical zone \"{}\": it has no `ports`",
                    rule.protocol.label(),
                    to.name
                ),
                format!("list the ports the application uses, e.g. ports = [\"443\"]; {ACK_HELP}"),
            );
        }
        if rule.source_macs.is_empty() {
            report(
                false,
                doc.loc,
                format!(
                    "{what} into critical zone \"{}\" has no path limitation by MAC address \
                     (`source_macs`): any host that takes a listed address gets through",
                    to.name
                ),
                format!(
                    "add source_macs = [\"52:54:00:12:34:56\"] with the MAC the gateway sees: the \
                     sending host's on the gateway's link, the last router's for a routed source; {ACK_HELP}"
                ),
            );
        }
    }

    match &doc.acknowledge {
        // Accepted: the reason is in the file, for reviewers and `policy diff`.
        Some(_) if !found.is_empty() => {}
        Some(ack) => sink.warning(
            ack.loc,
            format!("{what} has `acknowledge` but the guideline lint finds nothing to accept"),
            "remove `acknowledge`: left in place it would silently accept a finding that a later \
             edit of this rule introduces",
        ),
        None => {
            for f in found {
                if f.error {
                    sink.error(f.loc, f.message, f.help);
                } else {
                    sink.warning(f.loc, f.message, f.help);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::policy::diagnostic::Severity;
    use crate::policy::validate::parse_str;

    /// mynumber is critical; internet is the internet zone by its default route.
    const ZONES: &str = "version = 1\n\
        [[zones]]\nname = \"mynumber\"\ninterfaces = [\"eth1\"]\nnetworks = [\"10.10.0.0/16\"]\ncriticality = \"critical\"\n\
        [[zones]]\nname = \"lgwan\"\ninterfaces = [\"eth2\"]\nnetworks = [\"10.20.0.0/16\"]\n\
        [[zones]]\nname = \"internet\"\ninterfaces = [\"eth3\"]\nnetworks = [\"0.0.0.0/0\"]\n";
    /// The rule under test starts on this line of `ZONES` + rule.
    const RULE_LINE: u32 = 15;
    /// Where the values of the rule's first lines are (see [`rule`]).
    const HEADER: (u32, u32) = (RULE_LINE, 1);
    const FROM: (u32, u32) = (RULE_LINE + 2, 8);
    const TO: (u32, u32) = (RULE_LINE + 3, 6);
    const PROTOCOL: (u32, u32) = (RULE_LINE + 4, 12);

    /// What a well-limited 特定通信 into a critical zone has.
    const LIMITED: &[&str] = &[
        "sources = [\"10.20.5.10/32\"]",
        "ports = [\"443\"]",
        "source_macs = [\"52:54:00:12:34:56\"]",
    ];

    fn rule(from: &str, to: &str, protocol: &str, extra: &[&str]) -> String {
        format!(
            "[[rules]]\nname = \"r\"\nfrom = \"{from}\"\nto = \"{to}\"\nprotocol = \"{protocol}\"\n{}\n",
            extra.join("\n")
        )
    }

    /// Every diagnostic of `zones` + `rules` but the unused-zone warnings, as
    /// (line, column, severity, message), and whether the policy was accepted.
    fn lint_with(zones: &str, rules: &str) -> (bool, Vec<(u32, u32, Severity, String)>) {
        let text = format!("{zones}{rules}");
        let (accepted, diags) = match parse_str(Path::new("t.toml"), &text) {
            Ok((_, warnings)) => (true, warnings),
            Err(diags) => (false, diags.0),
        };
        for d in &diags {
            assert!(
                d.help.as_deref().is_some_and(|h| !h.is_empty()),
                "no help: {d}"
            );
        }
        let found = diags
            .into_iter()
            .filter(|d| !d.message.contains("is not used by any rule"))
            .map(|d| (d.line, d.col, d.severity, d.message))
            .collect();
        (accepted, found)
    }

    fn lint(rules: &str) -> (bool, Vec<(u32, u32, Severity, String)>) {
        lint_with(ZONES, rules)
    }

    /// Exactly one finding, at `at`, of `severity`, saying `text`.
    #[track_caller]
    fn assert_one(
        got: &(bool, Vec<(u32, u32, Severity, String)>),
        at: (u32, u32),
        severity: Severity,
        text: &str,
    ) {
        let (accepted, found) = got;
        assert_eq!(found.len(), 1, "{found:#?}");
        let (line, col, sev, message) = &found[0];
        assert_eq!(((*line, *col), *sev), (at, severity), "{message}");
        assert!(message.contains(text), "{message}");
        assert_eq!(*accepted, severity == Severity::Warning, "{found:#?}");
    }

    fn clean(got: &(bool, Vec<(u32, u32, Severity, String)>)) {
        assert_eq!(got, &(true, vec![]));
    }

    const ACK: &str =
        "acknowledge = \"vendor remote maintenance, approved by the CISO, ticket 123\"";

    #[test]
    fn critical_to_internet_is_an_error_at_to() {
        let got = lint(&rule("mynumber", "internet", "tcp", &["ports = [\"443\"]"]));
        assert_one(
            &got,
            TO,
            Severity::Error,
            "rule \"r\" lets critical zone \"mynumber\" connect to the internet zone \"internet\"",
        );
        clean(&lint(&rule(
            "mynumber",
            "internet",
            "tcp",
            &["ports = [\"443\"]", ACK],
        )));
        // Not from a critical zone: nothing to say.
        clean(&lint(&rule(
            "lgwan",
            "internet",
            "tcp",
            &["ports = [\"443\"]"],
        )));
    }

    #[test]
    fn internet_to_critical_is_an_error_at_from() {
        let from_internet = [
            "sources = [\"192.0.2.10/32\"]",
            "ports = [\"443\"]",
            "source_macs = [\"52:54:00:12:34:56\"]",
        ];
        let got = lint(&rule("internet", "mynumber", "tcp", &from_internet));
        assert_one(
            &got,
            FROM,
            Severity::Error,
            "lets the internet zone \"internet\" connect into critical zone \"mynumber\"",
        );
        let acked = [&from_internet[..], &[ACK]].concat();
        clean(&lint(&rule("internet", "mynumber", "tcp", &acked)));
    }

    #[test]
    fn the_internet_zone_is_its_segment_or_else_its_default_route() {
        let r = rule("mynumber", "internet", "tcp", &["ports = [\"443\"]"]);
        // One more line in the zones.
        let to = (TO.0 + 1, TO.1);
        // An explicit segment wins over the default route: a closed network routed by default.
        let closed = ZONES.replace(
            "networks = [\"0.0.0.0/0\"]\n",
            "networks = [\"0.0.0.0/0\"]\nsegment = \"lgwan\"\n",
        );
        clean(&lint_with(&closed, &r));
        // A segment says so without a default route; ::/0 is a default route too.
        let named = ZONES.replace(
            "networks = [\"0.0.0.0/0\"]\n",
            "networks = [\"192.0.2.0/24\"]\nsegment = \"internet\"\n",
        );
        assert_one(&lint_with(&named, &r), to, Severity::Error, "internet zone");
        let v6 = ZONES.replace("[\"0.0.0.0/0\"]", "[\"192.0.2.0/24\", \"::/0\"]");
        assert_one(&lint_with(&v6, &r), TO, Severity::Error, "internet zone");
        let neither = ZONES.replace("[\"0.0.0.0/0\"]", "[\"192.0.2.0/24\"]");
        clean(&lint_with(&neither, &r));
    }

    #[test]
    fn protocol_any_across_a_critical_boundary_is_an_error_at_protocol() {
        let into = lint(&rule(
            "lgwan",
            "mynumber",
            "any",
            &[
                "sources = [\"10.20.5.10/32\"]",
                "source_macs = [\"52:54:00:12:34:56\"]",
            ],
        ));
        assert_one(
            &into,
            PROTOCOL,
            Severity::Error,
            "allows every protocol (protocol = \"any\") into critical zone \"mynumber\"",
        );
        let out = lint(&rule("mynumber", "lgwan", "any", &[]));
        assert_one(
            &out,
            PROTOCOL,
            Severity::Error,
            "out of critical zone \"mynumber\"",
        );
        clean(&lint(&rule("mynumber", "lgwan", "any", &[ACK])));
        clean(&lint(&rule("lgwan", "internet", "any", &[])));
    }

    #[test]
    fn into_critical_without_sources_is_a_warning_at_the_rule() {
        let got = lint(&rule(
            "lgwan",
            "mynumber",
            "tcp",
            &["ports = [\"443\"]", "source_macs = [\"52:54:00:12:34:56\"]"],
        ));
        assert_one(
            &got,
            HEADER,
            Severity::Warning,
            "rule \"r\" admits the whole zone \"lgwan\" into critical zone \"mynumber\": it has no `sources`",
        );
        clean(&lint(&rule("lgwan", "mynumber", "tcp", LIMITED)));
        // Out of a critical zone: the receiving side is not the one to protect.
        clean(&lint(&rule("mynumber", "lgwan", "tcp", &[])));
    }

    #[test]
    fn tcp_or_udp_into_critical_without_ports_is_a_warning_at_protocol() {
        let limited = |proto| {
            lint(&rule(
                "lgwan",
                "mynumber",
                proto,
                &[
                    "sources = [\"10.20.5.10/32\"]",
                    "source_macs = [\"52:54:00:12:34:56\"]",
                ],
            ))
        };
        assert_one(
            &limited("tcp"),
            PROTOCOL,
            Severity::Warning,
            "admits every tcp port into critical zone \"mynumber\": it has no `ports`",
        );
        assert_one(
            &limited("udp"),
            PROTOCOL,
            Severity::Warning,
            "every udp port",
        );
        // ICMP has no ports to list.
        clean(&limited("icmp"));
    }

    #[test]
    fn into_critical_without_source_macs_is_a_warning_at_the_rule() {
        let got = lint(&rule(
            "lgwan",
            "mynumber",
            "tcp",
            &["sources = [\"10.20.5.10/32\"]", "ports = [\"443\"]"],
        ));
        assert_one(
            &got,
            HEADER,
            Severity::Warning,
            "into critical zone \"mynumber\" has no path limitation by MAC address",
        );
    }

    #[test]
    fn a_bare_rule_into_critical_gets_every_warning_and_acknowledge_accepts_them() {
        let (accepted, found) = lint(&rule("lgwan", "mynumber", "tcp", &[]));
        assert!(accepted);
        let at: Vec<(u32, u32)> = found.iter().map(|f| (f.0, f.1)).collect();
        // Sorted by place: the header's two, then the protocol's.
        assert_eq!(at, [HEADER, HEADER, PROTOCOL], "{found:#?}");
        clean(&lint(&rule("lgwan", "mynumber", "tcp", &[ACK])));
    }

    #[test]
    fn acknowledge_must_say_why_and_must_accept_something() {
        let empty = lint(&rule("lgwan", "mynumber", "tcp", &["acknowledge = \"  \""]));
        // Rejected, and the rest of the rule is not linted as if accepted or not.
        assert_one(
            &empty,
            (RULE_LINE + 5, 15),
            Severity::Error,
            "`acknowledge` in rule \"r\" is empty",
        );
        let needless = [LIMITED, &[ACK]].concat();
        assert_one(
            &lint(&rule("lgwan", "mynumber", "tcp", &needless)),
            (RULE_LINE + 8, 15),
            Severity::Warning,
            "has `acknowledge` but the guideline lint finds nothing to accept",
        );
    }

    #[test]
    fn a_mynumber_segment_should_be_critical() {
        let zones = ZONES.replace(
            "criticality = \"critical\"\n",
            "criticality = \"high\"\nsegment = \"mynumber\"\n",
        );
        // The rule would be linted if the zone were critical; it is not.
        let got = lint_with(&zones, &rule("lgwan", "mynumber", "tcp", &[]));
        assert_one(
            &got,
            (7, 11),
            Severity::Warning,
            "zone \"mynumber\" is the マイナンバー利用事務系 (segment = \"mynumber\") but is not criticality = \"critical\"",
        );
        let critical = ZONES.replace(
            "criticality = \"critical\"\n",
            "criticality = \"critical\"\nsegment = \"mynumber\"\n",
        );
        clean(&lint_with(
            &critical,
            &rule("lgwan", "mynumber", "tcp", LIMITED),
        ));
    }

    #[test]
    fn a_rule_with_errors_is_not_linted() {
        // The bad source is left out; "no sources" would be a false finding.
        let got = lint(&rule(
            "lgwan",
            "mynumber",
            "tcp",
            &[
                "sources = [\"10.20.5.x/32\"]",
                "ports = [\"443\"]",
                "source_macs = [\"52:54:00:12:34:56\"]",
            ],
        ));
        assert_one(&got, (RULE_LINE + 5, 12), Severity::Error, "invalid CIDR");
    }

    #[test]
    fn an_unknown_key_error_names_the_new_keys() {
        let got = lint(&rule("lgwan", "mynumber", "tcp", &["acknowledged = \"x\""]));
        let (_, found) = got;
        assert!(
            found
                .iter()
                .any(|f| f.3.contains("unknown key `acknowledged`")),
            "{found:#?}"
        );
        let text = format!(
            "{ZONES}{}",
            rule("lgwan", "mynumber", "tcp", &["acknowledged = \"x\""])
        );
        let diags = parse_str(Path::new("t.toml"), &text).expect_err("rejected");
        let help = diags
            .iter()
            .find(|d| d.message.contains("unknown key"))
            .and_then(|d| d.help.clone())
            .unwrap_or_default();
        assert!(help.ends_with("mode, acknowledge"), "{help}");
    }
}

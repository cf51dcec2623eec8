//! `policy check` through the library API, over the files in `tests/fixtures/`: the example
//! policy reads into the expected `Policy`, and each bad fixture is rejected with its errors at
//! the exact line and column. No root, no network namespaces.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use zone_agent::policy::diagnostic::Severity;
use zone_agent::policy::validate::{
    self, Environment, HostEnvironment, MAX_POLICY_RULES, MAX_POLICY_ZONES, OfflineEnvironment,
};
use zone_agent::policy::{
    Action, Criticality, Defaults, Diagnostic, Diagnostics, Loc, Mode, Policy, PortRange, Protocol,
    Rule, Zone, ZoneIface,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_ok(name: &str) -> (Policy, Vec<Diagnostic>) {
    match validate::load(&fixture(name), &OfflineEnvironment) {
        Ok(ok) => ok,
        Err(diags) => panic!("{name} was rejected:\n{diags}"),
    }
}

fn load_err(name: &str, env: &dyn Environment) -> Diagnostics {
    match validate::load(&fixture(name), env) {
        Ok((policy, _)) => panic!("{name} was accepted: {policy:#?}"),
        Err(diags) => diags,
    }
}

/// The errors of fixture `name` are exactly `expected` (line, column, message fragment), in
/// file order. Warnings are not compared.
#[track_caller]
fn assert_errors(name: &str, expected: &[(u32, u32, &str)]) {
    assert_errors_with(name, &OfflineEnvironment, expected);
}

#[track_caller]
fn assert_errors_with(name: &str, env: &dyn Environment, expected: &[(u32, u32, &str)]) {
    let diags = load_err(name, env);
    let errors: Vec<&Diagnostic> = diags.errors().collect();
    let matches = errors.len() == expected.len()
        && errors.iter().zip(expected).all(|(d, (line, col, text))| {
            d.line == *line && d.col == *col && d.message.contains(text)
        });
    assert!(
        matches,
        "{name}: expected errors {expected:#?}\ngot:\n{diags}"
    );
    for d in &errors {
        assert_eq!(d.file, fixture(name));
        assert!(
            d.help.as_deref().is_some_and(|h| !h.is_empty()),
            "error without help: {d}"
        );
    }
}

fn loc(line: u32, col: u32) -> Loc {
    Loc { line, col }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn iface(name: &str, vlan: Option<u16>, line: u32, col: u32) -> ZoneIface {
    ZoneIface {
        name: name.into(),
        vlan,
        loc: loc(line, col),
    }
}

fn ports(ranges: &[(u16, u16)]) -> Vec<PortRange> {
    ranges
        .iter()
        .map(|&(lo, hi)| PortRange { lo, hi })
        .collect()
}

/// A rule of the example with the fields most rules leave at their defaults.
fn rule(name: &str, from: usize, to: usize, protocol: Protocol, line: u32) -> Rule {
    Rule {
        name: name.into(),
        description: None,
        from,
        to,
        protocol,
        ports: vec![],
        sources: vec![],
        source_macs: vec![],
        destinations: vec![],
        mode: Mode::Enforce,
        acknowledge: None,
        loc: loc(line, 1),
    }
}

#[test]
fn example_reads_into_the_expected_policy() {
    let (policy, warnings) = load_ok("example.toml");
    assert_eq!(warnings, vec![], "the example has nothing to warn about");
    const MYNUMBER: usize = 0;
    const LGWAN: usize = 1;
    const INTERNET: usize = 2;
    let expected = Policy {
        path: fixture("example.toml"),
        version: 1,
        mode: Mode::Enforce,
        defaults: Defaults {
            intra_zone: Action::Allow,
            unknown: Action::Deny,
            fragments: Action::Deny,
        },
        zones: vec![
            Zone {
                name: "mynumber".into(),
                label: Some("マイナンバー利用事務系".into()),
                interfaces: vec![
                    iface("eth1", None, 14, 15),
                    iface("eth3", Some(200), 14, 23),
                ],
                networks: vec![net("10.10.0.0/16"), net("fd10::/48")],
                criticality: Criticality::Critical,
                segment: None,
                loc: loc(11, 1),
            },
            Zone {
                name: "lgwan".into(),
                label: Some("LGWAN接続系".into()),
                // The zone's `vlan = 100` applies to both plain interface names.
                interfaces: vec![
                    iface("eth2", Some(100), 21, 15),
                    iface("eth3", Some(100), 21, 23),
                ],
                networks: vec![net("10.20.0.0/16"), net("fd20::/48")],
                criticality: Criticality::High,
                segment: None,
                loc: loc(18, 1),
            },
            Zone {
                name: "internet".into(),
                label: Some("インターネット接続系".into()),
                interfaces: vec![iface("eth4", None, 29, 15)],
                networks: vec![net("0.0.0.0/0"), net("::/0")],
                criticality: Criticality::Medium,
                segment: None,
                loc: loc(26, 1),
            },
        ],
        rules: vec![
            Rule {
                description: Some("LGWAN relay -> 中間サーバー import".into()),
                ports: ports(&[(443, 443), (8000, 8010)]),
                sources: vec![net("10.20.5.10/32")],
                source_macs: vec![[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]],
                destinations: vec![net("10.10.9.20/32")],
                ..rule("eltax-relay", LGWAN, MYNUMBER, Protocol::Tcp, 32)
            },
            Rule {
                description: Some("住基端末 -> LGWAN 側プリントサーバー".into()),
                // An integer port and a string port.
                ports: ports(&[(631, 631), (9100, 9100)]),
                destinations: vec![net("10.20.7.0/24"), net("fd20:0:0:7::/64")],
                ..rule("jyuki-print", MYNUMBER, LGWAN, Protocol::Tcp, 43)
            },
            Rule {
                sources: vec![net("10.20.0.10/32")],
                source_macs: vec![[0x52, 0x54, 0x00, 0x00, 0x00, 0x10]],
                ..rule("monitor-ping", LGWAN, MYNUMBER, Protocol::Icmp, 52)
            },
            Rule {
                sources: vec![net("fd20::10/128")],
                source_macs: vec![[0x52, 0x54, 0x00, 0x00, 0x00, 0x10]],
                ..rule("monitor-ping6", LGWAN, MYNUMBER, Protocol::Icmpv6, 60)
            },
            Rule {
                description: Some("無害化 proxy -> インターネット".into()),
                ports: ports(&[(80, 80), (443, 443)]),
                sources: vec![net("10.20.1.5/32")],
                // Written with '-' and upper case.
                source_macs: vec![[0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]],
                ..rule("web-proxy", LGWAN, INTERNET, Protocol::Tcp, 68)
            },
            Rule {
                description: Some("NTP, trialled in audit mode before enforcing".into()),
                ports: ports(&[(123, 123)]),
                sources: vec![net("10.20.1.6/32")],
                mode: Mode::Audit,
                ..rule("ntp-trial", LGWAN, INTERNET, Protocol::Udp, 78)
            },
            Rule {
                description: Some("メール無害化 relay".into()),
                ports: ports(&[(25, 25)]),
                destinations: vec![net("10.20.3.25/32")],
                ..rule("mail-in", INTERNET, LGWAN, Protocol::Tcp, 88)
            },
        ],
    };
    assert_eq!(policy, expected);
    assert_eq!(policy.zone_name(Policy::zone_id(LGWAN)), "lgwan");
}

#[test]
fn defaults_apply_when_left_out() {
    let text = "version = 1\n[[zones]]\nname = \"a\"\ninterfaces = [\"eth1\"]\nnetworks = [\"10.1.0.0/16\"]\n\
                [[zones]]\nname = \"b\"\ninterfaces = [\"eth2\"]\nnetworks = [\"10.2.0.0/16\"]\n\
                [[rules]]\nname = \"r\"\nfrom = \"a\"\nto = \"b\"\nprotocol = \"any\"\n";
    let (policy, warnings) = match validate::parse_str(Path::new("inline.toml"), text) {
        Ok(ok) => ok,
        Err(diags) => panic!("rejected:\n{diags}"),
    };
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(policy.defaults, Defaults::default());
    assert_eq!(policy.zones[0].criticality, Criticality::Medium);
    assert_eq!(policy.zones[0].label, None);
    let r = &policy.rules[0];
    assert_eq!(
        (r.from, r.to, r.protocol, r.mode),
        (0, 1, Protocol::Any, Mode::Enforce)
    );
    assert!(
        r.ports.is_empty()
            && r.sources.is_empty()
            && r.destinations.is_empty()
            && r.source_macs.is_empty()
    );
}

#[test]
fn warnings_do_not_reject_the_policy() {
    let (policy, warnings) = load_ok("warnings.toml");
    assert_eq!(policy.rules.len(), 2);
    let got: Vec<(u32, u32, Severity)> = warnings
        .iter()
        .map(|d| (d.line, d.col, d.severity))
        .collect();
    assert_eq!(
        got,
        [
            (5, 23, Severity::Warning),
            (6, 29, Severity::Warning),
            (14, 8, Severity::Warning),
            (27, 8, Severity::Warning)
        ]
    );
    assert!(
        warnings[0]
            .message
            .contains("interface eth1 is listed twice")
    );
    assert!(
        warnings[1]
            .message
            .contains("network 10.10.0.0/16 is listed twice")
    );
    assert!(
        warnings[2]
            .message
            .contains("zone \"backup\" is not used by any rule")
    );
    assert!(
        warnings[3]
            .message
            .contains("identical to rule \"eltax-relay\" (line 19)")
    );
}

#[test]
fn syntax_error() {
    assert_errors("syntax_error.toml", &[(5, 8, "invalid TOML")]);
}

#[test]
fn unknown_keys() {
    assert_errors(
        "unknown_key.toml",
        &[
            (2, 1, "unknown key `colour` in the top level"),
            (5, 1, "unknown key `intra-zone` in [defaults]"),
            (10, 1, "unknown key `network` in zone \"mynumber\""),
            (23, 1, "unknown key `port` in rule \"eltax-relay\""),
        ],
    );
    let diags = load_err("unknown_key.toml", &OfflineEnvironment);
    let help = diags
        .iter()
        .find_map(|d| d.help.clone())
        .unwrap_or_default();
    assert!(
        help.contains("version, mode, defaults, zones, rules"),
        "{help}"
    );
}

#[test]
fn missing_keys() {
    assert_errors(
        "missing_key.toml",
        &[
            (1, 1, "missing key `version`"),
            (2, 1, "missing key `interfaces` in zone \"mynumber\""),
            (11, 1, "missing key `to` in rule \"eltax-relay\""),
            (11, 1, "missing key `protocol` in rule \"eltax-relay\""),
        ],
    );
}

#[test]
fn wrong_types() {
    assert_errors(
        "wrong_type.toml",
        &[
            (
                6,
                12,
                "`networks` in zone \"mynumber\" must be an array, not a string",
            ),
            (
                10,
                23,
                "items of `interfaces` in zone \"lgwan\" must be strings, not an integer",
            ),
            (
                12,
                15,
                "`criticality` in zone \"lgwan\" must be a string, not an integer",
            ),
            (19, 15, "not a boolean"),
        ],
    );
}

#[test]
fn unsupported_version() {
    assert_errors(
        "bad_version.toml",
        &[(1, 11, "unsupported policy version 2")],
    );
}

#[test]
fn invalid_choices() {
    assert_errors(
        "bad_choice.toml",
        &[
            (2, 8, "invalid `mode` value \"block\""),
            (5, 11, "invalid `unknown` value \"reject\" in [defaults]"),
            (11, 15, "invalid `criticality` value \"extreme\""),
            (22, 12, "invalid `protocol` value \"TCP\""),
            (
                23,
                8,
                "invalid `mode` value \"trial\" in rule \"eltax-relay\"",
            ),
        ],
    );
}

#[test]
fn bad_zone_names() {
    assert_errors(
        "bad_zone_name.toml",
        &[
            (4, 8, "zone name \"MyNumber\" contains 'M'"),
            (9, 8, "zone name must not be empty"),
            (14, 8, "is longer than 32 characters"),
        ],
    );
}

#[test]
fn duplicate_zone_name() {
    assert_errors(
        "duplicate_zone.toml",
        &[(14, 8, "duplicate zone name \"lgwan\"")],
    );
    let diags = load_err("duplicate_zone.toml", &OfflineEnvironment);
    assert!(
        diags.0[0]
            .help
            .as_deref()
            .unwrap_or_default()
            .contains("line 9")
    );
}

#[test]
fn too_many_zones() {
    assert_eq!(MAX_POLICY_ZONES, 31);
    assert_errors(
        "too_many_zones.toml",
        &[(
            158,
            1,
            "too many zones: 32 defined, the data path supports at most 31",
        )],
    );
}

#[test]
fn empty_lists() {
    assert_errors(
        "empty_list.toml",
        &[
            (5, 14, "`interfaces` in zone \"mynumber\" must not be empty"),
            (6, 12, "`networks` in zone \"mynumber\" must not be empty"),
        ],
    );
}

#[test]
fn bad_interface_names() {
    assert_errors(
        "bad_interface.toml",
        &[
            (5, 23, "invalid interface name \"eth 2\""),
            (
                5,
                32,
                "invalid interface name \"a-very-long-interface-name\"",
            ),
            (5, 62, "invalid interface name \"eth3:1\""),
        ],
    );
}

#[test]
fn bad_vlans() {
    assert_errors(
        "bad_vlan.toml",
        &[
            (5, 15, "VLAN 0 of \"eth1.0\" is out of range"),
            (5, 25, "VLAN 4095 of \"eth1.4095\" is out of range"),
            (
                11,
                8,
                "VLAN 5000 out of range in zone \"lgwan\" field `vlan`",
            ),
        ],
    );
}

#[test]
fn interface_in_two_zones() {
    // eth2.100 twice (once spelled as `vlan = 100`) and eth1 untagged twice are errors;
    // eth1.300 beside an untagged eth1 is fine.
    assert_errors(
        "duplicate_interface.toml",
        &[
            (
                10,
                15,
                "interface eth2.100 is already used by zone \"mynumber\"",
            ),
            (
                16,
                27,
                "interface eth1 is already used by zone \"mynumber\"",
            ),
        ],
    );
}

/// A host that has exactly these interfaces.
struct Host(&'static [&'static str]);

impl Environment for Host {
    fn interface_exists(&self, name: &str) -> bool {
        self.0.contains(&name)
    }
}

#[test]
fn interface_not_found() {
    assert_errors_with(
        "interface_not_found.toml",
        &Host(&["eth1", "eth2"]),
        &[(10, 23, "interface not found: \"eth9\"")],
    );
    let diags = load_err("interface_not_found.toml", &Host(&["eth1", "eth2"]));
    assert!(
        diags.0[0]
            .help
            .as_deref()
            .unwrap_or_default()
            .contains("--offline")
    );
    // The same file is fine when checked offline.
    load_ok("interface_not_found.toml");
}

#[test]
fn host_environment_looks_at_sys_class_net() {
    assert!(!HostEnvironment.interface_exists("za-no-such-if0"));
    if Path::new("/sys/class/net/lo").exists() {
        assert!(HostEnvironment.interface_exists("lo"));
    }
}

#[test]
fn bad_cidrs() {
    assert_errors(
        "bad_cidr.toml",
        &[
            (
                6,
                29,
                "invalid CIDR \"10.300.0.0/16\" in zone \"mynumber\" field `networks`",
            ),
            (6, 46, "prefix length of \"fd10::/129\" is out of range"),
            (6, 60, "\"10.11.0.1\" has no prefix length"),
            (
                18,
                12,
                "invalid CIDR \"10.20.5.x/32\" in rule \"eltax-relay\" field `sources`",
            ),
        ],
    );
}

#[test]
fn host_bits_set() {
    assert_errors(
        "host_bits.toml",
        &[
            (6, 13, "\"10.10.0.1/16\" has host bits set"),
            (6, 29, "\"fd10::1/48\" has host bits set"),
            (18, 17, "\"10.10.9.20/24\" has host bits set"),
        ],
    );
    let diags = load_err("host_bits.toml", &OfflineEnvironment);
    let helps: Vec<&str> = diags.errors().filter_map(|d| d.help.as_deref()).collect();
    assert!(helps[0].contains("\"10.10.0.0/16\""), "{helps:?}");
    assert!(helps[1].contains("\"fd10::/48\""), "{helps:?}");
    assert!(helps[2].contains("\"10.10.9.0/24\""), "{helps:?}");
}

#[test]
fn same_network_in_two_zones() {
    assert_errors(
        "duplicate_network.toml",
        &[(
            16,
            26,
            "the same network 10.20.0.0/16 is in zone \"lgwan\" and in zone \"internet\"",
        )],
    );
}

#[test]
fn unknown_zone() {
    assert_errors(
        "unknown_zone.toml",
        &[(
            16,
            6,
            "unknown zone \"lgwn\" in rule \"eltax-relay\" field `to`",
        )],
    );
    let diags = load_err("unknown_zone.toml", &OfflineEnvironment);
    assert_eq!(
        diags.0[0].help.as_deref(),
        Some("defined zones are: mynumber, lgwan")
    );
    assert_eq!(
        diags.0[0].to_string(),
        format!(
            "{}:16:6: error: unknown zone \"lgwn\" in rule \"eltax-relay\" field `to`\n  help: defined zones are: mynumber, lgwan",
            fixture("unknown_zone.toml").display()
        )
    );
}

#[test]
fn rule_within_one_zone() {
    assert_errors(
        "same_zone.toml",
        &[(23, 6, "has the same zone \"lgwan\" in `from` and `to`")],
    );
}

#[test]
fn bad_rule_name() {
    assert_errors(
        "bad_rule_name.toml",
        &[(14, 8, "rule name \"eltax relay\" contains ' '")],
    );
}

#[test]
fn duplicate_rule_name() {
    assert_errors(
        "duplicate_rule.toml",
        &[(21, 8, "duplicate rule name \"eltax-relay\"")],
    );
    let diags = load_err("duplicate_rule.toml", &OfflineEnvironment);
    assert!(
        diags.0[0]
            .help
            .as_deref()
            .unwrap_or_default()
            .contains("line 14")
    );
}

#[test]
fn ports_without_tcp_or_udp() {
    assert_errors(
        "ports_not_allowed.toml",
        &[(25, 9, "`ports` only apply to tcp and udp")],
    );
}

#[test]
fn port_out_of_range() {
    assert_errors(
        "port_out_of_range.toml",
        &[
            (18, 10, "port out of range: 0"),
            (18, 15, "port out of range: 70000"),
            (18, 24, "port out of range: 65536"),
            (18, 31, "port out of range: 65536"),
        ],
    );
}

#[test]
fn port_range_reversed() {
    assert_errors(
        "port_range_reversed.toml",
        &[(18, 17, "port range \"8010-8000\" is reversed")],
    );
}

#[test]
fn bad_port_syntax() {
    assert_errors(
        "bad_port.toml",
        &[
            (18, 10, "invalid port \"https\""),
            (18, 19, "invalid port \"80-\""),
        ],
    );
}

#[test]
fn address_in_the_wrong_zone() {
    assert_errors(
        "source_wrong_zone.toml",
        &[
            (
                23,
                28,
                "source 10.20.0.0/16 is in zone lgwan, not in from-zone mynumber",
            ),
            (
                24,
                17,
                "destination 10.10.9.20/32 is in zone mynumber, not in to-zone lgwan",
            ),
            (
                31,
                33,
                "destination 10.20.1.1/32 is in zone lgwan, not in to-zone internet",
            ),
        ],
    );
}

#[test]
fn address_wider_than_its_zone() {
    assert_errors(
        "source_too_wide.toml",
        &[
            (23, 12, "source 10.0.0.0/8 is wider than from-zone lgwan"),
            (30, 17, "destination fd20::/16 is wider than to-zone lgwan"),
        ],
    );
}

#[test]
fn protocol_and_address_family_never_meet() {
    assert_errors(
        "icmp_family.toml",
        &[
            (
                17,
                12,
                "rule \"ping\" can never match: protocol icmp is IPv4 only, but all its sources are IPv6",
            ),
            (
                24,
                12,
                "rule \"ping6\" can never match: protocol icmpv6 is IPv6 only, but all its destinations are IPv4",
            ),
            (33, 16, "rule \"mixed\" can never match"),
        ],
    );
}

#[test]
fn bad_macs() {
    assert_errors(
        "bad_mac.toml",
        &[
            (20, 3, "invalid MAC address \"52:54:00:12:34\""),
            (21, 3, "is the broadcast MAC address"),
            (22, 3, "is a multicast MAC address"),
            (23, 3, "is the all-zero MAC address"),
        ],
    );
}

#[test]
fn all_errors_in_one_pass() {
    assert_errors(
        "many_errors.toml",
        &[
            (11, 29, "the same network 10.10.0.0/16"),
            (16, 6, "unknown zone \"lgwn\""),
            (18, 17, "port out of range: 70000"),
            (19, 16, "broadcast MAC"),
            (22, 8, "duplicate rule name \"eltax-relay\""),
            (26, 12, "prefix length of \"10.20.0.0/33\" is out of range"),
        ],
    );
}

#[test]
fn too_many_rules() {
    // Generated: a fixture file with 100 001 rules would be 9 MB. Rules differ in port and
    // direction so that none is an identical copy of another.
    let mut text = String::from(
        "version = 1\n[[zones]]\nname = \"a\"\ninterfaces = [\"eth1\"]\nnetworks = [\"10.1.0.0/16\"]\n\
         [[zones]]\nname = \"b\"\ninterfaces = [\"eth2\"]\nnetworks = [\"10.2.0.0/16\"]\n",
    );
    let header_lines = 9;
    for i in 0..=MAX_POLICY_RULES {
        let (from, to) = if i < 60_000 { ("a", "b") } else { ("b", "a") };
        let port = i % 60_000 + 1;
        text.push_str(&format!(
            "[[rules]]\nname = \"r{i}\"\nfrom = \"{from}\"\nto = \"{to}\"\nprotocol = \"tcp\"\nports = [{port}]\n"
        ));
    }
    let diags = match validate::parse_str(Path::new("big.toml"), &text) {
        Ok(_) => panic!("{} rules accepted", MAX_POLICY_RULES + 1),
        Err(diags) => diags,
    };
    let errors: Vec<&Diagnostic> = diags.errors().collect();
    assert_eq!(errors.len(), 1, "{diags}");
    let line = header_lines + 1 + 6 * MAX_POLICY_RULES as u32;
    assert_eq!((errors[0].line, errors[0].col), (line, 1));
    assert!(
        errors[0]
            .message
            .contains("map capacity exceeded: 100001 rules"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].message.contains("at most 100000"),
        "{}",
        errors[0]
    );
}

#[test]
fn too_many_rules_written_as_an_inline_array() {
    // No `[[rules]]` headers to count before parsing: the parsed tables are counted, still
    // before any of them is read (one error, not four "missing key" errors a table).
    let text = format!(
        "version = 1\nrules = [\n{}]\n\
         [[zones]]\nname = \"a\"\ninterfaces = [\"eth1\"]\nnetworks = [\"10.1.0.0/16\"]\n",
        "{},\n".repeat(MAX_POLICY_RULES + 5)
    );
    let diags = match validate::parse_str(Path::new("inline.toml"), &text) {
        Ok(_) => panic!("{} rules accepted", MAX_POLICY_RULES + 5),
        Err(diags) => diags,
    };
    assert_eq!(diags.len(), 1, "{diags}");
    let d = &diags.0[0];
    assert_eq!((d.line, d.col), (3 + MAX_POLICY_RULES as u32, 1), "{d}");
    assert!(
        d.message
            .contains("map capacity exceeded: 100005 rules, the data path holds at most 100000"),
        "{d}"
    );
}

#[test]
fn unreadable_file_is_a_diagnostic_at_the_start() {
    let path = fixture("no-such-policy.toml");
    let diags = match validate::load(&path, &OfflineEnvironment) {
        Ok(_) => panic!("a missing file was accepted"),
        Err(diags) => diags,
    };
    assert_eq!(diags.len(), 1);
    let d = &diags.0[0];
    assert_eq!((d.line, d.col, d.severity), (1, 1, Severity::Error));
    assert_eq!(d.file, path);
    assert!(d.message.starts_with("cannot read policy file"), "{d}");
}

#[test]
fn non_utf8_file_points_at_the_bad_byte() {
    let path = std::env::temp_dir().join(format!("za-policy-check-{}.toml", std::process::id()));
    let written = std::fs::write(&path, b"version = 1\nlabel = \"\xff\"\n");
    let result = written.map(|()| validate::load(&path, &OfflineEnvironment));
    let _ = std::fs::remove_file(&path);
    let diags = match result {
        Ok(Err(diags)) => diags,
        Ok(Ok(_)) => panic!("non-UTF-8 accepted"),
        Err(e) => panic!("cannot write {}: {e}", path.display()),
    };
    let d = &diags.0[0];
    assert_eq!((d.line, d.col), (2, 10), "{d}");
    assert!(d.message.contains("not valid UTF-8"), "{d}");
}

#[test]
fn guideline_lint_errors_reject_and_warnings_locate() {
    assert_errors(
        "guideline_lint.toml",
        &[
            (
                24,
                6,
                "rule \"mynumber-web\" lets critical zone \"mynumber\" connect to the internet zone \"internet\"",
            ),
            (
                32,
                12,
                "rule \"lgwan-any\" allows every protocol (protocol = \"any\") into critical zone \"mynumber\"",
            ),
        ],
    );
    let diags = load_err("guideline_lint.toml", &OfflineEnvironment);
    let warnings: Vec<(u32, u32, &str)> = diags
        .warnings()
        .map(|d| (d.line, d.col, d.message.as_str()))
        .collect();
    assert_eq!(warnings.len(), 3, "{diags}");
    assert_eq!((warnings[0].0, warnings[0].1), (36, 1));
    assert!(
        warnings[0]
            .2
            .contains("rule \"relay-loose\" admits the whole zone \"lgwan\"")
    );
    assert_eq!((warnings[1].0, warnings[1].1), (36, 1));
    assert!(warnings[1].2.contains("no path limitation by MAC address"));
    assert_eq!((warnings[2].0, warnings[2].1), (40, 12));
    assert!(warnings[2].2.contains("admits every tcp port"));
    // The acknowledged exception (line 42 on) is accepted silently, and its acknowledgement kept.
    assert!(diags.iter().all(|d| d.line < 42), "{diags}");
    let fixed = std::fs::read_to_string(fixture("guideline_lint.toml"))
        .unwrap_or_default()
        .replace(
            "to = \"internet\"\nprotocol = \"tcp\"\nports = [\"443\"]",
            "to = \"lgwan\"\nprotocol = \"tcp\"\nports = [\"443\"]",
        )
        .replace(
            "protocol = \"any\"",
            "protocol = \"tcp\"\nports = [\"443\"]",
        );
    let (policy, _) = validate::parse_str(Path::new("fixed.toml"), &fixed)
        .unwrap_or_else(|d| panic!("still rejected:\n{d}"));
    let ack = policy
        .rules
        .iter()
        .find(|r| r.name == "vendor-maintenance")
        .and_then(|r| r.acknowledge.as_deref());
    assert_eq!(
        ack,
        Some("保守業者 remote maintenance, approved by the CISO 2025-04-01 (ticket 123)")
    );
}

//! The two policies, before and after the reload: the lab's zones with an island of the
//! マイナンバー系 inside LGWAN's prefixes, shared rules, and rules widened, narrowed, removed
//! and added between them.

use super::*;

pub(crate) const ZONES: &str = r#"
[[zones]]
name = "mynumber"
interfaces = ["zmyn"]
# An island of the マイナンバー系 inside LGWAN's prefixes: the longest prefix decides.
networks = ["10.10.0.0/16", "fd10::/48", "10.20.99.0/24", "fd20:0:0:99::/64"]
criticality = "critical"

[[zones]]
name = "lgwan"
interfaces = ["zlgw"]
networks = ["10.20.0.0/16", "fd20::/48"]
criticality = "high"

[[zones]]
name = "internet"
interfaces = ["zinet"]
# 0.0.0.0/1 holds the other zones' prefixes; 192.0.2.0/24 and fd99::/16 are in no zone.
networks = ["0.0.0.0/1", "198.51.100.0/24", "2000::/3"]
segment = "internet"
criticality = "medium"
"#;

/// Rules both policies have, the same.
pub(crate) const SHARED: &str = r#"
[[rules]]
name = "ping6-lgwan"
from = "mynumber"
to = "lgwan"
protocol = "icmpv6"

[[rules]]
name = "dns-out"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["53"]

[[rules]]
name = "proxy-any"
from = "lgwan"
to = "internet"
protocol = "any"
destinations = ["198.51.100.20/32", "2001:db8::20/128"]
"#;

/// Before the reload.
pub(crate) const POLICY_A: &str = r#"version = 1
mode = "enforce"

[defaults]
intra_zone = "allow"
unknown = "deny"
fragments = "deny"
{ZONES}{SHARED}
[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.0.10/32", "fd20::10/128"]
destinations = ["10.10.0.10/32", "fd10::10/128"]

[[rules]]
name = "admin-ssh"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["22"]
source_macs = ["02:00:00:00:20:10"]

[[rules]]
name = "island-files"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["8000-8010"]
destinations = ["10.20.99.0/24", "fd20:0:0:99::/64"]

[[rules]]
name = "island-db"
from = "mynumber"
to = "lgwan"
protocol = "tcp"
ports = ["3306", "5432"]
sources = ["10.20.99.0/24", "fd20:0:0:99::/64"]

[[rules]]
name = "syslog"
from = "mynumber"
to = "lgwan"
protocol = "udp"
ports = ["514", "5140-5149"]

[[rules]]
name = "ping-lgwan"
from = "mynumber"
to = "lgwan"
protocol = "icmp"

[[rules]]
name = "web-out"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80", "443"]

[[rules]]
name = "ntp-trial"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["123"]
mode = "audit"

[[rules]]
name = "inbound-web"
from = "internet"
to = "lgwan"
protocol = "tcp"
ports = ["8080"]
destinations = ["10.20.0.20/32", "fd20::20/128"]

[[rules]]
name = "inbound-ping"
from = "internet"
to = "lgwan"
protocol = "icmp"
mode = "audit"
"#;

/// After the reload: the defaults turned round, rules widened, narrowed, removed and added.
pub(crate) const POLICY_B: &str = r#"version = 1
mode = "enforce"

[defaults]
intra_zone = "deny"
unknown = "allow"
fragments = "deny"
{ZONES}{SHARED}
[[rules]]
name = "relay-https"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
destinations = ["10.10.0.10/32", "fd10::10/128"]

[[rules]]
name = "island-files"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["8000-8005"]
destinations = ["10.20.99.0/24", "fd20:0:0:99::/64"]

[[rules]]
name = "island-db"
from = "mynumber"
to = "lgwan"
protocol = "tcp"
ports = ["3306", "5000-5005"]
sources = ["10.20.99.0/24", "fd20:0:0:99::/64"]

[[rules]]
name = "syslog"
from = "mynumber"
to = "lgwan"
protocol = "udp"
ports = ["514"]

[[rules]]
name = "ping-mynumber"
from = "lgwan"
to = "mynumber"
protocol = "icmp"
sources = ["10.20.0.10/32"]

[[rules]]
name = "web-out"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["443"]

[[rules]]
name = "ntp"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["123"]

[[rules]]
name = "inbound-udp"
from = "internet"
to = "lgwan"
protocol = "udp"
ports = ["9000-9009"]
mode = "audit"
"#;

pub(crate) fn policy_text(template: &str) -> String {
    template
        .replace("{ZONES}", ZONES)
        .replace("{SHARED}", SHARED)
}

pub(crate) fn parse_policy(text: &str) -> Policy {
    validate::parse_str(Path::new("policy.toml"), text)
        .map(|(p, _)| p)
        .unwrap_or_else(|d| panic!("{d}"))
}

/// Destination ports tried besides the rules' own: edges of the ranges, neighbours, others.
pub(crate) const PORTS: [u16; 24] = [
    22, 23, 25, 53, 80, 123, 443, 514, 3306, 3389, 5000, 5005, 5006, 5139, 5140, 5149, 5150, 5432,
    7999, 8000, 8006, 8010, 8011, 8080,
];

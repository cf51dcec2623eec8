//! Generated policies for `cargo xtask bench`: a fixed base (the zones and the rules the
//! benchmark's traffic or frames need) plus `n` generated rules, or rules with long
//! destination lists.
//!
//! The generated parts never touch the base's addresses, so whatever their size, every frame
//! and connection of the benchmark meets the same verdict. They are shaped like an operator's
//! policy, not like the data path: many 特定通信 with distinct hosts and ports in both
//! directions, some MAC-bound, some IPv6; or SaaS rules towards thousands of prefixes
//! (the shape of the published Microsoft 365 address lists: many IPv4 prefixes of /14…/28 and
//! IPv6 prefixes of /32…/64).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// How the rule count grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `n` rules in total: the base plus generated rules, each with its own source host and
    /// port (lgwan → mynumber TCP, mynumber → lgwan UDP, lgwan → internet TCP to one host).
    Rules,
    /// The base plus SaaS rules lgwan → internet whose destination lists hold `n` prefixes in
    /// total (at most [`PREFIXES_PER_RULE`] a rule, like one service area of a published list).
    Cidr,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Rules => "rules",
            Variant::Cidr => "cidr",
        }
    }
}

/// Destination prefixes per generated SaaS rule in [`Variant::Cidr`].
pub const PREFIXES_PER_RULE: usize = 1000;

/// A policy's zones and the rules its benchmark needs; the generated rules are added to it.
pub struct Base<'a> {
    /// `version`, `[defaults]` and `[[zones]]`: zones named mynumber (critical, 10.10.0.0/16 and
    /// fd10::/48), lgwan (10.20.0.0/16, fd20::/48) and internet (the rest), in any order.
    pub header: &'a str,
    /// `[[rules]]` tables.
    pub rules: &'a str,
    /// Number of `[[rules]]` in `rules`.
    pub rule_count: usize,
}

/// The base's rules go to the middle of the generated ones: neither first nor last in file
/// order, for a filter that evaluates rules in order (nftables), like an operator's list.
pub fn generate(base: &Base<'_>, variant: Variant, n: usize) -> String {
    let generated = match variant {
        Variant::Rules => rules(n.saturating_sub(base.rule_count)),
        Variant::Cidr => cidr_rules(n),
    };
    let middle = generated.len() / 2;
    let mut text = String::with_capacity(
        base.header.len()
            + base.rules.len()
            + generated.iter().map(String::len).sum::<usize>()
            + 64,
    );
    text.push_str(base.header);
    text.push('\n');
    for r in &generated[..middle] {
        text.push_str(r);
    }
    text.push_str(base.rules);
    text.push('\n');
    for r in &generated[middle..] {
        text.push_str(r);
    }
    text
}

/// Number of rules [`generate`] writes for `variant` and `n`.
pub fn rule_count(base: &Base<'_>, variant: Variant, n: usize) -> usize {
    match variant {
        Variant::Rules => base.rule_count.max(n),
        Variant::Cidr => base.rule_count + n.div_ceil(PREFIXES_PER_RULE),
    }
}

/// Generated hosts are spread over the zone's whole /16 (and the matching IPv6 /64) in a
/// scattered order, around the benchmarks' own hosts as in a real segment, so that looking
/// those up walks a trie as deep as the policy makes it. Only `10.x.0.0/24` (and `fdxx::/120`)
/// is left out: the labs' gateways and hosts live there. 65 280 hosts a zone, reused with
/// other ports beyond that.
const HOSTS: u32 = 65_536 - 256;

/// The `k`th host's offset in the zone: a permutation of 256..65 536 (the multiplier is
/// prime to `HOSTS`).
fn slot(k: u32) -> u32 {
    256 + (k % HOSTS) * 40_507 % HOSTS
}

fn host4(zone_octet: u8, k: u32) -> Ipv4Addr {
    let s = slot(k);
    Ipv4Addr::new(10, zone_octet, (s >> 8) as u8, (s & 0xff) as u8)
}

fn host6(zone: u16, k: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00 | zone, 0, 0, 0, 0, 0, 0, slot(k) as u16)
}

/// Ports 1024..=65535, a different one for each of the first 64 512 rules.
fn port(i: u32) -> u32 {
    1024 + (i * 7919) % (65536 - 1024)
}

fn mac(i: u32) -> String {
    format!(
        "02:be:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

fn rules(n: usize) -> Vec<String> {
    (0..n as u32)
        .map(|i| {
            let mut r = String::with_capacity(200);
            let k = i / 3;
            let _ = writeln!(r, "[[rules]]\nname = \"gen-{i}\"");
            match i % 3 {
                0 => {
                    let _ = write!(r, "from = \"lgwan\"\nto = \"mynumber\"\nprotocol = \"tcp\"\nsources = [\"{}/32\"", host4(20, k));
                    if i % 4 == 0 {
                        let _ = write!(r, ", \"{}/128\"", host6(0x20, k));
                    }
                    r.push_str("]\n");
                }
                1 => {
                    let _ = writeln!(r, "from = \"mynumber\"\nto = \"lgwan\"\nprotocol = \"udp\"\nsources = [\"{}/32\"]", host4(10, k));
                    let _ = writeln!(r, "destinations = [\"{}/32\"]", host4(20, k));
                }
                _ => {
                    let _ = writeln!(r, "from = \"lgwan\"\nto = \"internet\"\nprotocol = \"tcp\"\nsources = [\"{}/32\"]", host4(20, k + HOSTS / 2));
                    let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(40, 0, 0, 0)) + k);
                    let _ = writeln!(r, "destinations = [\"{dst}/32\"]");
                }
            }
            let _ = writeln!(r, "ports = [\"{}\"]", port(i));
            if i % 10 == 7 {
                let _ = writeln!(r, "source_macs = [\"{}\"]", mac(i));
            } else if i % 3 == 0 {
                // Into the critical zone without a MAC: the guideline lint wants it recorded.
                r.push_str("acknowledge = \"generated benchmark rule\"\n");
            }
            r.push('\n');
            r
        })
        .collect()
}

/// IPv4 prefix lengths and IPv6 prefix lengths cycled through, and one IPv6 prefix in five.
const V4_LENS: [u8; 8] = [24, 20, 22, 24, 26, 28, 16, 24];
const V6_LENS: [u8; 4] = [48, 40, 56, 64];

/// `n` distinct, non-overlapping public prefixes (IPv4 from 20.0.0.0 upwards, IPv6 from
/// 2a01:b000::/24 upwards), in the order they are listed.
pub fn prefixes(n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let mut next4: u64 = u64::from(u32::from(Ipv4Addr::new(20, 0, 0, 0)));
    let mut next6: u128 = u128::from(Ipv6Addr::new(0x2a01, 0xb000, 0, 0, 0, 0, 0, 0));
    for j in 0..n {
        if j % 5 == 4 {
            let len = V6_LENS[(j / 5) % V6_LENS.len()];
            let size = 1u128 << (128 - len);
            next6 = next6.div_ceil(size) * size;
            out.push(format!("{}/{len}", Ipv6Addr::from(next6)));
            next6 += size;
        } else {
            let len = V4_LENS[j % V4_LENS.len()];
            let size = 1u64 << (32 - len);
            next4 = next4.div_ceil(size) * size;
            out.push(format!("{}/{len}", Ipv4Addr::from(next4 as u32)));
            next4 += size;
        }
    }
    out
}

fn cidr_rules(n: usize) -> Vec<String> {
    let all = prefixes(n);
    all.chunks(PREFIXES_PER_RULE)
        .enumerate()
        .map(|(i, chunk)| {
            let (proto, ports) = if i % 4 == 3 { ("udp", "\"3478-3481\"") } else { ("tcp", "\"80\", \"443\"") };
            let list: Vec<String> = chunk.iter().map(|p| format!("\"{p}\"")).collect();
            format!(
                "[[rules]]\nname = \"saas-{i}\"\nfrom = \"lgwan\"\nto = \"internet\"\nprotocol = \"{proto}\"\n\
                 ports = [{ports}]\nsources = [\"10.20.4.0/24\", \"fd20:0:0:4::/64\"]\ndestinations = [{}]\n\n",
                list.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Base<'static> = Base {
        header: "version = 1\n",
        rules: "[[rules]]\nname = \"base\"\n",
        rule_count: 1,
    };

    #[test]
    fn rule_counts_match_the_text() {
        for (variant, n) in [
            (Variant::Rules, 10),
            (Variant::Rules, 1000),
            (Variant::Cidr, 10),
            (Variant::Cidr, 2500),
        ] {
            let text = generate(&BASE, variant, n);
            assert_eq!(
                text.matches("[[rules]]").count(),
                rule_count(&BASE, variant, n),
                "{variant:?} {n}"
            );
        }
    }

    /// The generated parts pass `policy check` (validation and the guideline lint) and
    /// compile, next to zones like the benchmarks'.
    #[test]
    fn generated_policies_check_and_compile() {
        const HEADER: &str = "version = 1\n\
            [[zones]]\nname = \"mynumber\"\ninterfaces = [\"zmyn\"]\nnetworks = [\"10.10.0.0/16\", \"fd10::/48\"]\ncriticality = \"critical\"\n\
            [[zones]]\nname = \"lgwan\"\ninterfaces = [\"zlg\"]\nnetworks = [\"10.20.0.0/16\", \"fd20::/48\"]\n\
            [[zones]]\nname = \"internet\"\ninterfaces = [\"zinet\"]\nnetworks = [\"0.0.0.0/0\", \"::/0\"]\n";
        let base = Base {
            header: HEADER,
            rules: "[[rules]]\nname = \"base\"\nfrom = \"mynumber\"\nto = \"lgwan\"\nprotocol = \"tcp\"\nports = [\"22\"]\nsources = [\"10.10.0.5/32\"]\n",
            rule_count: 1,
        };
        for (variant, n) in [(Variant::Rules, 3000), (Variant::Cidr, 2500)] {
            let text = generate(&base, variant, n);
            let (policy, warnings) = zone_agent::policy::validate::check_str(
                "gen.toml".as_ref(),
                &text,
                &zone_agent::policy::validate::OfflineEnvironment,
            )
            .unwrap_or_else(|d| panic!("{variant:?} {n}: {d}"));
            assert_eq!(policy.rules.len(), rule_count(&base, variant, n));
            assert!(
                warnings.is_empty(),
                "{variant:?} {n}: {}",
                warnings
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            zone_agent::policy::compile::compile(&policy)
                .unwrap_or_else(|d| panic!("{variant:?} {n}: {d}"));
        }
    }

    #[test]
    fn hosts_are_a_permutation_outside_the_lab_subnet() {
        let all: std::collections::BTreeSet<u32> = (0..HOSTS).map(slot).collect();
        assert_eq!(all.len(), HOSTS as usize);
        assert_eq!(all.first(), Some(&256));
        assert_eq!(all.last(), Some(&65_535));
    }

    #[test]
    fn prefixes_are_distinct_and_aligned() {
        let p = prefixes(5000);
        let set: std::collections::BTreeSet<&String> = p.iter().collect();
        assert_eq!(set.len(), p.len());
        for s in &p {
            let (addr, len) = s.split_once('/').unwrap();
            let len: u32 = len.parse().unwrap();
            match addr.parse::<std::net::IpAddr>().unwrap() {
                std::net::IpAddr::V4(a) => {
                    assert_eq!(u32::from(a) & ((1u64 << (32 - len)) - 1) as u32, 0, "{s}")
                }
                std::net::IpAddr::V6(a) => {
                    assert_eq!(u128::from(a) & ((1u128 << (128 - len)) - 1), 0, "{s}")
                }
            }
        }
    }

    #[test]
    fn generated_rules_are_distinct_up_to_the_rule_limit() {
        let text = generate(&BASE, Variant::Rules, 100_000);
        let mut seen = std::collections::HashSet::new();
        for r in text.split("[[rules]]").skip(1) {
            // Same rule but for the name = identical (the validator warns).
            let body: String = r.lines().filter(|l| !l.starts_with("name")).collect();
            assert!(seen.insert(body), "duplicate rule body: {r}");
        }
    }
}

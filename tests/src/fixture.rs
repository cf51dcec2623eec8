//! The three-zone lab every namespace test, the demo and the benchmarks share: the zones of
//! 三層の対策 (マイナンバー利用事務系, LGWAN接続系, インターネット接続系) behind one gateway,
//! one host per zone, and the policy text that names them.
//!
//! ```text
//!   mynumber  10.10.0.10/16  fd10::10/64      02:00:00:00:10:10  -- zmyn  --+
//!   lgwan     10.20.0.10/16  fd20::10/64      02:00:00:00:20:10  -- zlgw  --+ gateway (.1, ::1)
//!   internet  198.51.100.10/24 2001:db8::10/64 02:00:00:00:30:10 -- zinet --+
//! ```
//!
//! [`ThreeZones::add`] adds the three hosts to a lab; [`PolicyText`] writes the policy's
//! header, defaults and zones (the knobs the suites turn) and appends each suite's own rules.

use std::fmt;

use crate::lab::{Host, HostSpec, Lab};

/// One zone of the lab: its gateway interface, its networks, and its host.
#[derive(Clone, Copy, Debug)]
pub struct Zone {
    /// The zone's name in the policy (and in the host namespace's name).
    pub name: &'static str,
    /// The zone's `label` in the policy.
    pub label: &'static str,
    /// The gateway's veth end: the interface the zone is bound to.
    pub iface: &'static str,
    /// The zone's IPv4 network in the policy.
    pub net4: &'static str,
    /// The zone's IPv6 network in the policy.
    pub net6: &'static str,
    /// `criticality` in the policy.
    pub criticality: &'static str,
    /// The host's address with prefix length, and the gateway's on that link.
    pub host_v4: &'static str,
    pub gw_v4: &'static str,
    pub host_v6: &'static str,
    pub gw_v6: &'static str,
    /// The host's NIC, and the gateway end's when a test pins it.
    pub mac: &'static str,
    pub gw_mac: &'static str,
}

/// マイナンバー利用事務系: 10.10.0.10, fd10::10 behind `zmyn`.
pub const MYNUMBER: Zone = Zone {
    name: "mynumber",
    label: "マイナンバー利用事務系",
    iface: "zmyn",
    net4: "10.10.0.0/16",
    net6: "fd10::/48",
    criticality: "critical",
    host_v4: "10.10.0.10/16",
    gw_v4: "10.10.0.1/16",
    host_v6: "fd10::10/64",
    gw_v6: "fd10::1/64",
    mac: MY_MAC,
    gw_mac: "02:00:00:00:10:01",
};

/// LGWAN接続系: 10.20.0.10, fd20::10, the relay's NIC [`LG_MAC`], behind `zlgw`.
pub const LGWAN: Zone = Zone {
    name: "lgwan",
    label: "LGWAN接続系",
    iface: "zlgw",
    net4: "10.20.0.0/16",
    net6: "fd20::/48",
    criticality: "high",
    host_v4: "10.20.0.10/16",
    gw_v4: "10.20.0.1/16",
    host_v6: "fd20::10/64",
    gw_v6: "fd20::1/64",
    mac: LG_MAC,
    gw_mac: "02:00:00:00:20:01",
};

/// インターネット接続系: 198.51.100.10, 2001:db8::10 behind `zinet`; the zone is the default
/// route (everything no other zone holds).
pub const INTERNET: Zone = Zone {
    name: "internet",
    label: "インターネット接続系",
    iface: "zinet",
    net4: "0.0.0.0/0",
    net6: "::/0",
    criticality: "medium",
    host_v4: "198.51.100.10/24",
    gw_v4: "198.51.100.1/24",
    host_v6: "2001:db8::10/64",
    gw_v6: "2001:db8::1/64",
    mac: INET_MAC,
    gw_mac: "02:00:00:00:30:01",
};

/// The three zones in policy order (zone index = position).
pub const ZONES: [Zone; 3] = [MYNUMBER, LGWAN, INTERNET];

/// The mynumber host's NIC.
pub const MY_MAC: &str = "02:00:00:00:10:10";
/// The lgwan (relay) host's NIC: the one MAC-bound rules name.
pub const LG_MAC: &str = "02:00:00:00:20:10";
/// Another NIC on the LGWAN segment, which MAC-bound rules must not accept.
pub const OTHER_MAC: &str = "02:00:00:00:20:99";
/// The internet host's NIC.
pub const INET_MAC: &str = "02:00:00:00:30:10";

impl Zone {
    /// The zone's host, IPv4 and IPv6, its NIC fixed, the gateway end's left random.
    pub fn host(&self) -> HostSpec {
        HostSpec {
            zone: self.name.into(),
            gw_iface: self.iface.into(),
            v4: self.host_v4.into(),
            gw_v4: self.gw_v4.into(),
            v6: self.host_v6.into(),
            gw_v6: self.gw_v6.into(),
            mac: self.mac.into(),
            gw_mac: String::new(),
            vlan: None,
        }
    }

    /// [`Zone::host`] without IPv6.
    pub fn host_v4(&self) -> HostSpec {
        HostSpec {
            v6: String::new(),
            gw_v6: String::new(),
            ..self.host()
        }
    }
}

/// The three zone hosts of a lab ([`ThreeZones::add`]).
#[derive(Clone, Debug)]
pub struct ThreeZones {
    /// マイナンバー利用事務系 host behind `zmyn`.
    pub my: Host,
    /// LGWAN接続系 host behind `zlgw`.
    pub lg: Host,
    /// インターネット接続系 host behind `zinet`.
    pub inet: Host,
}

impl ThreeZones {
    /// Adds the three hosts of [`ZONES`] (IPv4 and IPv6) to `lab`.
    pub fn add(lab: &mut Lab) -> ThreeZones {
        ThreeZones {
            my: lab.add_host(MYNUMBER.host()),
            lg: lab.add_host(LGWAN.host()),
            inet: lab.add_host(INTERNET.host()),
        }
    }

    /// The policy over the three zones, as [`PolicyText::new`].
    pub fn policy() -> PolicyText {
        PolicyText::new()
    }
}

/// One `[[zones]]` table of a [`PolicyText`].
#[derive(Clone, Debug)]
struct ZoneText {
    zone: Zone,
    interfaces: Vec<String>,
    networks: Vec<String>,
}

/// The text of a policy over the lab's zones: `version`, `mode`, `[defaults]`, the
/// `[[zones]]` and then the suite's own rules, verbatim.
///
/// Defaults: `mode = "enforce"`, `intra_zone = "allow"`, `unknown = "deny"`,
/// `fragments = "deny"`, the three zones with their IPv4 and IPv6 networks, no labels.
#[derive(Clone, Debug)]
pub struct PolicyText {
    comment: Option<String>,
    mode: String,
    intra_zone: String,
    unknown: String,
    fragments: String,
    labels: bool,
    zones: Vec<ZoneText>,
    rules: String,
}

impl Default for PolicyText {
    fn default() -> Self {
        PolicyText::new()
    }
}

impl PolicyText {
    /// The defaults above.
    pub fn new() -> PolicyText {
        PolicyText {
            comment: None,
            mode: "enforce".into(),
            intra_zone: "allow".into(),
            unknown: "deny".into(),
            fragments: "deny".into(),
            labels: false,
            zones: ZONES
                .iter()
                .map(|z| ZoneText {
                    zone: *z,
                    interfaces: vec![z.iface.into()],
                    networks: vec![z.net4.into(), z.net6.into()],
                })
                .collect(),
            rules: String::new(),
        }
    }

    /// A `# comment` first line.
    pub fn comment(mut self, text: &str) -> Self {
        self.comment = Some(text.into());
        self
    }

    /// The global `mode`.
    pub fn mode(mut self, mode: &str) -> Self {
        self.mode = mode.into();
        self
    }

    /// `defaults.intra_zone`.
    pub fn intra_zone(mut self, v: &str) -> Self {
        self.intra_zone = v.into();
        self
    }

    /// `defaults.unknown`.
    pub fn unknown(mut self, v: &str) -> Self {
        self.unknown = v.into();
        self
    }

    /// `defaults.fragments`.
    pub fn fragments(mut self, v: &str) -> Self {
        self.fragments = v.into();
        self
    }

    /// Each zone with its `label`.
    pub fn labels(mut self) -> Self {
        self.labels = true;
        self
    }

    /// Only the zones' IPv4 networks.
    pub fn v4_only(mut self) -> Self {
        for z in &mut self.zones {
            z.networks.retain(|n| n != z.zone.net6);
        }
        self
    }

    /// Only the zones named, in this order.
    pub fn only(mut self, names: &[&str]) -> Self {
        self.zones = names
            .iter()
            .map(|n| self.zone(n).clone())
            .collect::<Vec<_>>();
        self
    }

    /// Zone `name`'s `interfaces`.
    pub fn interfaces(mut self, name: &str, ifaces: &[&str]) -> Self {
        self.zone_mut(name).interfaces = ifaces.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Zone `name`'s `networks`.
    pub fn networks(mut self, name: &str, nets: &[&str]) -> Self {
        self.zone_mut(name).networks = nets.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// The rules (and anything else) after the zones, verbatim.
    pub fn rules(mut self, text: &str) -> Self {
        self.rules = text.into();
        self
    }

    /// The policy text.
    pub fn build(&self) -> String {
        self.to_string()
    }

    fn zone(&self, name: &str) -> &ZoneText {
        self.zones
            .iter()
            .find(|z| z.zone.name == name)
            .unwrap_or_else(|| panic!("no zone {name:?} in the fixture policy"))
    }

    fn zone_mut(&mut self, name: &str) -> &mut ZoneText {
        self.zones
            .iter_mut()
            .find(|z| z.zone.name == name)
            .unwrap_or_else(|| panic!("no zone {name:?} in the fixture policy"))
    }
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl fmt::Display for PolicyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.comment {
            writeln!(f, "# {c}")?;
        }
        writeln!(f, "version = 1")?;
        writeln!(f, "mode = {:?}", self.mode)?;
        writeln!(f)?;
        writeln!(f, "[defaults]")?;
        writeln!(f, "intra_zone = {:?}", self.intra_zone)?;
        writeln!(f, "unknown = {:?}", self.unknown)?;
        writeln!(f, "fragments = {:?}", self.fragments)?;
        for z in &self.zones {
            writeln!(f)?;
            writeln!(f, "[[zones]]")?;
            writeln!(f, "name = {:?}", z.zone.name)?;
            if self.labels {
                writeln!(f, "label = \"{}\"", z.zone.label)?;
            }
            writeln!(f, "interfaces = {}", toml_list(&z.interfaces))?;
            writeln!(f, "networks = {}", toml_list(&z.networks))?;
            writeln!(f, "criticality = {:?}", z.zone.criticality)?;
        }
        if !self.rules.is_empty() {
            writeln!(f)?;
            f.write_str(self.rules.trim_start_matches('\n'))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_reads_as_written_by_hand() {
        let text = ThreeZones::policy()
            .rules("\n[[rules]]\nname = \"r\"\n")
            .build();
        assert!(text.starts_with(
            "version = 1\nmode = \"enforce\"\n\n[defaults]\nintra_zone = \"allow\"\n\
             unknown = \"deny\"\nfragments = \"deny\"\n\n[[zones]]\nname = \"mynumber\"\n\
             interfaces = [\"zmyn\"]\nnetworks = [\"10.10.0.0/16\", \"fd10::/48\"]\n\
             criticality = \"critical\"\n"
        ));
        assert!(text.ends_with("criticality = \"medium\"\n\n[[rules]]\nname = \"r\"\n"));
    }
}

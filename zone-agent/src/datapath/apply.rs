//! Install a compiled policy atomically: write it completely into the inactive set, then
//! flip `ZA_ACTIVE`. A failure before the flip leaves the enforcing policy untouched.
//!
//! The inactive set is rewritten only by the next reload. XDP programs run to completion
//! under RCU within microseconds, so by then no packet can still be reading it.

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use zone_agent_common::*;

use super::{Datapath, DatapathError, map_err};
use crate::policy::compile::Compiled;

impl Datapath {
    /// The set the next `apply` writes.
    pub fn next_set(&self) -> u32 {
        if self.generation == 0 {
            self.active_set
        } else {
            1 - self.active_set
        }
    }

    /// Installs `c` and makes it active; returns its generation.
    pub fn apply(
        &mut self,
        c: &Compiled,
        ifindex: impl Fn(&str) -> Option<u32>,
    ) -> Result<u32, DatapathError> {
        let set = self.next_set();
        let generation = self.generation + 1;
        let s = set as u8;
        // Resolve interfaces first: nothing is written if one is missing.
        let mut ifaces = Vec::with_capacity(c.ifaces.len());
        for (name, vlan, zone) in &c.ifaces {
            let idx = ifindex(name).ok_or_else(|| DatapathError::NoInterface(name.clone()))?;
            ifaces.push((
                IfaceKey {
                    ifindex: idx,
                    vlan: *vlan,
                    set: s,
                    _pad: 0,
                },
                *zone,
            ));
        }
        self.clear_set(s)?;
        let m = &mut self.maps;

        for (k, zone) in ifaces {
            m.ifaces
                .insert(k, IfaceInfo { zone, _pad: [0; 3] }, 0)
                .map_err(map_err(MAP_IFACES))?;
        }
        for (role, net, class) in &c.addrs {
            match net {
                IpNet::V4(n) => {
                    let key = Key::new(
                        ADDR_KEY_PREFIX_BITS + n.prefix_len() as u32,
                        Addr4Key {
                            set: s,
                            role: *role,
                            addr: n.network().octets(),
                        },
                    );
                    m.addr4.insert(&key, class, 0).map_err(map_err(MAP_ADDR4))?;
                }
                IpNet::V6(n) => {
                    let key = Key::new(
                        ADDR_KEY_PREFIX_BITS + n.prefix_len() as u32,
                        Addr6Key {
                            set: s,
                            role: *role,
                            addr: n.network().octets(),
                        },
                    );
                    m.addr6.insert(&key, class, 0).map_err(map_err(MAP_ADDR6))?;
                }
            }
        }
        for (udp, table) in c.ports.iter().enumerate() {
            for (port, class) in table.iter().enumerate() {
                m.ports
                    .set(port_index(set, udp == 1, port as u16), class, 0)
                    .map_err(map_err(MAP_PORTS))?;
            }
        }
        for (i, info) in c.rule_info.iter().enumerate() {
            let idx = set * MAX_RULES + i as u32;
            m.rule_info
                .set(idx, info, 0)
                .map_err(map_err(MAP_RULEINFO))?;
            m.rule_stats
                .set(idx, super::stats::zeros()?, 0)
                .map_err(map_err(MAP_RULE_STATS))?;
        }
        for (key, cands) in &c.rules {
            let key = RuleKey { set: s, ..*key };
            m.rules.insert(key, cands, 0).map_err(map_err(MAP_RULES))?;
        }
        for (rule, mac) in &c.rule_macs {
            m.rule_macs
                .insert(
                    MacKey {
                        rule: *rule,
                        mac: *mac,
                        set: s,
                        _pad: 0,
                    },
                    1,
                    0,
                )
                .map_err(map_err(MAP_RULEMACS))?;
        }
        for from in 0..MAX_ZONES as u8 {
            for to in 0..MAX_ZONES as u8 {
                for v in Verdict::ALL {
                    m.zone_stats
                        .set(
                            zone_stat_index(set, from, to, v as u8),
                            super::stats::zeros()?,
                            0,
                        )
                        .map_err(map_err(MAP_ZONE_STATS))?;
                }
            }
        }
        m.setconf
            .set(
                set,
                SetConfig {
                    generation,
                    flags: c.flags,
                },
                0,
            )
            .map_err(map_err(MAP_SETCONF))?;
        // The switch: one aligned 4-byte store that every packet reads once.
        m.active.set(0, set, 0).map_err(map_err(MAP_ACTIVE))?;
        self.active_set = set;
        self.generation = generation;
        Ok(generation)
    }

    /// Removes every policy entry of set `s` (the inactive one).
    fn clear_set(&mut self, s: u8) -> Result<(), DatapathError> {
        let m = &mut self.maps;
        let keys: Vec<_> = m
            .ifaces
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.set == s)
            .collect();
        for k in keys {
            m.ifaces.remove(&k).map_err(map_err(MAP_IFACES))?;
        }
        let keys: Vec<_> = m
            .addr4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data().set == s)
            .collect();
        for k in keys {
            m.addr4.remove(&k).map_err(map_err(MAP_ADDR4))?;
        }
        let keys: Vec<_> = m
            .addr6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data().set == s)
            .collect();
        for k in keys {
            m.addr6.remove(&k).map_err(map_err(MAP_ADDR6))?;
        }
        let keys: Vec<_> = m
            .rules
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.set == s)
            .collect();
        for k in keys {
            m.rules.remove(&k).map_err(map_err(MAP_RULES))?;
        }
        let keys: Vec<_> = m
            .rule_macs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.set == s)
            .collect();
        for k in keys {
            m.rule_macs.remove(&k).map_err(map_err(MAP_RULEMACS))?;
        }
        Ok(())
    }
}

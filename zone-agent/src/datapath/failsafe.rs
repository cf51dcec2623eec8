//! Install the failsafe tables. They are global (not per policy set): new entries are
//! written before stale ones are removed, so a flow that stays failsafe never misses.

use std::collections::BTreeMap;

use aya::maps::lpm_trie::Key;
use zone_agent_common::*;

use super::{Datapath, DatapathError, map_err};

/// What the failsafe maps hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailsafeTables {
    /// `ZA_FSPORTS` words (index → bits), only non-zero ones.
    pub ports: BTreeMap<u32, u64>,
    /// `ZA_FAILSAFE`: destination key → mask of entries.
    pub dst: BTreeMap<(u32, u16, u8, u8, [u8; 16]), u32>,
    /// `ZA_FSSRC`: (family, address, prefix bits) → mask of every entry with a source prefix
    /// that contains this one (an LPM lookup returns only the longest match, so nested
    /// prefixes of different entries must carry each other's bits).
    pub src: BTreeMap<(u8, [u8; 16], u8), u32>,
}

impl Datapath {
    pub fn install_failsafe(&mut self, t: &FailsafeTables) -> Result<(), DatapathError> {
        let m = &mut self.maps;
        for (&(family, addr, bits), mask) in &t.src {
            let key = Key::new(8 + bits as u32, FailsafeSrcKey { family, addr });
            m.failsafe_src
                .insert(&key, mask, 0)
                .map_err(map_err(MAP_FAILSAFE_SRC))?;
        }
        for (&(ifindex, port, proto, family, addr), mask) in &t.dst {
            let key = FailsafeKey {
                ifindex,
                port,
                proto,
                family,
                addr,
            };
            m.failsafe
                .insert(key, mask, 0)
                .map_err(map_err(MAP_FAILSAFE))?;
        }
        // Ports last: until a port's bit is set the program does not look further. New bits
        // now; bits no longer wanted are cleared after the tables are trimmed.
        let have: Vec<u64> = (0..CAP_FAILSAFE_PORTS)
            .map(|w| {
                m.failsafe_ports
                    .get(&w, 0)
                    .map_err(map_err(MAP_FAILSAFE_PORTS))
            })
            .collect::<Result<_, _>>()?;
        for (word, &had) in (0..CAP_FAILSAFE_PORTS).zip(&have) {
            let want = t.ports.get(&word).copied().unwrap_or(0);
            if want & !had != 0 {
                m.failsafe_ports
                    .set(word, want | had, 0)
                    .map_err(map_err(MAP_FAILSAFE_PORTS))?;
            }
        }
        let stale: Vec<_> = m
            .failsafe
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !t.dst
                    .contains_key(&(k.ifindex, k.port, k.proto, k.family, k.addr))
            })
            .collect();
        for k in stale {
            m.failsafe.remove(&k).map_err(map_err(MAP_FAILSAFE))?;
        }
        let stale: Vec<_> = m
            .failsafe_src
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let d = k.data();
                !t.src
                    .contains_key(&(d.family, d.addr, (k.prefix_len() - 8) as u8))
            })
            .collect();
        for k in stale {
            m.failsafe_src
                .remove(&k)
                .map_err(map_err(MAP_FAILSAFE_SRC))?;
        }
        for (word, &had) in (0..CAP_FAILSAFE_PORTS).zip(&have) {
            let want = t.ports.get(&word).copied().unwrap_or(0);
            if want != had | want {
                m.failsafe_ports
                    .set(word, want, 0)
                    .map_err(map_err(MAP_FAILSAFE_PORTS))?;
            }
        }
        Ok(())
    }
}

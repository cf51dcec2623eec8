//! Failsafe management flows (like Calico's failsafe ports): TCP/UDP from admin subnets to
//! the gateway's own addresses, which pass before any policy step, so that no policy
//! mistake (a wrong zone network, `intra_zone = "deny"`, a missing rule) can lock the
//! operator out of the gateway. They come from the agent's configuration, never from the
//! policy, and only ever reach the gateway itself, never a host behind it.
//!
//! config (`[[failsafe]]`) → `resolve` (interfaces → ifindex, the gateway's addresses) →
//! `tables` (what the data path's maps hold, [`Tables`]). The model's statement of the same
//! decision, [`matches`], lives with the model (below config), as does [`Resolved`].

use std::{collections::BTreeSet, net::IpAddr};

use ipnet::IpNet;
use zone_agent_common::*;

use crate::config::Failsafe;
pub use crate::datapath::FailsafeTables as Tables;
pub use crate::policy::model::{FailsafeEntry as Resolved, failsafe_matches as matches};

/// Why a failsafe entry cannot be bound to this host.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("failsafe {entry:?}: interface {interface:?} does not exist on this host")]
    NoInterface { entry: String, interface: String },
    #[error(
        "failsafe {entry:?}: destination {destination} is not an address of this gateway (failsafe flows only reach the gateway itself)"
    )]
    NotLocal { entry: String, destination: IpAddr },
}

/// Binds `entries` to this host. `zone_ifaces`: the interfaces the program is attached to
/// (the default for an entry without `interfaces`); `local`: the gateway's addresses.
pub fn resolve(
    entries: &[Failsafe],
    zone_ifaces: &BTreeSet<String>,
    ifindex: impl Fn(&str) -> Option<u32>,
    local: &BTreeSet<IpAddr>,
) -> Result<Vec<Resolved>, ResolveError> {
    let mut out = Vec::new();
    for e in entries {
        let names: Vec<String> = if e.interfaces.is_empty() {
            zone_ifaces.iter().cloned().collect()
        } else {
            e.interfaces.clone()
        };
        let mut interfaces = Vec::new();
        for n in names {
            let idx = ifindex(&n).ok_or_else(|| ResolveError::NoInterface {
                entry: e.name.clone(),
                interface: n.clone(),
            })?;
            interfaces.push((n, idx));
        }
        let destinations: Vec<IpAddr> = if e.destinations.is_empty() {
            local.iter().copied().collect()
        } else {
            for d in &e.destinations {
                if !local.contains(d) {
                    return Err(ResolveError::NotLocal {
                        entry: e.name.clone(),
                        destination: *d,
                    });
                }
            }
            e.destinations.clone()
        };
        out.push(Resolved {
            name: e.name.clone(),
            interfaces,
            proto: e.proto,
            ports: e.ports.clone(),
            sources: e.sources.clone(),
            destinations,
        });
    }
    Ok(out)
}

/// The gateway's own unicast addresses (loopback excluded: nothing legitimate arrives on a
/// zone interface for 127.0.0.1 or ::1).
pub fn local_addresses() -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            let addr = match fam {
                libc::AF_INET => {
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if let Some(a) = addr.filter(|a| !a.is_loopback()) {
                out.insert(a);
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

fn family_and_bytes(a: IpAddr) -> (u8, [u8; 16]) {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (FAMILY_V4, b)
        }
        IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

pub fn tables(entries: &[Resolved]) -> Tables {
    let mut t = Tables::default();
    for (i, e) in entries.iter().enumerate().take(MAX_FAILSAFE) {
        let bit = 1u32 << i;
        for &(a, b) in &e.ports {
            for port in a..=b {
                let (word, mask) = failsafe_port_slot(e.proto == PROTO_UDP, port);
                *t.ports.entry(word).or_default() |= mask;
                for (_, idx) in &e.interfaces {
                    for d in &e.destinations {
                        let (family, addr) = family_and_bytes(*d);
                        *t.dst
                            .entry((*idx, port, e.proto, family, addr))
                            .or_default() |= bit;
                    }
                }
            }
        }
    }
    let all: Vec<IpNet> = entries
        .iter()
        .flat_map(|e| e.sources.iter().copied())
        .collect();
    for p in &all {
        let mut mask = 0;
        for (i, e) in entries.iter().enumerate().take(MAX_FAILSAFE) {
            if e.sources.iter().any(|q| q.contains(p)) {
                mask |= 1u32 << i;
            }
        }
        let (family, addr) = family_and_bytes(p.network());
        t.src.insert((family, addr, p.prefix_len()), mask);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Packet;

    fn entry(name: &str, ports: (u16, u16), sources: &[&str], ifaces: &[&str]) -> Failsafe {
        Failsafe {
            name: name.into(),
            proto: PROTO_TCP,
            ports: vec![ports],
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            destinations: vec![],
        }
    }

    #[test]
    fn resolves_defaults_and_rejects_foreign_destinations() {
        let local: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into();
        let zones: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let idx = |n: &str| match n {
            "a" => Some(1),
            "b" => Some(2),
            _ => None,
        };
        let r = resolve(
            &[entry("ssh", (22, 22), &["192.0.2.0/24"], &[])],
            &zones,
            idx,
            &local,
        )
        .unwrap();
        assert_eq!(r[0].interfaces, vec![("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(
            r[0].destinations,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let mut far = entry("ssh", (22, 22), &["192.0.2.0/24"], &[]);
        far.destinations = vec!["10.9.9.9".parse().unwrap()];
        assert!(
            resolve(&[far], &zones, idx, &local)
                .unwrap_err()
                .to_string()
                .contains("not an address of this gateway")
        );
        let e = resolve(
            &[entry("x", (22, 22), &["192.0.2.0/24"], &["zz"])],
            &zones,
            idx,
            &local,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"zz\" does not exist"), "{e}");
    }

    #[test]
    fn nested_sources_carry_every_entry() {
        let local: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into();
        let zones: BTreeSet<String> = ["a".to_string()].into();
        let es = [
            entry("wide", (22, 22), &["192.0.2.0/24"], &[]),
            entry("narrow", (443, 443), &["192.0.2.8/29"], &[]),
        ];
        let r = resolve(&es, &zones, |_| Some(7), &local).unwrap();
        let t = tables(&r);
        let narrow = t
            .src
            .get(&(
                FAMILY_V4,
                [192, 0, 2, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                29,
            ))
            .unwrap();
        assert_eq!(*narrow, 0b11, "a host in the /29 is also in the /24");
        let wide = t
            .src
            .get(&(
                FAMILY_V4,
                [192, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                24,
            ))
            .unwrap();
        assert_eq!(*wide, 0b01);
        let dst22 = t.dst.get(&(
            7,
            22,
            PROTO_TCP,
            FAMILY_V4,
            [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ));
        assert_eq!(dst22, Some(&0b01));
        // A /29 host may use port 443, a /24 host outside it may not.
        let m = |src: &str, port| {
            matches(
                &r,
                &Packet::new(
                    "a",
                    src.parse().unwrap(),
                    "10.0.0.1".parse().unwrap(),
                    PROTO_TCP,
                    40000,
                    port,
                ),
            )
        };
        assert_eq!(m("192.0.2.9", 443), Some(1));
        assert_eq!(m("192.0.2.100", 443), None);
        assert_eq!(m("192.0.2.100", 22), Some(0));
        assert_eq!(m("198.51.100.1", 22), None);
    }
}

//! The two runs: the same sequence, each time into a fresh lab, once under nftables and once
//! under the agent.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enforcer {
    Nft,
    Agent,
}

/// A fresh lab: the hosts silent receivers, the gateway routing every place to its host.
pub(crate) fn lab(name: &str) -> (Lab, Vec<Host>) {
    let mut lab = Lab::new(name);
    let hosts: Vec<Host> = HOSTS.iter().map(|zone| lab.add_host(zone.host())).collect();
    for h in &hosts {
        oracle::sink(&lab, h);
    }
    for (cidr, h) in ROUTES {
        oracle::route_to(&lab, &hosts[h], cidr);
    }
    for (a, h) in PLACES {
        oracle::pin_neighbour(&lab, &hosts[h], ip(a));
    }
    (lab, hosts)
}

/// Sends `seq` through a fresh lab under `enforcer`, reloading between the phases.
pub(crate) fn run(seq: &Sequence, enforcer: Enforcer) -> oracle::Run {
    let name = format!("nft_oracle_{enforcer:?}_{}", seq.seed).to_lowercase();
    let (lab, hosts) = lab(&name);
    let policy = lab.dir().join("policy.toml");
    std::fs::write(&policy, policy_text(POLICY_A)).expect("write policy");
    let gw = lab.gateway().to_string();
    let mut _agent = None;
    match enforcer {
        Enforcer::Nft => {
            let ruleset = oracle::export_nft(&lab, &policy);
            oracle::nft_file(&lab, &gw, "policy", &ruleset, true);
            oracle::nft_file(&lab, &gw, "policy", &ruleset, false);
            // Conntrack is loaded now. A closed connection lingers 10 s by default; 1 s lets
            // the test see, after a short wait, whether a forged RST closed one.
            lab.sysctls(
                &gw,
                &[("net.netfilter.nf_conntrack_tcp_timeout_close", "1")],
            );
        }
        Enforcer::Agent => _agent = Some(zone_agent_lab::agent::start_file(&lab, &policy)),
    }
    let phases: Vec<Vec<Crafted>> = (1..=PLAN.len() + 1)
        .map(|k| {
            seq.packets
                .iter()
                .filter(|p| usize::from(p.phase) == k)
                .map(|p| p.c.clone())
                .collect()
        })
        .collect();
    let run = oracle::send_and_capture(&lab, &hosts, &phases, |k| match PLAN[k - 1] {
        // The wait is the point here: a timeout has to run out.
        Boundary::Wait => std::thread::sleep(WAIT),
        Boundary::Reload(text) => {
            // Renamed into place: the agent's file watcher never reads half a file.
            let tmp = policy.with_extension("tmp");
            std::fs::write(&tmp, policy_text(text)).expect("write the next policy");
            std::fs::rename(&tmp, &policy).expect("next policy in place");
            match enforcer {
                Enforcer::Nft => {
                    let ruleset = oracle::export_nft(&lab, &policy);
                    oracle::nft_file(&lab, &gw, "policy", &ruleset, true);
                    oracle::nft_file(&lab, &gw, "policy", &ruleset, false);
                }
                Enforcer::Agent => oracle::reload_agent(&lab),
            }
        }
    });
    // Each packet can only have arrived where the gateway routes its destination.
    for p in phases.iter().flatten() {
        for h in &run.seen[&p.marker] {
            assert_eq!(
                *h,
                host_of(p.dst),
                "#{} arrived at host {h}, not where it is routed",
                p.marker
            );
        }
    }
    // The shortest idle timeout on either side is a closed TCP flow's (zone-agent): a
    // sequence that took longer could see flows expire in one run and not in the other.
    eprintln!(
        "nft_oracle: {enforcer:?} run of seed {}: sent in {:.1?}",
        seq.seed, run.span
    );
    assert!(
        run.span.as_nanos() < u128::from(FLOW_TCP_CLOSING_NS),
        "{enforcer:?} run of seed {} took {:?}: flows may have expired",
        seq.seed,
        run.span
    );
    if enforcer == Enforcer::Nft {
        // The counters show the ruleset itself decided (a broken ruleset would drop all).
        let counters = lab.run_ok(&gw, &["nft", "list", "table", "inet", "zone_agent"]);
        assert!(
            counters.contains("counter packets"),
            "nft ruleset has no counters:\n{counters}"
        );
    }
    run
}

pub(crate) fn outcome_label(d: &Decision) -> String {
    match d.outcome {
        Outcome::Pass(r) => format!("pass {}", r.label()),
        Outcome::Drop(r) => format!("drop {}", r.label()),
    }
}

pub(crate) fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

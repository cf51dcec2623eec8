//! `cargo xtask demo`: three zones (マイナンバー利用事務系, LGWAN接続系, インターネット接続系)
//! as network namespaces behind a gateway namespace, zone-agent enforcing a small policy on
//! the gateway, and real traffic that the policy allows or blocks. Each attempt prints what
//! was observed and what the policy expects; the demo fails if any differs.
//!
//! Every address is private or a documentation prefix and lives only inside the lab's
//! namespaces; nothing is created in, or attached to, the host's own network namespace.
//! `--no-agent` runs the same traffic without the agent (everything must then pass), which
//! checks the lab itself. `ZONE_AGENT_BIN=<path>` runs that binary instead of building one.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use zone_agent_lab::agent::{self, METRICS_ADDR};
use zone_agent_lab::fixture::{INTERNET, LGWAN, MYNUMBER, Zone};
use zone_agent_lab::{
    ChildGuard, Host, HostSpec, Lab, ThreeZones, add_addr, ping, port_scan, scrape, tcp_connect,
    tcp_listen, udp_echo, udp_exchange,
};

use crate::{Workspace, build, is_root, setup, step};

/// Bound for the agent to exit after SIGTERM.
const AGENT_STOP: Duration = Duration::from_secs(10);
/// Per attempt: a connection or an echo that has not come back by then is blocked.
const ATTEMPT: Duration = Duration::from_secs(2);
/// Ports the scan tries, and the listeners on the scanned (lgwan) host.
const SCAN_PORTS: std::ops::RangeInclusive<u16> = 1..=1024;
const LGWAN_LISTENERS: [u16; 4] = [22, 25, 80, 445];

/// The demo's rules (SPEC §3).
const RULES: &str = r#"[[rules]]
name = "lgwan-relay-to-mynumber"
description = "LGWAN relay host -> マイナンバー系 import over HTTPS, from the relay only"
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]
sources = ["10.20.0.10/32", "fd20::10/128"]

[[rules]]
name = "internet-mail-in"
description = "inbound mail to the LGWAN-side mail relay (無害化 happens there)"
from = "internet"
to = "lgwan"
protocol = "tcp"
ports = ["25"]

[[rules]]
name = "lgwan-web-out"
description = "LGWAN side to the web, through the segment's proxy"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80", "443"]

[[rules]]
name = "lgwan-dns-out"
description = "DNS lookups from the LGWAN side"
from = "lgwan"
to = "internet"
protocol = "udp"
ports = ["53"]
"#;

/// The internet zone of the demo: its own prefixes (everything else is in no zone).
const INTERNET_NETWORKS: [&str; 2] = ["198.51.100.0/24", "2001:db8:100::/48"];

/// The policy the demo enforces: the lab's three zones (SPEC §3), with labels, and [`RULES`];
/// interface names are the gateway's veth ends.
fn policy_text() -> String {
    ThreeZones::policy()
        .comment("zone-agent demo policy: three segments of 三層の対策 behind one gateway.")
        .labels()
        .networks("internet", &INTERNET_NETWORKS)
        .rules(RULES)
        .build()
}

#[derive(clap::Args)]
pub struct Args {
    /// Leave the lab (namespaces, agent, servers) running afterwards and print how to clean up.
    #[arg(long)]
    keep: bool,
    /// Run the traffic without the agent: every attempt must then pass (checks the lab).
    #[arg(long)]
    no_agent: bool,
}

pub fn run(ws: &Workspace, args: &Args) -> Result<()> {
    if !is_root() {
        bail!(
            "the demo creates network namespaces and attaches XDP: run it as root \
             (`sudo -E cargo xtask demo`)"
        );
    }
    setup::run(ws)?;
    let agent = match std::env::var_os(zone_agent_lab::AGENT_BIN_ENV) {
        _ if args.no_agent => None,
        Some(bin) => {
            println!(
                "    using {}={}",
                zone_agent_lab::AGENT_BIN_ENV,
                bin.to_string_lossy()
            );
            Some(std::path::PathBuf::from(bin))
        }
        None => Some(build::agent(ws, true)?),
    };
    on_interrupt_stop_between_steps()?;
    // The lab panics on a broken lab (with the command and its output); its Drop still tears
    // everything down while unwinding. Turn that into an ordinary error here.
    match catch_unwind(AssertUnwindSafe(|| demo(args, agent.as_deref()))) {
        Ok(result) => result,
        Err(_) => bail!("the demo lab failed (panic message above); the lab was torn down"),
    }
}

fn demo(args: &Args, agent_bin: Option<&Path>) -> Result<()> {
    step("demo: building the lab (a gateway namespace and one host namespace per zone)");
    let mut lab = Lab::new("demo");
    let my = lab.add_host(spec(&MYNUMBER));
    let lg = lab.add_host(spec(&LGWAN));
    let inet = lab.add_host(HostSpec {
        v6: "2001:db8:100::10/64".into(),
        gw_v6: "2001:db8:100::1/64".into(),
        ..spec(&INTERNET)
    });
    // A second LGWAN address that the relay rule does not list.
    let lg_other = add_addr(&lab, &lg, "10.20.0.11/16");
    println!("    gateway   {}", lab.gateway());
    for h in [&my, &lg, &inet] {
        println!(
            "    {:<9} {:<20} {} {} (gateway side: {})",
            h.zone, h.ns, h.v4, h.v6, h.gw_iface
        );
    }

    let servers = start_servers(&lab, &my, &lg, &inet);
    let policy = lab.dir().join("policy.toml");
    fs::write(&policy, policy_text())
        .with_context(|| format!("cannot write {}", policy.display()))?;
    println!("    policy    {}", policy.display());
    check_interrupt()?;

    let mut agent = match agent_bin {
        Some(bin) => Some(start_agent(&lab, bin, &policy)?),
        None => {
            println!("    --no-agent: the gateway only routes; every attempt must pass");
            None
        }
    };

    step("demo: traffic (observed verdict, then what the policy expects)");
    let mut report = Report {
        enforcing: agent.is_some(),
        checks: 0,
        mismatches: Vec::new(),
    };
    let tcp = |from: &Host, src: Option<IpAddr>, to: &Host, v6: bool, port: u16| {
        let dst = to.addr(v6);
        let what = format!(
            "{} {} -> {} {} tcp/{port}",
            from.zone,
            src.unwrap_or(from.addr(v6)),
            to.zone,
            dst
        );
        (
            what,
            Verdict::from(tcp_connect(&lab, from, dst, port, src, ATTEMPT)),
        )
    };

    let (what, seen) = tcp(&lg, None, &my, false, 443);
    report.record(
        &what,
        seen,
        Verdict::Allowed,
        "rule lgwan-relay-to-mynumber",
    );
    let (what, seen) = tcp(&lg, None, &my, true, 443);
    report.record(
        &what,
        seen,
        Verdict::Allowed,
        "rule lgwan-relay-to-mynumber (IPv6)",
    );
    let (what, seen) = tcp(&lg, Some(lg_other), &my, false, 443);
    report.record(
        &what,
        seen,
        Verdict::Blocked,
        "source not in the rule's sources",
    );
    let (what, seen) = tcp(&lg, None, &my, false, 22);
    report.record(&what, seen, Verdict::Blocked, "no rule for tcp/22");
    check_interrupt()?;
    let (what, seen) = tcp(&my, None, &inet, false, 80);
    report.record(
        &what,
        seen,
        Verdict::Blocked,
        "forbidden direction: mynumber -> internet",
    );
    let (what, seen) = tcp(&lg, None, &inet, false, 80);
    report.record(&what, seen, Verdict::Allowed, "rule lgwan-web-out");
    let (what, seen) = tcp(&lg, None, &inet, true, 443);
    report.record(&what, seen, Verdict::Allowed, "rule lgwan-web-out (IPv6)");
    let (what, seen) = tcp(&inet, None, &lg, false, 25);
    report.record(&what, seen, Verdict::Allowed, "rule internet-mail-in");
    check_interrupt()?;

    let echoes = udp_exchange(&lab, &lg, inet.v4, 53, 3, None, ATTEMPT);
    report.record(
        &format!(
            "lgwan {} -> internet {} udp/53 x3 ({echoes}/3 echoed)",
            lg.v4, inet.v4
        ),
        Verdict::of_count(echoes, 3),
        Verdict::Allowed,
        "rule lgwan-dns-out",
    );
    let echoes = udp_exchange(&lab, &lg, inet.v4, 123, 1, None, ATTEMPT);
    report.record(
        &format!("lgwan {} -> internet {} udp/123", lg.v4, inet.v4),
        Verdict::of_count(echoes, 1),
        Verdict::Blocked,
        "no rule for udp/123",
    );

    // Spoofed source: the lgwan host claims a mynumber address. Whether it got through is
    // read from the DNS server's own log (its echo goes to the real owner, not back here).
    let spoofed: IpAddr = "10.10.0.99".parse().expect("literal address");
    udp_exchange(&lab, &lg, inet.v4, 53, 1, Some(spoofed), ATTEMPT);
    let arrived = servers
        .inet_dns
        .log_text()
        .contains(&format!("recv {spoofed} "));
    report.record(
        &format!("lgwan, spoofing {spoofed} -> internet {} udp/53", inet.v4),
        Verdict::from(arrived),
        Verdict::Blocked,
        "spoofed source: 10.10.0.99 belongs to mynumber",
    );

    let replies = ping(&lab, &lg, my.v4, 3);
    report.record(
        &format!(
            "lgwan {} -> mynumber {} ping x3 ({replies}/3 replies)",
            lg.v4, my.v4
        ),
        Verdict::of_count(replies, 3),
        Verdict::Blocked,
        "no icmp rule",
    );
    check_interrupt()?;

    let open = port_scan(&lab, &inet, lg.v4, SCAN_PORTS, ATTEMPT);
    let expected_open = if report.enforcing {
        vec![25]
    } else {
        LGWAN_LISTENERS.to_vec()
    };
    report.check(
        &format!(
            "port scan internet {} -> lgwan {} tcp/{}-{}: open {open:?}",
            inet.v4,
            lg.v4,
            SCAN_PORTS.start(),
            SCAN_PORTS.end()
        ),
        open == expected_open,
        &format!("open {expected_open:?} (listening: {LGWAN_LISTENERS:?}; rule internet-mail-in)"),
    );

    if let (Some(agent), Some(bin)) = (agent.as_mut(), agent_bin) {
        show_metrics(&lab, &mut report);
        show_page(&lab, &mut report);
        step("demo: zone-agent policy explain");
        explain(&lab, bin, &policy, &lg, &my, 443);
        explain(&lab, bin, &policy, &lg, &my, 22);
        let state = lab.dir().join("state");
        let pins = lab.bpffs().join("zone-agent");
        step("demo: zone-agent status (over the admin socket)");
        let argv = [s(bin), "status", "--state-dir", s(&state)];
        println!("    $ zone-agent {}", argv[1..].join(" "));
        print_output(&lab.run(lab.gateway(), &argv));
        if !args.keep {
            step("demo: stopping zone-agent (SIGTERM): the policy stays enforcing");
            agent.signal(Signal::SIGTERM);
            match agent.wait_exit(AGENT_STOP) {
                Some(status) => report.check(
                    &format!("zone-agent exit after SIGTERM ({status})"),
                    status.success(),
                    "a clean exit",
                ),
                None => report.check("zone-agent exit after SIGTERM", false, "exit within 10 s"),
            }
            let what = format!(
                "lgwan {} -> mynumber {} tcp/22, agent stopped",
                lg.v4, my.v4
            );
            let passed = tcp_connect(&lab, &lg, my.v4, 22, None, ATTEMPT);
            report.check(
                &what,
                !passed,
                "still blocked: enforcement is pinned, it outlives the agent",
            );
            let allowed = tcp_connect(&lab, &lg, my.v4, 443, None, ATTEMPT);
            report.check(
                &format!(
                    "lgwan {} -> mynumber {} tcp/443, agent stopped",
                    lg.v4, my.v4
                ),
                allowed,
                "still allowed (rule lgwan-relay-to-mynumber)",
            );
            step("demo: zone-agent detach (the one way to remove enforcement)");
            let argv = [
                s(bin),
                "detach",
                "--pin-dir",
                s(&pins),
                "--state-dir",
                s(&state),
            ];
            println!("    $ zone-agent {}", argv[1..].join(" "));
            let out = lab.run(lab.gateway(), &argv);
            print_output(&out);
            report.check("zone-agent detach", out.status.success(), "exit 0");
            let passed = tcp_connect(&lab, &lg, my.v4, 22, None, ATTEMPT);
            report.check(
                &format!("lgwan {} -> mynumber {} tcp/22 after detach", lg.v4, my.v4),
                passed,
                "passes: the gateway routes unfiltered",
            );
        }
    }

    if args.keep {
        keep(&mut lab, agent, servers);
    } else {
        step("demo: tearing the lab down");
        drop(servers);
        drop(agent);
        drop(lab);
    }

    step("demo: result");
    if report.mismatches.is_empty() {
        println!("    all {} checks match the expectation", report.checks);
        Ok(())
    } else {
        for m in &report.mismatches {
            println!("    MISMATCH {m}");
        }
        bail!(
            "{} of {} checks differ from the expectation",
            report.mismatches.len(),
            report.checks
        )
    }
}

/// The fixture's host of `zone`, the gateway end's MAC pinned.
fn spec(zone: &Zone) -> HostSpec {
    HostSpec {
        gw_mac: zone.gw_mac.into(),
        ..zone.host()
    }
}

/// The servers the attempts talk to; dropping it stops them all.
struct Servers {
    inet_dns: ChildGuard,
    others: Vec<ChildGuard>,
}

fn start_servers(lab: &Lab, my: &Host, lg: &Host, inet: &Host) -> Servers {
    let mut others = vec![
        tcp_listen(lab, my, 443, false),
        tcp_listen(lab, my, 443, true),
        tcp_listen(lab, my, 22, false),
        tcp_listen(lab, inet, 80, false),
        tcp_listen(lab, inet, 443, true),
        udp_echo(lab, inet, 123, false),
    ];
    others.extend(
        LGWAN_LISTENERS
            .iter()
            .map(|&port| tcp_listen(lab, lg, port, false)),
    );
    Servers {
        inet_dns: udp_echo(lab, inet, 53, false),
        others,
    }
}

fn start_agent(lab: &Lab, bin: &Path, policy: &Path) -> Result<ChildGuard> {
    let gw = lab.gateway();
    step("demo: zone-agent policy check");
    let out = lab.run(gw, &[s(bin), "policy", "check", s(policy)]);
    print_output(&out);
    if !out.status.success() {
        bail!(
            "`zone-agent policy check` rejected the demo policy ({})",
            out.status
        );
    }

    step("demo: starting zone-agent in the gateway namespace");
    // `ip netns exec` remounts /sys, so /sys/fs/bpf is no bpffs in there: pin in the lab's own.
    let pins = agent::pin_dir(lab);
    fs::create_dir_all(&pins).with_context(|| format!("cannot create {}", pins.display()))?;
    let start = agent::Start::new(lab, policy).bin(bin);
    println!("    ip netns exec {gw} {}", start.argv().join(" "));
    let mut agent = start.spawn();
    let ready = start.wait_ready(&mut agent, check_interrupt)?;
    let took = match ready {
        Ok(took) => took,
        Err(failure) => {
            // The lab dir goes with the lab: keep the whole log where the user can read it.
            let saved = std::env::temp_dir().join("zone-agent-demo-agent.log");
            let kept = fs::copy(agent.log(), &saved).is_ok();
            bail!(
                "{failure}; its log{}:\n{}",
                if kept {
                    format!(" (all of it in {})", saved.display())
                } else {
                    String::new()
                },
                excerpt(&agent.log_text(), 8, 12)
            );
        }
    };
    println!(
        "    zone-agent is up after {:.1} s (pid {}, log {})",
        took.as_secs_f64(),
        agent.pid(),
        agent.log().display()
    );
    Ok(agent)
}

/// Prints the `zone_agent_*` samples and checks the exposition with `promtool check metrics`.
fn show_metrics(lab: &Lab, report: &mut Report) {
    step(&format!(
        "demo: zone_agent_* metrics (curl http://{METRICS_ADDR}/metrics in the gateway)"
    ));
    let Some(text) = scrape::metrics(lab, lab.gateway(), METRICS_ADDR) else {
        report.check("GET /metrics after the traffic", false, "an answer");
        return;
    };
    for line in text.lines().filter(|l| l.starts_with("zone_agent_")) {
        println!("    {line}");
    }
    match zone_agent_lab::scrape::promtool_check(&text) {
        Ok(()) => report.check("promtool check metrics", true, "no problems"),
        Err(problems) => {
            for line in problems.lines() {
                println!("    | {line}");
            }
            report.check("promtool check metrics", false, "no problems");
        }
    }
}

/// The operator's page: `GET /` serves the HTML document, and headless Chromium (in the
/// gateway) renders it with the zones' names and Japanese labels.
fn show_page(lab: &Lab, report: &mut Report) {
    let url = format!("http://{METRICS_ADDR}/");
    step(&format!("demo: the operator's page ({url} in the gateway)"));
    let html = scrape::http_get(lab, lab.gateway(), &url, Duration::from_secs(3));
    report.check(
        "GET / serves the operator's page",
        html.is_some_and(|h| h.starts_with("<!DOCTYPE html>")),
        "an HTML document",
    );
    let dom = zone_agent_lab::browser::dump_dom(lab, lab.gateway(), &url);
    let zones = [MYNUMBER, LGWAN, INTERNET];
    let missing: Vec<&str> = zones
        .iter()
        .flat_map(|z| [z.name, z.label])
        .filter(|text| !dom.contains(text))
        .collect();
    println!(
        "    rendered {} bytes of DOM; zones shown: {}",
        dom.len(),
        zones
            .map(|z| format!("{} ({})", z.name, z.label))
            .join(", ")
    );
    report.check(
        &format!("the page in headless Chromium shows the zones (missing: {missing:?})"),
        missing.is_empty(),
        "every zone name and label",
    );
}

fn explain(lab: &Lab, bin: &Path, policy: &Path, from: &Host, to: &Host, port: u16) {
    let (src, dst, port) = (from.v4.to_string(), to.v4.to_string(), port.to_string());
    let argv = [
        s(bin),
        "policy",
        "explain",
        s(policy),
        "--in",
        &from.gw_iface,
        "--src",
        &src,
        "--dst",
        &dst,
        "--proto",
        "tcp",
        "--dport",
        &port,
        "--src-mac",
        &from.mac,
    ];
    println!("    $ zone-agent {}", argv[1..].join(" "));
    print_output(&lab.run(lab.gateway(), &argv));
}

/// `--keep`: leaves everything running and writes a teardown script.
fn keep(lab: &mut Lab, agent: Option<ChildGuard>, servers: Servers) {
    lab.keep();
    for server in servers.others.into_iter().chain([servers.inet_dns]) {
        server.detach();
    }
    if let Some(agent) = agent {
        println!("    zone-agent keeps running as pid {}", agent.detach());
    }
    // Processes are found by namespace, not by pid: a pid may name another process by the
    // time the script runs. SIGTERM first (the agent detaches cleanly), SIGKILL after 3 s.
    let namespaces: Vec<&str> = lab.namespaces().iter().rev().map(String::as_str).collect();
    let dir = lab.dir().display();
    let script = format!(
        r#"#!/bin/sh
# Tears down the lab kept by `cargo xtask demo --keep`.
namespaces="{ns}"
for ns in $namespaces; do ip netns pids "$ns" | xargs -r kill; done
for ns in $namespaces; do
    i=0
    while [ -n "$(ip netns pids "$ns")" ] && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
    ip netns pids "$ns" | xargs -r kill -9
    ip netns delete "$ns"
done
umount {dir}/bpffs 2>/dev/null
rm -rf {dir}
"#,
        ns = namespaces.join(" ")
    );
    let teardown = lab.dir().join("teardown.sh");
    if let Err(err) = fs::write(&teardown, script) {
        eprintln!("xtask: cannot write {}: {err}", teardown.display());
    }
    step("demo: lab kept (--keep)");
    println!("    namespaces: {}", lab.namespaces().join(" "));
    println!(
        "    metrics:    ip netns exec {} curl -s http://{METRICS_ADDR}/metrics",
        lab.gateway()
    );
    println!(
        "    page:       ip netns exec {} chromium http://{METRICS_ADDR}/  (a browser in the gateway's namespace; as root add --no-sandbox)",
        lab.gateway()
    );
    println!(
        "    its JSON:   ip netns exec {} curl -s http://{METRICS_ADDR}/api/v1/overview",
        lab.gateway()
    );
    println!(
        "    a shell:    ip netns exec {} bash",
        lab.namespaces().last().map_or("", String::as_str)
    );
    println!("    logs:       {}", lab.dir().display());
    println!("    tear down:  sh {}", teardown.display());
}

fn print_output(out: &std::process::Output) {
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("    | {line}");
    }
}

/// The first `head` and last `tail` lines of `text` (a verifier log can be megabytes).
fn excerpt(text: &str, head: usize, tail: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= head + tail {
        return lines.join("\n");
    }
    let omitted = format!("[... {} lines omitted ...]", lines.len() - head - tail);
    let mut out: Vec<&str> = lines[..head].to_vec();
    out.push(&omitted);
    out.extend_from_slice(&lines[lines.len() - tail..]);
    out.join("\n")
}

fn s(path: &Path) -> &str {
    path.to_str().expect("lab paths are UTF-8")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Blocked,
    /// Some datagrams or pings came back, not all.
    Partial,
}

impl Verdict {
    fn of_count(got: u32, sent: u32) -> Verdict {
        match got {
            0 => Verdict::Blocked,
            n if n == sent => Verdict::Allowed,
            _ => Verdict::Partial,
        }
    }
}

impl From<bool> for Verdict {
    fn from(passed: bool) -> Verdict {
        if passed {
            Verdict::Allowed
        } else {
            Verdict::Blocked
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Verdict::Allowed => "ALLOWED",
            Verdict::Blocked => "BLOCKED",
            Verdict::Partial => "PARTIAL",
        })
    }
}

struct Report {
    /// With the agent running, the policy's verdict is expected; without it, everything passes.
    enforcing: bool,
    checks: u32,
    mismatches: Vec<String>,
}

impl Report {
    fn record(&mut self, what: &str, seen: Verdict, policy: Verdict, why: &str) {
        let (expected, why) = if self.enforcing {
            (policy, why)
        } else {
            (Verdict::Allowed, "no agent: the gateway routes everything")
        };
        self.checks += 1;
        let ok = seen == expected;
        println!(
            "  {} {seen:<7}  {what:<62} expected {expected} ({why})",
            if ok { "ok  " } else { "FAIL" }
        );
        if !ok {
            self.mismatches
                .push(format!("{what}: {seen}, expected {expected} ({why})"));
        }
    }

    fn check(&mut self, what: &str, ok: bool, expected: &str) {
        self.checks += 1;
        println!(
            "  {} {what}; expected {expected}",
            if ok { "ok  " } else { "FAIL" }
        );
        if !ok {
            self.mismatches.push(format!("{what}; expected {expected}"));
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C stops the demo at the next step boundary, so the lab is still torn down.
fn on_interrupt_stop_between_steps() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGINT, &action) }.context("cannot install the SIGINT handler")?;
    Ok(())
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; tearing the lab down");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_of_counts() {
        assert!(Verdict::of_count(3, 3) == Verdict::Allowed);
        assert!(Verdict::of_count(0, 3) == Verdict::Blocked);
        assert!(Verdict::of_count(1, 3) == Verdict::Partial);
    }

    #[test]
    fn excerpt_keeps_head_and_tail() {
        let text: String = (1..=10).map(|i| format!("{i}\n")).collect();
        assert_eq!(
            excerpt(&text, 2, 2),
            "1\n2\n[... 6 lines omitted ...]\n9\n10"
        );
        assert_eq!(excerpt("a\nb", 2, 2), "a\nb");
    }

    #[test]
    fn demo_policy_is_consistent() {
        let policy: toml::Table = policy_text().parse().expect("the demo policy is TOML");
        let zones = policy["zones"].as_array().unwrap();
        let names: Vec<&str> = zones.iter().map(|z| z["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["mynumber", "lgwan", "internet"]);
        let ifaces: Vec<&str> = zones
            .iter()
            .flat_map(|z| z["interfaces"].as_array().unwrap())
            .map(|i| i.as_str().unwrap())
            .collect();
        assert_eq!(
            ifaces,
            ["zmyn", "zlgw", "zinet"],
            "the lab's gateway interfaces"
        );
        for rule in policy["rules"].as_array().unwrap() {
            for side in ["from", "to"] {
                let zone = rule[side].as_str().unwrap();
                assert!(
                    names.contains(&zone),
                    "rule {} names unknown zone {zone}",
                    rule["name"]
                );
            }
        }
    }
}

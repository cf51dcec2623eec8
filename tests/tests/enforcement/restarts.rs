//! The agent stopping, killed and restarted: enforcement outlives it, a restart adopts the
//! pinned state (or replaces an incompatible one atomically), and reloads under continuous
//! traffic lose nothing.

use super::*;

/// SIGTERM: the agent exits 0 within a few seconds and the policy keeps enforcing (the
/// gates never open because the daemon stopped). `zone-agent detach` is the one way to
/// remove it: afterwards no XDP program and no pin is left, and the gateway routes
/// unfiltered, which the formerly blocked port shows.
#[test]
pub(crate) fn sigterm_keeps_enforcing_until_detach() {
    let mut env = Env::new("sigterm", &policy("enforce"));
    let my_tcp = tcp_servers(&env, &env.my, &[8443, 22]);
    assert_tcp_blocked(
        &env,
        tcp(&env.lg, &env.my, 8443, false),
        &my_tcp[0][0],
        "no_rule",
    );

    let started = Instant::now();
    env.agent.signal(Signal::SIGTERM);
    let status = env.agent.wait_exit(AGENT_STOP).unwrap_or_else(|| {
        panic!(
            "the agent still runs {AGENT_STOP:?} after SIGTERM:\n{}",
            env.agent.log_text()
        )
    });
    assert!(
        status.success(),
        "the agent exited with {status} after SIGTERM:\n{}",
        env.agent.log_text()
    );
    eprintln!("agent stopped {:?} after SIGTERM", started.elapsed());
    assert_enforcing_without_agent(&env, &my_tcp[0][0], &my_tcp[0][1]);

    let out = env.lab.run(
        env.gw(),
        &[
            agent_bin().to_str().unwrap(),
            "detach",
            "--pin-dir",
            pin_dir(&env.lab).to_str().unwrap(),
            "--state-dir",
            state_dir(&env.lab).to_str().unwrap(),
        ],
    );
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zone-agent detach failed: {said}");
    for iface in ZONE_IFACES {
        assert!(said.contains(iface), "detach does not name {iface}: {said}");
        assert!(
            !xdp_attached(&env, iface),
            "an XDP program is still attached to {iface} after detach:\n{}",
            env.lab.ip(env.gw(), &["-d", "link", "show", "dev", iface])
        );
    }
    let left: Vec<_> = walk(&pin_dir(&env.lab));
    assert!(left.is_empty(), "pins left after detach: {left:?}");
    for v6 in [false, true] {
        assert_tcp_passes(
            &env,
            tcp(&env.lg, &env.my, 8443, v6),
            &my_tcp[usize::from(v6)][0],
        );
    }
}

/// Every file below `dir` (pins are files on the bpffs).
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// With no agent running: XDP is still on every zone interface, the forbidden connection
/// (lgwan -> mynumber:8443) is still blocked and never reaches `blocked_server`, and an
/// allowed one (admin-ssh, lgwan -> mynumber:22) still passes.
#[track_caller]
pub(crate) fn assert_enforcing_without_agent(
    env: &Env,
    blocked_server: &ChildGuard,
    ssh_server: &ChildGuard,
) {
    for iface in ZONE_IFACES {
        assert!(
            xdp_attached(env, iface),
            "XDP left {iface} when the agent stopped:\n{}",
            env.lab.ip(env.gw(), &["-d", "link", "show", "dev", iface])
        );
    }
    let t = tcp(&env.lg, &env.my, 8443, false);
    let seen = seen_from(blocked_server, t.src_addr());
    assert!(
        !t.connect(env, T_FAIL),
        "{t} passed while the agent was down: the gate opened"
    );
    assert_eq!(
        seen_from(blocked_server, t.src_addr()),
        seen,
        "{t}: the server saw the SYN"
    );
    let ok = tcp(&env.lg, &env.my, 22, false);
    let seen = seen_from(ssh_server, ok.src_addr());
    assert!(
        ok.connect(env, T),
        "{ok} (allowed) failed while the agent was down"
    );
    assert_eq!(
        seen_from(ssh_server, ok.src_addr()),
        seen + 1,
        "{ok}: the server logged it"
    );
}

/// The ids of the XDP programs `ip -d link show` reports on a gateway interface.
pub(crate) fn xdp_prog_ids(env: &Env, iface: &str) -> Vec<u32> {
    let out = env.lab.ip(env.gw(), &["-d", "link", "show", "dev", iface]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut ids = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if w.starts_with("prog/xdp")
            && words.get(i + 1) == Some(&"id")
            && let Some(id) = words.get(i + 2).and_then(|x| x.parse().ok())
        {
            ids.push(id);
        }
    }
    ids
}

/// True if the kernel still has a BPF program with this id.
pub(crate) fn program_exists(id: u32) -> bool {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .any(|p| p.id() == id)
}

/// `zone-agent <cmd> --json` against the lab's agent, parsed.
pub(crate) fn admin_json(env: &Env, cmd: &str) -> serde_json::Value {
    let out = env.lab.run(
        env.gw(),
        &[
            agent_bin().to_str().unwrap(),
            cmd,
            "--json",
            "--state-dir",
            state_dir(&env.lab).to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "zone-agent {cmd} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("zone-agent {cmd} --json: {e}"))
}

/// The policy plus a UDP service lgwan -> mynumber (for continuous UDP traffic).
pub(crate) fn policy_with_udp(mode: &str) -> String {
    policy(mode)
        + r#"
[[rules]]
name = "relay-udp"
from = "lgwan"
to = "mynumber"
protocol = "udp"
ports = ["5353"]
sources = ["10.20.0.10/32", "fd20::10/128"]
"#
}

#[track_caller]
pub(crate) fn assert_nothing_lost(s: &zone_agent_lab::ContinuousSummary, what: &str) {
    eprintln!("{what}: {s:?}");
    assert!(
        s.stream_sent > 100 && s.conn_ok > 20 && s.udp_sent > 500,
        "{what}: too little traffic to mean anything: {s:?}"
    );
    assert_eq!(
        s.stream_errors, 0,
        "{what}: the long-lived connection broke: {:?}",
        s.errors
    );
    assert_eq!(
        s.stream_ok, s.stream_sent,
        "{what}: lines lost on the long-lived connection"
    );
    assert_eq!(
        s.conn_failed, 0,
        "{what}: new connections failed: {:?}",
        s.errors
    );
    assert_eq!(s.udp_echoed, s.udp_sent, "{what}: UDP datagrams lost");
}

/// kill -9 of the agent with traffic flowing: the forbidden stays blocked, the allowed keeps
/// passing (a long-lived connection, new connections, a UDP stream), XDP stays attached.
/// The restarted agent adopts the pinned state: one program per interface (the new one,
/// swapped into the same links; the old program is gone from the kernel), the established
/// connection survives (flows kept), the counters continue where they were.
#[test]
pub(crate) fn kill9_keeps_enforcing_and_restart_adopts() {
    let mut env = Env::new("kill9", &policy_with_udp("enforce"));
    let my_tcp = tcp_servers(&env, &env.my, &[8443, 22]);
    let _echo = tcp_echo(&env.lab, &env.my, 443, false);
    let _uecho = udp_echo(&env.lab, &env.my, 5353, false);
    let old: Vec<u32> = ZONE_IFACES
        .iter()
        .flat_map(|i| xdp_prog_ids(&env, i))
        .collect();
    assert_eq!(old.len(), 3, "one XDP program per zone interface: {old:?}");
    assert!(
        old.iter().all(|&id| id == old[0]),
        "one program for all interfaces: {old:?}"
    );

    let run = continuous(&env.lab, &env.lg, env.my.addr(false), 443, 5353, 14);
    wait_until(Duration::from_secs(5), "traffic flows", || {
        env.metrics().get(RULE_PACKETS, &[("rule", "relay-udp")]) > 20.0
    });
    let counted = env.metrics().get(RULE_PACKETS, &[("rule", "relay-https")]);
    env.agent.signal(Signal::SIGKILL);
    env.agent
        .wait_exit(AGENT_STOP)
        .expect("the agent dies on SIGKILL");
    assert_enforcing_without_agent(&env, &my_tcp[0][0], &my_tcp[0][1]);

    env.agent = start_agent(&env.lab, &env.policy);
    let new: Vec<u32> = ZONE_IFACES
        .iter()
        .flat_map(|i| xdp_prog_ids(&env, i))
        .collect();
    assert_eq!(
        new.len(),
        3,
        "exactly one XDP program per interface after restart: {new:?}"
    );
    assert!(
        new.iter().all(|&id| id == new[0] && id != old[0]),
        "the new program runs everywhere: old {old:?}, new {new:?}"
    );
    assert!(
        !program_exists(old[0]),
        "the old program {} is still loaded: a duplicate",
        old[0]
    );
    let st = admin_json(&env, "status");
    assert_eq!(st["adopted"]["generation"], 1, "status: {st}");
    assert_eq!(st["generation"], 2, "status: {st}");
    for i in st["interfaces"].as_array().expect("interfaces") {
        assert_eq!(i["attach"], "adopted", "status: {st}");
        assert_eq!(i["program_id"], new[0], "status: {st}");
    }
    let after = env.metrics().get(RULE_PACKETS, &[("rule", "relay-https")]);
    assert!(
        after >= counted,
        "relay-https counted {counted} before the kill, {after} after the restart"
    );

    let mut run = run;
    run.wait_exit(Duration::from_secs(30))
        .expect("the traffic client finishes");
    assert_nothing_lost(
        &continuous_summary(&run),
        "kill -9 and restart under traffic",
    );
    assert_tcp_blocked(
        &env,
        tcp(&env.lg, &env.my, 8443, false),
        &my_tcp[0][0],
        "no_rule",
    );
}

/// Pinned state left by an incompatible build (here: the maps directory of another ABI
/// fingerprint, made by renaming ours while the agent is down) is replaced atomically: the
/// restarted agent builds fresh maps, swaps its program into the same links, removes the old
/// maps, says so in its log and `status`, and the gate never opens meanwhile.
#[test]
pub(crate) fn incompatible_pinned_state_is_replaced_atomically() {
    let mut env = Env::new("incompatible", &policy("enforce"));
    let my_tcp = tcp_servers(&env, &env.my, &[8443, 22]);
    let old: Vec<u32> = ZONE_IFACES
        .iter()
        .flat_map(|i| xdp_prog_ids(&env, i))
        .collect();
    env.agent.signal(Signal::SIGKILL);
    env.agent
        .wait_exit(AGENT_STOP)
        .expect("the agent dies on SIGKILL");
    let pins = pin_dir(&env.lab);
    let ours: Vec<PathBuf> = fs::read_dir(&pins)
        .expect("pin dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("maps-")
        })
        .collect();
    assert_eq!(ours.len(), 1, "one maps dir: {ours:?}");
    let foreign = pins.join("maps-00000000000000aa");
    fs::rename(&ours[0], &foreign).expect("rename the maps dir");
    assert_enforcing_without_agent(&env, &my_tcp[0][0], &my_tcp[0][1]);

    env.agent = start_agent(&env.lab, &env.policy);
    let log = env.agent.log_text();
    assert!(
        log.contains("incompatible") && log.contains("maps-00000000000000aa"),
        "the agent does not say it replaced the state:\n{log}"
    );
    assert!(!foreign.exists(), "the incompatible maps are still pinned");
    let new: Vec<u32> = ZONE_IFACES
        .iter()
        .flat_map(|i| xdp_prog_ids(&env, i))
        .collect();
    assert_eq!(new.len(), 3, "one program per interface: {new:?}");
    assert!(
        new.iter().all(|&id| id == new[0] && id != old[0]),
        "old {old:?}, new {new:?}"
    );
    assert!(!program_exists(old[0]), "the old program is still loaded");
    let st = admin_json(&env, "status");
    assert_eq!(
        st["adopted"]["generation"], 0,
        "fresh maps hold no policy: {st}"
    );
    assert!(
        st["adopted"]["replaced"][0]
            .as_str()
            .unwrap_or("")
            .contains("maps-00000000000000aa"),
        "status: {st}"
    );
    assert_tcp_blocked(
        &env,
        tcp(&env.lg, &env.my, 8443, false),
        &my_tcp[0][0],
        "no_rule",
    );
    assert_tcp_passes(&env, tcp(&env.lg, &env.my, 22, false), &my_tcp[0][1]);
}

/// Twelve reloads (through `zone-agent reload`) while allowed traffic flows without pause:
/// no datagram, no line and no connection is lost, and every reload is a new generation.
#[test]
pub(crate) fn reloads_under_continuous_traffic_lose_nothing() {
    let base = policy_with_udp("enforce");
    let env = Env::new("reload_load", &base);
    let _echo = tcp_echo(&env.lab, &env.my, 443, false);
    let _uecho = udp_echo(&env.lab, &env.my, 5353, false);
    let run = continuous(&env.lab, &env.lg, env.my.addr(false), 443, 5353, 12);
    wait_until(Duration::from_secs(5), "traffic flows", || {
        env.metrics().get(RULE_PACKETS, &[("rule", "relay-udp")]) > 20.0
    });
    let before = env.metrics();
    const RELOADS: u32 = 12;
    for i in 0..RELOADS {
        // Each reload changes the policy (an extra rule), so each is a real new policy set.
        let text = format!(
            "{base}\n[[rules]]\nname = \"toggle-{i}\"\nfrom = \"lgwan\"\nto = \"internet\"\nprotocol = \"tcp\"\nports = [\"{}\"]\n",
            8000 + i
        );
        write_policy(&env.policy, &text);
        let r = admin_json(&env, "reload");
        assert_eq!(r["result"], "success", "reload {i}: {r}");
        std::thread::sleep(Duration::from_millis(400));
    }
    let after = env.metrics();
    let gens = after.get(GENERATION, &[]) - before.get(GENERATION, &[]);
    assert!(
        gens >= f64::from(RELOADS),
        "{gens} new generations for {RELOADS} reloads"
    );
    let mut run = run;
    run.wait_exit(Duration::from_secs(30))
        .expect("the traffic client finishes");
    assert_nothing_lost(
        &continuous_summary(&run),
        &format!("{RELOADS} reloads under traffic"),
    );
}

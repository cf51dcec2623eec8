//! Failsafe flows: an administrator connection survives a policy that would block it.

use super::*;

/// A failsafe management flow (configured for the agent, not in the policy) reaches the
/// gateway itself from the admin host even when the policy would block it — intra-zone
/// denied, no rule, and after a reload to a policy whose lgwan networks are wrong (the admin
/// host's address is then in no zone). It reaches only the gateway: the same port on a host
/// behind the gateway, another port, or another source stay blocked. `status` shows it.
#[test]
pub(crate) fn failsafe_flow_survives_a_policy_that_blocks_it() {
    let blocking = edit(
        &policy("enforce"),
        r#"intra_zone = "allow""#,
        r#"intra_zone = "deny""#,
    );
    let mut env = Env::new("failsafe", &blocking);
    let config = env.lab.dir().join("zone-agent.toml");
    fs::write(
        &config,
        "[[failsafe]]\nname = \"ssh-admin\"\nprotocol = \"tcp\"\nports = [\"2222\"]\nsources = [\"10.20.0.10/32\"]\ninterfaces = [\"zlgw\"]\n",
    )
    .expect("write config");
    env.agent.stop();
    env.agent = start_agent_with(&env.lab, &env.policy, Some(&config));
    // Servers on the gateway itself, on its lgwan-side and mynumber-side addresses.
    let mut gw_lg = env.lg.clone();
    gw_lg.ns = env.gw().to_string();
    gw_lg.v4 = env.lg.gw_v4;
    let mut gw_my = gw_lg.clone();
    gw_my.v4 = env.my.gw_v4;
    let s_lg = tcp_listen(&env.lab, &gw_lg, 2222, false);
    let s_my = tcp_listen(&env.lab, &gw_my, 2222, false);
    let s_other = tcp_listen(&env.lab, &gw_lg, 2223, false);
    let behind = tcp_servers(&env, &env.my, &[2222]);

    let check = |env: &Env| {
        for server in [&s_lg, &s_my] {
            let dst = if std::ptr::eq(server, &s_lg) {
                gw_lg.v4
            } else {
                gw_my.v4
            };
            let before = env.metrics();
            let seen = seen_from(server, env.lg.v4);
            assert!(
                tcp_connect(&env.lab, &env.lg, dst, 2222, Some(env.lg.v4), T),
                "failsafe lgwan -> gateway {dst}:2222 blocked; agent log:\n{}",
                env.agent.log_text()
            );
            assert_eq!(seen_from(server, env.lg.v4), seen + 1);
            assert!(
                env.metrics()
                    .delta(&before, PASSES, &[("reason", "failsafe")])
                    >= 1.0
            );
        }
        let seen = seen_from(&s_other, env.lg.v4);
        assert!(
            !tcp_connect(&env.lab, &env.lg, gw_lg.v4, 2223, Some(env.lg.v4), T_FAIL),
            "port 2223 is not failsafe"
        );
        assert_eq!(seen_from(&s_other, env.lg.v4), seen);
        let seen = seen_from(&behind[0][0], env.lg.v4);
        assert!(
            !tcp_connect(&env.lab, &env.lg, env.my.v4, 2222, Some(env.lg.v4), T_FAIL),
            "failsafe reached a host behind the gateway"
        );
        assert_eq!(seen_from(&behind[0][0], env.lg.v4), seen);
        let seen = seen_from(&s_lg, env.inet.v4);
        assert!(
            !tcp_connect(
                &env.lab,
                &env.inet,
                gw_lg.v4,
                2222,
                Some(env.inet.v4),
                T_FAIL
            ),
            "failsafe admitted a source outside its list"
        );
        assert_eq!(seen_from(&s_lg, env.inet.v4), seen);
    };
    check(&env);
    let st = admin_json(&env, "status");
    let fs = &st["failsafe"][0];
    assert_eq!(fs["name"], "ssh-admin", "status: {st}");
    assert_eq!(fs["interfaces"][0][0], "zlgw", "status: {st}");
    assert!(
        fs["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == &serde_json::json!(gw_lg.v4.to_string())),
        "status: {st}"
    );

    // A mistaken policy: lgwan's networks no longer hold the admin host, whose address now
    // falls into the internet zone (0.0.0.0/0): to the data path it is a spoofed source.
    let wrong = edit(
        &blocking,
        r#"networks = ["10.20.0.0/16", "fd20::/48"]"#,
        r#"networks = ["10.20.128.0/17", "fd20::/48"]"#,
    );
    let wrong = edit(
        &wrong,
        r#"sources = ["10.20.0.10/32", "fd20::10/128"]"#,
        r#"sources = ["10.20.128.10/32", "fd20::10/128"]"#,
    );
    env.reload(&wrong, RELOAD_OK);
    check(&env);
}

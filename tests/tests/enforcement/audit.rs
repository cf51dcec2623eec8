//! Audit mode, global and per rule: passes, counted as what would have been dropped.

use super::*;

/// `mode = "audit"` for the whole policy: what the policy forbids passes, and is counted as
/// audit (would-drop reason and zone pair); what it allows is still counted as allow.
#[test]
pub(crate) fn global_audit_mode_passes_and_counts_what_it_would_drop() {
    let env = Env::new("global_audit", &policy("audit"));
    let my_udp = udp_servers(&env, &env.my, 5353);
    let my_tcp = tcp_servers(&env, &env.my, &[8443]);
    let dns = udp_servers(&env, &env.inet, 53);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let f = fam(v6);
        let before = env.metrics();
        let echoes = udp_exchange(&env.lab, &env.lg, env.my.addr(v6), 5353, 5, None, T);
        let after = env.metrics();
        assert_eq!(
            echoes, 5,
            "forbidden datagrams ({f}) pass in audit mode, both ways"
        );
        assert_eq!(seen_from(&my_udp[i], env.lg.addr(v6)), 5);
        let what =
            format!("5 forbidden datagrams lgwan -> mynumber:5353/udp and echoes, audit ({f})");
        assert_delta(&before, &after, DROPS, &drop_reason("no_rule"), 0.0, &what);
        // No rule opens a flow, so the echoes are would-drops of their own.
        assert_delta(
            &before,
            &after,
            AUDIT_PASSES,
            &drop_reason("no_rule"),
            10.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "mynumber", "audit"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("mynumber", "lgwan", "audit"),
            5.0,
            &what,
        );
        assert_delta(&before, &after, PACKETS, &[("verdict", "deny")], 0.0, &what);

        let before = env.metrics();
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 8443, v6), &my_tcp[i][0]);
        let after = env.metrics();
        assert!(
            after.delta(&before, AUDIT_PASSES, &drop_reason("no_rule")) >= 2.0,
            "a forbidden TCP connection ({f}) is audited:\n{}",
            after.changes(&before)
        );

        let before = env.metrics();
        assert_eq!(
            udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 53, 5, None, T),
            5
        );
        let after = env.metrics();
        let what = format!("allowed DNS in audit mode ({f})");
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "allow"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "audit"),
            0.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            AUDIT_PASSES,
            &drop_reason("no_rule"),
            0.0,
            &what,
        );
        assert_eq!(seen_from(&dns[i], env.lg.addr(v6)), 5);
    }
}

/// A rule with `mode = "audit"` in an enforcing policy: its traffic passes (a trial) and is
/// counted as verdict audit and to the rule; the rest of the policy still enforces.
#[test]
pub(crate) fn audit_rule_passes_its_traffic_as_audit() {
    let env = Env::new("audit_rule", &policy("enforce"));
    let ntp = udp_servers(&env, &env.inet, 123);
    let other = udp_servers(&env, &env.inet, 124);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let f = fam(v6);
        let before = env.metrics();
        assert_eq!(
            udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 123, 5, None, T),
            5,
            "the audit rule's traffic ({f}) passes"
        );
        let after = env.metrics();
        assert_eq!(seen_from(&ntp[i], env.lg.addr(v6)), 5);
        let what = format!("5 NTP exchanges under the audit rule ntp-trial ({f})");
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "audit"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("internet", "lgwan", "audit"),
            5.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "allow"),
            0.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            RULE_PACKETS,
            &[("rule", "ntp-trial")],
            10.0,
            &what,
        );
        assert_delta(&before, &after, DROPS, &drop_reason("no_rule"), 0.0, &what);

        // The port next to it is not in any rule: still dropped.
        let before = env.metrics();
        assert_eq!(
            udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 124, 2, None, T_FAIL),
            0
        );
        let after = env.metrics();
        assert_eq!(seen_from(&other[i], env.lg.addr(v6)), 0);
        let what = format!("2 datagrams to 124/udp ({f})");
        assert_delta(&before, &after, DROPS, &drop_reason("no_rule"), 2.0, &what);
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "deny"),
            2.0,
            &what,
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &[("verdict", "audit")],
            0.0,
            &what,
        );
    }
}

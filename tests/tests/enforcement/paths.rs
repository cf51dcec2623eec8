//! Allowed and forbidden paths: what passes with its replies, what is blocked and under
//! which drop reason, and counters that move by exactly what was sent.

use super::*;

/// 特定通信 that the policy allows work in both directions (the replies come back) over IPv4
/// and IPv6, and nothing of them is dropped.
#[test]
pub(crate) fn allowed_tcp_and_udp_pass_with_their_replies() {
    let env = Env::new("allowed_pass", &policy("enforce"));
    let my_tcp = tcp_servers(&env, &env.my, &[443, 22]);
    let inet_tcp = tcp_servers(&env, &env.inet, &[80]);
    let dns = udp_servers(&env, &env.inet, 53);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let before = env.metrics();
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 443, v6), &my_tcp[i][0]);
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 22, v6), &my_tcp[i][1]);
        assert_tcp_passes(&env, tcp(&env.lg, &env.inet, 80, v6), &inet_tcp[i][0]);
        assert_eq!(
            udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 53, 5, None, T),
            5,
            "every DNS query ({}) is answered",
            fam(v6)
        );
        assert_eq!(seen_from(&dns[i], env.lg.addr(v6)), 5);
        let after = env.metrics();
        for rule in ["relay-https", "admin-ssh", "web-out"] {
            // At least the SYN and the SYN-ACK (the reply is counted to the flow's rule).
            assert!(
                after.delta(&before, RULE_PACKETS, &[("rule", rule)]) >= 2.0,
                "rule {rule} counted the connection ({}):\n{}",
                fam(v6),
                after.changes(&before)
            );
        }
        assert_delta(
            &before,
            &after,
            RULE_PACKETS,
            &[("rule", "dns-out")],
            10.0,
            "5 queries + 5 answers",
        );
        assert!(after.delta(&before, PASSES, &[("reason", "reply")]) >= 5.0 + 3.0);
        for reason in ["no_rule", "mac_mismatch", "fragment", "malformed"] {
            assert_delta(
                &before,
                &after,
                DROPS,
                &drop_reason(reason),
                0.0,
                "allowed traffic",
            );
        }
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "mynumber", "deny"),
            0.0,
            "allowed traffic",
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "internet", "deny"),
            0.0,
            "allowed traffic",
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("internet", "lgwan", "deny"),
            0.0,
            "replies",
        );
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("mynumber", "lgwan", "deny"),
            0.0,
            "replies",
        );
    }
}

/// Everything the 特定通信 do not name is blocked, each for its own counted reason: another
/// port, another source address of the same host, another destination host, the reverse
/// direction, a source address of another zone, and (path limitation by MAC) the right
/// address behind the wrong NIC.
#[test]
pub(crate) fn forbidden_paths_are_blocked_and_counted_by_reason() {
    let env = Env::new("forbidden", &policy("enforce"));
    // A second address of the lgwan host, not in relay-https's `sources`.
    let second = [
        add_addr(&env.lab, &env.lg, "10.20.0.11/16"),
        add_addr(&env.lab, &env.lg, "fd20::11/64"),
    ];
    let spoofed = [ip("10.10.0.99"), ip("fd10::99")];
    let my_tcp = tcp_servers(&env, &env.my, &[443, 8443, 22]);
    let my_udp = udp_servers(&env, &env.my, 5353);
    let lg_tcp = tcp_servers(&env, &env.lg, &[443]);
    // A second mynumber address, not in relay-https's `destinations`, with its own listener.
    let mut my2 = env.my.clone();
    my2.v4 = add_addr(&env.lab, &env.my, "10.10.0.11/16");
    my2.v6 = add_addr(&env.lab, &env.my, "fd10::11/64");
    let my2_tcp = tcp_servers(&env, &my2, &[443]);

    // The added addresses made the hosts send MLD reports; the totals below need quiet.
    wait_quiet(&env);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let (lg, my) = (&env.lg, &env.my);
        // The allowed path itself works (so the listeners and routes are fine) ...
        assert_tcp_passes(&env, tcp(lg, my, 443, v6), &my_tcp[i][0]);
        // ... another port to the same host does not,
        assert_tcp_blocked(&env, tcp(lg, my, 8443, v6), &my_tcp[i][1], "no_rule");
        // nor another address of the same host (relay-https lists sources),
        assert_tcp_blocked(
            &env,
            tcp(lg, my, 443, v6).src(second[i]),
            &my_tcp[i][0],
            "no_rule",
        );
        // nor another host of the destination zone (relay-https lists destinations),
        assert_tcp_blocked(&env, tcp(lg, &my2, 443, v6), &my2_tcp[i][0], "no_rule");
        // nor the same port the other way round.
        assert_tcp_blocked(&env, tcp(my, lg, 443, v6), &lg_tcp[i][0], "no_rule");

        // A mynumber source sent from the lgwan side: mynumber -> mynumber would be intra-zone
        // (allowed) if the source were believed.
        let before = env.metrics();
        assert_eq!(
            udp_exchange(&env.lab, lg, my.addr(v6), 5353, 2, Some(spoofed[i]), T_FAIL),
            0
        );
        let after = env.metrics();
        assert_eq!(
            seen_from(&my_udp[i], spoofed[i]),
            0,
            "the spoofed datagrams reached the server"
        );
        let what = format!("2 datagrams from {} sent by the lgwan host", spoofed[i]);
        assert_delta(
            &before,
            &after,
            DROPS,
            &drop_reason("spoofed_source"),
            2.0,
            &what,
        );
        assert_delta(&before, &after, DROPS, &[], 2.0, &what);
        assert_delta(
            &before,
            &after,
            PASSES,
            &[("reason", "intra_zone")],
            0.0,
            &what,
        );
    }

    // Path limitation by MAC: admin-ssh accepts the lgwan host's NIC only.
    for v6 in [false, true] {
        assert_tcp_passes(
            &env,
            tcp(&env.lg, &env.my, 22, v6),
            &my_tcp[usize::from(v6)][2],
        );
    }
    set_mac(&env.lab, &env.lg.ns, "eth0", OTHER_MAC);
    for v6 in [false, true] {
        let i = usize::from(v6);
        assert_tcp_blocked(
            &env,
            tcp(&env.lg, &env.my, 22, v6),
            &my_tcp[i][2],
            "mac_mismatch",
        );
        // The same host behind the new NIC still reaches what is not MAC-bound.
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 443, v6), &my_tcp[i][0]);
    }
}

/// Counters move by exactly what was sent: forbidden datagrams to their drop reason and zone
/// pair, an allowed exchange to its rule (both directions), pass reasons and zone pairs.
#[test]
pub(crate) fn counters_move_by_exactly_what_was_sent() {
    let env = Env::new("counters", &policy("enforce"));
    let my_udp = udp_servers(&env, &env.my, 5353);
    let dns = udp_servers(&env, &env.inet, 53);
    let spoofed = [ip("10.10.0.99"), ip("fd10::99")];
    wait_quiet(&env);
    for v6 in [false, true] {
        let i = usize::from(v6);
        let f = fam(v6);

        let before = env.metrics();
        let echoes = udp_exchange(&env.lab, &env.lg, env.my.addr(v6), 5353, 5, None, T_FAIL);
        let after = env.metrics();
        assert_eq!(echoes, 0, "forbidden datagrams ({f}) were answered");
        assert_eq!(seen_from(&my_udp[i], env.lg.addr(v6)), 0);
        let what = format!("5 forbidden datagrams lgwan -> mynumber:5353/udp ({f})");
        assert_delta(&before, &after, DROPS, &drop_reason("no_rule"), 5.0, &what);
        assert_delta(&before, &after, DROPS, &[], 5.0, &what);
        assert_delta(
            &before,
            &after,
            PACKETS,
            &zones("lgwan", "mynumber", "deny"),
            5.0,
            &what,
        );
        assert_delta(&before, &after, PACKETS, &[], 5.0, &what);
        assert_delta(&before, &after, PASSES, &[], 0.0, &what);

        let before = env.metrics();
        let echoes = udp_exchange(&env.lab, &env.lg, env.inet.addr(v6), 53, 5, None, T);
        let after = env.metrics();
        assert_eq!(echoes, 5, "allowed DNS ({f}) answered");
        let what = format!("5 DNS queries lgwan -> internet:53/udp and their answers ({f})");
        assert_delta(
            &before,
            &after,
            RULE_PACKETS,
            &[("rule", "dns-out")],
            10.0,
            &what,
        );
        assert_delta(&before, &after, RULE_PACKETS, &[], 10.0, &what);
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
            &zones("internet", "lgwan", "allow"),
            5.0,
            &what,
        );
        assert_delta(&before, &after, PACKETS, &[], 10.0, &what);
        // The first query opens the flow; the others follow it, the answers are its replies.
        assert_delta(&before, &after, PASSES, &[("reason", "rule")], 1.0, &what);
        assert_delta(
            &before,
            &after,
            PASSES,
            &[("reason", "established")],
            4.0,
            &what,
        );
        assert_delta(&before, &after, PASSES, &[("reason", "reply")], 5.0, &what);
        assert_delta(&before, &after, DROPS, &[], 0.0, &what);
        assert_eq!(seen_from(&dns[i], env.lg.addr(v6)), 5);

        let before = env.metrics();
        let echoes = udp_exchange(
            &env.lab,
            &env.lg,
            env.my.addr(v6),
            5353,
            3,
            Some(spoofed[i]),
            T_FAIL,
        );
        let after = env.metrics();
        assert_eq!(echoes, 0);
        assert_eq!(seen_from(&my_udp[i], spoofed[i]), 0);
        let what = format!("3 datagrams from {} sent by the lgwan host", spoofed[i]);
        assert_delta(
            &before,
            &after,
            DROPS,
            &drop_reason("spoofed_source"),
            3.0,
            &what,
        );
        assert_delta(&before, &after, DROPS, &[], 3.0, &what);
        assert_delta(
            &before,
            &after,
            PACKETS,
            &[("from_zone", "lgwan"), ("verdict", "deny")],
            3.0,
            &what,
        );
    }
}

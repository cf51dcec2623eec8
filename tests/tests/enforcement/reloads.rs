//! Reloads: an edited policy applies on SIGHUP, a rejected one leaves the old enforcing.

use super::*;

/// SIGHUP re-reads the policy file: a SIGHUP alone reloads (counted, new generation); an
/// edited file that opens a blocked port and removes a rule takes effect for new traffic.
#[test]
pub(crate) fn sighup_reload_applies_the_edited_policy() {
    let text = policy("enforce");
    let env = Env::new("sighup_reload", &text);
    let my_tcp = tcp_servers(&env, &env.my, &[443, 8443]);
    let inet_tcp = tcp_servers(&env, &env.inet, &[80]);
    for v6 in [false, true] {
        let i = usize::from(v6);
        assert_tcp_blocked(
            &env,
            tcp(&env.lg, &env.my, 8443, v6),
            &my_tcp[i][1],
            "no_rule",
        );
        assert_tcp_passes(&env, tcp(&env.lg, &env.inet, 80, v6), &inet_tcp[i][0]);
    }

    // SIGHUP with the file unchanged (so the file watcher has nothing to do): one reload.
    let before = env.metrics();
    env.agent.signal(Signal::SIGHUP);
    let after = env.wait_reloads(&before, RELOAD_OK);
    assert_delta(
        &before,
        &after,
        RELOADS,
        &[("result", RELOAD_OK)],
        1.0,
        "one SIGHUP",
    );
    assert_delta(
        &before,
        &after,
        RELOADS,
        &[("result", RELOAD_ERROR)],
        0.0,
        "one SIGHUP",
    );
    assert_delta(&before, &after, GENERATION, &[], 1.0, "one SIGHUP");

    // Open 8443 on the relay rule, remove web-out.
    let edited = edit(&text, r#"ports = ["443"]"#, r#"ports = ["443", "8443"]"#);
    let web_out = "[[rules]]\nname = \"web-out\"\nfrom = \"lgwan\"\nto = \"internet\"\nprotocol = \"tcp\"\nports = [\"80\"]\n";
    let edited = edit(&edited, web_out, "");
    let (before, after) = env.reload(&edited, RELOAD_OK);
    assert!(after.get(GENERATION, &[]) > before.get(GENERATION, &[]));
    assert_delta(
        &before,
        &after,
        RELOADS,
        &[("result", RELOAD_ERROR)],
        0.0,
        "a valid edit",
    );
    assert!(
        env.agent.log_text().contains("policy reloaded"),
        "the reload is logged"
    );

    for v6 in [false, true] {
        let i = usize::from(v6);
        let before = env.metrics();
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 8443, v6), &my_tcp[i][1]);
        let after = env.metrics();
        assert!(
            after.delta(&before, RULE_PACKETS, &[("rule", "relay-https")]) >= 2.0,
            "8443 is counted to relay-https:\n{}",
            after.changes(&before)
        );
        assert_tcp_passes(&env, tcp(&env.lg, &env.my, 443, v6), &my_tcp[i][0]);
        assert_tcp_blocked(
            &env,
            tcp(&env.lg, &env.inet, 80, v6),
            &inet_tcp[i][0],
            "no_rule",
        );
    }
}

/// A policy file that does not parse, or names a zone that does not exist, is rejected on
/// reload: counted as an error, logged with file and line, and the previous policy keeps
/// enforcing (also the valid part of the rejected file does not take effect).
#[test]
pub(crate) fn rejected_reload_keeps_the_old_policy_enforcing() {
    let text = policy("enforce");
    let mut env = Env::new("rejected_reload", &text);
    let my_tcp = tcp_servers(&env, &env.my, &[443, 8443]);
    // Both broken files would open 8443 if they were (partly) applied.
    let opens_8443 = edit(&text, r#"ports = ["443"]"#, r#"ports = ["443", "8443"]"#);
    let syntax = format!("{opens_8443}\n[[rules]\nname = \"broken\"\n");
    let unknown_zone = format!(
        "{opens_8443}\n[[rules]]\nname = \"to-gcloud\"\nfrom = \"lgwan\"\nto = \"gcloud\"\nprotocol = \"tcp\"\nports = [\"443\"]\n"
    );
    let line_of = |text: &str, needle: &str| {
        1 + text
            .lines()
            .position(|l| l == needle)
            .expect("needle is a line of the text")
    };
    let cases = [
        (
            "a syntax error",
            &syntax,
            line_of(&syntax, "[[rules]"),
            "TOML",
        ),
        (
            "a rule naming an unknown zone",
            &unknown_zone,
            line_of(&unknown_zone, "to = \"gcloud\""),
            "gcloud",
        ),
    ];
    for (what, broken, line, clue) in cases {
        let log_len = env.agent.log_text().len();
        let (before, after) = env.reload(broken, RELOAD_ERROR);
        assert_delta(
            &before,
            &after,
            RELOADS,
            &[("result", RELOAD_OK)],
            0.0,
            what,
        );
        assert_delta(&before, &after, GENERATION, &[], 0.0, what);
        assert!(
            env.agent.exited().is_none(),
            "the agent exited after {what}"
        );
        let log = env.agent.log_text()[log_len..].to_owned();
        let location = format!("{}:{line}:", env.policy.display());
        assert!(
            log.contains("reload rejected") && log.contains(&location) && log.contains(clue),
            "{what}: the log should say the reload was rejected, at {location}, about {clue:?}:\n{log}"
        );
        for v6 in [false, true] {
            let i = usize::from(v6);
            assert_tcp_passes(&env, tcp(&env.lg, &env.my, 443, v6), &my_tcp[i][0]);
            assert_tcp_blocked(
                &env,
                tcp(&env.lg, &env.my, 8443, v6),
                &my_tcp[i][1],
                "no_rule",
            );
        }
    }

    // The agent still reloads: the valid part alone is accepted and opens 8443.
    env.reload(&opens_8443, RELOAD_OK);
    for v6 in [false, true] {
        assert_tcp_passes(
            &env,
            tcp(&env.lg, &env.my, 8443, v6),
            &my_tcp[usize::from(v6)][1],
        );
    }
}

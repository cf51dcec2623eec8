//! The operator's page (`GET /` on the metrics listener) as a browser shows it: the agent
//! enforces the three-zone policy, the test makes allowed and denied connections, and
//! headless Chromium in the gateway namespace renders the page. The rendered DOM must show
//! the zones with their Japanese labels, the zone × zone matrix with the pairs the test
//! exercised (allowed and denied, the denied cell highlighted), the rules with their counts,
//! and operator text as text (never as markup).
//!
//! `ZA_PAGE_SCREENSHOT=FILE` also writes a 1366×768 screenshot there (docs/page.png is made
//! that way). Needs root and `chromium`; `cargo xtask test` runs it under `unshare`.

use std::net::IpAddr;
use std::time::Duration;

use zone_agent_lab::agent::{self, METRICS_ADDR};
use zone_agent_lab::browser::{self, attr, tags_with};
use zone_agent_lab::fixture::{INTERNET, LGWAN, MYNUMBER, ZONES};
use zone_agent_lab::{Lab, ThreeZones, tcp_connect, tcp_listen, wait_until};

const T: Duration = Duration::from_secs(3);
const T_FAIL: Duration = Duration::from_millis(700);
/// Where the screenshot goes when set.
const SCREENSHOT_ENV: &str = "ZA_PAGE_SCREENSHOT";

/// Operator text that looks like markup: the page must show it as these characters.
const MARKUP_DESCRIPTION: &str = "<b id=\"injected\">relay</b> & 中間サーバー";

fn rules() -> String {
    format!(
        r#"[[rules]]
name = "relay-https"
description = {MARKUP_DESCRIPTION:?}
from = "lgwan"
to = "mynumber"
protocol = "tcp"
ports = ["443"]

[[rules]]
name = "web-out"
description = "インターネット閲覧 (trial)"
from = "lgwan"
to = "internet"
protocol = "tcp"
ports = ["80", "8000-8010"]
mode = "audit"
"#
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn url(path: &str) -> String {
    format!("http://{METRICS_ADDR}{path}")
}

/// A number attribute of a start tag; panics naming the tag when it is missing.
fn number(tag: &str, name: &str) -> u64 {
    attr(tag, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {tag}"))
}

/// The one matrix cell `from` → `to` of the rendered page.
fn cell<'a>(dom: &'a str, from: &str, to: &str) -> &'a str {
    let cells: Vec<&str> = tags_with(dom, "td", "data-from", from)
        .into_iter()
        .filter(|t| attr(t, "data-to") == Some(to))
        .collect();
    assert_eq!(cells.len(), 1, "one matrix cell {from} -> {to}: {cells:?}");
    cells[0]
}

#[test]
fn page_shows_zones_matrix_rules_and_denials() {
    let mut lab = Lab::new("page");
    let hosts = ThreeZones::add(&mut lab);
    let policy = ThreeZones::policy().labels().rules(&rules()).build();
    let _agent = agent::start(&lab, &policy);
    let _https = tcp_listen(&lab, &hosts.my, 443, false);
    let _other = tcp_listen(&lab, &hosts.my, 8443, false);

    // Allowed: the relay rule, three times. Denied: no rule for port 8443, nor from the
    // internet zone at all.
    for _ in 0..3 {
        assert!(tcp_connect(&lab, &hosts.lg, ip("10.10.0.10"), 443, None, T));
    }
    assert!(!tcp_connect(
        &lab,
        &hosts.lg,
        ip("10.10.0.10"),
        8443,
        None,
        T_FAIL
    ));
    assert!(!tcp_connect(
        &lab,
        &hosts.inet,
        ip("10.10.0.10"),
        443,
        None,
        T_FAIL
    ));

    let headers = lab.run_timeout(
        lab.gateway(),
        &["curl", "-sS", "-D", "-", "-o", "/dev/null", &url("/")],
        T,
    );
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(
        headers.contains("content-type: text/html")
            && headers.contains("content-security-policy: default-src 'none';")
            && headers.contains("x-content-type-options: nosniff"),
        "GET / headers:\n{headers}"
    );

    // The agent reads the event ring at least every 100 ms: the page's data has the
    // denial before the browser asks for it.
    wait_until(T, "the overview lists the denied attempt", || {
        let o = lab.run_timeout(lab.gateway(), &["curl", "-sS", &url("/api/v1/overview")], T);
        String::from_utf8_lossy(&o.stdout).contains("\"dst_port\":8443")
    });
    let dom = browser::dump_dom(&lab, lab.gateway(), &url("/"));
    // The script ran (the CSP let it) and rendered an answer.
    assert!(
        dom.contains("更新 "),
        "the page never rendered an answer:\n{dom}"
    );
    for z in ZONES {
        assert!(
            !tags_with(&dom, "th", "data-zone", z.name).is_empty(),
            "zone {} missing:\n{dom}",
            z.name
        );
        assert!(dom.contains(z.label), "label {} missing", z.label);
    }

    let relay = cell(&dom, LGWAN.name, MYNUMBER.name);
    assert!(number(relay, "data-allow-packets") > 0, "{relay}");
    assert!(number(relay, "data-deny-packets") > 0, "{relay}");
    assert!(
        attr(relay, "class").is_some_and(|c| c.contains("denied")),
        "{relay}"
    );
    let from_internet = cell(&dom, INTERNET.name, MYNUMBER.name);
    assert!(
        number(from_internet, "data-deny-packets") > 0,
        "{from_internet}"
    );
    assert_eq!(number(from_internet, "data-allow-packets"), 0);
    let quiet = cell(&dom, MYNUMBER.name, INTERNET.name);
    assert_eq!(number(quiet, "data-deny-packets"), 0, "{quiet}");
    assert!(!attr(quiet, "class").unwrap_or("").contains("denied"));

    let relay_rule = tags_with(&dom, "tr", "data-rule", "relay-https");
    assert_eq!(relay_rule.len(), 1, "rule row relay-https:\n{dom}");
    assert!(number(relay_rule[0], "data-packets") > 0);
    let trial = tags_with(&dom, "tr", "data-rule", "web-out");
    assert_eq!(trial.len(), 1, "rule row web-out");
    assert_eq!(number(trial[0], "data-packets"), 0);
    assert!(dom.contains("tcp 80, 8000-8010") && dom.contains(">audit<"));

    // Operator text is shown as text: escaped in the DOM, no element made of it.
    assert!(
        dom.contains("&lt;b id=\"injected\"&gt;relay&lt;/b&gt; &amp; 中間サーバー"),
        "the description is not shown as text"
    );
    assert!(
        !dom.contains("<b id=\"injected\">"),
        "operator text became markup"
    );

    // The last denied attempts come from the event stream, and nothing was lost.
    let denied = tags_with(&dom, "tr", "data-kind", "deny");
    assert!(
        !denied.is_empty() && dom.contains("10.20.0.10") && dom.contains("10.10.0.10:8443"),
        "the denied attempt lgwan -> 10.10.0.10:8443 is not in the last denied table:\n{dom}"
    );
    assert!(
        !dom.contains(">n/a<"),
        "the page shows no event figures (n/a)"
    );

    if let Some(path) = std::env::var_os(SCREENSHOT_ENV) {
        browser::screenshot(&lab, lab.gateway(), &url("/"), std::path::Path::new(&path));
        eprintln!("screenshot written to {}", path.to_string_lossy());
    }
}

//! The operator's page as a browser renders it: Debian's `chromium`, headless, inside a lab
//! namespace (so it reaches the agent of that lab and nothing else), with everything that
//! would reach out to the internet switched off.

use std::path::Path;
use std::time::Duration;

use crate::lab::Lab;

/// Flags of every run. The lab runs as root, where Chromium starts only without its sandbox;
/// the rest keep it from contacting anything (updates, sync, field trials, safe browsing).
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-field-trial-config",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--metrics-recording-only",
    "--hide-scrollbars",
];

/// The office screen the page is made for.
pub const WINDOW: (u32, u32) = (1366, 768);
/// Virtual time the page runs before the dump: its first answer and one 2 s refresh.
pub const BUDGET: Duration = Duration::from_secs(5);
/// Wall-clock bound of one Chromium run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn run(lab: &Lab, ns: &str, mode: &[String], url: &str) -> std::process::Output {
    let profile = lab.dir().join("chromium-profile");
    let mut argv: Vec<String> = vec!["chromium".into()];
    argv.extend(FLAGS.iter().map(|f| (*f).to_owned()));
    argv.push(format!("--user-data-dir={}", profile.display()));
    argv.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
    argv.push(format!("--virtual-time-budget={}", BUDGET.as_millis()));
    argv.extend(mode.iter().cloned());
    argv.push(url.to_owned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.run_timeout(ns, &argv, RUN_TIMEOUT)
}

/// The DOM of `url` after [`BUDGET`] of virtual time, as Chromium serializes it.
pub fn dump_dom(lab: &Lab, ns: &str, url: &str) -> String {
    let out = run(lab, ns, &["--dump-dom".into()], url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || dom.is_empty() {
        panic!(
            "chromium --dump-dom {url} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dom
}

/// A [`WINDOW`]-sized PNG of `url` written to `path`.
pub fn screenshot(lab: &Lab, ns: &str, url: &str, path: &Path) {
    let out = run(lab, ns, &[format!("--screenshot={}", path.display())], url);
    if !out.status.success() || !path.is_file() {
        panic!(
            "chromium --screenshot {url} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The start tags in `html` (`<td …>` without the `>`) that carry attribute `name="value"`.
pub fn tags_with<'a>(html: &'a str, tag: &str, name: &str, value: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    let wanted = format!("{name}=\"{value}\"");
    html.match_indices(&open)
        .filter_map(|(at, _)| html[at..].find('>').map(|end| &html[at..at + end]))
        .filter(|t| t.contains(&wanted))
        .collect()
}

/// The value of attribute `name` in start tag `tag` (as [`tags_with`] returns them).
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    tag[start..].split('"').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_attributes_are_found() {
        let html = r#"<tr><td class="cell" data-from="a" data-to="b" data-deny-packets="3">x</td><td data-from="b"></td>"#;
        let tags = tags_with(html, "td", "data-from", "a");
        assert_eq!(tags.len(), 1);
        assert_eq!(attr(tags[0], "data-deny-packets"), Some("3"));
        assert_eq!(attr(tags[0], "data-allow-packets"), None);
    }
}

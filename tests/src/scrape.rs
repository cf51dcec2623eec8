//! Reading the agent's Prometheus endpoint from inside a lab namespace (real HTTP via curl).

use std::time::Duration;

use crate::lab::Lab;

/// `curl` GET of `url` from inside `ns`: the body on a 2xx answer, `None` otherwise.
pub fn http_get(lab: &Lab, ns: &str, url: &str, timeout: Duration) -> Option<String> {
    let secs = format!("{:.3}", timeout.as_secs_f64());
    let out = lab.run_timeout(
        ns,
        &["curl", "-sS", "--fail", "--max-time", &secs, url],
        timeout + Duration::from_secs(2),
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `GET http://<addr>/metrics` from inside `ns` (e.g. the gateway, addr `127.0.0.1:9750`).
pub fn metrics(lab: &Lab, ns: &str, addr: &str) -> Option<String> {
    http_get(
        lab,
        ns,
        &format!("http://{addr}/metrics"),
        Duration::from_secs(3),
    )
}

/// The sum of every sample of metric `name` whose labels include all of `labels`; `None`
/// when no sample matches. `metric_value(text, "zone_agent_drops_total",
/// &[("reason", "no_rule")])`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for sample in text.lines().filter_map(parse_sample) {
        if sample.name == name
            && labels
                .iter()
                .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        {
            *total.get_or_insert(0.0) += sample.value;
        }
    }
    total
}

/// One sample line of the Prometheus text format.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses `name{k="v",...} value [timestamp]`; `None` for comments, blanks and bad lines.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) if line[..open].find(' ').is_none() => {
            let (labels, rest) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, rest)
        }
        _ => {
            let (name, rest) = line.split_once(' ')?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (after the `{`); returns the labels and what follows the `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = rest.split_once('=')?;
        let mut chars = after_key.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = &after_key[1 + end + 1..];
    }
}

/// `promtool check metrics` of `text` (an exposition): its complaints when it fails.
pub fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run promtool: {err}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = stdin.write_all(text.as_bytes());
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|err| format!("promtool: {err}"))?;
    written.map_err(|err| format!("writing to promtool: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP zone_agent_drops_total Packets dropped.
# TYPE zone_agent_drops_total counter
zone_agent_drops_total{reason="no_rule"} 7
zone_agent_drops_total{reason="spoofed_source"} 2
zone_agent_packets_total{from_zone="lgwan",to_zone="mynumber",verdict="allow"} 3
zone_agent_packets_total{from_zone="lgwan",to_zone="internet",verdict="allow"} 4
zone_agent_rule_packets_total{rule="a \"quoted\", odd}name"} 1.5
zone_agent_flows_active 5
"#;

    #[test]
    fn sums_matching_series() {
        assert_eq!(
            metric_value(TEXT, "zone_agent_drops_total", &[("reason", "no_rule")]),
            Some(7.0)
        );
        assert_eq!(metric_value(TEXT, "zone_agent_drops_total", &[]), Some(9.0));
        assert_eq!(
            metric_value(
                TEXT,
                "zone_agent_packets_total",
                &[("from_zone", "lgwan"), ("verdict", "allow")]
            ),
            Some(7.0)
        );
        assert_eq!(
            metric_value(TEXT, "zone_agent_flows_active", &[]),
            Some(5.0)
        );
        assert_eq!(
            metric_value(TEXT, "zone_agent_drops_total", &[("reason", "fragment")]),
            None
        );
    }

    #[test]
    fn parses_escaped_label_values() {
        let s = parse_sample(r#"zone_agent_rule_packets_total{rule="a \"quoted\", odd}name"} 1.5"#)
            .unwrap();
        assert_eq!(
            s.labels,
            vec![("rule".to_owned(), r#"a "quoted", odd}name"#.to_owned())]
        );
        assert_eq!(s.value, 1.5);
        assert_eq!(parse_sample("# comment"), None);
    }
}

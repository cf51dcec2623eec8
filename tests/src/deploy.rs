//! The monitoring files under `deploy/` as the tests read them: the Grafana dashboard's
//! queries and variables, with Grafana's variables replaced by concrete values, and where the
//! Prometheus rules, their unit tests and the example configuration are.
//!
//! Two suites use this: `xtask/tests/deploy.rs` (no root: every expression parses, every alert
//! has a `promtool test rules` case) and `tests/tests/prometheus.rs` (a real Prometheus in the
//! lab scrapes the agent, and every dashboard query returns data).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The scrape job name the rules (`ZoneAgentDown`) and the example configuration use.
pub const JOB: &str = "zone-agent";
/// The Grafana dashboard, under [`dir`].
pub const DASHBOARD: &str = "grafana/zone-agent.json";
/// The alerting rules, under [`dir`].
pub const RULES: &str = "prometheus/zone-agent.rules.yml";
/// `promtool test rules` cases for [`RULES`], under [`dir`].
pub const RULES_TEST: &str = "prometheus/zone-agent.rules.test.yml";
/// The example Prometheus configuration (loads [`RULES`] by a relative path), under [`dir`].
pub const PROMETHEUS_CONFIG: &str = "prometheus/prometheus.yml";

/// The repository's `deploy/` directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `deploy/<rel>`.
pub fn path(rel: &str) -> PathBuf {
    dir().join(rel)
}

/// The text of `deploy/<rel>`; panics with the path if it cannot be read.
pub fn read(rel: &str) -> String {
    let p = path(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// One PromQL expression of a dashboard panel (a panel's target).
#[derive(Clone, Debug)]
pub struct Query {
    pub panel_id: u64,
    pub panel: String,
    pub ref_id: String,
    /// As written in the dashboard, Grafana variables included.
    pub expr: String,
}

impl Query {
    /// A name for the query that is also a valid recording-rule name: `dashboard:p12_A`.
    pub fn record_name(&self) -> String {
        format!("dashboard:p{}_{}", self.panel_id, self.ref_id)
    }
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "panel {} {:?} target {}: {}",
            self.panel_id, self.panel, self.ref_id, self.expr
        )
    }
}

/// One variable of the dashboard's `templating.list`.
#[derive(Clone, Debug)]
pub struct Variable {
    pub name: String,
    /// `datasource`, `query`, …
    pub kind: String,
    /// The datasource type of a `datasource` variable, the query of a `query` variable.
    pub query: String,
}

/// The dashboard JSON.
pub struct Dashboard(pub Value);

impl Dashboard {
    /// Reads and parses [`DASHBOARD`]; panics if it is not JSON.
    pub fn load() -> Dashboard {
        let text = read(DASHBOARD);
        Dashboard(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}")),
        )
    }

    /// Every panel, those nested in collapsed rows included.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in array(&self.0["panels"]) {
            out.push(p);
            out.extend(array(&p["panels"]));
        }
        out
    }

    /// Every target expression of every panel, in panel order.
    pub fn queries(&self) -> Vec<Query> {
        let mut out = Vec::new();
        for p in self.panels() {
            for t in array(&p["targets"]) {
                out.push(Query {
                    panel_id: p["id"].as_u64().unwrap_or_default(),
                    panel: p["title"].as_str().unwrap_or_default().to_owned(),
                    ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        out
    }

    /// The first query of the panel titled `title`; panics if there is none.
    pub fn query(&self, title: &str) -> Query {
        self.queries()
            .into_iter()
            .find(|q| q.panel == title)
            .unwrap_or_else(|| panic!("{DASHBOARD} has no panel {title:?} with a query"))
    }

    /// The template variables.
    pub fn variables(&self) -> Vec<Variable> {
        array(&self.0["templating"]["list"])
            .map(|v| {
                // A query variable's query is an object in Grafana 10+ exports, a string before.
                let query = match &v["query"] {
                    Value::String(s) => s.clone(),
                    q => q["query"].as_str().unwrap_or_default().to_owned(),
                };
                Variable {
                    name: v["name"].as_str().unwrap_or_default().to_owned(),
                    kind: v["type"].as_str().unwrap_or_default().to_owned(),
                    query,
                }
            })
            .collect()
    }
}

fn array(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// `label_values(<selector>, <label>)`, the Prometheus data source's variable query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelValues {
    pub selector: String,
    pub label: String,
}

impl LabelValues {
    /// Parses `label_values(sel, label)`; `None` for any other form.
    pub fn parse(query: &str) -> Option<LabelValues> {
        let inner = query
            .trim()
            .strip_prefix("label_values(")?
            .strip_suffix(')')?;
        let (selector, label) = inner.rsplit_once(',')?;
        Some(LabelValues {
            selector: selector.trim().to_owned(),
            label: label.trim().to_owned(),
        })
    }
}

/// Concrete values for the variables Grafana substitutes into a query before it sends it.
#[derive(Clone, Debug)]
pub struct Values(BTreeMap<&'static str, String>);

impl Values {
    /// What Grafana would send for one `instance` of [`JOB`] scraped every `scrape` with a
    /// dashboard time range of `range`: `$__interval` is the scrape interval (the smallest
    /// step Grafana uses), `$__rate_interval` is max(`$__interval` + scrape, 4 × scrape), as
    /// Grafana computes it, so a `rate()` window always holds at least two samples.
    pub fn new(instance: &str, scrape: Duration, range: Duration) -> Values {
        let interval = scrape;
        let rate = (interval + scrape).max(scrape * 4);
        let vars = [
            ("job", JOB.to_owned()),
            ("instance", regex_escape(instance)),
            ("__interval", duration(interval)),
            ("__rate_interval", duration(rate)),
            ("__range", duration(range)),
        ];
        Values(vars.into_iter().collect())
    }

    /// `expr` with every `$name` and `${name}` replaced; an error names a variable it has no
    /// value for. A `$` not followed by a name (a regex anchor) is kept.
    pub fn substitute(&self, expr: &str) -> Result<String, String> {
        let mut out = String::with_capacity(expr.len());
        let mut rest = expr;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, tail) = match after.strip_prefix('{') {
                Some(braced) => {
                    let end = braced
                        .find('}')
                        .ok_or_else(|| format!("unclosed ${{ in {expr:?}"))?;
                    (&braced[..end], &braced[end + 1..])
                }
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            if name.is_empty() {
                out.push('$');
            } else {
                let value = self
                    .0
                    .get(name)
                    .ok_or_else(|| format!("no value for Grafana variable ${name} in {expr:?}"))?;
                out.push_str(value);
            }
            rest = tail;
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A PromQL duration: whole seconds (`5s`), else milliseconds.
fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `s` as a regular expression that matches only itself (`=~"$instance"` gets a literal).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            // Written into a PromQL string literal: the backslash itself is escaped there.
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values::new(
            "127.0.0.1:9750",
            Duration::from_secs(1),
            Duration::from_secs(300),
        )
    }

    #[test]
    fn substitutes_grafana_variables() {
        let v = values();
        assert_eq!(
            v.substitute(
                r#"rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval]) + y[$__range:$__interval]"#
            )
            .unwrap(),
            r#"rate(x{job=~"zone-agent", instance=~"127\\.0\\.0\\.1:9750"}[4s]) + y[300s:1s]"#
        );
        // A regex anchor is not a variable.
        assert_eq!(v.substitute(r#"x{a=~"b$"}"#).unwrap(), r#"x{a=~"b$"}"#);
        let err = v.substitute("x[$__range_ms]").unwrap_err();
        assert!(err.contains("$__range_ms"), "{err}");
    }

    #[test]
    fn parses_label_values() {
        assert_eq!(
            LabelValues::parse(r#"label_values(m{job=~"$job"}, instance)"#),
            Some(LabelValues {
                selector: r#"m{job=~"$job"}"#.into(),
                label: "instance".into()
            })
        );
        assert_eq!(LabelValues::parse("query_result(up)"), None);
    }
}

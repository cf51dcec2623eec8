//! Starting policies for the four models of the 総務省 guideline (`policy init`). They are
//! TOML files embedded in the binary, so that what `init` writes is exactly what the tests
//! check: each must validate with no error and no warning (lint included).

use std::fmt;

/// Where a 自治体 puts its staff terminals and systems (α / α′ / β / β′).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// α: terminals in LGWAN接続系; the web by 画面転送 into インターネット接続系.
    Alpha,
    /// α′: α plus specific SaaS reached from LGWAN接続系 as 特定通信.
    AlphaPrime,
    /// β: terminals in インターネット接続系; LGWAN business by 画面転送 into LGWAN接続系.
    Beta,
    /// β′: β with most business in インターネット接続系 and LGWAN接続系 reduced.
    BetaPrime,
}

impl Model {
    pub const ALL: [Model; 4] = [
        Model::Alpha,
        Model::AlphaPrime,
        Model::Beta,
        Model::BetaPrime,
    ];

    /// The name `--model` takes.
    pub fn name(self) -> &'static str {
        match self {
            Model::Alpha => "alpha",
            Model::AlphaPrime => "alpha-prime",
            Model::Beta => "beta",
            Model::BetaPrime => "beta-prime",
        }
    }

    /// The guideline's name for the model.
    pub fn label(self) -> &'static str {
        match self {
            Model::Alpha => "α",
            Model::AlphaPrime => "α′",
            Model::Beta => "β",
            Model::BetaPrime => "β′",
        }
    }

    /// The commented starting policy.
    pub fn template(self) -> &'static str {
        match self {
            Model::Alpha => include_str!("templates/alpha.toml"),
            Model::AlphaPrime => include_str!("templates/alpha-prime.toml"),
            Model::Beta => include_str!("templates/beta.toml"),
            Model::BetaPrime => include_str!("templates/beta-prime.toml"),
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::types::{Criticality, Segment};
    use crate::policy::validate;

    fn load(m: Model) -> crate::policy::Policy {
        let file = format!("{}.toml", m.name());
        match validate::parse_str(Path::new(&file), m.template()) {
            Ok((policy, warnings)) => {
                let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
                assert!(w.is_empty(), "{m}: warnings:\n{}", w.join("\n"));
                policy
            }
            Err(diags) => panic!("{m} template rejected:\n{diags}"),
        }
    }

    #[test]
    fn every_template_checks_without_errors_or_warnings() {
        for m in Model::ALL {
            load(m);
        }
    }

    #[test]
    fn names_are_what_clap_accepts() {
        use clap::ValueEnum as _;
        for m in Model::ALL {
            assert_eq!(Model::from_str(m.name(), false), Ok(m));
        }
    }

    #[test]
    fn templates_have_the_three_segments_with_japanese_labels() {
        for m in Model::ALL {
            let p = load(m);
            let zone = |name: &str| {
                p.zones
                    .iter()
                    .find(|z| z.name == name)
                    .unwrap_or_else(|| panic!("{m}: no zone {name}"))
            };
            let my = zone("mynumber");
            assert_eq!(my.label.as_deref(), Some("マイナンバー利用事務系"));
            assert_eq!(
                (my.criticality, my.segment),
                (Criticality::Critical, Some(Segment::Mynumber))
            );
            assert_eq!(zone("lgwan").label.as_deref(), Some("LGWAN接続系"));
            assert!(zone("internet").is_internet());
            assert_eq!(
                zone("internet").label.as_deref(),
                Some("インターネット接続系")
            );
            assert_eq!(
                zone("gcloud").label.as_deref(),
                Some("ガバメントクラウド接続")
            );
        }
    }

    /// The 特定通信 each model is about: who reaches whom.
    #[test]
    fn templates_carry_their_models_typical_rules() {
        let has = |p: &crate::policy::Policy, from: &str, to: &str, what: &str| {
            p.rules.iter().any(|r| {
                p.zones[r.from].name == from
                    && p.zones[r.to].name == to
                    && r.description.as_deref().unwrap_or("").contains(what)
            })
        };
        for m in Model::ALL {
            let p = load(m);
            assert!(
                has(&p, "lgwan", "mynumber", "中間サーバー"),
                "{m}: relay to the import server"
            );
            assert!(
                has(&p, "mynumber", "lgwan", "WSUS"),
                "{m}: update distribution"
            );
            assert!(
                has(&p, "mynumber", "gcloud", "ガバメントクラウド"),
                "{m}: government cloud"
            );
            assert!(
                has(&p, "internet", "lgwan", "無害化"),
                "{m}: sanitised files"
            );
            let alpha = matches!(m, Model::Alpha | Model::AlphaPrime);
            // α: LGWAN terminals reach out to the web by screen transfer; β: the other way.
            assert_eq!(has(&p, "lgwan", "internet", "画面転送"), alpha, "{m}");
            assert_eq!(has(&p, "internet", "lgwan", "画面転送"), !alpha, "{m}");
            assert_eq!(
                has(&p, "lgwan", "internet", "SaaS"),
                m == Model::AlphaPrime,
                "{m}"
            );
            // No model lets the マイナンバー利用事務系 talk to the internet.
            assert!(!p.rules.iter().any(|r| p.zones[r.from].name == "mynumber" && p.zones[r.to].name == "internet"));
        }
    }
}

//! The `zone-agent policy` commands through the built binary: what an operator types and
//! sees (output, exit status). No root, no network namespaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zone_agent::policy::template::Model;

const BIN: &str = env!("CARGO_BIN_EXE_zone-agent");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A directory of its own for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("za-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn zone_agent<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn check_offline(path: &Path) -> Run {
    zone_agent([
        "policy".as_ref(),
        "check".as_ref(),
        "--offline".as_ref(),
        path.as_os_str(),
    ])
}

// === policy init ===

#[test]
fn init_then_check_passes_for_every_model() {
    let dir = Scratch::new("init_check");
    for m in Model::ALL {
        let path = dir.path(&format!("{}.toml", m.name()));
        let init = zone_agent([
            "policy".as_ref(),
            "init".as_ref(),
            "--model".as_ref(),
            m.name().as_ref(),
            "--output".as_ref(),
            path.as_os_str(),
        ]);
        assert_eq!(init.code, Some(0), "{m}: {init}");
        assert!(
            init.stdout.is_empty(),
            "{m}: the policy goes to the file: {init}"
        );
        assert!(
            init.stderr.contains("policy check"),
            "{m}: says what to do next: {init}"
        );
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(written, m.template(), "{m}");
        assert!(written.contains(&format!("--model {}", m.name())), "{m}");

        let check = check_offline(&path);
        assert_eq!(check.code, Some(0), "{m}: {check}");
        assert!(check.stdout.contains(": OK"), "{m}: {check}");
        assert!(
            !check.stderr.contains("warning") && !check.stderr.contains("error"),
            "{m}: the template has guideline findings: {check}"
        );
    }
}

#[test]
fn init_writes_to_stdout_by_default() {
    let run = zone_agent(["policy", "init", "--model", "alpha-prime"]);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.stdout, Model::AlphaPrime.template());
    assert!(run.stdout.contains("label = \"マイナンバー利用事務系\""));
}

#[test]
fn init_does_not_overwrite_without_force() {
    let dir = Scratch::new("init_force");
    let path = dir.write("policy.toml", "# the policy in service\n");
    let args = |force: bool| {
        let mut a = vec![
            "policy".into(),
            "init".into(),
            "--model".into(),
            "beta".into(),
        ];
        a.push("--output".into());
        a.push(path.clone().into_os_string());
        if force {
            a.push("--force".into());
        }
        a
    };
    let refused = zone_agent(args(false));
    assert_eq!(refused.code, Some(2), "{refused}");
    assert!(
        refused.stderr.contains("already exists") && refused.stderr.contains("--force"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        "# the policy in service\n"
    );

    let forced = zone_agent(args(true));
    assert_eq!(forced.code, Some(0), "{forced}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        Model::Beta.template()
    );
}

#[test]
fn init_rejects_an_unknown_model() {
    let run = zone_agent(["policy", "init", "--model", "gamma"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("alpha-prime"),
        "lists the models: {run}"
    );
}

// === policy check and the guideline lint ===

#[test]
fn check_fails_on_lint_errors_with_their_locations() {
    let path = fixture("guideline_lint.toml");
    let run = check_offline(&path);
    assert_eq!(run.code, Some(1), "{run}");
    let at =
        |line_col: &str, severity: &str| format!("{}:{line_col}: {severity}: ", path.display());
    assert!(run.stderr.contains(&at("24:6", "error")), "{run}");
    assert!(run.stderr.contains(&at("32:12", "error")), "{run}");
    assert!(run.stderr.contains(&at("36:1", "warning")), "{run}");
    assert!(run.stderr.contains("help: "), "{run}");
    assert!(
        run.stderr
            .contains("2 error(s); the policy was not applied"),
        "{run}"
    );
}

#[test]
fn check_passes_with_lint_warnings_and_shows_acknowledgements() {
    let dir = Scratch::new("check_warn");
    let text = std::fs::read_to_string(fixture("guideline_lint.toml"))
        .unwrap_or_default()
        // Drop the two rules that are errors (lines 21..=35); keep the warning and the
        // acknowledged exception.
        .lines()
        .enumerate()
        .filter(|(i, _)| !(20..35).contains(i))
        .map(|(_, l)| format!("{l}\n"))
        .collect::<String>();
    let path = dir.write("warn.toml", &text);
    let run = check_offline(&path);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("OK") && run.stdout.contains("3 warnings"),
        "{run}"
    );
    assert!(
        run.stderr.contains(": warning: rule \"relay-loose\""),
        "{run}"
    );
    assert!(
        run.stderr.contains(
            "note: guideline findings on rule \"vendor-maintenance\" are acknowledged: 保守業者"
        ),
        "{run}"
    );
}

// === policy diff ===

fn diff(old: &Path, new: &Path) -> Run {
    zone_agent([
        "policy".as_ref(),
        "diff".as_ref(),
        old.as_os_str(),
        new.as_os_str(),
    ])
}

#[test]
fn diff_of_identical_policies_exits_0() {
    let example = fixture("example.toml");
    let run = diff(&example, &example);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("no difference"), "{run}");
}

#[test]
fn diff_says_what_a_reload_would_change_and_exits_1() {
    let dir = Scratch::new("diff");
    let example = std::fs::read_to_string(fixture("example.toml")).unwrap_or_default();
    let edited = example
        // eltax-relay: one more port range, and the MAC limitation dropped.
        .replacen(
            "ports = [\"443\", \"8000-8010\"]",
            "ports = [\"443\", \"8000-8020\"]",
            1,
        )
        .replacen("source_macs = [\"52:54:00:12:34:56\"]\n", "", 1)
        // ntp-trial leaves audit mode; mail-in goes.
        .replacen("mode = \"audit\"\n", "", 1)
        .replacen(
            "[[rules]]\nname = \"mail-in\"",
            "[[rules]]\nname = \"mail-in-v2\"",
            1,
        );
    let old = fixture("example.toml");
    let new = dir.write("new.toml", &edited);
    let run = diff(&old, &new);
    assert_eq!(run.code, Some(1), "{run}");
    let expected = [
        format!("--- {}", old.display()),
        format!("+++ {}", new.display()),
        "+ rule \"mail-in-v2\": internet -> lgwan, tcp ports 25, destinations 10.20.3.25/32".to_owned(),
        "- rule \"mail-in\": internet -> lgwan, tcp ports 25, destinations 10.20.3.25/32".to_owned(),
        "~ rule \"eltax-relay\" widened:".to_owned(),
        "    ports widened: +8011-8020".to_owned(),
        "    source_macs widened: the MAC limitation is gone (was 52:54:00:12:34:56), now any MAC".to_owned(),
        "~ rule \"ntp-trial\" changed:".to_owned(),
        "    mode changed: audit -> enforce (its traffic passes as before, counted as allowed)".to_owned(),
        "1 rule(s) added, 1 rule(s) removed, 1 rule(s) widened, 1 rule(s) changed without effect on traffic".to_owned(),
    ];
    let got: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(got, expected, "{run}");
    // The edit took the MAC limit off a rule into the critical zone: what a reload would log.
    assert!(
        run.stderr.contains(
            "warning: rule \"eltax-relay\" into critical zone \"mynumber\" has no path limitation"
        ),
        "{run}"
    );
}

#[test]
fn diff_checks_both_files_first_and_exits_2() {
    let dir = Scratch::new("diff_err");
    let example = fixture("example.toml");
    let broken = dir.write("broken.toml", "version = 1\nmode = \"block\"\n");
    for (old, new) in [(&example, &broken), (&broken, &example)] {
        let run = diff(old, new);
        assert_eq!(run.code, Some(2), "{run}");
        assert!(run.stdout.is_empty(), "{run}");
        assert!(
            run.stderr.contains(&format!(
                "{}:2:8: error: invalid `mode` value \"block\"",
                broken.display()
            )),
            "{run}"
        );
        assert!(run.stderr.contains("nothing compared"), "{run}");
    }
    // A guideline error in NEW is an error like any other: the reload would be rejected.
    let run = diff(&example, &fixture("guideline_lint.toml"));
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("guideline_lint.toml:24:6: error"),
        "{run}"
    );
    let missing = dir.path("missing.toml");
    let run = diff(&example, &missing);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("cannot read policy file"), "{run}");
}

#[test]
fn export_nft_writes_one_chain_per_zone_and_a_line_per_rule_family() {
    let run = zone_agent(["policy", "export", fixture("example.toml").to_str().unwrap(), "--format", "nft"]);
    assert_eq!(run.code, Some(0), "{run}");
    let out = &run.stdout;
    // Replaces the table in one transaction.
    assert!(out.contains("table inet zone_agent\ndelete table inet zone_agent\n"), "{run}");
    for zone in 1..=3 {
        assert!(out.contains(&format!("chain from_zone{zone} {{")), "{run}");
    }
    // jyuki-print names a v4 and a v6 destination: one line per family; eltax-relay only v4.
    assert_eq!(out.matches("comment \"rule 1 jyuki-print\"").count(), 2, "{run}");
    assert_eq!(out.matches("comment \"rule 0 eltax-relay\"").count(), 1, "{run}");
    assert!(
        out.contains("ether saddr { 52:54:00:12:34:56 } meta l4proto tcp th dport { 443, 8000-8010 }"),
        "{run}"
    );
    // A VLAN of a zone interface that no zone claims is dropped like the data path does.
    assert!(out.contains("iifname \"eth3.*\" counter drop comment \"unknown_interface\""), "{run}");
}

fn export_to(policy: &Path, out: &Path) -> Run {
    zone_agent([
        "policy".as_ref(),
        "export".as_ref(),
        policy.as_os_str(),
        "--format".as_ref(),
        "nft".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
    ] as [&std::ffi::OsStr; 7])
}

#[test]
fn export_refuses_an_invalid_policy_and_writes_nothing() {
    let dir = Scratch::new("export_err");
    let out = dir.path("ruleset.nft");
    let run = export_to(&fixture("bad_choice.toml"), &out);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("bad_choice.toml:2:8: error"), "{run}");
    assert!(run.stderr.contains("nothing exported"), "{run}");
    assert!(!out.exists(), "{run}");
    let run = export_to(&fixture("example.toml"), &out);
    assert_eq!(run.code, Some(0), "{run}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with("}\n"), "{text}");
}

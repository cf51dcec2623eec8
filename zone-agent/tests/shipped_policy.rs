//! The example policy that `cargo xtask install` puts at /etc/zone-agent/policy.toml
//! (`systemd/policy.toml`) passes `policy check` with neither errors nor warnings, and ships in
//! audit mode so that a first start before editing it cannot cut traffic. No root.

use std::path::{Path, PathBuf};

use zone_agent::policy::Mode;
use zone_agent::policy::validate::{self, OfflineEnvironment};

fn shipped_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/policy.toml")
}

#[test]
fn shipped_example_policy_is_valid_and_clean() {
    let path = shipped_policy();
    let (policy, warnings) = match validate::load(&path, &OfflineEnvironment) {
        Ok(ok) => ok,
        Err(diags) => panic!("{} is rejected:\n{diags}", path.display()),
    };
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.is_empty(),
        "an example to copy should draw no warnings:\n{}",
        warnings.join("\n")
    );
    assert_eq!(
        policy.mode,
        Mode::Audit,
        "the shipped example must start in audit mode"
    );
    assert!(policy.zones.len() >= 3 && !policy.rules.is_empty());
}

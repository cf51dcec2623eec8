//! Tests of `cargo xtask install`: the layout, the files it writes and their modes.

use super::*;
use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

fn ws_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is one level below the workspace")
        .to_owned()
}

/// A temp dir removed on drop (kept if the test panics, for inspection).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xtask-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A stand-in for the agent binary: executable, distinguishable by `version`.
fn fake_binary(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join(format!("zone-agent-{version}"));
    fs::write(&path, format!("#!/bin/sh\necho zone-agent {version}\n")).unwrap();
    set_mode(&path, 0o755).unwrap();
    path
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn install(layout: &Layout, binary: &Path) -> Vec<Installed> {
    install_files(layout, &Sources::of(&ws_root()), binary)
        .unwrap_or_else(|e| panic!("install failed: {e:#}"))
}

#[test]
fn unit_dir_follows_the_prefix() {
    assert_eq!(
        unit_dir(Path::new("/usr/local")),
        Path::new("/usr/local/lib/systemd/system")
    );
    assert_eq!(
        unit_dir(Path::new("/usr")),
        Path::new("/usr/lib/systemd/system")
    );
    assert_eq!(
        unit_dir(Path::new("/opt/za")),
        Path::new("/etc/systemd/system")
    );
}

#[test]
fn unit_text_substitutes_the_prefix() {
    let shipped = fs::read_to_string(Sources::of(&ws_root()).unit).unwrap();
    assert_eq!(
        unit_text(&shipped, Path::new(DEFAULT_PREFIX)).unwrap(),
        shipped
    );
    let opt = unit_text(&shipped, Path::new("/opt/za")).unwrap();
    assert!(
        opt.contains("\nExecStart=/opt/za/bin/zone-agent run "),
        "{opt}"
    );
    assert!(opt.contains("Documentation=file:/opt/za/share/doc/zone-agent/operations.md"));
    assert!(!opt.contains("/usr/local"), "{opt}");
}

/// Every file lands where the layout says with its mode; a second install replaces the
/// binary, the unit and the docs, and keeps the operator's config and policy.
#[test]
fn install_places_files_with_their_modes_and_keeps_config_on_reinstall() {
    let tmp = TempDir::new("install");
    let dest = tmp.0.join("root");
    let layout = Layout::new(Some(&dest), Path::new(DEFAULT_PREFIX)).unwrap();
    let v1 = fake_binary(&tmp.0, "1");
    let first = install(&layout, &v1);

    let sources = Sources::of(&ws_root());
    let expect = [
        ("/usr/local/bin/zone-agent", 0o755, v1.clone()),
        (
            "/usr/local/lib/systemd/system/zone-agent.service",
            0o644,
            sources.unit.clone(),
        ),
        (
            "/etc/zone-agent/zone-agent.toml",
            0o640,
            sources.config.clone(),
        ),
        ("/etc/zone-agent/policy.toml", 0o600, sources.policy.clone()),
        (
            "/usr/local/share/doc/zone-agent/operations.md",
            0o644,
            sources.guide.clone(),
        ),
        (
            "/usr/local/share/doc/zone-agent/zone-agent.toml.example",
            0o644,
            sources.config.clone(),
        ),
        (
            "/usr/local/share/doc/zone-agent/policy.toml.example",
            0o644,
            sources.policy.clone(),
        ),
    ];
    assert_eq!(first.len(), expect.len(), "{first:#?}");
    for (path, mode, source) in &expect {
        let staged = dest.join(path.trim_start_matches('/'));
        assert_eq!(mode_of(&staged), *mode, "mode of {path}");
        assert_eq!(
            fs::read(&staged).unwrap(),
            fs::read(source).unwrap(),
            "{path} is a copy of {}",
            source.display()
        );
        let entry = first.iter().find(|f| f.path == Path::new(path)).unwrap();
        assert_eq!(entry.outcome, Outcome::Installed, "{path}");
    }
    assert_eq!(mode_of(&dest.join("etc/zone-agent")), 0o750);
    for dir in [
        "usr/local/bin",
        "usr/local/lib/systemd/system",
        "usr/local/share/doc/zone-agent",
    ] {
        assert_eq!(mode_of(&dest.join(dir)), 0o755, "mode of {dir}");
    }
    // No temporary file is left behind.
    for dir in [
        "usr/local/bin",
        "etc/zone-agent",
        "usr/local/lib/systemd/system",
    ] {
        for entry in fs::read_dir(dest.join(dir)).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().starts_with('.'),
                "{dir}/{name:?} left behind"
            );
        }
    }

    // The operator edits the config and the policy (and loosens a mode); an upgrade follows.
    let config = dest.join("etc/zone-agent/zone-agent.toml");
    let policy = dest.join("etc/zone-agent/policy.toml");
    fs::write(&config, "metrics_addr = \"10.0.0.1:9750\"\n").unwrap();
    fs::write(&policy, "# the site's policy\n").unwrap();
    set_mode(&config, 0o644).unwrap();
    let v2 = fake_binary(&tmp.0, "2");
    let second = install(&layout, &v2);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "metrics_addr = \"10.0.0.1:9750\"\n"
    );
    assert_eq!(
        fs::read_to_string(&policy).unwrap(),
        "# the site's policy\n"
    );
    assert_eq!(
        mode_of(&config),
        0o644,
        "an existing file's mode is the operator's"
    );
    let outcome = |p: &str| {
        &second
            .iter()
            .find(|f| f.path == Path::new(p))
            .unwrap()
            .outcome
    };
    assert_eq!(*outcome("/etc/zone-agent/zone-agent.toml"), Outcome::Kept);
    assert_eq!(*outcome("/etc/zone-agent/policy.toml"), Outcome::Kept);
    assert_eq!(*outcome("/usr/local/bin/zone-agent"), Outcome::Replaced);
    assert_eq!(
        *outcome("/usr/local/lib/systemd/system/zone-agent.service"),
        Outcome::Replaced
    );
    let bin = dest.join("usr/local/bin/zone-agent");
    assert_eq!(
        fs::read(&bin).unwrap(),
        fs::read(&v2).unwrap(),
        "binary replaced"
    );
    assert_eq!(mode_of(&bin), 0o755);
}

/// Another prefix moves the binary and the docs, and the unit points at them.
#[test]
fn install_with_another_prefix_rewrites_the_unit() {
    let tmp = TempDir::new("install-prefix");
    let dest = tmp.0.join("root");
    let layout = Layout::new(Some(&dest), Path::new("/opt/za")).unwrap();
    install(&layout, &fake_binary(&tmp.0, "1"));
    assert_eq!(mode_of(&dest.join("opt/za/bin/zone-agent")), 0o755);
    let unit = fs::read_to_string(dest.join("etc/systemd/system/zone-agent.service")).unwrap();
    assert!(unit.contains(
        "\nExecStart=/opt/za/bin/zone-agent run --config /etc/zone-agent/zone-agent.toml\n"
    ));
    assert!(
        dest.join("opt/za/share/doc/zone-agent/operations.md")
            .is_file()
    );
}

/// `systemd-analyze` from PATH or its Debian place; None (the test then skips) without it.
fn systemd_analyze() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
}

/// Runs `cmd`; panics unless it succeeds with nothing at all on stdout or stderr
/// (`systemd-analyze verify` reports most problems as warnings, with exit status 0).
#[track_caller]
fn assert_silent_success(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "{what}: {}\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
}

/// `systemd-analyze verify` accepts the shipped unit without a single warning.
///
/// verify also checks that every Exec*= program exists, and /usr/local/bin/zone-agent does
/// not on a build machine. So the unit is installed (into a temp DESTDIR, byte for byte the
/// shipped file) and verified twice: (1) as root, the very installed file, in a private
/// mount namespace where a tmpfs on /usr/local/bin holds the installed binary; (2) for
/// everyone, a copy whose only change is ExecStart= naming the installed binary's path.
#[test]
fn systemd_analyze_verify_passes_without_warnings() {
    let Some(analyze) = systemd_analyze() else {
        eprintln!(
            "SKIP systemd_analyze_verify_passes_without_warnings: systemd-analyze not found \
             (`cargo xtask setup` installs it: Debian package systemd)"
        );
        return;
    };
    let tmp = TempDir::new("verify");
    let dest = tmp.0.join("root");
    let layout = Layout::new(Some(&dest), Path::new(DEFAULT_PREFIX)).unwrap();
    install(&layout, &fake_binary(&tmp.0, "1"));
    let unit = layout.staged(&layout.unit());
    let binary = layout.staged(&layout.binary());
    let shipped = fs::read_to_string(Sources::of(&ws_root()).unit).unwrap();
    assert_eq!(
        fs::read_to_string(&unit).unwrap(),
        shipped,
        "installed unit == shipped unit"
    );

    let as_root = nix::unistd::geteuid().is_root();
    if as_root && Path::new("/usr/local/bin").is_dir() {
        let script = r#"mount -t tmpfs -o mode=0755 xtask-verify /usr/local/bin &&
cp "$1" /usr/local/bin/zone-agent && exec "$2" verify "$3""#;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&binary)
        .arg(&analyze)
        .arg(&unit);
        assert_silent_success(
            &mut cmd,
            "systemd-analyze verify (installed unit, as shipped)",
        );
    } else {
        eprintln!(
            "note: not root (or no /usr/local/bin): the unit is verified with ExecStart= \
             pointing at the staged binary only"
        );
    }

    let old = "\nExecStart=/usr/local/bin/zone-agent ";
    assert_eq!(
        shipped.matches(old).count(),
        1,
        "one ExecStart= naming the binary"
    );
    let copy_dir = tmp.0.join("copy");
    fs::create_dir_all(&copy_dir).unwrap();
    let copy = copy_dir.join(UNIT_NAME);
    let new = format!("\nExecStart={} ", binary.display());
    fs::write(&copy, shipped.replace(old, &new)).unwrap();
    assert_silent_success(
        Command::new(&analyze).arg("verify").arg(&copy),
        "systemd-analyze verify (ExecStart= on the staged binary)",
    );

    // The hardening does not silently erode: systemd's own exposure score (0 = locked
    // down, 10 = none) stays at 2.4 or better. It cannot reach 0: the agent is a root
    // service with CAP_BPF and CAP_NET_ADMIN on the host's network, by design.
    let out = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=24", "--no-pager"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze security");
    assert!(
        out.status.success(),
        "systemd-analyze security: exposure above 2.4 ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped unit keeps the properties the agent and docs/operations.md rely on.
#[test]
fn unit_keeps_its_contract() {
    let unit = fs::read_to_string(Sources::of(&ws_root()).unit).unwrap();
    let lines: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for expected in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/zone-agent run --config /etc/zone-agent/zone-agent.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "Restart=on-failure",
        "StateDirectory=zone-agent",
        "ReadWritePaths=/sys/fs/bpf",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "SystemCallFilter=bpf",
    ] {
        assert!(lines.contains(&expected), "the unit lost `{expected}`");
    }
    // systemd 252: ProtectKernelTunables=yes makes /sys/fs/bpf read-only, and
    // ReadWritePaths=/sys/fs/bpf cannot undo it (seen booting the unit under systemd).
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("ProtectKernelTunables=")),
        "ProtectKernelTunables= would make the bpffs read-only: keep the ReadOnlyPaths= form"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ReadOnlyPaths=/sys /proc/sys"))
    );
    for forbidden in ["PrivateNetwork=", "PrivateUsers=", "User=", "DynamicUser="] {
        assert!(
            !lines.iter().any(|l| l.starts_with(forbidden)),
            "`{forbidden}` would hide the host's interfaces or bpffs, or drop the capabilities"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("WatchdogSec=")),
        "the unit lost its watchdog"
    );
}

/// The example config uses only the documented keys, with the documented types.
#[test]
fn example_config_uses_the_documented_keys() {
    let text = fs::read_to_string(Sources::of(&ws_root()).config).unwrap();
    let config: toml::Table = text.parse().expect("systemd/zone-agent.toml is TOML");
    for (key, value) in &config {
        let ok = match key.as_str() {
            "policy" | "metrics_addr" | "state_dir" | "pin_dir" => value.is_str(),
            "xdp_mode" => ["auto", "native", "generic"].contains(&value.as_str().unwrap_or("")),
            "fail_open_on_exit" => value.as_bool() == Some(false),
            "failsafe" => value.is_array(),
            _ => false,
        };
        assert!(ok, "zone-agent.toml: unexpected `{key} = {value}`");
    }
    assert_eq!(
        config["policy"].as_str(),
        Some("/etc/zone-agent/policy.toml")
    );
    assert_eq!(config["pin_dir"].as_str(), Some("/sys/fs/bpf/zone-agent"));
    assert_eq!(config["state_dir"].as_str(), Some("/var/lib/zone-agent"));
    // The failsafe example, once uncommented, is valid TOML of the documented shape.
    let failsafe: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# [[failsafe]]"))
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let parsed: toml::Table = failsafe.parse().expect("the commented [[failsafe]] parses");
    let entry = &parsed["failsafe"].as_array().unwrap()[0];
    for key in ["name", "protocol", "ports", "sources", "interfaces"] {
        assert!(entry.get(key).is_some(), "failsafe example lacks `{key}`");
    }
}

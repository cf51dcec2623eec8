//! `cargo xtask install`: the release binary, the systemd unit, the example configuration and
//! policy, and the operations guide, each in its place (docs/operations.md, "Installing").
//!
//! | what                     | where (DESTDIR prepended)                          | mode | existing file |
//! |--------------------------|----------------------------------------------------|------|---------------|
//! | binary                   | PREFIX/bin/zone-agent                              | 0755 | replaced      |
//! | unit                     | see [`unit_dir`] /zone-agent.service               | 0644 | replaced      |
//! | config                   | /etc/zone-agent/zone-agent.toml                    | 0640 | kept          |
//! | policy                   | /etc/zone-agent/policy.toml                        | 0600 | kept          |
//! | guide, pristine examples | PREFIX/share/doc/zone-agent/                       | 0644 | replaced      |
//!
//! Replaced files are written beside the old one and renamed over it, so a running agent keeps
//! its (old) binary and a crash halfway never leaves half a file. The unit names
//! `/usr/local/...` paths; another PREFIX is substituted into it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{Workspace, build, exec, probe, setup, step};

/// The prefix the shipped unit is written for.
pub const DEFAULT_PREFIX: &str = "/usr/local";
/// Configuration directory (not under PREFIX: `/etc` is where an operator looks).
pub const CONF_DIR: &str = "/etc/zone-agent";
pub const UNIT_NAME: &str = "zone-agent.service";

#[derive(clap::Args)]
pub struct Args {
    /// Stage every file under DIR instead of / (for packaging or copying to the gateway).
    /// `systemctl daemon-reload` is then not run.
    #[arg(long, value_name = "DIR")]
    destdir: Option<PathBuf>,
    /// Installation prefix: the binary goes to PREFIX/bin, the guide to PREFIX/share/doc.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PREFIX)]
    prefix: PathBuf,
    /// Install this zone-agent binary instead of building target/release/zone-agent.
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
}

/// Where each file goes, for one DESTDIR and PREFIX.
pub struct Layout {
    /// `/` when installing for real.
    pub destdir: PathBuf,
    /// Absolute, as the installed system sees it (no DESTDIR).
    pub prefix: PathBuf,
}

/// The source files in the repository.
pub struct Sources {
    pub unit: PathBuf,
    pub config: PathBuf,
    pub policy: PathBuf,
    pub guide: PathBuf,
}

impl Sources {
    pub fn of(ws_root: &Path) -> Sources {
        Sources {
            unit: ws_root.join("systemd/zone-agent.service"),
            config: ws_root.join("systemd/zone-agent.toml"),
            policy: ws_root.join("systemd/policy.toml"),
            guide: ws_root.join("docs/operations.md"),
        }
    }
}

/// What happened to one file.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    Replaced,
    /// An operator's file that install never overwrites.
    Kept,
}

/// One installed (or kept) file, as the installed system names it.
#[derive(Debug)]
pub struct Installed {
    pub path: PathBuf,
    pub mode: u32,
    pub outcome: Outcome,
}

/// Unit search path entry for PREFIX (systemd.unit(5), "Unit File Load Path"):
/// `/usr/local` → `/usr/local/lib/systemd/system` ("system units installed by the
/// administrator"), `/usr` → `/usr/lib/systemd/system` (a distribution package); any other
/// prefix is not searched by systemd, so `/etc/systemd/system`. Either of the first two
/// leaves `/etc/systemd/system` to the operator: a full override made with
/// `systemctl edit --full zone-agent` lands there and survives every upgrade.
pub fn unit_dir(prefix: &Path) -> PathBuf {
    match prefix.to_str() {
        Some("/usr/local") => "/usr/local/lib/systemd/system".into(),
        Some("/usr") => "/usr/lib/systemd/system".into(),
        _ => "/etc/systemd/system".into(),
    }
}

impl Layout {
    pub fn new(destdir: Option<&Path>, prefix: &Path) -> Result<Layout> {
        if !prefix.is_absolute() {
            bail!(
                "--prefix must be an absolute path, not {}",
                prefix.display()
            );
        }
        let destdir = match destdir {
            Some(d) => std::path::absolute(d)
                .with_context(|| format!("cannot resolve --destdir {}", d.display()))?,
            None => PathBuf::from("/"),
        };
        Ok(Layout {
            destdir,
            prefix: prefix.to_owned(),
        })
    }

    pub fn binary(&self) -> PathBuf {
        self.prefix.join("bin/zone-agent")
    }
    pub fn unit(&self) -> PathBuf {
        unit_dir(&self.prefix).join(UNIT_NAME)
    }
    pub fn config(&self) -> PathBuf {
        Path::new(CONF_DIR).join("zone-agent.toml")
    }
    pub fn policy(&self) -> PathBuf {
        Path::new(CONF_DIR).join("policy.toml")
    }
    pub fn doc_dir(&self) -> PathBuf {
        self.prefix.join("share/doc/zone-agent")
    }

    /// `path` (absolute, as the installed system sees it) under DESTDIR.
    pub fn staged(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        self.destdir.join(relative)
    }

    fn is_live(&self) -> bool {
        self.destdir == Path::new("/")
    }
}

/// The shipped unit with PREFIX substituted for `/usr/local` in the paths it names.
pub fn unit_text(shipped: &str, prefix: &Path) -> Result<String> {
    let prefix = prefix.to_str().context("--prefix must be valid UTF-8")?;
    for needle in [
        "/usr/local/bin/zone-agent",
        "/usr/local/share/doc/zone-agent",
    ] {
        if !shipped.contains(needle) {
            bail!("systemd/{UNIT_NAME} no longer names {needle}: update xtask/src/install.rs");
        }
    }
    Ok(shipped
        .replace(
            "/usr/local/bin/zone-agent",
            &format!("{prefix}/bin/zone-agent"),
        )
        .replace(
            "/usr/local/share/doc/zone-agent",
            &format!("{prefix}/share/doc/zone-agent"),
        ))
}

pub fn run(ws: &Workspace, args: &Args) -> Result<()> {
    let layout = Layout::new(args.destdir.as_deref(), &args.prefix)?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            // Only what building needs; not the lab's test tools, which have no place on a gateway.
            setup::build_prerequisites(ws)?;
            build::agent(ws, true)?
        }
    };
    step(&format!(
        "install: into {} (prefix {})",
        layout.destdir.display(),
        layout.prefix.display()
    ));
    let installed = install_files(&layout, &Sources::of(&ws.root), &binary)?;
    for file in &installed {
        let what = match file.outcome {
            Outcome::Installed => "installed",
            Outcome::Replaced => "replaced ",
            Outcome::Kept => "KEPT     ",
        };
        println!("    {what} {:04o} {}", file.mode, file.path.display());
    }
    for file in installed.iter().filter(|f| f.outcome == Outcome::Kept) {
        println!(
            "    note: {} exists and was left as it is; the shipped example is in {}",
            file.path.display(),
            layout.doc_dir().display()
        );
    }
    let shadow = Path::new("/etc/systemd/system").join(UNIT_NAME);
    if layout.unit() != shadow && layout.staged(&shadow).exists() {
        println!(
            "    WARNING: {} exists and overrides {} (systemctl edit --full?); \
             compare them, then remove it if the new unit should apply",
            shadow.display(),
            layout.unit().display()
        );
    }
    systemd_reload(ws, &layout)?;
    next_steps(&layout);
    Ok(())
}

/// Installs every file under `layout` from `sources` and `binary`, never overwriting the
/// configuration or the policy.
pub fn install_files(layout: &Layout, sources: &Sources, binary: &Path) -> Result<Vec<Installed>> {
    if !binary.is_file() {
        bail!("{} does not exist or is not a file", binary.display());
    }
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let shipped_unit = String::from_utf8(read(&sources.unit)?)
        .with_context(|| format!("{} is not UTF-8", sources.unit.display()))?;
    let unit = unit_text(&shipped_unit, &layout.prefix)?;
    let config = read(&sources.config)?;
    let policy = read(&sources.policy)?;
    let doc = layout.doc_dir();

    let mut done = Vec::new();
    done.push(replace(layout, &layout.binary(), &read(binary)?, 0o755)?);
    done.push(replace(layout, &layout.unit(), unit.as_bytes(), 0o644)?);
    // The directory holds the policy (the network's structure): not world-readable.
    make_dir(layout, Path::new(CONF_DIR), 0o750)?;
    done.push(keep_or_create(layout, &layout.config(), &config, 0o640)?);
    done.push(keep_or_create(layout, &layout.policy(), &policy, 0o600)?);
    done.push(replace(
        layout,
        &doc.join("operations.md"),
        &read(&sources.guide)?,
        0o644,
    )?);
    done.push(replace(
        layout,
        &doc.join("zone-agent.toml.example"),
        &config,
        0o644,
    )?);
    done.push(replace(
        layout,
        &doc.join("policy.toml.example"),
        &policy,
        0o644,
    )?);
    Ok(done)
}

/// Creates `dir` (and missing parents, 0755) with `mode` if it does not exist; an existing
/// directory keeps its mode (the operator may have chosen it).
fn make_dir(layout: &Layout, dir: &Path, mode: u32) -> Result<()> {
    let staged = layout.staged(dir);
    if staged.is_dir() {
        return Ok(());
    }
    if let Some(parent) = staged.parent() {
        make_parents(parent)?;
    }
    fs::create_dir(&staged).with_context(|| format!("cannot create {}", staged.display()))?;
    set_mode(&staged, mode)
}

/// `mkdir -p -m 0755 dir`: every directory created is 0755 whatever the umask (a root shell
/// with umask 077 would otherwise make /usr/local/share/doc unreadable to users).
fn make_parents(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_parents(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => set_mode(dir, 0o755),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
}

/// Writes `contents` to `path` via a temporary file in the same directory and a rename.
fn replace(layout: &Layout, path: &Path, contents: &[u8], mode: u32) -> Result<Installed> {
    let staged = layout.staged(path);
    let dir = staged
        .parent()
        .context("an installed file has a parent directory")?;
    make_parents(dir)?;
    let existed = staged.exists();
    let name = staged
        .file_name()
        .and_then(|n| n.to_str())
        .context("installed file names are UTF-8")?;
    let tmp = dir.join(format!(".{name}.xtask-install"));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, contents, mode)?;
    fs::rename(&tmp, &staged).with_context(|| {
        let _ = fs::remove_file(&tmp);
        format!("cannot replace {}", staged.display())
    })?;
    Ok(Installed {
        path: path.to_owned(),
        mode,
        outcome: if existed {
            Outcome::Replaced
        } else {
            Outcome::Installed
        },
    })
}

/// Writes `path` only if nothing is there yet; an existing file is the operator's.
fn keep_or_create(layout: &Layout, path: &Path, contents: &[u8], mode: u32) -> Result<Installed> {
    let staged = layout.staged(path);
    if staged.symlink_metadata().is_ok() {
        let mode = staged
            .metadata()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0);
        return Ok(Installed {
            path: path.to_owned(),
            mode,
            outcome: Outcome::Kept,
        });
    }
    write_new(&staged, contents, mode)?;
    Ok(Installed {
        path: path.to_owned(),
        mode,
        outcome: Outcome::Installed,
    })
}

/// Creates `path` (which must not exist) with `mode` from the first byte on, whatever the umask.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o700)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {:04o} {}", mode, path.display()))
}

/// True when systemd is the running service manager (sd_booted(3)).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemd_reload(ws: &Workspace, layout: &Layout) -> Result<()> {
    if !layout.is_live() {
        println!("    DESTDIR given: not running `systemctl daemon-reload`");
        return Ok(());
    }
    if !systemd_running() {
        println!("    systemd is not the running init: not running `systemctl daemon-reload`");
        return Ok(());
    }
    exec(ws.command("systemctl").arg("daemon-reload"))
        .context("`systemctl daemon-reload` failed")?;
    if probe(ws.command("systemctl").args(["is-active", "zone-agent"])).is_some() {
        println!(
            "    zone-agent is running the previous binary: `systemctl restart zone-agent` \
             switches to the new one (the pinned policy keeps enforcing during the restart)"
        );
    }
    Ok(())
}

fn next_steps(layout: &Layout) {
    let bin = layout.binary();
    let bin = bin.display();
    let policy = layout.policy();
    let policy = policy.display();
    let guide = layout.doc_dir().join("operations.md");
    println!(
        "\nNext steps (see {}):\n  \
         1. Edit {policy}: your interfaces, networks and 特定通信 (it ships in audit mode).\n  \
         2. Edit {} if the defaults do not fit (metrics address, failsafe management access).\n  \
         3. {bin} policy check {policy}\n  \
         4. systemctl enable --now zone-agent\n  \
         5. systemctl status zone-agent; curl -s http://127.0.0.1:9750/metrics\n  \
         6. Once only unwanted traffic is counted as audit: mode = \"enforce\" in the policy, \
         then `systemctl reload zone-agent`.",
        guide.display(),
        layout.config().display(),
    );
}

#[cfg(test)]
mod tests {
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
}

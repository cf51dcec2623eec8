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
mod tests;

//! `cargo xtask setup`: every prerequisite of build, test and demo, installed only when
//! missing, each step printed, each failure naming what failed and how to fix it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{Workspace, exec, is_root, probe, step};

/// What a test or the demo needs, how to tell it is there, and the Debian package with it.
struct Tool {
    what: &'static str,
    check: Check,
    package: &'static str,
}

enum Check {
    /// `command -v NAME` succeeds.
    Command(&'static str),
    /// The lab's Python (`zone_agent_lab::python()`) can import the module.
    PyModule(&'static str),
    /// The file exists (data, not a command).
    File(&'static str),
}

const TOOLS: &[Tool] = &[
    Tool {
        what: "ip",
        check: Check::Command("ip"),
        package: "iproute2",
    },
    Tool {
        what: "ss",
        check: Check::Command("ss"),
        package: "iproute2",
    },
    Tool {
        what: "nft",
        check: Check::Command("nft"),
        package: "nftables",
    },
    Tool {
        what: "python3",
        check: Check::Command("python3"),
        package: "python3",
    },
    Tool {
        what: "scapy",
        check: Check::PyModule("scapy"),
        package: "python3-scapy",
    },
    Tool {
        what: "nc",
        check: Check::Command("nc"),
        package: "netcat-openbsd",
    },
    Tool {
        what: "tcpdump",
        check: Check::Command("tcpdump"),
        package: "tcpdump",
    },
    // The evasion tests send some of their crafted packets with it (tests/tests/evasion.rs).
    Tool {
        what: "hping3",
        check: Check::Command("hping3"),
        package: "hping3",
    },
    Tool {
        what: "iperf3",
        check: Check::Command("iperf3"),
        package: "iperf3",
    },
    Tool {
        what: "promtool",
        check: Check::Command("promtool"),
        package: "prometheus",
    },
    // The lab test of deploy/ (tests/tests/prometheus.rs) runs a real Prometheus.
    Tool {
        what: "prometheus",
        check: Check::Command("prometheus"),
        package: "prometheus",
    },
    Tool {
        what: "bpftool",
        check: Check::Command("bpftool"),
        package: "bpftool",
    },
    Tool {
        what: "xdp-loader",
        check: Check::Command("xdp-loader"),
        package: "xdp-tools",
    },
    Tool {
        what: "curl",
        check: Check::Command("curl"),
        package: "curl",
    },
    Tool {
        what: "unshare",
        check: Check::Command("unshare"),
        package: "util-linux",
    },
    Tool {
        what: "ping",
        check: Check::Command("ping"),
        package: "iputils-ping",
    },
    Tool {
        what: "setpriv",
        check: Check::Command("setpriv"),
        package: "util-linux",
    },
    // `cargo xtask bench`: TSO off on the lab hosts (like-for-like goodput), and the font
    // its plots' text is drawn with.
    Tool {
        what: "ethtool",
        check: Check::Command("ethtool"),
        package: "ethtool",
    },
    Tool {
        what: "DejaVu Sans",
        check: Check::File("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        package: "fonts-dejavu-core",
    },
    // The operator's page is rendered in headless Chromium (tests/tests/page.rs, the
    // screenshot in docs/), its Japanese zone labels drawn with Noto Sans CJK.
    Tool {
        what: "chromium",
        check: Check::Command("chromium"),
        package: "chromium",
    },
    Tool {
        what: "Noto Sans CJK",
        check: Check::File("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
        package: "fonts-noto-cjk",
    },
    // The test of systemd/zone-agent.service (`systemd-analyze verify`); installing the
    // package on a machine that does not boot with systemd only adds the tools.
    Tool {
        what: "systemd-analyze",
        check: Check::Command("systemd-analyze"),
        package: "systemd",
    },
];

pub fn run(ws: &Workspace) -> Result<()> {
    step("setup: checking prerequisites");
    build_tools(ws)?;
    debian_tools(ws)?;
    bpffs(ws)?;
    step("setup: done, every prerequisite is present");
    Ok(())
}

/// Only what building the agent needs (nightly rust-src, bpf-linker), for `cargo xtask
/// install`: the lab's tools and bpffs have no place on a gateway.
pub fn build_prerequisites(ws: &Workspace) -> Result<()> {
    step("setup: checking build prerequisites");
    build_tools(ws)
}

fn build_tools(ws: &Workspace) -> Result<()> {
    let sysroot = nightly_sysroot(ws)?;
    rust_src(ws, &sysroot)?;
    bpf_linker(ws, &sysroot)
}

/// The nightly toolchain's sysroot (installing the toolchain if rustup has none).
pub fn nightly_sysroot(ws: &Workspace) -> Result<PathBuf> {
    let query =
        |ws: &Workspace| probe(ws.command("rustc").args(["+nightly", "--print", "sysroot"]));
    if let Some(sysroot) = query(ws) {
        println!("    nightly toolchain: present ({sysroot})");
        return Ok(sysroot.into());
    }
    println!("    nightly toolchain: missing, installing");
    exec(ws.command("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
        .context("installing the nightly toolchain failed; install rustup (https://rustup.rs) and run `rustup toolchain install nightly`")?;
    query(ws)
        .map(PathBuf::from)
        .context("`rustc +nightly --print sysroot` still fails after installing nightly")
}

/// (a) `rust-src` for nightly: `-Z build-std=core` for the bpfel target needs it.
fn rust_src(ws: &Workspace, sysroot: &Path) -> Result<()> {
    let library = sysroot.join("lib/rustlib/src/rust/library");
    if library.is_dir() {
        println!("    rust-src (nightly): present");
        return Ok(());
    }
    println!("    rust-src (nightly): missing, installing");
    exec(ws.command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("installing rust-src failed; fix rustup's network access and run `rustup component add rust-src --toolchain nightly`")?;
    if !library.is_dir() {
        bail!(
            "rust-src installed but {} does not exist",
            library.display()
        );
    }
    Ok(())
}

/// (b) bpf-linker 0.13, built against the nightly toolchain's own libLLVM.
fn bpf_linker(ws: &Workspace, sysroot: &Path) -> Result<()> {
    let lib_dir = sysroot.join("lib");
    if let Some(version) = bpf_linker_version(ws, &lib_dir) {
        println!("    bpf-linker: present ({version})");
        return Ok(());
    }
    println!("    bpf-linker: missing or not runnable, installing");
    let libllvm = find_libllvm(&lib_dir)?;
    let file_name = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let feature = llvm_feature(file_name)
        .with_context(|| format!("cannot tell the LLVM major version from {file_name}"))?;

    // LLVM_PREFIX/lib must hold a `libLLVM.so`; the versioned name too, so the binary's
    // RUNPATH (which points here) finds the library without rustup's LD_LIBRARY_PATH.
    let prefix = ws.target.join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", file_name] {
        let link = prefix_lib.join(name);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("cannot link {} -> {}", link.display(), libllvm.display()))?;
        println!("    linked {} -> {}", link.display(), libllvm.display());
    }

    let mut install = ws.command("cargo");
    install.env("LLVM_PREFIX", &prefix).args([
        "+nightly",
        "install",
        // --force: a bpf-linker that exists but cannot run must be replaced, not kept.
        "--force",
        "bpf-linker",
        "--version",
        "^0.13",
        "--no-default-features",
        "--features",
        &feature,
    ]);
    exec(&mut install).with_context(|| {
        format!(
            "installing bpf-linker failed; it needs crates.io access and a C toolchain (apt-get install build-essential); \
             retry by hand with: LLVM_PREFIX={} cargo +nightly install --force bpf-linker --version ^0.13 --no-default-features --features {feature}",
            prefix.display()
        )
    })?;
    match bpf_linker_version(ws, &lib_dir) {
        Some(version) => {
            println!("    bpf-linker: installed ({version})");
            Ok(())
        }
        None => bail!(
            "bpf-linker was installed but `bpf-linker --version` fails; check that {} is readable",
            libllvm.display()
        ),
    }
}

/// `bpf-linker --version`, run the way rustc runs it: rustup puts the toolchain's lib dir
/// (with its libLLVM) on `LD_LIBRARY_PATH`.
fn bpf_linker_version(ws: &Workspace, llvm_lib_dir: &Path) -> Option<String> {
    let mut ld_path = llvm_lib_dir.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        ld_path.push(":");
        ld_path.push(old);
    }
    probe(
        ws.command("bpf-linker")
            .arg("--version")
            .env("LD_LIBRARY_PATH", ld_path),
    )
}

/// The `libLLVM.so.<major>.<minor>-rust-*` file of the nightly toolchain.
fn find_libllvm(lib_dir: &Path) -> Result<PathBuf> {
    let entries =
        fs::read_dir(lib_dir).with_context(|| format!("cannot read {}", lib_dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .collect();
    found.sort();
    found.pop().with_context(|| {
        format!(
            "no libLLVM.so.*-rust-* in {}; the nightly toolchain looks incomplete: `rustup toolchain install nightly --force`",
            lib_dir.display()
        )
    })
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` → `llvm-22`.
fn llvm_feature(file_name: &str) -> Option<String> {
    let version = file_name.strip_prefix("libLLVM.so.")?;
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    (!major.is_empty()).then(|| format!("llvm-{major}"))
}

/// (c) The Debian tools the tests and the demo run.
fn debian_tools(ws: &Workspace) -> Result<()> {
    let missing = missing_tools(ws);
    if missing.is_empty() {
        let names: Vec<&str> = TOOLS.iter().map(|t| t.what).collect();
        println!("    debian tools: present ({})", names.join(", "));
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    packages.dedup();
    let whats: Vec<&str> = missing.iter().map(|t| t.what).collect();
    println!(
        "    debian tools: missing {} (packages {})",
        whats.join(", "),
        packages.join(" ")
    );
    if !is_root() {
        bail!(
            "installing {} needs root: run `sudo -E cargo xtask setup`, or `apt-get install {}` yourself",
            packages.join(" "),
            packages.join(" ")
        );
    }
    let apt = |args: &[&str]| {
        let mut cmd = ws.command("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        cmd
    };
    exec(&mut apt(&["update"]))
        .context("`apt-get update` failed: check the network and /etc/apt/sources.list")?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(&packages);
    exec(&mut install)
        .with_context(|| format!("`apt-get install` failed for {}", packages.join(" ")))?;

    let still: Vec<String> = missing_tools(ws)
        .iter()
        .map(|t| format!("{} ({})", t.what, t.package))
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    println!("    debian tools: installed");
    Ok(())
}

fn missing_tools(ws: &Workspace) -> Vec<&'static Tool> {
    let mut missing: Vec<&Tool> = TOOLS
        .iter()
        .filter(|tool| match tool.check {
            Check::Command(name) => {
                probe(
                    ws.command("sh")
                        .args(["-c", "command -v \"$1\"", "sh", name]),
                )
                .is_none()
            }
            Check::PyModule(module) => probe(
                ws.command(zone_agent_lab::python())
                    .args(["-c", &format!("import {module}")]),
            )
            .is_none(),
            Check::File(path) => !Path::new(path).is_file(),
        })
        .collect();
    missing.sort_by_key(|t| t.package);
    missing
}

/// (d) A bpffs at /sys/fs/bpf (the agent's default pin dir).
fn bpffs(ws: &Workspace) -> Result<()> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"/sys/fs/bpf") && fields.get(2) == Some(&"bpf")
    });
    if mounted {
        println!("    bpffs at /sys/fs/bpf: mounted");
        return Ok(());
    }
    println!("    bpffs at /sys/fs/bpf: not mounted, mounting");
    if !is_root() {
        bail!("mounting bpffs needs root: run `sudo mount -t bpf bpf /sys/fs/bpf`");
    }
    exec(
        ws.command("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"]),
    )
    .context("mounting bpffs failed: the kernel needs CONFIG_BPF_SYSCALL")
}

#[cfg(test)]
mod tests {
    use super::llvm_feature;

    #[test]
    fn llvm_feature_from_file_name() {
        assert_eq!(
            llvm_feature("libLLVM.so.22.1-rust-1.97.0-nightly").as_deref(),
            Some("llvm-22")
        );
        assert_eq!(
            llvm_feature("libLLVM.so.9-rust-1.40.0-nightly").as_deref(),
            Some("llvm-9")
        );
        assert_eq!(llvm_feature("libLLVM.so.x-rust"), None);
    }
}

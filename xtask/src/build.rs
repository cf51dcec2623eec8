//! `cargo xtask build`: setup, then the agent binary with its eBPF object embedded
//! (zone-agent's own build.rs builds the object with `cargo +nightly`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::{Workspace, exec, setup, step};

#[derive(clap::Args)]
pub struct Args {
    /// Build the debug profile (target/debug/zone-agent) instead of release.
    #[arg(long)]
    debug: bool,
}

pub fn run(ws: &Workspace, args: &Args) -> Result<PathBuf> {
    setup::run(ws)?;
    let bin = agent(ws, !args.debug)?;
    println!("{}", bin.display());
    Ok(bin)
}

/// Builds zone-agent (release unless `release` is false) and returns the binary's path.
pub fn agent(ws: &Workspace, release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    step(&format!("build: zone-agent ({profile})"));
    let mut cmd = ws.command("cargo");
    cmd.args(["build", "-p", "zone-agent"]);
    if release {
        cmd.arg("--release");
    }
    exec(&mut cmd).context("building zone-agent failed (compiler output above)")?;
    let bin = ws.target.join(profile).join("zone-agent");
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}

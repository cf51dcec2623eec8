//! Builds the XDP program (zone-agent-ebpf, nightly + build-std for bpfel-unknown-none) and
//! leaves the object in OUT_DIR for `include_bytes!`, so the release binary is one file.
//!
//! `ZONE_AGENT_SKIP_EBPF=1` writes an empty object instead, so that `cargo check`, clippy
//! and the no-root unit tests work on a machine without the eBPF toolchain; the agent then
//! refuses to start with a clear message.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("zone-agent-ebpf.o");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf = manifest
        .parent()
        .expect("workspace root")
        .join("zone-agent-ebpf");
    let common = manifest
        .parent()
        .expect("workspace root")
        .join("zone-agent-common");
    println!("cargo:rerun-if-env-changed=ZONE_AGENT_SKIP_EBPF");
    for dir in [ebpf.join("src"), common.join("src")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        ebpf.join("Cargo.toml").display()
    );

    if env::var_os("ZONE_AGENT_SKIP_EBPF").is_some_and(|v| v == "1") {
        std::fs::write(&obj, b"").expect("write stub object");
        return;
    }

    let target_dir = out.join("ebpf-target");
    // Build outside of the outer cargo's environment: its RUSTFLAGS/target settings are for
    // the host, not for bpfel.
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        // Set by `cargo clippy` (clippy-driver): it would compile the bpf crate with the
        // outer, stable toolchain instead of nightly.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_BUILD_TARGET")
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run `cargo +nightly` to build the XDP program: {e}; run `cargo xtask setup`")
    });
    if !status.success() {
        panic!(
            "building zone-agent-ebpf failed ({status}); `cargo xtask setup` installs rust-src and \
             bpf-linker, or set ZONE_AGENT_SKIP_EBPF=1 for a build without the data path"
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/zone-agent-ebpf");
    std::fs::copy(&built, &obj)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", built.display(), obj.display()));
}

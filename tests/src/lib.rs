//! zone-agent-lab: the network-namespace lab that zone-agent's integration tests run in.
//!
//! A [`Lab`] is one gateway namespace plus one namespace per zone host, joined by veth pairs
//! that are created directly inside those namespaces: nothing is ever created in, or attached
//! to, the namespace the test runs in. Every lab has a unique name prefix, so tests run in
//! parallel; dropping the lab kills what still runs in its namespaces and deletes them, even
//! while a test panics. Traffic is sent with real tools and real sockets ([`traffic`]), crafted
//! frames with scapy and hping3 and seen in raw captures at the receiver ([`craft`]), and
//! metrics are scraped over real HTTP from inside a namespace ([`scrape`], [`agent`]). The
//! monitoring files under `deploy/` are read by [`deploy`], and [`prometheus`] runs a real
//! Prometheus on them in a lab namespace.
//!
//! Habits (see STYLE.md "Namespace tests"): waits are bounded polls ([`wait_until`]), tests
//! `panic!` instead of returning errors, `ZA_KEEP_LAB=1` keeps the lab for inspection, and
//! `cargo xtask test` runs the whole suite under `unshare --mount --net` as a second safety net.
//!
//! Everything here needs root.

pub mod agent;
pub mod bench;
pub mod browser;
mod child;
pub mod craft;
pub mod deploy;
pub mod fixture;
mod lab;
pub mod oracle;
pub mod prometheus;
pub mod scrape;
pub mod soc;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use child::ChildGuard;
pub use fixture::{PolicyText, ThreeZones};
pub use lab::{Host, HostSpec, Lab, vlan_supported};
pub use nix::sys::signal::Signal;
pub use traffic::{
    ContinuousSummary, add_addr, continuous, continuous_summary, ping, port_scan, set_mac,
    tcp_connect, tcp_echo, tcp_listen, udp_echo, udp_exchange,
};

/// Environment variable that keeps labs (namespaces, temp dir, children) after the test.
pub const KEEP_ENV: &str = "ZA_KEEP_LAB";
/// Environment variable naming the agent binary (set by `cargo xtask test`).
pub const AGENT_BIN_ENV: &str = "ZONE_AGENT_BIN";

/// Polls `f` every 50 ms until it returns true; panics with `what` after `timeout`.
///
/// This is the only way tests here wait for something to happen: never a blind sleep.
pub fn wait_until(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    if !poll_until(timeout, f) {
        panic!("timed out after {timeout:?} waiting until {what}");
    }
}

/// Polls `f` every 50 ms for up to `timeout`; whether it became true. For a wait whose
/// failure the caller explains itself (with captures, counters, logs); else [`wait_until`].
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Panics with a clear message unless the process runs as root.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "zone-agent-lab needs root (it creates network namespaces and attaches XDP); \
             run the suite as root with `cargo xtask test`"
        );
    }
}

/// True when `ZA_KEEP_LAB=1`: labs and their children are left running for inspection.
pub fn keep_lab() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| v == "1")
}

/// The Python 3 interpreter the traffic helpers use.
///
/// `ZA_PYTHON` if set, else Debian's `/usr/bin/python3` (the one `python3-scapy` installs
/// into, which a pyenv or venv `python3` earlier in `PATH` would not see), else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("ZA_PYTHON") {
        return p;
    }
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".to_owned()
    } else {
        "python3".to_owned()
    }
}

/// The zone-agent binary under test: `$ZONE_AGENT_BIN`, else `target/release/zone-agent`.
///
/// Panics with the command that builds it when it does not exist.
pub fn agent_bin() -> PathBuf {
    let path = match std::env::var_os(AGENT_BIN_ENV) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/zone-agent"),
    };
    if !path.is_file() {
        panic!(
            "zone-agent binary not found at {} (set {AGENT_BIN_ENV} or run `cargo xtask build`)",
            path.display()
        );
    }
    path.canonicalize().unwrap_or(path)
}

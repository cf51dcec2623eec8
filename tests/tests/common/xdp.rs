//! Running the loaded XDP program on crafted frames: a private network namespace with
//! stand-in zone interfaces, and one BPF_PROG_TEST_RUN of a frame "received" on one of them.

#![allow(dead_code)]

use std::process::Command;

use aya::programs::{TestRun, TestRunOptions, Xdp};

/// Runs `f` on a thread that has its own network namespace with the interfaces `ifaces`.
pub fn in_private_netns<T: Send + 'static>(
    ifaces: &'static [&'static str],
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        // SAFETY: affects only this thread, which is ours alone.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
        for name in ifaces {
            // veth rather than dummy: not every kernel has the dummy driver.
            let peer = format!("{name}p");
            let out = Command::new("ip")
                .args(["link", "add", name, "type", "veth", "peer", "name", &peer])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip link add {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Command::new("ip")
                .args(["link", "set", name, "up"])
                .status()
                .unwrap();
        }
        f()
    })
    .join()
    .expect("test thread panicked")
}

pub fn ifindex(name: &str) -> u32 {
    zone_agent::agent::ifindex(name).unwrap_or_else(|| panic!("no interface {name}"))
}

/// One BPF_PROG_TEST_RUN of `frame` as if received on `iface`; returns the XDP action.
pub fn test_run(prog: &Xdp, iface: &str, frame: &[u8]) -> u32 {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex(iface).to_ne_bytes());
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: 1,
        ..Default::default()
    })
    .expect("BPF_PROG_TEST_RUN")
    .return_value
}

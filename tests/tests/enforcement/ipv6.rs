//! IPv6 link-local housekeeping: MLD reports are not spoofed sources.

use super::*;

/// A host joining a multicast group (here: because it got another IPv6 address) sends MLDv2
/// reports from its link-local address to ff02::16. That is link-local housekeeping, not a
/// source address of another zone: it must not be counted (or alerted) as spoofed_source.
/// The trap: with `::/0` in the internet zone, fe80::/10 falls into that zone by longest
/// prefix, and every IPv6 host outside the internet zone looked like a spoofer (fixed in
/// ccf01b4; this test failed before it, with spoofed_source +2 per address added).
#[test]
pub(crate) fn ipv6_mld_reports_are_not_spoofed_sources() {
    let env = Env::new("mld_not_spoofed", &policy("enforce"));
    wait_quiet(&env);
    let before = env.metrics();
    add_addr(&env.lab, &env.lg, "fd20::12/64");
    // Proof that the reports were sent and decided (nothing else is sent now) ...
    wait_until(T, "the MLD reports are decided", || {
        env.metrics().delta(&before, PACKETS, &[]) >= 1.0
    });
    // ... and the retransmission (MLDv2: within 1 s).
    wait_quiet(&env);
    let after = env.metrics();
    assert_delta(
        &before,
        &after,
        DROPS,
        &drop_reason("spoofed_source"),
        0.0,
        "MLDv2 reports fe80::ff:fe00:2010 -> ff02::16 from the lgwan host",
    );
}

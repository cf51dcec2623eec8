#!/usr/bin/env python3
"""Writes the seed inputs of the two fuzz targets into fuzz/corpus/<target>/ (stdlib only).

policy_loader: the example and fixture policies and the `policy init` templates, as they are.
frame_parser:  frames in the record format of `zone_agent::fuzzing::records` (control byte,
               big-endian u16 length, frame), addressed to the zones of its FRAME_POLICY, one
               seed per situation the model tells apart: flows and their replies, ICMP errors,
               fragments, neighbour discovery, VLAN trunks, spoofing, MAC-bound and audit rules,
               the failsafe flow, reloads and expiry.

Run from anywhere: `python3 fuzz/seeds.py`. Seeds are named by content, so a rerun adds
nothing that is already there; `cargo fuzz cmin` keeps the corpus small afterwards.
"""

import hashlib
import ipaddress
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

# Interface indices and control-byte fields of `zone_agent::fuzzing::records`.
MYN, LG, INET, TRUNK, OTHER = range(5)
VLAN_NONE, VLAN_100, VLAN_200, QINQ = range(4)
STEP_MS, STEP_S, STEP_2MIN, STEP_1H = range(4)

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
HOST_MAC = bytes.fromhex("020000000010")
ADMIN_MAC = bytes.fromhex("0200000000aa")


def ctl(iface, vlan=VLAN_NONE, step=STEP_MS, reload=False):
    return iface | vlan << 3 | step << 5 | (0x80 if reload else 0)


def record(control, frame):
    return bytes([control]) + struct.pack(">H", len(frame)) + frame


def eth(ethertype, payload, src_mac=HOST_MAC):
    return bytes.fromhex("02000000fe01") + src_mac + struct.pack(">H", ethertype) + payload


def ipv4(src, dst, proto, payload, ident=0x4242, frag=0x4000, options=b""):
    ihl = 20 + len(options)
    head = struct.pack(">BBHHHBBH", 0x40 | ihl // 4, 0, ihl + len(payload), ident, frag, 64, proto, 0)
    return head + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + options + payload


def ipv6(src, dst, nh, payload, hop_limit=64):
    head = struct.pack(">IHBB", 0x60000000, len(payload), nh, hop_limit)
    return head + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + payload


def ip(src, dst, proto, payload, **kw):
    """An Ethernet frame with an IPv4 or IPv6 packet, by the family of `src`."""
    mac = kw.pop("src_mac", HOST_MAC)
    if ipaddress.ip_address(src).version == 4:
        return eth(0x0800, ipv4(src, dst, proto, payload, **kw), mac)
    return eth(0x86DD, ipv6(src, dst, proto, payload, **kw), mac)


def tcp(sport, dport, flags, options=b""):
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, (5 + len(options) // 4) << 4, flags, 512, 0, 0) + options


def udp(sport, dport, data=b""):
    return struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data


def icmp(ty, code=0, ident=0, data=b""):
    return struct.pack(">BBHHH", ty, code, 0, ident, 1) + data


def ext(nh, length=8):
    """An IPv6 hop-by-hop / routing / destination-options header of `length` bytes."""
    return bytes([nh, length // 8 - 1]) + bytes(length - 2)


def frag6(nh, offset, more, ident):
    return struct.pack(">BBHI", nh, 0, offset << 3 | int(more), ident)


def frame_seeds():
    syn = ip("10.20.5.10", "10.10.9.20", TCP, tcp(40000, 443, SYN))
    synack = ip("10.10.9.20", "10.20.5.10", TCP, tcp(443, 40000, SYN | ACK))
    ack = ip("10.20.5.10", "10.10.9.20", TCP, tcp(40000, 443, ACK))
    fin = ip("10.20.5.10", "10.10.9.20", TCP, tcp(40000, 443, FIN | ACK))
    finack = ip("10.10.9.20", "10.20.5.10", TCP, tcp(443, 40000, FIN | ACK))
    rst = ip("10.10.9.20", "10.20.5.10", TCP, tcp(443, 40000, RST))
    syn6 = ip("fd20::10", "fd10::20", TCP, tcp(40001, 8005, SYN))
    synack6 = ip("fd10::20", "fd20::10", TCP, tcp(8005, 40001, SYN | ACK))
    dns = ip("10.20.3.4", "198.51.100.53", UDP, udp(5353, 53, b"\x12\x34query"))
    dns_reply = ip("198.51.100.53", "10.20.3.4", UDP, udp(53, 5353, b"\x12\x34answer"))
    ping = ip("10.20.0.5", "10.10.1.1", ICMP, icmp(8, ident=0x1234))
    pong = ip("10.10.1.1", "10.20.0.5", ICMP, icmp(0, ident=0x1234))
    ping6 = ip("fd20::5", "fd10::1", ICMPV6, icmp(128, ident=7))
    pong6 = ip("fd10::1", "fd20::5", ICMPV6, icmp(129, ident=7))
    # ICMP errors quote the IP header and the first 8 bytes of the packet that caused them.
    quote = ipv4("10.20.5.10", "10.10.9.20", TCP, tcp(40000, 443, SYN))[:28]
    unreach = ip("10.10.0.1", "10.20.5.10", ICMP, icmp(3, 1, data=quote))
    quote6 = ipv6("fd20::5", "fd10::1", ICMPV6, icmp(128, ident=7))[:48]
    unreach6 = ip("fd10::1", "fd20::5", ICMPV6, icmp(1, 3, data=quote6))
    # Fragments: the first carries the UDP header, the later one only data.
    frag_first = ip("10.20.3.4", "198.51.100.53", UDP, udp(5353, 53, bytes(24)), ident=77, frag=0x2000)
    frag_later = ip("10.20.3.4", "198.51.100.53", UDP, bytes(16), ident=77, frag=4)
    chain = ext(60) + ext(44, 16) + frag6(TCP, 0, True, 0xBEEF) + tcp(40002, 443, SYN)
    frag6_first = ip("fd20::10", "fd10::20", 0, chain)
    frag6_later = ip("fd20::10", "fd10::20", 44, frag6(TCP, 200, False, 0xBEEF) + bytes(16))
    nd = ip("fe80::1", "ff02::1:ff00:9", ICMPV6, icmp(135, data=bytes(16)), hop_limit=255)
    arp = eth(0x0806, struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + HOST_MAC + bytes(4) + bytes(6) + bytes(4))
    gre = ip("10.30.1.1", "10.20.1.1", 47, bytes(8))
    trunk_syn = ip("10.20.5.10", "10.10.9.20", TCP, tcp(40003, 8001, SYN))
    spoofed = ip("10.10.1.1", "10.10.9.20", TCP, tcp(1000, 443, SYN))
    admin = ip("10.20.8.8", "10.10.1.1", TCP, tcp(50000, 22, SYN), src_mac=ADMIN_MAC)
    admin_wrong_mac = ip("10.20.8.8", "10.10.1.1", TCP, tcp(50000, 22, SYN))
    mail = ip("203.0.113.5", "10.20.2.2", TCP, tcp(41000, 25, SYN))
    syslog = ip("10.10.4.4", "10.20.1.9", UDP, udp(514, 514, b"<13>hi"))
    failsafe = ip("10.20.99.5", "10.20.0.1", TCP, tcp(41001, 22, SYN))
    intra = ip("10.20.1.1", "10.20.2.2", UDP, udp(1, 2))
    lldp = eth(0x88CC, bytes(32))
    seven = b"".join(ext(60) for _ in range(6)) + ext(TCP) + tcp(1, 2, SYN)
    too_many_ext = ip("fd20::10", "fd10::20", 60, seven)
    # Tagged once more inside the QinQ tags the control byte inserts: a third tag.
    triple_tag = eth(0x8100, struct.pack(">H", 300) + struct.pack(">H", 0x0800) + ipv4("10.20.5.10", "10.10.9.20", TCP, tcp(1, 2, SYN)))
    options = ip("10.20.5.10", "10.10.9.20", TCP, tcp(40004, 443, SYN, bytes([2, 4, 5, 0xB4])), options=bytes([1, 1, 1, 0]))

    return {
        "tcp-flow": [(ctl(LG), syn), (ctl(MYN), synack), (ctl(LG), ack), (ctl(LG), fin), (ctl(MYN), finack)],
        "tcp-rst": [(ctl(LG), syn), (ctl(MYN), rst), (ctl(MYN), synack)],
        "tcp6-flow": [(ctl(LG), syn6), (ctl(MYN), synack6)],
        "udp-dns": [(ctl(LG), dns), (ctl(INET), dns_reply)],
        "icmp-echo": [(ctl(LG), ping), (ctl(MYN), pong)],
        "icmp6-echo": [(ctl(LG), ping6), (ctl(MYN), pong6)],
        "icmp-related": [(ctl(LG), syn), (ctl(MYN), unreach)],
        "icmp6-related": [(ctl(LG), ping6), (ctl(MYN), unreach6)],
        "frag4": [(ctl(LG), frag_first), (ctl(LG), frag_later)],
        "frag4-untied": [(ctl(LG), frag_later), (ctl(LG, reload=True), frag_later)],
        "frag6": [(ctl(LG), frag6_first), (ctl(LG), frag6_later)],
        "nd": [(ctl(MYN), nd)],
        "arp": [(ctl(INET), arp)],
        "trunk-cloud": [(ctl(TRUNK, VLAN_200), gre)],
        "trunk-lgwan": [(ctl(TRUNK, VLAN_100), trunk_syn), (ctl(MYN), synack)],
        "trunk-qinq": [(ctl(TRUNK, QINQ), trunk_syn)],
        "trunk-untagged": [(ctl(TRUNK), trunk_syn)],
        "unknown-iface": [(ctl(OTHER), syn)],
        "spoofed": [(ctl(LG), spoofed)],
        "mac-bound": [(ctl(LG), admin), (ctl(LG), admin_wrong_mac)],
        "audit-rules": [(ctl(INET), mail), (ctl(MYN), syslog)],
        "failsafe": [(ctl(LG), failsafe)],
        "intra-zone": [(ctl(LG), intra)],
        "ip-options": [(ctl(LG), options)],
        "malformed": [(ctl(LG), syn[:40]), (ctl(LG), dns[:-3])],
        "non-ip": [(ctl(INET), lldp)],
        "header-limit": [(ctl(LG), too_many_ext), (ctl(TRUNK, QINQ), triple_tag)],
        "reload": [(ctl(LG), syn), (ctl(MYN, reload=True), synack), (ctl(LG, reload=True), ack)],
        "expiry": [(ctl(LG), syn), (ctl(MYN, step=STEP_1H), synack), (ctl(LG, step=STEP_2MIN), syn)],
    }


def write(target, name, data):
    out = CORPUS / target
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:16]
    (out / f"seed-{name}-{digest}").write_bytes(data)


def main():
    for name, records in frame_seeds().items():
        write("frame_parser", name, b"".join(record(c, f) for c, f in records))
    policies = sorted((ROOT / "zone-agent" / "tests" / "fixtures").glob("*.toml"))
    policies += sorted((ROOT / "zone-agent" / "src" / "policy" / "templates").glob("*.toml"))
    for path in policies:
        write("policy_loader", path.stem, path.read_bytes())
    print(f"seeds written under {CORPUS}")


if __name__ == "__main__":
    main()

//! The kind of probe a denied packet is, from its protocol and TCP flags: the evidence an
//! analyst wants ("SYN scan", "Xmas scan"). A connect() scan and masscan both send plain
//! SYNs: at the gateway they are SYN probes (masscan shows as many of them per second).

use zone_agent_common::{
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
    TCP_URG,
};

use crate::events::Record;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Syn,
    Ack,
    Fin,
    /// No flag at all (nmap -sN).
    Null,
    /// FIN + PSH + URG (nmap -sX).
    Xmas,
    /// FIN + ACK (nmap -sM, Maimon).
    Maimon,
    /// Any other TCP flag combination.
    OtherTcp,
    Udp,
    Icmp,
    Other,
}

impl Probe {
    pub fn of(r: &Record) -> Probe {
        match r.protocol {
            PROTO_TCP => Probe::tcp(r.tcp_flags.unwrap_or(0)),
            PROTO_UDP => Probe::Udp,
            PROTO_ICMP | PROTO_ICMPV6 => Probe::Icmp,
            _ => Probe::Other,
        }
    }

    /// Classifies by the flags that scanners set (ECE/CWR ignored: 0xc0, ECN noise).
    pub fn tcp(flags: u8) -> Probe {
        const SCAN_BITS: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK | TCP_URG;
        match flags & SCAN_BITS {
            TCP_SYN => Probe::Syn,
            TCP_ACK => Probe::Ack,
            TCP_FIN => Probe::Fin,
            0 => Probe::Null,
            f if f == TCP_FIN | TCP_PSH | TCP_URG => Probe::Xmas,
            f if f == TCP_FIN | TCP_ACK => Probe::Maimon,
            _ => Probe::OtherTcp,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Probe::Syn => "syn",
            Probe::Ack => "ack",
            Probe::Fin => "fin",
            Probe::Null => "null",
            Probe::Xmas => "xmas",
            Probe::Maimon => "maimon",
            Probe::OtherTcp => "tcp_other",
            Probe::Udp => "udp",
            Probe::Icmp => "icmp",
            Probe::Other => "other",
        }
    }
}

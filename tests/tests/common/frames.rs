//! A small builder of Ethernet frames for BPF_PROG_TEST_RUN corpora: enough to craft every
//! header shape the data path must handle (VLAN stacks, IPv4 options and fragments, IPv6
//! extension chains, ICMP errors quoting a packet). Checksums are not computed: XDP does not
//! verify them.

#![allow(dead_code)]

use std::net::IpAddr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

#[derive(Clone, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub l4: Vec<u8>,
    /// IPv4 options (multiple of 4 bytes).
    pub v4_options: Vec<u8>,
    /// IPv6 extension headers before L4: (next-header value of this header, bytes).
    pub v6_ext: Vec<(u8, Vec<u8>)>,
    /// IPv4: (offset in 8-byte units, more fragments, id). IPv6: use a fragment ext header.
    pub v4_frag: Option<(u16, bool, u16)>,
    pub hop_limit: u8,
}

impl Frame {
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Frame {
            src_mac: [0x02, 0, 0, 0, 0, 0x10],
            vlans: vec![],
            src,
            dst,
            proto: 0,
            l4: vec![],
            v4_options: vec![],
            v6_ext: vec![],
            v4_frag: None,
            hop_limit: 64,
        }
    }
    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Self {
        self.proto = TCP;
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = flags;
        self.l4 = h;
        self
    }
    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.proto = UDP;
        let mut h = vec![0u8; 8];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..6].copy_from_slice(&8u16.to_be_bytes());
        self.l4 = h;
        self
    }
    pub fn icmp(mut self, ty: u8, code: u8, id: u16) -> Self {
        self.proto = if self.src.is_ipv4() { ICMP } else { ICMPV6 };
        let mut h = vec![0u8; 8];
        h[0] = ty;
        h[1] = code;
        h[4..6].copy_from_slice(&id.to_be_bytes());
        self.l4 = h;
        self
    }
    /// ICMP error quoting `quoted` (its IP header + first 8 bytes of L4).
    pub fn icmp_error(mut self, ty: u8, code: u8, quoted: &Frame) -> Self {
        self = self.icmp(ty, code, 0);
        let q = quoted.ip_packet();
        let hl = if quoted.src.is_ipv4() {
            20 + quoted.v4_options.len()
        } else {
            40
        };
        self.l4.extend_from_slice(&q[..(hl + 8).min(q.len())]);
        self
    }
    pub fn proto(mut self, proto: u8, payload: usize) -> Self {
        self.proto = proto;
        self.l4 = vec![0u8; payload];
        self
    }
    pub fn payload(mut self, n: usize) -> Self {
        self.l4.extend(std::iter::repeat_n(0xabu8, n));
        self
    }
    pub fn mac(mut self, mac: [u8; 6]) -> Self {
        self.src_mac = mac;
        self
    }
    pub fn vlan(mut self, v: u16) -> Self {
        self.vlans.push(v);
        self
    }
    pub fn options(mut self, n_words: usize) -> Self {
        self.v4_options = vec![1u8; n_words * 4]; // NOP options
        self
    }
    pub fn v4_frag(mut self, offset: u16, more: bool, id: u16) -> Self {
        self.v4_frag = Some((offset, more, id));
        self
    }
    /// Append an IPv6 extension header of type `nh` (0, 43, 60) with `len8` extra 8-byte units.
    pub fn v6_ext(mut self, nh: u8, len8: u8) -> Self {
        let mut b = vec![0u8; 8 + len8 as usize * 8];
        b[1] = len8;
        self.v6_ext.push((nh, b));
        self
    }
    pub fn v6_frag(mut self, offset: u16, more: bool, id: u32) -> Self {
        let mut b = vec![0u8; 8];
        let fo = (offset << 3) | more as u16;
        b[2..4].copy_from_slice(&fo.to_be_bytes());
        b[4..8].copy_from_slice(&id.to_be_bytes());
        self.v6_ext.push((44, b));
        self
    }
    pub fn hop_limit(mut self, h: u8) -> Self {
        self.hop_limit = h;
        self
    }

    /// The IP packet (no Ethernet).
    pub fn ip_packet(&self) -> Vec<u8> {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 20 + self.v4_options.len();
                let total = ihl + self.l4.len();
                let mut h = vec![0u8; 20];
                h[0] = 0x40 | (ihl / 4) as u8;
                h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                if let Some((off, more, id)) = self.v4_frag {
                    h[4..6].copy_from_slice(&id.to_be_bytes());
                    let f = off | if more { 0x2000 } else { 0 };
                    h[6..8].copy_from_slice(&f.to_be_bytes());
                }
                h[8] = self.hop_limit;
                h[9] = self.proto;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h.extend_from_slice(&self.v4_options);
                h.extend_from_slice(&self.l4);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = Vec::new();
                let first_nh = self.v6_ext.first().map(|e| e.0).unwrap_or(self.proto);
                for (i, (_, b)) in self.v6_ext.iter().enumerate() {
                    let mut b = b.clone();
                    b[0] = self.v6_ext.get(i + 1).map(|e| e.0).unwrap_or(self.proto);
                    ext.extend_from_slice(&b);
                }
                let payload = ext.len() + self.l4.len();
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
                h[6] = first_nh;
                h[7] = self.hop_limit;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                h.extend_from_slice(&ext);
                h.extend_from_slice(&self.l4);
                h
            }
            _ => panic!("mixed address families"),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x01];
        f.extend_from_slice(&self.src_mac);
        for v in &self.vlans {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        let et: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(&self.ip_packet());
        f
    }
}

pub fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x10]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0u8; 28]);
    f
}

pub fn non_ip() -> Vec<u8> {
    let mut f = vec![0x01, 0x80, 0xc2, 0, 0, 0x0e];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x10]);
    f.extend_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
    f.extend_from_slice(&[0u8; 46]);
    f
}

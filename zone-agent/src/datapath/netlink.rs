//! What the kernel says runs at an interface's XDP hook, asked over rtnetlink
//! (`RTM_GETLINK`, attribute `IFLA_XDP`): the live answer behind
//! `zone_agent_interface_attached`, so that a link detached behind the agent's back (for
//! example `bpftool link detach`) shows as detached at the next scrape. One request per
//! interface, answered from the kernel's memory: cheap enough for every scrape.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// `IFLA_XDP`'s nested attributes and `XDP_ATTACHED_*` values (uapi `linux/if_link.h`; the
/// libc crate does not define them).
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;
/// `NLA_F_NESTED | NLA_F_NET_BYTEORDER`: flag bits of an attribute's type.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `sizeof(struct nlmsghdr)`, `sizeof(struct ifinfomsg)`.
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
/// Large enough for one link's `RTM_NEWLINK` answer (stats included).
const ANSWER_BUFFER: usize = 64 * 1024;

/// The labels of the XDP attach modes, as `zone_agent_interface_attached{mode}` shows them
/// (the same words the agent logs when it attaches).
pub const MODE_NATIVE: &str = "native";
pub const MODE_GENERIC: &str = "generic";
pub const MODE_OFFLOAD: &str = "offload";

/// The XDP programs attached to interface `ifindex`, as (mode label, program id).
pub fn xdp_programs(ifindex: u32) -> io::Result<Vec<(&'static str, u32)>> {
    let sock = socket()?;
    let mut req = [0u8; NLMSG_HDR + IFINFOMSG];
    req[0..4].copy_from_slice(&((NLMSG_HDR + IFINFOMSG) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    req[NLMSG_HDR] = libc::AF_UNSPEC as u8;
    req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: valid buffer and length.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; ANSWER_BUFFER];
    // SAFETY: valid buffer and length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_answer(&buf[..n as usize])
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// (type without flag bits, payload) of each attribute in `b`.
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let kind = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        let next = ((len + 3) & !3).min(b.len());
        b = &b[next..];
        Some((kind, payload))
    })
}

fn parse_answer(msg: &[u8]) -> io::Result<Vec<(&'static str, u32)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink answer");
    let len = u32_at(msg, 0).ok_or_else(bad)? as usize;
    let kind = u16_at(msg, 4).ok_or_else(bad)?;
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = u32_at(msg, NLMSG_HDR).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if kind != libc::RTM_NEWLINK || len > msg.len() || len < NLMSG_HDR + IFINFOMSG {
        return Err(bad());
    }
    let xdp = attributes(&msg[NLMSG_HDR + IFINFOMSG..len])
        .find(|(k, _)| *k == IFLA_XDP)
        .map(|(_, p)| p);
    Ok(xdp.map(parse_xdp).unwrap_or_default())
}

/// `IFLA_XDP`'s contents: one program (`ATTACHED` + `PROG_ID`), or one per mode (`MULTI`).
fn parse_xdp(nested: &[u8]) -> Vec<(&'static str, u32)> {
    let mut attached = 0u8;
    let mut single = None;
    let mut per_mode = Vec::new();
    for (k, p) in attributes(nested) {
        let id = || u32_at(p, 0).unwrap_or(0);
        match k {
            IFLA_XDP_ATTACHED => attached = p.first().copied().unwrap_or(0),
            IFLA_XDP_PROG_ID => single = Some(id()),
            IFLA_XDP_DRV_PROG_ID => per_mode.push((MODE_NATIVE, id())),
            IFLA_XDP_SKB_PROG_ID => per_mode.push((MODE_GENERIC, id())),
            IFLA_XDP_HW_PROG_ID => per_mode.push((MODE_OFFLOAD, id())),
            _ => {}
        }
    }
    let mode = match attached {
        XDP_ATTACHED_DRV => MODE_NATIVE,
        XDP_ATTACHED_SKB => MODE_GENERIC,
        XDP_ATTACHED_HW => MODE_OFFLOAD,
        XDP_ATTACHED_MULTI => return per_mode,
        _ => return Vec::new(),
    };
    single.map(|id| vec![(mode, id)]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn one_generic_program_and_multi_mode_are_read() {
        let mut nested = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_SKB]);
        nested.extend(attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes()));
        assert_eq!(parse_xdp(&nested), vec![(MODE_GENERIC, 42)]);
        let mut nested = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_MULTI]);
        nested.extend(attr(IFLA_XDP_DRV_PROG_ID, &7u32.to_ne_bytes()));
        nested.extend(attr(IFLA_XDP_SKB_PROG_ID, &9u32.to_ne_bytes()));
        assert_eq!(
            parse_xdp(&nested),
            vec![(MODE_NATIVE, 7), (MODE_GENERIC, 9)]
        );
        assert!(parse_xdp(&attr(IFLA_XDP_ATTACHED, &[0])).is_empty());
    }

    #[test]
    fn loopback_answers_without_xdp() {
        // Interface 1 is `lo` in every namespace; nothing is attached to it in a test run.
        assert_eq!(xdp_programs(1).expect("rtnetlink answers"), vec![]);
    }
}
